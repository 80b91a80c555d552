// The audit trail for auditors: the newest records, filtered on the server
// by user, patient ID, event and day (UTC), older pages on request, and the
// chain's verification (what `custos audit verify` says).

import { el } from "/ui/dom.js";

// DICOM audit outcomes (PS3.15 A.5.3.1.4) and the events Custos records.
const OUTCOMES = { 0: "success", 4: "minor failure", 8: "serious failure", 12: "major failure" };
const EVENTS = [
  ["", "any event"], ["110100", "Application Activity"], ["110101", "Audit Log Used"],
  ["110103", "DICOM Instances Accessed"], ["110104", "DICOM Instances Transferred"],
  ["110105", "DICOM Study Deleted"], ["110106", "Export"], ["110107", "Import"],
  ["110109", "Order Record"], ["110110", "Patient Record"], ["110111", "Procedure Record"], ["110112", "Query"],
  ["110113", "Security Alert"], ["110114", "User Authentication"],
];
const PAGE = 200;

/** The audit page in `main`; `api(path)` is the UI's fetch. */
export async function auditPage(main, api) {
  const field = (name, label, attrs = {}) => el("label", {}, label, el("input", { name, autocomplete: "off", ...attrs }));
  const user = field("audit-user", "User");
  const patient = field("audit-patient", "Patient ID");
  const from = field("audit-from", "From (UTC)", { type: "date" });
  const to = field("audit-to", "To (UTC)", { type: "date" });
  const event = el("label", {}, "Event", el("select", { name: "audit-event" },
    EVENTS.map(([code, name]) => el("option", { value: code, text: name }))));
  const verdict = el("p", { class: "hint", role: "status" });
  const status = el("span", { class: "hint", role: "status" });
  const tbody = el("tbody");
  const older = el("button", { type: "button", text: "Older records", disabled: true });
  let oldest = null;

  const query = () => {
    const q = new URLSearchParams({ last: String(PAGE) });
    const set = (key, input) => { const v = input.querySelector("input, select").value.trim(); if (v) q.set(key, v); };
    set("user", user); set("patient", patient); set("event", event); set("from", from); set("to", to);
    return q;
  };
  const row = (r) => {
    const rec = r.record || {};
    return el("tr", { "data-seq": String(r.seq) },
      el("td", { text: String(r.seq) }), el("td", { text: r.time }),
      el("td", { text: (rec.event && rec.event.display) || "" }),
      el("td", { text: OUTCOMES[rec.outcome] ?? String(rec.outcome ?? "") }),
      el("td", { text: rec.user || "" }), el("td", { text: rec.peer || "" }), el("td", { text: rec.source || "" }),
      el("td", { text: (rec.patients || []).join(", ") }),
      el("td", { class: "uids", text: (rec.studies || []).join(", ") }),
      el("td", { text: rec.detail || "" }));
  };
  async function load(append) {
    const q = query();
    if (append && oldest !== null) q.set("before", String(oldest));
    status.textContent = "Loading…";
    const r = await api(`/api/audit?${q}`);
    if (!r.ok) {
      status.textContent = r.status === 400 ? `Refused: ${(await r.json()).error}` : `Failed (${r.status})`;
      return;
    }
    const records = (await r.json()).reverse();
    if (!append) tbody.replaceChildren();
    tbody.append(...records.map(row));
    if (records.length) oldest = records[records.length - 1].seq;
    older.disabled = records.length < PAGE;
    status.textContent = tbody.children.length
      ? `${tbody.children.length} records, newest first${older.disabled ? "" : " (more are older)"}`
      : "No records match.";
  }
  older.addEventListener("click", () => load(true));
  const verify = el("button", { type: "button", text: "Verify the chain", on: { click: async () => {
    verdict.textContent = "Verifying every record…";
    const r = await api("/api/audit/verify");
    const v = r.ok ? await r.json() : null;
    if (!v) verdict.textContent = `Verification failed (${r.status}).`;
    else if (v.verified) verdict.textContent = `Verified: ${v.records} records, unbroken up to record ${v.head}.`;
    else verdict.textContent = `NOT VERIFIED: ${v.broken}`;
    verdict.className = v && v.verified ? "ok" : "error";
  } } });
  main.replaceChildren(
    el("form", { class: "filters", role: "search", on: { submit: (e) => { e.preventDefault(); oldest = null; load(false); } } },
      user, patient, event, from, to, el("button", { type: "submit", text: "Search" }), verify),
    verdict,
    el("table", { class: "audit" },
      el("thead", {}, el("tr", {}, ["#", "Time (UTC)", "Event", "Outcome", "User", "Peer", "Source", "Patients", "Studies", "Detail"]
        .map((h) => el("th", { text: h })))),
      tbody),
    el("div", { class: "pager" }, older, status));
  await load(false);
}
