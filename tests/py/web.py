#!/usr/bin/env python3
"""A DICOMweb client for Custos's tests: dicomweb-client (PyPI) for what a
viewer or script does, plain requests for raw multipart bytes and for probing
status codes. Prints one JSON document on stdout. Loopback only.
"""
import argparse
import email.parser
import email.policy
import hashlib
import json
import ssl
import socket
import sys

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient


def out(obj):
    print(json.dumps(obj))


def session(args):
    s = requests.Session()
    # Only loopback and our CA: no proxies, no CA bundle from the environment
    # (REQUESTS_CA_BUNDLE would otherwise override `verify`).
    s.trust_env = False
    if args.user:
        s.auth = (args.user, args.password)
    if args.token:
        s.headers["Authorization"] = "Bearer " + args.token
    s.verify = args.ca
    return s


def client(args):
    return DICOMwebClient(url=args.url + "/dicom-web", session=session(args))


def filters(args):
    f = {}
    for kv in args.key or []:
        k, v = kv.split("=", 1)
        f[k] = v
    return f


def cmd_search(args):
    c = client(args)
    kw = {"search_filters": filters(args)}
    if args.level == "studies":
        res = c.search_for_studies(**kw)
    elif args.level == "series":
        res = c.search_for_series(study_instance_uid=args.study, **kw)
    else:
        res = c.search_for_instances(
            study_instance_uid=args.study, series_instance_uid=args.series, **kw
        )
    out(res)


def cmd_retrieve(args):
    c = client(args)
    ds = c.retrieve_instance(args.study, args.series, args.sop)
    out({
        "sop": str(ds.SOPInstanceUID),
        "pixel_sha256": hashlib.sha256(ds.PixelData).hexdigest() if "PixelData" in ds else None,
        "patient": str(ds.get("PatientName", "")),
    })


def cmd_retrieve_study(args):
    c = client(args)
    out(sorted(str(ds.SOPInstanceUID) for ds in c.retrieve_study(args.study)))


def cmd_metadata(args):
    c = client(args)
    out(c.retrieve_instance_metadata(args.study, args.series, args.sop))


def cmd_frames(args):
    c = client(args)
    frames = c.retrieve_instance_frames(
        args.study, args.series, args.sop, frame_numbers=[int(n) for n in args.frames.split(",")]
    )
    out([{"len": len(f), "sha256": hashlib.sha256(f).hexdigest()} for f in frames])


def cmd_rendered(args):
    c = client(args)
    media = (args.media,)
    img = c.retrieve_instance_rendered(args.study, args.series, args.sop, media_types=media)
    out({"len": len(img), "head": img[:8].hex()})


def cmd_stow(args):
    c = client(args)
    datasets = [pydicom.dcmread(f) for f in args.files]
    res = c.store_instances(datasets, study_instance_uid=args.study)
    out(res.to_json_dict())


def cmd_stow_new(args):
    """store_instances of a data set made in memory, with its file meta but
    never written to a file: dicomweb-client sends it without the preamble."""
    from made import instance
    ds = instance("1.2.840.10008.5.1.4.1.1.88.22")
    ds.PatientID, ds.PatientName, ds.Modality = args.patient_id, "Memory^Made", "SR"
    c = client(args)
    res = c.store_instances([ds])
    out(res.to_json_dict())


def cmd_stow_study(args):
    """One study of `--series` series of `--instances` small CT slices made
    with pydicom (series numbers descending, so an export must sort them),
    stored with dicomweb-client; prints the study, series and SOP UIDs."""
    from pydicom.uid import generate_uid
    from made import instance
    study = generate_uid()
    made, series_uids = [], []
    for s_index in range(args.series):
        series_uid = generate_uid()
        series_uids.append(series_uid)
        for n in range(1, args.instances + 1):
            ds = instance(study=study, series=series_uid)
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.PatientName, ds.PatientID = args.name, args.patient_id
            ds.StudyDate, ds.StudyTime, ds.StudyID = "20261201", "101500", "S1"
            ds.AccessionNumber, ds.StudyDescription = "ACC-Z1", "EXPORT"
            ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", args.series - s_index, n
            ds.Rows = ds.Columns = 8
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.PixelData = bytes([n % 256, s_index]) * 64
            made.append(ds)
    res = client(args).store_instances(made)
    out({"study": study, "series": series_uids, "sops": [str(d.SOPInstanceUID) for d in made],
         "failed": len(res.get("FailedSOPSequence", []))})


