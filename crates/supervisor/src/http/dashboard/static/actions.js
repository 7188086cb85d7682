// What the page can do with the admin token: restart, stop, start, delete,
// roll out a package, reload. Every action is confirmed first and its result
// (or the reason it was refused) is shown.

import { request, token, setToken } from "./api.js";
import { h, text } from "./format.js";

let onTokenChange = () => {};

export function init(tokenChanged) {
  onTokenChange = tokenChanged;
  const dlg = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  document.getElementById("token-button").addEventListener("click", askToken);
  dlg.addEventListener("close", () => {
    if (dlg.returnValue === "save" && input.value.trim()) setToken(input.value.trim());
    if (dlg.returnValue === "forget") setToken("");
    input.value = "";
    if (dlg.returnValue === "save" || dlg.returnValue === "forget") {
      // Refusals that asked for the token are answered now.
      for (const t of document.querySelectorAll(".toast.bad")) if (/token/i.test(t.textContent)) t.remove();
      onTokenChange();
    }
  });
}

export function askToken() {
  const dlg = document.getElementById("token-dialog");
  document.getElementById("token-forget").hidden = !token();
  if (!dlg.open) dlg.showModal();
  document.getElementById("token-input").focus();
}

/** Shows the confirm dialog; resolves true on Confirm. `extra` nodes go above the buttons. */
export function confirmAction(title, message, okLabel, extra) {
  const dlg = document.getElementById("confirm-dialog");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = message;
  document.getElementById("confirm-extra").replaceChildren(...(extra || []));
  document.getElementById("confirm-ok").textContent = okLabel || "Confirm";
  dlg.returnValue = "";
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
    dlg.showModal();
    const first = dlg.querySelector("#confirm-extra input");
    (first || document.getElementById("confirm-ok")).focus();
  });
}

/** A result line in the corner; failures stay until dismissed. */
export function toast(ok, message) {
  const box = document.getElementById("toasts");
  const close = h("button", { type: "button", class: "close", "aria-label": "Dismiss" }, "×");
  const el = h("div", { class: "toast " + (ok ? "ok" : "bad"), "data-testid": "action-result", "data-ok": ok ? "true" : "false" }, h("span", {}, message), close);
  if (!ok && /token/i.test(message)) {
    const btn = h("button", { type: "button", class: "small" }, "Enter admin token");
    btn.addEventListener("click", askToken);
    el.insertBefore(btn, close);
  }
  close.addEventListener("click", () => el.remove());
  box.append(el);
  while (box.children.length > 5) box.firstElementChild.remove();
  if (ok) setTimeout(() => el.remove(), 15000);
  return el;
}

function refusal(what, e) {
  if (e.status === 0) return `${what}: the supervisor is not reachable.`;
  if (e.status === 401) return `${what} refused (401): ${e.message}. ${token() ? "The token entered is not the right one." : "Enter the admin token to act."}`;
  if (e.status === 403) return `${what} refused (403): ${e.message}.`;
  return `${what} failed (${e.status} ${e.code}): ${e.message}`;
}

/** Runs one confirmed request and reports it; resolves the response or null. */
async function perform(what, method, path, body, describe, after) {
  try {
    const r = await request(method, path, body);
    const msg = describe(r);
    toast(true, msg);
    after(true, msg);
    return r;
  } catch (e) {
    const msg = refusal(what, e);
    toast(false, msg);
    after(false, msg);
    return null;
  }
}

const enc = encodeURIComponent;

export async function restart(p, after) {
  const pid = p.process_id;
  if (!(await confirmAction("Restart " + pid, `Restart agent ${p.agent_id}? Its worker gets SIGTERM, then a new one starts; requests get 503 meanwhile.`, "Restart"))) return null;
  return perform(`Restart of ${pid}`, "POST", "/supervisor/restart/" + enc(pid), undefined, (r) => `Restart of ${pid} accepted (${r.status}): ${text(r.data && (r.data.state || r.data.status))}.`, after);
}

