#!/usr/bin/env bash
# For ../shared/bench/run.py --target external --reset-cmd: stops the Custos
# started by the previous call, wipes its data folder, starts an empty one on
# loopback with the harness's peers registered, and prints its PID last.
#   CUSTOS_BIN   (default: target/release/custos of this repository)
#   BENCH_DATA   (default: /tmp/custos-bench-data)
#   BENCH_PORT   (default: 11120), BENCH_TLS_PORT (default: 11122): DICOM and DICOM over TLS
#   BENCH_HTTP_PORT (default: 11121) and BENCH_PLAINTEXT (default: false):
#                the DICOMweb listener (HTTPS with the data folder's CA, or plain HTTP)
#   BENCH_INDEX_URL if set, the index is this PostgreSQL database (emptied
#                here: every table dropped) instead of SQLite
#   BENCH_PASSWORD  if set, a user `bench` (role admin) with this password is
#                made, for run.py --user bench --password "$BENCH_PASSWORD"
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${CUSTOS_BIN:-$here/../target/release/custos}
data=${BENCH_DATA:-/tmp/custos-bench-data}
port=${BENCH_PORT:-11120}
http_port=${BENCH_HTTP_PORT:-11121}
plaintext=${BENCH_PLAINTEXT:-false}
pidfile="$data.pid"

if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
fi
rm -rf "$data"
if [ -n "${BENCH_INDEX_URL:-}" ]; then
  psql "$BENCH_INDEX_URL" -q -c "DROP SCHEMA public CASCADE; CREATE SCHEMA public;" >/dev/null
  export CUSTOS_INDEX_URL="$BENCH_INDEX_URL"
fi
"$bin" init --data "$data" >/dev/null
"$bin" peer add BENCHSCU --host 127.0.0.1 --port 11113 --allow echo,store,find,get,move --data "$data" >/dev/null
"$bin" peer add BENCHDEST --host 127.0.0.1 --port 11114 --allow echo --data "$data" >/dev/null
if [ -n "${BENCH_PASSWORD:-}" ]; then
  printf '%s\n' "$BENCH_PASSWORD" | "$bin" user add bench --role admin --password-stdin --data "$data" >/dev/null
fi
# As a service runs it: without RUST_BACKTRACE, which a developer's shell may
# set and which makes every dicom-rs error that carries an optional backtrace
# (e.g. the end of each DIMSE command set) capture one.
env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE \
  CUSTOS_DICOM_LISTEN="127.0.0.1:$port" CUSTOS_DICOM_TLS_LISTEN="127.0.0.1:${BENCH_TLS_PORT:-11122}" CUSTOS_HTTP_LISTEN="127.0.0.1:$http_port" CUSTOS_HTTP_PLAINTEXT="$plaintext" \
  RUST_LOG=warn nohup "$bin" serve --data "$data" >"$data.log" 2>&1 &
pid=$!
echo "$pid" >"$pidfile"
for _ in $(seq 100); do
  grep -q "listening for HTTP" "$data.log" 2>/dev/null && break
  sleep 0.1
done
if ! kill -0 "$pid" 2>/dev/null || ! grep -q "listening for DICOM" "$data.log"; then
  echo "custos did not start (is port $port taken?):" >&2
  cat "$data.log" >&2
  exit 1
fi
echo "$pid"
