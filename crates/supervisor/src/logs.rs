//! Worker log capture: line parsing, the bounded ring per process, followers,
//! and re-emission on the supervisor's stdout as one JSON line each.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::broadcast;

/// Longest kept line; the rest is cut (a runaway print cannot eat memory).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" | "notice" => Level::Info,
            "warn" | "warning" => Level::Warn,
            "error" | "err" | "critical" | "fatal" | "exception" => Level::Error,
            _ => return None,
        })
    }
}

/// One captured line.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub seq: u64,
    #[serde(serialize_with = "ser_time")]
    pub timestamp: SystemTime,
    pub level: Level,
    pub process_id: String,
    pub agent_id: String,
    pub stream: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Map<String, Value>>,
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// Parses a line: a JSON object (tracing-subscriber's or a Python logger's)
/// gives level, message and fields; anything else is the message itself, at
/// `info` on stdout and `error` on stderr... unless it looks like a warning.
pub fn parse_line(line: &str, stream: &'static str) -> (Level, String, Option<Map<String, Value>>) {
    let default = if stream == "stderr" {
        Level::Error
    } else {
        Level::Info
    };
    if line.starts_with('{') {
        if let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(line) {
            let level = obj
                .remove("level")
                .or_else(|| obj.remove("levelname"))
                .and_then(|v| v.as_str().and_then(Level::parse))
                .unwrap_or(default);
            let mut fields = match obj.remove("fields") {
                Some(Value::Object(f)) => f,
                _ => Map::new(),
            };
            let message = fields
                .remove("message")
                .or_else(|| obj.remove("message"))
                .or_else(|| obj.remove("msg"))
                .map(|v| match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .unwrap_or_default();
            obj.remove("timestamp");
            for (k, v) in obj {
                fields.entry(k).or_insert(v);
            }
            return (level, message, (!fields.is_empty()).then_some(fields));
        }
    }
    let upper = line.get(..12).unwrap_or(line).to_ascii_uppercase();
    let level = if upper.contains("WARN") {
        Level::Warn
    } else if upper.starts_with("INFO") || upper.contains(" INFO") {
        Level::Info
    } else if upper.starts_with("DEBUG") {
        Level::Debug
    } else {
        default
    };
    (level, line.to_string(), None)
}

/// The rings of all processes and the stream of new entries.
pub struct LogStore {
    rings: Mutex<HashMap<String, VecDeque<Arc<LogEntry>>>>,
    per_process: usize,
    seq: AtomicU64,
    tx: broadcast::Sender<Arc<LogEntry>>,
    out: std::sync::mpsc::SyncSender<Arc<LogEntry>>,
    /// Lines not written to stdout because it could not keep up.
    pub dropped: AtomicU64,
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
    pub fn new(per_process: usize, emit: bool) -> Arc<Self> {
        let (out, rx) = std::sync::mpsc::sync_channel::<Arc<LogEntry>>(4096);
        if emit {
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
                    }
                });
        }
        let (tx, _) = broadcast::channel(1024);
        Arc::new(LogStore {
            rings: Mutex::new(HashMap::new()),
            per_process,
            seq: AtomicU64::new(0),
            tx,
            out,
            dropped: AtomicU64::new(0),
        })
    }

    /// A line a worker printed.
    pub fn push(&self, agent_id: &str, process_id: &str, stream: &'static str, line: &str) {
        let (level, message, fields) = parse_line(line, stream);
        self.add(agent_id, process_id, stream, level, message, fields);
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
        self.add(agent_id, &process_id, "supervisor", level, message, fields);
    }

    fn add(
        &self,
        agent_id: &str,
        process_id: &str,
        stream: &'static str,
        level: Level,
        message: String,
        fields: Option<Map<String, Value>>,
    ) {
        let entry = Arc::new(LogEntry {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            timestamp: SystemTime::now(),
            level,
            process_id: process_id.to_string(),
            agent_id: agent_id.to_string(),
            stream,
            message,
            fields,
        });
        {
            let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
            let ring = rings.entry(entry.process_id.clone()).or_default();
            if ring.len() >= self.per_process {
                ring.pop_front();
            }
            ring.push_back(Arc::clone(&entry));
        }
        if stream != "supervisor" && self.out.try_send(Arc::clone(&entry)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.tx.send(entry);
    }

    /// Matching entries in order, the newest `limit` of them.
    pub fn query(&self, f: &Filter) -> Vec<Arc<LogEntry>> {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Arc<LogEntry>> = rings
            .values()
            .flat_map(|r| r.iter())
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
        let Some(ring) = rings.get(process_id) else {
            return Vec::new();
        };
        let mut v: Vec<String> = ring
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
            Some(p) => rings.remove(p).map_or(0, |r| r.len()),
            None => rings.drain().map(|(_, r)| r.len()).sum(),
        }
    }

    /// Drops every ring of an agent's processes.
    pub fn forget(&self, agent_id: &str) {
        self.rings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, ring| ring.front().is_none_or(|e| e.agent_id != agent_id));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogEntry>> {
        self.tx.subscribe()
    }
}

