#!/usr/bin/env python3
"""The web UI's study list at scale: the QIDO-RS requests the list page sends
(the same query strings: includefields, limit 51, the server-side sort),
each timed N times over one HTTPS connection; prints median and p95 in ms.

  bench/study_list.sh            # 100,000 synthetic studies on a fresh release server
  python3 bench/study_list.py --url https://127.0.0.1:11121 --user bench:PASSWORD [-n 21]

Loopback only.
"""
import argparse
import json
import statistics
import time
import urllib.parse

import loopback

INCLUDE = ["00100030", "00100040", "00080061", "00081030", "00080050", "00201206", "00201208"]


def ui_query(**filters):
    """The list page's query string for these filters (app.js studyQuery)."""
    q = [(k, v) for k, v in filters.items() if k not in ("orderby", "offset")]
    q.append(("orderby", filters.get("orderby", "-StudyDate,-StudyTime")))
    q += [("includefield", t) for t in INCLUDE]
    q += [("limit", "51"), ("offset", str(filters.get("offset", 0)))]
    return urllib.parse.urlencode(q)


CASES = [
    ("first page, newest first", ui_query()),
    ("page 100 (offset 4,950)", ui_query(offset=4950)),
    ("sorted by patient name", ui_query(orderby="PatientName")),
    ("name typed: 'synthetic' (matches all)", ui_query(PatientName="synthetic*")),
    ("name typed: 'synthetic^p00012' (30 studies)", ui_query(PatientName="synthetic^p00012*")),
    ("patient ID exact", ui_query(PatientID="SYN0012345")),
    ("accession prefix", ui_query(AccessionNumber="SACC0009*")),
    ("last year (date range)", ui_query(StudyDate="19990101-19991231")),
    ("modality CT, newest first", ui_query(ModalitiesInStudy="CT")),
]


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--url", required=True)
    a.add_argument("--user", required=True, help="USER:PASSWORD")
    a.add_argument("-n", type=int, default=21)
    args = a.parse_args()
    s = loopback.session(args.url, args.user)
    print(f"{'request':48} {'rows':>5} {'median ms':>10} {'p95 ms':>8}")
    figures = {}
    for name, query in CASES:
        url = f"{args.url}/dicom-web/studies?{query}"
        times, rows = [], 0
        for _ in range(args.n):
            t = time.perf_counter()
            r = s.get(url, headers={"Accept": "application/dicom+json"})
            times.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
            rows = len(r.json()) if r.status_code == 200 else 0
        times.sort()
        med, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
        figures[name] = {"rows": rows, "median_ms": round(med, 1), "p95_ms": round(p95, 1)}
        print(f"{name:48} {rows:>5} {med:>10.1f} {p95:>8.1f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
