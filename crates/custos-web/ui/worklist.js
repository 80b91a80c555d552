// The modality worklist (the `worklist` right): what is scheduled on a day,
// with each step's status as the modalities report it (MPPS), scheduling a
// step by hand when no RIS does, and removing one. Through the same API a
// RIS uses (`/api/worklist`, items as DICOM JSON).

import { el, refused, ymd } from "/ui/dom.js";

const MODALITIES = ["CT", "MR", "CR", "DX", "US", "MG", "NM", "PT", "XA", "RF", "OT"];


const first = (obj, tag) => {
  const v = obj && obj[tag] && obj[tag].Value && obj[tag].Value[0];
  if (v && typeof v === "object") return (v.Alphabetic || "").replaceAll("^", " ").trim();
  return v === undefined || v === null ? "" : String(v);
};
const step = (item) => (item["00400100"] && item["00400100"].Value && item["00400100"].Value[0]) || {};
const dashed = (d) => (/^\d{8}$/.test(d) ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d);
const clock = (t) => (/^\d{4}/.test(t) ? `${t.slice(0, 2)}:${t.slice(2, 4)}` : t);

/** A new Study Instance UID from 128 random bits (PS3.5 B.2: 2.25.<integer>;
 * getRandomValues, unlike randomUUID, works over plain HTTP too). */
function newUid() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40; // a version 4 UUID, as B.2 asks
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `2.25.${BigInt(`0x${hex}`).toString()}`;
}

/** The item a scheduling form describes, as DICOM JSON (PS3.4 K.6). */
function itemOf(f) {
  const text = (vr, v) => (v ? { vr, Value: [v] } : { vr });
  const name = f.name.trim() ? { vr: "PN", Value: [{ Alphabetic: f.name.trim() }] } : { vr: "PN" };
  return {
    "00080050": text("SH", f.accession.trim()),
    "00100010": name,
    "00100020": text("LO", f.patientId.trim()),
    "00100030": text("DA", f.birthDate.replaceAll("-", "")),
    "00100040": text("CS", f.sex),
    "0020000D": text("UI", newUid()),
    "00321060": text("LO", f.procedure.trim()),
    "00400100": { vr: "SQ", Value: [{
      "00080060": text("CS", f.modality),
      "00400001": text("AE", f.station.trim()),
      "00400002": text("DA", f.date.replaceAll("-", "")),
      "00400003": text("TM", f.time.replaceAll(":", "")),
      "00400007": text("LO", f.procedure.trim()),
      "00400009": text("SH", f.accession.trim() || "1"),
      "00400020": text("CS", "SCHEDULED"),
    }] },
    "00401001": text("SH", f.accession.trim() || "1"),
  };
}

