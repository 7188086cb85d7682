//! One captured line: its level, message and fields, with the fields bounded
//! (how many are kept and how large each may be) so that a line an agent
//! prints costs at most a known amount of memory once parsed.

use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// A line's level: the state machine's own log records have one too.
pub use crate::model::Level;

/// How much of a JSON line's fields is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLimits {
    /// Fields kept per line; later ones are dropped.
    pub count: usize,
    /// Largest field, as JSON text: a longer string is cut (with a marker),
    /// any other longer value is dropped.
    pub bytes: usize,
}

impl Default for FieldLimits {
    fn default() -> Self {
        FieldLimits {
            count: 64,
            bytes: 4096,
        }
    }
}

/// A parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub level: Level,
    pub message: String,
    pub fields: Option<Map<String, Value>>,
    /// Fields dropped or cut by [`FieldLimits`].
    pub fields_dropped: usize,
}

/// Keys with a meaning of their own in a structured line.
const KNOWN: [&str; 9] = [
    "level",
    "levelname",
    "message",
    "msg",
    "timestamp",
    "fields",
    "source",
    "agent_id",
    "process_id",
];

/// Keys of PAR's own log schema that the supervisor sets itself on a line it
/// re-emits: dropped from a line in that schema (a worker's own events), an
/// ordinary field of any other line.
const SCHEMA_IDS: [&str; 3] = ["source", "agent_id", "process_id"];

/// Parses a line: a JSON object (tracing-subscriber's or a Python logger's)
/// gives level, message and fields; anything else is the message itself, at
/// `info` on stdout and `error` on stderr... unless it looks like a warning.
pub fn parse_line(line: &str, stream: &'static str, limits: FieldLimits) -> Parsed {
    let default = if stream == "stderr" {
        Level::Error
    } else {
        Level::Info
    };
    if line.starts_with('{') {
        let mut de = serde_json::Deserializer::from_str(line);
        if let Ok(top) = (Bounded {
            limits,
            known: &KNOWN,
        })
        .deserialize(&mut de)
        {
            if de.end().is_ok() {
                return structured(top, default, limits);
            }
        }
    }
    let level = plain_level(line, stream);
    Parsed {
        level,
        message: line.to_string(),
        fields: None,
        fields_dropped: 0,
    }
}

/// The level of a plain line, from how it starts: `info` on stdout and
/// `error` on stderr unless it says otherwise.
pub fn plain_level(line: &str, stream: &str) -> Level {
    let default = if stream == "stderr" {
        Level::Error
    } else {
        Level::Info
    };
    let head = line.as_bytes()[..line.len().min(12)].to_ascii_uppercase();
    let has = |w: &[u8]| head.windows(w.len()).any(|x| x == w);
    if has(b"WARN") {
        Level::Warn
    } else if head.starts_with(b"INFO") || has(b" INFO") {
        Level::Info
    } else if head.starts_with(b"DEBUG") {
        Level::Debug
    } else {
        default
    }
}

/// The level of a line too long to parse: a JSON line's `level` (or
/// `levelname`) when it is near the start, else as for a plain line.
pub fn cut_level(line: &str, stream: &str) -> Level {
    if line.starts_with('{') {
        let head = &line.as_bytes()[..line.len().min(512)];
        for key in [&b"\"level\""[..], b"\"levelname\""] {
            let Some(i) = head.windows(key.len()).position(|w| w == key) else {
                continue;
            };
            let rest = head[i + key.len()..].trim_ascii_start();
            let Some(rest) = rest.strip_prefix(b":") else {
                continue;
            };
            let Some(rest) = rest.trim_ascii_start().strip_prefix(b"\"") else {
                continue;
            };
            let end = rest.iter().position(|&b| b == b'"').unwrap_or(0);
            if let Some(l) = std::str::from_utf8(&rest[..end])
                .ok()
                .and_then(Level::parse)
            {
                return l;
            }
        }
    }
    plain_level(line, stream)
}