/// Reads lines from a worker pipe into the store until EOF; lines longer than
/// [`MAX_LINE`] are cut.
pub async fn capture(
    store: Arc<LogStore>,
    agent_id: String,
    process_id: String,
    stream: &'static str,
    pipe: impl AsyncRead + Unpin,
) {
    let mut reader = BufReader::with_capacity(8 * 1024, pipe);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    loop {
        let (done, used) = match reader.fill_buf().await {
            Err(_) => break,
            Ok([]) => {
                if !line.is_empty() {
                    store.push(
                        &agent_id,
                        &process_id,
                        stream,
                        String::from_utf8_lossy(&line).trim_end(),
                    );
                }
                break;
            }
            Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let room = MAX_LINE.saturating_sub(line.len());
                    line.extend_from_slice(&buf[..i.min(room)]);
                    (true, i + 1)
                }
                None => {
                    let room = MAX_LINE.saturating_sub(line.len());
                    line.extend_from_slice(&buf[..buf.len().min(room)]);
                    (false, buf.len())
                }
            },
        };
        reader.consume(used);
        if done {
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches('\r');
            if !text.is_empty() {
                store.push(&agent_id, &process_id, stream, text);
            }
            line.clear();
            if line.capacity() > 4096 {
                line.shrink_to(256);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tracing_json_and_plain_lines() {
        let (l, m, f) = parse_line(
            r#"{"timestamp":"2024-01-01T00:00:00Z","level":"WARN","fields":{"message":"slow","ms":12},"target":"w"}"#,
            "stdout",
        );
        assert_eq!(l, Level::Warn);
        assert_eq!(m, "slow");
        let f = f.unwrap();
        assert_eq!(f["ms"], 12);
        assert_eq!(f["target"], "w");
        assert_eq!(parse_line("hello", "stdout").0, Level::Info);
        assert_eq!(
            parse_line("Traceback (most recent call last):", "stderr").0,
            Level::Error
        );
        assert_eq!(parse_line("{not json", "stdout").1, "{not json");
    }

    #[tokio::test]
    async fn ring_is_bounded_and_filters_work() {
        let store = LogStore::new(3, false);
        for i in 0..5 {
            store.push("a", "par-a", "stdout", &format!("line {i}"));
        }
        store.push("b", "par-b", "stderr", "boom");
        let all = store.query(&Filter::default());
        assert_eq!(
            all.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            ["line 2", "line 3", "line 4", "boom"]
        );
        let f = Filter {
            process_id: Some("par-b".into()),
            ..Default::default()
        };
        assert_eq!(store.query(&f).len(), 1);
        let f = Filter {
            level: Some(Level::Error),
            ..Default::default()
        };
        assert_eq!(store.query(&f)[0].agent_id, "b");
        let f = Filter {
            limit: Some(1),
            ..Default::default()
        };
        assert_eq!(store.query(&f)[0].message, "boom");
        assert_eq!(
            store.last_errors_since("par-b", 5, SystemTime::UNIX_EPOCH),
            ["boom"]
        );
        assert_eq!(store.clear(None), 4);
    }

    #[test]
    fn last_errors_keep_the_structured_cause_and_honour_since() {
        let store = LogStore::new(10, false);
        let line = r#"{"level":"ERROR","message":"agent failed","error":"invalid manifest\n  - version: expected a string"}"#;
        let (level, message, fields) = parse_line(line, "stdout");
        store.add("a", "par-a", "stdout", level, message, fields);
        assert_eq!(
            store.last_errors_since("par-a", 5, SystemTime::UNIX_EPOCH),
            ["agent failed: invalid manifest   - version: expected a string"]
        );
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert!(store.last_errors_since("par-a", 5, later).is_empty());
    }

    #[tokio::test]
    async fn capture_cuts_long_lines() {
        let store = LogStore::new(10, false);
        let mut data = vec![b'x'; MAX_LINE * 2];
        data.extend_from_slice(b"\nshort\nlast");
        capture(
            Arc::clone(&store),
            "a".into(),
            "par-a".into(),
            "stdout",
            &data[..],
        )
        .await;
        let got = store.query(&Filter::default());
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].message.len(), MAX_LINE);
        assert_eq!(got[1].message, "short");
        assert_eq!(got[2].message, "last");
    }
}
