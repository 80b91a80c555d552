#!/usr/bin/env python3
"""A DICOM peer for Custos's tests, built on pynetdicom and pydicom.

Each subcommand does one thing a real workstation or modality would do and
prints one JSON document on stdout for the Rust test to assert on. Loopback only.
"""
import argparse
import json
import os
import socketserver
import sys
import threading
import time
from pathlib import Path

import pydicom
import pydicom.filebase
import pydicom.filewriter
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt, debug_logger  # noqa: F401
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import (
    Verification,
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    SecondaryCaptureImageStorage,
)

from pynetdicom import _config

HOST = "127.0.0.1"
# Send files as their bytes on disk (no decode/re-encode), so that "identical"
# means identical to what went over the wire.
_config.STORE_SEND_CHUNKED_DATASET = True


def out(obj):
    print(json.dumps(obj))


def make_ae(aet):
    ae = AE(ae_title=aet)
    ae.acse_timeout = 10
    ae.dimse_timeout = 30
    ae.network_timeout = 30
    return ae


def associate(ae, args, **kw):
    bind = (args.bind, 0) if getattr(args, "bind", None) else None
    if bind:
        kw["bind_address"] = bind
    if getattr(args, "user", None) or getattr(args, "jwt", None):
        from pynetdicom.pdu_primitives import UserIdentityNegotiation
        uid = UserIdentityNegotiation()
        if args.jwt:
            uid.user_identity_type = 5
            uid.primary_field = args.jwt.encode()
        elif args.password is not None:
            uid.user_identity_type = 2
            uid.primary_field = args.user.encode()
            uid.secondary_field = args.password.encode()
        else:
            uid.user_identity_type = 1
            uid.primary_field = args.user.encode()
        uid.positive_response_requested = bool(getattr(args, "positive_response", False))
        kw["ext_neg"] = list(kw.get("ext_neg", [])) + [uid]
    if getattr(args, "tls_ca", None):
        import ssl
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.tls_ca)
        ctx.check_hostname = False
        if args.tls_cert:
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_max:
            v = {"1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
            ctx.minimum_version = min(v[args.tls_max], ssl.TLSVersion.TLSv1_2) if args.tls_max != "1.1" else v["1.1"]
            ctx.maximum_version = v[args.tls_max]
            if args.tls_max == "1.1":
                ctx.set_ciphers("ALL:@SECLEVEL=0")
        kw["tls_args"] = (ctx, None)
    return ae.associate(HOST, args.port, ae_title=args.aec, **kw)


def cmd_echo(args):
    ae = make_ae(args.aet)
    ae.add_requested_context(Verification)
    assoc = associate(ae, args)
    if not assoc.is_established:
        out({"accepted": False, "rejected": assoc.is_rejected})
        return
    st = assoc.send_c_echo()
    assoc.release()
    out({"accepted": True, "status": st.Status if st else None})


def cmd_contexts(args):
    """Proposes one context per service and reports which were accepted."""
    ae = make_ae(args.aet)
    names = {
        Verification: "echo",
        CTImageStorage: "store",
        StudyRootQueryRetrieveInformationModelFind: "find",
        StudyRootQueryRetrieveInformationModelGet: "get",
        StudyRootQueryRetrieveInformationModelMove: "move",
    }
    for uid in names:
        ae.add_requested_context(uid)
    assoc = associate(ae, args)
    if not assoc.is_established:
        out({"accepted": False})
        return
    accepted = sorted(names[c.abstract_syntax] for c in assoc.accepted_contexts)
    result = {"accepted": True, "contexts": accepted}
    ack = assoc.acceptor.user_identity
    # The acceptor's positive User Identity response, if it sent one.
    result["identity_response"] = None if ack is None else (ack.server_response or b"").decode("latin-1")
    if args.try_find:
        # A C-FIND on a context the server has refused must not reach the archive.
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientName = "*"
        try:
            statuses = [s.Status for s, _ in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind) if s]
            result["find_statuses"] = statuses
        except Exception as e:  # pynetdicom refuses to send without a context
            result["find_error"] = type(e).__name__
    assoc.release()
    out(result)


