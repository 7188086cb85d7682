//! A request's session key, first found of:
//! 1. the `x-par-session-id` header;
//! 2. in a JSON body of at most [`MAX_BODY`] bytes: `params.sessionId` (A2A
//!    JSON-RPC `message/send`, `message/stream`, `respond`) or a top-level
//!    `sessionId` (the `/respond` route);
//! 3. for an answer that carries only `clarificationId`, `selectionId`,
//!    `planId` or `permissionId`: the session the agent's own events named
//!    next to that id (recorded from its replies by [`Interactions`]).
//!
//! Every key is checked before use: 1 to [`super::MAX_KEY`] visible ASCII
//! characters (it is echoed in a response header); anything else routes as
//! if there were no key. A body is only parsed when it names one of the
//! fields, so a request without one costs a byte search.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem;

use super::skim;

/// The header any client may send its session key in.
pub const HEADER: &str = "x-par-session-id";
/// On a response whose session had to move to another process.
pub const REBOUND_HEADER: &str = "x-par-session-rebound";
/// Largest body searched for a key; larger ones route without one.
pub const MAX_BODY: usize = 64 * 1024;

/// The ids an agent's answers are matched by, as its events name them.
const INTERACTION_FIELDS: [&str; 4] = ["clarificationId", "selectionId", "planId", "permissionId"];

/// A usable key: 1..=MAX_KEY bytes of visible ASCII.
pub fn valid(key: &[u8]) -> Option<&str> {
    if key.is_empty() || key.len() > super::MAX_KEY || !visible_ascii(key) {
        return None;
    }
    // ASCII is UTF-8; `from_utf8` would check it again (a third of the
    // cost of a key read from a body).
    #[allow(unsafe_code)]
    // SAFETY: every byte was checked to be in 0x21..0x7f just above.
    Some(unsafe { std::str::from_utf8_unchecked(key) })
}

/// Whether every byte is in 0x21..0x7f, eight bytes a step.
fn visible_ascii(b: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let mut chunks = b.chunks_exact(8);
    let mut bad = 0;
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        // A byte's high bit is set where it is below 0x21 (exact when none
        // is: a borrow comes only from one that is), or 0x7f and above
        // (exact when none is: a carry comes only from 0xff).
        bad |= (x.wrapping_sub(ONES * 0x21) & !x) | x.wrapping_add(ONES) | x;
    }
    bad & HIGH == 0 && chunks.remainder().iter().all(|b| (0x21..0x7f).contains(b))
}

/// What a body says about its session (borrowed from it unless written
/// with escapes).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FromBody<'a> {
    pub session: Option<Cow<'a, str>>,
    /// An interaction id answered, when no session is named.
    pub interaction: Option<Cow<'a, str>>,
}

impl<'a> skim::SessionFields<'a> {
    /// Its `sessionId`, when a usable key.
    fn session(&self) -> Option<Cow<'a, str>> {
        self.fields[0].and_then(|s| s.key())
    }

    /// The first of its interaction ids that is a usable key.
    fn interaction(&self) -> Option<Cow<'a, str>> {
        self.fields[1..]
            .iter()
            .find_map(|f| f.and_then(|s| s.key()))
    }
}

/// Whether a body may name a session at all, before any parse: one byte
/// search for `Id"`, each hit checked for one of the names (`"sessionId"`,
/// `"clarificationId"`, ...; an A2A message's `"messageId"` is not one).
pub fn may_name_one(body: &[u8]) -> bool {
    body.len() <= MAX_BODY
        && id_hits(body).any(|end| {
            is_named(body, end, "sessionId")
                || INTERACTION_FIELDS.iter().any(|f| is_named(body, end, f))
        })
}

/// Where each `Id"` in `buf` ends its name (the offset of its `d` + 1).
fn id_hits(buf: &[u8]) -> impl Iterator<Item = usize> + '_ {
    static ID: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"Id\""));
    ID.find_iter(buf).map(|at| at + 2)
}

/// Whether the quoted name ending at `name_end` in `buf` is `"<field>`.
fn is_named(buf: &[u8], name_end: usize, field: &str) -> bool {
    let f = field.as_bytes();
    name_end > f.len()
        && &buf[name_end - f.len()..name_end] == f
        && buf[name_end - f.len() - 1] == b'"'
}

