// The agents table: one row per worker process, redrawn on every poll, with
// RSS / CPU / request-rate sparklines from the history kept in the page.

import { DASH, h, mb, percent, rate, latency, duration, num, text, time, isNum, stateClass, errorText } from "./format.js";

const SPARK_W = 72;
const SPARK_H = 18;

/** Polyline of the last values; `floor` keeps a near-zero series from looking busy. */
export function sparkline(values, { floor = 0, zero = true } = {}) {
  const svg = h("svg:svg", { class: "spark", width: SPARK_W, height: SPARK_H, viewBox: `0 0 ${SPARK_W} ${SPARK_H}`, "aria-hidden": "true" });
  const vals = values.filter(isNum).slice(-120);
  if (vals.length < 2) return svg;
  let lo = zero ? 0 : Math.min(...vals);
  let hi = Math.max(floor, ...vals);
  if (hi - lo < 1e-9) {
    hi = lo + 1;
    lo = Math.max(0, lo - 1);
  }
  const step = SPARK_W / (vals.length - 1);
  const pts = vals.map((v, i) => `${(i * step).toFixed(1)},${(SPARK_H - 1 - ((v - lo) / (hi - lo)) * (SPARK_H - 2)).toFixed(1)}`);
  svg.append(h("svg:polyline", { points: pts.join(" ") }));
  return svg;
}

export function packageOf(p) {
  return p.package_id || (p.current_package && p.current_package.package_id) || (p.meta && p.meta.package_id) || null;
}

function limitsText(l) {
  if (!l || typeof l !== "object") return [DASH];
  const parts = [];
  if (isNum(l.memory_limit_mb)) parts.push(h("span", { title: `memory: ${l.memory_limit_source || "?"}, enforced by ${l.memory_enforcement || "?"}` }, mb(l.memory_limit_mb) + " · " + text(l.memory_enforcement)));
  if (isNum(l.cpu_limit)) parts.push(h("span", { title: `CPU: ${l.cpu_limit_source || "?"}, enforced by ${l.cpu_enforcement || "?"}` }, num(l.cpu_limit, 2) + " CPU · " + text(l.cpu_enforcement)));
  return parts.length ? parts : [DASH];
}

/** State cell: coloured pill, how long, and what happens next. */
export function stateCell(p, serverNow) {
  const state = typeof p.state === "string" ? p.state : p.status || "unknown";
  const since = serverNow - time(p.state_since);
  const bits = [h("span", { class: "pill " + stateClass(state), "data-state": state }, state)];
  if (state === "backoff" && isNum(p.next_restart_in_seconds)) bits.push(h("span", { class: "sub" }, "retry in " + duration(p.next_restart_in_seconds)));
  else if (isNum(since) && state !== "ready") bits.push(h("span", { class: "sub" }, "for " + duration(since / 1000)));
  if (p.rollout && p.rollout.state === "rolling") bits.push(h("span", { class: "pill st-progress small" }, "rolling out"));
  const err = errorText(p.last_error);
  if (state === "failed" && err) bits.push(h("div", { class: "sub err", title: err }, err.length > 80 ? err.slice(0, 80) + "…" : err));
  return bits;
}

/** Updates the rows in place (keyed by process id), so a click never lands on a replaced row. */
export function render(tbody, model, onSelect) {
  const serverNow = model.serverNow();
  const old = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  const rows = model.processes.map((p) => {
    const id = text(p.agent_id);
    const key = text(p.process_id) + "|" + id;
    let tr = old.get(key);
    if (!tr) {
      tr = h("tr", { "data-agent": id, "data-process": text(p.process_id), "data-key": key, tabindex: "0", title: "Show " + id });
      tr.addEventListener("click", () => onSelect(p.agent_id));
      tr.addEventListener("keydown", (e) => {
        if (e.key === "Enter") onSelect(p.agent_id);
      });
    }
    tr.classList.toggle("selected", model.selected === p.agent_id);
    const usage = model.usage.get(p.process_id) || [];
    // No process, no usage (the last sample of a dead worker can linger in the status).
    const r = p.pid ? p.resources || {} : {};
    const started = time(p.started_at);
    const up = p.pid && isNum(started) ? (serverNow - started) / 1000 : NaN;
    const meta = p.meta && typeof p.meta === "object" ? p.meta : {};
    const replicas = Array.isArray(p.replicas) ? p.replicas : null;
    const cells = [
      h("td", { "data-field": "agent" }, h("strong", {}, id), meta.display_name ? h("span", { class: "sub" }, meta.display_name) : null),
      h("td", { "data-field": "process" }, text(p.process_id), replicas ? h("span", { class: "sub" }, "×" + replicas.length) : null, p.sessions ? h("span", { class: "sub", "data-field": "sessions" }, `${p.sessions} session${p.sessions === 1 ? "" : "s"}`) : null),
      h("td", { "data-field": "state" }, stateCell(p, serverNow)),
      h("td", { "data-field": "package", title: text(p.package_path) }, text(packageOf(p))),
      h("td", { class: "num", "data-field": "port" }, text(p.port)),
      h("td", { class: "num", "data-field": "pid" }, text(p.pid)),
      h("td", { class: "num", "data-field": "restarts" }, text(p.restarts)),
      h("td", { class: "num", "data-field": "uptime" }, duration(up)),
      h("td", { "data-field": "rss" }, h("span", { class: "val" }, mb(r.rss_mb)), sparkline(usage.map((u) => u.rss), { zero: false })),
      h("td", { "data-field": "cpu" }, h("span", { class: "val" }, percent(r.cpu_percent)), sparkline(usage.map((u) => u.cpu), { floor: 5 })),
      h("td", { "data-field": "rps" }, h("span", { class: "val" }, rate(model.metrics.rate(p.agent_id))), sparkline(model.metrics.rateSeries(p.agent_id), { floor: 1 })),
      h("td", { class: "num", "data-field": "p95" }, latency(model.metrics.p95(p.agent_id))),
      h("td", { class: "limits", "data-field": "limits" }, limitsText(p.limits)),
    ];
    tr.replaceChildren(...cells);
    return tr;
  });
  // Keep the order of the status; only move what moved.
  rows.forEach((tr, i) => {
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
  });
  while (tbody.children.length > rows.length) tbody.lastElementChild.remove();
}
