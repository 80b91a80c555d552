#!/usr/bin/env python3
"""Issue 13 goal 4: study-level queries at 1,000,000 instances, QIDO-RS
(limit 100, one HTTPS connection) and C-FIND (one association, pynetdicom,
TCP_NODELAY; query_1m.sh caps C-FIND at 100 matches with
CUSTOS_DICOM_MAX_FIND_RESULTS, as QIDO's limit) and DCMTK's findscu as a
whole process, each N times; median and p95 in ms.

  bench/query_1m.sh [pg]      # fresh release server + 100,000 synthetic studies (--surnames)
  python3 bench/query_1m.py --url https://127.0.0.1:11121 --user bench:PW --port 11120 [-n 30]

The queries: PatientID exact, PatientName prefix (A*: 3 surnames of 50),
a one-year StudyDate range, and a leading wildcard (*SMITH*; *QQQ* matches
nothing, so every study is read). Loopback only.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import time
import urllib.parse

import loopback
from pydicom.dataset import Dataset
from pynetdicom import AE, transport
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

QUERIES = [
    ("PatientID exact", {"PatientID": "SYN0012345"}),
    ("PatientName prefix A*", {"PatientName": "A*"}),
    ("StudyDate one year", {"StudyDate": "19990101-19991231"}),
    ("PatientName leading wildcard *SMITH*", {"PatientName": "*SMITH*"}),
    ("leading wildcard, no match (*QQQ*)", {"PatientName": "*QQQ*"}),
]
RETURN = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
          "StudyTime", "AccessionNumber", "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"]


def stats(times):
    times = sorted(times)
    return round(statistics.median(times), 1), round(times[int(0.95 * (len(times) - 1))], 1)


def nodelay():
    orig = transport.AssociationSocket._create_socket

    def create(self, address):
        s = orig(self, address)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s
    transport.AssociationSocket._create_socket = create


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--url", required=True)
    a.add_argument("--user", required=True, help="USER:PASSWORD")
    a.add_argument("--port", type=int, required=True, help="DICOM port")
    a.add_argument("--aet", default="BENCHSCU")
    a.add_argument("--aec", default="CUSTOS")
    a.add_argument("-n", type=int, default=30)
    a.add_argument("--rust-scu", required=True, help="custos-dimse's cfind_latency example, built")
    args = a.parse_args()
    s = loopback.session(args.url, args.user)
    nodelay()
    ae = AE(ae_title=args.aet)
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", args.port, ae_title=args.aec)
    assert assoc.is_established, "association refused"
    figures = {}
    print(f"{'query':38} {'QIDO rows':>9} {'median':>7} {'p95':>7} | {'C-FIND matches':>14} {'median':>7} {'p95':>7}"
          f" | {'findscu':>7} {'p95':>7} | {'Rust SCU':>7} {'p95':>7}")
    for name, match in QUERIES:
        q = urllib.parse.urlencode({**match, "limit": "100", "includefield": "00201208"})
        qido, rows = [], 0
        for _ in range(args.n):
            t = time.perf_counter()
            r = s.get(f"{args.url}/dicom-web/studies?{q}", headers={"Accept": "application/dicom+json"})
            qido.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
            rows = len(r.json()) if r.status_code == 200 else 0
        find, matches = [], 0
        for _ in range(args.n):
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            for k in RETURN:
                setattr(ds, k, match.get(k, ""))
            t = time.perf_counter()
            matches = sum(1 for st, _ in assoc.send_c_find(ds, FIND) if st and st.Status in (0xFF00, 0xFF01))
            find.append((time.perf_counter() - t) * 1000)
        # DCMTK's findscu, a whole process (start, associate, query, release):
        # pynetdicom's decoding costs about 0.6 ms per match on the client.
        argv = ["/usr/bin/findscu", "-S", "-aet", args.aet, "-aec", args.aec, "127.0.0.1", str(args.port),
                "-k", "QueryRetrieveLevel=STUDY"]
        for k in RETURN:
            argv += ["-k", f"{k}={match[k]}" if k in match else k]
        dcmtk = []
        for _ in range(args.n):
            t = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "TCP_NODELAY": "1"})
            dcmtk.append((time.perf_counter() - t) * 1000)
        # The same C-FIND from a Rust SCU (custos-dimse's cfind_latency
        # example): the server's latency without pynetdicom's decoding.
        argv = [args.rust_scu, f"127.0.0.1:{args.port}", args.aet, args.aec, str(args.n)]
        for k, v in match.items():
            argv += ["-k", f"{k}={v}"]
        rust = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
        assert rust["matches"] == matches, (rust, matches)
        figures[name] = {"qido_rows": rows, "qido_ms": stats(qido), "cfind_matches": matches,
                         "cfind_pynetdicom_ms": stats(find), "findscu_process_ms": stats(dcmtk),
                         "cfind_rust_ms": [rust["median_ms"], rust["p95_ms"]]}
        print(f"{name:38} {rows:>9} {stats(qido)[0]:>7} {stats(qido)[1]:>7} | {matches:>14} {stats(find)[0]:>7} "
              f"{stats(find)[1]:>7} | {stats(dcmtk)[0]:>7} {stats(dcmtk)[1]:>7} | {rust['median_ms']:>7} "
              f"{rust['p95_ms']:>7}")
    assoc.release()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
