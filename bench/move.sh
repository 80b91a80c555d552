#!/usr/bin/env bash
# Issue 13 goal 3's C-MOVE figure as the harness takes it (movescu -> a
# separate DCMTK storescp writing to /dev/shm, a fresh storescp per move) for
# the ~52 MB study (the first of `big`, 100 instances): median wall of REPS
# moves per round, Orthanc and each Custos build in BINS, fresh servers each
# round. movescu's own start is in every figure alike. MOVE_SELF=1: the
# harness's other C-MOVE figure, to movescu's own receiver (port 11113,
# writing to /dev/shm) instead of a storescp. Loopback only.
#   bench/move.sh ROUNDS REPS BIN [BIN ...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
rounds=$1; reps=$2; shift 2
studies=(/work/benchdata/big/st*); study_dir=${BENCH_STUDY_DIR:-${studies[0]}}
study=$(study_uid "$study_dir")
recv=/dev/shm/custos-bench-move
export TCP_NODELAY=1
median_move() { # PORT AEC
  for _ in $(seq "$reps"); do
    rm -rf "$recv"; mkdir -p "$recv"
    local s e
    if [ "${MOVE_SELF:-0}" = 1 ]; then
      s=$(date +%s%N)
      /usr/bin/movescu -S -aet BENCHSCU -aec "$2" -aem BENCHSCU --port 11113 127.0.0.1 "$1" \
        -k QueryRetrieveLevel=STUDY -k "StudyInstanceUID=$study" -od "$recv" >/dev/null 2>&1
      e=$(date +%s%N)
    else
      /usr/bin/storescp -aet BENCHDEST -od "$recv" 11114 >/dev/null 2>&1 &
      local scp=$!
      for _ in $(seq 100); do /usr/bin/echoscu -aec BENCHDEST 127.0.0.1 11114 >/dev/null 2>&1 && break; sleep 0.05; done
      s=$(date +%s%N)
      /usr/bin/movescu -S -aet BENCHSCU -aec "$2" -aem BENCHDEST 127.0.0.1 "$1" \
        -k QueryRetrieveLevel=STUDY -k "StudyInstanceUID=$study" >/dev/null 2>&1
      e=$(date +%s%N)
      sleep 0.1; kill "$scp"; wait "$scp" 2>/dev/null || true
    fi
    local got; got=$(ls "$recv" | wc -l)
    [ "$got" = 100 ] || echo "WARNING: storescp received $got of 100" >&2
    echo $(( (e - s) / 1000 ))
  done | sort -n | sed -n "$(( (reps + 1) / 2 ))p" | awk '{printf "%.1f", $1 / 1000}'
}
for r in $(seq "$rounds"); do
  w=$(mktemp -d)
  "$S/orthanc.sh" start -d "$w" >/dev/null
  /usr/bin/storescu -aec ORTHANC +sd +r 127.0.0.1 4242 "$study_dir" >/dev/null 2>&1
  echo "round $r orthanc $(median_move 4242 ORTHANC) ms"
  "$S/orthanc.sh" wipe -d "$w" >/dev/null
  for bin in "$@"; do
    pid=$(CUSTOS_BIN="$bin" "$here/custos-reset.sh" | tail -1)
    /usr/bin/storescu -aet BENCHSCU -aec CUSTOS +sd +r 127.0.0.1 "${BENCH_PORT:-11120}" "$study_dir" >/dev/null 2>&1
    echo "round $r $(basename "$bin") $(median_move "${BENCH_PORT:-11120}" CUSTOS) ms"
    kill "$pid"
  done
done
rm -rf "$recv"
