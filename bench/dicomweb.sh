#!/usr/bin/env bash
# DICOMweb comparison with Orthanc (+ its DICOMweb plugin) on this machine,
# same run: QIDO-RS / C-FIND latency with ~100,000 instances, WADO-RS / C-GET
# study throughput, and STOW-RS ingest with 4 clients. Loopback only.
#   bench/dicomweb.sh DATASETS_DIR WORK_DIR
# DATASETS_DIR holds `big` and `q100k` from ../shared/bench/gen_dataset.py (see
# bench/README.md). Results: WORK_DIR/*.json and WORK_DIR/report.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
D=$1; W=$2
mkdir -p "$W"
common=(--big "$D/big" --small "$D/q100k" --workdir "$W/scratch" --sections query,retrieve --nq 50)

python3 "$S/run.py" --target orthanc --label orthanc-100k "${common[@]}" --out "$W/orthanc_q100k.json"

pid=$("$here/custos-reset.sh" | tail -1)
python3 "$S/run.py" --target external --label custos-https-100k --host 127.0.0.1 --port 11120 --aec CUSTOS \
  --dicomweb https://127.0.0.1:11121/dicom-web --user bench --password "$BENCH_PASSWORD" --insecure \
  --reset-cmd "$here/custos-reset.sh" --server-pid "$pid" "${common[@]}" --out "$W/custos_https_q100k.json"

# Plain HTTP as Orthanc serves it: the same work without TLS.
export BENCH_PLAINTEXT=true
pid=$("$here/custos-reset.sh" | tail -1)
python3 "$S/run.py" --target external --label custos-http-100k --host 127.0.0.1 --port 11120 --aec CUSTOS \
  --dicomweb http://127.0.0.1:11121/dicom-web --user bench --password "$BENCH_PASSWORD" \
  --reset-cmd "$here/custos-reset.sh" --server-pid "$pid" "${common[@]}" --out "$W/custos_http_q100k.json"
unset BENCH_PLAINTEXT

# STOW-RS, 4 client processes, the 2,000 ~0.5 MB instances of `big`.
"$here/stow.sh" "$D" "$W"

python3 "$S/report.py" "$W/orthanc_q100k.json" "$W/custos_https_q100k.json" "$W/custos_http_q100k.json" > "$W/report.md"
cat "$W/report.md"
