#!/usr/bin/env bash
# Peak server memory (VmHWM) and time of WADO-RS study metadata for one large
# study (default: the first of /work/benchdata/huge, 6,000 small instances:
# `gen_dataset.py huge --studies 1 --series 4 --instances 1500 --small --seed 7`),
# fetched by CLIENTS curls at once, REPS times; Orthanc over plain HTTP (its
# DICOMweb plugin), then each build in BINS over HTTPS, on fresh servers each
# round (NO_ORTHANC=1: the builds alone). WHAT=study: the study itself
# (WADO-RS multipart, ~58 MB) instead of its metadata. Loopback only.
#   bench/wado_memory.sh ROUNDS CLIENTS REPS BIN [BIN ...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
rounds=$1 clients=$2 reps=$3; shift 3
studies=(/work/benchdata/huge/st*); study_dir=${BENCH_STUDY_DIR:-${studies[0]}}
study=$(study_uid "$study_dir")
case ${WHAT:-metadata} in
  metadata) path=/metadata; accept='application/dicom+json' ;;
  study) path=; accept='multipart/related; type="application/dicom"' ;;
  *) echo "WHAT is metadata or study" >&2; exit 2 ;;
esac
url="https://127.0.0.1:${BENCH_HTTP_PORT:-11121}/dicom-web/studies/$study$path"
kib() { awk -v k="$2" '$1 == k ":" {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
fetch() { # ROUND LABEL PID URL [curl options]: the round's line
  local r=$1 label=$2 pid=$3 url=$4; shift 4
  local after_ingest bytes times n
  after_ingest=$(kib "$pid" VmRSS)
  echo 5 > "/proc/$pid/clear_refs" # the peak from here on: the metadata's, not the ingest's
  bytes=$(curl -sf -H "Accept: $accept" -o /dev/null -w "%{size_download}" "$@" "$url")
  times=$(for _ in $(seq "$reps"); do
    for _ in $(seq "$clients"); do curl -s -H "Accept: $accept" -o /dev/null -w "%{http_code} %{time_total}\n" "$@" "$url" & done
    wait
  done)
  if echo "$times" | grep -qv '^200 '; then echo "round $r $label: a request failed: $times" >&2; exit 1; fi
  times=$(echo "$times" | cut -d' ' -f2 | sort -n)
  n=$(echo "$times" | wc -l)
  echo "round $r $label: ${bytes} bytes; RSS after ingest ${after_ingest} MiB, peak while fetching $(kib "$pid" VmHWM) MiB; time_total median $(echo "$times" | sed -n "$(( (n + 1) / 2 ))p") s"
}
for r in $(seq "$rounds"); do
  if [ -z "${NO_ORTHANC:-}" ]; then
    w=$(mktemp -d)
    "$S/orthanc.sh" start -d "$w" >/dev/null
    /usr/bin/storescu -aec ORTHANC +sd +r 127.0.0.1 4242 "$study_dir" >/dev/null 2>&1
    fetch "$r" "orthanc (HTTP)" "$(cat "$w/orthanc.pid")" "http://127.0.0.1:8042/dicom-web/studies/$study$path"
    "$S/orthanc.sh" wipe -d "$w" >/dev/null
  fi
  for bin in "$@"; do
    pid=$(CUSTOS_BIN="$bin" "$here/custos-reset.sh" | tail -1)
    /usr/bin/storescu -aet BENCHSCU -aec CUSTOS +sd +r 127.0.0.1 "${BENCH_PORT:-11120}" "$study_dir" >/dev/null 2>&1
    fetch "$r" "$(basename "$bin") (HTTPS)" "$pid" "$url" -k -u "bench:$BENCH_PASSWORD"
    kill "$pid"
  done
done
