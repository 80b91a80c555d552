// Custos's browser UI: login, study list, study page; the routes to the
// upload, administration, jobs, status, worklist, audit and password pages
// (their own modules).
// Patient data is only ever put into the page with textContent (never as
// HTML), and never into the URL: the location carries UIDs only.

import { el, ymd } from "/ui/dom.js";
import { openViewer } from "/ui/viewer.js";
import { uploadPage } from "/ui/upload.js";
import { adminPage } from "/ui/admin.js";
import { auditPage } from "/ui/audit.js";
import { statusPage } from "/ui/status.js";
import { jobsPage, sendControl, protectControl } from "/ui/jobs.js";
import { passwordPage } from "/ui/account.js";
import { worklistPage } from "/ui/worklist.js";

const state = { me: null };
const main = document.getElementById("main");

// ---- HTTP ----

export async function api(path, options = {}) {
  const headers = { "x-custos-ui": "1", ...(options.headers || {}) };
  const method = options.method || "GET";
  if (method !== "GET" && state.me && state.me.csrf) headers["x-csrf-token"] = state.me.csrf;
  const response = await fetch(path, { ...options, method, headers, credentials: "same-origin" });
  if (response.status === 401 && path !== "/api/login") {
    state.me = null;
    showLogin("Your session has ended; log in again.");
    throw new Error("not logged in");
  }
  return response;
}

async function json(path) {
  const r = await api(path, { headers: { accept: "application/dicom+json, application/json" } });
  if (!r.ok) {
    // The server's reason, not its JSON.
    const text = await r.text();
    let why = text.slice(0, 200);
    try { why = JSON.parse(text).error || why; } catch (_) { /* not JSON */ }
    throw new Error(`${r.status}: ${why}`);
  }
  return r.status === 204 ? [] : r.json();
}

// ---- DICOM JSON ----

/** The first value of DICOM JSON attribute `tag`, as text. */
export function value(obj, tag) {
  const a = obj && obj[tag];
  if (!a || !a.Value || !a.Value.length) return "";
  const v = a.Value[0];
  if (v && typeof v === "object") return (v.Alphabetic || "").replaceAll("^", " ").trim();
  return String(v);
}

export function values(obj, tag) {
  const a = obj && obj[tag];
  return a && a.Value ? a.Value.map(String) : [];
}

function date(d) {
  return /^\d{8}$/.test(d) ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d;
}


function may(right) {
  return !!state.me && state.me.rights.includes(right);
}

// ---- login ----

function showLogin(message = "") {
  document.getElementById("bar").hidden = true;
  const error = el("p", { class: "error", role: "alert", text: message });
  const user = el("input", { name: "user", autocomplete: "username", required: true, "aria-label": "User" });
  const password = el("input", {
    name: "password", type: "password", autocomplete: "current-password", required: true, "aria-label": "Password",
  });
  const form = el("form", { class: "login", on: { submit: async (e) => {
    e.preventDefault();
    error.textContent = "";
    const r = await api("/api/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user: user.value, password: password.value }),
    });
    if (r.ok) {
      state.me = await r.json();
      password.value = "";
      // Where the user was going (a study's link, a viewer link) is kept.
      route();
    } else if (r.status === 429) {
      error.textContent = "Too many failed attempts; wait a while and try again.";
    } else {
      error.textContent = "Wrong user name or password.";
    }
  } } },
  el("h1", { text: "Custos" }),
  el("label", {}, "User", user),
  el("label", {}, "Password", password),
  el("button", { type: "submit", text: "Log in" }),
  error);
  main.replaceChildren(form);
  user.focus();
}

async function logout() {
  try { await api("/api/session", { method: "DELETE" }); } catch (_) { /* ended already */ }
  state.me = null;
  history.replaceState(null, "", "/");
  showLogin("You are logged out.");
}

function showBar() {
  const bar = document.getElementById("bar");
  const nav = document.getElementById("nav");
  const links = [];
  if (may("find")) links.push(el("a", { href: "#/", text: "Studies" }));
  if (may("store")) links.push(el("a", { href: "#/upload", text: "Upload" }));
  if (may("admin")) links.push(el("a", { href: "#/admin", text: "Administration" }), el("a", { href: "#/jobs", text: "Jobs" }), el("a", { href: "#/status", text: "Status" }));
  if (may("worklist")) links.push(el("a", { href: "#/worklist", text: "Worklist" }));
  if (may("audit")) links.push(el("a", { href: "#/audit", text: "Audit trail" }));
  nav.replaceChildren(...links);
  document.getElementById("who").replaceChildren(`${state.me.user} (${state.me.role}) `,
    el("a", { href: "#/password", id: "own-password", text: "Password" }));
  bar.hidden = false;
}

