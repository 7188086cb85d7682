// How values are shown: a missing or unknown value is always "—", so that a
// field the supervisor does not send (yet, or any more) never breaks the page.

export const DASH = "—";

export function isNum(v) {
  return typeof v === "number" && Number.isFinite(v);
}

export function text(v) {
  if (v === null || v === undefined || v === "") return DASH;
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export function num(v, digits = 0) {
  return isNum(v) ? v.toFixed(digits) : DASH;
}

export function mb(v) {
  if (!isNum(v)) return DASH;
  if (v >= 10240) return (v / 1024).toFixed(1) + " GB";
  return v.toFixed(v >= 100 ? 0 : 1) + " MB";
}

export function percent(v) {
  return isNum(v) ? v.toFixed(v >= 100 ? 0 : 1) + " %" : DASH;
}

export function rate(v) {
  if (!isNum(v)) return DASH;
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

export function latency(seconds) {
  if (!isNum(seconds)) return DASH;
  if (seconds < 1) return (seconds * 1000).toFixed(seconds < 0.01 ? 1 : 0) + " ms";
  return seconds.toFixed(2) + " s";
}

export function duration(seconds) {
  if (!isNum(seconds) || seconds < 0) return DASH;
  if (seconds < 1) return (seconds * 1000).toFixed(0) + " ms";
  if (seconds < 60) return seconds.toFixed(seconds < 10 ? 1 : 0) + " s";
  const m = Math.floor(seconds / 60);
  if (m < 60) return m + "m " + Math.floor(seconds % 60) + "s";
  const h = Math.floor(m / 60);
  if (h < 48) return h + "h " + (m % 60) + "m";
  return Math.floor(h / 24) + "d " + (h % 24) + "h";
}

/** Milliseconds since the epoch of an RFC 3339 string, or NaN. */
export function time(s) {
  return typeof s === "string" ? Date.parse(s) : NaN;
}

export function clock(ms) {
  if (!isNum(ms)) return DASH;
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds()) + "." + p(d.getMilliseconds(), 3);
}

/** Builds an element: h("td", {class: "num"}, "42", otherNode). Text is never parsed as HTML. */
export function h(tag, attrs, ...children) {
  const el = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** The colour family of a lifecycle state; unknown states are neutral. */
export function stateClass(state) {
  switch (state) {
    case "ready":
      return "st-ok";
    case "pending":
    case "fetching":
    case "starting":
    case "idle":
      return "st-progress";
    case "unhealthy":
    case "backoff":
    case "crashed":
      return "st-warn";
    case "failed":
      return "st-bad";
    case "stopping":
    case "stopped":
      return "st-off";
    default:
      return "st-unknown";
  }
}

/** A last_error as text: a string, or a classified {kind, message, ...} object. */
export function errorText(e) {
  if (e === null || e === undefined || e === "") return "";
  if (typeof e === "string") return e;
  if (typeof e === "object") {
    const kind = e.kind || e.class || e.code || e.type;
    const msg = e.message || e.detail || e.reason;
    if (kind && msg) return kind + ": " + msg;
    if (kind || msg) return String(kind || msg);
  }
  return JSON.stringify(e);
}

export function errorKind(e) {
  if (e && typeof e === "object") return e.kind || e.class || e.code || e.type || "";
  return "";
}
