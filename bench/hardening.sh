#!/usr/bin/env bash
# Issue 11's figures against a release build on loopback, default limits:
#   1. peak RSS (VmHWM) of the server before and after a connection from a
#      registered AE title that declares a 4 GiB A-ASSOCIATE-RQ and streams 600 MB;
#   2. C-ECHO latency (median and max of 20 DCMTK echoscu) alone, then while
#      127.0.0.2 holds 100 idle DICOM connections (more than the association limit);
#   3. a brute force of 1,000 concurrent Basic-auth requests with distinct wrong
#      passwords for `admin`: statuses, how long it took, how many reached argon2
#      (401) and the latency of another user's QIDO-RS meanwhile;
#   bench/hardening.sh            (CUSTOS_BIN: default target/release/custos)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py="$here/../tests/py/web.py"
export BENCH_DATA=${BENCH_DATA:-/tmp/custos-bench-hardening}
export BENCH_PASSWORD="figures for issue eleven 11"
pid=$("$here/custos-reset.sh" | tail -n 1)
data=$BENCH_DATA
bin=${CUSTOS_BIN:-$here/../target/release/custos}
token=$("$bin" token create --user bench --expires 1d --data "$data" 2>/dev/null | tail -n 1)
rss() { awk '/VmHWM/ {print $2}' "/proc/$pid/status"; }

before=$(rss)
python3 - <<'PY'
import socket, struct, time
s = socket.create_connection(("127.0.0.1", 11120))
head = bytes([1, 0]) + struct.pack(">I", 0xFFFFFFF0) + bytes([0, 1, 0, 0]) + b"CUSTOS".ljust(16) + b"BENCHSCU".ljust(16) + bytes(32)
sent = 0
try:
    s.sendall(head)
    chunk = bytes(1 << 20)
    while sent < 600 << 20:
        sent += s.send(chunk)
except OSError:
    pass
print("A-ASSOCIATE-RQ declaring 4 GiB: the server closed after %d MB" % (sent >> 20))
PY
echo "peak RSS: $before KiB before, $(rss) KiB after"

echoes() {  # prints median and max milliseconds of 20 C-ECHOs
  for _ in $(seq 20); do
    t0=$(date +%s%N)
    /usr/bin/echoscu -aet BENCHSCU -aec CUSTOS 127.0.0.1 11120 || echo "echo failed" >&2
    echo $(( ($(date +%s%N) - t0) / 1000000 ))
  done | sort -n | awk '{a[NR]=$1} END {print "median " a[int((NR+1)/2)] " ms, max " a[NR] " ms"}'
}
echo "C-ECHO alone: $(echoes)"
python3 "$py" hold --port 11120 --bind 127.0.0.2 --count 100 --seconds 60 > /tmp/hold.json &
hold=$!
sleep 3
echo "C-ECHO while 127.0.0.2 holds 100 idle connections ($(head -n 1 /tmp/hold.json)): $(echoes)"
kill $hold 2>/dev/null || true; wait $hold 2>/dev/null || true

python3 "$py" --url https://localhost:11121 --ca "$data/tls/ca.pem" --token "$token" \
  burst --path /dicom-web/studies --count 1000 --burst-user admin --burst-password "a wrong guess" |
python3 -c '
import json, sys, statistics
r = json.load(sys.stdin)
lat = sorted(o["seconds"] * 1000 for o in r["others"])
print("brute force: 1000 requests in %.1f s: %s; reached argon2 (401): %d; another user'"'"'s QIDO-RS meanwhile: %d requests, all %s, median %.0f ms, max %.0f ms" % (
    r["seconds"], r["burst"], r["burst"].get("401", 0), len(lat),
    sorted({o["status"] for o in r["others"]}), statistics.median(lat), lat[-1]))
'

"$here/custos-reset.sh" >/dev/null; kill "$(cat "$data.pid")" 2>/dev/null || true