fn structured(mut top: Object, default: Level, limits: FieldLimits) -> Parsed {
    let obj = &mut top.map;
    let level = obj
        .remove("level")
        .or_else(|| obj.remove("levelname"))
        .and_then(|v| v.as_str().and_then(Level::parse))
        .unwrap_or(default);
    if matches!(obj.get("fields"), Some(Value::Object(_))) {
        for k in SCHEMA_IDS {
            obj.remove(k);
        }
    }
    let (mut fields, mut dropped) = match obj.remove("fields") {
        Some(Value::Object(f)) => (f, top.nested_dropped),
        _ => (Map::new(), 0),
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
    for (k, v) in std::mem::take(obj) {
        if fields.contains_key(&k) {
            continue;
        }
        if fields.len() < limits.count {
            fields.insert(k, v);
        } else {
            dropped += 1;
        }
    }
    dropped += top.dropped;
    let mut too_big = Vec::new();
    for (k, v) in fields.iter_mut() {
        let size = json_len(v);
        if size <= limits.bytes {
            continue;
        }
        match v {
            Value::String(s) => *s = cut(s, limits.bytes.saturating_sub(64)),
            _ => too_big.push(k.clone()),
        }
        dropped += 1;
    }
    for k in too_big {
        fields.remove(&k);
    }
    Parsed {
        level,
        message,
        fields: (!fields.is_empty()).then_some(fields),
        fields_dropped: dropped,
    }
}

/// `text` cut to at most `keep` bytes (on a character boundary) with a
/// marker that gives the original length; unchanged when it fits.
pub fn cut(text: &str, keep: usize) -> String {
    if text.len() <= keep {
        return text.to_string();
    }
    let mut end = keep;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [cut: {} bytes]", &text[..end], text.len())
}

/// The length of `v` as JSON text.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// A JSON object read with at most `limits.count` ordinary keys kept (the
/// rest skipped without being built); the `known` keys are kept besides,
/// and a known `fields` is itself read bounded.
struct Bounded {
    limits: FieldLimits,
    known: &'static [&'static str],
}

struct Object {
    map: Map<String, Value>,
    dropped: usize,
    /// Dropped inside a nested `fields` object.
    nested_dropped: usize,
}

