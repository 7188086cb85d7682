//! The log rings: per process, bounded in lines and in bytes, and all of them
//! together bounded in bytes; the followers' stream of new entries; and
//! re-emission on the supervisor's stdout as one JSON line each.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use super::line::{cut_level, parse_line, FieldLimits, Level, Parsed};

/// What the rings may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries kept per process.
    pub lines_per_process: usize,
    /// Bytes kept per process (estimated in memory, entry by entry).
    pub bytes_per_process: usize,
    /// Bytes kept for all processes together: past it, the oldest entries of
    /// the largest ring go first, so a noisy agent loses its own history
    /// before a quiet one does.
    pub bytes_total: usize,
    /// Longest line kept; the rest is cut, with a marker.
    pub line_bytes: usize,
    pub fields: FieldLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            lines_per_process: 2000,
            bytes_per_process: 4 << 20,
            bytes_total: 32 << 20,
            line_bytes: 16 << 10,
            fields: FieldLimits::default(),
        }
    }
}

/// Bytes of entries waiting for the stdout writer; past it, lines are not
/// re-emitted (and counted) rather than queued.
const OUT_BYTES: usize = 8 << 20;
/// Entries a follower may be behind before it skips some.
const FOLLOW_BACKLOG: usize = 256;
/// What an entry costs besides its text: the entry, its `Arc`, the ring
/// slot, the ids' allocations.
const ENTRY_OVERHEAD: usize = 192;
/// What one field costs besides its text (map node, key, value).
const FIELD_OVERHEAD: usize = 80;

/// One captured line. On stdout and in the API it is one
/// [`par_telemetry::logging::Line`]: `source` `agent` (`supervisor` for the
/// supervisor's own events about the agent, kept for the API and not
/// re-emitted), with `seq` and `stream`; the fields the bounds took away are
/// told in `fields` as `line_bytes` (the length of a cut line as printed) and
/// `fields_dropped`.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub seq: u64,
    pub timestamp: SystemTime,
    pub level: Level,
    pub process_id: String,
    pub agent_id: String,
    pub stream: &'static str,
    pub message: String,
    pub fields: Option<Map<String, Value>>,
    /// The length of the line as printed, when it was cut.
    pub line_bytes: Option<usize>,
    /// Fields dropped or cut to keep the entry within bounds.
    pub fields_dropped: usize,
    /// Estimated bytes in memory.
    cost: usize,
}

impl LogEntry {
    /// `agent` for a line a worker printed, `supervisor` for the
    /// supervisor's own event about the agent.
    pub fn source(&self) -> &'static str {
        if self.stream == "supervisor" {
            "supervisor"
        } else {
            "agent"
        }
    }
}

impl Serialize for LogEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let timestamp = par_telemetry::logging::timestamp(self.timestamp);
        par_telemetry::logging::Line {
            timestamp: &timestamp,
            level: self.level.as_str(),
            source: self.source(),
            agent_id: Some(&self.agent_id),
            process_id: Some(&self.process_id),
            message: &self.message,
            fields: EntryFields(self),
            seq: Some(self.seq),
            stream: Some(self.stream),
        }
        .serialize(s)
    }
}

/// An entry's fields with what the bounds did to the line.
struct EntryFields<'a>(&'a LogEntry);

impl Serialize for EntryFields<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let e = self.0;
        let ours = |k: &str| {
            (k == "line_bytes" && e.line_bytes.is_some())
                || (k == "fields_dropped" && e.fields_dropped > 0)
        };
        let mut m = s.serialize_map(None)?;
        for (k, v) in e.fields.iter().flatten() {
            if !ours(k) {
                m.serialize_entry(k, v)?;
            }
        }
        if let Some(n) = e.line_bytes {
            m.serialize_entry("line_bytes", &n)?;
        }
        if e.fields_dropped > 0 {
            m.serialize_entry("fields_dropped", &e.fields_dropped)?;
        }
        m.end()
    }
}

/// Bytes a value holds, roughly as the allocator sees them.
fn value_cost(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(|v| 32 + value_cost(v)).sum(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| FIELD_OVERHEAD + k.len() + value_cost(v))
            .sum(),
        _ => 0,
    }
}

#[derive(Default)]
struct Ring {
    entries: VecDeque<Arc<LogEntry>>,
    bytes: usize,
}

#[derive(Default)]
struct Rings {
    by_process: HashMap<String, Ring>,
    bytes: usize,
}

impl Rings {
    fn pop_front(&mut self, process_id: &str) -> bool {
        let Some(ring) = self.by_process.get_mut(process_id) else {
            return false;
        };
        let Some(e) = ring.entries.pop_front() else {
            return false;
        };
        ring.bytes -= e.cost;
        self.bytes -= e.cost;
        true
    }

    fn remove(&mut self, process_id: &str) -> usize {
        let Some(ring) = self.by_process.remove(process_id) else {
            return 0;
        };
        self.bytes -= ring.bytes;
        ring.entries.len()
    }
}