def cmd_zip(args):
    """GET /api/studies/{study}/download.zip (or `--path`, e.g. a series' or
    a selection's download), unpack it into `--out`, check every entry's
    CRC, and read the DICOMDIR with pydicom's FileSet (which follows the
    records' offsets); prints what each record references and the hashes of
    the files."""
    import os
    import zipfile
    from io import BytesIO
    from pydicom.fileset import FileSet
    s = session(args)
    path = args.path or f"/api/studies/{args.study}/download.zip"
    r = s.get(f"{args.url}{path}")
    if r.status_code != 200:
        out({"status": r.status_code, "body": r.text[:500]})
        return
    z = zipfile.ZipFile(BytesIO(r.content))
    bad = z.testzip()
    z.extractall(args.out)
    names = z.namelist()
    fs = FileSet(pydicom.dcmread(os.path.join(args.out, "DICOMDIR")))
    instances = []
    for inst in fs:
        ds = inst.load()
        data = open(inst.path, "rb").read()
        instances.append({
            "path": os.path.relpath(inst.path, args.out),
            "record": inst.node.record_type,
            "patient_id": inst.PatientID,
            "patient_name": str(inst.PatientName),
            "study": inst.StudyInstanceUID,
            "series": inst.SeriesInstanceUID,
            "series_number": int(inst.SeriesNumber),
            "instance_number": int(inst.InstanceNumber),
            "sop": inst.SOPInstanceUID,
            "file_sop": str(ds.SOPInstanceUID),
            "sha256": hashlib.sha256(data).hexdigest(),
        })
    out({"status": 200, "content_type": r.headers["Content-Type"],
         "disposition": r.headers.get("Content-Disposition"), "crc_failure": bad,
         "names": names, "instances": instances})


def multipart_parts(resp):
    ctype = resp.headers["Content-Type"]
    raw = b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + resp.content
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    return [p.get_payload(decode=True) for p in msg.iter_parts()]


def cmd_raw_get(args):
    """GET a WADO-RS URL; write each part to OUT-<n> and report sizes and hashes."""
    s = session(args)
    r = s.get(args.url + args.path, headers={"Accept": args.accept})
    if r.status_code != 200:
        out({"status": r.status_code, "body": r.text[:500]})
        return
    parts = multipart_parts(r)
    for i, p in enumerate(parts):
        with open(f"{args.out}-{i}", "wb") as f:
            f.write(p)
    out({"status": 200, "content_type": r.headers["Content-Type"],
         "parts": [{"len": len(p), "sha256": hashlib.sha256(p).hexdigest()} for p in parts]})


def cmd_raw_stow(args):
    """POST files' bytes unchanged as multipart/related application/dicom."""
    s = session(args)
    boundary = "custos-test-boundary"
    body = b""
    for f in args.files:
        body += b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
        body += open(f, "rb").read() + b"\r\n"
    body += b"--" + boundary.encode() + b"--\r\n"
    path = "/dicom-web/studies" + (f"/{args.study}" if args.study else "")
    r = s.post(args.url + path, data=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    out({"status": r.status_code, "body": r.json() if r.content else None})


def cmd_probe(args):
    """Requests from a JSON list of {method, path, auth?, headers?, body?,
    body_limit?}; prints their statuses, WWW-Authenticate headers and bodies
    (the first `body_limit` characters, 2000 unless given)."""
    spec = json.load(open(args.spec))
    results = []
    for req in spec:
        s = requests.Session()
        s.trust_env = False
        s.verify = args.ca
        auth = req.get("auth")
        headers = dict(req.get("headers", {}))
        if auth and auth.get("basic"):
            s.auth = tuple(auth["basic"])
        if auth and auth.get("bearer"):
            headers["Authorization"] = "Bearer " + auth["bearer"]
        data = req.get("body")
        if req.get("body_repeat"):
            data = req["body_repeat"][0] * req["body_repeat"][1]
        try:
            r = s.request(req["method"], args.url + req["path"], headers=headers,
                          data=data.encode() if isinstance(data, str) else data, timeout=60)
            results.append({"status": r.status_code,
                            "www_authenticate": r.headers.get("WWW-Authenticate"),
                            "body": r.text[:req.get("body_limit", 2000)], "headers": dict(r.headers)})
        except requests.RequestException as e:
            results.append({"status": None, "error": type(e).__name__, "detail": str(e)[:300]})
    out(results)


def cmd_burst(args):
    """`--count` concurrent GETs of `--path` with Basic credentials
    `--burst-user` and `--burst-password` followed by the request's number
    (each from its own connection); while
    they run, the credentials of the main options (--user/--token) GET the same
    path once a second. Prints the burst's status counts and the other
    requests' statuses and latencies."""
    import threading
    import time
    from collections import Counter

    statuses = Counter()
    lock = threading.Lock()

    def attempt(n):
        s = requests.Session()
        s.trust_env = False
        s.verify = args.ca
        # A different guess each time, as a real attacker would send.
        s.auth = (args.burst_user, "%s %d" % (args.burst_password, n))
        try:
            code = s.get(args.url + args.path, timeout=120).status_code
        except requests.RequestException as e:
            code = type(e).__name__
        with lock:
            statuses[str(code)] += 1

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(args.count)]
    start = time.monotonic()
    for t in threads:
        t.start()
    others = []
    s = session(args)
    while any(t.is_alive() for t in threads) and time.monotonic() - start < 120:
        t0 = time.monotonic()
        try:
            code = s.get(args.url + args.path, timeout=60).status_code
        except requests.RequestException as e:
            code = type(e).__name__
        others.append({"status": code, "seconds": time.monotonic() - t0})
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    for t in threads:
        t.join()
    out({"burst": dict(statuses), "others": others,
         "seconds": time.monotonic() - start})