// ---- study list ----

const INCLUDE = ["00100030", "00100040", "00080061", "00081030", "00080050", "00201206", "00201208",
  "00100021", "00200010", "00080030", "00080090"];
// `selected`: studies ticked for one download, kept across pages and searches.
const list = { filters: {}, offset: 0, sort: null, rows: [], selected: new Set() };
// Most studies one download takes (the server's limit too).
const MOST_SELECTED = 100;
const PAGE = 50;

function studyQuery() {
  const q = new URLSearchParams();
  const f = list.filters;
  const wild = (v) => (/[*?]/.test(v) ? v : `${v}*`);
  // A name as the list shows it ("Doe John") or as typed ("doe, j"): its
  // parts in order, whatever separates them (stored as DOE^JOHN).
  if (f.name) q.set("PatientName", wild(/[*?]/.test(f.name) ? f.name : f.name.split(/[\s,^]+/).filter(Boolean).join("*")));
  if (f.id) q.set("PatientID", wild(f.id));
  if (f.accession) q.set("AccessionNumber", wild(f.accession));
  // Descriptions: anywhere in the text, in any case (the server matches
  // descriptions case-insensitively).
  if (f.description) q.set("StudyDescription", /[*?]/.test(f.description) ? f.description : `*${f.description}*`);
  if (f.modality) q.set("ModalitiesInStudy", f.modality.toUpperCase());
  if (f.from || f.to) q.set("StudyDate", `${f.from || ""}-${f.to || ""}`);
  // Sorted by the server across all pages; newest studies first by default.
  q.set("orderby", list.sort ? `${list.sort[1] < 0 ? "-" : ""}${list.sort[0]}` : "-StudyDate,-StudyTime");
  for (const t of INCLUDE) q.append("includefield", t);
  q.set("limit", String(PAGE + 1));
  q.set("offset", String(list.offset));
  return q;
}

// [label, tag, sort key (stored attributes only; counts are computed)]
const COLUMNS = [
  ["Patient", "00100010", "PatientName"], ["Patient ID", "00100020", "PatientID"],
  ["Birth date", "00100030", "PatientBirthDate"], ["Sex", "00100040", "PatientSex"],
  ["Study date", "00080020", "StudyDate"], ["Modalities", "00080061"], ["Description", "00081030", "StudyDescription"],
  ["Accession", "00080050", "AccessionNumber"], ["Series", "00201206"], ["Instances", "00201208"],
];

function cell(study, tag) {
  if (tag === "00080061") return values(study, tag).join(", ");
  const v = value(study, tag);
  return tag === "00100030" || tag === "00080020" ? date(v) : v;
}

let searchTimer = null;
let searchSerial = 0;

async function search() {
  const serial = ++searchSerial;
  const status = document.getElementById("list-status");
  if (status) status.textContent = "Searching…";
  try {
    const rows = await json(`/dicom-web/studies?${studyQuery()}`);
    if (serial !== searchSerial) return; // a newer search is under way
    list.rows = rows;
    drawRows();
  } catch (e) {
    if (status && serial === searchSerial) status.textContent = `Search failed: ${e.message}`;
  }
}