/// Counts of what the bounds took away, for `/metrics` and the status.
#[derive(Debug, Default)]
pub struct Counters {
    /// Lines cut at [`Limits::line_bytes`].
    pub lines_cut: AtomicU64,
    /// Fields dropped or cut by [`FieldLimits`].
    pub fields_dropped: AtomicU64,
    /// Entries pushed out of a ring by its byte bound or the total one.
    pub evicted_for_bytes: AtomicU64,
}

/// The rings of all processes and the stream of new entries.
pub struct LogStore {
    rings: Mutex<Rings>,
    limits: Limits,
    seq: AtomicU64,
    tx: broadcast::Sender<Arc<LogEntry>>,
    out: std::sync::mpsc::SyncSender<Arc<LogEntry>>,
    out_bytes: Arc<AtomicUsize>,
    /// Lines not written to stdout because it could not keep up.
    pub dropped: AtomicU64,
    pub counters: Counters,
}

/// Filters of `GET /supervisor/logs`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub process_id: Option<String>,
    pub level: Option<Level>,
    pub since: Option<SystemTime>,
    pub limit: Option<usize>,
}

impl Filter {
    pub fn matches(&self, e: &LogEntry) -> bool {
        self.process_id
            .as_deref()
            .is_none_or(|p| p == e.process_id || p == e.agent_id)
            && self.level.is_none_or(|l| e.level >= l)
            && self.since.is_none_or(|s| e.timestamp >= s)
    }
}

