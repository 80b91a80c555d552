#!/usr/bin/env python3
"""Issue 14, trials 5 and 6: sustained mixed load against one running node.

16 associations C-STORE (from 127.0.0.1), 16 C-FIND (another peer, from
127.0.0.3: one address may hold 16 associations), 8 HTTP clients cycle
QIDO-RS, WADO-RS and STOW-RS, for --seconds. Workers run in several processes (threads inside
each), so that Python is not the bottleneck it would be in one. Reports per
operation: count, errors, p50 and p99 latency; the server's RSS and open
files sampled every 5 s (first, max, last); and whether the audit trail has a
record for every operation that succeeded; and pynetdicom's own warnings,
counted. With --hostile, one more process
from 127.0.0.2 keeps half-open connections, drips association requests a byte
at a time and declares oversized PDUs, all the while. Loopback only.

  bench/sustained.py --port 11120 --http https://localhost:11121 --ca CA \
      --user bench --password PW --pid PID --data DATA [--seconds 600] [--hostile]
"""
import argparse
import json
import logging
import multiprocessing as mp
import os
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "py"))
import peer  # noqa: E402  (pynetdicom helpers: make_ae, associate, write_instance)
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402
from pynetdicom.sop_class import (  # noqa: E402
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)


class Args:  # what peer.associate reads
    def __init__(self, port, aet, bind=None):
        self.port, self.aet, self.aec, self.bind = port, aet, "CUSTOS", bind
        self.user = self.jwt = self.tls_ca = None


def timed(rec, op, fn):
    t0 = time.perf_counter()
    why = None
    try:
        ok = fn()
    except Exception as e:
        # The clock time, to line a failure up with the RSS samples and the
        # server's log.
        ok, why = False, time.strftime("%H:%M:%S ") + repr(e)[:120]
    rec.append((op, time.perf_counter() - t0, bool(ok), why))


def store_thread(a, n, rec, stop):
    work = os.path.join(a.work, "s%d" % n)
    os.makedirs(work, exist_ok=True)
    i = 0
    while time.time() < stop:
        ae = peer.make_ae(a.aet)
        ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian])
        assoc = peer.associate(ae, Args(a.port, a.aet))
        if not assoc.is_established:
            rec.append(("associate", 0, False, "refused or failed"))
            time.sleep(0.5)
            continue
        while time.time() < stop and assoc.is_established:
            p = os.path.join(work, "%d.dcm" % (i % 50))
            peer.write_instance(p, SOPInstanceUID=generate_uid(), PatientID="LOAD%d" % n,
                                PatientName="LOAD^S%d" % n)
            def store():
                st = assoc.send_c_store(p)
                if not (st and st.Status == 0):
                    raise RuntimeError("status %s" % (st.Status if st and "Status" in st else "none"))
                return True
            timed(rec, "C-STORE", store)
            i += 1
        assoc.release()


def find_thread(a, n, rec, stop):
    while time.time() < stop:
        ae = peer.make_ae(a.find_aet)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = peer.associate(ae, Args(a.port, a.find_aet, a.find_bind))
        if not assoc.is_established:
            rec.append(("associate", 0, False, "refused or failed"))
            time.sleep(0.5)
            continue
        while time.time() < stop and assoc.is_established:
            # The 20 studies seeded at the start: a bounded answer, so the
            # figure is the server's, not pynetdicom decoding a growing list.
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.PatientName = "LOAD^FIND*"
            q.StudyInstanceUID = ""

            def find():
                last = None
                for st, _ in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind):
                    last = st
                if last is None or "Status" not in last:
                    # No final response reached the caller (see Warnings).
                    raise RuntimeError("status none")
                return last.Status in (0x0000, 0xA700)
            timed(rec, "C-FIND", find)
        assoc.release()