def cmd_permissive_scp(args):
    """An archive configured the way the 2019 survey found them: any calling
    and called AE, C-ECHO, C-STORE, C-FIND answering with a (fake) patient,
    C-MOVE and C-GET offered. Runs for --seconds on loopback."""
    ae = AE(ae_title="OPENPACS")
    ae.require_called_aet = False
    ae.require_calling_aet = []
    for uid in [Verification, PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind,
                StudyRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelGet]:
        ae.add_supported_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    # CT storage both ways: stored into, and sent back by C-GET (SCP role for the requestor).
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
                             scu_role=True, scp_role=True)

    def on_find(event):
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientName = "SECRET^PATIENT"
        ds.PatientID = "LEAK0001"
        ds.PatientBirthDate = "19700101"
        ds.StudyInstanceUID = "1.2.3.4.5"
        yield 0xFF00, ds

    def on_move(event):
        yield None, None

    def on_get(event):
        # One fake CT instance of the fake patient's study.
        ct = Dataset()
        ct.SOPClassUID = CTImageStorage
        ct.SOPInstanceUID = "1.2.3.4.5.1.1"
        ct.StudyInstanceUID = "1.2.3.4.5"
        ct.SeriesInstanceUID = "1.2.3.4.5.1"
        ct.PatientName = "SECRET^PATIENT"
        ct.PatientID = "LEAK0001"
        ct.Modality = "CT"
        ct.file_meta = FileMetaDataset()
        ct.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        yield 1
        yield 0xFF00, ct

    handlers = [(evt.EVT_C_FIND, on_find), (evt.EVT_C_MOVE, on_move), (evt.EVT_C_GET, on_get),
                (evt.EVT_C_STORE, lambda e: 0x0000)]
    ssl_context = None
    if args.tls_cert:
        import ssl
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_legacy:
            # The configuration BCP 195 forbids: TLS 1.0 and 1.1 accepted.
            ssl_context.minimum_version = ssl.TLSVersion.TLSv1
            ssl_context.set_ciphers("ALL:@SECLEVEL=0")
    server = ae.start_server((HOST, args.port), block=False, evt_handlers=handlers,
                             ssl_context=ssl_context)
    print("ready", flush=True)
    time.sleep(args.seconds)
    server.shutdown()


def dataset_bytes(path):
    _, offset = split_dataset(Path(path))
    return Path(path).read_bytes()[offset:]


def file_info(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds, ds.file_meta.TransferSyntaxUID


def is_valid_instance(path):
    """A valid storable instance: Part 10 file meta, the UIDs the information
    model needs, and a data set that agrees with its file meta."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        meta = ds.file_meta
        return all(
            [
                meta.get("TransferSyntaxUID"),
                ds.get("StudyInstanceUID"),
                ds.get("SeriesInstanceUID"),
                ds.get("SOPInstanceUID") == meta.get("MediaStorageSOPInstanceUID"),
                ds.get("SOPClassUID") == meta.get("MediaStorageSOPClassUID"),
            ]
        )
    except Exception:
        return False


def store_files(args, files):
    """Stores each file as-is on its own association proposing its own syntax."""
    results = {}
    for f in files:
        try:
            ds, ts = file_info(f)
            sop_class = ds.SOPClassUID
            uid = ds.SOPInstanceUID
        except Exception as e:
            results[f] = {"error": "unreadable: %s" % type(e).__name__}
            continue
        ae = make_ae(args.aet)
        ae.add_requested_context(sop_class, [ts])
        assoc = associate(ae, args)
        if not assoc.is_established:
            results[f] = {"error": "association failed"}
            continue
        if not assoc.accepted_contexts:
            assoc.release()
            results[f] = {"error": "context rejected", "ts": str(ts), "sop_class": str(sop_class)}
            continue
        try:
            st = assoc.send_c_store(Path(f))
            results[f] = {"status": st.Status if st else None, "uid": str(uid), "ts": str(ts),
                          "sop_class": str(sop_class), "study": str(ds.get("StudyInstanceUID", ""))}
        except Exception as e:
            results[f] = {"error": "%s: %s" % (type(e).__name__, e)}
        assoc.release()
    return results


def cmd_store(args):
    out(store_files(args, args.files))


def cmd_roundtrip(args):
    """Stores each file, then fetches it back by C-GET and by C-MOVE and compares
    the data set bytes received with the bytes sent."""
    received = {}
    lock = threading.Lock()

    def keep(event):
        with lock:
            received[str(event.request.AffectedSOPInstanceUID)] = (
                event.request.DataSet.getvalue(),
                str(event.context.transfer_syntax),
            )
        return 0x0000

    infos = {}
    for f in args.files:
        try:
            ds, ts = file_info(f)
            infos[f] = (str(ds.SOPClassUID), str(ts))
        except Exception:
            pass
    # C-MOVE destination: our own storage SCP, registered in Custos by the test.
    dest = make_ae(args.dest_aet)
    pairs = sorted(set(infos.values()))
    for sop_class, ts in pairs:
        dest.add_supported_context(sop_class, [ts, ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    dest.maximum_pdu_size = 0
    scp = dest.start_server((HOST, args.dest_port), block=False, evt_handlers=[(evt.EVT_C_STORE, keep)])
    report = {}
    try:
        for f in args.files:
            r = store_files(args, [f])[f]
            r["valid"] = is_valid_instance(f)
            if r.get("status") != 0:
                report[f] = r
                continue
            original = dataset_bytes(f)
            ident = Dataset()
            ident.QueryRetrieveLevel = "IMAGE"
            ident.StudyInstanceUID = r["study"]
            ident.SOPInstanceUID = r["uid"]
            # C-GET
            received.clear()
            ae = make_ae(args.aet)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
            ae.add_requested_context(r["sop_class"], [r["ts"]])
            roles = [build_role(r["sop_class"], scp_role=True)]
            assoc = associate(ae, args, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, keep)])
            get_status = None
            if assoc.is_established:
                for st, _ in assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet):
                    if st:
                        get_status = st.Status
                assoc.release()
            got = received.get(r["uid"])
            get_same = got is not None and got[0] == original and got[1] == r["ts"]
            # C-MOVE
            received.clear()
            ae = make_ae(args.aet)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = associate(ae, args)
            move_status = None
            if assoc.is_established:
                for st, _ in assoc.send_c_move(ident, args.dest_aet, StudyRootQueryRetrieveInformationModelMove):
                    if st:
                        move_status = st.Status
                assoc.release()
            got = received.get(r["uid"])
            move_same = got is not None and got[0] == original and got[1] == r["ts"]
            report[f] = dict(r, get_status=get_status, get_identical=get_same,
                             move_status=move_status, move_identical=move_same)
    finally:
        scp.shutdown()
    out(report)


def parse_keys(keys):
    ds = Dataset()
    for k in keys:
        name, _, value = k.partition("=")
        setattr(ds, name, value)
    return ds


def cmd_find(args):
    ae = make_ae(args.aet)
    model = PatientRootQueryRetrieveInformationModelFind if args.patient_root else StudyRootQueryRetrieveInformationModelFind
    ae.add_requested_context(model)
    assoc = associate(ae, args)
    if not assoc.is_established:
        out({"accepted": False})
        return
    ds = parse_keys(args.k)
    ds.QueryRetrieveLevel = args.level
    if args.charset:
        ds.SpecificCharacterSet = args.charset
    matches, final = [], None
    for st, ident in assoc.send_c_find(ds, model):
        if st is None:
            break
        if st.Status in (0xFF00, 0xFF01) and ident is not None:
            m = {}
            for elem in ident:
                if elem.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
                    continue
                m[elem.keyword] = str(elem.value) if elem.value is not None else ""
            matches.append(m)
        else:
            final = st.Status
    assoc.release()
    out({"accepted": True, "matches": matches, "status": final})


def cmd_worklist(args):
    """A modality's worklist query (Modality Worklist Information Model -
    FIND): patient and accession asked for, the scheduled step matched on
    --modality and --date (a DICOM date or range). Prints each match's
    patient ID and name and its step's modality and start date."""
    from pynetdicom.sop_class import ModalityWorklistInformationFind
    ae = make_ae(args.aet)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = associate(ae, args)
    if not assoc.is_established:
        out({"accepted": False})
        return
    ds = Dataset()
    ds.PatientName = args.name or ""
    ds.PatientID = ""
    ds.AccessionNumber = ""
    step = Dataset()
    step.Modality = args.modality or ""
    step.ScheduledProcedureStepStartDate = args.date or ""
    step.ScheduledStationAETitle = ""
    ds.ScheduledProcedureStepSequence = [step]
    matches, final = [], None
    for st, ident in assoc.send_c_find(ds, ModalityWorklistInformationFind):
        if st is None:
            break
        if st.Status in (0xFF00, 0xFF01) and ident is not None:
            sps = ident.ScheduledProcedureStepSequence[0]
            matches.append({"PatientID": str(ident.PatientID), "PatientName": str(ident.PatientName),
                            "Modality": str(sps.Modality), "Date": str(sps.ScheduledProcedureStepStartDate)})
        else:
            final = st.Status
    assoc.release()
    out({"accepted": True, "matches": matches, "status": final})


