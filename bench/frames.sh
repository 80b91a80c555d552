#!/usr/bin/env bash
# WADO-RS frames of one large multi-frame instance, one frame per request as
# a viewer pages through a cine or a tomosynthesis: 800 native 512x512 8-bit
# frames (200 MiB, Multi-frame Grayscale Byte Secondary Capture). Per round
# and server: the median time of REPS frame requests (frames spread over the
# instance, curl, Accept multipart/related octet-stream) and the server's
# peak RSS (VmHWM) before and after them. Orthanc's DICOMweb plugin and each
# Custos build in BINS over plain HTTP (the frame path, not TLS), fresh
# servers each round. WHAT=rendered: each frame rendered to JPEG instead
# (`frames/N/rendered`, what a cine of rendered images asks for). Loopback
# only.
#   bench/frames.sh ROUNDS REPS BIN [BIN ...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
rounds=$1; reps=$2; shift 2
work=/tmp/custos-bench-frames
mkdir -p "$work"
file=$work/multiframe.dcm
study=2.25.41800201612060001
[ -f "$file" ] || python3 - "$file" "$study" <<'EOF'
import sys
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
path, study = sys.argv[1], sys.argv[2]
frames, side = 800, 512
meta = FileMetaDataset()
meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"
meta.MediaStorageSOPInstanceUID = study + ".1.1"
meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds = Dataset()
ds.file_meta = meta
ds.SOPClassUID = meta.MediaStorageSOPClassUID
ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
ds.StudyInstanceUID = study
ds.SeriesInstanceUID = study + ".1"
ds.PatientName = "Frames^Bench"
ds.PatientID = "FRAMES-1"
ds.Modality = "OT"
ds.NumberOfFrames = frames
ds.Rows = ds.Columns = side
ds.SamplesPerPixel = 1
ds.PhotometricInterpretation = "MONOCHROME2"
ds.BitsAllocated = ds.BitsStored = 8
ds.HighBit = 7
ds.PixelRepresentation = 0
ds.PixelData = b"".join(bytes([n % 251]) * (side * side) for n in range(frames))
ds.save_as(path, enforce_file_format=True)
EOF
base=/dicom-web/studies/$study/series/$study.1/instances/$study.1.1
export TCP_NODELAY=1
hwm() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
# Median seconds of REPS frame requests to URL_PREFIX, with curl's extra args.
median_frames() {
  local prefix=$1; shift
  local accept='multipart/related; type="application/octet-stream"' suffix=
  if [ "${WHAT:-frames}" = rendered ]; then accept=image/jpeg; suffix=/rendered; fi
  for i in $(seq "$reps"); do
    curl -s -o /dev/null -w '%{time_total}\n' "$@" -H "Accept: $accept" \
      "$prefix/frames/$(( (i * 797) % 800 + 1 ))$suffix"
  done | sort -n | sed -n "$(( (reps + 1) / 2 ))p" | awk '{printf "%.1f", $1 * 1000}'
}
for r in $(seq "$rounds"); do
  w=$(mktemp -d)
  "$S/orthanc.sh" start -d "$w" >/dev/null
  orthanc=$(pgrep -n -x Orthanc)
  /usr/bin/storescu -aec ORTHANC 127.0.0.1 4242 "$file" >/dev/null 2>&1
  before=$(hwm "$orthanc")
  t=$(median_frames "http://127.0.0.1:8042$base")
  echo "round $r orthanc: $t ms per frame; peak RSS $before -> $(hwm "$orthanc") MiB"
  "$S/orthanc.sh" wipe -d "$w" >/dev/null
  for bin in "$@"; do
    pid=$(CUSTOS_BIN="$bin" BENCH_PLAINTEXT=true "$here/custos-reset.sh" | tail -1)
    /usr/bin/storescu -aet BENCHSCU -aec CUSTOS 127.0.0.1 "${BENCH_PORT:-11120}" "$file" >/dev/null 2>&1
    before=$(hwm "$pid")
    t=$(median_frames "http://127.0.0.1:${BENCH_HTTP_PORT:-11121}$base" -u "bench:$BENCH_PASSWORD")
    echo "round $r $(basename "$bin"): $t ms per frame; peak RSS $before -> $(hwm "$pid") MiB"
    kill "$pid"
  done
done
