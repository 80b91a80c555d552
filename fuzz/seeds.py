#!/usr/bin/env python3
"""Writes the seed inputs of each fuzz target into fuzz/corpus/<target>/
(run once; what libFuzzer adds later is kept beside them)."""
import os
import sys

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filewriter import write_dataset

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "py"))
import made  # noqa: E402


def encoded(ds, implicit):
    from pydicom.filebase import DicomBytesIO
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, implicit
    write_dataset(buf, ds)
    return buf.getvalue()


def put(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def command(field, msg_id, uid, has_data):
    c = Dataset()
    c.AffectedSOPClassUID = uid
    c.CommandField = field
    c.MessageID = msg_id
    c.CommandDataSetType = 0x0001 if has_data else 0x0101
    body = encoded(c, True)
    g = Dataset()
    g.CommandGroupLength = len(body)
    return encoded(g, True) + body


put("dimse_command", "echo-rq", command(0x0030, 1, "1.2.840.10008.1.1", False))
put("dimse_command", "find-rq", command(0x0020, 7, "1.2.840.10008.5.1.4.1.2.2.1", True))

q = Dataset()
q.QueryRetrieveLevel = "STUDY"
q.PatientName = "SMITH*"
q.PatientID = ""
q.StudyDate = "19990101-19991231"
q.ModalitiesInStudy = "CT\\MR"
q.StudyInstanceUID = ""
put("dimse_identifier", "study-implicit", b"\x00" + encoded(q, True))
put("dimse_identifier", "study-explicit", b"\x01" + encoded(q, False))
s = Dataset()
s.QueryRetrieveLevel = "SERIES"
s.StudyInstanceUID = "1.2.3"
s.SeriesInstanceUID = "1.2.3.4\\1.2.3.5"
put("dimse_identifier", "series-uid-list", b"\x01" + encoded(s, False))

ds = made.instance()
ds.PatientName = "Müller^Hans"
ds.SpecificCharacterSet = "ISO_IR 192"
ds.PatientID = "P1"
ds.Modality = "CT"
ds.StudyDate = "20260101"
made.ct_pixels(ds, np.arange(16, dtype=np.uint16).reshape(4, 4))
put("stored_file", "ct-4x4", made.part10(ds))

put("http_authorization", "basic", b"Basic dXNlcjpwYXNzd29yZA==")
put("http_authorization", "bearer", b"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
put("qido_query", "study", b"PatientName=A*&limit=10&offset=5&includefield=00201208&orderby=-StudyDate")
put("qido_query", "dates", b"StudyDate=19990101-19991231&ModalitiesInStudy=CT&fuzzymatching=false")
put("qido_query", "accept", b'multipart/related; type="application/dicom"; transfer-syntax=*, application/dicom+json;q=0.9')
