"""Time to first image for a 100-slice CT: Custos's quick viewer and OHIF
(when installed), each opened 5 times in a fresh Debian-chromium context
after logging in; prints the medians (ms) as JSON.

  cargo build --release -p custos
  target/release/custos serve --data D &      # with a user, OHIF installed
  python3 bench/ui_first_image.py --url https://localhost:8443 --user U:P

--mbps N emulates a link of N Mbit/s each way (Chromium's network
conditions, 1 ms latency) for a hospital network or a VPN instead of
loopback; OHIF's bytes received (encoded: what crossed the link) are printed
too. Loopback only. The series is stored once (STOW-RS) per run of the script.
"""

import argparse
import io
import json
import os
import statistics
import sys
import time

import numpy as np
import requests
from PIL import Image
from playwright.sync_api import sync_playwright
from pydicom.uid import generate_uid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "py"))
from made import ct_pixels, instance, part10  # noqa: E402  (the tests' data set maker)

ARGS = ["--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def ct(slices=100, size=512):
    study, series = generate_uid(), generate_uid()
    yy, xx = np.mgrid[0:size, 0:size]
    body = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) < (size * 0.4) ** 2
    out = []
    for n in range(1, slices + 1):
        ds = instance(study=study, series=series)
        ds.PatientName, ds.PatientID, ds.Modality = "Bench^Hundred", "BENCH-100", "CT"
        ds.SeriesNumber, ds.InstanceNumber = 1, n
        ds.ImagePositionPatient = [0, 0, n * 2.5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 2.5
        ct_pixels(ds, np.where(body, 1064 + (n * 7 + xx // 16) % 200, 0).astype(np.uint16), bits_stored=12)
        out.append(part10(ds))
    return study, out


def stow(url, auth, files):
    for i in range(0, len(files), 20):
        boundary = "bench"
        body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f + b"\r\n"
                        for f in files[i:i + 20]) + f"--{boundary}--\r\n".encode()
        r = requests.post(f"{url}/dicom-web/studies", data=body, auth=auth, verify=False, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
        if r.status_code != 200:
            sys.exit(f"STOW-RS answered {r.status_code}")


def login(page, url, user, password):
    page.goto(f"{url}/")
    page.wait_for_selector("form.login")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    page.click("form.login button[type=submit]")
    page.wait_for_selector("#bar:not([hidden])")


def quick(page, url, study):
    started = time.monotonic()
    page.goto(f"{url}/#/study/{study}")
    page.wait_for_function("() => { const i = document.querySelector('.stage img'); return i && i.complete && i.naturalWidth > 0; }", timeout=120000)
    return (time.monotonic() - started) * 1000


def ohif(page, url, study, received):
    received.clear()
    started = time.monotonic()
    page.goto(f"{url}/viewer/viewer?StudyInstanceUIDs={study}")
    sel = ".cornerstone-viewport-element canvas, [data-viewport-uid] canvas"
    page.wait_for_selector(sel, timeout=120000)
    while time.monotonic() - started < 120:
        png = page.locator(sel).first.screenshot()
        if np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float).std() > 5:
            return (time.monotonic() - started) * 1000
        time.sleep(0.1)
    sys.exit("OHIF showed nothing in 120 s")


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--url", required=True)
    a.add_argument("--user", required=True)
    a.add_argument("--runs", type=int, default=5)
    a.add_argument("--mbps", type=float, help="emulate a link of this many Mbit/s")
    args = a.parse_args()
    url = args.url.rstrip("/")
    user, password = args.user.split(":", 1)
    requests.packages.urllib3.disable_warnings()
    study, files = ct()
    stow(url, (user, password), files)
    has_ohif = requests.get(f"{url}/viewer/app-config.js", verify=False).status_code == 200
    times = {"quick_viewer": [], "ohif": []}
    ohif_bytes = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        for _ in range(args.runs):
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 1366, "height": 768})
            page = context.new_page()
            if args.mbps:
                cdp = context.new_cdp_session(page)
                cdp.send("Network.enable")
                rate = args.mbps * 1e6 / 8
                cdp.send("Network.emulateNetworkConditions", {
                    "offline": False, "latency": 1, "downloadThroughput": rate, "uploadThroughput": rate})
            received = []
            page.on("requestfinished", lambda r: received.append(r.sizes()["responseBodySize"]))
            login(page, url, user, password)
            times["quick_viewer"].append(quick(page, url, study))
            if has_ohif:
                times["ohif"].append(ohif(page, url, study, received))
                ohif_bytes.append(sum(received))
            context.close()
        browser.close()
    out = {k: {"median_ms": round(statistics.median(v)), "runs_ms": [round(x) for x in v]}
           for k, v in times.items() if v}
    if ohif_bytes:
        out["ohif_bytes_received"] = round(statistics.median(ohif_bytes))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
