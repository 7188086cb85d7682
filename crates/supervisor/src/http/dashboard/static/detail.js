// One agent in detail: what runs, its last failure, its rollout in progress,
// its manifest, the actions, and its log stream.

import { DASH, h, text, time, duration, clock, isNum, stateClass, errorText, errorKind } from "./format.js";
import { LogView } from "./logs.js";
import * as actions from "./actions.js";
import { packageOf } from "./table.js";

function dl(pairs) {
  const out = h("dl", { class: "kv" });
  for (const [k, v, attrs] of pairs) {
    if (v === null) continue;
    out.append(h("dt", {}, k), h("dd", attrs || {}, v === undefined ? DASH : v));
  }
  return out;
}

function card(title, testid, ...body) {
  return h("div", { class: "card", "data-testid": testid }, h("h3", {}, title), ...body);
}

function ago(serverNow, s) {
  const t = time(s);
  return isNum(t) ? `${clock(t)} (${duration((serverNow - t) / 1000)} ago)` : DASH;
}

function pkgRecord(r) {
  if (!r || typeof r !== "object") return DASH;
  return `${text(r.package_id)} — ${text(r.package)}`;
}

function failureCard(p, serverNow) {
  const ex = p.last_exit && typeof p.last_exit === "object" ? p.last_exit : null;
  const err = errorText(p.last_error);
  const exit = ex ? `${ex.signal ? `signal ${ex.signal}` : `exit code ${text(ex.code)}`} after ${duration(ex.ran_seconds)}, ${ago(serverNow, ex.at)}` : null;
  if (!err) {
    return card("Last failure", "last-failure", h("p", { class: "muted" }, "None since the supervisor started."), exit ? dl([["Last exit", exit]]) : "");
  }
  const kind = errorKind(p.last_error) || (p.state === "failed" ? "cannot start (not retried)" : "crashed (restarted)");
  return card(
    "Last failure",
    "last-failure",
    dl([
      ["Kind", kind],
      ["Error", err, { class: "err" }],
      ["Last exit", exit],
      ["Failures in a row", text(p.consecutive_failures)],
      ["Next restart", isNum(p.next_restart_in_seconds) ? "in " + duration(p.next_restart_in_seconds) : null],
    ]),
  );
}

const ROLLOUT_STEPS = ["fetching", "starting", "switched"];

function rolloutCard(p, serverNow) {
  const r = p.rollout && typeof p.rollout === "object" ? p.rollout : null;
  const draining = Array.isArray(p.draining) ? p.draining : [];
  if (!r && !draining.length) return card("Rollout", "rollout", h("p", { class: "muted" }, "No rollout since the agent started."), p.previous_package ? dl([["Previous", pkgRecord(p.previous_package)]]) : "");
  const parts = [];
  if (r) {
    const rolling = r.state === "rolling";
    const current = rolling ? r.phase || "starting" : r.state === "rolled_out" ? "switched" : null;
    const idx = ROLLOUT_STEPS.indexOf(current);
    parts.push(
      h(
        "ol",
        { class: "steps" + (r.state === "rollout_failed" ? " failed" : "") },
        ROLLOUT_STEPS.map((s, i) => h("li", { class: i < idx || (i === idx && !rolling) ? "done" : i === idx ? "now" : "" }, s)),
      ),
      dl([
        ["State", h("span", { class: "pill " + (r.state === "rolled_out" ? "st-ok" : r.state === "rolling" ? "st-progress" : "st-bad") }, text(r.state))],
        ["To", text(r.to_package), { class: "path" }],
        ["SHA-256", r.to_sha256 ? text(r.to_sha256) : null, { class: "path" }],
        ["Strategy", text(r.strategy)],
        ["Started", ago(serverNow, r.started_at)],
        ["Took", isNum(r.duration_ms) ? duration(r.duration_ms / 1000) : rolling ? duration((serverNow - time(r.started_at)) / 1000) + " so far" : DASH],
        ["New worker", r.worker_pid ? `pid ${r.worker_pid}, port ${text(r.worker_port)}` : null],
        ["Reason", r.reason ? text(r.reason) : null, { class: "err" }],
        ["Previous", p.previous_package ? pkgRecord(p.previous_package) : null],
      ]),
    );
  }
  if (draining.length) {
    parts.push(h("p", { class: "sub" }, "Draining: " + draining.map((d) => `pid ${text(d.pid)} port ${text(d.port)}${isNum(d.in_flight) ? ` (${d.in_flight} in flight)` : ""}${d.sessions ? `, ${d.sessions} session${d.sessions === 1 ? "" : "s"} kept` : ""}`).join("; ")));
  }
  return card("Rollout", "rollout", ...parts);
}

