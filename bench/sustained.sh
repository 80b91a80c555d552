#!/usr/bin/env bash
# Issue 14, trials 5 and 6 on a fresh release server (bench/custos-reset.sh):
# bench/sustained.py quiet, then again with a hostile address (127.0.0.2).
#   bench/sustained.sh [SECONDS]     (default 600 each)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
secs=${1:-600}
data=${BENCH_DATA:-/tmp/custos-bench-data}
for mode in quiet hostile; do
  pid=$("$here/custos-reset.sh" | tail -1)
  "${CUSTOS_BIN:-$here/../target/release/custos}" peer add BENCHQ --host 127.0.0.3 --allow echo,find --data "$data" >/dev/null
  extra=(); [ "$mode" = hostile ] && extra=(--hostile)
  echo "== $mode, $secs s"
  python3 "$here/sustained.py" --port 11120 --http https://localhost:11121 --ca "$data/tls/ca.pem" \
    --user bench --password "$BENCH_PASSWORD" --pid "$pid" --data "$data" --seconds "$secs" "${extra[@]}"
done
kill "$pid" 2>/dev/null || true
