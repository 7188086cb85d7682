//! What a span holds: its kind, its attributes' values, its status, and
//! the finished span's data as the exporter receives it.

use std::borrow::Cow;
use std::sync::Arc;

use super::{SpanContext, SpanId};

/// A span's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Cow<'static, str>),
    /// A string shared with what holds it already (an agent's id): no copy.
    Shared(Arc<str>),
    /// A header's value (a process id the proxy holds as one): no copy.
    Header(http::HeaderValue),
    /// Bytes `.0..1` of the span's own text ([`SpanData::text`]), where
    /// [`Span::add_text`](super::Span::add_text) copies a string (no
    /// allocation of its own).
    Text(u32, u32),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Value {
    /// A string value's text (`None` for the other values), `span_text`
    /// the text of the span holding it ([`Value::Text`]); a header's not
    /// UTF-8 replaced, as a `str`'s would be.
    pub fn as_text<'a>(&'a self, span_text: &'a str) -> Option<Cow<'a, str>> {
        match self {
            Value::Str(s) => Some(Cow::Borrowed(s)),
            Value::Shared(s) => Some(Cow::Borrowed(s)),
            Value::Header(h) => Some(String::from_utf8_lossy(h.as_bytes())),
            Value::Text(a, b) => Some(Cow::Borrowed(
                span_text.get(*a as usize..*b as usize).unwrap_or(""),
            )),
            _ => None,
        }
    }
}

impl From<&'static str> for Value {
    fn from(v: &'static str) -> Value {
        Value::Str(Cow::Borrowed(v))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Str(Cow::Owned(v))
    }
}
impl From<Arc<str>> for Value {
    fn from(v: Arc<str>) -> Value {
        Value::Shared(v)
    }
}
impl From<http::HeaderValue> for Value {
    fn from(v: http::HeaderValue) -> Value {
        Value::Header(v)
    }
}
impl From<Cow<'static, str>> for Value {
    fn from(v: Cow<'static, str>) -> Value {
        Value::Str(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(v.into())
    }
}
impl From<u16> for Value {
    fn from(v: u16) -> Value {
        Value::Int(v.into())
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(v.into())
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

pub type Attribute = (&'static str, Value);

/// A span's status.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Status {
    #[default]
    Unset,
    Ok,
    Error(Cow<'static, str>),
}

impl SpanData {
    /// Its name ([`Tracer::start_parts`](super::Tracer::start_parts) writes it in the span's text).
    pub fn name(&self) -> &str {
        match &self.name_at {
            Some(r) => self.text.get(r.clone()).unwrap_or(""),
            None => &self.name,
        }
    }

    /// A string value's text (`None` for the other values).
    pub fn text_of<'a>(&'a self, v: &'a Value) -> Option<Cow<'a, str>> {
        v.as_text(&self.text)
    }
}

/// A recorded event.
#[derive(Debug, Clone)]
pub struct EventData {
    pub time: u64,
    pub name: Cow<'static, str>,
    /// Its attributes: these of the span's `event_attributes`.
    pub attributes: std::ops::Range<usize>,
}

/// What a finished span holds, as the exporter receives it.
#[derive(Debug, Clone)]
pub struct SpanData {
    pub context: SpanContext,
    pub parent: Option<SpanId>,
    pub name: Cow<'static, str>,
    /// The name's place in `text` instead (see [`SpanData::name`]).
    pub name_at: Option<std::ops::Range<usize>>,
    /// Strings the span holds ([`Value::Text`]), one after the other.
    pub text: String,
    pub kind: Kind,
    pub start: u64,
    pub end: u64,
    pub attributes: Vec<Attribute>,
    pub dropped_attributes: u32,
    pub events: Vec<EventData>,
    /// The events' attributes, one after the other (one vector a span).
    pub event_attributes: Vec<Attribute>,
    pub dropped_events: u32,
    pub links: Vec<(SpanContext, Vec<Attribute>)>,
    pub status: Status,
}
