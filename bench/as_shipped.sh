#!/usr/bin/env bash
# DCMTK as Debian ships it: Nagle's algorithm on (no TCP_NODELAY in the
# environment of storescu, getscu, movescu, storescp, nor of Orthanc). Each
# PDU such a peer writes in two pieces waits for our delayed ACK (~40 ms)
# unless the receiver acknowledges at once, which Custos does
# (custos-dimse `quickack`). Ingest of 10 small studies over 1 association and
# retrieval of one ~52 MB study, Orthanc then Custos (plain DICOM), medians.
#   bench/as_shipped.sh DATASETS_DIR WORK_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
D=$1; W=$2
mkdir -p "$W"
common=(--small "$D/small" --subset-small 10 --big "$D/big" --subset-big 1 --sections ingest,retrieve
  --modes 1 --reps 3 --reps-retrieve 3 --client-nodelay 0 --workdir "$W/scratch")
python3 "$S/run.py" --target orthanc --label orthanc-as-shipped --orthanc-nodelay 0 "${common[@]}" \
  --out "$W/as_shipped_orthanc.json" >/dev/null
python3 "$S/run.py" --target external --label custos-as-shipped --host 127.0.0.1 --port 11120 --aec CUSTOS \
  --dicomweb http://127.0.0.1:11121/dicom-web --user bench --password "$BENCH_PASSWORD" \
  --reset-cmd "BENCH_PLAINTEXT=true $here/custos-reset.sh" "${common[@]}" --out "$W/as_shipped_custos.json" >/dev/null
kill "$(cat "${BENCH_DATA:-/tmp/custos-bench-data}.pid")" 2>/dev/null || true
python3 "$S/report.py" "$W/as_shipped_orthanc.json" "$W/as_shipped_custos.json"
