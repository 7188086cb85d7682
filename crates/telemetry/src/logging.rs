//! `tracing` to stdout, one rule for every mode: `PAR_LOG` is the filter
//! (default `info`); `PAR_LOG_FORMAT=json|pretty` the format, and without it
//! JSON (one object per line, what CloudWatch and the supervisor read) unless
//! stdout is a terminal.
//!
//! Every JSON line a PAR process writes, its own events and (in the
//! supervisor) the lines of the agents it re-emits, has one schema, [`Line`]:
//!
//! ```json
//! {"timestamp":"2025-01-01T12:00:00.123Z","level":"info","source":"supervisor",
//!  "agent_id":null,"process_id":null,"message":"supervisor listening",
//!  "fields":{"port":8080,"target":"par_supervisor::supervisor"}}
//! ```
//!
//! An event's `agent_id` (or `agent`) and `process_id` (or `process`)
//! fields, its own or those of the spans it is in, become the line's
//! `agent_id` and `process_id`; every other field, the event's target
//! included, goes into `fields`.

use std::cell::RefCell;
use std::io::{IsTerminal as _, Write as _};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The format `PAR_LOG_FORMAT` and stdout ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Pretty,
}

impl Format {
    pub fn choose(var: Option<&str>, terminal: bool) -> Format {
        match var.map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("json") => Format::Json,
            Some(v) if v.eq_ignore_ascii_case("pretty") => Format::Pretty,
            _ if terminal => Format::Pretty,
            _ => Format::Json,
        }
    }
}

/// The keys every JSON line has, in the order they are written.
pub const REQUIRED_KEYS: [&str; 7] = [
    "timestamp",
    "level",
    "source",
    "agent_id",
    "process_id",
    "message",
    "fields",
];

/// One JSON log line: the one schema of every line PAR writes to stdout.
/// `seq` and `stream` are set on the lines of agents only (the supervisor's
/// re-emission of what a worker printed) and left out of all others.
#[derive(Debug, Serialize)]
pub struct Line<'a, F: Serialize> {
    /// RFC 3339, UTC, milliseconds ([`timestamp`]).
    pub timestamp: &'a str,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'a str,
    /// `supervisor`, `worker` (a worker's own events) or `agent` (a line a
    /// worker printed, re-emitted by the supervisor).
    pub source: &'a str,
    pub agent_id: Option<&'a str>,
    pub process_id: Option<&'a str>,
    pub message: &'a str,
    /// Every other key/value: an object, empty when there are none.
    pub fields: F,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<&'a str>,
}

/// A line's `timestamp`: RFC 3339 in UTC with milliseconds
/// (`2025-01-01T12:00:00.123Z`).
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The lowercase spelling of a `tracing` level.
pub fn level_name(l: &tracing::Level) -> &'static str {
    match *l {
        tracing::Level::TRACE => "trace",
        tracing::Level::DEBUG => "debug",
        tracing::Level::INFO => "info",
        tracing::Level::WARN => "warn",
        tracing::Level::ERROR => "error",
    }
}

/// Installs the subscriber (once; later calls do nothing). `source` names
/// this process's own lines (`supervisor`, `worker`).
pub fn init(source: &'static str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PAR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let var = std::env::var("PAR_LOG_FORMAT").ok();
    let format = Format::choose(var.as_deref(), std::io::stdout().is_terminal());
    match format {
        Format::Pretty => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stdout)
                .try_init();
        }
        Format::Json => {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(JsonLayer::new(source, std::io::stdout))
                .try_init();
        }
    }
}

/// Writes each event as one [`Line`] to what `make_writer` gives.
pub struct JsonLayer<W> {
    source: &'static str,
    make_writer: W,
}

impl<W> JsonLayer<W> {
    pub fn new(source: &'static str, make_writer: W) -> Self {
        JsonLayer {
            source,
            make_writer,
        }
    }
}

/// A span's fields, kept in its extensions.
struct SpanFields(Map<String, Value>);

struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, v: Value) {
        self.0.insert(field.name().to_string(), v);
    }
}

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.put(field, v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = i64::try_from(value).map_or_else(|_| value.to_string().into(), Value::from);
        self.put(field, v);
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = u64::try_from(value).map_or_else(|_| value.to_string().into(), Value::from);
        self.put(field, v);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, crate::error_chain(value).into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// Takes the first of `keys` out of `fields` as a string (`null` is none).
fn take_id(fields: &mut Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match fields.remove(*k)? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut map = Map::new();
        attrs.record(&mut Fields(&mut map));
        span.extensions_mut().insert(SpanFields(map));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        match ext.get_mut::<SpanFields>() {
            Some(SpanFields(map)) => values.record(&mut Fields(map)),
            None => {
                let mut map = Map::new();
                values.record(&mut Fields(&mut map));
                ext.insert(SpanFields(map));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(map)) = span.extensions().get::<SpanFields>() {
                    fields.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        event.record(&mut Fields(&mut fields));
        let meta = event.metadata();
        let message = match fields.remove("message") {
            Some(Value::String(s)) => s,
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        // Events from the `log` crate carry their origin as `log.*` fields.
        let target = match fields.remove("log.target") {
            Some(Value::String(t)) => t,
            _ => meta.target().to_string(),
        };
        fields.retain(|k, _| !k.starts_with("log."));
        let agent_id = take_id(&mut fields, &["agent_id", "agent"]);
        let process_id = take_id(&mut fields, &["process_id", "process"]);
        fields.entry("target").or_insert(Value::String(target));
        let now = timestamp(SystemTime::now());
        let line = Line {
            timestamp: &now,
            level: level_name(meta.level()),
            source: self.source,
            agent_id: agent_id.as_deref(),
            process_id: process_id.as_deref(),
            message: &message,
            fields: &fields,
            seq: None,
            stream: None,
        };
        thread_local! {
            static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        BUF.with(|buf| {
            let Ok(mut buf) = buf.try_borrow_mut() else {
                return;
            };
            buf.clear();
            if serde_json::to_writer(&mut *buf, &line).is_ok() {
                buf.push(b'\n');
                // One write per line, so lines of several threads never mix.
                let _ = self.make_writer.make_writer().write_all(&buf);
            }
            if buf.capacity() > 64 << 10 {
                *buf = Vec::new();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn one_rule() {
        assert_eq!(Format::choose(Some("json"), true), Format::Json);
        assert_eq!(Format::choose(Some("PRETTY"), false), Format::Pretty);
        assert_eq!(Format::choose(None, false), Format::Json);
        assert_eq!(Format::choose(None, true), Format::Pretty);
        assert_eq!(Format::choose(Some("bogus"), false), Format::Json);
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn lines(f: impl FnOnce()) -> Vec<Value> {
        let buf = Buf::default();
        let sub = tracing_subscriber::registry().with(JsonLayer::new("supervisor", buf.clone()));
        tracing::subscriber::with_default(sub, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn every_event_is_one_line_of_the_schema() {
        let got = lines(|| {
            tracing::info!(port = 8080u16, "supervisor listening");
            tracing::warn!(agent = %"echo", ports = ?[1, 2], "busy");
            let span = tracing::info_span!("proc", process_id = "par-echo", agent_id = "echo");
            let _g = span.enter();
            tracing::error!(target: "par::access", status = 502, ms = 1.5, "proxied");
        });
        assert_eq!(got.len(), 3);
        for v in &got {
            let o = v.as_object().unwrap();
            let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let mut want = REQUIRED_KEYS.to_vec();
            want.sort_unstable();
            assert_eq!(keys, want, "{v}");
            let ts = v["timestamp"].as_str().unwrap();
            assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
            assert_eq!(ts.len(), "2025-01-01T12:00:00.123Z".len(), "{ts}");
            assert_eq!(v["source"], "supervisor");
        }
        assert_eq!(got[0]["level"], "info");
        assert_eq!(got[0]["message"], "supervisor listening");
        assert_eq!(got[0]["fields"]["port"], 8080);
        assert_eq!(got[0]["agent_id"], Value::Null);
        assert!(got[0]["fields"]["target"].as_str().is_some());
        assert_eq!(got[1]["level"], "warn");
        assert_eq!(got[1]["agent_id"], "echo");
        assert_eq!(got[1]["fields"]["ports"], "[1, 2]");
        assert!(got[1]["fields"].get("agent").is_none());
        assert_eq!(got[2]["level"], "error");
        assert_eq!(got[2]["agent_id"], "echo");
        assert_eq!(got[2]["process_id"], "par-echo");
        assert_eq!(got[2]["fields"]["target"], "par::access");
        assert_eq!(got[2]["fields"]["status"], 502);
        assert_eq!(got[2]["fields"]["ms"], 1.5);
    }
}
