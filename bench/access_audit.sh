#!/usr/bin/env bash
# What recording each access before serving it costs (the audit record is
# committed before patient data leaves): two release binaries alternated,
# each on a fresh server holding the `small` dataset's first 50 studies,
# QIDO-RS latency and QIDO-RS / WADO-RS throughput (access_audit.py).
#   BASE_BIN=path/to/older/custos bench/access_audit.sh DATASETS_DIR [ROUNDS]
# Loopback only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
D=$1; rounds=${2:-3}
new=${CUSTOS_BIN:-$here/../target/release/custos}
studies=("$D"/small/st*); studies=("${studies[@]:0:50}")
for r in $(seq "$rounds"); do
  for label in base new; do
    bin=$BASE_BIN; [ "$label" = new ] && bin=$new
    pid=$(CUSTOS_BIN=$bin "$here/custos-reset.sh" | tail -1)
    for st in "${studies[@]}"; do
      /usr/bin/storescu -aet BENCHSCU -aec CUSTOS +sd +r 127.0.0.1 "${BENCH_PORT:-11120}" "$st" >/dev/null 2>&1
    done
    echo "round $r $label $(python3 "$here/access_audit.py" --url "https://127.0.0.1:${BENCH_HTTP_PORT:-11121}" --user "bench:$BENCH_PASSWORD" | tail -1)"
    kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
done