/** The worklist page in `main` for the day `day` (YYYYMMDD, today by default). */
export async function worklistPage(main, api, day = ymd(new Date())) {
  const message = el("p", { class: "error", role: "status" });
  const r = await api(`/api/worklist?from=${day}&to=${day}`);
  if (!r.ok) {
    main.replaceChildren(el("p", { class: "error", text: await refused(r) }));
    return;
  }
  const { items } = await r.json();
  const reload = (d = day) => worklistPage(main, api, d);
  const dayInput = el("input", { type: "date", name: "worklist-day", value: dashed(day), "aria-label": "day",
    on: { change: () => { if (dayInput.value) reload(dayInput.value.replaceAll("-", "")); } } });
  const button = (text, onClick, cls) => el("button", { type: "button", text, class: cls, on: { click: onClick } });
  const sorted = [...items].sort((a, b) => (first(step(a.item), "00400003") < first(step(b.item), "00400003") ? -1 : 1));
  const rows = sorted.map(({ id, item }) => {
    const s = step(item);
    return el("tr", { "data-worklist": id },
      el("td", { text: clock(first(s, "00400003")) }),
      el("td", { text: first(item, "00100010") || "(no name)" }),
      el("td", { text: first(item, "00100020") }),
      el("td", { text: first(item, "00080050") }),
      el("td", { text: first(s, "00080060") }),
      el("td", { text: first(s, "00400001") }),
      el("td", { text: first(s, "00400007") || first(item, "00321060") }),
      el("td", { text: first(s, "00400020") || "SCHEDULED" }),
      el("td", {}, button("Remove", async () => {
        const who = first(item, "00100010") || first(item, "00100020");
        if (!confirm(`Remove the ${first(s, "00080060")} step of ${who} from the worklist?`)) return;
        const r = await api(`/api/worklist/${id}`, { method: "DELETE" });
        if (r.ok) reload();
        else message.textContent = await refused(r);
      }, "danger")));
  });

  // Scheduling by hand (a RIS posts the same item).
  const input = (name, attrs = {}) => el("input", { name: `wl-${name}`, ...attrs });
  const f = {
    name: input("name", { placeholder: "FAMILY^Given", autocomplete: "off" }),
    patientId: input("patient-id", { required: true, autocomplete: "off" }),
    birthDate: input("birth-date", { type: "date" }),
    sex: el("select", { name: "wl-sex", "aria-label": "sex" }, ["", "F", "M", "O"].map((v) => el("option", { value: v, text: v || "—" }))),
    accession: input("accession", { autocomplete: "off" }),
    modality: el("select", { name: "wl-modality", "aria-label": "modality" }, MODALITIES.map((m) => el("option", { value: m, text: m }))),
    station: input("station", { placeholder: "AE title", class: "short", maxlength: 16 }),
    date: input("date", { type: "date", required: true, value: dashed(day) }),
    time: input("time", { type: "time", value: "08:00" }),
    procedure: input("procedure", { autocomplete: "off" }),
  };
  const label = (text, field) => el("label", {}, text, field);
  const form = el("form", { class: "filters", on: { submit: async (e) => {
    e.preventDefault();
    const values = Object.fromEntries(Object.entries(f).map(([k, v]) => [k, v.value]));
    try {
      const r = await api("/api/worklist", {
        method: "POST",
        headers: { "content-type": "application/dicom+json" },
        body: JSON.stringify(itemOf(values)),
      });
      if (r.ok) reload(values.date.replaceAll("-", ""));
      else message.textContent = await refused(r);
    } catch (err) {
      if (err.message !== "not logged in") message.textContent = `Not scheduled: ${err.message}`;
    }
  } } },
  label("Patient name", f.name), label("Patient ID", f.patientId), label("Birth date", f.birthDate),
  label("Sex", f.sex), label("Accession", f.accession), label("Modality", f.modality),
  label("Station AE", f.station), label("Date", f.date), label("Time", f.time),
  label("Procedure", f.procedure), el("button", { type: "submit", text: "Schedule" }));

  main.replaceChildren(
    el("section", { class: "admin" },
      el("h2", { text: "Modality worklist" }),
      el("div", { class: "filters" }, el("label", {}, "Day", dayInput),
        button("Previous day", () => { const d = new Date(`${dashed(day)}T12:00`); d.setDate(d.getDate() - 1); reload(ymd(d)); }),
        button("Next day", () => { const d = new Date(`${dashed(day)}T12:00`); d.setDate(d.getDate() + 1); reload(ymd(d)); })),
      message,
      rows.length
        ? el("table", { class: "worklist" },
          el("thead", {}, el("tr", {}, ["Time", "Patient", "Patient ID", "Accession", "Modality", "Station", "Procedure", "Status", ""]
            .map((h) => el("th", { class: "static", text: h })))),
          el("tbody", {}, rows))
        : el("p", { class: "hint", text: `Nothing scheduled on ${dashed(day)}.` }),
      items.length >= 1000 ? el("p", { class: "hint", text: "The first 1,000 steps of the day are shown." }) : null),
    el("section", { class: "admin" }, el("h2", { text: "Schedule a procedure step" }),
      el("p", { class: "hint", text: "Modalities find it by C-FIND on the worklist; its status follows what they report (MPPS)." }),
      form));
}