def http_thread(a, n, rec, stop):
    import requests
    s = requests.Session()
    s.trust_env = False
    s.verify = a.ca
    s.auth = (a.user, a.password)
    work = os.path.join(a.work, "h%d" % n)
    os.makedirs(work, exist_ok=True)
    study = None
    i = 0
    while time.time() < stop:
        p = os.path.join(work, "x.dcm")
        uid = generate_uid()
        peer.write_instance(p, SOPInstanceUID=uid, PatientID="WEB%d" % n, PatientName="LOAD^W%d" % n)
        body = b"--bNd\r\nContent-Type: application/dicom\r\n\r\n" + open(p, "rb").read() + b"\r\n--bNd--\r\n"

        def stow():
            r = s.post(a.http + "/dicom-web/studies", data=body, timeout=60, headers={
                "Content-Type": 'multipart/related; type="application/dicom"; boundary=bNd',
                "Accept": "application/dicom+json"})
            if r.status_code != 200:
                # Said in the report's error samples.
                raise RuntimeError("status %d: %s" % (r.status_code, r.text[:80]))
            return True
        timed(rec, "STOW-RS", stow)

        def qido():
            nonlocal study
            r = s.get(a.http + "/dicom-web/studies", params={"PatientID": "WEB%d" % n, "limit": "10"},
                      headers={"Accept": "application/dicom+json"}, timeout=60)
            if r.status_code == 200 and r.content:
                study = r.json()[0]["0020000D"]["Value"][0]
            return r.status_code in (200, 204)
        timed(rec, "QIDO-RS", qido)
        if study:
            timed(rec, "WADO-RS", lambda: s.get(a.http + "/dicom-web/studies/" + study, timeout=60,
                                               headers={"Accept": 'multipart/related; type="application/dicom"'}
                                               ).status_code == 200)
        i += 1


def hostile(a, stop):
    """From 127.0.0.2: half-open connections, byte-a-second drips of an
    association request, and association requests declaring 4 GiB."""
    held = []
    rq = bytes([1, 0]) + struct.pack(">I", 68) + bytes([0, 1, 0, 0]) + b"CUSTOS".ljust(16) + b"INTRUDER".ljust(16) + bytes(32)
    while time.time() < stop:
        try:
            while len(held) < 30:
                c = socket.create_connection(("127.0.0.1", a.port), source_address=("127.0.0.2", 0), timeout=2)
                held.append(c)
            for c in list(held[:10]):  # drip one byte on a third of them
                try:
                    c.send(rq[:1])
                except OSError:
                    held.remove(c)
            big = socket.create_connection(("127.0.0.1", a.port), source_address=("127.0.0.2", 0), timeout=2)
            big.sendall(bytes([1, 0]) + struct.pack(">I", 0xFFFFFFF0) + bytes(64))
            big.close()
        except OSError:
            pass
        held = [c for c in held if c.fileno() >= 0]
        time.sleep(1)


