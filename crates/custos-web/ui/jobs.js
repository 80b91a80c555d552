// Forwarding jobs (admin role): the queue that routing rules and manual
// sends fill, by state, with retry and cancel; and the study page's "Send
// to" and retention protection controls, through the same API as the CLI.

import { el, refused } from "/ui/dom.js";

const STATES = ["all", "pending", "failed", "done", "cancelled"];

const when = (t) => (t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) : "");


const PAGE = 200;

/**
 * The jobs page in `main`, showing jobs in `filter` ("all" or a state),
 * newest first: a page of them, older than job `before` if given.
 */
export async function jobsPage(main, api, filter = "all", before = null) {
  const message = el("p", { class: "error", role: "status" });
  const query = (filter === "all" ? "" : `&state=${filter}`) + (before ? `&before=${before}` : "");
  const r = await api(`/api/jobs?limit=${PAGE}${query}`);
  if (!r.ok) {
    main.replaceChildren(el("p", { class: "error", text: await refused(r) }));
    return;
  }
  const { jobs } = await r.json();
  const reload = (f = filter) => jobsPage(main, api, f, f === filter ? before : null);
  const act = async (job, what) => {
    const r = await api(`/api/jobs/${job.id}/${what}`, { method: "POST" });
    if (r.ok) reload();
    else message.textContent = await refused(r);
  };
  // Every failed job shown, queued again one after another.
  const failed = jobs.filter((j) => j.state === "failed");
  const retryFailed = async () => {
    if (!confirm(`Queue the ${failed.length} failed jobs again?`)) return;
    for (const j of failed) {
      const r = await api(`/api/jobs/${j.id}/retry`, { method: "POST" });
      if (!r.ok) { message.textContent = await refused(r); return; }
    }
    reload();
  };
  const button = (text, onClick, cls) => el("button", { type: "button", text, class: cls, on: { click: onClick } });
  const stateSelect = el("select", { name: "job-state", "aria-label": "state", on: { change: () => reload(stateSelect.value) } },
    STATES.map((s) => el("option", { value: s, text: s, selected: s === filter })));
  const rows = jobs.map((j) => el("tr", { "data-job": j.id, "data-state": j.state },
    el("td", { text: j.id }),
    el("td", { text: j.state }),
    el("td", { text: j.destination }),
    el("td", { text: j.scope === "instance" ? j.uid : `${{ study: "study", commitment: "commitment report", webhook: "webhook delivery" }[j.scope] || j.scope} ${j.uid}` }),
    el("td", { text: j.reason }),
    el("td", { text: j.attempts }),
    el("td", { text: when(j.created) }),
    el("td", { text: j.state === "pending" ? when(j.next_at) : "" }),
    el("td", { text: j.last_error }),
    el("td", {},
      j.state === "failed" || j.state === "cancelled" ? button("Retry", () => act(j, "retry")) : null,
      j.state === "pending" || j.state === "failed" ? button("Cancel", () => act(j, "cancel"), "danger") : null)));
  main.replaceChildren(el("section", { class: "admin" },
    el("h2", { text: "Forwarding jobs" }),
    el("div", { class: "filters" }, el("label", {}, "state ", stateSelect), button("Refresh", () => reload()),
      failed.length ? button(`Retry the ${failed.length} failed shown`, retryFailed) : null),
    message,
    before || jobs.length >= PAGE
      ? el("div", { class: "pager" },
        before ? button("Newest", () => jobsPage(main, api, filter)) : null,
        el("span", { text: jobs.length ? `Jobs ${jobs[0].id} to ${jobs[jobs.length - 1].id}` : "" }),
        jobs.length >= PAGE ? button("Older", () => jobsPage(main, api, filter, jobs[jobs.length - 1].id)) : null)
      : null,
    jobs.length
      ? el("table", { class: "jobs" },
        el("thead", {}, el("tr", {}, ["Id", "State", "Destination", "What", "Rule", "Attempts", "Queued (UTC)", "Next attempt (UTC)", "Last error", ""].map((h) => el("th", { text: h })))),
        el("tbody", {}, rows))
      : el("p", { class: "hint", text: "No jobs." })));
}

/**
 * A "Send to" control for the study `uid`: the destinations the server
 * knows, and a button that queues the whole study for the chosen one.
 */
export async function sendControl(api, uid) {
  const r = await api("/api/destinations");
  if (!r.ok) return null;
  const { destinations } = await r.json();
  if (!destinations.length) return null;
  const status = el("span", { class: "hint", role: "status" });
  const choice = el("select", { name: "send-to", "aria-label": "destination" },
    destinations.map((d) => el("option", { value: d.name, text: d.kind === "dicomweb" ? `${d.name} (DICOMweb)` : d.name })));
  const send = async () => {
    status.textContent = "";
    const r = await api(`/api/studies/${encodeURIComponent(uid)}/send`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ destination: choice.value }),
    });
    status.textContent = r.ok ? `${(await r.json()).queued} instances queued for ${choice.value}` : await refused(r);
  };
  return el("span", { class: "send" }, choice, el("button", { type: "button", text: "Send", on: { click: send } }), status);
}

/** A study's protection from retention: its state and a button to flip it. */
export async function protectControl(api, uid) {
  const path = `/api/studies/${encodeURIComponent(uid)}/protected`;
  const box = el("span", { class: "send" });
  const show = (on) => box.replaceChildren(
    el("span", { class: "hint", "data-protected": String(on), text: on ? "Protected from retention" : "Retention applies" }),
    el("button", { type: "button", text: on ? "Unprotect" : "Protect", on: { click: async () => {
      const r = await api(path, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ protected: !on, reason: "set in the web UI" }) });
      if (r.ok) show((await r.json()).protected);
      else box.append(el("span", { class: "error", role: "status", text: await refused(r) }));
    } } }));
  const r = await api(path);
  if (r.ok) show((await r.json()).protected);
  return box;
}
