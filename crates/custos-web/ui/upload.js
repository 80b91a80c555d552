// Upload: files or whole folders dropped (or chosen) are sent one per
// STOW-RS request, three at a time, with progress per file and overall and
// each file's result as the archive answered it.

import { el } from "/ui/dom.js";

const PARALLEL = 3;

// What a STOW-RS failure or warning reason (PS3.18 / PS3.4 status) means.
const REASONS = {
  0x0111: "refused: the same SOP Instance UID is stored with other content",
  0x0124: "refused: not permitted",
  0xa700: "failed: the archive could not store it (out of resources)",
  0xa900: "refused: the instance does not match the request",
  0xc000: "refused: not a DICOM file the archive can read",
  0xb006: "kept the stored copy (this one differs)",
};

function outcome(status, body) {
  if (status === 200) return ["stored", true];
  let item = null;
  try {
    const j = JSON.parse(body);
    item = (j["00081198"] && j["00081198"].Value && j["00081198"].Value[0]) ||
      (j["00081199"] && j["00081199"].Value && j["00081199"].Value[0]);
  } catch (_) { /* not JSON */ }
  const code = item && ((item["00081197"] || item["00081196"] || {}).Value || [])[0];
  if (code !== undefined) return [REASONS[code] || `status ${code.toString(16).padStart(4, "0").toUpperCase()}`, status === 202];
  if (status === 413) return ["refused: too large for this server", false];
  if (status === 403) return ["refused: your role may not store", false];
  if (status === 401) return ["not sent: the session has ended", false];
  return [`failed (HTTP ${status})`, false];
}

/** Every file under the dropped items, folders walked recursively. */
async function droppedFiles(items) {
  const out = [];
  const walk = async (entry) => {
    if (entry.isFile) {
      out.push(await new Promise((ok, bad) => entry.file(ok, bad)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, bad) => reader.readEntries(ok, bad));
        if (!batch.length) break;
        for (const e of batch) await walk(e);
      }
    }
  };
  const entries = [...items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  for (const e of entries) await walk(e);
  return out;
}

function send(file, csrf, onProgress) {
  return new Promise((resolve) => {
    const boundary = `custos-${Math.random().toString(36).slice(2)}`;
    const body = new Blob([
      `--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, file, `\r\n--${boundary}--\r\n`,
    ]);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/dicom-web/studies");
    xhr.setRequestHeader("content-type", `multipart/related; type="application/dicom"; boundary=${boundary}`);
    xhr.setRequestHeader("accept", "application/dicom+json");
    xhr.setRequestHeader("x-custos-ui", "1");
    if (csrf) xhr.setRequestHeader("x-csrf-token", csrf);
    xhr.upload.onprogress = (e) => onProgress(e.lengthComputable ? e.loaded / e.total : 0);
    xhr.onload = () => resolve([...outcome(xhr.status, xhr.responseText), xhr.status]);
    xhr.onerror = () => resolve(["failed: the connection broke", false]);
    xhr.send(body);
  });
}

/** The upload page in `main`; `csrf` is the session's token; `expired` is
 * called (once) when the session ends mid-upload: what is left is not sent. */
export function uploadPage(main, csrf, expired) {
  const input = el("input", { type: "file", multiple: true, "aria-label": "Choose files" });
  const folder = el("input", { type: "file", webkitdirectory: true, "aria-label": "Choose a folder" });
  const overall = el("progress", { max: 1, value: 0, "aria-label": "Overall progress" });
  const summary = el("span", { class: "hint", id: "upload-summary" });
  const rows = el("tbody", { id: "uploads" });
  const zone = el("div", { class: "dropzone", tabindex: 0 },
    el("p", { text: "Drop DICOM files or folders here, or choose them:" }),
    el("label", {}, "Files ", input), el("label", {}, "A folder ", folder));
  const queue = [];
  let running = 0, done = 0, stored = 0, total = 0;

  function add(files) {
    for (const file of files) {
      const bar = el("progress", { max: 1, value: 0 });
      const result = el("td", { text: "waiting" });
      rows.append(el("tr", { "data-file": file.name }, el("td", { text: file.webkitRelativePath || file.name }),
        el("td", { text: `${Math.ceil(file.size / 1024)} kB` }), el("td", {}, bar), result));
      queue.push({ file, bar, result });
      total += 1;
    }
    pump();
  }
  function pump() {
    while (running < PARALLEL && queue.length) {
      const job = queue.shift();
      running += 1;
      job.result.textContent = "sending";
      send(job.file, csrf, (f) => { job.bar.value = f; }).then(([text, ok, status]) => {
        if (status === 401 && queue.length + running > 0) {
          for (const left of queue.splice(0)) left.result.textContent = "not sent: the session has ended";
          if (expired) { expired(); expired = null; }
        }
        job.bar.value = 1;
        job.result.textContent = text;
        job.result.className = ok ? "ok" : "bad";
        running -= 1;
        done += 1;
        if (ok) stored += 1;
        overall.value = done / total;
        summary.textContent = `${done} of ${total} sent: ${stored} stored, ${done - stored} not`;
        pump();
      });
    }
  }
  input.addEventListener("change", () => add([...input.files]));
  folder.addEventListener("change", () => add([...folder.files]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    add(await droppedFiles(e.dataTransfer.items));
  });
  main.replaceChildren(zone, el("div", { class: "pager" }, overall, summary),
    el("table", {}, el("thead", {}, el("tr", {}, ["File", "Size", "Progress", "Result"].map((h) => el("th", { text: h })))), rows));
}
