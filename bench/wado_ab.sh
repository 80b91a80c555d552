#!/usr/bin/env bash
# A/B of two Custos builds for WADO-RS of one ~52 MB study (the first of
# `big`) with `custos-probe`'s `wado_load`: ROUNDS rounds, each a fresh server
# of A then of B (bench/custos-reset.sh, the study stored by storescu), 15
# timed fetches over HTTPS/1.1 and over HTTP/2; per line the median wall ms
# and the client's CPU ms, the server's CPU ms and context switches per
# fetch (perf stat). Extra VAR=value arguments go to both servers'
# environment. Loopback only.
#   bench/wado_ab.sh A_BIN B_BIN [ROUNDS] [VAR=value ...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
A=$1; B=$2; rounds=${3:-3}; shift $(( $# < 3 ? $# : 3 )); extra=("$@")
cargo build --release -q -p custos-probe --example wado_load --manifest-path "$here/../Cargo.toml"
L=$here/../target/release/examples/wado_load
studies=(/work/benchdata/big/st*); study_dir=${BENCH_STUDY_DIR:-${studies[0]}}
study=$(study_uid "$study_dir")
url=https://127.0.0.1:${BENCH_HTTP_PORT:-11121}/dicom-web/studies/$study
cell() { # PID HTTP1
  perf stat -x, -e task-clock,context-switches -p "$1" -o /tmp/wado_ab.perf &
  local sp=$!
  local out; out=$(WADO_HTTP1=$2 "$L" "$url" 15 "bench:$BENCH_PASSWORD")
  kill -INT "$sp"; wait "$sp" 2>/dev/null || true
  python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print("wall %s client %s" % (j["median_ms"], j["client_cpu_ms"]), end=" ")' "$out"
  awk -F, '/task-clock/ {printf "server %.1f ", $1/16} /context-switches/ {printf "cs %d\n", $1/16}' /tmp/wado_ab.perf
}
for r in $(seq "$rounds"); do
  for bin in "$A" "$B"; do
    pid=$(env ${extra[@]+"${extra[@]}"} CUSTOS_BIN="$bin" "$here/custos-reset.sh" | tail -1)
    /usr/bin/storescu -aet BENCHSCU -aec CUSTOS +sd +r 127.0.0.1 "${BENCH_PORT:-11120}" "$study_dir" >/dev/null 2>&1
    echo "round $r $(basename "$bin") h1.1 $(cell "$pid" 1)"
    echo "round $r $(basename "$bin") h2   $(cell "$pid" 0)"
  done
done
kill "$pid" 2>/dev/null || true