def write_instance(path, **attrs):
    # "_pixel_bytes": N makes an image of N bytes (a multiple of 4096) instead of 64;
    # "_text_bytes": N adds a Text Value (UT, kept in metadata) of N characters.
    pixel_bytes = attrs.pop("_pixel_bytes", None)
    text_bytes = attrs.pop("_text_bytes", None)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = attrs.get("SOPInstanceUID") or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    for k, v in attrs.items():
        setattr(ds, k, v)
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(64))
    if pixel_bytes:
        ds.Columns = 4096
        ds.Rows = pixel_bytes // 4096
        ds.PixelData = (bytes(range(251)) * (pixel_bytes // 251 + 1))[:ds.Rows * 4096]
    if text_bytes:
        ds.TextValue = "x" * text_bytes
    ds.save_as(path, enforce_file_format=True)


def cmd_make(args):
    """Writes instances described as JSON objects (one per argument)."""
    os.makedirs(args.outdir, exist_ok=True)
    paths = []
    for i, spec in enumerate(args.specs):
        attrs = json.loads(spec)
        p = os.path.join(args.outdir, "gen%04d.dcm" % i)
        write_instance(p, **attrs)
        paths.append(p)
    out(paths)


def cmd_ingest(args):
    """Stores synthetic instances from several threads; appends each acknowledged
    SOP Instance UID (status 0x0000) to --acked, flushed, as soon as it is known.
    With --reconnect, a refused or broken association is opened again until the
    time is up (outage trials); prints the statuses seen and the slowest store."""
    os.makedirs(args.workdir, exist_ok=True)
    ack = open(args.acked, "a", buffering=1)
    lock = threading.Lock()
    stop = time.time() + args.seconds
    statuses, errors, slowest = {}, [0], [0.0]

    def session(n, i):
        ae = make_ae(args.aet)
        ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian])
        assoc = associate(ae, args)
        if not assoc.is_established:
            return i
        try:
            while time.time() < stop:
                p = os.path.join(args.workdir, "t%d_%d.dcm" % (n, i))
                uid = generate_uid()
                write_instance(p, SOPInstanceUID=uid, PatientID="DUR%d" % n, PatientName="DURABLE^TEST")
                t0 = time.time()
                st = assoc.send_c_store(Path(p))
                took = time.time() - t0
                code = "%04X" % st.Status if st and "Status" in st else "none"
                with lock:
                    statuses[code] = statuses.get(code, 0) + 1
                    slowest[0] = max(slowest[0], took)
                    if code == "0000":
                        ack.write(uid + "\n")
                        ack.flush()
                        os.fsync(ack.fileno())
                i += 1
                if code == "none":
                    break  # the association is gone
            assoc.release()
        except Exception:
            with lock:
                errors[0] += 1  # the server was killed mid-store: expected
        return i

    def worker(n):
        i = session(n, 0)
        while args.reconnect and time.time() < stop:
            time.sleep(0.2)
            i = session(n, i)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out({"done": True, "statuses": statuses, "errors": errors[0], "slowest_seconds": round(slowest[0], 3)})


