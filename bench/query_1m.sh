#!/usr/bin/env bash
# Issue 13 goal 4: QIDO-RS and C-FIND at 1,000,000 instances (100,000
# synthetic studies with common surnames) on a fresh release server.
#   bench/query_1m.sh                                   (SQLite)
#   scripts/with-test-services bench/query_1m.sh pg     (PostgreSQL)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
backend=${1:-sqlite}
export BENCH_PASSWORD=${BENCH_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}
data=${BENCH_DATA:-/tmp/custos-bench-data}
if [ "$backend" = pg ]; then
  psql "$CUSTOS_TEST_POSTGRES_URL" -q -c "DROP DATABASE IF EXISTS custos_bench" -c "CREATE DATABASE custos_bench"
  export BENCH_INDEX_URL="${CUSTOS_TEST_POSTGRES_URL%/*}/custos_bench"
fi
# C-FIND answers at most 100 matches, as QIDO-RS's limit=100.
pid=$(CUSTOS_DICOM_MAX_FIND_RESULTS=100 "$here/custos-reset.sh" | tail -1)
trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT
if [ "$backend" = pg ]; then
  python3 "$here/synth_rows.py" --postgres "$BENCH_INDEX_URL" --studies 100000 --surnames
else
  python3 "$here/synth_rows.py" --sqlite "$data/index.sqlite" --studies 100000 --surnames
fi
cargo build --release -q -p custos-dimse --example cfind_latency --manifest-path "$here/../Cargo.toml"
python3 "$here/query_1m.py" --rust-scu "$here/../target/release/examples/cfind_latency" --url "https://127.0.0.1:${BENCH_HTTP_PORT:-11121}" --user "bench:$BENCH_PASSWORD" \
  --port "${BENCH_PORT:-11120}"