export async function start(p, after) {
  const pid = p.process_id;
  if (!(await confirmAction("Start " + pid, `Start agent ${p.agent_id} again?`, "Start"))) return null;
  return perform(`Start of ${pid}`, "POST", "/supervisor/restart/" + enc(pid), undefined, (r) => `Start of ${pid} accepted (${r.status}): ${text(r.data && (r.data.state || r.data.status))}.`, after);
}

export async function stop(p, after) {
  const pid = p.process_id;
  if (!(await confirmAction("Stop " + pid, `Stop agent ${p.agent_id}? It stays listed as stopped (requests get 503) until started again.`, "Stop"))) return null;
  return perform(`Stop of ${pid}`, "POST", "/supervisor/stop/" + enc(pid), undefined, (r) => `${pid} is ${text(r.data && (r.data.state || r.data.status))}.`, after);
}

export async function remove(p, after) {
  const id = p.agent_id;
  const declared = p.origin === "declared" ? " It is declared in the configuration, so the next reload brings it back." : "";
  if (!(await confirmAction("Delete " + id, `Delete agent ${id}? Its worker is drained and stopped and the supervisor forgets it.${declared}`, "Delete"))) return null;
  return perform(`Delete of ${id}`, "DELETE", "/supervisor/agents/" + enc(id), undefined, () => `Agent ${id} deleted.`, after);
}

/**
 * What a rollout sends: a merge patch with the new package only (PATCH
 * /supervisor/agents/{id}); the supervisor keeps the rest of the agent's
 * spec, env_vars included.
 */
export function rolloutPatch(pkg, sha256) {
  const patch = { package: pkg };
  if (sha256) patch.sha256 = sha256;
  return patch;
}

export async function rollout(p, after) {
  const id = p.agent_id;
  const pkg = h("input", { type: "text", required: true, placeholder: "https://…/agent.apkg, s3://…, or a path on the task", "data-testid": "rollout-package", size: "48" });
  const sha = h("input", { type: "text", placeholder: "optional", pattern: "[0-9a-fA-F]{64}", "data-testid": "rollout-sha256", size: "48" });
  const extra = [
    h("label", { class: "field" }, "Package ", pkg),
    h("label", { class: "field" }, "SHA-256 ", sha),
    h("p", { class: "sub" }, "The new worker starts next to the current one; traffic moves once it is ready, then the old one drains. Only the package changes: env_vars, restart, replica and limit settings are kept."),
  ];
  if (!(await confirmAction("Roll out " + id, `Roll out a new package to agent ${id} (now ${text(p.package_id)}).`, "Roll out", extra))) return null;
  const url = pkg.value.trim();
  if (!url) {
    toast(false, `Rollout of ${id}: no package given.`);
    return null;
  }
  const patch = rolloutPatch(url, sha.value.trim());
  return perform(`Rollout of ${id}`, "PATCH", "/supervisor/agents/" + enc(id), patch, (r) => {
    const outcome = r.data && r.data.outcome;
    if (outcome === "unchanged") return `Rollout of ${id}: nothing changed (same package).`;
    return `Rollout of ${id} to ${url} ${outcome === "created" ? "created the agent" : "started"} (${r.status}); progress is shown below.`;
  }, after);
}

export async function reload(after) {
  if (!(await confirmAction("Reload agents", "Re-read the declared agents (config file, PAR_AGENTS, registry) and reconcile: new ones start, removed ones stop, changed ones roll out.", "Reload"))) return null;
  return perform("Reload", "POST", "/supervisor/reload", undefined, (r) => {
    const d = r.data || {};
    const list = (k) => (Array.isArray(d[k]) && d[k].length ? `${k} ${d[k].map((x) => (typeof x === "string" ? x : x.agent_id || JSON.stringify(x))).join(", ")}` : null);
    const parts = ["started", "stopped", "rolled", "failed"].map(list).filter(Boolean);
    const unchanged = Array.isArray(d.unchanged) ? d.unchanged.length : 0;
    return `Reload done: ${parts.length ? parts.join("; ") + "; " : "nothing changed; "}${unchanged} unchanged.`;
  }, after);
}
