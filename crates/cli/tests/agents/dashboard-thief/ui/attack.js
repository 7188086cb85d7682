// An agent's page that goes for the supervisor's admin credential: it reads
// the storages and cookies, frames and opens the dashboard on the main origin
// and on the admin one (`?admin=PORT`) and reads them, calls the mutating
// routes on both with credentials: 'include', and tries whatever looked like
// a token. It reports in window.__report, and "done" in the title.
// (crates/cli/tests/dashboard_origin.rs)
const q = new URLSearchParams(location.search);
const ADMIN = "http://" + location.hostname + ":" + q.get("admin");
const MAIN = location.origin;
const report = { origin: MAIN, storage: {}, cookies: null, frames: {}, windows: {}, fetches: [], stolen: [] };
const pause = (ms) => new Promise((r) => setTimeout(r, ms));

function dump(s) {
  const all = {};
  for (let i = 0; i < s.length; i++) { const k = s.key(i); all[k] = s.getItem(k); }
  return all;
}

function grab(win, doc) {
  const out = {};
  try { out.href = win.location.href; } catch (e) { out.href_error = e.name; }
  try { out.session = dump(win.sessionStorage); } catch (e) { out.session_error = e.name; }
  try { out.local = dump(win.localStorage); } catch (e) { out.local_error = e.name; }
  try { out.html = (doc || win.document).documentElement.outerHTML.slice(0, 4000); } catch (e) { out.html_error = e.name; }
  try { out.auth = (doc || win.document).getElementById("auth").dataset.mode; } catch (e) { out.auth_error = e.name; }
  return out;
}

async function frame(name, src) {
  const f = document.createElement("iframe");
  f.id = "frame-" + name;
  f.src = src;
  const loaded = new Promise((r) => { f.onload = r; });
  document.body.appendChild(f);
  await Promise.race([loaded, pause(5000)]);
  await pause(500); // the dashboard's modules run after load
  report.frames[name] = grab(f.contentWindow, f.contentDocument);
}

async function popup(name, src) {
  const w = window.open(src, name);
  if (!w) { report.windows[name] = { opened: false }; return; }
  for (let i = 0; i < 50; i++) {
    await pause(100);
    try { if (w.document.readyState === "complete" && w.location.href !== "about:blank") break; } catch (e) { break; }
  }
  await pause(500);
  report.windows[name] = Object.assign({ opened: true, closed: w.closed }, grab(w));
  try { w.close(); } catch (e) {}
}

const ROUTES = [
  ["POST", "/supervisor/restart/par-victim", null, null],
  ["POST", "/supervisor/stop/par-victim", "{}", "text/plain"],
  ["POST", "/supervisor/spawn", '{"agent_id":"planted","package_path":"/nonexistent"}', "text/plain"],
  ["POST", "/supervisor/spawn", '{"agent_id":"planted","package_path":"/nonexistent"}', "application/json"],
  ["DELETE", "/supervisor/agents/victim", null, null],
  ["PATCH", "/supervisor/agents/victim", '{"max_restarts":1}', "application/merge-patch+json"],
  ["POST", "/supervisor/reload", null, null],
  ["DELETE", "/supervisor/logs", null, null],
  ["GET", "/supervisor/logs?process_id=par-victim", null, null],
];

async function call(base, mode, method, path, body, type, token) {
  const init = { method, credentials: "include", mode, cache: "no-store", headers: {} };
  if (body !== null) init.body = body;
  if (type) init.headers["Content-Type"] = type;
  if (token) init.headers["Authorization"] = "Bearer " + token;
  const entry = { base, mode, method, path, type, with_token: !!token };
  try {
    const r = await fetch(base + path, init);
    entry.type_seen = r.type;
    entry.status = r.status;
    try { entry.body = (await r.text()).slice(0, 300); } catch (e) { entry.body_error = e.name; }
  } catch (e) {
    entry.error = String(e);
  }
  report.fetches.push(entry);
}

function tokensIn(value) {
  const found = [];
  const walk = (v) => {
    if (!v) return;
    if (typeof v === "string") { if (/^[\x21-\x7e]{8,}$/.test(v)) found.push(v); return; }
    if (typeof v === "object") Object.values(v).forEach(walk);
  };
  walk(value);
  return found;
}

(async () => {
  try {
    report.storage.session = dump(sessionStorage);
    report.storage.local = dump(localStorage);
    report.cookies = document.cookie;
    await frame("main_ui", MAIN + "/supervisor/ui/");
    await frame("admin_ui", ADMIN + "/supervisor/ui/");
    await popup("main_window", MAIN + "/supervisor/ui/");
    await popup("admin_window", ADMIN + "/supervisor/ui/");
    for (const base of [MAIN, ADMIN]) {
      for (const [method, path, body, type] of ROUTES) {
        await call(base, "cors", method, path, body, type, null);
        if (["GET", "POST"].includes(method)) await call(base, "no-cors", method, path, body, type, null);
      }
    }
    // Whatever looked like a credential is tried for real.
    report.stolen = [...new Set(tokensIn(report.storage).concat(tokensIn(report.frames), tokensIn(report.windows)))]
      .filter((t) => t.length >= 16 && t.length <= 200 && !t.includes("<") && !t.includes("://"));
    for (const t of report.stolen) {
      for (const base of [MAIN, ADMIN]) await call(base, "cors", "POST", "/supervisor/restart/par-victim", null, null, t);
    }
  } catch (e) {
    report.crashed = String(e && e.stack || e);
  }
  window.__report = report;
  document.title = "done";
})();
