// The task panel: the CPU and memory budget, how the agents share it and how
// much they use, and the supervisor's own facts.

import { DASH, h, mb, num, text, duration, isNum, time, errorText } from "./format.js";

const PALETTE = 8;

/** A bar of the budget split among agents; `used` draws a tick per agent. */
function shareBar(label, total, unit, items) {
  const bar = h("div", { class: "bar", role: "img" });
  let sum = 0;
  items.forEach((it, i) => {
    if (!isNum(it.value) || !isNum(total) || total <= 0) return;
    const w = Math.max(0, Math.min(100, (it.value / total) * 100));
    sum += it.value;
    const seg = h("span", { class: "seg c" + (i % PALETTE) + (it.explicit ? " explicit" : ""), title: `${it.id}: ${it.label} (${it.source || "?"})` });
    seg.style.width = w + "%";
    if (isNum(it.used) && it.value > 0) {
      const fill = h("span", { class: "used" });
      fill.style.width = Math.min(100, (it.used / it.value) * 100) + "%";
      seg.append(fill);
    }
    bar.append(seg);
  });
  const over = isNum(total) && sum > total * 1.001;
  bar.setAttribute("aria-label", `${label}: ${items.length} shares of ${total} ${unit}`);
  return [bar, over ? h("p", { class: "sub warn-text" }, `The limits add up to more than the task has (${unit === "MB" ? mb(sum) : num(sum, 2) + " CPU"}).`) : null];
}

export function render(root, model) {
  const st = model.status;
  if (!st) return;
  const s = st.supervisor || {};
  const res = s.resources || {};
  const procs = model.processes;
  const memMb = isNum(res.memory_bytes) ? res.memory_bytes / (1024 * 1024) : NaN;
  const cpus = res.cpus;
  // Usage only of processes that run (a dead worker's last sample can linger).
  const use = (p) => (p.pid && p.resources) || {};
  const rssSum = procs.reduce((a, p) => a + (use(p).rss_mb || 0), 0);
  const cpuSum = procs.reduce((a, p) => a + (use(p).cpu_percent || 0), 0);
  const running = procs.filter((p) => p.limits && p.state !== "stopped" && p.state !== "failed");
  const memItems = running.map((p) => ({
    id: p.agent_id,
    value: p.limits.memory_limit_mb,
    used: use(p).rss_mb,
    label: mb(p.limits.memory_limit_mb),
    source: p.limits.memory_limit_source,
    explicit: p.limits.memory_limit_source === "explicit",
  }));
  const cpuItems = running.map((p) => ({
    id: p.agent_id,
    value: p.limits.cpu_limit,
    used: isNum(use(p).cpu_percent) ? use(p).cpu_percent / 100 : NaN,
    label: num(p.limits.cpu_limit, 2) + " CPU",
    source: p.limits.cpu_limit_source,
    explicit: p.limits.cpu_limit_source === "explicit",
  }));
  const isolation = s.isolation ?? st.isolation;
  const desired = st.desired || {};
  const reloadErr = errorText(desired.last_reload_error);
  const serverNow = model.serverNow();
  const lastReconcile = desired.last_reconcile && typeof desired.last_reconcile === "object" ? desired.last_reconcile.at : desired.last_reconcile;
  root.replaceChildren(
    h(
      "div",
      { class: "budget" },
      h("h3", {}, "Memory ", h("span", { class: "muted" }, `${mb(memMb)} from ${text(res.memory_source)} · agents use ${mb(rssSum)}`)),
      shareBar("memory", memMb, "MB", memItems),
      h("h3", {}, "CPU ", h("span", { class: "muted" }, `${num(cpus, 2)} from ${text(res.cpu_source)} · agents use ${num(cpuSum / 100, 2)}`)),
      shareBar("cpu", cpus, "CPU", cpuItems),
      h("p", { class: "sub" }, "Each segment is one agent's limit (solid: explicit, light: fair share); the darker fill is what it uses now."),
    ),
    h(
      "dl",
      { class: "facts-list" },
      h("dt", {}, "Agents"),
      h("dd", { "data-field": "agents-ready" }, `${text(st.agents_ready)} ready of ${text(st.agents_total)}`),
      h("dt", {}, "Worker ports"),
      h("dd", {}, text(s.worker_ports)),
      h("dt", {}, "Per-worker cgroups"),
      h("dd", {}, res.cgroup_per_worker === undefined ? DASH : res.cgroup_per_worker ? "yes" : "no (limits watched by the supervisor)"),
      h("dt", {}, "Isolation"),
      h("dd", {}, text(isolation)),
      h("dt", {}, "Supervisor RSS"),
      h("dd", {}, mb(s.rss_mb)),
      h("dt", {}, "Log lines dropped"),
      h("dd", {}, text(s.log_lines_dropped)),
      h("dt", {}, "Config"),
      h("dd", { class: "path" }, text(desired.config_file)),
      h("dt", {}, "Last reconcile"),
      h("dd", {}, isNum(time(lastReconcile)) ? duration((serverNow - time(lastReconcile)) / 1000) + " ago" : DASH),
      reloadErr ? h("dt", {}, "Reload error") : null,
      reloadErr ? h("dd", { class: "err" }, reloadErr) : null,
    ),
  );
}

/** The header's one-line facts (version, uptime, pid, port). */
export function facts(model) {
  const s = (model.status && model.status.supervisor) || {};
  const up = isNum(s.uptime_seconds) ? s.uptime_seconds + (Date.now() - model.fetchedAt) / 1000 : NaN;
  return `v${text(s.version)} · up ${duration(up)} · pid ${text(s.pid)} · port ${text(s.port)}`;
}

export function phaseLabel(phase) {
  return phase === "running" ? "serving" : phase || "unknown";
}
