#!/usr/bin/env bash
# What DCMTK's storescp takes when DCMTK's storescu sends it the study the
# harness C-MOVEs (the first of `big`, 100 instances, 52.6 MB) into
# /dev/shm, as the harness's C-MOVE destination runs: is the destination the
# bound of C-MOVE figures? MB/s per run. Loopback only.
#   bench/storescp_intake.sh DATASETS_DIR [RUNS]
set -euo pipefail
D=$1; runs=${2:-7}
studies=("$D"/big/st*); recv=/dev/shm/custos-bench-intake
bytes=$(du -sb "${studies[0]}" | cut -f1)
export TCP_NODELAY=1
for _ in $(seq "$runs"); do
  rm -rf "$recv"; mkdir -p "$recv"
  /usr/bin/storescp -aet BENCHDEST -od "$recv" 11114 >/dev/null 2>&1 &
  scp=$!
  for _ in $(seq 100); do /usr/bin/echoscu -aec BENCHDEST 127.0.0.1 11114 >/dev/null 2>&1 && break; sleep 0.05; done
  s=$(date +%s.%N)
  /usr/bin/storescu -aet BENCHSCU -aec BENCHDEST +sd +r 127.0.0.1 11114 "${studies[0]}" >/dev/null 2>&1
  e=$(date +%s.%N)
  sleep 0.1; kill "$scp"; wait "$scp" 2>/dev/null || true
  python3 -c "import sys; print(f'{int(sys.argv[3])} files, {int(sys.argv[4])/1e6/(float(sys.argv[2])-float(sys.argv[1])):.0f} MB/s')" "$s" "$e" "$(ls "$recv" | wc -l)" "$bytes"
done
rm -rf "$recv"
