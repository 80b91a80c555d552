"""Custos's web UI in a real browser (Debian's chromium, driven by Playwright).

Stores a small CT series (known pixels) through STOW-RS, then, as a person
would: logs in (a wrong password first), searches, opens the study, checks
from a screenshot that the viewer shows the known image, scrolls, changes the
window, downloads the study as a ZIP (pydicom reads its DICOMDIR), uploads,
administers, reads the status page, logs out, and logs in as an auditor who
sees only the audit trail, filters it and verifies its chain.
Screenshots go to --shots. Prints one JSON line of figures; exits non-zero
with the reason on the first failure.

usage: browser.py --url https://localhost:PORT --admin USER:PASSWORD
                  --auditor USER:PASSWORD --shots DIR
"""

import argparse
import io
import json
import os
import sys
import time
import zipfile

import numpy as np
import pydicom
import requests
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from made import ct_pixels, instance, part10

NAME = "Browser^Bella"
SHOWN_NAME = "Browser Bella"
PATIENT_ID = "BR-1"
SLICES = 5


def series(name=NAME, patient_id=PATIENT_ID, count=SLICES):
    """64x64 CT slices: the left half air, the right half bone."""
    study, series_uid = generate_uid(), generate_uid()
    out = []
    for n in range(1, count + 1):
        ds = instance(study=study, series=series_uid)
        ds.PatientName, ds.PatientID = name, patient_id
        ds.PatientBirthDate, ds.PatientSex = "19700101", "F"
        ds.StudyDate, ds.StudyDescription = "20260102", "CHEST"
        ds.AccessionNumber = "ACC-B1"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, n
        ds.SeriesDescription = "AXIAL"
        pixels = np.zeros((64, 64), dtype=np.uint16)
        pixels[:, 32:] = 2000  # bone on the right; air (0 -> -1024 HU) on the left
        pixels[2 * n : 2 * n + 4, 2:6] = 2000  # a marker that moves with the slice
        ct_pixels(ds, pixels)
        out.append(part10(ds))
    return study, out


def stow(url, auth, files):
    boundary = "custos-browser-test"
    body = b""
    for f in files:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    r = requests.post(
        f"{url}/dicom-web/studies",
        data=body,
        auth=auth,
        verify=False,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
    )
    check(r.status_code == 200, f"STOW-RS answered {r.status_code}: {r.text[:300]}")


def check(ok, why):
    if not ok:
        print(f"FAILED: {why}", file=sys.stderr)
        sys.exit(1)


def login(page, url, user, password):
    page.goto(f"{url}/")
    page.wait_for_selector("form.login")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    page.click("form.login button[type=submit]")


def download_zip(page, selector, shots, name):
    """Clicks the download link `selector`, saves and unpacks the ZIP under
    `shots`, checks every entry's CRC; returns its entry names and the
    DICOMDIR read by pydicom's FileSet (which follows the records' offsets)."""
    with page.expect_download() as download:
        page.click(selector)
    path = os.path.join(shots, f"{name}.zip")
    download.value.save_as(path)
    unpacked = os.path.join(shots, f"{name}-zip")
    with zipfile.ZipFile(path) as z:
        check(z.testzip() is None, "a ZIP entry's CRC failed")
        names = z.namelist()
        z.extractall(unpacked)
    return names, FileSet(pydicom.dcmread(os.path.join(unpacked, "DICOMDIR")))


