#!/usr/bin/env python3
"""What recording an access before serving it costs: QIDO-RS latency over one
HTTPS connection (median, p95 of N), QIDO-RS and WADO-RS (one instance per
request, as a viewer fetches) throughput from C concurrent connections.

  python3 bench/access_audit.py --url https://127.0.0.1:11121 --user bench:PASSWORD [-n 300] [-c 6]

Loopback only. Prints one JSON line of figures last.
"""
import argparse
import json
import statistics
import threading
import time

import loopback


def timed(s, url, headers):
    t = time.perf_counter()
    r = s.get(url, headers=headers)
    r.raise_for_status()
    _ = r.content
    return (time.perf_counter() - t) * 1000


def parallel(url_of, user, base, c, per):
    """Requests/s from `c` connections, `per` requests each."""
    sessions = [loopback.session(base, user, quiet=True) for _ in range(c)]
    errors = []

    def run(i):
        for k in range(per):
            try:
                timed(sessions[i], *url_of(i * per + k))
            except Exception as e:  # counted, reported
                errors.append(str(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(c)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return c * per / (time.perf_counter() - t), len(errors)


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--url", required=True)
    a.add_argument("--user", required=True, help="USER:PASSWORD")
    a.add_argument("-n", type=int, default=300)
    a.add_argument("-c", type=int, default=6)
    args = a.parse_args()
    s = loopback.session(args.url, args.user)
    dj = {"Accept": "application/dicom+json"}
    studies = s.get(f"{args.url}/dicom-web/studies?limit=1000&includefield=00100020", headers=dj).json()
    ids = [st["00100020"]["Value"][0] for st in studies]
    instances = []
    for st in studies[:50]:
        uid = st["0020000D"]["Value"][0]
        for i in s.get(f"{args.url}/dicom-web/studies/{uid}/instances", headers=dj).json():
            instances.append((uid, i["0020000E"]["Value"][0], i["00080018"]["Value"][0]))
    qido = lambda k: (f"{args.url}/dicom-web/studies?PatientID={ids[k % len(ids)]}", dj)
    wado = lambda k: (
        "{}/dicom-web/studies/{}/series/{}/instances/{}".format(args.url, *instances[k % len(instances)]),
        {"Accept": 'multipart/related; type="application/dicom"'},
    )
    for k in range(20):  # warm
        timed(s, *qido(k))
    times = sorted(timed(s, *qido(k)) for k in range(args.n))
    fig = {
        "qido_median_ms": round(statistics.median(times), 2),
        "qido_p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
    }
    fig["qido_per_s"], e1 = parallel(qido, args.user, args.url, args.c, args.n // args.c * 2)
    fig["wado_instances_per_s"], e2 = parallel(wado, args.user, args.url, args.c, args.n // args.c * 2)
    fig["errors"] = e1 + e2
    fig = {k: round(v, 2) if isinstance(v, float) else v for k, v in fig.items()}
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
