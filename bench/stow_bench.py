#!/usr/bin/env python3
"""STOW-RS ingest: instances/s with N parallel clients, one instance per
request over a persistent connection each (what an uploader script does).
Each client is its own process, so the load generator is not one Python
interpreter's lock.

  stow_bench.py --url URL/dicom-web --dir DATASET [--clients 4] [--user U --password P]
                [--ca CA.pem | --insecure] [--reset-cmd CMD] [--runs 3] [--limit N]

Loopback only. Prints one JSON line per run and the median.
"""
import argparse
import json
import os
import statistics
import subprocess
import multiprocessing
import time
import urllib.parse

import requests


def files_of(d, limit):
    out = []
    for root, _, names in os.walk(d):
        out += [os.path.join(root, n) for n in names if n.endswith(".dcm")]
    out.sort()
    return out[:limit] if limit else out


BOUNDARY = "stow-bench-boundary"


def client(args):
    """One client: its share of the files, one request each; returns the
    HTTP statuses that were not 200."""
    a, chunk = args
    s = requests.Session()
    s.trust_env = False
    s.verify = a.ca if a.ca else (not a.insecure)
    if a.user:
        s.auth = (a.user, a.password)
    errors = []
    for f in chunk:
        with open(f, "rb") as fh:
            body = (b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                    + fh.read() + b"\r\n--" + BOUNDARY.encode() + b"--\r\n")
        r = s.post(a.url.rstrip("/") + "/studies", data=body, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
            "Accept": "application/dicom+json"})
        if r.status_code != 200:
            errors.append(r.status_code)
    return errors


def run_once(a, files):
    if a.rust_client:
        argv = [a.rust_client, a.url, a.dir, str(a.clients)] + ([f"{a.user}:{a.password}"] if a.user else [])
        assert not a.limit, "--limit is for the Python clients"
        return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
    chunks = [files[i::a.clients] for i in range(a.clients)]
    with multiprocessing.get_context("fork").Pool(a.clients) as pool:
        t0 = time.monotonic()
        errors = sum(pool.map(client, [(a, c) for c in chunks]), [])
        dt = time.monotonic() - t0
    return {"instances": len(files), "seconds": dt, "per_s": len(files) / dt, "errors": len(errors)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--ca")
    ap.add_argument("--insecure", action="store_true")
    ap.add_argument("--reset-cmd")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--rust-client", help="custos-probe's stow_load example, built: the clients are its tasks")
    a = ap.parse_args()
    host = urllib.parse.urlparse(a.url).hostname
    assert host in ("localhost",) or host.startswith("127."), "loopback only"
    files = files_of(a.dir, a.limit)
    results = []
    for _ in range(a.runs):
        if a.reset_cmd:
            subprocess.run(a.reset_cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
            time.sleep(1)
        r = run_once(a, files)
        print(json.dumps(r), flush=True)
        results.append(r["per_s"])
    print(json.dumps({"median_per_s": statistics.median(results), "runs": results}))


if __name__ == "__main__":
    main()
