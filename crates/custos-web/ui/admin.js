// Administration (admin role): archive status, users, API tokens, DICOM
// peers, webhooks and retention, each through the admin API that the CLI's
// use cases share.

import { el } from "/ui/dom.js";
import { newPasswordFields } from "/ui/account.js";

const ROLES = ["admin", "radiologist", "uploader", "auditor", "monitor"];
const RIGHTS = ["echo", "store", "find", "get", "move", "commit", "worklist", "mpps"];
const EVENTS = ["instance.stored", "instance.updated", "instance.deleted", "series.stored",
  "series.deleted", "study.stored", "study.deleted", "study.stable"];

/**
 * The admin page in `main`. `api(path, options)` is the UI's fetch (cookie,
 * CSRF token); `me` the logged-in user.
 */
export async function adminPage(main, api, me) {
  const message = el("p", { class: "error", role: "status" });
  const send = (path, method, body) => api(path, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const call = async (path, method, body) => {
    message.textContent = "";
    let r = await send(path, method, body);
    // Changes to users, tokens, peers and webhooks need the password given recently:
    // asked for, then the change is tried once more.
    if (r.status === 403) {
      const refusal = await r.clone().json().catch(() => ({}));
      if (refusal.confirm) {
        const password = await askPassword(main);
        if (password === null) {
          message.textContent = "Not changed: your password was not given.";
          return null;
        }
        const confirmed = await send("/api/session/confirm", "POST", { password });
        r = confirmed.ok ? await send(path, method, body) : confirmed;
      }
    }
    if (!r.ok) {
      let why = `${r.status}`;
      try { why = (await r.json()).error || why; } catch (_) { /* no body */ }
      message.textContent = `Refused: ${why}`;
      return null;
    }
    const text = await r.text();
    return text ? JSON.parse(text) : {};
  };
  const get = (path) => call(path, "GET");
  const [stats, users, tokens, peers, hooks] = await Promise.all([
    get("/api/statistics"), get("/api/users"), get("/api/tokens"), get("/api/peers"), get("/api/webhooks"),
  ]);
  const reload = () => adminPage(main, api, me);
  const section = (title, ...content) => el("section", { class: "admin" }, el("h2", { text: title }), ...content);
  const table = (headers, rows) => el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))), el("tbody", {}, rows));
  const button = (text, onClick, cls) => el("button", { type: "button", text, class: cls, on: { click: onClick } });
  const select = (name, options, value) => el("select", { name, "aria-label": name },
    options.map((o) => el("option", { value: o, text: o, selected: o === value })));

  // ---- status ----
  const mib = stats ? (stats.stored_bytes / 1048576).toFixed(1) : "?";
  const status = section("Archive",
    el("p", { text: stats ? `${stats.patients} patients, ${stats.studies} studies, ${stats.series} series, ${stats.instances} instances, ${mib} MiB stored` : "" }));

  // ---- users ----
  const newName = el("input", { name: "new-user", placeholder: "name", autocomplete: "off" });
  const newRole = select("new-role", ROLES, "radiologist");
  const newPassword = el("input", { name: "new-password", type: "password", placeholder: "password (12+ characters)", autocomplete: "new-password" });
  const userRows = (users || []).map((u) => {
    const role = select(`role-${u.name}`, ROLES, u.role);
    role.addEventListener("change", async () => {
      if (!confirm(`Give ${u.name} the role ${role.value}?`)) { role.value = u.role; return; }
      if (await call(`/api/users/${encodeURIComponent(u.name)}`, "PUT", { role: role.value })) reload();
    });
    const self = u.name === me.user;
    return el("tr", { "data-user": u.name },
      el("td", { text: u.name }), el("td", {}, self ? u.role : role),
      el("td", { text: u.disabled ? "disabled" : "active" }),
      el("td", {},
        self ? null : button(u.disabled ? "Enable" : "Disable", async () => {
          if (await call(`/api/users/${encodeURIComponent(u.name)}`, "PUT", { disabled: !u.disabled })) reload();
        }),
        // One's own password is changed on the account page, which asks
        // for the current one.
        self ? null : button("New password", (e) => {
          // Typed twice into password fields of a row of its own (never into
          // a prompt that shows it); a second click closes the row.
          const row = e.target.closest("tr");
          const next = row.nextElementSibling;
          if (next && next.dataset.passwordOf === u.name) { next.remove(); return; }
          const fresh = newPasswordFields(`password-${u.name}`);
          row.after(el("tr", { "data-password-of": u.name }, el("td", { colspan: 4 },
            el("form", { class: "filters", on: { submit: async (ev) => {
              ev.preventDefault();
              if (fresh.differ()) { message.textContent = "The two passwords differ."; return; }
              if (await call(`/api/users/${encodeURIComponent(u.name)}`, "PUT", { password: fresh.value() })) {
                ev.target.closest("tr").remove();
                message.textContent = `Password of ${u.name} changed.`;
              }
            } } }, ...fresh.fields, el("button", { type: "submit", text: "Set password" })))));
          fresh.fields[0].focus();
        }),
        self ? null : button("Remove", async () => {
          if (confirm(`Remove the user ${u.name} and their tokens?`) && await call(`/api/users/${encodeURIComponent(u.name)}`, "DELETE")) reload();
        }, "danger")));
  });
  const usersSection = section("Users",
    table(["Name", "Role", "State", ""], userRows),
    el("form", { class: "filters", on: { submit: async (e) => {
      e.preventDefault();
      if (await call("/api/users", "POST", { name: newName.value.trim(), role: newRole.value, password: newPassword.value })) reload();
    } } }, newName, newRole, newPassword, el("button", { type: "submit", text: "Add user" })));

  // ---- tokens ----
  const tokenUser = select("token-user", (users || []).map((u) => u.name), me.user);
  const tokenDays = el("input", { name: "token-days", type: "number", min: 1, max: 3650, value: 90, class: "short", "aria-label": "days" });
  const tokenReadOnly = el("input", { name: "token-read-only", type: "checkbox" });
  const secret = el("p", { class: "secret", role: "status" });
  const day = (t) => new Date(t * 1000).toISOString().slice(0, 10);
  const tokenRows = (tokens || []).map((t) => el("tr", { "data-token": t.id },
    el("td", { text: t.id }), el("td", { text: t.user }), el("td", { text: t.read_only ? "read-only" : "full" }),
    el("td", { text: day(t.expires) }), el("td", { text: t.revoked ? "revoked" : "" }),
    el("td", {}, t.revoked ? null : button("Revoke", async () => {
      if (confirm(`Revoke token ${t.id}?`) && await call(`/api/tokens/${encodeURIComponent(t.id)}`, "DELETE")) reload();
    }, "danger"))));
  const tokensSection = section("API tokens",
    table(["Id", "User", "Rights", "Expires", "", ""], tokenRows),
    el("form", { class: "filters", on: { submit: async (e) => {
      e.preventDefault();
      const made = await call("/api/tokens", "POST", {
        user: tokenUser.value, expires_days: Number(tokenDays.value), read_only: tokenReadOnly.checked,
      });
      if (made) secret.textContent = `New token (shown once, copy it now): ${made.token}`;
    } } }, tokenUser, el("label", {}, "days ", tokenDays), el("label", {}, tokenReadOnly, " read-only"),
    el("button", { type: "submit", text: "Create token" })),
    secret);

  // ---- peers ----
  const peerForm = (p = {}) => {
    const ae = el("input", { name: "peer-ae", placeholder: "AE title", value: p.ae_title || "", readonly: !!p.ae_title });
    const host = el("input", { name: "peer-host", placeholder: "host or CIDR", value: p.host || "" });
    const port = el("input", { name: "peer-port", type: "number", class: "short", min: 1, max: 65535, value: p.port || 104, "aria-label": "port" });
    const boxes = RIGHTS.map((r) => el("input", { type: "checkbox", name: `peer-${r}`, checked: (p.allow || ["echo"]).includes(r) }));
    const tls = el("input", { type: "checkbox", name: "peer-tls", checked: !!p.tls_required });
    return el("form", { class: "filters", on: { submit: async (e) => {
      e.preventDefault();
      const body = {
        ae_title: ae.value.trim(), host: host.value.trim(), port: Number(port.value),
        allow: RIGHTS.filter((_, i) => boxes[i].checked), tls_required: tls.checked,
      };
      // Certificate pins are not sent: the server keeps a peer's pins.
      const known = !p.ae_title && (peers || []).some((q) => q.ae_title === body.ae_title);
      if (known && !confirm(`${body.ae_title} is already a peer: replace its address and rights?`)) return;
      if (await call("/api/peers", "POST", body)) reload();
    } } }, ae, host, port, RIGHTS.map((r, i) => el("label", {}, boxes[i], ` ${r}`)),
    el("label", {}, tls, " TLS required"), el("button", { type: "submit", text: p.ae_title ? "Save" : "Add peer" }));
  };
  const peerRows = (peers || []).map((p) => el("tr", { "data-peer": p.ae_title },
    el("td", { text: p.ae_title }), el("td", { text: `${p.host}:${p.port}` }), el("td", { text: p.allow.join(", ") }),
    el("td", { text: [
      p.tls_required ? "TLS" : "",
      p.cert_fingerprint ? `certificate ${p.cert_fingerprint.slice(0, 19)}…` : "",
      p.cert_subject ? `subject ${p.cert_subject}` : "",
      p.ca_bundle ? "own CA" : "",
    ].filter(Boolean).join(", ") }),
    el("td", {},
      button("Test", async () => {
        message.textContent = `Sending C-ECHO to ${p.ae_title}…`;
        const r = await call(`/api/peers/${encodeURIComponent(p.ae_title)}/echo`, "POST");
        if (r) {
          message.textContent = r.ok
            ? `${p.ae_title} answered C-ECHO (status 0000${r.tls ? ", over TLS" : ""}, ${r.ms} ms).`
            : `${p.ae_title} did not answer: ${r.error || `status ${Number(r.status).toString(16)}`}`;
        }
      }),
      button("Edit", (e) => {
        // One edit form per peer: a second click closes it.
        const row = e.target.closest("tr");
        const next = row.nextElementSibling;
        if (next && next.dataset.editOf === p.ae_title) next.remove();
        else row.after(el("tr", { "data-edit-of": p.ae_title }, el("td", { colspan: 5 }, peerForm(p))));
      }),
      button("Remove", async () => {
        if (confirm(`Remove the peer ${p.ae_title}?`) && await call(`/api/peers/${encodeURIComponent(p.ae_title)}`, "DELETE")) reload();
      }, "danger"))));
  const peersSection = section("DICOM peers", table(["AE title", "Address", "May", "Security", ""], peerRows), peerForm());

  // ---- webhooks ----
  const hookUrl = el("input", { name: "hook-url", placeholder: "https://receiver/path", autocomplete: "off" });
  const hookSecret = el("input", { name: "hook-secret", type: "password", placeholder: "secret (16+ characters)", autocomplete: "new-password" });
  const hookBoxes = EVENTS.map((e) => el("input", { type: "checkbox", name: `hook-${e}` }));
  const hookRows = ((hooks && hooks.webhooks) || []).map((h) => el("tr", { "data-hook": h.id },
    el("td", { text: h.id }), el("td", { text: h.url }), el("td", { text: h.events.join(", ") }),
    el("td", {}, button("Remove", async () => {
      if (confirm(`Remove webhook ${h.id}? Its waiting deliveries are cancelled.`) && await call(`/api/webhooks/${h.id}`, "DELETE")) reload();
    }, "danger"))));
  const hooksSection = section("Webhooks",
    el("p", { class: "hint", text: "Receivers of change events, signed with HMAC-SHA256 (X-Custos-Signature). Hosts must be listed in [webhooks] hosts of custos.toml." }),
    table(["Id", "URL", "Events", ""], hookRows),
    el("form", { class: "filters", on: { submit: async (e) => {
      e.preventDefault();
      const body = { url: hookUrl.value.trim(), secret: hookSecret.value, events: EVENTS.filter((_, i) => hookBoxes[i].checked) };
      if (await call("/api/webhooks", "POST", body)) reload();
    } } }, hookUrl, hookSecret, EVENTS.map((e, i) => el("label", {}, hookBoxes[i], ` ${e}`)),
    el("button", { type: "submit", text: "Add webhook" })));

  // ---- retention ----
  const planBox = el("div", { class: "retention-plan" });
  const showPlan = (plan, done) => {
    const rows = plan.studies.map((st) => el("tr", {},
      el("td", { text: st.study }), el("td", { text: st.patient_id }), el("td", { text: st.study_date }), el("td", { text: st.policy })));
    planBox.replaceChildren(
      el("p", { role: "status", text: `${plan.count} of ${plan.examined} studies ${done ? "deleted" : "would be deleted"}; ${plan.protected} protected, ${plan.receiving} still receiving.` }),
      rows.length ? table(["Study", "Patient ID", "Study date", "Policy"], rows) : null);
  };
  const retentionSection = section("Retention",
    el("p", { class: "hint", text: "Policies are set in custos.toml ([[retention.policy]]); protected studies and studies still receiving are never deleted." }),
    el("div", { class: "filters" },
      button("Show what would be deleted", async () => { const plan = await get("/api/retention"); if (plan) showPlan(plan, false); }),
      button("Run now", async () => {
        if (!confirm("Delete now every study the retention policies name?")) return;
        const plan = await call("/api/retention/run", "POST");
        if (plan) showPlan(plan, true);
      }, "danger")),
    planBox);

  main.replaceChildren(message, status, usersSection, tokensSection, peersSection, hooksSection, retentionSection);
}

/**
 * Asks for the user's own password in a modal dialog in `parent`: the text,
 * or null when cancelled.
 */
function askPassword(parent) {
  return new Promise((resolve) => {
    const input = el("input", { type: "password", autocomplete: "current-password", "aria-label": "Your password" });
    const dialog = el("dialog", { class: "confirm-password" },
      el("form", { method: "dialog" },
        el("p", { text: "Give your password again to change users, tokens, peers or webhooks." }),
        input,
        el("menu", {},
          // Enter submits the form's first submit button: Confirm.
          el("button", { value: "ok", type: "submit", text: "Confirm" }),
          el("button", { type: "button", text: "Cancel", on: { click: () => dialog.close("cancel") } }))));
    dialog.addEventListener("close", () => {
      const given = dialog.returnValue === "ok" && input.value ? input.value : null;
      dialog.remove();
      resolve(given);
    });
    parent.append(dialog);
    dialog.showModal();
    input.focus();
  });
}