def cmd_crash_load(args):
    """The rest of the crash trial's load, beside `ingest`: STOW-RS of new
    instances (patient DURABLE^TEST; each acknowledged SOP Instance UID appended
    to --acked, fsynced), C-FIND of that patient over and over, and C-MOVE of
    its studies to a storage SCP run here as --move-dest. Runs until --seconds
    pass or it is killed; every failure just means: try again."""
    import requests

    os.makedirs(args.workdir, exist_ok=True)
    ack = open(args.acked, "a", buffering=1)
    stop = time.time() + args.seconds
    counts = {"stow_ok": 0, "stow_failed": 0, "find": 0, "move": 0, "moved": 0}
    lock = threading.Lock()

    def stow():
        s = requests.Session()
        s.trust_env = False
        s.verify = args.ca
        s.auth = (args.web_user, args.web_password)
        i = 0
        while time.time() < stop:
            p = os.path.join(args.workdir, "stow%d.dcm" % i)
            uid = generate_uid()
            write_instance(p, SOPInstanceUID=uid, PatientID="STOW", PatientName="DURABLE^TEST")
            body = b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n" + open(p, "rb").read() + b"\r\n--b0undary--\r\n"
            try:
                r = s.post(args.http + "/dicom-web/studies", data=body, timeout=30, headers={
                    "Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary',
                    "Accept": "application/dicom+json"})
                ok = r.status_code == 200
                why = "HTTP %d %s" % (r.status_code, r.text[:200])
            except Exception as e:
                ok, why = False, repr(e)
            with lock:
                counts["stow_ok" if ok else "stow_failed"] += 1
                if not ok and counts["stow_failed"] <= 5:
                    print("crash-load: STOW-RS failed:", why, file=sys.stderr, flush=True)
                if ok:
                    ack.write(uid + "\n")
                    ack.flush()
                    os.fsync(ack.fileno())
            if not ok:
                time.sleep(0.2)
            i += 1

    def find():
        while time.time() < stop:
            ae = make_ae(args.aet)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
            try:
                assoc = associate(ae, args)
                while assoc.is_established and time.time() < stop:
                    q = Dataset()
                    q.QueryRetrieveLevel = "STUDY"
                    q.PatientName = "DURABLE^TEST"
                    q.StudyInstanceUID = ""
                    for _ in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind):
                        pass
                    with lock:
                        counts["find"] += 1
                assoc.release()
            except Exception:
                pass
            time.sleep(0.2)

    def move():
        while time.time() < stop:
            ae = make_ae(args.aet)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            try:
                assoc = associate(ae, args)
                while assoc.is_established and time.time() < stop:
                    q = Dataset()
                    q.QueryRetrieveLevel = "STUDY"
                    q.PatientID = "DUR0"
                    q.StudyInstanceUID = ""
                    studies = [str(i.StudyInstanceUID) for st, i in
                               assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind)
                               if i is not None and st and st.Status in (0xFF00, 0xFF01)]
                    for uid in studies[:3]:
                        m = Dataset()
                        m.QueryRetrieveLevel = "STUDY"
                        m.StudyInstanceUID = uid
                        for _ in assoc.send_c_move(m, args.move_dest, StudyRootQueryRetrieveInformationModelMove):
                            pass
                        with lock:
                            counts["move"] += 1
                    if not studies:
                        time.sleep(0.2)
                assoc.release()
            except Exception:
                pass
            time.sleep(0.2)

    def stored(event):
        with lock:
            counts["moved"] += 1
        return 0x0000

    dest = AE(ae_title=args.move_dest)
    dest.add_supported_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    scp = dest.start_server((HOST, args.move_port), block=False, evt_handlers=[(evt.EVT_C_STORE, stored)])
    threads = [threading.Thread(target=f) for f in (stow, find, move)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    scp.shutdown()
    out(counts)


def cmd_get(args):
    """C-GET (Study Root) of everything matching the keys; reports the SOP
    Instance UIDs received and whether each data set parses."""
    got, names, unreadable = [], [], 0
    lock = threading.Lock()

    def keep(event):
        nonlocal unreadable
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            _ = ds.PixelData
            with lock:
                got.append(str(ds.SOPInstanceUID))
                names.append(str(ds.get("PatientName", "")))
                # --abort-after N: a viewer closed part-way. A-ABORT on
                # receiving the Nth, before answering it (from another
                # thread: this one is the association's).
                if args.abort_after and len(got) == args.abort_after:
                    threading.Thread(target=event.assoc.abort).start()
                    time.sleep(1)
        except Exception:
            with lock:
                unreadable += 1
        return 0x0000

    ae = make_ae(args.aet)
    if args.abort_after:
        # After its own A-ABORT, pynetdicom waits for a response until this.
        ae.dimse_timeout = 2
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    if args.each_study:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    roles = [build_role(SecondaryCaptureImageStorage, scp_role=True), build_role(CTImageStorage, scp_role=True)]
    assoc = associate(ae, args, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, keep)])
    if not assoc.is_established:
        out({"accepted": False})
        return
    ds = parse_keys(args.k)
    ds.QueryRetrieveLevel = args.level
    if args.each_study:
        # A retrieve must name its studies: find them, then C-GET each one.
        ds.StudyInstanceUID = ""
        uids = [str(i.StudyInstanceUID) for st, i in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind)
                if st is not None and st.Status in (0xFF00, 0xFF01) and i is not None]
        requests = []
        for uid in uids:
            one = Dataset()
            one.QueryRetrieveLevel = "STUDY"
            one.StudyInstanceUID = uid
            requests.append(one)
    else:
        requests = [ds]
    final = None
    # A C-GET that gets no response at all (pynetdicom 3.0.4's reactor can take
    # a fast response meant for send_c_get, which then waits out its DIMSE
    # timeout and aborts; see RELIABILITY.md) is asked again on a new
    # association, at most twice in all; the retries are reported.
    retries = 0
    for req in requests:
        while True:
            answered = False
            for st, _ in assoc.send_c_get(req, StudyRootQueryRetrieveInformationModelGet):
                if st is None or "Status" not in st:
                    continue
                answered = True
                if st.Status != 0xFF00 and final in (None, 0):
                    final = st.Status
            if answered or retries == 2 or args.abort_after:
                break
            retries += 1
            print(f"C-GET of {req.get('StudyInstanceUID', '')} got no response; asking again", file=sys.stderr)
            if assoc.is_established:
                assoc.abort()
            assoc = associate(ae, args, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, keep)])
            if not assoc.is_established:
                break
    if assoc.is_established:
        assoc.release()
    out({"accepted": True, "status": final, "received": got, "names": names, "unreadable": unreadable,
         "retries": retries})


