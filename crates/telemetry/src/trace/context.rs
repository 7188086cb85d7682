//! W3C Trace Context: the `traceparent` and `tracestate` headers, parsed
//! strictly and written back, and the AWS `X-Amzn-Trace-Id` an ALB adds.

use std::fmt;

/// A trace id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span id: 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A new random id (never zero).
    pub fn random() -> TraceId {
        loop {
            let v = fastrand::u128(..);
            if v != 0 {
                return TraceId(v.to_be_bytes());
            }
        }
    }
    pub fn to_hex(self) -> String {
        hex(&self.0)
    }
}

impl SpanId {
    /// A new random id (never zero).
    pub fn random() -> SpanId {
        loop {
            let v = fastrand::u64(..);
            if v != 0 {
                return SpanId(v.to_be_bytes());
            }
        }
    }
    pub fn to_hex(self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The length of a `traceparent` (version 00).
pub const TRACEPARENT_LEN: usize = 55;

fn hex(b: &[u8]) -> String {
    let mut buf = [0u8; 32];
    let out = &mut buf[..2 * b.len().min(16)];
    hex_into(&b[..out.len() / 2], out);
    out.iter().map(|&c| c as char).collect()
}

/// Each byte's two hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    t
};

/// `b` as lowercase hex into `out` (twice its length).
fn hex_into(b: &[u8], out: &mut [u8]) {
    for (&c, o) in b.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&HEX_PAIRS[c as usize]);
    }
}

/// `v` without the spaces and tabs around it (HTTP's optional whitespace).
fn trim_ows(v: &[u8]) -> &[u8] {
    let ows = |c: &u8| *c == b' ' || *c == b'\t';
    let start = v.iter().position(|c| !ows(c)).unwrap_or(v.len());
    let end = v.iter().rposition(|c| !ows(c)).map_or(start, |e| e + 1);
    &v[start..end]
}

/// Lowercase hex only (the W3C grammar: `HEXDIGLC`).
fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (digit(s[2 * i])? << 4) | digit(s[2 * i + 1])?;
    }
    Some(out)
}

/// The `sampled` bit of the trace flags.
pub const SAMPLED: u8 = 0x01;

/// What identifies a span across processes: what `traceparent` carries,
/// with the `tracestate` that goes along.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
    /// The `tracestate` header, passed on as it came (vendors' entries).
    pub state: Option<Box<str>>,
}

impl SpanContext {
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// `00-<trace id>-<span id>-<flags>`, 55 characters.
    pub fn traceparent(&self) -> String {
        let b = self.traceparent_bytes();
        // Hex digits and dashes only.
        b.iter().map(|&c| c as char).collect()
    }

    /// The `traceparent` as bytes (lowercase hex and dashes), written
    /// without allocating: what a head written as bytes carries.
    pub fn traceparent_bytes(&self) -> [u8; TRACEPARENT_LEN] {
        let mut b = [b'-'; TRACEPARENT_LEN];
        b[0] = b'0';
        b[1] = b'0';
        hex_into(&self.trace_id.0, &mut b[3..35]);
        hex_into(&self.span_id.0, &mut b[36..52]);
        hex_into(&[self.flags], &mut b[53..55]);
        b
    }

    /// Sets `traceparent` (and `tracestate`, or removes a stale one) in
    /// `headers`: what the next hop's request carries.
    pub fn inject(&self, headers: &mut http::HeaderMap) {
        headers.insert("traceparent", self.traceparent_header());
        match self
            .state
            .as_deref()
            .and_then(|s| http::HeaderValue::from_str(s).ok())
        {
            Some(v) => {
                headers.insert("tracestate", v);
            }
            None => {
                headers.remove("tracestate");
            }
        }
    }

    /// The `traceparent` as a header value.
    pub fn traceparent_header(&self) -> http::HeaderValue {
        http::HeaderValue::from_str(&self.traceparent()).expect("hex is a valid header value")
    }
}

/// Parses a `traceparent` header strictly: version `00`, exactly 55
/// characters, lowercase hex, ids not all zero. `None` for anything else
/// (the caller then starts a new trace).
pub fn parse_traceparent(v: &str) -> Option<SpanContext> {
    parse_traceparent_bytes(v.as_bytes())
}

