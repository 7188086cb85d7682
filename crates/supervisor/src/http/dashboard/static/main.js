// The dashboard's loop: poll /supervisor/status every second and /metrics
// every other second, keep the last minutes of usage in the page, redraw.

import * as api from "./api.js";
import { MetricsHistory, parse } from "./metrics.js";
import * as table from "./table.js";
import * as task from "./task.js";
import * as actions from "./actions.js";
import { Detail } from "./detail.js";
import { clock, duration, time, isNum } from "./format.js";

const POLL_MS = 1000;
const METRICS_EVERY = 2;
const USAGE_KEEP_MS = 5 * 60 * 1000;

const model = {
  status: null,
  processes: [],
  fetchedAt: 0,
  // Server clock minus ours, so ages are right even when the clocks differ.
  skew: 0,
  error: null,
  lastContact: 0,
  usage: new Map(),
  metrics: new MetricsHistory(),
  selected: null,
  polls: 0,
  serverNow() {
    return Date.now() + this.skew;
  },
};

const $ = (id) => document.getElementById(id);
let timer = null;
let polling = false;
let detail;

function recordUsage(now) {
  const seen = new Set();
  for (const p of model.processes) {
    const key = p.process_id;
    seen.add(key);
    const r = p.pid ? p.resources || {} : {};
    const list = model.usage.get(key) || [];
    list.push({ t: now, rss: r.rss_mb, cpu: r.cpu_percent });
    while (list.length && now - list[0].t > USAGE_KEEP_MS) list.shift();
    model.usage.set(key, list);
  }
  for (const k of model.usage.keys()) if (!seen.has(k)) model.usage.delete(k);
}

async function poll() {
  if (polling) return;
  polling = true;
  clearTimeout(timer);
  const began = Date.now();
  try {
    const st = await api.getJson("/supervisor/status");
    const now = Date.now();
    model.status = st && typeof st === "object" ? st : {};
    model.processes = Array.isArray(model.status.processes) ? model.status.processes : [];
    model.fetchedAt = now;
    model.lastContact = now;
    model.error = null;
    const s = model.status.supervisor || {};
    const serverNow = time(s.started_at) + (s.uptime_seconds || 0) * 1000;
    if (isNum(serverNow)) model.skew = serverNow - now;
    recordUsage(now);
    if (model.polls % METRICS_EVERY === 0) {
      try {
        const m = await api.request("GET", "/metrics");
        model.metrics.add(Date.now(), parse(typeof m.data === "string" ? m.data : ""));
      } catch {
        // Rates show "—" until /metrics answers again.
      }
    }
    model.polls++;
  } catch (e) {
    model.error = e;
  }
  render();
  polling = false;
  timer = setTimeout(poll, Math.max(100, POLL_MS - (Date.now() - began)));
}

/** After an action: look again now rather than within a second. */
function pollSoon() {
  setTimeout(poll, 50);
}

function banner() {
  const b = $("banner");
  const e = model.error;
  const phase = model.status && model.status.supervisor && model.status.supervisor.state;
  let msg = null;
  let kind = "bad";
  if (e && e.status === 0) {
    const last = model.lastContact ? ` Last contact ${clock(model.lastContact)} (${duration((Date.now() - model.lastContact) / 1000)} ago); the table shows what was known then.` : "";
    msg = `The supervisor is not reachable at ${location.origin} — retrying every second.${last}`;
  } else if (e) {
    msg = `The supervisor answered /supervisor/status with ${e.status}: ${e.message}`;
  } else if (phase === "draining" || phase === "stopped") {
    msg = "The supervisor is draining: it has stopped taking new work, finishes what is in flight and stops the workers.";
    kind = "warn";
  } else if (phase === "starting") {
    msg = "The supervisor is starting its agents.";
    kind = "info";
  }
  b.hidden = !msg;
  b.textContent = msg || "";
  b.className = "banner " + kind;
  document.body.classList.toggle("stale", !!(e && model.status));
}

function header() {
  const s = (model.status && model.status.supervisor) || {};
  const phase = model.error && model.error.status === 0 ? "unreachable" : task.phaseLabel(s.state);
  const pill = $("phase");
  pill.textContent = phase;
  pill.dataset.phase = phase;
  pill.className = "pill " + (phase === "serving" ? "st-ok" : phase === "unreachable" ? "st-bad" : phase === "draining" ? "st-warn" : "st-progress");
  $("sup-facts").textContent = model.status ? task.facts(model) : "";
  const auth = $("auth");
  const hasToken = !!api.token();
  if (s.auth === "token" || s.auth === "boot-token") {
    auth.textContent = hasToken ? "admin token set" : "read-only: the admin token unlocks logs and actions";
    auth.dataset.mode = hasToken ? "admin" : "read-only";
  } else {
    auth.textContent = "";
    auth.dataset.mode = "";
  }
  $("token-button").textContent = hasToken ? "Admin token ✓" : "Enter admin token";
}

function render() {
  header();
  banner();
  const procs = model.processes;
  const ready = procs.filter((p) => p.state === "ready").length;
  $("agents-count").textContent = model.status ? `${ready} of ${procs.length} ready` : "";
  document.title = model.status ? `PAR · ${ready}/${procs.length} ready` : "PAR supervisor";
  $("agents-empty").hidden = !model.status || procs.length > 0;
  table.render(document.querySelector("#agents tbody"), model, select);
  task.render($("task-body"), model);
  detail.render(model);
  if (model.polls === 1 && !model.firstRender) {
    model.firstRender = true;
    performance.mark("par-first-data");
  }
  document.body.dataset.polls = String(model.polls);
}

function select(agentId) {
  if (model.selected === agentId) {
    closeDetail();
    return;
  }
  model.selected = agentId;
  history.replaceState(null, "", "#agent=" + encodeURIComponent(agentId));
  detail.open(agentId);
  render();
  $("detail").scrollIntoView({ block: "nearest", behavior: "smooth" });
}

function closeDetail() {
  model.selected = null;
  history.replaceState(null, "", location.pathname + location.search);
  detail.close();
  render();
}

function fromHash() {
  const m = /^#agent=(.+)$/.exec(location.hash);
  if (m) {
    model.selected = decodeURIComponent(m[1]);
    detail.open(model.selected);
  }
}

function main() {
  detail = new Detail($("detail"), { onClose: closeDetail, onChanged: pollSoon });
  actions.init(() => {
    detail.tokenChanged();
    render();
  });
  $("reload-button").addEventListener("click", () => actions.reload(pollSoon));
  window.addEventListener("hashchange", fromHash);
  fromHash();
  poll();
}

// Exposed for the browser test and for a curious operator's console.
window.parDashboard = { model, poll };
main();
