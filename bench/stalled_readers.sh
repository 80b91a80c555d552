#!/usr/bin/env bash
# What clients that stop reading leave a server holding: one HTTP/2
# connection asks for the ~52 MB study (the first of `big`) STREAMS times at
# once with a 1 KiB window per stream and reads nothing
# (`custos-probe`'s `wado_stall`); the server's resident memory (VmRSS)
# before, while they are held, and its peak (VmHWM). Each build in BINS in
# turn, a fresh server each. Loopback only.
#   bench/stalled_readers.sh STREAMS BIN [BIN ...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
streams=$1; shift
cargo build --release -q -p custos-probe --example wado_stall --manifest-path "$here/../Cargo.toml"
stall=$here/../target/release/examples/wado_stall
studies=(/work/benchdata/big/st*); study_dir=${BENCH_STUDY_DIR:-${studies[0]}}
study=$(study_uid "$study_dir")
url=https://127.0.0.1:${BENCH_HTTP_PORT:-11121}/dicom-web/studies/$study
mib() { awk -v k="$2:" '$1 == k {printf "%.0f", $2/1024}' "/proc/$1/status"; }
for bin in "$@"; do
  pid=$(CUSTOS_BIN="$bin" "$here/custos-reset.sh" | tail -1)
  /usr/bin/storescu -aet BENCHSCU -aec CUSTOS +sd +r 127.0.0.1 "${BENCH_PORT:-11120}" "$study_dir" >/dev/null 2>&1
  before=$(mib "$pid" VmRSS)
  "$stall" "$url" "$streams" "bench:$BENCH_PASSWORD" 4 >/dev/null &
  client=$!
  sleep 3
  during=$(mib "$pid" VmRSS)
  wait "$client"
  echo "$(basename "$bin"): $streams stalled streams: server RSS $before MiB before, $during MiB while held, peak $(mib "$pid" VmHWM) MiB"
done
kill "$pid" 2>/dev/null || true
