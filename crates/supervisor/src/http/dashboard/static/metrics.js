// Rates from /metrics: the counters are cumulative, so requests per second
// and the p95 latency come from the difference between two samples kept here.

const KEEP_MS = 5 * 60 * 1000;
const RATE_WINDOW_MS = 5000;
const LATENCY_WINDOW_MS = 60000;

/** Parses Prometheus text into {agent: {requests, errors5xx, buckets: [[le, count]], count}}. */
export function parse(textBody) {
  const agents = {};
  const get = (id) => (agents[id] ||= { requests: 0, errors5xx: 0, buckets: [], count: 0 });
  for (const line of textBody.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const [, name, labelText, valueText] = m;
    const value = Number(valueText);
    if (!Number.isFinite(value) && valueText !== "+Inf") continue;
    const labels = {};
    for (const l of (labelText || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    if (labels.agent_id === undefined) continue;
    const a = get(labels.agent_id);
    if (name === "par_agent_requests_total") {
      a.requests += value;
      if (labels.class === "5xx") a.errors5xx += value;
    } else if (name === "par_agent_request_duration_seconds_bucket") {
      a.buckets.push([labels.le === "+Inf" ? Infinity : Number(labels.le), value]);
    } else if (name === "par_agent_request_duration_seconds_count") {
      a.count = value;
    }
  }
  for (const a of Object.values(agents)) a.buckets.sort((x, y) => x[0] - y[0]);
  return agents;
}

/** The q-quantile of the requests between two cumulative histograms (as Prometheus' histogram_quantile). */
export function quantile(q, older, newer) {
  if (!newer || !newer.length) return NaN;
  const before = new Map((older || []).map(([le, c]) => [le, c]));
  const deltas = newer.map(([le, c]) => [le, Math.max(0, c - (before.get(le) || 0))]);
  const total = deltas.length ? deltas[deltas.length - 1][1] : 0;
  if (total <= 0) return NaN;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, c] of deltas) {
    if (c >= rank) {
      if (le === Infinity) return prevLe; // beyond the last bound: the bound is all we know
      const inBucket = c - prevCount;
      return inBucket > 0 ? prevLe + ((le - prevLe) * (rank - prevCount)) / inBucket : le;
    }
    prevLe = le;
    prevCount = c;
  }
  return prevLe;
}

/** Samples of each agent's counters over the last minutes. */
export class MetricsHistory {
  constructor() {
    this.samples = new Map();
  }

  add(now, parsed) {
    for (const [id, m] of Object.entries(parsed)) {
      const list = this.samples.get(id) || [];
      const last = list[list.length - 1];
      // A counter that went down was reset (the agent was re-created): start over.
      if (last && m.requests < last.requests) list.length = 0;
      list.push({ t: now, ...m });
      while (list.length && now - list[0].t > KEEP_MS) list.shift();
      this.samples.set(id, list);
    }
    for (const id of this.samples.keys()) if (!(id in parsed)) this.samples.delete(id);
  }

  /** The newest sample and the oldest one at least `windowMs` older, else the oldest kept. */
  pair(id, windowMs) {
    const list = this.samples.get(id);
    if (!list || list.length < 2) return null;
    const newest = list[list.length - 1];
    let older = list[0];
    for (let i = list.length - 2; i >= 0; i--) {
      if (newest.t - list[i].t >= windowMs) {
        older = list[i];
        break;
      }
    }
    return newest.t > older.t ? [older, newest] : null;
  }

  rate(id) {
    const p = this.pair(id, RATE_WINDOW_MS);
    if (!p) return NaN;
    return (p[1].requests - p[0].requests) / ((p[1].t - p[0].t) / 1000);
  }

  p95(id) {
    const p = this.pair(id, LATENCY_WINDOW_MS);
    return p ? quantile(0.95, p[0].buckets, p[1].buckets) : NaN;
  }

  /** Requests per second between consecutive samples (for a sparkline). */
  rateSeries(id) {
    const list = this.samples.get(id) || [];
    const out = [];
    for (let i = 1; i < list.length; i++) {
      const dt = (list[i].t - list[i - 1].t) / 1000;
      if (dt > 0) out.push((list[i].requests - list[i - 1].requests) / dt);
    }
    return out;
  }

  total(id) {
    const list = this.samples.get(id);
    return list && list.length ? list[list.length - 1].requests : NaN;
  }
}