impl LogStore {
    /// `emit`: re-emit each entry on stdout (from a dedicated thread, so a
    /// slow stdout never blocks the async runtime).
    pub fn new(limits: Limits, emit: bool) -> Arc<Self> {
        let (out, rx) = std::sync::mpsc::sync_channel::<Arc<LogEntry>>(4096);
        let out_bytes = Arc::new(AtomicUsize::new(0));
        if emit {
            let queued = Arc::clone(&out_bytes);
            let _ = std::thread::Builder::new()
                .name("par-log-out".into())
                .spawn(move || {
                    let stdout = std::io::stdout();
                    let mut buf = Vec::with_capacity(512);
                    while let Ok(e) = rx.recv() {
                        buf.clear();
                        if serde_json::to_writer(&mut buf, &*e).is_ok() {
                            buf.push(b'\n');
                            let _ = stdout.lock().write_all(&buf);
                        }
                        queued.fetch_sub(e.cost, Ordering::Relaxed);
                        drop(e);
                        if buf.capacity() > 64 << 10 {
                            buf = Vec::with_capacity(512);
                        }
                    }
                });
        }
        let (tx, _) = broadcast::channel(FOLLOW_BACKLOG);
        Arc::new(LogStore {
            rings: Mutex::new(Rings::default()),
            limits,
            seq: AtomicU64::new(0),
            tx,
            out,
            out_bytes,
            dropped: AtomicU64::new(0),
            counters: Counters::default(),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A line a worker printed (at most [`Limits::line_bytes`] of it).
    pub fn push(&self, agent_id: &str, process_id: &str, stream: &'static str, line: &str) {
        self.push_line(agent_id, process_id, stream, line, None);
    }

    /// A line a worker printed; `cut_from`: its length as printed when
    /// `line` is only its start. A line longer than the limit is cut here.
    pub fn push_line(
        &self,
        agent_id: &str,
        process_id: &str,
        stream: &'static str,
        line: &str,
        cut_from: Option<usize>,
    ) {
        let limit = self.limits.line_bytes;
        let (line, cut_from) = match cut_from {
            Some(n) => (line.get(..line.len().min(limit)).unwrap_or(line), Some(n)),
            None if line.len() > limit => (line, Some(line.len())),
            None => (line, None),
        };
        let mut p = match cut_from {
            // A cut JSON line is no longer JSON: it is kept as text.
            Some(n) => {
                self.counters.lines_cut.fetch_add(1, Ordering::Relaxed);
                let mut end = line.len().min(limit);
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                Parsed {
                    level: cut_level(line, stream),
                    message: format!("{}… [cut: {n} bytes]", &line[..end]),
                    fields: None,
                    fields_dropped: 0,
                }
            }
            None => parse_line(line, stream, self.limits.fields),
        };
        if p.fields_dropped > 0 {
            self.counters
                .fields_dropped
                .fetch_add(p.fields_dropped as u64, Ordering::Relaxed);
        }
        let fields = p.fields.take();
        let entry = self.entry(agent_id, process_id, stream, p.level, p.message, fields);
        self.add(LogEntry {
            line_bytes: cut_from,
            fields_dropped: p.fields_dropped,
            ..entry
        });
    }

    /// The supervisor's own event about an agent (stream `supervisor`, under
    /// its first process).
    pub fn record(
        &self,
        agent_id: &str,
        level: Level,
        message: String,
        fields: Option<Map<String, Value>>,
    ) {
        let process_id = par_contract::process_id(agent_id, 0);
        let entry = self.entry(agent_id, &process_id, "supervisor", level, message, fields);
        self.add(entry);
    }

    fn entry(
        &self,
        agent_id: &str,
        process_id: &str,
        stream: &'static str,
        level: Level,
        message: String,
        fields: Option<Map<String, Value>>,
    ) -> LogEntry {
        LogEntry {
            seq: 0,
            timestamp: SystemTime::now(),
            level,
            process_id: process_id.to_string(),
            agent_id: agent_id.to_string(),
            stream,
            message,
            fields,
            line_bytes: None,
            fields_dropped: 0,
            cost: 0,
        }
    }

    fn add(&self, mut entry: LogEntry) {
        entry.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        entry.cost = ENTRY_OVERHEAD
            + entry.message.capacity()
            + entry.process_id.capacity()
            + entry.agent_id.capacity()
            + entry.fields.as_ref().map_or(0, |f| {
                f.iter()
                    .map(|(k, v)| FIELD_OVERHEAD + k.len() + value_cost(v))
                    .sum()
            });
        let entry = Arc::new(entry);
        let stream = entry.stream;
        {
            let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
            let ring = rings
                .by_process
                .entry(entry.process_id.clone())
                .or_default();
            ring.entries.push_back(Arc::clone(&entry));
            ring.bytes += entry.cost;
            rings.bytes += entry.cost;
            self.evict(&mut rings, &entry.process_id);
        }
        if stream != "supervisor" {
            let queued = self.out_bytes.fetch_add(entry.cost, Ordering::Relaxed);
            if queued + entry.cost > OUT_BYTES || self.out.try_send(Arc::clone(&entry)).is_err() {
                self.out_bytes.fetch_sub(entry.cost, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _ = self.tx.send(entry);
    }

    /// Applies the bounds after an entry was added to `process_id`'s ring.
    fn evict(&self, rings: &mut Rings, process_id: &str) {
        let l = &self.limits;
        while let Some(ring) = rings.by_process.get(process_id) {
            let over_bytes = ring.bytes > l.bytes_per_process && ring.entries.len() > 1;
            if ring.entries.len() <= l.lines_per_process && !over_bytes {
                break;
            }
            if over_bytes {
                self.counters
                    .evicted_for_bytes
                    .fetch_add(1, Ordering::Relaxed);
            }
            rings.pop_front(process_id);
        }
        while rings.bytes > l.bytes_total {
            let Some(largest) = rings
                .by_process
                .iter()
                .filter(|(_, r)| !r.entries.is_empty())
                .max_by_key(|(_, r)| r.bytes)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            rings.pop_front(&largest);
            self.counters
                .evicted_for_bytes
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Bytes the rings hold now (estimated).
    pub fn bytes(&self) -> usize {
        self.rings.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }

    /// Matching entries in order, the newest `limit` of them.
    pub fn query(&self, f: &Filter) -> Vec<Arc<LogEntry>> {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Arc<LogEntry>> = rings
            .by_process
            .values()
            .flat_map(|r| r.entries.iter())
            .filter(|e| f.matches(e))
            .cloned()
            .collect();
        drop(rings);
        out.sort_by_key(|e| e.seq);
        if let Some(limit) = f.limit {
            let skip = out.len().saturating_sub(limit);
            out.drain(..skip);
        }
        out
    }

    /// The last `n` error lines a process printed at or after `since` (one
    /// worker's own lines: those of an earlier run are not its reason).
    pub fn last_errors_since(&self, process_id: &str, n: usize, since: SystemTime) -> Vec<String> {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ring) = rings.by_process.get(process_id) else {
            return Vec::new();
        };
        let mut v: Vec<String> = ring
            .entries
            .iter()
            .rev()
            .filter(|e| e.level >= Level::Error && e.stream != "supervisor" && e.timestamp >= since)
            .take(n)
            .map(|e| {
                // A structured line keeps its cause in `error` (e.g. the worker's
                // "agent failed" with the manifest problems).
                match e.fields.as_ref().and_then(|f| f.get("error")) {
                    Some(Value::String(err)) if !e.message.contains(err.as_str()) => {
                        format!("{}: {}", e.message, err.replace('\n', " "))
                    }
                    _ => e.message.clone(),
                }
            })
            .collect();
        v.reverse();
        v
    }

    pub fn clear(&self, process_id: Option<&str>) -> usize {
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        match process_id {
            Some(p) => rings.remove(p),
            None => {
                rings.bytes = 0;
                rings.by_process.drain().map(|(_, r)| r.entries.len()).sum()
            }
        }
    }

    /// Drops every ring of an agent's processes.
    pub fn forget(&self, agent_id: &str) {
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = rings
            .by_process
            .iter()
            .filter(|(_, r)| r.entries.front().is_some_and(|e| e.agent_id == agent_id))
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            rings.remove(&p);
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogEntry>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests;