impl<'de> DeserializeSeed<'de> for Bounded {
    type Value = Object;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Object, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Bounded {
    type Value = Object;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Object, A::Error> {
        let mut out = Object {
            map: Map::new(),
            dropped: 0,
            nested_dropped: 0,
        };
        let mut ordinary = 0;
        while let Some(key) = access.next_key::<String>()? {
            let known = self.known.contains(&key.as_str());
            if known && out.map.contains_key(&key) {
                access.next_value::<IgnoredAny>()?;
            } else if known && key == "fields" {
                let v: MaybeObject = access.next_value_seed(FieldsSeed(self.limits))?;
                match v {
                    MaybeObject::Object(o) => {
                        out.nested_dropped = o.dropped;
                        out.map.insert(key, Value::Object(o.map));
                    }
                    MaybeObject::Other(v) => {
                        out.map.insert(key, v);
                    }
                }
            } else if known {
                out.map.insert(key, access.next_value()?);
            } else if ordinary < self.limits.count && !out.map.contains_key(&key) {
                ordinary += 1;
                out.map.insert(key, access.next_value()?);
            } else {
                access.next_value::<IgnoredAny>()?;
                out.dropped += 1;
            }
        }
        Ok(out)
    }
}

/// `fields`: an object read bounded, or whatever else it is.
enum MaybeObject {
    Object(Object),
    Other(Value),
}

struct FieldsSeed(FieldLimits);

impl<'de> DeserializeSeed<'de> for FieldsSeed {
    type Value = MaybeObject;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<MaybeObject, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed {
    type Value = MaybeObject;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<MaybeObject, A::Error> {
        // `message` inside `fields` is the message: kept whatever the count.
        Bounded {
            limits: self.0,
            known: &["message"],
        }
        .visit_map(access)
        .map(MaybeObject::Object)
    }

    fn visit_bool<E>(self, v: bool) -> Result<MaybeObject, E> {
        Ok(MaybeObject::Other(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<MaybeObject, E> {
        Ok(MaybeObject::Other(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<MaybeObject, E> {
        Ok(MaybeObject::Other(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<MaybeObject, E> {
        Ok(MaybeObject::Other(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<MaybeObject, E> {
        Ok(MaybeObject::Other(v.into()))
    }
    fn visit_unit<E>(self) -> Result<MaybeObject, E> {
        Ok(MaybeObject::Other(Value::Null))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<MaybeObject, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok(MaybeObject::Other(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str, stream: &'static str) -> Parsed {
        parse_line(line, stream, FieldLimits::default())
    }

    #[test]
    fn parses_tracing_json_and_plain_lines() {
        let p = parse(
            r#"{"timestamp":"2024-01-01T00:00:00Z","level":"WARN","fields":{"message":"slow","ms":12},"target":"w"}"#,
            "stdout",
        );
        assert_eq!(p.level, Level::Warn);
        assert_eq!(p.message, "slow");
        let f = p.fields.unwrap();
        assert_eq!(f["ms"], 12);
        assert_eq!(f["target"], "w");
        assert_eq!(p.fields_dropped, 0);
        assert_eq!(parse("hello", "stdout").level, Level::Info);
        assert_eq!(
            parse("Traceback (most recent call last):", "stderr").level,
            Level::Error
        );
        assert_eq!(parse("{not json", "stdout").message, "{not json");
        // JSON followed by more text is a plain line.
        assert_eq!(parse("{\"a\":1} tail", "stdout").message, "{\"a\":1} tail");
        // A python logger's line.
        let p = parse(
            r#"{"levelname":"ERROR","msg":"boom","error":"x"}"#,
            "stdout",
        );
        assert_eq!((p.level, p.message.as_str()), (Level::Error, "boom"));
    }

    #[test]
    fn a_line_in_the_par_schema_keeps_its_fields_and_not_its_ids() {
        let p = parse(
            r#"{"timestamp":"2025-01-01T00:00:00.000Z","level":"info","source":"worker","agent_id":"echo","process_id":null,"message":"worker listening","fields":{"addr":"127.0.0.1:9000","target":"par_worker::worker"}}"#,
            "stdout",
        );
        assert_eq!(
            (p.level, p.message.as_str()),
            (Level::Info, "worker listening")
        );
        let f = p.fields.unwrap();
        assert_eq!(f.keys().collect::<Vec<_>>(), ["addr", "target"]);
        // Without `fields`, the same keys are the agent's own.
        let p = parse(r#"{"msg":"x","agent_id":"other","source":"db"}"#, "stdout");
        let f = p.fields.unwrap();
        assert_eq!(
            (&f["agent_id"], &f["source"]),
            (&Value::from("other"), &Value::from("db"))
        );
    }

    #[test]
    fn fields_past_the_count_are_dropped_and_counted() {
        let limits = FieldLimits {
            count: 3,
            bytes: 4096,
        };
        let mut line = String::from(r#"{"level":"info","message":"many""#);
        for i in 0..1424 {
            line.push_str(&format!(",\"k{i:04}\":{i}"));
        }
        line.push('}');
        let p = parse_line(&line, "stdout", limits);
        assert_eq!(p.message, "many");
        assert_eq!(p.level, Level::Info);
        let f = p.fields.unwrap();
        assert_eq!(f.keys().collect::<Vec<_>>(), ["k0000", "k0001", "k0002"]);
        assert_eq!(p.fields_dropped, 1421);
        // The same inside tracing's `fields`, whose `message` is always kept.
        let line = r#"{"fields":{"a":1,"b":2,"c":3,"d":4,"message":"m"},"x":1}"#;
        let p = parse_line(line, "stdout", limits);
        assert_eq!(p.message, "m");
        let f = p.fields.unwrap();
        assert_eq!(f.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(p.fields_dropped, 2, "d and x");
    }

    #[test]
    fn large_fields_are_cut_or_dropped() {
        let limits = FieldLimits {
            count: 64,
            bytes: 200,
        };
        let long = "é".repeat(500);
        let line = format!(
            r#"{{"message":"m","error":"{long}","blob":[{}],"small":"ok"}}"#,
            vec!["1"; 300].join(",")
        );
        let p = parse_line(&line, "stdout", limits);
        let f = p.fields.unwrap();
        let err = f["error"].as_str().unwrap();
        assert!(err.len() <= 200, "{}", err.len());
        assert!(err.ends_with("… [cut: 1000 bytes]"), "{err}");
        assert!(!f.contains_key("blob"));
        assert_eq!(f["small"], "ok");
        assert_eq!(p.fields_dropped, 2);
    }

    #[test]
    fn a_cut_json_line_keeps_its_level() {
        assert_eq!(
            cut_level(r#"{"level":"ERROR","message":"x"#, "stdout"),
            Level::Error
        );
        assert_eq!(
            cut_level(r#"{"msg": "x", "levelname": "WARNING", "a"#, "stdout"),
            Level::Warn
        );
        assert_eq!(cut_level(r#"{"message":"x"#, "stderr"), Level::Error);
        assert_eq!(cut_level("WARNING: plain", "stdout"), Level::Warn);
    }

    #[test]
    fn cut_keeps_characters_whole_and_says_how_long_it_was() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("ééé", 3), "é… [cut: 6 bytes]");
        assert_eq!(cut("abcdef", 2), "ab… [cut: 6 bytes]");
    }
}
