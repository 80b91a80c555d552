#!/usr/bin/env bash
# Issue 13 goal 3: retrieving one ~52 MB study (100 instances of `big`) with
# WADO-RS (curl, multipart), C-GET (getscu) and C-MOVE (movescu to itself and
# to a storescp), warm cache, medians of the harness's repetitions: Orthanc
# (plain HTTP) and Custos (DICOMweb over HTTPS, then plain HTTP) in the same
# run. Loopback only.
#   bench/retrieve.sh DATASETS_DIR WORK_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
D=$1; W=$2
mkdir -p "$W"
common=(--big "$D/big" --workdir "$W/scratch" --sections retrieve --reps-retrieve 5)
python3 "$S/run.py" --target orthanc --label orthanc "${common[@]}" --out "$W/retrieve_orthanc.json" >/dev/null
pid=$("$here/custos-reset.sh" | tail -1)
python3 "$S/run.py" --target external --label custos-https --host 127.0.0.1 --port 11120 --aec CUSTOS \
  --dicomweb https://127.0.0.1:11121/dicom-web --user bench --password "$BENCH_PASSWORD" --insecure \
  --server-pid "$pid" "${common[@]}" --out "$W/retrieve_custos_https.json" >/dev/null
pid=$(BENCH_PLAINTEXT=true "$here/custos-reset.sh" | tail -1)
python3 "$S/run.py" --target external --label custos-http --host 127.0.0.1 --port 11120 --aec CUSTOS \
  --dicomweb http://127.0.0.1:11121/dicom-web --user bench --password "$BENCH_PASSWORD" \
  --server-pid "$pid" "${common[@]}" --out "$W/retrieve_custos_http.json" >/dev/null
kill "$pid" 2>/dev/null || true
python3 "$S/report.py" "$W/retrieve_orthanc.json" "$W/retrieve_custos_https.json" "$W/retrieve_custos_http.json"
