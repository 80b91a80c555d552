#!/usr/bin/env bash
# DICOMweb comparison with Orthanc (+ its DICOMweb plugin) on this machine,
# same run: QIDO-RS / C-FIND latency with ~100,000 instances, WADO-RS / C-GET
# study throughput, and STOW-RS ingest with 4 clients. Loopback only.
#   bench/dicomweb.sh DATASETS_DIR WORK_DIR
# DATASETS_DIR holds `big` and `q100k` from ../shared/bench/gen_dataset.py (see
# bench/README.md). Results: WORK_DIR/*.json and WORK_DIR/report.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
S=${BENCH_HARNESS:-$here/../../shared/bench}
D=$1; W=$2
mkdir -p "$W"
export BENCH_PASSWORD=${BENCH_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}
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

# STOW-RS, 4 clients, the 2,000 ~0.5 MB instances of `big`.
"$S/orthanc.sh" start -d "$W/orthanc-stow" >/dev/null
python3 "$here/stow_bench.py" --url http://127.0.0.1:8042/dicom-web --dir "$D/big" --clients 4 --runs 3 \
  --reset-cmd "$S/orthanc.sh wipe -d $W/orthanc-stow; $S/orthanc.sh start -d $W/orthanc-stow" | tee "$W/stow_orthanc.jsonl"
"$S/orthanc.sh" wipe -d "$W/orthanc-stow" >/dev/null || true
python3 "$here/stow_bench.py" --url https://127.0.0.1:11121/dicom-web --dir "$D/big" --clients 4 --runs 3 \
  --user bench --password "$BENCH_PASSWORD" --insecure --reset-cmd "$here/custos-reset.sh" | tee "$W/stow_custos_https.jsonl"
BENCH_PLAINTEXT=true python3 "$here/stow_bench.py" --url http://127.0.0.1:11121/dicom-web --dir "$D/big" --clients 4 --runs 3 \
  --user bench --password "$BENCH_PASSWORD" --reset-cmd "BENCH_PLAINTEXT=true $here/custos-reset.sh" | tee "$W/stow_custos_http.jsonl"

python3 "$S/report.py" "$W/orthanc_q100k.json" "$W/custos_https_q100k.json" "$W/custos_http_q100k.json" > "$W/report.md"
cat "$W/report.md"
