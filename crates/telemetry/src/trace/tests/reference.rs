//! The export request built as `proto`'s messages, what the encoder's bytes
//! are checked against (`the_encoding_is_protos`).

use crate::trace::{proto, Attribute, SpanData, Status, Value};

/// The same request built as `proto`'s messages (tests: what the encoder's
/// bytes are checked against).
pub(super) fn request(
    resource: &[(String, Value)],
    batch: &[Box<SpanData>],
) -> proto::ExportTraceServiceRequest {
    fn any_value(v: &Value, of: Option<&SpanData>) -> proto::AnyValue {
        use proto::any_value::Value as V;
        proto::AnyValue {
            value: Some(match v {
                Value::Str(s) => V::StringValue(s.to_string()),
                Value::Shared(s) => V::StringValue(s.to_string()),
                Value::Header(h) => V::StringValue(h.to_str().unwrap().to_string()),
                Value::Text(a, b) => {
                    V::StringValue(of.unwrap().text[*a as usize..*b as usize].to_string())
                }
                Value::Int(i) => V::IntValue(*i),
                Value::Float(f) => V::DoubleValue(*f),
                Value::Bool(b) => V::BoolValue(*b),
            }),
        }
    }
    fn kv(k: &str, v: &Value, of: Option<&SpanData>) -> proto::KeyValue {
        proto::KeyValue {
            key: k.into(),
            value: Some(any_value(v, of)),
        }
    }
    fn attributes(a: &[Attribute], of: &SpanData) -> Vec<proto::KeyValue> {
        a.iter().map(|(k, v)| kv(k, v, Some(of))).collect()
    }
    let span = |s: &SpanData| proto::Span {
        trace_id: s.context.trace_id.0.to_vec(),
        span_id: s.context.span_id.0.to_vec(),
        trace_state: s.context.state.as_deref().unwrap_or("").to_string(),
        parent_span_id: s.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
        name: s.name().to_string(),
        kind: s.kind as i32,
        start_time_unix_nano: s.start,
        end_time_unix_nano: s.end,
        attributes: attributes(&s.attributes, s),
        dropped_attributes_count: s.dropped_attributes,
        events: s
            .events
            .iter()
            .map(|e| proto::Event {
                time_unix_nano: e.time,
                name: e.name.to_string(),
                attributes: attributes(&s.event_attributes[e.attributes.clone()], s),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: s.dropped_events,
        links: s
            .links
            .iter()
            .map(|(c, a)| proto::Link {
                trace_id: c.trace_id.0.to_vec(),
                span_id: c.span_id.0.to_vec(),
                trace_state: c.state.as_deref().unwrap_or("").to_string(),
                attributes: attributes(a, s),
                dropped_attributes_count: 0,
                flags: u32::from(c.flags),
            })
            .collect(),
        dropped_links_count: 0,
        status: match &s.status {
            Status::Unset => None,
            Status::Ok => Some(proto::Status {
                message: String::new(),
                code: 1,
            }),
            Status::Error(m) => Some(proto::Status {
                message: m.to_string(),
                code: 2,
            }),
        },
        flags: u32::from(s.context.flags),
    };
    proto::ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: Some(proto::Resource {
                attributes: resource.iter().map(|(k, v)| kv(k, v, None)).collect(),
                dropped_attributes_count: 0,
            }),
            scope_spans: vec![proto::ScopeSpans {
                scope: Some(proto::InstrumentationScope {
                    name: "par".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans: batch.iter().map(|s| span(s)).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}