/// [`parse_traceparent`] of a header's bytes (no `str` or map needed).
pub fn parse_traceparent_bytes(v: &[u8]) -> Option<SpanContext> {
    let b = trim_ows(v);
    if b.len() != 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let [version] = unhex::<1>(&b[0..2])?;
    if version != 0 {
        return None;
    }
    let trace_id = unhex::<16>(&b[3..35])?;
    let span_id = unhex::<8>(&b[36..52])?;
    let [flags] = unhex::<1>(&b[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(SpanContext {
        trace_id: TraceId(trace_id),
        span_id: SpanId(span_id),
        flags,
        state: None,
    })
}

/// A `tracestate` worth passing on: at most 512 characters of printable
/// ASCII, at most 32 list members, each `key=value`. `None` otherwise (the
/// W3C rule: an invalid tracestate is dropped, the traceparent kept).
pub fn parse_tracestate(v: &str) -> Option<Box<str>> {
    parse_tracestate_bytes(v.as_bytes())
}

/// [`parse_tracestate`] of a header's bytes.
pub fn parse_tracestate_bytes(v: &[u8]) -> Option<Box<str>> {
    let v = trim_ows(v);
    if v.is_empty() || v.len() > 512 || !v.iter().all(|c| (0x20..0x7f).contains(c)) {
        return None;
    }
    // Printable ASCII only.
    let v = std::str::from_utf8(v).ok()?;
    let mut members = 0;
    for m in v.split(',') {
        let m = m.trim_matches([' ', '\t']);
        if m.is_empty() {
            continue;
        }
        members += 1;
        let (k, val) = m.split_once('=')?;
        if k.is_empty() || val.is_empty() || k.contains(' ') {
            return None;
        }
    }
    (members > 0 && members <= 32).then(|| v.into())
}

/// The trace an AWS load balancer names in `X-Amzn-Trace-Id`
/// (`Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`):
/// its root as a trace id (the 8 hex digits of time, then 24), its parent
/// when given (else a zero span id: a link to the trace as a whole).
pub fn parse_amzn_trace_id(v: &str) -> Option<SpanContext> {
    let mut root = None;
    let mut parent = None;
    let mut sampled = false;
    for part in v.split(';') {
        let Some((k, val)) = part.trim().split_once('=') else {
            continue;
        };
        match k {
            "Root" => {
                let mut it = val.split('-');
                let (Some("1"), Some(time), Some(rest), None) =
                    (it.next(), it.next(), it.next(), it.next())
                else {
                    return None;
                };
                let mut both = String::with_capacity(32);
                both.push_str(time);
                both.push_str(rest);
                root = Some(unhex::<16>(both.to_ascii_lowercase().as_bytes())?);
            }
            "Parent" => parent = unhex::<8>(val.to_ascii_lowercase().as_bytes()),
            "Sampled" => sampled = val == "1",
            _ => {}
        }
    }
    let root = root.filter(|r| *r != [0; 16])?;
    Some(SpanContext {
        trace_id: TraceId(root),
        span_id: SpanId(parent.unwrap_or([0; 8])),
        flags: if sampled { SAMPLED } else { 0 },
        state: None,
    })
}

/// What a request's headers say about the trace it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Incoming {
    /// The caller's span (`traceparent`, with its `tracestate`), when valid.
    pub parent: Option<SpanContext>,
    /// The trace of an AWS load balancer (`X-Amzn-Trace-Id`), made a link.
    pub link: Option<SpanContext>,
}

impl Incoming {
    /// Reads `traceparent`, `tracestate` and `x-amzn-trace-id`. A header that
    /// appears twice or does not parse counts as absent.
    pub fn from_headers(headers: &http::HeaderMap) -> Incoming {
        let one = |name: &str| {
            let mut all = headers.get_all(name).iter();
            match (all.next(), all.next()) {
                (Some(v), None) => v.to_str().ok(),
                _ => None,
            }
        };
        Incoming::from_values(
            one("traceparent"),
            one("tracestate"),
            one("x-amzn-trace-id"),
        )
    }

    /// The same from the values as bytes (a head read without a map):
    /// each `None` when its header is absent or appears twice.
    pub fn from_bytes(
        traceparent: Option<&[u8]>,
        tracestate: Option<&[u8]>,
        amzn: Option<&[u8]>,
    ) -> Incoming {
        let parent = traceparent.and_then(parse_traceparent_bytes).map(|mut p| {
            p.state = tracestate.and_then(parse_tracestate_bytes);
            p
        });
        Incoming {
            parent,
            link: amzn
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(parse_amzn_trace_id),
        }
    }

    /// The same from the values themselves (gRPC metadata, a host frame).
    pub fn from_values(
        traceparent: Option<&str>,
        tracestate: Option<&str>,
        amzn: Option<&str>,
    ) -> Incoming {
        let parent = traceparent.and_then(parse_traceparent).map(|mut p| {
            p.state = tracestate.and_then(parse_tracestate);
            p
        });
        Incoming {
            parent,
            link: amzn.and_then(parse_amzn_trace_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_w3c_examples_and_refuses_the_rest() {
        let p =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(p.trace_id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id.to_hex(), "00f067aa0ba902b7");
        assert!(p.sampled());
        let p =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!p.sampled());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn tracestate_passes_when_well_formed() {
        assert_eq!(
            parse_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE").as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        assert_eq!(parse_tracestate("novalue"), None);
        assert_eq!(parse_tracestate(&"a=b,".repeat(200)), None);
        assert_eq!(parse_tracestate("a=\u{e9}"), None);
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(parse_tracestate(&many.join(",")), None);
    }

    #[test]
    fn amzn_trace_id_becomes_a_link() {
        let l = parse_amzn_trace_id(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .unwrap();
        assert_eq!(l.trace_id.to_hex(), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(l.span_id.to_hex(), "53995c3f42cd8ad8");
        assert!(l.sampled());
        let l = parse_amzn_trace_id(
            "Self=1-67891234-12456789abcdef012345678;Root=1-67891233-abcdef012345678912345678",
        )
        .unwrap();
        assert_eq!(l.trace_id.to_hex(), "67891233abcdef012345678912345678");
        assert_eq!(l.span_id, SpanId([0; 8]));
        assert_eq!(
            parse_amzn_trace_id("Root=2-5759e988-bd862e3fe1be46a994272793"),
            None
        );
        assert_eq!(parse_amzn_trace_id("Parent=53995c3f42cd8ad8"), None);
    }

    #[test]
    fn headers_twice_or_invalid_start_a_new_trace() {
        let mut h = http::HeaderMap::new();
        h.append(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        h.append("tracestate", "a=b".parse().unwrap());
        let i = Incoming::from_headers(&h);
        assert_eq!(i.parent.as_ref().unwrap().state.as_deref(), Some("a=b"));
        h.append(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(Incoming::from_headers(&h).parent, None);
    }

    #[test]
    fn inject_writes_the_next_hops_headers() {
        let mut h = http::HeaderMap::new();
        h.insert("tracestate", "stale=1".parse().unwrap());
        let mut c =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        c.inject(&mut h);
        assert_eq!(
            h["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert!(h.get("tracestate").is_none());
        c.state = Some("rojo=1".into());
        c.inject(&mut h);
        assert_eq!(h["tracestate"], "rojo=1");
    }

    proptest! {
        #[test]
        fn traceparent_round_trips(t in any::<u128>(), s in any::<u64>(), flags in any::<u8>()) {
            prop_assume!(t != 0 && s != 0);
            let c = SpanContext { trace_id: TraceId(t.to_be_bytes()), span_id: SpanId(s.to_be_bytes()), flags, state: None };
            let text = c.traceparent();
            prop_assert_eq!(text.len(), 55);
            prop_assert_eq!(parse_traceparent(&text), Some(c));
            // Uppercase is not the W3C grammar.
            let upper = text.to_ascii_uppercase();
            if upper != text {
                prop_assert_eq!(parse_traceparent(&upper), None);
            }
        }

        #[test]
        fn any_string_parses_or_not_without_panicking(v in "\\PC{0,80}") {
            if let Some(c) = parse_traceparent(&v) {
                prop_assert_eq!(c.traceparent(), v.trim_matches([' ', '\t']));
            }
            let _ = parse_tracestate(&v);
            let _ = parse_amzn_trace_id(&v);
        }
    }
}
