"""OHIF v3, installed with `custos viewer install`, against Custos in Debian's
chromium (Playwright): stores pydicom test files through STOW-RS (a JPEG 2000
CT, a 30-frame colour ultrasound, an RGB ultrasound), logs in on Custos's
page, opens OHIF's study list and each study in the viewer, and checks that
the viewport shows an image (pixel statistics of its canvas), that no
DICOMweb request failed and that the console shows no decode or CSP error.
Prints one JSON line of figures; exits non-zero with the reason otherwise.

usage: ohif.py --url https://localhost:PORT --user USER:PASSWORD --shots DIR
"""

import argparse
import io
import json
import os
import sys
import time

import numpy as np
import pydicom
import requests
from PIL import Image
from playwright.sync_api import sync_playwright

FILES = {
    "ct-jpeg2000": "693_J2KI.dcm",
    "multiframe-ybr": "examples_ybr_color.dcm",
    "rgb": "examples_rgb_color.dcm",
}

QUIET = [
    "--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]


def check(ok, why):
    if not ok:
        print(f"FAILED: {why}", file=sys.stderr)
        sys.exit(1)


def stow(url, auth, paths):
    boundary = "custos-ohif-test"
    body = b""
    for p in paths:
        with open(p, "rb") as f:
            body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f.read() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    r = requests.post(f"{url}/dicom-web/studies", data=body, auth=auth, verify=False, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    })
    check(r.status_code == 200, f"STOW-RS answered {r.status_code}: {r.text[:300]}")


def spread(png):
    """Standard deviation of a screenshot's brightness: 0 for a blank canvas."""
    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float).std())


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--url", required=True)
    a.add_argument("--user", required=True)
    a.add_argument("--shots", required=True)
    args = a.parse_args()
    url = args.url.rstrip("/")
    user, password = args.user.split(":", 1)
    requests.packages.urllib3.disable_warnings()
    folder = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    paths = {k: os.path.join(folder, v) for k, v in FILES.items()}
    stow(url, (user, password), paths.values())
    headers = {k: pydicom.dcmread(p, stop_before_pixels=True) for k, p in paths.items()}
    studies = {k: h.StudyInstanceUID for k, h in headers.items()}
    ct_family_name = str(headers["ct-jpeg2000"].PatientName).split("^")[0]
    figures = {}

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=QUIET)
        context = browser.new_context(ignore_https_errors=True, viewport={"width": 1366, "height": 768})
        page = context.new_page()
        problems = []
        page.on("console", lambda m: m.type == "error" and any(
            w in m.text.lower() for w in ("decode", "content security policy", "refused", "codec")) and problems.append(m.text))
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        failed = []
        page.on("response", lambda r: r.status >= 400 and ("/dicom-web/" in r.url or "/viewer/" in r.url or "/wado" in r.url)
                and failed.append(f"{r.status} {r.url}"))

        # The page itself, asked for by name, needs a session too; OHIF's
        # files are streamed whole with their length.
        r = requests.get(f"{url}/viewer/index.html", verify=False, allow_redirects=False)
        check(r.status_code in (302, 303, 307) and r.headers.get("location") == "/#/open?to=%2Fviewer%2Findex.html",
              f"index.html without a session: {r.status_code} {r.headers.get('location')}")
        # (As installed to a client that does not take gzip; the browser
        # below gets the gzipped copy.)
        r = requests.get(f"{url}/viewer/app.bundle.0f6159c501addfe9.js", verify=False, allow_redirects=False,
                         headers={"Accept-Encoding": "identity"})
        check(r.status_code == 200 and int(r.headers["content-length"]) == len(r.content) > 10_000_000,
              f"OHIF's 17 MB bundle: {r.status_code} {r.headers.get('content-length')}")
        # Without a session a viewer link (from a RIS, an e-mail) sends the
        # browser to the login, and after it on to the study it named.
        link = f"/viewer/viewer?StudyInstanceUIDs={studies['ct-jpeg2000']}"
        page.goto(f"{url}{link}")
        page.wait_for_selector("form.login")
        page.fill("input[name=user]", user)
        page.fill("input[name=password]", password)
        page.click("form.login button[type=submit]")
        page.wait_for_url(f"{url}{link}", timeout=30000)
        page.wait_for_selector(".cornerstone-viewport-element canvas, [data-viewport-uid] canvas", timeout=90000)
        # Custos's study page links to OHIF.
        page.goto(f"{url}/#/study/{studies['ct-jpeg2000']}")
        page.wait_for_selector("a:has-text('Open in OHIF')")

        # OHIF's study list, over QIDO-RS with the session cookie: it lists
        # the stored patients.
        page.goto(f"{url}/viewer/")
        page.wait_for_function("n => document.body.innerText.includes(n)", arg=ct_family_name, timeout=90000)
        page.screenshot(path=f"{args.shots}/ohif-study-list.png")

        for name, study in studies.items():
            started = time.monotonic()
            page.goto(f"{url}/viewer/viewer?StudyInstanceUIDs={study}")
            page.wait_for_selector(".cornerstone-viewport-element canvas, [data-viewport-uid] canvas", timeout=90000)
            deadline = time.monotonic() + 90
            best = 0.0
            while time.monotonic() < deadline:
                canvas = page.locator(".cornerstone-viewport-element canvas, [data-viewport-uid] canvas").first
                try:
                    best = spread(canvas.screenshot())
                except Exception:
                    best = 0.0
                if best > 5:
                    break
                time.sleep(0.5)
            figures[f"{name}_first_image_ms"] = round((time.monotonic() - started) * 1000)
            figures[f"{name}_pixel_spread"] = round(best, 1)
            page.screenshot(path=f"{args.shots}/ohif-{name}.png")
            check(best > 5, f"{name}: the viewport stayed blank (spread {best:.1f})")

        check(not failed, f"failed requests: {failed[:10]}")
        check(not problems, f"console: {problems[:10]}")
        browser.close()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
