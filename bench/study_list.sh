#!/usr/bin/env bash
# The study list at 100,000 studies (1,000,000 instances): a fresh release
# server (custos-reset.sh), synthetic index rows (synth_rows.py), then the list
# page's QIDO-RS requests timed (study_list.py). Loopback only.
#   bench/study_list.sh [STUDIES]                                   (SQLite)
#   scripts/with-test-services bench/study_list.sh [STUDIES] pg     (PostgreSQL)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
studies=${1:-100000}; backend=${2:-sqlite}
export BENCH_PASSWORD=${BENCH_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}
data=${BENCH_DATA:-/tmp/custos-bench-data}
if [ "$backend" = pg ]; then
  psql "$CUSTOS_TEST_POSTGRES_URL" -q -c "DROP DATABASE IF EXISTS custos_bench" -c "CREATE DATABASE custos_bench"
  export BENCH_INDEX_URL="${CUSTOS_TEST_POSTGRES_URL%/*}/custos_bench"
fi
pid=$("$here/custos-reset.sh" | tail -1)
trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT
if [ "$backend" = pg ]; then
  python3 "$here/synth_rows.py" --postgres "$BENCH_INDEX_URL" --studies "$studies"
else
  python3 "$here/synth_rows.py" --sqlite "$data/index.sqlite" --studies "$studies"
fi
python3 "$here/study_list.py" --url "https://127.0.0.1:${BENCH_HTTP_PORT:-11121}" --user "bench:$BENCH_PASSWORD"
