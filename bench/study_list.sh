#!/usr/bin/env bash
# The study list at 100,000 studies (1,000,000 instances): a fresh release
# server (custos-reset.sh), synthetic index rows (synth_rows.py), then the list
# page's QIDO-RS requests timed (study_list.py). Loopback only.
#   bench/study_list.sh [STUDIES]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export BENCH_PASSWORD=${BENCH_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}
data=${BENCH_DATA:-/tmp/custos-bench-data}
pid=$("$here/custos-reset.sh" | tail -1)
trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT
python3 "$here/synth_rows.py" --sqlite "$data/index.sqlite" --studies "${1:-100000}"
python3 "$here/study_list.py" --url "https://127.0.0.1:${BENCH_HTTP_PORT:-11121}" --user "bench:$BENCH_PASSWORD"
