//! The skimmer against the parse it replaced: serde_json into two nested
//! structs with the session fields (kept here as the reference), on random
//! JSON (the session names at every depth, escaped names and values,
//! unicode, duplicate names, arrays) and on the same cut short or garbled.

use std::borrow::Cow;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde::Deserialize;

use super::super::key::{self, FromBody};

/// The reference: the session fields of one level, as serde reads them.
#[derive(Deserialize, Default)]
struct SessionFields<'a, P> {
    #[serde(default)]
    params: Option<P>,
    #[serde(rename = "sessionId", default, borrow)]
    session_id: Option<Cow<'a, str>>,
    #[serde(rename = "clarificationId", default, borrow)]
    clarification_id: Option<Cow<'a, str>>,
    #[serde(rename = "selectionId", default, borrow)]
    selection_id: Option<Cow<'a, str>>,
    #[serde(rename = "planId", default, borrow)]
    plan_id: Option<Cow<'a, str>>,
    #[serde(rename = "permissionId", default, borrow)]
    permission_id: Option<Cow<'a, str>>,
}

type Fields<'a> = SessionFields<'a, serde::de::IgnoredAny>;
type Body<'a> = SessionFields<'a, Fields<'a>>;

fn string_key(v: Option<&str>) -> Option<Cow<'static, str>> {
    key::valid(v?.as_bytes()).map(|k| Cow::Owned(k.to_owned()))
}

impl<P> SessionFields<'_, P> {
    fn session(&self) -> Option<Cow<'static, str>> {
        string_key(self.session_id.as_deref())
    }

    fn interaction(&self) -> Option<Cow<'static, str>> {
        [
            &self.clarification_id,
            &self.selection_id,
            &self.plan_id,
            &self.permission_id,
        ]
        .into_iter()
        .find_map(|v| string_key(v.as_deref()))
    }
}

/// What the serde parse finds in a body (no byte search first).
fn reference(body: &[u8]) -> FromBody<'static> {
    let Ok(parsed) = serde_json::from_slice::<Body>(body) else {
        return FromBody::default();
    };
    let params = parsed.params.as_ref();
    let session = params
        .and_then(SessionFields::session)
        .or_else(|| parsed.session());
    let interaction = if session.is_none() {
        params
            .and_then(SessionFields::interaction)
            .or_else(|| parsed.interaction())
    } else {
        None
    };
    FromBody {
        session,
        interaction,
    }
}

fn owned(f: FromBody<'_>) -> FromBody<'static> {
    let own = |c: Option<Cow<'_, str>>| c.map(|c| Cow::Owned(c.into_owned()));
    FromBody {
        session: own(f.session),
        interaction: own(f.interaction),
    }
}

/// The skimmer's answer, and the reference's, with and without the byte
/// search `from_body` makes first.
fn check(body: &[u8]) -> Result<(), TestCaseError> {
    let want = reference(body);
    prop_assert_eq!(
        owned(key::named(body)),
        FromBody {
            session: want.session.clone(),
            interaction: want.interaction.clone()
        },
        "body {:?}",
        String::from_utf8_lossy(body)
    );
    let want = if key::may_name_one(body) {
        want
    } else {
        FromBody::default()
    };
    prop_assert_eq!(
        owned(key::from_body(body)),
        want,
        "body {:?}",
        String::from_utf8_lossy(body)
    );
    Ok(())
}

fn agrees(body: &[u8]) -> FromBody<'static> {
    check(body).unwrap();
    owned(key::named(body))
}

fn session(s: &str) -> FromBody<'static> {
    FromBody {
        session: Some(Cow::Owned(s.into())),
        interaction: None,
    }
}

fn interaction(s: &str) -> FromBody<'static> {
    FromBody {
        session: None,
        interaction: Some(Cow::Owned(s.into())),
    }
}

