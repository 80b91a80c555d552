// The logged-in user's own account: changing their password. The current
// password proves it is them (a wrong one counts as a failed login); every
// session of theirs ends with the old password, so they log in again.

import { el } from "/ui/dom.js";

/** A new password typed twice: its fields, its value, whether they differ. */
export function newPasswordFields(prefix) {
  const attrs = { type: "password", autocomplete: "new-password", required: true };
  const first = el("input", { ...attrs, name: `${prefix}-new`, minlength: 12,
    placeholder: "new password (12+ characters)", "aria-label": "New password" });
  const again = el("input", { ...attrs, name: `${prefix}-again`,
    placeholder: "the same again", "aria-label": "New password again" });
  return { fields: [first, again], value: () => first.value, differ: () => first.value !== again.value };
}

/** The page in `main`; `ended(message)` shows the login once it is changed. */
export function passwordPage(main, api, me, ended) {
  const message = el("p", { class: "error", role: "status" });
  const current = el("input", { name: "current-password", type: "password", autocomplete: "current-password",
    required: true, placeholder: "current password", "aria-label": "Current password" });
  const fresh = newPasswordFields("own");
  const form = el("form", { class: "login", on: { submit: async (e) => {
    e.preventDefault();
    message.textContent = "";
    if (fresh.differ()) { message.textContent = "The two new passwords differ."; return; }
    const r = await api("/api/session/password", {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ current: current.value, new: fresh.value() }),
    });
    if (r.status === 204) { ended("Your password was changed; log in with the new one."); return; }
    let why = `${r.status}`;
    try { why = (await r.json()).error || why; } catch (_) { /* no body */ }
    message.textContent = r.status === 429 ? "Too many failed attempts; wait a while and try again." : why;
  } } },
  el("h1", { text: `Password of ${me.user}` }), current, ...fresh.fields,
  el("button", { type: "submit", text: "Change password" }), message);
  main.replaceChildren(form);
  current.focus();
}
