// The status page (admin): what is stored and by modality, what arrived in
// the last hour minute by minute, the latest DICOM associations accepted and
// rejected, and `custos doctor`'s findings on request.

import { el } from "/ui/dom.js";

const size = (bytes) => {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
  return `${u ? v.toFixed(1) : v} ${units[u]}`;
};

const REFRESH_MS = 15000;

/** The status page in `main`; `api(path)` is the UI's fetch. It refreshes
 * itself every 15 s while shown, keeping the checks' findings (`checks`). */
export async function statusPage(main, api, checks = null) {
  if (!checks) main.replaceChildren(el("p", { class: "hint", text: "Loading the status…" }));
  const r = await api("/api/status");
  if (!r.ok) {
    main.replaceChildren(el("p", { class: "error", text: `The status could not be read (${r.status}).` }));
    return;
  }
  const s = await r.json();
  const section = (title, ...content) => el("section", { class: "admin" }, el("h2", { text: title }), ...content);
  const table = (headers, rows) => el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))), el("tbody", {}, rows));
  const a = s.archive;

  const archive = section("Archive",
    el("p", { "data-figure": "archive", text: `${a.patients} patients, ${a.studies} studies, ${a.series} series, ${a.instances} instances, ${size(a.stored_bytes)} stored` }),
    table(["Modality", "Instances"], s.by_modality.map((m) => el("tr", {},
      el("td", { text: m.modality || "(none)" }), el("td", { text: String(m.instances) })))));

  // Ingest: one bar per minute of the last hour, scaled to the busiest.
  const counts = new Map(s.ingest.per_minute.map((m) => [m.minute, m.instances]));
  const start = new Date(s.ingest.since);
  const minutes = [];
  for (let i = 1; i <= 60; i += 1) {
    const t = new Date(start.getTime() + i * 60000).toISOString().slice(0, 16);
    minutes.push([t, counts.get(t) || 0]);
  }
  const peak = Math.max(1, ...minutes.map(([, n]) => n));
  const bars = el("div", { class: "bars", role: "img", "aria-label": `instances received per minute over the last hour; busiest minute ${peak}` },
    minutes.map(([t, n]) => {
      const bar = el("span", { title: `${t.slice(11)} UTC: ${n}` });
      bar.style.height = `${Math.round((100 * n) / peak)}%`; // CSSOM, allowed by the page's CSP
      return bar;
    }));
  const ingest = section("Ingest, last hour",
    el("p", { "data-figure": "ingest", text: `${s.ingest.last_hour} instances received in the last hour (${(s.ingest.last_hour / 60).toFixed(1)} per minute); busiest minute ${peak === 1 && !s.ingest.last_hour ? 0 : peak}` }),
    bars);

  const associations = section("Recent DICOM associations",
    s.associations.length
      ? table(["Time (UTC)", "Peer", "Source", "", "Detail"], s.associations.map((x) => el("tr", { class: x.accepted ? "" : "rejected" },
        el("td", { text: x.time }), el("td", { text: x.peer || "" }), el("td", { text: x.source || "" }),
        el("td", { class: x.accepted ? "ok" : "bad", text: x.accepted ? "accepted" : "rejected" }),
        el("td", { text: x.detail || "" }))))
      : el("p", { class: "hint", text: "No association yet." }));

  if (!checks) checks = checksSection(api, section, table);
  main.replaceChildren(archive, ingest, associations, checks,
    el("p", { class: "hint", text: `Refreshed every ${REFRESH_MS / 1000} s; last at ${new Date().toLocaleTimeString()}.` }));
  const tick = () => {
    if (!checks.isConnected) return; // another page is shown
    if (document.hidden) setTimeout(tick, REFRESH_MS);
    else statusPage(main, api, checks);
  };
  setTimeout(tick, REFRESH_MS);
}

/** `custos doctor`'s findings, on request. */
function checksSection(api, section, table) {
  const findings = el("div", { role: "status" });
  const run = el("button", { type: "button", text: "Run the checks (custos doctor)", on: { click: async () => {
    findings.replaceChildren(el("p", { class: "hint", text: "Checking…" }));
    const c = await api("/api/status/checks");
    if (!c.ok) { findings.replaceChildren(el("p", { class: "error", text: `The checks could not run (${c.status}).` })); return; }
    const d = await c.json();
    const disk = d.disk_free_percent === null || d.disk_free_percent === undefined ? "" : `Data disk: ${d.disk_free_percent}% free. `;
    findings.replaceChildren(
      el("p", { "data-figure": "checks", text: `${disk}${d.findings.length ? `${d.findings.length} finding${d.findings.length === 1 ? "" : "s"}.` : "Nothing to report."}` }),
      d.findings.length ? table(["Severity", "Finding", "Evidence", "Fix"], d.findings.map((f) => el("tr", { "data-finding": f.id },
        el("td", { class: f.severity === "high" || f.severity === "critical" ? "bad" : "", text: f.severity }),
        el("td", { text: f.title }), el("td", { text: f.evidence }), el("td", { text: f.fix })))) : null);
  } } });
  return section("Checks", run, findings);
}