def cmd_get_uncompressed(args):
    """Stores each file as-is, then C-GETs it proposing only Explicit VR Little
    Endian for its SOP class, as a viewer without codecs would. Reports the
    syntax received and whether the pixels equal pydicom's decoding of the original."""
    report = {}
    for f in args.files:
        r = store_files(args, [f])[f]
        if r.get("status") != 0:
            report[f] = r
            continue
        got = {}

        def keep(event):
            got["ts"] = str(event.context.transfer_syntax)
            ds = event.dataset
            ds.file_meta = event.file_meta
            got["ds"] = ds
            return 0x0000

        ae = make_ae(args.aet)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(r["sop_class"], [ExplicitVRLittleEndian])
        roles = [build_role(r["sop_class"], scp_role=True)]
        assoc = associate(ae, args, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, keep)])
        ident = Dataset()
        ident.QueryRetrieveLevel = "IMAGE"
        ident.StudyInstanceUID = r["study"]
        ident.SOPInstanceUID = r["uid"]
        final = None
        for st, _ in assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet):
            if st is not None and st.Status != 0xFF00:
                final = st.Status
        assoc.release()
        entry = {"status": final, "received_ts": got.get("ts"), "stored_ts": r["ts"]}
        if "ds" in got:
            try:
                original = pydicom.dcmread(f).pixel_array.astype("int64")
                received = got["ds"].pixel_array.astype("int64")
                entry["pixels_equal"] = bool(received.shape == original.shape and (received == original).all())
                if received.shape == original.shape:
                    entry["max_abs_diff"] = int(abs(received - original).max())
            except Exception as e:
                entry["pixels_equal"] = None
                entry["compare_error"] = type(e).__name__
        report[f] = entry
    out(report)


def cmd_store_raw(args):
    """Sends a C-STORE whose data set is the given bytes, whatever they are."""
    ae = make_ae(args.aet)
    ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    assoc = associate(ae, args)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = args.workfile
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM")
        pydicom.filewriter.write_file_meta_info(pydicom.filebase.DicomFileLike(f), meta, enforce_standard=True)
        f.write(Path(args.body).read_bytes())
    st = assoc.send_c_store(Path(path))
    echo = assoc.send_c_echo()
    assoc.release()
    out({"status": st.Status if st else None, "echo_after": echo.Status if echo else None})


