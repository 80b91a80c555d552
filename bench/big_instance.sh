#!/usr/bin/env bash
# Peak server memory while one ~1 GB multi-frame instance is stored and then
# retrieved over DICOM (C-STORE, C-GET) and over HTTPS (STOW-RS into a fresh
# server, WADO-RS). Prints the server's VmHWM (peak RSS) after each step.
#   BIG_FILE (default /tmp/custos-1gb.dcm) is generated once with pydicom.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
file=${BIG_FILE:-/tmp/custos-1gb.dcm}
port=${BENCH_PORT:-11120}
if [ ! -f "$file" ]; then
  python3 - "$file" <<'PY'
import sys
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
frames, rows, cols = 2048, 512, 512          # 2048 x 512 x 512 x 2 bytes = 1.07 GB
meta = FileMetaDataset()
meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"   # Enhanced CT
meta.MediaStorageSOPInstanceUID = generate_uid()
meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds = Dataset(); ds.file_meta = meta
ds.SOPClassUID = meta.MediaStorageSOPClassUID; ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
ds.StudyInstanceUID = generate_uid(); ds.SeriesInstanceUID = generate_uid()
ds.PatientName = "BIG^INSTANCE"; ds.PatientID = "BIG1"; ds.Modality = "CT"
ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
ds.SamplesPerPixel = 1; ds.PhotometricInterpretation = "MONOCHROME2"
ds.BitsAllocated = 16; ds.BitsStored = 12; ds.HighBit = 11; ds.PixelRepresentation = 0
rng = np.random.default_rng(1)
ds.PixelData = rng.integers(0, 4096, size=frames * rows * cols, dtype=np.uint16).tobytes()
ds.save_as(sys.argv[1], enforce_file_format=True)
PY
fi
export BENCH_PASSWORD=${BENCH_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}
http_port=${BENCH_HTTP_PORT:-11121}
pid=$("$here/custos-reset.sh" | tail -n 1)
hwm() { grep VmHWM "/proc/$pid/status" | awk '{print $2/1024 " MiB"}'; }
echo "file: $(du -h "$file" | cut -f1)  server pid $pid  idle peak RSS: $(hwm)"
TCP_NODELAY=1 /usr/bin/storescu -aet BENCHSCU -aec CUSTOS 127.0.0.1 "$port" "$file"
echo "after C-STORE: peak RSS $(hwm)"
out=$(mktemp -d)
uid=$(python3 -c "import pydicom,sys;print(pydicom.dcmread(sys.argv[1],stop_before_pixels=True).StudyInstanceUID)" "$file")
TCP_NODELAY=1 /usr/bin/getscu -aet BENCHSCU -aec CUSTOS 127.0.0.1 "$port" -k QueryRetrieveLevel=STUDY -k "StudyInstanceUID=$uid" -od "$out"
echo "after C-GET: peak RSS $(hwm); received $(du -sh "$out" | cut -f1)"
rm -rf "$out"

# The same instance over HTTPS, into an empty server: STOW-RS, then WADO-RS.
pid=$("$here/custos-reset.sh" | tail -n 1)
echo "fresh server pid $pid  idle peak RSS: $(hwm)"
python3 - "$file" "$http_port" <<'PY'
import os, sys, requests
path, port = sys.argv[1], sys.argv[2]
b = "big-boundary"
def body():
    yield f"--{b}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk
    yield f"\r\n--{b}--\r\n".encode()
r = requests.post(f"https://127.0.0.1:{port}/dicom-web/studies", data=body(), verify=False,
                  auth=("bench", os.environ["BENCH_PASSWORD"]),
                  headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={b}'})
print("STOW-RS status", r.status_code)
PY
echo "after STOW-RS: peak RSS $(hwm)"
curl -sk -u "bench:$BENCH_PASSWORD" -o /dev/null -w "WADO-RS %{http_code}, %{size_download} bytes\n" \
  -H 'Accept: multipart/related; type="application/dicom"' "https://127.0.0.1:$http_port/dicom-web/studies/$uid"
echo "after WADO-RS: peak RSS $(hwm)"