function drawRows() {
  const tbody = document.getElementById("studies");
  if (!tbody) return;
  const more = list.rows.length > PAGE;
  const rows = list.rows.slice(0, PAGE);
  tbody.replaceChildren(...rows.map((s) => {
    const uid = value(s, "0020000D");
    const open = () => { location.hash = `#/study/${uid}`; };
    // The name is a link too: it opens in a new tab, and screen readers
    // announce the row's way in.
    const tick = may("get") ? [el("td", { class: "pick" }, el("input", {
      type: "checkbox", "aria-label": `Select ${value(s, "00100010") || "(no name)"} ${date(value(s, "00080020"))}`,
      checked: list.selected.has(uid) || undefined,
      on: { change: (e) => { if (e.target.checked) list.selected.add(uid); else list.selected.delete(uid); drawSelection(); } },
    }))] : [];
    return el("tr", { tabindex: 0, "data-study": uid, on: { click: (e) => { if (!e.target.closest("a, input, td.pick")) open(); }, keydown: (e) => { if (e.key === "Enter" && e.target === e.currentTarget) open(); } } },
      ...tick,
      COLUMNS.map(([, tag], i) => el("td", {}, i === 0
        ? el("a", { href: `#/study/${uid}`, text: cell(s, tag) || "(no name)", tabindex: -1 })
        : cell(s, tag))));
  }));
  drawSelection();
  const from = rows.length ? list.offset + 1 : 0;
  document.getElementById("list-status").textContent =
    rows.length ? `Studies ${from}–${list.offset + rows.length}${more ? " (more)" : ""}` : "No studies match.";
  document.getElementById("prev").disabled = list.offset === 0;
  document.getElementById("next").disabled = !more;
}

// The selection's download link: one ZIP with a DICOMDIR for the ticked
// studies, at most MOST_SELECTED.
function drawSelection() {
  const box = document.getElementById("selection");
  if (!box) return;
  const n = list.selected.size;
  box.hidden = n === 0;
  const link = box.querySelector("a");
  const hint = box.querySelector(".hint");
  link.textContent = `Download ${n} selected stud${n === 1 ? "y" : "ies"} (ZIP)`;
  const tooMany = n > MOST_SELECTED;
  if (tooMany) link.removeAttribute("href");
  else link.href = `/api/download.zip?studies=${[...list.selected].map(encodeURIComponent).join(",")}`;
  link.setAttribute("aria-disabled", tooMany ? "true" : "false");
  hint.textContent = tooMany ? `At most ${MOST_SELECTED} studies per download.` : "";
}

function studyList() {
  const input = (key, label, cls) => el("label", {}, label, el("input", {
    name: key, class: cls, value: list.filters[key] || "", autocomplete: "off",
    on: { input: (e) => {
      list.filters[key] = e.target.value.trim();
      list.offset = 0;
      clearTimeout(searchTimer);
      searchTimer = setTimeout(search, 250);
    } },
  }));
  const dateInput = (key, label) => el("label", {}, label, el("input", {
    type: "date", name: key, value: list.filters[key] ? date(list.filters[key]) : "",
    on: { change: (e) => { list.filters[key] = e.target.value.replaceAll("-", ""); list.offset = 0; search(); } },
  }));
  const preset = (label, days) => el("button", { type: "button", text: label, on: { click: () => {
    const today = new Date();
    list.filters.to = days === null ? "" : ymd(today);
    const from = new Date(today);
    if (days !== null) from.setDate(from.getDate() - days);
    list.filters.from = days === null ? "" : ymd(from);
    list.offset = 0;
    main.replaceChildren(...studyList());
    search();
  } } });
  const sortBy = (key) => {
    list.sort = list.sort && list.sort[0] === key ? [key, -list.sort[1]] : [key, 1];
    list.offset = 0;
    main.replaceChildren(...studyList());
    search();
  };
  const arrow = (key) => {
    if (list.sort) return list.sort[0] === key ? (list.sort[1] < 0 ? " ▼" : " ▲") : "";
    return key === "StudyDate" ? " ▼" : "";
  };
  const pickHeader = may("get") ? [el("th", { class: "static pick" }, el("span", { class: "sr-only", text: "Select" }))] : [];
  const header = el("tr", {}, ...pickHeader, COLUMNS.map(([label, , key]) => (key
    ? el("th", {
      text: `${label}${arrow(key)}`, tabindex: 0, "data-sort": key, "aria-sort": arrow(key) ? (arrow(key).includes("▼") ? "descending" : "ascending") : undefined,
      on: { click: () => sortBy(key), keydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(key); } } },
    })
    : el("th", { text: label, class: "static" }))));
  return [
    el("form", { class: "filters", role: "search", on: { submit: (e) => { e.preventDefault(); search(); } } },
      input("name", "Patient name"), input("id", "Patient ID"), input("accession", "Accession"),
      input("description", "Description"), input("modality", "Modality", "short"),
      dateInput("from", "From"), dateInput("to", "To"),
      preset("Today", 0), preset("Last 7 days", 7), preset("Any date", null)),
    el("div", { id: "selection", class: "selection", hidden: true },
      el("a", { download: "" }),
      el("button", { type: "button", text: "Clear selection", on: { click: () => { list.selected.clear(); drawRows(); } } }),
      el("span", { class: "hint" })),
    el("table", {}, el("thead", {}, header), el("tbody", { id: "studies" })),
    el("div", { class: "pager" },
      el("button", { id: "prev", type: "button", text: "Previous", on: { click: () => { list.offset = Math.max(0, list.offset - PAGE); search(); } } }),
      el("button", { id: "next", type: "button", text: "Next", on: { click: () => { list.offset += PAGE; search(); } } }),
      el("span", { id: "list-status" })),
  ];
}

