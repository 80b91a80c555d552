#!/usr/bin/env bash
# Issue 15: forwarding throughput, Custos's queue vs Orthanc's store job, to
# the same storescp (bench/routing.py). Release build first.
#   bench/routing.sh DATASETS_DIR WORK_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
python3 "$here/routing.py" --data "$1" --work "$2"
