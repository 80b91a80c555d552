#!/usr/bin/env bash
# Issue 5's figures: C-STORE ingest over DICOM TLS vs plaintext, and with vs
# without the audit trail (a build from before it, CUSTOS_NOAUDIT_BIN), same
# dataset, same run, 4 parallel storescu associations, 3 runs each.
#   bench/tls_audit.sh DATASET_DIR WORK_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
D=$1; W=$2; mkdir -p "$W"
data=${BENCH_DATA:-/tmp/custos-bench-data}
bin=${CUSTOS_BIN:-$here/../target/release/custos}
noaudit=${CUSTOS_NOAUDIT_BIN:-}
ingest() {   # $1 label, $2... extra storescu options, port last
  local label=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  for part in 0 1 2 3; do
    ls -d "$D"/*/ | awk -v p=$part 'NR % 4 == p' | xargs -I{} find {} -name '*.dcm' > "$W/part$part"
    TCP_NODELAY=1 /usr/bin/storescu -aet BENCHSCU -aec CUSTOS "$@" $(cat "$W/part$part") &
  done
  wait; t1=$(date +%s.%N)
  echo "$label $(echo "2000 / ($t1 - $t0)" | bc -l)" | tee -a "$W/tls_audit.txt"
}
: > "$W/tls_audit.txt"
for run in 1 2 3; do
  CUSTOS_BIN=$bin "$here/custos-reset.sh" >/dev/null
  ingest plain 127.0.0.1 11120
  CUSTOS_BIN=$bin "$here/custos-reset.sh" >/dev/null
  "$bin" cert issue BENCHSCU --out "$data.certs.$run" --data "$data" >/dev/null
  ingest tls +tls "$data.certs.$run/BENCHSCU.key.pem" "$data.certs.$run/BENCHSCU.cert.pem" +cf "$data/tls/ca.pem" 127.0.0.1 11122
  rm -rf "$data.certs.$run"
  if [ -n "$noaudit" ]; then
    CUSTOS_BIN=$noaudit "$here/custos-reset.sh" >/dev/null
    ingest plain-noaudit 127.0.0.1 11120
  fi
done
python3 - "$W/tls_audit.txt" <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    k, v = line.split(); runs[k].append(float(v))
med = {k: statistics.median(v) for k, v in runs.items()}
for k, v in runs.items():
    print(f"{k}: median {med[k]:.0f} inst/s  runs {[round(x) for x in v]}")
if "tls" in med: print(f"TLS / plaintext: {med['tls']/med['plain']:.2f}x")
if "plain-noaudit" in med: print(f"with audit / without: {med['plain']/med['plain-noaudit']:.2f}x")
PY
