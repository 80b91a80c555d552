#!/usr/bin/env bash
# Issue 13 goal 2: STOW-RS ingest, one instance per request over 4 client
# connections (custos-probe's `stow_load` example, run by bench/stow_bench.py),
# the 2,000 ~0.5 MB instances of `big`,
# medians of 3 runs each from an empty archive: Orthanc's DICOMweb plugin over
# plain HTTP (HTTP/1.1), then Custos over HTTPS (HTTP/2, as ALPN picks it;
# then HTTP/1.1, as `requests`-based uploaders send) and over plain HTTP
# (HTTP/1.1). Loopback only.
#   bench/stow.sh DATASETS_DIR WORK_DIR [CLIENTS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
D=$1; W=$2; clients=${3:-4}
mkdir -p "$W"
cargo build --release -q -p custos-probe --example stow_load --manifest-path "$here/../Cargo.toml"
rust=(--rust-client "$here/../target/release/examples/stow_load")
"$S/orthanc.sh" start -d "$W/orthanc-stow" >/dev/null
python3 "$here/stow_bench.py" --url http://127.0.0.1:8042/dicom-web --dir "$D/big" --clients "$clients" --runs 3 "${rust[@]}" \
  --reset-cmd "$S/orthanc.sh wipe -d $W/orthanc-stow; $S/orthanc.sh start -d $W/orthanc-stow" | tee "$W/stow_orthanc.jsonl"
"$S/orthanc.sh" wipe -d "$W/orthanc-stow" >/dev/null || true
python3 "$here/stow_bench.py" --url https://127.0.0.1:11121/dicom-web --dir "$D/big" --clients "$clients" --runs 3 "${rust[@]}" \
  --user bench --password "$BENCH_PASSWORD" --insecure --reset-cmd "$here/custos-reset.sh" | tee "$W/stow_custos_https.jsonl"
STOW_HTTP1=1 python3 "$here/stow_bench.py" --url https://127.0.0.1:11121/dicom-web --dir "$D/big" --clients "$clients" --runs 3 "${rust[@]}" \
  --user bench --password "$BENCH_PASSWORD" --insecure --reset-cmd "$here/custos-reset.sh" | tee "$W/stow_custos_https_h1.jsonl"
BENCH_PLAINTEXT=true python3 "$here/stow_bench.py" --url http://127.0.0.1:11121/dicom-web --dir "$D/big" --clients "$clients" --runs 3 "${rust[@]}" \
  --user bench --password "$BENCH_PASSWORD" --reset-cmd "BENCH_PLAINTEXT=true $here/custos-reset.sh" | tee "$W/stow_custos_http.jsonl"
kill "$(cat "${BENCH_DATA:-/tmp/custos-bench-data}.pid")" 2>/dev/null || true # the last reset's server
for f in orthanc custos_https custos_https_h1 custos_http; do
  printf '%-12s %s\n' "$f" "$(tail -1 "$W/stow_$f.jsonl")"
done
