#!/usr/bin/env python3
"""De-identification checks (issue 16) with pydicom, independent of Custos's
code: `corpus` makes a study of pydicom's own test files (each given an
InstanceNumber that names it, the same patient, identifying attributes at
the top and in sequences, a private block); `zip` downloads a de-identified
copy; `check` compares every original attribute with its de-identified
counterpart against PS3.15 Table E.1-1 (read from the repository's copy of
the table, actions resolved from the standard's codes here, not by Custos),
reads every output file whole with pydicom, and looks for the original
identifiers anywhere in the output bytes. Prints JSON."""
import argparse
import datetime
import glob
import hashlib
import json
import os
import re
import sys
import zipfile
from io import BytesIO

import warnings

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

warnings.simplefilter("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = os.path.join(HERE, "../../crates/custos-core/src/deid/table_e1_1.tsv")
PATIENT = ("DEID-P1", "Quimby^Harriet^Ann", "19570412", "ACC-77421")


def out(v):
    print(json.dumps(v, indent=1, sort_keys=True))


def cmd_corpus(a):
    """pydicom's test files that are whole Part 10 instances (at most 3 MB,
    one per SOP Instance UID) in one study of one patient."""
    src = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    study, burned_study = generate_uid(), generate_uid()
    os.makedirs(a.out, exist_ok=True)
    seen, files, n = set(), [], 0
    for path in sorted(glob.glob(os.path.join(src, "**", "*.dcm"), recursive=True)):
        if os.path.getsize(path) > 3 << 20:
            continue
        try:
            ds = pydicom.dcmread(path)
            sop, cls = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
            ts = ds.file_meta.TransferSyntaxUID
            ds.SeriesInstanceUID  # noqa: B018 — must be there
        except Exception:
            continue
        if sop in seen or not cls or str(ts) == "1.2.840.10008.1.2.2":
            continue
        seen.add(sop)
        n += 1
        ds.InstanceNumber = 1000 + n
        # A few test files name another instance in their file meta, which
        # Custos refuses (0xA900); made consistent.
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.StudyInstanceUID = study
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.AccessionNumber = PATIENT
        ds.StudyDate, ds.StudyTime = "20240301", "093000"
        ds.SeriesDate = "20240302"
        ds.StudyDescription = f"CT chest for Quimby {PATIENT[0]}"
        ds.SeriesDescription = "follow-up of HARRIET"
        ds.PatientSex, ds.PatientAge, ds.PatientWeight = "F", "066Y", "61.5"
        ds.InstitutionName, ds.ReferringPhysicianName = "St Elsewhere Clinic", "Ehrlich^Paul"
        ds.OtherPatientIDs = "MRN-99-1"
        ref = Dataset()
        ref.ReferencedSOPClassUID = cls
        ref.ReferencedSOPInstanceUID = sop  # refers to itself: mapped alike
        ds.ReferencedImageSequence = Sequence([ref])
        person = Dataset()
        person.PersonName = "Watson^John"
        person.InstitutionName = "Baker Street Hospital"
        ds.OperatorIdentificationSequence = Sequence([person])
        block = ds.private_block(0x0029, "CUSTOS TEST", create=True)
        block.add_new(0x01, "LO", "Quimby private")
        name = os.path.join(a.out, f"{n:03}.dcm")
        try:
            ds.save_as(name)
        except Exception:  # noqa: BLE001 — a test file pydicom cannot write back
            os.remove(name)
            seen.discard(sop)
            n -= 1
            continue
        files.append(name)
        if n == 1:
            # The same instance flagged with burned-in annotation, alone in
            # a study of its own.
            b = pydicom.dcmread(name)
            b.StudyInstanceUID, b.SeriesInstanceUID = burned_study, generate_uid()
            b.SOPInstanceUID = generate_uid()
            b.file_meta.MediaStorageSOPInstanceUID = b.SOPInstanceUID
            b.BurnedInAnnotation = "YES"
            b.InstanceNumber = 1
            burned = os.path.join(a.out, "burned.dcm")
            b.save_as(burned)
    out({"study": study, "burned_study": burned_study, "files": files,
         "burned": os.path.join(a.out, "burned.dcm")})


def cmd_zip(a):
    import requests
    s = requests.Session()
    s.trust_env = False  # only our CA, no proxies
    s.verify = a.ca
    s.auth = (a.user, a.password)
    r = s.get(f"{a.url}/api/studies/{a.study}/deidentified.zip", params=json.loads(a.params))
    if r.status_code != 200:
        out({"status": r.status_code, "body": r.text[:500]})
        return
    z = zipfile.ZipFile(BytesIO(r.content))
    bad = z.testzip()
    z.extractall(a.out)
    out({"status": 200, "names": z.namelist(), "crc_failure": bad,
         "disposition": r.headers.get("Content-Disposition")})


# --- Table E.1-1, read independently -------------------------------------

def load_table():
    exact, overlays, curves = {}, {}, None
    for line in open(TABLE, encoding="utf-8"):
        if line.startswith("#"):
            continue
        c = line.rstrip("\n").split("\t")
        c += [""] * (13 - len(c))
        row = {"basic": c[2], "patient_chars": c[7], "modified_dates": c[9], "clean_desc": c[10],
               "name": c[1]}
        g, e = c[0].strip("()").split(",")
        if g == "50xx":
            curves = row
        elif g == "60xx":
            overlays[int(e, 16)] = row
        elif g != "gggg":
            exact[(int(g, 16), int(e, 16))] = row
    return exact, overlays, curves


EXACT, OVERLAYS, CURVES = load_table()


def expected(tag, options):
    """The action code the standard gives this tag under the options, or None."""
    g, e = tag.group, tag.element
    if 0x5000 <= g <= 0x50FF and g % 2 == 0:
        row = CURVES
    elif 0x6000 <= g <= 0x60FF and g % 2 == 0:
        row = OVERLAYS.get(e)
    else:
        row = EXACT.get((g, e))
    if row is None:
        return None
    for on, col in (("retain-dates", "modified_dates"),
                    ("retain-patient-characteristics", "patient_chars"),
                    ("clean-descriptors", "clean_desc")):
        if on in options and row[col]:
            return row[col]
    return row["basic"]


def values(elem):
    v = elem.value
    if elem.VR == "SQ":
        return ["<item>"] * len(v)
    if v is None or v == "":
        return []
    if isinstance(v, (list, pydicom.multival.MultiValue)):
        return [str(x) for x in v]
    return [str(v)]


class Checker:
    def __init__(self, options, identifiers):
        self.options = options
        self.identifiers = identifiers
        self.uids = {}
        self.shifts = set()
        self.errors = []
        self.by_code = {}

    def fail(self, where, msg):
        if len(self.errors) < 50:
            self.errors.append(f"{where}: {msg}")

    def uid(self, where, old, new):
        if not re.fullmatch(r"2\.25\.[1-9][0-9]*|2\.25\.0", new) or new == old:
            self.fail(where, f"UID {old} -> {new} is not a new 2.25 UID")
        if self.uids.setdefault(old, new) != new:
            self.fail(where, f"UID {old} mapped to {self.uids[old]} and {new}")

    def compare(self, orig, new, where):
        for elem in orig:
            tag = elem.tag
            here = f"{where}{tag}"
            got = new.get(tag)
            if tag.is_private:
                self.count("private")
                if got is not None:
                    self.fail(here, "private attribute kept")
                continue
            code = expected(tag, self.options)
            if code is None:
                self.count("unlisted")
                if tag in (0x00100010, 0x00100020):
                    continue
                if got is None:
                    self.fail(here, "an attribute the table does not list was removed")
                elif elem.VR == "SQ":
                    self.items(elem, got, here)
                elif values(got) != values(elem) and tag != 0x00080005:
                    self.fail(here, f"changed: {values(elem)} -> {values(got)}")
                continue
            self.count(code)
            empty = got is None or not values(got)
            if code == "X":
                if got is not None:
                    self.fail(here, f"X but kept: {values(got)[:2]}")
            elif code in ("Z", "X/Z"):
                if tag in (0x00100010, 0x00100020):  # pseudonyms: Z allows dummies
                    if got is None or values(got) == values(elem):
                        self.fail(here, "the patient's name or ID kept")
                elif not empty:
                    self.fail(here, f"{code} but has a value: {values(got)[:2]}")
            elif code in ("D", "X/D", "Z/D", "X/Z/D"):
                if got is None:
                    self.fail(here, f"{code} but removed (should be a dummy)")
                elif elem.VR == "SQ":
                    self.items(elem, got, here)
                elif elem.VR == "UI":
                    for o, n in zip(values(elem), values(got)):
                        self.uid(here, o, n)
                elif values(elem) and values(got) == values(elem) and elem.VR not in ("US", "SS", "UL", "SL", "FL", "FD"):
                    self.fail(here, f"{code} but unchanged: {values(got)[:2]}")
            elif code in ("U", "X/Z/U*"):
                if got is None:
                    self.fail(here, f"{code} but removed")
                elif elem.VR == "SQ":
                    self.items(elem, got, here)
                else:
                    for o, n in zip(values(elem), values(got)):
                        self.uid(here, o, n)
            elif code == "K":
                if got is None:
                    self.fail(here, "K but removed")
                elif elem.VR == "SQ":
                    self.items(elem, got, here)
                elif values(got) != values(elem):
                    self.fail(here, f"K but changed: {values(elem)} -> {values(got)}")
            elif code == "C":
                if elem.VR == "SQ":
                    if got is not None:
                        self.items(elem, got, here)
                elif elem.VR in ("DA", "DT"):
                    for o, n in zip(values(elem), values(got) if got is not None else []):
                        try:
                            d = (datetime.date(int(n[:4]), int(n[4:6]), int(n[6:8]))
                                 - datetime.date(int(o[:4]), int(o[4:6]), int(o[6:8]))).days
                        except ValueError:
                            self.fail(here, f"not a date: {o} -> {n}")
                            continue
                        self.shifts.add(d)
                        if n[8:] != o[8:]:
                            self.fail(here, f"the time of a shifted date changed: {o} -> {n}")
                elif got is not None:
                    text = " ".join(values(got)).lower()
                    for i in self.identifiers:
                        if re.search(r"(?<![0-9a-z])" + re.escape(i.lower()) + r"(?![0-9a-z])", text):
                            self.fail(here, f"cleaned text still has {i!r}: {text!r}")

    def items(self, orig, new, where):
        if new.VR != "SQ" or len(new.value) != len(orig.value):
            self.fail(where, f"a kept sequence lost items ({len(orig.value)} -> {len(new.value)})")
            return
        for i, (o, n) in enumerate(zip(orig.value, new.value)):
            self.compare(o, n, f"{where}[{i}]")

    def count(self, code):
        self.by_code[code] = self.by_code.get(code, 0) + 1


def read_whole(path):
    """pydicom reads the file and every value in it."""
    ds = pydicom.dcmread(path)
    for elem in ds.iterall():
        _ = elem.value
    if "PixelData" in ds:
        _ = ds.PixelData
    return ds


def cmd_check(a):
    options = [o for o in a.options.split(",") if o]
    originals = {}
    for path in a.originals:
        ds = pydicom.dcmread(path)
        originals[int(ds.InstanceNumber)] = (path, ds)
    identifiers = [PATIENT[0], "Quimby", "Harriet", PATIENT[3], "MRN-99-1", "Ehrlich", "Elsewhere"]
    c = Checker(options, identifiers)
    outputs = sorted(glob.glob(os.path.join(a.deidentified, "**", "*.dcm"), recursive=True))
    matched, patients, studies = 0, set(), set()
    for path in outputs:
        try:
            ds = read_whole(path)
        except Exception as e:  # noqa: BLE001 — the point: pydicom must read it
            c.fail(path, f"pydicom cannot read it: {e}")
            continue
        src = originals.get(int(ds.get("InstanceNumber", -1)))
        if src is None:
            c.fail(path, "no original with this InstanceNumber")
            continue
        matched += 1
        opath, orig = src
        c.compare(orig, ds, f"#{ds.InstanceNumber}")
        patients.add(str(ds.PatientID))
        studies.add(str(ds.StudyInstanceUID))
        if ds.get("PatientIdentityRemoved") != "YES":
            c.fail(path, "PatientIdentityRemoved is not YES")
        codes = sorted(str(i.CodeValue) for i in ds.get("DeidentificationMethodCodeSequence", []))
        want = sorted(["113100"] + [{"retain-dates": "113107", "retain-patient-characteristics": "113108",
                                     "clean-descriptors": "113105"}[o] for o in options])
        if codes != want:
            c.fail(path, f"method codes {codes}, expected {want}")
        ltim = "MODIFIED" if "retain-dates" in options else "REMOVED"
        if ds.get("LongitudinalTemporalInformationModified") != ltim:
            c.fail(path, f"LongitudinalTemporalInformationModified is not {ltim}")
        meta = ds.file_meta
        if meta.MediaStorageSOPInstanceUID != ds.SOPInstanceUID:
            c.fail(path, "file meta names another instance")
        if meta.get("SourceApplicationEntityTitle"):
            c.fail(path, "file meta keeps the source AE title")
        if "PixelData" in orig and hashlib.sha256(orig.PixelData).digest() != hashlib.sha256(ds.PixelData).digest():
            c.fail(path, "pixel data changed")
        raw = open(path, "rb").read()
        for needle in [PATIENT[0], "Quimby", "QUIMBY", PATIENT[3], "MRN-99-1", "Watson", "Baker Street",
                       str(orig.StudyInstanceUID), str(orig.SOPInstanceUID)]:
            if needle.encode() in raw:
                c.fail(path, f"the output's bytes contain {needle!r}")
        if a.study_description and ds.get("StudyDescription") != a.study_description:
            c.fail(path, f"StudyDescription {ds.get('StudyDescription')!r}")
    if "retain-dates" in options and (len(c.shifts) != 1 or 0 in c.shifts):
        c.fail("dates", f"dates moved by {sorted(c.shifts)} days: one non-zero shift expected")
    out({"files": len(outputs), "matched": matched, "by_code": c.by_code, "errors": c.errors,
         "patients": sorted(patients), "studies": sorted(studies), "shifts": sorted(c.shifts),
         "uids": len(c.uids)})


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("corpus")
    s.add_argument("out")
    s = sub.add_parser("zip")
    for k in ("url", "ca", "user", "password", "study", "out"):
        s.add_argument("--" + k, required=True)
    s.add_argument("--params", default="{}")
    s = sub.add_parser("check")
    s.add_argument("--options", default="")
    s.add_argument("--study-description", default="")
    s.add_argument("--originals", nargs="+", required=True)
    s.add_argument("--deidentified", required=True)
    a = p.parse_args()
    {"corpus": cmd_corpus, "zip": cmd_zip, "check": cmd_check}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