function manifestCard(p) {
  const m = p.meta && typeof p.meta === "object" ? p.meta : null;
  if (!m) return card("Manifest", "manifest", h("p", { class: "muted" }, p.state === "ready" ? "The worker gave no metadata." : "Known once the worker is ready."));
  const caps = Array.isArray(m.capabilities) ? m.capabilities : [];
  const surfaces = m.surfaces && typeof m.surfaces === "object" ? m.surfaces : {};
  const surfaceList = Object.entries(surfaces)
    .filter(([, v]) => v)
    .map(([k, v]) => (typeof v === "object" ? `${k} ${JSON.stringify(v)}` : k));
  const known = new Set(["capabilities", "surfaces", "description", "display_name", "name", "version", "package_id"]);
  const rest = Object.entries(m).filter(([k]) => !known.has(k));
  return card(
    "Manifest",
    "manifest",
    m.description ? h("p", {}, text(m.description)) : "",
    dl([
      ["Name", text(m.name)],
      ["Version", text(m.version)],
      ["Capabilities", caps.length ? h("span", {}, caps.map((c) => h("span", { class: "chip" }, text(c)))) : DASH],
      ["Surfaces", surfaceList.length ? surfaceList.join(", ") : "invoke / exports only"],
      ...rest.map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : text(v), { class: "path" }]),
    ]),
  );
}

export class Detail {
  constructor(root, { onClose, onChanged }) {
    this.root = root;
    this.onClose = onClose;
    this.onChanged = onChanged;
    this.agent = null;
    this.logs = new LogView(actions.askToken);
    this.lastAction = h("div", { class: "last-action", "data-testid": "last-action", hidden: true });
    this.head = h("div", { class: "detail-head" });
    this.cards = h("div", { class: "cards" });
    root.replaceChildren(this.head, this.lastAction, this.cards, h("h3", { class: "logs-title" }, "Logs"), this.logs.root);
  }

  open(agentId) {
    if (this.agent !== agentId) {
      this.lastAction.hidden = true;
      this.headKey = null;
      this.agent = agentId;
    }
    this.root.hidden = false;
    this.logs.show(agentId);
  }

  close() {
    this.agent = null;
    this.headKey = null;
    this.root.hidden = true;
    this.logs.show(null);
  }

  /** Token entered or forgotten: the log stream asks again. */
  tokenChanged() {
    if (this.agent) this.logs.restart();
  }

  result(ok, msg) {
    this.lastAction.hidden = false;
    this.lastAction.className = "last-action " + (ok ? "ok" : "bad");
    this.lastAction.textContent = msg;
    this.onChanged();
  }

  render(model) {
    if (!this.agent) return;
    const procs = model.processes.filter((p) => p.agent_id === this.agent);
    const serverNow = model.serverNow();
    const close = h("button", { type: "button", class: "close", "aria-label": "Close" }, "×");
    close.addEventListener("click", this.onClose);
    if (!procs.length) {
      this.headKey = null;
      this.head.replaceChildren(h("h2", {}, this.agent), close);
      this.cards.replaceChildren(h("p", { class: "empty" }, `Agent ${this.agent} is not (or no longer) known to the supervisor.`));
      return;
    }
    const p = procs[0];
    this.current = p;
    const stopped = p.state === "stopped" || p.state === "failed";
    // The head (with its buttons) is rebuilt only when it changes, so a click is never lost to a redraw.
    const headKey = [p.agent_id, p.state, stopped, p.meta && p.meta.display_name].join("|");
    if (headKey !== this.headKey) {
      this.headKey = headKey;
      const after = (ok, msg) => this.result(ok, msg);
      const button = (label, fn, testid) => {
        const b = h("button", { type: "button", "data-action": testid }, label);
        b.addEventListener("click", () => fn(this.current, after));
        return b;
      };
      this.head.replaceChildren(
        h("h2", {}, p.agent_id, p.meta && p.meta.display_name ? h("span", { class: "muted" }, " " + p.meta.display_name) : ""),
        h("span", { class: "pill " + stateClass(p.state), "data-testid": "detail-state" }, text(p.state)),
        h(
          "span",
          { class: "actions" },
          button("Restart", actions.restart, "restart"),
          stopped ? button("Start", actions.start, "start") : button("Stop", actions.stop, "stop"),
          button("Roll out…", actions.rollout, "rollout"),
          button("Delete", actions.remove, "delete"),
        ),
        close,
      );
    }
    this.cards.replaceChildren(
      card(
        "Process",
        "overview",
        dl([
          ["Process", procs.map((x) => text(x.process_id)).join(", ")],
          ["Package", text(packageOf(p))],
          ["Source", text(p.package_path), { class: "path" }],
          ["SHA-256", p.sha256 ? text(p.sha256) : null, { class: "path" }],
          ["Origin", text(p.origin)],
          ["URL", text(p.url)],
          ["Restart policy", `${text(p.restart_policy)}${isNum(p.max_restarts) ? `, at most ${p.max_restarts}` : ""}`],
          ["State since", ago(serverNow, p.state_since)],
          ["Worker started", ago(serverNow, p.started_at)],
          ["Ready", ago(serverNow, p.ready_at)],
          ["Restarts", text(p.restarts)],
          ["In flight", text(p.resources && p.resources.in_flight)],
          ["Sessions", isNum(p.sessions) ? text(p.sessions) : null],
          ["Threads / processes", `${text(p.resources && p.resources.threads)} / ${text(p.resources && p.resources.processes)}`],
        ]),
      ),
      failureCard(p, serverNow),
      rolloutCard(p, serverNow),
      manifestCard(p),
    );
  }
}
