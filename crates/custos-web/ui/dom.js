// Building elements (text is always set as textContent, never parsed as
// HTML), and small helpers the pages share.

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "on") for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
    else if (k === "text") e.textContent = v;
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

/** `d` as YYYYMMDD in the browser's time zone (the day the user lives in). */
export function ymd(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${pad(d.getMonth() + 1)}${pad(d.getDate())}`;
}

/** What to show for a refused request: the server's reason, or its status. */
export async function refused(r) {
  let why = `${r.status}`;
  try { why = (await r.json()).error || why; } catch (_) { /* no body */ }
  return `Refused: ${why}`;
}
