#!/usr/bin/env bash
# Issue 4's figures: C-FIND / QIDO-RS latency and 4-association ingest with
# 102,000 real instances, then with 1,000,000 indexed (898,000 synthetic rows
# from synth_rows.py), on SQLite and on PostgreSQL. Loopback only.
#   bench/million.sh DATASETS_DIR WORK_DIR          (SQLite)
#   scripts/with-test-services bench/million.sh DATASETS_DIR WORK_DIR pg
# DATASETS_DIR: q100k and big as in bench/README.md, and big2 (same as big, --seed 5).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
S=${BENCH_HARNESS:-$here/../../shared/bench}
D=$1; W=$2; backend=${3:-sqlite}
mkdir -p "$W"
export BENCH_PASSWORD=${BENCH_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}
data=${BENCH_DATA:-/tmp/custos-bench-data}
if [ "$backend" = pg ]; then
  psql "$CUSTOS_TEST_POSTGRES_URL" -q -c "DROP DATABASE IF EXISTS custos_bench" -c "CREATE DATABASE custos_bench"
  export BENCH_INDEX_URL="${CUSTOS_TEST_POSTGRES_URL%/*}/custos_bench"
fi
query() {
  python3 "$S/run.py" --target external --label "$1" --host 127.0.0.1 --port 11120 --aec CUSTOS \
    --dicomweb https://127.0.0.1:11121/dicom-web --user bench --password "$BENCH_PASSWORD" --insecure \
    --server-pid "$pid" --small "$D/q100k" --workdir "$W/scratch" --sections query --nq 30 "${@:2}" \
    --out "$W/$1.json"
}
ingest4() {   # 2,000 ~0.5 MB instances of dataset $2 over 4 parallel storescu associations
  local t0 t1; t0=$(date +%s.%N)
  for part in 0 1 2 3; do
    ls -d "$2"/*/ | awk -v p=$part 'NR % 4 == p' | xargs -I{} find {} -name '*.dcm' > "$W/part$part"
    TCP_NODELAY=1 /usr/bin/storescu -aet BENCHSCU -aec CUSTOS 127.0.0.1 11120 $(cat "$W/part$part") &
  done
  wait; t1=$(date +%s.%N)
  echo "$1: 2000 instances over 4 associations in $(echo "$t1 - $t0" | bc) s = $(echo "2000 / ($t1 - $t0)" | bc) inst/s" | tee -a "$W/ingest-$backend.txt"
}
pid=$("$here/custos-reset.sh" | tail -1)
query "$backend-100k"
ingest4 "$backend-100k" "$D/big"
if [ "$backend" = pg ]; then
  python3 "$here/synth_rows.py" --postgres "$BENCH_INDEX_URL" --studies 89800
else
  python3 "$here/synth_rows.py" --sqlite "$data/index.sqlite" --studies 89800
fi
query "$backend-1m" --no-load
ingest4 "$backend-1m" "$D/big2"
python3 "$S/report.py" "$W/$backend-100k.json" "$W/$backend-1m.json" > "$W/report-$backend.md"
cat "$W/report-$backend.md" "$W/ingest-$backend.txt"