// ---- study page ----

// Study corrections (admin): the patient and study attributes the server
// rewrites into every stored file; the page reloads with the new values.
function correctForm(uid, study) {
  // One form at a time: the button opens it, or closes it again.
  const open = main.querySelector("form.correct");
  if (open) { open.remove(); return; }
  // Every attribute the server corrects (archive::corrections::CORRECTABLE).
  const fields = [["PatientID", "00100020"], ["PatientName", "00100010"], ["PatientBirthDate", "00100030"],
    ["PatientSex", "00100040"], ["IssuerOfPatientID", "00100021"], ["AccessionNumber", "00080050"],
    ["StudyID", "00200010"], ["StudyDescription", "00081030"], ["StudyDate", "00080020"], ["StudyTime", "00080030"],
    ["ReferringPhysicianName", "00080090"]];
  // As stored (a person name with its ^ separators), to edit and compare.
  const raw = (tag) => { const v = study[tag] && study[tag].Value && study[tag].Value[0]; return v && typeof v === "object" ? v.Alphabetic || "" : v ? String(v) : ""; };
  const inputs = fields.map(([k, tag]) => el("input", { name: `correct-${k}`, value: raw(tag), "aria-label": k }));
  const status = el("p", { class: "error", role: "status" });
  const form = el("form", { class: "filters correct", on: { submit: async (e) => {
    e.preventDefault();
    const attributes = {};
    fields.forEach(([k, tag], i) => { if (inputs[i].value !== raw(tag)) attributes[k] = inputs[i].value; });
    if (!Object.keys(attributes).length) { status.textContent = "Nothing changed."; return; }
    const r = await api(`/api/studies/${encodeURIComponent(uid)}/correct`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ attributes }),
    });
    if (r.ok) studyPage(uid);
    else status.textContent = `Refused: ${(await r.json().catch(() => ({}))).error || r.status}`;
  } } }, fields.map(([k], i) => el("label", {}, k, inputs[i])), el("button", { type: "submit", text: "Rewrite the study" }), status);
  main.prepend(form);
}

// De-identification (PS3.15 Basic Profile and options): a ZIP to download,
// or, with the store right, a copy kept in the archive as a new study.
function deidentifyForm(uid) {
  const open = main.querySelector("form.deidentify");
  if (open) { open.remove(); return; }
  const options = [["retain-dates", "Keep dates, shifted per patient"], ["retain-patient-characteristics", "Keep sex, age, size, weight"], ["clean-descriptors", "Keep descriptions, cleaned of names and IDs"]];
  const boxes = options.map(([name]) => el("input", { type: "checkbox", name: `deid-${name}` }));
  const project = el("input", { name: "deid-project", value: "default", "aria-label": "Project" });
  const description = el("input", { name: "deid-description", "aria-label": "New study description" });
  const force = el("input", { type: "checkbox", name: "deid-force" });
  const status = el("p", { role: "status" });
  const params = () => {
    const p = { options: options.filter((_, i) => boxes[i].checked).map(([n]) => n).join(","), project: project.value };
    if (description.value) p.study_description = description.value;
    if (force.checked) p.force = true;
    return p;
  };
  const link = el("a", { download: "", text: "Download de-identified ZIP" });
  const relink = () => { link.href = `/api/studies/${encodeURIComponent(uid)}/deidentified.zip?${new URLSearchParams(params())}`; };
  relink();
  const keep = el("button", { type: "button", text: "Keep a copy in the archive", on: { click: async () => {
    status.textContent = "De-identifying…";
    const r = await api(`/api/studies/${encodeURIComponent(uid)}/deidentify`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(params()),
    });
    const body = await r.json().catch(() => ({}));
    if (r.ok) status.replaceChildren(`Kept as a new study of patient ${body.patient_id} (${body.instances} instances): `, el("a", { href: `#/study/${encodeURIComponent(body.study)}`, "data-deidentified": body.study, text: "open it" }));
    else status.textContent = `Refused: ${body.error || r.status}`;
  } } });
  const form = el("form", { class: "filters deidentify", on: { change: relink, input: relink, submit: (e) => e.preventDefault() } },
    ...options.map(([, label], i) => el("label", {}, boxes[i], label)),
    el("label", {}, "Project", project), el("label", {}, "New description", description),
    el("label", {}, force, "Despite burned-in annotation"),
    link, may("store") ? keep : null, status);
  main.prepend(form);
}