class Warnings(logging.Handler):
    """pynetdicom's own warnings, counted by text: e.g. "Received unexpected
    C-FIND service message" — its reactor thread took a response meant for the
    request waiting for it (pynetdicom 3.0.4's race, RELIABILITY.md)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen = {}

    def emit(self, record):
        text = record.getMessage()[:160]
        if text in self.seen or len(self.seen) < 50:
            self.seen[text] = self.seen.get(text, 0) + 1


def proc(kind, a, nthreads, first, out_path, stop):
    rec = []
    warnings = Warnings()
    logging.getLogger("pynetdicom").addHandler(warnings)
    target = {"store": store_thread, "find": find_thread, "http": http_thread}[kind]
    ts = [threading.Thread(target=target, args=(a, first + k, rec, stop)) for k in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    with open(out_path, "w") as f:
        json.dump({"rec": rec, "warnings": warnings.seen}, f)


def seed(a):
    """20 studies of patient LOAD^FIND for the C-FIND workers to match."""
    ae = peer.make_ae(a.aet)
    ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian])
    assoc = peer.associate(ae, Args(a.port, a.aet))
    for i in range(20):
        p = os.path.join(a.work, "seed.dcm")
        peer.write_instance(p, SOPInstanceUID=generate_uid(), PatientID="FIND", PatientName="LOAD^FIND")
        assoc.send_c_store(p)
    assoc.release()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000 if xs else 0


def sample(pid):
    """RSS, open files, and RSS split: anonymous (the heap) and file-backed (the binary's pages)."""
    status = {ln.split(":")[0]: ln.split()[1] for ln in open("/proc/%d/status" % pid) if ln.startswith(("VmRSS", "RssAnon", "RssFile"))}
    mib = lambda k: int(status.get(k, 0)) // 1024  # noqa: E731
    return mib("VmRSS"), len(os.listdir("/proc/%d/fd" % pid)), mib("RssAnon"), mib("RssFile")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--aet", default="BENCHSCU", help="the storing peer (from 127.0.0.1)")
    # A second workstation: one address may hold only 16 associations.
    ap.add_argument("--find-aet", default="BENCHQ", help="the querying peer")
    ap.add_argument("--find-bind", default="127.0.0.3", help="the querying peer's address")
    ap.add_argument("--http", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--data", required=True, help="the server's data folder (audit trail)")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "custos"))
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--stores", type=int, default=16)
    ap.add_argument("--finds", type=int, default=16)
    ap.add_argument("--http-clients", type=int, default=8)
    ap.add_argument("--hostile", action="store_true")
    ap.add_argument("--work", default="/tmp/custos-sustained")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    stop = time.time() + a.seconds
    procs, outs = [], []
    for kind, total in (("store", a.stores), ("find", a.finds), ("http", a.http_clients)):
        per = 4
        for first in range(0, total, per):
            o = os.path.join(a.work, "%s%d.json" % (kind, first))
            outs.append(o)
            procs.append(mp.Process(target=proc, args=(kind, a, min(per, total - first), first, o, stop)))
    if a.hostile:
        procs.append(mp.Process(target=hostile, args=(a, stop)))
    seed(a)
    for p in procs:
        p.start()
    samples = []
    while time.time() < stop:
        samples.append(sample(a.pid))
        time.sleep(5)
    for p in procs:
        p.join()
    samples.append(sample(a.pid))
    rec, warnings = [], {}
    for o in outs:
        d = json.load(open(o))
        rec += d["rec"]
        for text, n in d["warnings"].items():
            warnings[text] = warnings.get(text, 0) + n
    ops = {}
    for op, dt, ok, why in rec:
        d = ops.setdefault(op, {"ok": [], "errors": 0, "why": []})
        if ok:
            d["ok"].append(dt)
        else:
            d["errors"] += 1
            if why and len(d["why"]) < 50:
                d["why"].append(why)
    report = {"seconds": a.seconds, "hostile": a.hostile, "ops": {}}
    for op, d in sorted(ops.items()):
        report["ops"][op] = {"count": len(d["ok"]), "errors": d["errors"], "error_samples": d["why"],
                             "p50_ms": round(pct(d["ok"], 0.5), 1), "p99_ms": round(pct(d["ok"], 0.99), 1)}
    rss = [s[0] for s in samples]
    fds = [s[1] for s in samples]
    anon = [s[2] for s in samples]
    filed = [s[3] for s in samples]
    report["rss_mib"] = {"first": rss[0], "max": max(rss), "last": rss[-1], "every_5s": rss,
                         "anon_first": anon[0], "anon_max": max(anon), "anon_last": anon[-1],
                         "file_first": filed[0], "file_max": max(filed), "file_last": filed[-1],
                         "anon_every_5s": anon}
    report["open_files"] = {"first": fds[0], "max": max(fds), "last": fds[-1]}
    report["client_warnings"] = warnings
    # Audit completeness: a record per successful operation of each kind.
    time.sleep(2)
    trail = subprocess.run([a.bin, "audit", "export", "--since", started, "--data", a.data],
                           stdout=subprocess.PIPE, text=True).stdout.splitlines()
    prefixes = {"C-STORE": "C-STORE status 0000", "C-FIND": "C-FIND ", "STOW-RS": "STOW-RS status 0000",
                "QIDO-RS": "QIDO-RS ", "WADO-RS": "WADO "}
    counted = dict.fromkeys(prefixes, 0)
    for line in trail:
        d = json.loads(line)["record"].get("detail", "")
        for k, prefix in prefixes.items():
            if d.startswith(prefix):
                counted[k] += 1
    report["audit_records"] = counted
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
