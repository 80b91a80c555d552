#!/usr/bin/env python3
"""Issue 15: forwarding throughput. The same studies are stored into Orthanc
and into Custos, then sent from each to the same DCMTK storescp (receiving,
not writing: --ignore), medians of --reps: Orthanc's synchronous
`POST /modalities/benchdest/store` job (BENCHDEST), Custos's `POST /api/studies/{uid}/send`
through its durable queue until no job is pending. Loopback only.

  bench/routing.py --data DATASETS_DIR --work WORK_DIR [--big-studies 5] [--small-studies 100]
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import ssl
import base64

import pydicom

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS = os.environ.get("BENCH_HARNESS", os.path.join(HERE, "..", "..", "shared", "bench"))
ENV = dict(os.environ, TCP_NODELAY="1")


def studies(root, n):
    dirs = sorted(d for d in glob.glob(os.path.join(root, "st*")) if os.path.isdir(d))[:n]
    files = [sorted(glob.glob(os.path.join(d, "*", "*.dcm"))) for d in dirs]
    uids = [str(pydicom.dcmread(f[0], stop_before_pixels=True).StudyInstanceUID) for f in files]
    return dirs, uids, sum(len(f) for f in files)


def storescu(port, aec, dirs):
    subprocess.run(["/usr/bin/storescu", "-aet", "BENCHSCU", "-aec", aec, "+sd", "+r", "127.0.0.1", str(port)] + dirs,
                   env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def http(method, url, body=None, auth=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    ctx = ssl._create_unverified_context()  # loopback, our own certificate
    with urllib.request.urlopen(req, context=ctx, timeout=600) as r:
        return json.loads(r.read() or b"null")


def orthanc(dirs, reps, work):
    od = os.path.join(work, "orthanc")
    subprocess.run([os.path.join(HARNESS, "orthanc.sh"), "wipe", "-d", od], stdout=subprocess.DEVNULL)
    subprocess.run([os.path.join(HARNESS, "orthanc.sh"), "start", "-d", od], env=ENV, check=True,
                   stdout=subprocess.DEVNULL)
    try:
        storescu(4242, "ORTHANC", dirs)
        ids = http("GET", "http://127.0.0.1:8042/studies")
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            http("POST", "http://127.0.0.1:8042/modalities/benchdest/store",
                 {"Resources": ids, "Synchronous": True})
            times.append(time.perf_counter() - t0)
        return times
    finally:
        subprocess.run([os.path.join(HARNESS, "orthanc.sh"), "wipe", "-d", od], stdout=subprocess.DEVNULL)


def custos(dirs, uids, reps):
    pid = subprocess.run([os.path.join(HERE, "custos-reset.sh")], check=True, capture_output=True,
                         text=True).stdout.split()[-1]
    auth = "bench:" + os.environ["BENCH_PASSWORD"]
    base = "https://127.0.0.1:11121"
    try:
        storescu(11120, "CUSTOS", dirs)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for u in uids:
                http("POST", f"{base}/api/studies/{u}/send", {"destination": "BENCHDEST"}, auth)
            while http("GET", f"{base}/api/jobs?state=pending&limit=1", auth=auth)["jobs"]:
                time.sleep(0.05)
            times.append(time.perf_counter() - t0)
            failed = http("GET", f"{base}/api/jobs?state=failed&limit=1", auth=auth)["jobs"]
            if failed:
                sys.exit(f"a forward failed: {failed}")
        return times
    finally:
        subprocess.run(["kill", pid])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--big-studies", type=int, default=5)
    ap.add_argument("--small-studies", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    scp = subprocess.Popen(["/usr/bin/storescp", "--ignore", "-aet", "BENCHDEST", "11114"], env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = {}
    try:
        for name, n in (("big", a.big_studies), ("small", a.small_studies)):
            dirs, uids, count = studies(os.path.join(a.data, name), n)
            o = orthanc(dirs, a.reps, a.work)
            c = custos(dirs, uids, a.reps)
            om, cm = statistics.median(o), statistics.median(c)
            report[name] = {"instances": count, "orthanc_s": o, "custos_s": c,
                            "orthanc_inst_per_s": round(count / om, 1), "custos_inst_per_s": round(count / cm, 1),
                            "ratio": round(om / cm, 2)}
    finally:
        scp.kill()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