async function studyPage(uid) {
  main.replaceChildren(el("p", { class: "hint", text: "Loading the study…" }));
  const [studies, series] = await Promise.all([
    json(`/dicom-web/studies?StudyInstanceUID=${encodeURIComponent(uid)}&${INCLUDE.map((t) => `includefield=${t}`).join("&")}`),
    json(`/dicom-web/studies/${encodeURIComponent(uid)}/series?includefield=0008103E&includefield=00080021`),
  ]);
  const study = studies[0];
  if (!study) {
    main.replaceChildren(el("p", { text: "This study is not in the archive." }), el("a", { href: "#/", text: "Back to the list" }));
    return;
  }
  series.sort((a, b) => Number(value(a, "00200011")) - Number(value(b, "00200011")));
  const actions = [];
  if (state.me.viewer) {
    // A tab of its own: the study page stays where it was.
    actions.push(el("a", { href: `/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(uid)}`, target: "_blank", rel: "noopener", text: "Open in OHIF" }));
  } else if (may("admin")) {
    actions.push(el("span", { class: "hint", text: "OHIF is not installed (custos viewer install); the quick viewer is shown." }));
  }
  actions.push(el("a", { href: `/api/studies/${encodeURIComponent(uid)}/download.zip`, download: "", text: "Download ZIP" }));
  if (may("admin")) {
    const send = await sendControl(api, uid);
    if (send) actions.push(send);
    actions.push(el("button", { type: "button", text: "Correct…", on: { click: () => correctForm(uid, study) } }));
  }
  if (may("deidentify")) {
    actions.push(el("button", { type: "button", text: "De-identify…", on: { click: () => deidentifyForm(uid) } }));
  }
  if (may("delete")) actions.push(await protectControl(api, uid));
  // The series shown in the viewer, for "Download series" and "Delete series".
  let current = null;
  const seriesZip = el("a", { download: "", text: "Download series ZIP" });
  if (series.length > 1) actions.push(seriesZip);
  if (may("delete") && series.length > 1) {
    actions.push(el("button", { type: "button", class: "danger", text: "Delete series", on: { click: async () => {
      const s = series.find((x) => value(x, "0020000E") === current);
      if (!s) return;
      const label = `${value(s, "00080060")} #${value(s, "00200011")} ${value(s, "0008103E")}`.trim();
      if (!confirm(`Delete the series ${label} from the archive? This cannot be undone.`)) return;
      const r = await api(`/api/studies/${encodeURIComponent(uid)}/series/${encodeURIComponent(current)}`, { method: "DELETE" });
      if (r.ok) { instanceCache.clear(); studyPage(uid); }
      else alert(`The series was not deleted (${r.status}).`);
    } } }));
  }
  if (may("delete")) {
    actions.push(el("button", { type: "button", class: "danger", text: "Delete study", on: { click: async () => {
      if (!confirm("Delete this study from the archive? This cannot be undone.")) return;
      const r = await api(`/api/studies/${encodeURIComponent(uid)}`, { method: "DELETE" });
      if (r.ok) location.hash = "#/";
      else alert(`The study was not deleted (${r.status}).`);
    } } }));
  }
  const header = el("div", { class: "patient" },
    el("h2", { text: value(study, "00100010") || "(no name)" }),
    el("span", { text: `ID ${value(study, "00100020")}` }),
    el("span", { text: `born ${date(value(study, "00100030"))} ${value(study, "00100040")}` }),
    el("span", { text: `${date(value(study, "00080020"))} · ${value(study, "00081030")}` }),
    el("span", { text: `accession ${value(study, "00080050")}` }),
    ...actions);
  const viewerBox = el("section", { class: "viewer", "aria-label": "Viewer" });
  const seriesBox = el("nav", { class: "series", "aria-label": "Series" });
  main.replaceChildren(header, el("div", { class: "study" }, seriesBox, viewerBox));
  const buttons = [];
  for (const s of series) {
    const se = value(s, "0020000E");
    const img = el("img", { alt: "", loading: "lazy" });
    const button = el("button", { type: "button", "data-series": se, on: { click: () => select(se, button) } },
      img,
      el("span", { text: `${value(s, "00080060")} #${value(s, "00200011")}\n${value(s, "0008103E")}\n${value(s, "00201209")} images` }));
    buttons.push(button);
    seriesBox.append(button);
    instancesOf(uid, se).then((list) => {
      if (list.length) img.src = `${instanceUrl(uid, se, list[Math.floor(list.length / 2)])}/thumbnail?viewport=64,64`;
    }).catch(() => {});
  }
  async function select(se, button) {
    current = se;
    seriesZip.href = `/api/studies/${encodeURIComponent(uid)}/series/${encodeURIComponent(se)}/download.zip`;
    for (const b of buttons) b.classList.toggle("active", b === button);
    const list = await instancesOf(uid, se);
    openViewer(viewerBox, list.map((i) => ({
      url: instanceUrl(uid, se, i),
      number: value(i, "00200013"),
      frames: Number(value(i, "00280008")) || 1,
    })));
  }
  if (buttons.length) select(value(series[0], "0020000E"), buttons[0]);
}

