#!/usr/bin/env bash
# Issue 13 goal 3 with a client that is not bound by its own TLS receive:
# one ~52 MB study (the first of `big`) fetched by `custos-probe`'s
# `wado_load` example (Rust, rustls, reads into large buffers and discards
# them) from Orthanc over plain HTTP and from Custos over HTTPS (HTTP/1.1 and
# HTTP/2) and plain HTTP, ROUNDS alternating rounds of 15 timed fetches each
# over one persistent connection; per row the median wall time, the client's
# CPU and the server's CPU (perf task-clock) per fetch. WADO_SERIES=1 fetches
# the study's series in parallel instead (one connection each, as viewers do).
# Loopback only.
#   bench/wado_client.sh DATASETS_DIR WORK_DIR [ROUNDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
D=$1; W=$2; rounds=${3:-3}
mkdir -p "$W"
cargo build --release -q -p custos-probe --example wado_load --manifest-path "$here/../Cargo.toml"
L=$here/../target/release/examples/wado_load
studies=("$D"/big/st*); study_dir=${studies[0]}
study=$(study_uid "$study_dir")

"$S/orthanc.sh" wipe -d "$W/orthanc" >/dev/null 2>&1 || true
"$S/orthanc.sh" start -d "$W/orthanc" >/dev/null
orthanc=$(pgrep -n -x Orthanc)
/usr/bin/storescu -aet BENCHSCU -aec ORTHANC +sd +r 127.0.0.1 4242 "$study_dir" >/dev/null 2>&1
https=$("$here/custos-reset.sh" | tail -1)
/usr/bin/storescu -aet BENCHSCU -aec CUSTOS +sd +r 127.0.0.1 "${BENCH_PORT:-11120}" "$study_dir" >/dev/null 2>&1
# A second Custos with a plain-HTTP listener, on other ports and data.
plain=$(BENCH_DATA=/tmp/custos-bench-plain BENCH_PORT=11130 BENCH_HTTP_PORT=11131 BENCH_TLS_PORT=11132 BENCH_PLAINTEXT=true "$here/custos-reset.sh" | tail -1)
/usr/bin/storescu -aet BENCHSCU -aec CUSTOS +sd +r 127.0.0.1 11130 "$study_dir" >/dev/null 2>&1
trap '"$S/orthanc.sh" stop -d "$W/orthanc" >/dev/null 2>&1 || true; kill "$https" "$plain" 2>/dev/null || true' EXIT

# cell PID HTTP1 URL [USER:PASSWORD]: "wall ms (MB/s) | client CPU | server CPU"
# for 15 timed fetches, the server's CPU per fetch from perf (16 fetches with
# the warm-up one).
cell() {
  local pid=$1 http1=$2; shift 2
  perf stat -x, -e task-clock -p "$pid" -o "$W/server-cpu" &
  local sp=$!
  local out; out=$(WADO_HTTP1=$http1 "$L" "$1" 15 "${@:2}")
  kill -INT "$sp"; wait "$sp" 2>/dev/null || true
  local server; server=$(awk -F, '/task-clock/ {printf "%.1f", $1/16}' "$W/server-cpu")
  python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print("%s (%s) | %s | %s" % (j["median_ms"], j["mb_s"], j["client_cpu_ms"], sys.argv[2]))' "$out" "$server"
}
auth=bench:$BENCH_PASSWORD
path=dicom-web/studies/$study
echo "study $study; wado_load${WADO_SERIES:+ by series}: per cell the median of 15 fetches' wall ms (MB/s) | client CPU ms | server CPU ms per fetch"
echo "| round | Orthanc HTTP | | | Custos HTTPS h1.1 | | | Custos HTTPS h2 | | | Custos HTTP | | |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for r in $(seq "$rounds"); do
  echo "| $r | $(cell "$orthanc" 0 "http://127.0.0.1:8042/$path")" \
    "| $(cell "$https" 1 "https://127.0.0.1:${BENCH_HTTP_PORT:-11121}/$path" "$auth")" \
    "| $(cell "$https" 0 "https://127.0.0.1:${BENCH_HTTP_PORT:-11121}/$path" "$auth")" \
    "| $(cell "$plain" 1 "http://127.0.0.1:11131/$path" "$auth") |"
done
