#!/usr/bin/env bash
# Issue 13 goal 3, what bounds WADO-RS over HTTPS on this machine: one ~52 MB
# study (the first of `big`) fetched with curl (median of 7 `time_total`s per
# round, as the harness's curl asks for it) from
#   - Orthanc over plain HTTP (the goal's reference),
#   - Orthanc behind nginx terminating TLS (Orthanc 1.10.1's own HTTPS, with
#     Debian bookworm's OpenSSL 3, crashes on the first connection here),
#   - nginx serving the same bytes as a static file over TLS (no archive at
#     all: what curl's TLS costs),
#   - Custos over HTTPS,
# each over HTTP/2 and HTTP/1.1, and curl's own CPU time for the TLS fetches.
# Installs nginx-light if missing. Loopback only.
#   bench/https_floor.sh DATASETS_DIR WORK_DIR [ROUNDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
D=$1; W=$2; rounds=${3:-3}
mkdir -p "$W"
command -v nginx >/dev/null || { apt-get install -y -qq nginx-light >/dev/null; pkill -x nginx || true; }
studies=("$D"/big/st*); study_dir=${studies[0]}
study=$(study_uid "$study_dir")

"$S/orthanc.sh" wipe -d "$W/orthanc" 2>/dev/null || true
"$S/orthanc.sh" start -d "$W/orthanc" >/dev/null
/usr/bin/storescu -aet BENCHSCU -aec ORTHANC +sd +r 127.0.0.1 4242 "$study_dir" >/dev/null 2>&1
pid=$("$here/custos-reset.sh" | tail -1)
/usr/bin/storescu -aet BENCHSCU -aec CUSTOS +sd +r 127.0.0.1 "${BENCH_PORT:-11120}" "$study_dir" >/dev/null 2>&1
tls=${BENCH_DATA:-/tmp/custos-bench-data}/tls
custos=https://127.0.0.1:${BENCH_HTTP_PORT:-11121}/dicom-web/studies/$study
accept='Accept: multipart/related; type="application/dicom"'

n=$W/nginx
rm -rf "$n"; mkdir -p "$n/www"
curl -sSfk -u "bench:$BENCH_PASSWORD" -H "$accept" -o "$n/www/study.bin" "$custos"
cat > "$n/nginx.conf" <<CONF
worker_processes 2;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $n/body;
  proxy_temp_path $n/proxy;
  server {
    listen 127.0.0.1:8443 ssl http2;
    ssl_certificate $tls/server.pem;
    ssl_certificate_key $tls/server.key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location /static/ { alias $n/www/; }
    location / {
      proxy_pass http://127.0.0.1:8042;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # Buffered in memory (the default spills to a temporary file: ~130 ms).
      proxy_buffering on; proxy_buffers 64 64k; proxy_buffer_size 64k;
      proxy_busy_buffers_size 512k; proxy_max_temp_file_size 0;
    }
  }
}
CONF
nginx -c "$n/nginx.conf"
trap 'nginx -c "$n/nginx.conf" -s stop 2>/dev/null || true; "$S/orthanc.sh" stop -d "$W/orthanc" >/dev/null 2>&1 || true; kill "$pid" 2>/dev/null || true' EXIT

median_ms() { sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]*1000}'; }
fetch() { curl -s -S -o /dev/null -H "$accept" "$@"; }
timed() { fetch "$@"; for _ in 1 2 3 4 5 6 7; do fetch -w "%{time_total}\n" "$@"; done | median_ms; }
cpu_ms() { perf stat -x, -e task-clock -r 7 curl -s -o /dev/null -H "$accept" "$@" 2>&1 >/dev/null | awk -F, '/task-clock/ {printf "%.1f", $1}'; }

echo "study $study, $(stat -c %s "$n/www/study.bin") bytes; medians of 7 curl time_total (ms) per round"
echo "| round | Orthanc HTTP | nginx+Orthanc h2 | nginx+Orthanc h1.1 | nginx static h2 | nginx static h1.1 | Custos h2 | Custos h1.1 |"
echo "|---|---|---|---|---|---|---|---|"
for r in $(seq "$rounds"); do
  echo "| $r | $(timed "http://127.0.0.1:8042/dicom-web/studies/$study")" \
    "| $(timed -k --http2 "https://127.0.0.1:8443/dicom-web/studies/$study")" \
    "| $(timed -k --http1.1 "https://127.0.0.1:8443/dicom-web/studies/$study")" \
    "| $(timed -k --http2 https://127.0.0.1:8443/static/study.bin)" \
    "| $(timed -k --http1.1 https://127.0.0.1:8443/static/study.bin)" \
    "| $(timed -k --http2 -u "bench:$BENCH_PASSWORD" "$custos")" \
    "| $(timed -k --http1.1 -u "bench:$BENCH_PASSWORD" "$custos") |"
done
if command -v perf >/dev/null; then
  echo
  echo "curl's CPU (task-clock, mean of 7, ms): Orthanc HTTP $(cpu_ms "http://127.0.0.1:8042/dicom-web/studies/$study")," \
    "nginx static h1.1 $(cpu_ms -k --http1.1 https://127.0.0.1:8443/static/study.bin)," \
    "Custos h2 $(cpu_ms -k --http2 -u "bench:$BENCH_PASSWORD" "$custos")," \
    "Custos h1.1 $(cpu_ms -k --http1.1 -u "bench:$BENCH_PASSWORD" "$custos")"
fi