const instanceCache = new Map();
function instancesOf(study, series) {
  const key = `${study}/${series}`;
  if (!instanceCache.has(key)) {
    instanceCache.set(key, json(`/dicom-web/studies/${encodeURIComponent(study)}/series/${encodeURIComponent(series)}/instances?includefield=00200013&includefield=00280008&limit=10000`)
      .then((list) => list.sort((a, b) => Number(value(a, "00200013")) - Number(value(b, "00200013")))));
  }
  return instanceCache.get(key);
}

function instanceUrl(study, series, instance) {
  return `/dicom-web/studies/${encodeURIComponent(study)}/series/${encodeURIComponent(series)}/instances/${encodeURIComponent(value(instance, "00080018"))}`;
}

// ---- routing ----

async function route() {
  if (!state.me) return showLogin();
  showBar();
  const hash = location.hash || "#/";
  // A viewer link that needed a login (the server sent it here): opened
  // now, only ever under /viewer/ of this server.
  const open = hash.match(/^#\/open\?(.*)$/);
  if (open) {
    const to = new URLSearchParams(open[1]).get("to") || "";
    if (/^\/viewer\/[^\\]*$/.test(to) && !to.includes("//")) {
      location.replace(to);
      return;
    }
  }
  try {
    const study = hash.match(/^#\/study\/([0-9.]+)$/);
    if (study && may("get")) await studyPage(study[1]);
    else if (hash === "#/audit" && may("audit")) await auditPage(main, api);
    else if (hash === "#/status" && may("admin")) await statusPage(main, api);
    else if (hash === "#/upload" && may("store")) {
      uploadPage(main, state.me.csrf, () => {
        state.me = null;
        showLogin("Your session has ended; log in again to upload the rest.");
      });
    }
    else if (hash === "#/admin" && may("admin")) await adminPage(main, api, state.me);
    else if (hash === "#/jobs" && may("admin")) await jobsPage(main, api);
    else if (hash === "#/worklist" && may("worklist")) await worklistPage(main, api);
    else if (hash === "#/password") {
      passwordPage(main, api, state.me, (message) => {
        state.me = null;
        history.replaceState(null, "", "/");
        showLogin(message);
      });
    }
    else if (may("find")) {
      main.replaceChildren(...studyList());
      await search();
    } else if (may("store")) {
      location.hash = "#/upload";
    } else if (may("audit")) {
      location.hash = "#/audit";
    } else {
      main.replaceChildren(el("p", { text: "Your role has nothing to show here." }));
    }
  } catch (e) {
    if (state.me) main.replaceChildren(el("p", { class: "error", text: `Something went wrong: ${e.message}` }));
  }
}

async function boot() {
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  const r = await fetch("/api/session", { headers: { "x-custos-ui": "1" }, credentials: "same-origin" });
  if (r.ok) state.me = await r.json();
  route();
}

boot();