#[test]
fn names_and_values_are_read_unescaped() {
    // A name written with escapes is the name.
    assert_eq!(
        agrees(br#"{"params":{"session\u0049d":"s1"}}"#),
        session("s1")
    );
    assert_eq!(
        agrees(br#"{"p\u0061rams":{"sessionId":"s1"}}"#),
        session("s1")
    );
    assert_eq!(agrees(br#"{"sessionId":"s\u0031\/x"}"#), session("s1/x"));
    assert_eq!(agrees(br#"{"planId":"\"q\\"}"#), interaction("\"q\\"));
    // Unescaped to something that is no key: none, and no error.
    assert_eq!(
        agrees(br#"{"params":{"sessionId":"a\u0020b"},"sessionId":"top"}"#),
        session("top")
    );
    assert_eq!(
        agrees(br#"{"sessionId":"\u00e9","clarificationId":"c"}"#),
        interaction("c")
    );
    // The borrowed case borrows.
    let b = br#"{"params":{"sessionId":"s1"}}"#;
    assert!(matches!(key::named(b).session, Some(Cow::Borrowed("s1"))));
}

#[test]
fn what_serde_refuses_names_nothing() {
    for b in [
        // Named twice at one level, also once escaped.
        &br#"{"sessionId":"a","sessionId":"b"}"#[..],
        br#"{"params":{"planId":"a","planId":null}}"#,
        br#"{"sessionId":"a","session\u0049d":"a"}"#,
        br#"{"params":null,"params":{"sessionId":"s"}}"#,
        br#"{"params":{"params":1,"params":2,"sessionId":"s"}}"#,
        // A field that is not a string, params that are not an object.
        br#"{"params":{"sessionId":"s"},"planId":1}"#,
        br#"{"params":"x","sessionId":"s"}"#,
        br#"{"params":{"sessionId":true}}"#,
        // A lone surrogate in a name or field read; bad escapes anywhere.
        br#"{"params":{"sessionId":"s"},"clarificationId":"\ud800"}"#,
        br#"{"params":{"sessionId":"s"},"\udc00":1}"#,
        br#"{"params":{"sessionId":"s"},"x":"\q"}"#,
        br#"{"params":{"sessionId":"s"},"x":"\u12"}"#,
        // Not JSON: trailing bytes, a trailing comma, a bad number, a control byte.
        br#"{"params":{"sessionId":"s"}} x"#,
        br#"{"params":{"sessionId":"s"},}"#,
        br#"{"params":{"sessionId":"s","n":01}}"#,
        br#"{"params":{"sessionId":"s","n":[1,]}}"#,
        b"{\"params\":{\"sessionId\":\"s\",\"t\":\"a\x01\"}}",
        // The top is not an object (or array).
        br#""sessionId""#,
        b"",
        // Seven elements for six fields.
        br#"[null,"s",null,null,null,null,null]"#,
    ] {
        assert_eq!(
            agrees(b),
            FromBody::default(),
            "{}",
            String::from_utf8_lossy(b)
        );
    }
}

#[test]
fn what_serde_allows_is_read() {
    // A lone surrogate, or bytes not UTF-8, in a string skipped.
    assert_eq!(
        agrees(br#"{"params":{"sessionId":"s","m":"\ud800"},"x":{"\udfff":1}}"#),
        session("s")
    );
    assert_eq!(
        agrees(b"{\"params\":{\"sessionId\":\"s\",\"m\":\"\xff\xfe\"}}"),
        session("s")
    );
    // Non-BMP characters as surrogate pairs in a name read.
    assert_eq!(
        agrees(br#"{"\ud83d\ude00":1,"sessionId":"s"}"#),
        session("s")
    );
    // Whitespace everywhere JSON allows it.
    assert_eq!(
        agrees(b" \r\n{ \"params\" :\t{ \"sessionId\" : \"s\" } , \"x\" : [ 1 , -2.5e+3 , { } , [ ] ] }\n "),
        session("s")
    );
    // A level written as an array: its fields in order.
    assert_eq!(agrees(br#"[null,"s"]"#), session("s"));
    assert_eq!(agrees(br#"[[null,"p"],"s"]"#), session("p"));
    assert_eq!(agrees(br#"[{"sessionId":"p"}]"#), session("p"));
    assert_eq!(
        agrees(br#"[null,null,"c",null,null,null]"#),
        interaction("c")
    );
    // Deep nesting skipped (serde has no depth limit when it skips).
    let nested = |open: &str, n: usize, close: &str, m: usize| {
        let mut b = String::from(r#"{"params":{"x":"#);
        b.push_str(&open.repeat(n));
        b.push_str("null");
        b.push_str(&close.repeat(m));
        b.push_str(r#"},"sessionId":"s"}"#);
        b
    };
    let deep = nested("[{\"a\":", 20_000, "}]", 20_000);
    assert_eq!(agrees(deep.as_bytes()), session("s"));
    let unbalanced = nested("[", 300, "]", 299);
    assert_eq!(agrees(unbalanced.as_bytes()), FromBody::default());
}

/// A JSON value to write out.
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Num(&'static str),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

const NAMES: [&str; 12] = [
    "params",
    "sessionId",
    "clarificationId",
    "selectionId",
    "planId",
    "permissionId",
    "messageId",
    "message",
    "sessionid",
    "session",
    "Id",
    "",
];

const TEXTS: [&str; 12] = [
    "s1",
    "abc-123",
    "",
    "a b",
    "é",
    "😀",
    "q\"uote",
    "back\\slash",
    "line\nfeed",
    "sessionId",
    "a/b",
    "\u{7f}",
];

const NUMBERS: [&str; 8] = [
    "0",
    "-1",
    "1.5",
    "1e5",
    "-0.0E-1",
    "12345678901234567890",
    "2e+9",
    "0.25",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(&NAMES[..]).prop_map(String::from),
        1 => "[a-zA-Z]{0,5}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(&TEXTS[..]).prop_map(String::from),
        1 => "[!-~]{0,12}",
        1 => "\\PC{0,6}",
        1 => Just("k".repeat(256)),
        1 => Just("k".repeat(257)),
    ]
}

fn leaf() -> impl Strategy<Value = J> {
    prop_oneof![
        1 => Just(J::Null),
        1 => any::<bool>().prop_map(J::Bool),
        1 => proptest::sample::select(&NUMBERS[..]).prop_map(J::Num),
        4 => text().prop_map(J::Str),
    ]
}

fn value() -> impl Strategy<Value = J> {
    leaf().prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            1 => proptest::collection::vec(inner.clone(), 0..7).prop_map(J::Arr),
            3 => proptest::collection::vec((name(), inner), 0..6).prop_map(J::Obj),
        ]
    })
}

/// A member of an object: a session name mostly with a string (or null),
/// `params` mostly with an object of members, any other name with anything.
fn member(depth: u32) -> BoxedStrategy<(String, J)> {
    name()
        .prop_flat_map(move |n| {
            let v = if NAMES[1..6].contains(&n.as_str()) {
                prop_oneof![
                    8 => text().prop_map(J::Str),
                    1 => Just(J::Null),
                    1 => value(),
                ]
                .boxed()
            } else if n == "params" && depth > 0 {
                prop_oneof![
                    6 => proptest::collection::vec(member(depth - 1), 0..5).prop_map(J::Obj),
                    1 => proptest::collection::vec(value(), 0..7).prop_map(J::Arr),
                    1 => value(),
                ]
                .boxed()
            } else {
                value().boxed()
            };
            (Just(n), v)
        })
        .boxed()
}

/// A body: mostly an object with the session names near the top.
fn tree() -> impl Strategy<Value = J> {
    prop_oneof![
        6 => proptest::collection::vec(member(1), 0..5).prop_map(J::Obj),
        1 => proptest::collection::vec(
            prop_oneof![text().prop_map(J::Str), value()],
            0..8
        )
        .prop_map(J::Arr),
        1 => value(),
    ]
}

/// Writes a value, with whitespace and escapes as `rng` says.
struct Writer {
    out: Vec<u8>,
    rng: u64,
}

impl Writer {
    fn one_in(&mut self, n: u64) -> bool {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng.is_multiple_of(n)
    }

    fn ws(&mut self) {
        while self.one_in(5) {
            let c = [b' ', b'\n', b'\t', b'\r'][(self.rng >> 8) as usize % 4];
            self.out.push(c);
        }
    }

    fn string(&mut self, s: &str) {
        self.out.push(b'"');
        // One string in 16 gets an odd escape somewhere.
        let count = s.chars().count();
        let odd_at = if self.one_in(16) {
            Some((self.rng >> 16) as usize % (count + 1))
        } else {
            None
        };
        for (at, ch) in s.chars().chain(std::iter::once('\0')).enumerate() {
            if odd_at == Some(at) {
                // Paired, lone or odd surrogates, controls.
                let odd = [
                    "\\ud800",
                    "\\udbff",
                    "\\udc00",
                    "\\udfff",
                    "\\ud83d\\ude00",
                    "\\u0000",
                    "\\u001f",
                    "\\u0041",
                    "\\u00E9",
                    "\\uFFFF",
                    "\\ud800\\u0041",
                    "\\ud800\\n",
                ];
                let e = odd[(self.rng >> 8) as usize % odd.len()];
                self.out.extend_from_slice(e.as_bytes());
            }
            if at == count {
                break;
            }
            match ch {
                '"' => self.out.extend_from_slice(b"\\\""),
                '\\' => self.out.extend_from_slice(b"\\\\"),
                '\n' if self.one_in(2) => self.out.extend_from_slice(b"\\n"),
                '/' if self.one_in(2) => self.out.extend_from_slice(b"\\/"),
                c if (c as u32) < 0x20 || self.one_in(8) => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        let e = if self.one_in(2) {
                            format!("\\u{u:04x}")
                        } else {
                            format!("\\u{u:04X}")
                        };
                        self.out.extend_from_slice(e.as_bytes());
                    }
                }
                c => self
                    .out
                    .extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        self.out.push(b'"');
    }

    fn value(&mut self, v: &J) {
        self.ws();
        match v {
            J::Null => self.out.extend_from_slice(b"null"),
            J::Bool(b) => self
                .out
                .extend_from_slice(if *b { b"true" } else { b"false" }),
            J::Num(n) => self.out.extend_from_slice(n.as_bytes()),
            J::Str(s) => self.string(s),
            J::Arr(items) => {
                self.out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.ws();
                        self.out.push(b',');
                    }
                    self.value(item);
                }
                self.ws();
                self.out.push(b']');
            }
            J::Obj(members) => {
                self.out.push(b'{');
                for (i, (k, item)) in members.iter().enumerate() {
                    if i > 0 {
                        self.ws();
                        self.out.push(b',');
                    }
                    self.ws();
                    self.string(k);
                    self.ws();
                    self.out.push(b':');
                    self.value(item);
                }
                self.ws();
                self.out.push(b'}');
            }
        }
        self.ws();
    }
}

/// A change to a written body.
#[derive(Debug, Clone)]
enum Garble {
    None,
    Cut(usize),
    Drop(usize),
    Insert(usize, u8),
    Set(usize, u8),
}

/// Bytes that make or break JSON.
const INSERTED: [u8; 16] = [
    b'"', b'\\', b',', b':', b'{', b'}', b'[', b']', b'n', b'0', b' ', b'u', 0x01, 0x80, 0xe9, 0xff,
];

fn garble() -> impl Strategy<Value = Garble> {
    let at = any::<usize>();
    let byte = proptest::sample::select(&INSERTED[..]);
    prop_oneof![
        8 => Just(Garble::None),
        1 => at.prop_map(Garble::Cut),
        1 => at.prop_map(Garble::Drop),
        1 => (at, byte.clone()).prop_map(|(a, b)| Garble::Insert(a, b)),
        1 => (at, byte).prop_map(|(a, b)| Garble::Set(a, b)),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    (tree(), any::<u64>(), garble()).prop_map(|(t, seed, g)| {
        let mut w = Writer {
            out: Vec::new(),
            rng: seed | 1,
        };
        w.value(&t);
        let mut b = w.out;
        let n = b.len();
        match g {
            Garble::None => {}
            Garble::Cut(at) => b.truncate(at % (n + 1)),
            Garble::Drop(at) if n > 0 => {
                b.remove(at % n);
            }
            Garble::Insert(at, c) => b.insert(at % (n + 1), c),
            Garble::Set(at, c) if n > 0 => b[at % n] = c,
            _ => {}
        }
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn the_skim_agrees_with_serde(b in body()) {
        check(&b)?;
    }
}

#[test]
fn the_generated_bodies_name_sessions() {
    // The property above means something only if many bodies name a
    // session or an interaction, and many fail to parse.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut named, mut broken) = (0, 0);
    let strategy = body();
    for _ in 0..4000 {
        let b = strategy.new_tree(&mut runner).unwrap().current();
        let r = reference(&b);
        named += usize::from(r.session.is_some() || r.interaction.is_some());
        broken += usize::from(serde_json::from_slice::<Body>(&b).is_err());
    }
    eprintln!("{named} of 4000 named a session, {broken} did not parse");
    assert!(named > 300, "{named} of 4000 named a session");
    assert!(broken > 1000, "{broken} of 4000 did not parse");
}
