#!/usr/bin/env bash
# WADO-RS study metadata of the ~52 MB study (the first of `big`, 100
# instances): median of 21 curl `time_total`s per round, Orthanc over plain
# HTTP (its DICOMweb plugin) and each Custos build in BINS over HTTPS, fresh
# servers each round. curl's own start is in every figure alike.
# Loopback only.
#   bench/metadata.sh ROUNDS BIN [BIN ...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
rounds=$1; shift
studies=(/work/benchdata/big/st*); study_dir=${BENCH_STUDY_DIR:-${studies[0]}}
study=$(study_uid "$study_dir")
median() { # URL [curl options]
  local url=$1; shift
  curl -s -o /dev/null "$@" "$url"
  for _ in $(seq 21); do curl -s -o /dev/null -w "%{time_total}\n" "$@" "$url"; done | sort -n | sed -n 11p
}
for r in $(seq "$rounds"); do
  w=$(mktemp -d)
  "$S/orthanc.sh" start -d "$w" >/dev/null
  /usr/bin/storescu -aec ORTHANC +sd +r 127.0.0.1 4242 "$study_dir" >/dev/null 2>&1
  echo "round $r orthanc (HTTP) $(median "http://127.0.0.1:8042/dicom-web/studies/$study/metadata") s"
  "$S/orthanc.sh" wipe -d "$w" >/dev/null
  for bin in "$@"; do
    pid=$(CUSTOS_BIN="$bin" "$here/custos-reset.sh" | tail -1)
    /usr/bin/storescu -aet BENCHSCU -aec CUSTOS +sd +r 127.0.0.1 "${BENCH_PORT:-11120}" "$study_dir" >/dev/null 2>&1
    echo "round $r $(basename "$bin") (HTTPS) $(median "https://127.0.0.1:${BENCH_HTTP_PORT:-11121}/dicom-web/studies/$study/metadata" -k -u "bench:$BENCH_PASSWORD") s"
    kill "$pid"
  done
done