def halves(png):
    """Mean brightness of the left and right halves of a screenshot."""
    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    w = img.shape[1]
    return img[:, : w // 2].mean(), img[:, w // 2 :].mean()


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--url", required=True)
    a.add_argument("--admin", required=True)
    a.add_argument("--auditor", required=True)
    a.add_argument("--shots", required=True)
    args = a.parse_args()
    url = args.url.rstrip("/")
    admin = tuple(args.admin.split(":", 1))
    auditor = tuple(args.auditor.split(":", 1))
    requests.packages.urllib3.disable_warnings()
    study, files = series()
    stow(url, admin, files)
    figures = {}

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        context = browser.new_context(ignore_https_errors=True, viewport={"width": 1366, "height": 768})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and "Failed to load resource" not in m.text and errors.append(m.text))
        # Refusals this script provokes on purpose (the session check before
        # login, a wrong password, the API asked by a stranger, a logged-out
        # browser, the auditor, and a wrong current password); anything else that fails is a defect.
        expected = {("/api/session", 401), ("/api/login", 401), ("/dicom-web/studies", 401), ("/dicom-web/studies", 403),
                    ("/dicom-web/studies", 409),  # the text file uploaded on purpose
                    ("/api/session/password", 403),  # a wrong current password
                    ("/api/users", 403)}  # the staged "give your password again"
        failed = []
        page.on("response", lambda r: r.status >= 400 and (r.url.split("?")[0].replace(url, ""), r.status) not in expected and failed.append(f"{r.status} {r.url}"))

        # A stranger sees the login page only; the API refuses it.
        page.goto(f"{url}/")
        page.wait_for_selector("form.login")
        check(page.title() == "Custos", f"title {page.title()!r}")
        check(NAME not in page.content() and SHOWN_NAME not in page.content(), "patient data before login")
        status = page.evaluate("fetch('/dicom-web/studies', {headers: {'x-custos-ui': '1'}}).then(r => r.status)")
        check(status == 401, f"the API answered a stranger with {status}")
        page.screenshot(path=f"{args.shots}/login.png")

        # A wrong password, then the right one.
        login(page, url, admin[0], "not the password at all")
        page.wait_for_selector("text=Wrong user name or password")
        login(page, url, admin[0], admin[1])
        row = page.wait_for_selector(f"tr[data-study='{study}']")
        check(SHOWN_NAME in row.inner_text() and PATIENT_ID in row.inner_text(), "the study row lacks the patient")
        page.screenshot(path=f"{args.shots}/studies.png")
        # Readable on a 1366x768 laptop: nothing runs off the side.
        fits = "() => document.documentElement.scrollWidth <= window.innerWidth"
        check(page.evaluate(fits), "the study list is wider than a 1366-pixel screen")

        # Search as you type: a prefix, case-insensitive, finds it; another name does not.
        page.fill("input[name=name]", "brow")
        page.wait_for_selector(f"tr:has-text('{SHOWN_NAME}')")
        page.fill("input[name=name]", "zzzz")
        page.wait_for_selector("text=No studies match.")
        # The name typed as the list shows it ("Family Given") finds it too.
        page.fill("input[name=name]", SHOWN_NAME.lower())
        page.wait_for_selector(f"tr:has-text('{SHOWN_NAME}')")
        page.fill("input[name=name]", "")
        row = page.wait_for_selector(f"tr[data-study='{study}']")

        # Open the study; the viewer shows the known image.
        started = time.monotonic()
        row.click()
        page.wait_for_selector(".patient h2")
        check(study in page.url and NAME not in page.url and PATIENT_ID not in page.url, f"URL {page.url}")
        page.wait_for_function("() => { const i = document.querySelector('.stage img'); return i && i.complete && i.naturalWidth > 0; }")
        figures["first_image_ms"] = round((time.monotonic() - started) * 1000)
        page.wait_for_function("() => [...document.querySelectorAll('.series img')].every(i => i.complete && i.naturalWidth > 0)")
        left, right = halves(page.locator(".stage img").screenshot())
        figures["image_left_right_mean"] = [round(left), round(right)]
        check(right > left + 100, f"the image is not air left / bone right: {left:.0f} vs {right:.0f}")
        page.screenshot(path=f"{args.shots}/study.png")
        check(page.evaluate(fits), "the study page is wider than a 1366-pixel screen")

        # Scroll with the keyboard: another slice is requested and shown.
        before = page.get_attribute(".stage img", "src")
        overlay = page.inner_text(".overlay")
        page.focus(".stage")
        page.keyboard.press("ArrowDown")
        page.wait_for_function("b => document.querySelector('.stage img').getAttribute('src') !== b", arg=before)
        check(page.inner_text(".overlay") != overlay, "the overlay did not follow the scroll")

        # A window preset: the server renders with that window; the image changes.
        page.click("button[data-preset=Lung]")
        page.wait_for_function("() => document.querySelector('.stage img').src.includes('window=-600%2C1500')")
        page.wait_for_function("() => { const i = document.querySelector('.stage img'); return i.complete && i.naturalWidth > 0; }")
        l2, r2 = halves(page.locator(".stage img").screenshot())
        check(r2 > l2, f"lung window lost the image: {l2:.0f} vs {r2:.0f}")
        check(abs(l2 - left) > 5 or abs(r2 - right) > 5, "the lung window changed nothing")
        page.screenshot(path=f"{args.shots}/viewer-lung.png")

        # Download the study as a ZIP: every slice, and a DICOMDIR pydicom
        # reads (it follows the records' offsets) that lists them all.
        names, fileset = download_zip(page, "a:has-text('Download ZIP')", args.shots, "study")
        check(names[0] == "DICOMDIR" and len(names) == SLICES + 1, f"ZIP entries {names}")
        listed = sorted(int(i.InstanceNumber) for i in fileset)
        check(listed == list(range(1, SLICES + 1)), f"DICOMDIR lists {listed}")
        check(all(i.load().PatientID == PATIENT_ID for i in fileset), "the files' patient")

        # Upload: a new instance is stored, a text file refused with the
        # reason; the new study is then found in the list.
        upload_dir = os.path.join(args.shots, "upload")
        os.makedirs(upload_dir, exist_ok=True)
        new_study, new_files = series(name="Upload^Ulla", patient_id="UP-1", count=1)
        dicom_path = os.path.join(upload_dir, "new.dcm")
        with open(dicom_path, "wb") as f:
            f.write(new_files[0])
        text_path = os.path.join(upload_dir, "notes.txt")
        with open(text_path, "w") as f:
            f.write("not an image")
        page.goto(f"{url}/#/upload")
        page.set_input_files("input[type=file][multiple]:not([webkitdirectory])", [dicom_path, text_path])
        page.wait_for_selector("tr[data-file='new.dcm'] td.ok:has-text('stored')")
        page.wait_for_selector("tr[data-file='notes.txt'] td.bad:has-text('not a DICOM file')")
        check("1 stored" in page.inner_text("#upload-summary"), page.inner_text("#upload-summary"))
        page.screenshot(path=f"{args.shots}/upload.png")
        page.goto(f"{url}/#/")
        page.fill("input[name=name]", "upload")
        page.wait_for_selector(f"tr[data-study='{new_study}']")

        # Sorting is done by the server over every page: newest first by
        # default (same study date: the later stored first), then by ID.
        page.fill("input[name=name]", "")
        page.wait_for_function("() => document.querySelectorAll('#studies tr').length === 2")
        order = lambda: page.eval_on_selector_all("#studies tr", "rows => rows.map(r => r.dataset.study)")
        check(order() == [new_study, study], f"default order {order()}")
        page.click("th[data-sort=PatientID]")
        page.wait_for_function("() => document.querySelector('th[data-sort=PatientID]').textContent.endsWith('▲')")
        page.wait_for_function(f"() => document.querySelector('#studies tr')?.dataset.study === '{study}'")
        page.click("th[data-sort=PatientID]")
        page.wait_for_function(f"() => document.querySelector('#studies tr')?.dataset.study === '{new_study}'")

        # Both studies ticked (the selection outlives a search), then one
        # ZIP whose DICOMDIR lists each under its own patient.
        check(page.is_hidden("#selection"), "a download offered with nothing selected")
        page.check(f"tr[data-study='{study}'] td.pick input")
        check(page.url.endswith("#/"), "ticking a row opened the study")
        page.fill("input[name=name]", "upload")
        page.wait_for_function("() => document.querySelectorAll('#studies tr').length === 1")
        page.check(f"tr[data-study='{new_study}'] td.pick input")
        link = page.locator("#selection a")
        check(link.inner_text() == "Download 2 selected studies (ZIP)", link.inner_text())
        page.screenshot(path=f"{args.shots}/selected.png")
        names, fileset = download_zip(page, "#selection a", args.shots, "selected")
        check(names[0] == "DICOMDIR" and len(names) == SLICES + 2, f"ZIP entries {names}")
        patients = sorted({(i.PatientID, i.StudyInstanceUID) for i in fileset})
        check(patients == sorted([(PATIENT_ID, study), ("UP-1", new_study)]), f"DICOMDIR lists {patients}")
        page.click("#selection button:has-text('Clear selection')")
        check(page.is_hidden("#selection"), "the selection stayed after clearing it")
        page.fill("input[name=name]", "")

        # Administration: a user, a token (its secret shown once) and a peer.
        page.goto(f"{url}/#/admin")
        page.wait_for_selector("section.admin h2:has-text('Users')")
        page.fill("input[name=new-user]", "newrad")
        page.select_option("select[name=new-role]", "radiologist")
        page.fill("input[name=new-password]", "fresh reader 42 passphrase")
        # Had the login been long ago, the server would ask for the password
        # again (its side is in the handler tests): the first answer is made
        # that refusal here, and the page asks, confirms with the real
        # server, and adds the user on its second try.
        asked = []

        def stale_once(route):
            if route.request.method == "POST" and not asked:
                asked.append(1)
                route.fulfill(status=403, content_type="application/json",
                              body='{"error": "give your password again", "confirm": true}')
            else:
                route.fallback()

        page.route("**/api/users", stale_once)
        page.click("button:has-text('Add user')")
        page.wait_for_selector("dialog.confirm-password[open]")
        page.fill("dialog.confirm-password input[type=password]", admin[1])
        with page.expect_response("**/api/session/confirm") as confirmed:
            page.click("dialog.confirm-password button:has-text('Confirm')")
        check(confirmed.value.status == 204, f"confirming: {confirmed.value.status}")
        page.wait_for_selector("tr[data-user='newrad']")
        page.unroute("**/api/users")
        check(asked == [1], "the page was not asked for the password")
        # A new password for them, typed twice into password fields (two
        # that differ are refused before anything is sent).
        page.click("tr[data-user='newrad'] button:has-text('New password')")
        page.fill("input[name=password-newrad-new]", "second reader 42 passphrase")
        page.fill("input[name=password-newrad-again]", "second reader 42 passphrasf")
        page.click("button:has-text('Set password')")
        page.wait_for_selector("p[role=status]:has-text('differ')")
        page.fill("input[name=password-newrad-again]", "second reader 42 passphrase")
        page.click("button:has-text('Set password')")
        page.wait_for_selector("p[role=status]:has-text('Password of newrad changed.')")
        whoami = requests.get(f"{url}/api/session", auth=("newrad", "second reader 42 passphrase"), verify=False)
        check(whoami.status_code == 200, f"newrad's new password: {whoami.status_code}")
        page.select_option("select[name=token-user]", "newrad")
        page.click("button:has-text('Create token')")
        page.wait_for_selector(".secret:has-text('shown once')")
        check("_" in page.inner_text(".secret"), "no token text shown")
        page.fill("input[name=peer-ae]", "CT09")
        page.fill("input[name=peer-host]", "127.0.0.1")
        page.fill("input[name=peer-port]", "11112")
        page.check("input[name=peer-store]")
        page.click("button:has-text('Add peer')")
        page.wait_for_selector("tr[data-peer='CT09']")
        check("store" in page.inner_text("tr[data-peer='CT09']"), "the peer's rights")
        # Nothing listens at CT09's address: the test says so.
        page.click("tr[data-peer='CT09'] button:has-text('Test')")
        page.wait_for_selector("p[role=status]:has-text('CT09 did not answer')")
        page.screenshot(path=f"{args.shots}/admin.png", full_page=True)
        peers = requests.get(f"{url}/api/peers", auth=admin, verify=False).json()
        check(any(p["ae_title"] == "CT09" and "store" in p["allow"] for p in peers), f"peers: {peers}")

        # A webhook added and removed; the retention dry run (no policy here).
        page.fill("input[name=hook-url]", "http://127.0.0.1:9/hook")
        page.fill("input[name=hook-secret]", "browser hook secret 42")
        page.check("input[name='hook-study.stable']")
        page.click("button:has-text('Add webhook')")
        page.wait_for_selector("tr[data-hook] td:has-text('study.stable')")
        check(requests.get(f"{url}/api/webhooks", auth=admin, verify=False).json()["webhooks"][0]["events"] == ["study.stable"], "webhook events")
        page.once("dialog", lambda d: d.accept())
        page.click("tr[data-hook] button:has-text('Remove')")
        page.wait_for_function("() => !document.querySelector('tr[data-hook]')")
        page.click("button:has-text('Show what would be deleted')")
        page.wait_for_selector(".retention-plan p:has-text('would be deleted')")

        # The modality worklist: two steps scheduled today by hand, one
        # removed (the test then asks the worklist by DICOM, as a modality).
        page.click("#nav a:has-text('Worklist')")
        page.wait_for_selector("h2:has-text('Modality worklist')")
        for pid, name, modality, time_ in (("WL-KEEP", "Worklist^Kept", "CT", "09:30"), ("WL-GONE", "Worklist^Removed", "MR", "10:15")):
            page.fill("input[name=wl-name]", name)
            page.fill("input[name=wl-patient-id]", pid)
            page.fill("input[name=wl-accession]", f"ACC-{pid}")
            page.select_option("select[name=wl-modality]", modality)
            page.fill("input[name=wl-station]", "CT01")
            page.fill("input[name=wl-time]", time_)
            page.fill("input[name=wl-procedure]", "Chest")
            page.click("button:has-text('Schedule')")
            page.wait_for_selector(f"tr[data-worklist] td:has-text('{pid}')")
        rows = page.locator("tr[data-worklist]").all_inner_texts()
        check(len(rows) == 2 and "09:30" in rows[0] and "Worklist Kept" in rows[0] and "SCHEDULED" in rows[0], f"worklist rows: {rows}")
        page.once("dialog", lambda d: d.accept())
        page.click("tr[data-worklist]:has-text('WL-GONE') button:has-text('Remove')")
        page.wait_for_function("() => document.querySelectorAll('tr[data-worklist]').length === 1")
        page.screenshot(path=f"{args.shots}/worklist.png", full_page=True)

        # Send the study to CT09 from its page; the jobs page shows the
        # forwards waiting (nothing listens there), cancels and retries one.
        page.goto(f"{url}/#/study/{study}")
        page.wait_for_selector("select[name=send-to]")
        page.select_option("select[name=send-to]", "CT09")
        page.click(".send button:has-text('Send')")
        page.wait_for_selector(f".send [role=status]:has-text('{SLICES} instances queued for CT09')")
        page.click("#nav a:has-text('Jobs')")
        page.wait_for_function(f"() => document.querySelectorAll('tr[data-job][data-state=pending]').length === {SLICES}")
        page.wait_for_selector("tr[data-job] td:has-text('CT09')")
        first = page.get_attribute("tr[data-job]", "data-job")
        page.click(f"tr[data-job='{first}'] button:has-text('Cancel')")
        page.wait_for_selector(f"tr[data-job='{first}'][data-state=cancelled]")
        page.select_option("select[name=job-state]", "cancelled")
        page.wait_for_function("() => document.querySelectorAll('tr[data-job]').length === 1")
        page.click(f"tr[data-job='{first}'] button:has-text('Retry')")
        page.wait_for_selector("p.hint:has-text('No jobs.')")
        page.select_option("select[name=job-state]", "all")
        page.wait_for_selector(f"tr[data-job='{first}'][data-state=pending]")
        page.screenshot(path=f"{args.shots}/jobs.png", full_page=True)

        # Retention protection and a correction from the study page.
        page.goto(f"{url}/#/study/{study}")
        page.wait_for_selector("[data-protected=false]")
        page.click("button:has-text('Protect')")
        page.wait_for_selector("[data-protected=true]")
        page.click("button:has-text('Correct…')")
        page.fill("input[name=correct-StudyDescription]", "Corrected in the UI")
        page.click("button:has-text('Rewrite the study')")
        page.wait_for_selector(".patient span:has-text('Corrected in the UI')")
        page.wait_for_selector("[data-protected=true]")
        page.screenshot(path=f"{args.shots}/study-corrected.png")

        jobs = requests.get(f"{url}/api/jobs?state=pending", auth=admin, verify=False).json()["jobs"]
        check(len(jobs) == SLICES and all(j["destination"] == "CT09" and j["reason"] == "manual" for j in jobs), f"jobs: {jobs}")

        # The status page: what is stored, what arrived this hour, doctor's checks.
        page.goto(f"{url}/#/status")
        archive = page.wait_for_selector("[data-figure=archive]").inner_text()
        check(f"2 studies, 2 series, {SLICES + 1} instances" in archive, f"status: {archive!r}")
        ingest = page.inner_text("[data-figure=ingest]")
        check(ingest.startswith(f"{SLICES + 1} instances received in the last hour"), f"ingest: {ingest!r}")
        check(page.locator(".bars span").count() == 60, "a bar per minute")
        page.click("button:has-text('Run the checks')")
        page.wait_for_selector("[data-figure=checks]")
        page.screenshot(path=f"{args.shots}/status.png", full_page=True)
        # It refreshes itself, keeping the checks' findings.
        stamp = page.inner_text("p.hint:has-text('Refreshed every')")
        page.wait_for_function("s => { const p = [...document.querySelectorAll('p.hint')].find(x => x.textContent.startsWith('Refreshed every')); return p && p.textContent !== s; }",
                               arg=stamp, timeout=30000)
        check(page.locator("[data-figure=checks]").count() == 1, "the findings went with the refresh")

        # De-identification from the study page: the ZIP, then a copy kept.
        page.goto(f"{url}/#/study/{study}")
        page.click("button:has-text('De-identify…')")
        page.check("input[name=deid-retain-dates]")
        page.fill("input[name=deid-description]", "Teaching file")
        with page.expect_download() as dl:
            page.click("a:has-text('Download de-identified ZIP')")
        names = zipfile.ZipFile(dl.value.path()).namelist()
        check(len(names) == SLICES and all(n.startswith("2.25.") for n in names), f"de-identified ZIP: {names}")
        page.click("button:has-text('Keep a copy in the archive')")
        copy = page.wait_for_selector("[data-deidentified]").get_attribute("data-deidentified")
        check(copy.startswith("2.25.") and copy != study, f"de-identified copy {copy}")
        page.screenshot(path=f"{args.shots}/deidentify.png")
        page.click("[data-deidentified]")
        page.wait_for_selector(".patient span:has-text('Teaching file')")
        page.wait_for_selector(".patient h2:has-text('ANONYMOUS')")

        # On a 4K monitor the page scales its type up and still fits.
        page.set_viewport_size({"width": 3840, "height": 2160})
        page.goto(f"{url}/#/")
        page.wait_for_selector(f"tr[data-study='{study}']")
        size = page.evaluate("() => getComputedStyle(document.documentElement).fontSize")
        check(size == "20px", f"root font size on 4K: {size}")
        check(page.evaluate(fits), "the study list is wider than a 4K screen")
        page.screenshot(path=f"{args.shots}/studies-4k.png")
        page.set_viewport_size({"width": 1366, "height": 768})

        # Log out: the login page again, and the API refuses the browser.
        page.click("#logout")
        page.wait_for_selector("form.login")
        page.goto(f"{url}/#/study/{study}")
        page.wait_for_selector("form.login")
        status = page.evaluate("fetch('/dicom-web/studies', {headers: {'x-custos-ui': '1'}}).then(r => r.status)")
        check(status == 401, f"after logout the API answered {status}")
        # Logging in from a study's link lands on that study, not the list.
        page.fill("input[name=user]", admin[0])
        page.fill("input[name=password]", admin[1])
        page.click("form.login button[type=submit]")
        page.wait_for_selector(".patient h2")
        check(page.url.endswith(f"#/study/{study}"), f"after login from a study's link: {page.url}")
        page.click("#logout")
        page.wait_for_selector("form.login")

        # The auditor sees the audit trail, with the admin's views in it, and nothing else.
        login(page, url, auditor[0], auditor[1])
        page.wait_for_selector("table.audit")
        nav = page.inner_text("#nav")
        check("Audit trail" in nav and "Studies" not in nav, f"auditor's menu: {nav!r}")
        page.wait_for_selector("td:has-text('HTTP login (browser session)')")
        page.wait_for_selector(f"td:has-text('WADO {study}')")
        check(page.locator("td:has-text('User Authentication')").count() > 0, "event names in the audit view")
        status = page.evaluate("fetch('/dicom-web/studies', {headers: {'x-custos-ui': '1'}}).then(r => r.status)")
        check(status == 403, f"the auditor searched studies: {status}")
        page.screenshot(path=f"{args.shots}/audit.png")

        # Filter by patient on the server: only records naming the patient,
        # the ZIP download among them; then by event; then verify the chain.
        page.fill("input[name=audit-patient]", PATIENT_ID)
        page.click("form.filters button[type=submit]")
        # The unfiltered list has a ZIP download too: wait for the filtered
        # answer itself (every row naming the patient), not for one row in it.
        try:
            page.wait_for_function(
                """id => {
                    const cells = [...document.querySelectorAll('table.audit tbody td:nth-child(8)')];
                    return cells.length > 0 && cells.every(td => td.textContent.includes(id))
                        && [...document.querySelectorAll('table.audit tbody td')].some(td => td.textContent.includes('ZIP download of'));
                }""",
                arg=PATIENT_ID,
                timeout=15000,
            )
        except PlaywrightTimeout:
            pass
        patients = page.locator("table.audit tbody td:nth-child(8)").all_inner_texts()
        check(patients and all(PATIENT_ID in p for p in patients), f"patient filter: {patients}")
        page.fill("input[name=audit-patient]", "")
        page.select_option("select[name=audit-event]", "110114")
        page.click("form.filters button[type=submit]")
        page.wait_for_function("() => [...document.querySelectorAll('table.audit tbody td:nth-child(3)')].every(td => td.textContent === 'User Authentication')")
        page.click("button:has-text('Verify the chain')")
        page.wait_for_selector("p.ok:has-text('Verified:')")
        page.screenshot(path=f"{args.shots}/audit-filtered.png")

        # The auditor changes their own password: a wrong current one is
        # refused on the page; the right one ends the session, and the new
        # password logs in.
        page.click("#own-password")
        page.fill("input[name=current-password]", "not what it is")
        page.fill("input[name=own-new]", "the trail at night 42")
        page.fill("input[name=own-again]", "the trail at night 42")
        page.click("button:has-text('Change password')")
        page.wait_for_selector("p[role=status]:has-text('current password is not right')")
        page.fill("input[name=current-password]", auditor[1])
        page.click("button:has-text('Change password')")
        page.wait_for_selector("form.login p[role=alert]:has-text('log in with the new one')")
        login(page, url, auditor[0], "the trail at night 42")
        page.wait_for_selector("table.audit")
        page.screenshot(path=f"{args.shots}/password.png")

        check(not errors, f"errors in the page: {errors}")
        check(not failed, f"failed requests: {failed}")
        browser.close()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