def cmd_commit(args):
    """Storage commitment as a modality does it: N-ACTION naming the given
    files' instances (plus --missing UIDs of instances never sent), then wait
    for the N-EVENT-REPORT: on the same association (--listen-port absent),
    or on a new association to our own SCP on --listen-port after releasing
    at once. Prints the N-ACTION status and each report received."""
    from pynetdicom.sop_class import StorageCommitmentPushModel, StorageCommitmentPushModelInstance
    reports = []
    got = threading.Event()

    def on_report(event):
        info = event.event_information
        reports.append({
            "via": "new" if event.assoc.is_acceptor else "same",
            "calling": event.assoc.requestor.ae_title if event.assoc.is_acceptor else None,
            "event_type": event.event_type,
            "transaction": str(info.TransactionUID),
            "retrieve_ae": str(info.get("RetrieveAETitle", "")),
            "committed": [str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])],
            "failed": [[str(i.ReferencedSOPInstanceUID), int(i.FailureReason)]
                       for i in info.get("FailedSOPSequence", [])],
        })
        got.set()
        return 0x0000, None

    handlers = [(evt.EVT_N_EVENT_REPORT, on_report)]
    server = None
    if args.listen_port and not args.no_listen:
        scp = make_ae(args.aet)
        scp.add_supported_context(StorageCommitmentPushModel, [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
                                  scu_role=False, scp_role=True)
        server = scp.start_server((HOST, args.listen_port), block=False, evt_handlers=handlers)
    ae = make_ae(args.aet)
    ae.add_requested_context(StorageCommitmentPushModel)
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    refs = []
    for path in args.files:
        f = pydicom.dcmread(path, stop_before_pixels=True)
        refs.append((f.SOPClassUID, f.SOPInstanceUID))
    refs += [(SecondaryCaptureImageStorage, uid) for uid in args.missing]
    ds.ReferencedSOPSequence = []
    for cls, uid in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = cls
        item.ReferencedSOPInstanceUID = uid
        ds.ReferencedSOPSequence.append(item)
    assoc = associate(ae, args, evt_handlers=[] if server or args.no_listen else handlers)
    if not assoc.is_established:
        out({"accepted": False})
        return
    status, _ = assoc.send_n_action(ds, 1, StorageCommitmentPushModel, StorageCommitmentPushModelInstance)
    if server or args.no_listen:
        assoc.release()
    if args.no_listen:
        out({"accepted": True, "status": status.Status if status else None,
             "transaction": str(ds.TransactionUID), "reports": []})
        return
    got.wait(args.wait)
    if not server:
        assoc.release()
    else:
        server.shutdown()
    out({"accepted": True, "status": status.Status if status else None,
         "transaction": str(ds.TransactionUID), "reports": reports})


def cmd_await_report(args):
    """A modality's Storage Commitment SCP on --listen-port, waiting up to
    --wait seconds for one N-EVENT-REPORT; prints it (none: empty list)."""
    from pynetdicom.sop_class import StorageCommitmentPushModel
    reports = []
    got = threading.Event()

    def on_report(event):
        info = event.event_information
        reports.append({
            "calling": event.assoc.requestor.ae_title,
            "event_type": event.event_type,
            "transaction": str(info.TransactionUID),
            "committed": [str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])],
        })
        got.set()
        return 0x0000, None

    scp = make_ae(args.aet)
    scp.add_supported_context(StorageCommitmentPushModel, [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
                              scu_role=False, scp_role=True)
    server = scp.start_server((HOST, args.listen_port), block=False,
                              evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    print("listening", file=sys.stderr, flush=True)
    got.wait(args.wait)
    server.shutdown()
    out({"reports": reports})


def cmd_receive(args):
    """A forwarding destination: a Storage SCP for every storage class, as
    --aet on --port, keeping each data set's bytes as received in --dir
    (named by SOP Instance UID) until --count arrived or --seconds passed.
    Prints one entry per C-STORE: the instance and the calling AE title."""
    from pynetdicom import StoragePresentationContexts
    got = []
    done = threading.Event()
    out_dir = Path(args.dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def on_store(event):
        uid = str(event.request.AffectedSOPInstanceUID)
        (out_dir / uid).write_bytes(event.request.DataSet.getvalue())
        got.append({"uid": uid, "calling": event.assoc.requestor.ae_title})
        if len(got) >= args.count:
            done.set()
        return 0x0000

    ae = make_ae(args.aet)
    for cx in StoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = ae.start_server((HOST, args.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    print("listening", file=sys.stderr, flush=True)
    done.wait(args.seconds)
    time.sleep(0.5)  # anything sent after the count would show up here
    server.shutdown()
    out(got)


def cmd_move_late_accept(args):
    """C-MOVE of --study to --dest-aet, a Storage SCP here on --dest-port that
    listens from the start but accepts connections only once the C-MOVE's
    first response arrived: as DCMTK's movescu does when it is its own
    destination. Prints the responses' statuses and the instances received;
    with no response before the destination association, the move times out.
    --never-accept: the destination never accepts (a hung receiver);
    --cancel: C-CANCEL after the first response (the destination unstarted)."""
    from pynetdicom import StoragePresentationContexts
    got = []

    def on_store(event):
        got.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    dest = make_ae(args.dest_aet)
    for cx in StoragePresentationContexts:
        dest.add_supported_context(cx.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    # Bound and listening; connections wait in the backlog until serve_forever.
    server = dest.make_server((HOST, args.dest_port), evt_handlers=[(evt.EVT_C_STORE, on_store)])
    serving = None
    ae = make_ae(args.aet)
    ae.dimse_timeout = args.wait
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = associate(ae, args)
    statuses = []
    first = None
    if assoc.is_established:
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = args.study
        started = time.monotonic()
        for st, _ in assoc.send_c_move(ident, args.dest_aet, StudyRootQueryRetrieveInformationModelMove,
                                       msg_id=7):
            statuses.append(st.Status if "Status" in st else None)
            if first is None:
                first = {k: st.get(k) for k in ("NumberOfRemainingSuboperations", "NumberOfCompletedSuboperations",
                                                "NumberOfFailedSuboperations", "NumberOfWarningSuboperations")}
            if time.monotonic() - started > args.give_up:
                statuses.append("gave up")
                assoc.abort()
                break
            if args.cancel and len(statuses) == 1:
                assoc.send_c_cancel(7, query_model=StudyRootQueryRetrieveInformationModelMove)
            elif serving is None and not args.never_accept:
                serving = threading.Thread(target=server.serve_forever, daemon=True)
                serving.start()
        if assoc.is_established:
            assoc.release()
    if serving:
        # socketserver's own: pynetdicom's expects start_server's bookkeeping.
        socketserver.TCPServer.shutdown(server)
    server.server_close()
    out(dict(statuses=statuses, received=got, first=first))


def cmd_mpps(args):
    """A modality's performed procedure step, and the transitions PS3.4 F
    refuses: N-CREATE COMPLETED, N-CREATE IN PROGRESS, the same again,
    N-SET COMPLETED (with its series), N-SET after completion, N-SET of an
    unknown step. Prints each status and the step's UID."""
    from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS
    ae = make_ae(args.aet)
    ae.add_requested_context(MPPS)
    assoc = associate(ae, args)
    if not assoc.is_established:
        out({"accepted": False})
        return

    def attrs(status):
        ds = Dataset()
        ds.PatientName = "Doe^Jane"
        ds.PatientID = args.patient_id
        ds.PerformedProcedureStepStatus = status
        ds.PerformedProcedureStepID = "PPS1"
        ds.PerformedStationAETitle = args.aet
        ds.PerformedProcedureStepStartDate = "20261204"
        ds.PerformedProcedureStepStartTime = "093500"
        ds.Modality = "CT"
        step = Dataset()
        step.StudyInstanceUID = args.study_uid
        step.AccessionNumber = args.accession
        step.ScheduledProcedureStepID = "SPS-" + args.accession
        ds.ScheduledStepAttributesSequence = [step]
        return ds

    def status_of(rsp):
        return rsp[0].Status if rsp and rsp[0] else None

    uid = generate_uid()
    statuses = {}
    statuses["create_completed"] = status_of(assoc.send_n_create(attrs("COMPLETED"), MPPS, generate_uid()))
    statuses["create"] = status_of(assoc.send_n_create(attrs("IN PROGRESS"), MPPS, uid))
    statuses["create_again"] = status_of(assoc.send_n_create(attrs("IN PROGRESS"), MPPS, uid))
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    done.PerformedProcedureStepEndDate = "20261204"
    done.PerformedProcedureStepEndTime = "094500"
    series = Dataset()
    series.SeriesInstanceUID = generate_uid()
    series.PerformingPhysicianName = ""
    series.ProtocolName = "HEAD"
    series.ReferencedImageSequence = []
    done.PerformedSeriesSequence = [series]
    statuses["set_completed"] = status_of(assoc.send_n_set(done, MPPS, uid))
    again = Dataset()
    again.PerformedProcedureStepStatus = "DISCONTINUED"
    ended = assoc.send_n_set(again, MPPS, uid)
    statuses["set_after_completion"] = status_of(ended)
    # PS3.4 F.7.2.2.2: "may no longer be updated" carries Error ID A710.
    statuses["set_after_completion_error_id"] = getattr(ended[0], "ErrorID", None) if ended and ended[0] else None
    statuses["set_unknown"] = status_of(assoc.send_n_set(again, MPPS, generate_uid()))
    assoc.release()
    out({"accepted": True, "uid": uid, "statuses": statuses})


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--port", type=int, required=True)
        sp.add_argument("--aet", default="PYSCU")
        sp.add_argument("--aec", default="CUSTOS")
        sp.add_argument("--bind")
        # DICOM TLS: our CA, and a client key and certificate (optional).
        sp.add_argument("--tls-ca")
        sp.add_argument("--tls-cert")
        sp.add_argument("--tls-key")
        sp.add_argument("--tls-max", choices=["1.1", "1.2", "1.3"])
        # User identity negotiation: username + passcode, or a JWT.
        sp.add_argument("--user")
        sp.add_argument("--password")
        sp.add_argument("--jwt")
        sp.add_argument("--positive-response", action="store_true",
                        help="ask for a positive User Identity response")
        return sp

    common(sub.add_parser("echo")).set_defaults(fn=cmd_echo)
    sp = sub.add_parser("permissive-scp")
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--seconds", type=float, default=60)
    sp.add_argument("--tls-cert")
    sp.add_argument("--tls-key")
    sp.add_argument("--tls-legacy", action="store_true", help="also accept TLS 1.0 and 1.1")
    sp.set_defaults(fn=cmd_permissive_scp)
    sp = common(sub.add_parser("contexts"))
    sp.add_argument("--try-find", action="store_true")
    sp.set_defaults(fn=cmd_contexts)
    sp = common(sub.add_parser("store"))
    sp.add_argument("files", nargs="+")
    sp.set_defaults(fn=cmd_store)
    sp = common(sub.add_parser("roundtrip"))
    sp.add_argument("--dest-aet", required=True)
    sp.add_argument("--dest-port", type=int, required=True)
    sp.add_argument("files", nargs="+")
    sp.set_defaults(fn=cmd_roundtrip)
    sp = common(sub.add_parser("find"))
    sp.add_argument("--level", default="STUDY")
    sp.add_argument("--patient-root", action="store_true")
    sp.add_argument("--charset")
    sp.add_argument("-k", action="append", default=[])
    sp.set_defaults(fn=cmd_find)
    sp = sub.add_parser("make")
    sp.add_argument("outdir")
    sp.add_argument("specs", nargs="+")
    sp.set_defaults(fn=cmd_make)
    sp = common(sub.add_parser("ingest"))
    sp.add_argument("--threads", type=int, default=4)
    sp.add_argument("--seconds", type=float, default=3)
    sp.add_argument("--acked", required=True)
    sp.add_argument("--workdir", required=True)
    sp.add_argument("--reconnect", action="store_true", help="associate again after a refusal or failure")
    sp.set_defaults(fn=cmd_ingest)
    sp = common(sub.add_parser("crash-load"))
    sp.add_argument("--http", required=True, help="https://localhost:PORT")
    sp.add_argument("--ca", required=True)
    sp.add_argument("--web-user", required=True)
    sp.add_argument("--web-password", required=True)
    sp.add_argument("--acked", required=True)
    sp.add_argument("--workdir", required=True)
    sp.add_argument("--seconds", type=float, default=30)
    sp.add_argument("--move-dest", required=True)
    sp.add_argument("--move-port", type=int, required=True)
    sp.set_defaults(fn=cmd_crash_load)
    sp = common(sub.add_parser("get"))
    sp.add_argument("--level", default="STUDY")
    sp.add_argument("-k", action="append", default=[])
    sp.add_argument("--each-study", action="store_true", help="C-FIND the studies matching -k, then C-GET each by its UID")
    sp.add_argument("--abort-after", type=int, default=0, help="A-ABORT once this many instances are received")
    sp.set_defaults(fn=cmd_get)
    sp = common(sub.add_parser("get-uncompressed"))
    sp.add_argument("files", nargs="+")
    sp.set_defaults(fn=cmd_get_uncompressed)
    sp = common(sub.add_parser("commit"))
    sp.add_argument("--missing", action="append", default=[], help="a SOP Instance UID never stored")
    sp.add_argument("--listen-port", type=int, help="release at once; receive the report here")
    sp.add_argument("--no-listen", action="store_true", help="release at once; receive no report (our SCP is down)")
    sp.add_argument("--wait", type=float, default=20)
    sp.add_argument("files", nargs="*")
    sp.set_defaults(fn=cmd_commit)
    sp = common(sub.add_parser("receive"))
    sp.add_argument("--dir", required=True)
    sp.add_argument("--count", type=int, required=True)
    sp.add_argument("--seconds", type=float, default=60)
    sp.set_defaults(fn=cmd_receive)
    sp = common(sub.add_parser("move-late-accept"))
    sp.add_argument("--study", required=True)
    sp.add_argument("--dest-aet", required=True)
    sp.add_argument("--dest-port", type=int, required=True)
    sp.add_argument("--wait", type=float, default=10, help="seconds a response may take")
    sp.add_argument("--never-accept", action="store_true")
    sp.add_argument("--cancel", action="store_true")
    sp.add_argument("--give-up", type=float, default=90, help="seconds the whole move may take")
    sp.set_defaults(fn=cmd_move_late_accept)
    sp = common(sub.add_parser("await-report"))
    sp.add_argument("--listen-port", type=int, required=True)
    sp.add_argument("--wait", type=float, default=60)
    sp.set_defaults(fn=cmd_await_report)
    sp = common(sub.add_parser("worklist"))
    sp.add_argument("--modality")
    sp.add_argument("--date")
    sp.add_argument("--name")
    sp.set_defaults(fn=cmd_worklist)
    sp = common(sub.add_parser("mpps"))
    sp.add_argument("--patient-id", required=True)
    sp.add_argument("--study-uid", required=True)
    sp.add_argument("--accession", required=True)
    sp.set_defaults(fn=cmd_mpps)
    sp = common(sub.add_parser("store-raw"))
    sp.add_argument("--workfile", required=True)
    sp.add_argument("body")
    sp.set_defaults(fn=cmd_store_raw)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