def cmd_hold(args):
    """Opens --count connections to --host:--port from --bind (with a TLS
    handshake when --ca is given), prints how many the server kept open, then
    holds them idle for --seconds."""
    import time
    held = []
    for _ in range(args.count):
        try:
            s = socket.create_connection((args.host, int(args.port)), timeout=5,
                                         source_address=(args.bind, 0))
            if args.tls:
                ctx = ssl.create_default_context(cafile=args.ca)
                ctx.check_hostname = False
                s = ctx.wrap_socket(s)
            held.append(s)
        except OSError:
            pass
    def still_open():
        # A connection the server closed reads as EOF (or fails).
        n = 0
        for s in held:
            s.setblocking(False)
            try:
                n += 0 if s.recv(1) == b"" else 1
            except (BlockingIOError, ssl.SSLWantReadError):
                n += 1
            except OSError:
                pass
        return n

    time.sleep(0.5)
    print(json.dumps({"opened": len(held), "open": still_open()}), flush=True)
    if args.recheck:
        time.sleep(args.recheck)
        print(json.dumps({"opened": len(held), "open": still_open()}), flush=True)
    time.sleep(args.seconds)


def cmd_tls(args):
    """Handshake with forced TLS versions; report which succeed."""
    host, port = args.host, int(args.port)
    result = {}
    for name, ver in [("1.0", ssl.TLSVersion.TLSv1), ("1.1", ssl.TLSVersion.TLSv1_1),
                      ("1.2", ssl.TLSVersion.TLSv1_2), ("1.3", ssl.TLSVersion.TLSv1_3)]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(args.ca)
        try:
            ctx.minimum_version = ver
            ctx.maximum_version = ver
        except (ValueError, ssl.SSLError):
            result[name] = "unsupported-by-client"
            continue
        ctx.set_ciphers("ALL:@SECLEVEL=0") if ver < ssl.TLSVersion.TLSv1_2 else None
        try:
            with socket.create_connection((host, port), timeout=10) as sock:
                with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
                    result[name] = tls.version()
        except (ssl.SSLError, OSError) as e:
            result[name] = "refused"
    out(result)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="")
    p.add_argument("--ca")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--token")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("search")
    s.add_argument("--level", choices=["studies", "series", "instances"], required=True)
    s.add_argument("--study")
    s.add_argument("--series")
    s.add_argument("-k", "--key", action="append")
    for name in ["retrieve", "metadata", "frames", "rendered"]:
        s = sub.add_parser(name)
        s.add_argument("--study", required=True)
        s.add_argument("--series", required=True)
        s.add_argument("--sop", required=True)
        if name == "frames":
            s.add_argument("--frames", default="1")
        if name == "rendered":
            s.add_argument("--media", default="image/jpeg")
    s = sub.add_parser("retrieve-study")
    s.add_argument("--study", required=True)
    s = sub.add_parser("stow")
    s.add_argument("--study")
    s.add_argument("files", nargs="+")
    s = sub.add_parser("stow-new")
    s.add_argument("--patient-id", required=True)
    s = sub.add_parser("stow-study")
    s.add_argument("--patient-id", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--series", type=int, default=2)
    s.add_argument("--instances", type=int, default=3)
    s = sub.add_parser("zip")
    s.add_argument("--study")
    s.add_argument("--path")
    s.add_argument("--out", required=True)
    s = sub.add_parser("raw-get")
    s.add_argument("--path", required=True)
    s.add_argument("--accept", default='multipart/related; type="application/dicom"; transfer-syntax=*')
    s.add_argument("--out", required=True)
    s = sub.add_parser("raw-stow")
    s.add_argument("--study")
    s.add_argument("files", nargs="+")
    s = sub.add_parser("probe")
    s.add_argument("--spec", required=True)
    s = sub.add_parser("burst")
    s.add_argument("--path", required=True)
    s.add_argument("--count", type=int, default=100)
    s.add_argument("--burst-user", required=True)
    s.add_argument("--burst-password", required=True)
    s = sub.add_parser("hold")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", required=True)
    s.add_argument("--bind", default="127.0.0.2")
    s.add_argument("--count", type=int, default=100)
    s.add_argument("--seconds", type=float, default=30)
    s.add_argument("--tls", action="store_true")
    s.add_argument("--recheck", type=float, help="report again after this many seconds")
    s = sub.add_parser("tls")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", required=True)
    args = p.parse_args()
    globals()["cmd_" + args.cmd.replace("-", "_")](args)


if __name__ == "__main__":
    main()
