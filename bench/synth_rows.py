#!/usr/bin/env python3
"""Adds synthetic index rows to a Custos index, to measure queries at index
sizes no one wants to C-STORE on a test machine (issue 4: 1,000,000 instances).

  synth_rows.py --sqlite DATA/index.sqlite --studies 90000
  synth_rows.py --postgres postgres://user@127.0.0.1:port/db --studies 90000

Each study gets 2 series of 5 instances (the shape of gen_dataset.py's q100k),
so --studies 90000 adds 900,000 instances (with the counters the index
keeps since migration 8: 2 series, 10 instances, modality CT per study).
Patients are SYN%07d named SYNTHETIC^Pnnnnnnn, studies dated 1990-1999: they never match the harness's
queries (PatientName=A*, PatientID=PID..., StudyDate=2015), so its expected
counts still hold while the indexes hold a million rows. The rows point at no
blob (blob_key "synthetic"): index size only; `custos fsck` reports them missing.
Loopback only.
"""
import argparse
import random
import sqlite3
import subprocess
import urllib.parse

CT = "1.2.840.10008.5.1.4.1.1.2"
TS = "1.2.840.10008.1.2.1"


# --surnames: names spread over the alphabet as in a hospital (3 of 50
# start with A, 1 is SMITH), for prefix and leading-wildcard queries.
SURNAMES = ["ADAMS", "ALLEN", "ANDERSON", "BAKER", "BROWN", "CARTER", "CLARK", "COLLINS", "DAVIS", "EDWARDS",
            "EVANS", "FISCHER", "GARCIA", "GREEN", "HALL", "HARRIS", "HILL", "JACKSON", "JOHNSON", "JONES",
            "KING", "LEE", "LEWIS", "MARTIN", "MARTINEZ", "MILLER", "MITCHELL", "MOORE", "MULLER", "NELSON",
            "NGUYEN", "OLSEN", "PARKER", "PEREZ", "PHILLIPS", "ROBERTS", "ROBINSON", "RODRIGUEZ", "SCOTT", "SMITH",
            "TAYLOR", "THOMAS", "THOMPSON", "TURNER", "WALKER", "WHITE", "WILLIAMS", "WILSON", "WRIGHT", "YOUNG"]
NAMES = {"surnames": False}


def study_row(i, rnd):
    pid = f"SYN{i // 3:07d}"
    if NAMES["surnames"]:
        name = f"{SURNAMES[(i // 3) % len(SURNAMES)]}^P{i // 3:07d}"
    else:
        name = f"SYNTHETIC^P{i // 3:07d}"
    date = f"199{rnd.randrange(10)}{rnd.randrange(1, 13):02d}{rnd.randrange(1, 29):02d}"
    return (f"2.25.9{i:012d}", pid, name, name.upper(), "19500101", "O", date, "120000",
            f"SACC{i:08d}", f"S{i}", "SYNTHETIC STUDY", "", "")


def sqlite_fill(path, studies, rnd):
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    cur = db.cursor()
    for i in range(studies):
        cur.execute(
            "INSERT INTO studies (study_uid, patient_id, patient_name, patient_name_fold, patient_birth_date, patient_sex,"
            " study_date, study_time, accession_number, study_id, study_description, referring_physician_name,"
            " referring_physician_name_fold, num_series, num_instances, modalities)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,2,10,'CT')", study_row(i, rnd))
        st = cur.lastrowid
        for s in range(2):
            cur.execute("INSERT INTO series (study_pk, series_uid, modality, series_number, series_description,"
                        " body_part_examined, num_instances) VALUES (?,?,?,?,?,?,5)",
                        (st, f"2.25.9{i:012d}.{s}", "CT", s + 1, "SYN", "CHEST"))
            se = cur.lastrowid
            cur.executemany(
                "INSERT INTO instances (series_pk, sop_instance_uid, sop_class_uid, instance_number, number_of_frames,"
                " transfer_syntax_uid, blob_key, size, sha256) VALUES (?,?,?,?,?,?,?,?,?)",
                [(se, f"2.25.9{i:012d}.{s}.{k}", CT, k + 1, None, TS, "synthetic", 0, "0" * 64) for k in range(5)])
        if i % 10000 == 9999:
            db.commit()
    db.commit()


PG_SQL = """
INSERT INTO studies (study_uid, patient_id, patient_name, patient_name_fold, patient_birth_date, patient_sex,
  study_date, study_time, accession_number, study_id, study_description, referring_physician_name,
  referring_physician_name_fold, num_series, num_instances, modalities)
SELECT '2.25.9' || lpad(i::text, 12, '0'), 'SYN' || lpad((i / 3)::text, 7, '0'),
  {name} || '^P' || lpad((i / 3)::text, 7, '0'), {name} || '^P' || lpad((i / 3)::text, 7, '0'), '19500101', 'O',
  '199' || (i % 10) || lpad((1 + i % 12)::text, 2, '0') || lpad((1 + i % 28)::text, 2, '0'), '120000',
  'SACC' || lpad(i::text, 8, '0'), 'S' || i, 'SYNTHETIC STUDY', '', '', 2, 10, 'CT'
FROM generate_series(0, {n} - 1) AS i;
INSERT INTO series (study_pk, series_uid, modality, series_number, series_description, body_part_examined,
  num_instances)
SELECT st.pk, st.study_uid || '.' || s, 'CT', s + 1, 'SYN', 'CHEST', 5
FROM studies st CROSS JOIN generate_series(0, 1) AS s WHERE st.study_uid LIKE '2.25.9%';
INSERT INTO instances (series_pk, sop_instance_uid, sop_class_uid, instance_number, number_of_frames,
  transfer_syntax_uid, blob_key, size, sha256)
SELECT se.pk, se.series_uid || '.' || k, '{ct}', k + 1, NULL, '{ts}', 'synthetic', 0, repeat('0', 64)
FROM series se CROSS JOIN generate_series(0, 4) AS k WHERE se.series_uid LIKE '2.25.9%';
ANALYZE;
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sqlite")
    ap.add_argument("--postgres")
    ap.add_argument("--studies", type=int, required=True)
    ap.add_argument("--surnames", action="store_true", help="names from 50 common surnames")
    a = ap.parse_args()
    NAMES["surnames"] = a.surnames
    rnd = random.Random(7)
    if a.sqlite:
        sqlite_fill(a.sqlite, a.studies, rnd)
    if a.postgres:
        host = urllib.parse.urlparse(a.postgres).hostname
        assert host in ("localhost",) or host.startswith("127."), "loopback only"
        name = "'SYNTHETIC'"
        if a.surnames:
            listed = ",".join(f"'{n}'" for n in SURNAMES)
            name = f"(ARRAY[{listed}])[1 + (i / 3) % {len(SURNAMES)}]"
        sql = PG_SQL.format(n=a.studies, ct=CT, ts=TS, name=name)
        subprocess.run(["psql", a.postgres, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True)


if __name__ == "__main__":
    main()