/// The session a request body names, if it is JSON that names one:
/// `params.sessionId`, else a top-level `sessionId`; else the first
/// interaction id of `params`, else of the top. A body that is not JSON,
/// or whose session fields are not strings, names nothing (`skim`).
pub fn from_body(body: &[u8]) -> FromBody<'_> {
    if !may_name_one(body) {
        return FromBody::default();
    }
    named(body)
}

/// `from_body` without the byte search first (made already).
pub fn named(body: &[u8]) -> FromBody<'_> {
    let mut b = skim::Body::default();
    if skim::skim(body, &mut b).is_err() {
        return FromBody::default();
    }
    let session = b.params.session().or_else(|| b.top.session());
    let interaction = if session.is_none() {
        b.params.interaction().or_else(|| b.top.interaction())
    } else {
        None
    };
    FromBody {
        session,
        interaction,
    }
}

/// Finds interaction ids in a reply as it streams by (SSE events or one
/// JSON document), across the boundaries of its chunks. Nothing is
/// allocated until an id is found.
#[derive(Debug)]
pub struct Interactions {
    /// The end of the previous chunk, where a field may have been cut.
    tail: [u8; TAIL],
    tail_len: usize,
    found: Vec<String>,
    /// Also look for the first `sessionId` (a session the agent made up
    /// for a request that named none).
    learn_session: bool,
    session: Option<String>,
}

/// Bytes kept from one chunk to the next: a field name, its value and the
/// separator between them.
const TAIL: usize = super::MAX_KEY + 32;

/// Interaction ids kept per reply.
const MAX_FOUND: usize = 64;

impl Default for Interactions {
    fn default() -> Self {
        Interactions {
            tail: [0; TAIL],
            tail_len: 0,
            found: Vec::new(),
            learn_session: false,
            session: None,
        }
    }
}

impl Interactions {
    /// A scan that also finds the session the reply names.
    pub fn learning_session() -> Self {
        Interactions {
            learn_session: true,
            ..Default::default()
        }
    }

    /// A scan of another reply (`learning`: as `learning_session`), in place.
    pub fn reset(&mut self, learning: bool) {
        self.tail_len = 0;
        self.found.clear();
        self.learn_session = learning;
        self.session = None;
    }

    /// The session the reply named, once (`learning_session`).
    pub fn take_session(&mut self) -> Option<String> {
        self.session.take()
    }

    /// Reads the next bytes of the reply.
    pub fn feed(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let kept = self.tail_len;
        if kept > 0 {
            // A field that starts in the tail and ends in these bytes.
            let mut seam = [0u8; 2 * TAIL];
            let more = bytes.len().min(TAIL);
            seam[..kept].copy_from_slice(&self.tail[..kept]);
            seam[kept..kept + more].copy_from_slice(&bytes[..more]);
            self.scan(&seam[..kept + more], Some(kept));
        }
        self.scan(bytes, None);
        // The last TAIL bytes of the tail and these.
        if bytes.len() >= TAIL {
            self.tail.copy_from_slice(&bytes[bytes.len() - TAIL..]);
            self.tail_len = TAIL;
        } else {
            let keep = kept.min(TAIL - bytes.len());
            self.tail.copy_within(kept - keep..kept, 0);
            self.tail[keep..keep + bytes.len()].copy_from_slice(bytes);
            self.tail_len = keep + bytes.len();
        }
    }

    /// The ids seen so far, taken.
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.found)
    }

    /// Every `"<field>Id": "value"` in `buf`; with `seam`, only those whose
    /// name starts before it (the rest are found in the chunk itself).
    fn scan(&mut self, buf: &[u8], seam: Option<usize>) {
        for name_end in id_hits(buf) {
            // `"clarificationId"`: the longest name, its quote before it.
            if seam.is_some_and(|s| name_end - 2 >= s + "\"clarification".len()) {
                break;
            }
            let named = |field: &str| is_named(buf, name_end, field);
            let learnt = self.learn_session && named("sessionId");
            if !learnt && !INTERACTION_FIELDS.iter().any(|f| named(f)) {
                continue;
            }
            let Some((value, _)) = value_after(&buf[name_end + 1..]) else {
                continue;
            };
            if learnt {
                self.session = Some(value.to_owned());
                self.learn_session = false;
            } else if self.found.len() < MAX_FOUND && !self.found.iter().any(|f| f == value) {
                self.found.push(value.to_owned());
            }
        }
    }
}

