#!/usr/bin/env bash
# Issue 13 goal 1: C-STORE ingest (storescu, 1 and 4 associations, medians of
# 3) against Orthanc (SyncStorageArea on) in the same run, Custos with packing
# off (every instance a file) and on (the default), alternated twice, Orthanc
# measured first and last. Loopback only.
#   bench/ingest.sh small|big DATASETS_DIR WORK_DIR
# DATASETS_DIR holds `small` / `big` from ../shared/bench/gen_dataset.py (see
# bench/README.md). Prints the report of every run; raw samples in WORK_DIR.
# With BASE_BIN=path/to/an/older/custos, the file-per-instance runs are
# replaced by that binary's default (packed) runs: a before/after in one run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
kind=$1; D=$2; W=$3
mkdir -p "$W"
set_arg=(--"$kind" "$D/$kind" --sections ingest --modes 1,P --workdir "$W/scratch")
orthanc() {
  python3 "$S/run.py" --target orthanc --label "orthanc-$1" "${set_arg[@]}" --out "$W/ingest_${kind}_orthanc_$1.json" >/dev/null
}
custos() { # label pack_limit_kib [binary]
  CUSTOS_BIN=${3:-${CUSTOS_BIN:-}} CUSTOS_STORE_PACK_LIMIT_KIB=$2 python3 "$S/run.py" --target external --label "custos-$1" --host 127.0.0.1 --port 11120 \
    --aec CUSTOS --aet BENCHSCU --dicomweb http://127.0.0.1:9/dicom-web --reset-cmd "$here/custos-reset.sh" \
    "${set_arg[@]}" --out "$W/ingest_${kind}_custos_$1.json" >/dev/null
}
first=files; first_limit=0
if [ -n "${BASE_BIN:-}" ]; then first=base; first_limit=1024; fi
orthanc 1
custos "${first}1" "$first_limit" "${BASE_BIN:-}"
custos packs1 1024
custos "${first}2" "$first_limit" "${BASE_BIN:-}"
custos packs2 1024
orthanc 2
kill "$(cat "${BENCH_DATA:-/tmp/custos-bench-data}.pid")" 2>/dev/null || true # the last reset's server
python3 "$S/report.py" "$W"/ingest_"${kind}"_orthanc_1.json "$W"/ingest_"${kind}"_custos_"${first}"1.json \
  "$W"/ingest_"${kind}"_custos_packs1.json "$W"/ingest_"${kind}"_custos_"${first}"2.json \
  "$W"/ingest_"${kind}"_custos_packs2.json "$W"/ingest_"${kind}"_orthanc_2.json