/// `: "value"` after a field name (JSON whitespace allowed, no escapes in
/// the value): the value and the offset just past its closing quote.
fn value_after(b: &[u8]) -> Option<(&str, usize)> {
    let mut i = 0;
    while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    if b.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let len = memchr::memchr(b'"', b.get(start..)?)?;
    let value = &b[start..start + len];
    if value.contains(&b'\\') {
        return None;
    }
    Some((valid(value)?, start + len + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_and_bounded() {
        assert_eq!(valid(b"abc-123"), Some("abc-123"));
        assert_eq!(valid(b""), None);
        assert_eq!(valid(b"a b"), None);
        assert_eq!(valid(b"a\r\nx-evil: 1"), None);
        assert_eq!(valid("é".as_bytes()), None);
        assert_eq!(valid(&[b'a'; 256]).map(str::len), Some(256));
        assert_eq!(valid(&[b'a'; 257]), None);
        // Every byte at every place of a word and of the rest after it.
        for at in 0..11 {
            for c in 0..=255u8 {
                let mut k = *b"abcdefghijk";
                k[at] = c;
                let want = (0x21..0x7f).contains(&c);
                assert_eq!(valid(&k).is_some(), want, "{c:#x} at {at}");
            }
        }
    }

    #[test]
    fn bodies_name_their_session() {
        let b = br#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"sessionId":"s1","message":{"parts":[]}}}"#;
        assert_eq!(from_body(b).session.as_deref(), Some("s1"));
        let b = br#"{"sessionId":"s2","clarificationId":"c"}"#;
        assert_eq!(from_body(b).session.as_deref(), Some("s2"));
        let b = br#"{"method":"respond","params":{"clarificationId":"c9","answers":{}}}"#;
        assert_eq!(
            from_body(b),
            FromBody {
                session: None,
                interaction: Some("c9".into())
            }
        );
        // Not JSON, no field, a key that is not a string, a hostile key.
        assert_eq!(from_body(b"sessionId"), FromBody::default());
        assert_eq!(from_body(br#"{"a":1}"#), FromBody::default());
        // An A2A message's own ids name no session (and cost no parse).
        let b = br#"{"method":"message/send","params":{"message":{"messageId":"m1","parts":[]}}}"#;
        assert!(!may_name_one(b));
        assert!(may_name_one(br#"{"params":{"sessionId":"s"}}"#));
        assert!(may_name_one(br#"{"clarificationId": "c"}"#));
        assert_eq!(
            from_body(br#"{"params":{"sessionId":7}}"#),
            FromBody::default()
        );
        assert_eq!(
            from_body(br#"{"params":{"sessionId":"a\r\nb"}}"#),
            FromBody::default()
        );
        let big = format!(r#"{{"sessionId":"s","pad":"{}"}}"#, "x".repeat(MAX_BODY));
        assert_eq!(from_body(big.as_bytes()), FromBody::default());
    }

    #[test]
    fn interactions_are_found_across_chunks() {
        let event = br#"data: {"state":"input-required","sessionId":"s1","clarificationId":"clar-42","questions":[]}"#;
        for cut in 0..event.len() {
            let mut i = Interactions::default();
            i.feed(&event[..cut]);
            i.feed(&event[cut..]);
            assert_eq!(i.take(), vec!["clar-42".to_string()], "cut at {cut}");
        }
        let mut i = Interactions::default();
        i.feed(br#"{"planId": "p1"} {"selectionId":"s\"x"}"#);
        assert_eq!(i.take(), vec!["p1".to_string()]);
        // The session an agent made up, learnt once.
        let mut i = Interactions::learning_session();
        i.feed(b"event: status-update\ndata: {\"state\":\"working\",\"sessio");
        i.feed(b"nId\":\"made-up\"}\n\ndata: {\"sessionId\":\"other\",\"clarificationId\":\"c1\"}");
        assert_eq!(i.take_session().as_deref(), Some("made-up"));
        assert_eq!(i.take(), vec!["c1".to_string()]);
        assert_eq!(i.take_session(), None);
        // Reset for another reply: what the last one left is gone.
        let mut i = Interactions::default();
        i.feed(br#"{"planId": "p1"} {"clarificationId": "cl"#);
        i.reset(true);
        i.feed(br#"ar-1", "sessionId": "s9"}"#);
        assert_eq!(i.take(), Vec::<String>::new());
        assert_eq!(i.take_session().as_deref(), Some("s9"));
    }
}
