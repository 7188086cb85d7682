//! A request body's session fields, read in one pass over the bytes with
//! no allocation: `params` and the five session names (`sessionId`,
//! `clarificationId`, `selectionId`, `planId`, `permissionId`) at the top
//! level and directly in `params`; every other value is only checked for
//! JSON syntax and skipped.
//!
//! It answers what a serde_json parse of the body into two nested structs
//! with those fields (each `Option<Cow<str>>`, `params` an `Option`) answers,
//! on every input (the tests hold it to that parse):
//! - the whole body must be JSON (whitespace only after it), or nothing is found;
//! - names are compared unescaped (`"session\u0049d"` is `sessionId`), and
//!   one of the six named twice at one level is an error;
//! - a session field holds a string or `null`; anything else is an error;
//! - the strings read (names at the two levels, the fields' values) must be
//!   UTF-8 without lone surrogates; strings skipped only need valid escapes;
//! - a level may also be an array, read as its fields in order: `params`,
//!   `sessionId`, `clarificationId`, `selectionId`, `planId`, `permissionId`
//!   (fewer are allowed, more are an error): what serde does with a struct
//!   written as an array.
//!
//! An error anywhere means no field at all, as a failed parse does.
//!
//! The scan is a handful of functions that take the body and an offset and
//! return the offset past what they read, so the offset stays in a register;
//! a string's end is found sixteen bytes a step (SSE2 on x86-64), and UTF-8
//! is checked only in a string read that has a byte outside ASCII.

use std::borrow::Cow;

mod stops;
use stops::{stops_at, Stops};

/// The session fields of one level (the top, or its `params`), each a
/// string still escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionFields<'a> {
    /// `sessionId`, `clarificationId`, `selectionId`, `planId`, `permissionId`.
    pub fields: [Option<Str<'a>>; 5],
}

/// The two levels of a body: the top and its `params`.
#[derive(Debug, Default)]
pub struct Body<'a> {
    pub top: SessionFields<'a>,
    pub params: SessionFields<'a>,
}

/// A string's bytes between its quotes, as written (valid JSON; `escaped`
/// when it holds a backslash).
#[derive(Debug, Clone, Copy)]
pub struct Str<'a> {
    raw: &'a [u8],
    escaped: bool,
}

/// The body is not JSON, or not what the fields allow.
#[derive(Debug)]
pub struct Invalid;

type Res<T> = Result<T, Invalid>;

/// A field of a level, in the order an array gives them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Params,
    /// An index into `SessionFields::fields`.
    Named(usize),
}

/// The names, unescaped, in the order of `SessionFields::fields`.
const NAMES: [&[u8]; 5] = [
    b"sessionId",
    b"clarificationId",
    b"selectionId",
    b"planId",
    b"permissionId",
];

/// Longest name (`clarificationId`).
const LONGEST: usize = 15;

/// Reads `body`'s session fields into `out` (all `None` to start with;
/// written in place, not returned: it is ten strings wide).
pub fn skim<'a>(body: &'a [u8], out: &mut Body<'a>) -> Res<()> {
    let i = level::<true>(body, 0, out)?;
    if ws(body, i) != body.len() {
        return Err(Invalid);
    }
    Ok(())
}

impl<'a> Str<'a> {
    /// The value as a session key, if it is one (`super::key::valid`,
    /// after its escapes); borrowed unless it had escapes.
    pub fn key(&self) -> Option<Cow<'a, str>> {
        if !self.escaped {
            return super::key::valid(self.raw).map(Cow::Borrowed);
        }
        let mut buf = [0u8; super::MAX_KEY];
        let n = unescape(self.raw, &mut buf)?;
        super::key::valid(&buf[..n]).map(|k| Cow::Owned(k.to_owned()))
    }
}

/// Which field a name is (its bytes between the quotes, checked), if one
/// of ours.
#[inline]
fn field(raw: &[u8], escaped: bool) -> Option<Field> {
    if escaped {
        return escaped_field(raw);
    }
    // Told by the length, then compared as arrays of that length (a few
    // word compares, no call).
    fn is<const N: usize>(raw: &[u8], name: &[u8; N]) -> bool {
        <&[u8; N]>::try_from(raw).is_ok_and(|r| r == name)
    }
    match raw.len() {
        6 if is(raw, b"params") => Some(Field::Params),
        6 if is(raw, b"planId") => Some(Field::Named(3)),
        9 if is(raw, b"sessionId") => Some(Field::Named(0)),
        11 if is(raw, b"selectionId") => Some(Field::Named(2)),
        12 if is(raw, b"permissionId") => Some(Field::Named(4)),
        15 if is(raw, b"clarificationId") => Some(Field::Named(1)),
        _ => None,
    }
}

/// `field` of a name written with escapes.
#[cold]
fn escaped_field(raw: &[u8]) -> Option<Field> {
    let mut buf = [0u8; LONGEST];
    let n = unescape(raw, &mut buf)?;
    field(&buf[..n], false)
}

/// Writes the string `raw` (valid JSON, as `string` checked it)
/// unescaped into `out`: its length, or None when it does not fit.
fn unescape(raw: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    let mut put = |bytes: &[u8]| -> Option<()> {
        out.get_mut(n..n + bytes.len())?.copy_from_slice(bytes);
        n += bytes.len();
        Some(())
    };
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c != b'\\' {
            put(&[c])?;
            i += 1;
            continue;
        }
        let e = raw[i + 1];
        i += 2;
        let byte = match e {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut cp = u32::from(hex4(&raw[i..])?);
                i += 4;
                if (0xD800..=0xDBFF).contains(&cp) {
                    // A checked string pairs it: `\uDCxx` follows.
                    let low = u32::from(hex4(&raw[i + 2..])?);
                    i += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                }
                let ch = char::from_u32(cp)?;
                put(ch.encode_utf8(&mut [0u8; 4]).as_bytes())?;
                continue;
            }
            other => other, // `"`, `\`, `/`
        };
        put(&[byte])?;
    }
    Some(n)
}

/// Four hex digits' value.
fn hex4(b: &[u8]) -> Option<u16> {
    let mut v = 0u16;
    for &c in b.get(..4)? {
        let d = (c as char).to_digit(16)?;
        v = v << 4 | d as u16;
    }
    Some(v)
}

/// Past the whitespace at `i`.
#[inline(always)]
fn ws(b: &[u8], mut i: usize) -> usize {
    // Most often none, or one space.
    match b.get(i) {
        Some(&c) if c > b' ' => return i,
        Some(b' ') if b.get(i + 1).is_some_and(|&c| c > b' ') => return i + 1,
        _ => {}
    }
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Past the word `w` at `i`.
#[inline(always)]
fn word<const N: usize>(b: &[u8], i: usize, w: &[u8; N]) -> Res<usize> {
    match b.get(i..i + N) {
        Some(x) if x == w => Ok(i + N),
        _ => Err(Invalid),
    }
}

/// The rest of a string whose opening quote is before `start`: the offset
/// of its closing quote, and whether it holds an escape. `TEXT`: it must be
/// UTF-8 (no lone surrogate in its escapes); else only its escapes are
/// checked, as serde_json does with a string it skips.
#[inline(always)]
fn string<const TEXT: bool>(b: &[u8], start: usize) -> Res<(usize, bool)> {
    let mut i = start;
    let mut escaped = false;
    // Bytes outside ASCII seen before the end.
    let mut high = 0u32;
    loop {
        let Stops { stop, high: h } = stops_at(b, i);
        if stop == 0 {
            if TEXT {
                high |= h;
            }
            i += 16;
            continue;
        }
        let k = stop.trailing_zeros();
        if TEXT {
            high |= h & ((1 << k) - 1);
        }
        i += k as usize;
        match b.get(i) {
            Some(b'"') => break,
            Some(b'\\') => {
                escaped = true;
                i = escape::<TEXT>(b, i + 1)?;
            }
            // A control byte, or the end.
            _ => return Err(Invalid),
        }
    }
    // Escapes are ASCII and give whole characters: the raw string is UTF-8
    // exactly when each run between its escapes is.
    if TEXT && high != 0 && std::str::from_utf8(&b[start..i]).is_err() {
        return Err(Invalid);
    }
    Ok((i, escaped))
}

/// An escape whose backslash is before `i`: the offset past it.
#[inline(never)]
fn escape<const TEXT: bool>(b: &[u8], i: usize) -> Res<usize> {
    match b.get(i) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 1),
        Some(b'u') => {
            let n = hex4(&b[i + 1..]).ok_or(Invalid)?;
            let i = i + 5;
            if !TEXT || !(0xD800..=0xDFFF).contains(&n) {
                return Ok(i);
            }
            // A surrogate: a high one, a low one after it.
            if n >= 0xDC00 || !b[i..].starts_with(b"\\u") {
                return Err(Invalid);
            }
            match hex4(&b[i + 2..]) {
                Some(0xDC00..=0xDFFF) => Ok(i + 6),
                _ => Err(Invalid),
            }
        }
        _ => Err(Invalid),
    }
}

/// Past the digits at `i`.
#[inline(always)]
fn digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Past a number at `i`: `-`? (`0` | [1-9][0-9]*) (`.` [0-9]+)? ([eE] [+-]? [0-9]+)?
fn number(b: &[u8], mut i: usize) -> Res<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => {
            i += 1;
            if b.get(i).is_some_and(u8::is_ascii_digit) {
                return Err(Invalid);
            }
        }
        Some(b'1'..=b'9') => i = digits(b, i + 1),
        _ => return Err(Invalid),
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return Err(Invalid);
        }
        i = digits(b, i);
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return Err(Invalid);
        }
        i = digits(b, i);
    }
    Ok(i)
}

/// A level's fields into `out` from `i` (whitespace first), the offset
/// past it: the top (`TOP`, whose `params` is the level below, read into
/// `out.params`) or `params` (its own `params` skipped).
#[inline(always)]
fn level<'a, const TOP: bool>(b: &'a [u8], i: usize, out: &mut Body<'a>) -> Res<usize> {
    let mut i = ws(b, i);
    let (array, close) = match b.get(i) {
        Some(b'{') => (false, b'}'),
        Some(b'[') => (true, b']'),
        _ => return Err(Invalid),
    };
    i = ws(b, i + 1);
    if b.get(i) == Some(&close) {
        return Ok(i + 1);
    }
    // Fields seen: bit 0 params, then the names.
    let mut seen = 0u8;
    let mut at = 0;
    loop {
        // A member (or element) at `i`.
        let field = if array {
            // Past the sixth element: only the end may follow.
            if at == NAMES.len() + 1 {
                return Err(Invalid);
            }
            at += 1;
            Some(if at == 1 {
                Field::Params
            } else {
                Field::Named(at - 2)
            })
        } else {
            if b.get(i) != Some(&b'"') {
                return Err(Invalid);
            }
            let (end, escaped) = string::<true>(b, i + 1)?;
            let field = field(&b[i + 1..end], escaped);
            i = ws(b, end + 1);
            if b.get(i) != Some(&b':') {
                return Err(Invalid);
            }
            i += 1;
            let bit = match field {
                None => 0,
                Some(Field::Params) => 1,
                Some(Field::Named(n)) => 2 << n,
            };
            if seen & bit != 0 {
                return Err(Invalid);
            }
            seen |= bit;
            field
        };
        i = match field {
            None => {
                // A string or number inline; the rest in `skip_value`.
                i = ws(b, i);
                match b.get(i) {
                    Some(b'"') => string::<false>(b, i + 1)?.0 + 1,
                    Some(b'0'..=b'9') => number(b, i)?,
                    _ => skip_value(b, i)?,
                }
            }
            Some(Field::Named(n)) => {
                i = ws(b, i);
                let value = match b.get(i) {
                    Some(b'"') => {
                        let (end, escaped) = string::<true>(b, i + 1)?;
                        let raw = &b[i + 1..end];
                        i = end + 1;
                        Some(Str { raw, escaped })
                    }
                    Some(b'n') => {
                        i = word(b, i, b"null")?;
                        None
                    }
                    _ => return Err(Invalid),
                };
                let level = if TOP { &mut out.top } else { &mut out.params };
                level.fields[n] = value;
                i
            }
            Some(Field::Params) => {
                i = ws(b, i);
                if !TOP || b.get(i) == Some(&b'n') {
                    // `null`, or below the top any value: skipped.
                    skip_value(b, i)?
                } else {
                    level::<false>(b, i, out)?
                }
            }
        };
        i = ws(b, i);
        match b.get(i) {
            Some(&c) if c == close => return Ok(i + 1),
            // A comma, then a member (a comma before the end is an error
            // where the member is read).
            Some(b',') => i = ws(b, i + 1),
            _ => return Err(Invalid),
        }
    }
}

/// Open arrays and objects while a value is skipped: a bit each
/// (1: an object), the first 64 in place, deeper ones in `more`.
struct Nest {
    depth: usize,
    bits: u64,
    more: Vec<bool>,
}

impl Nest {
    #[inline(always)]
    fn push(&mut self, object: bool) {
        if self.depth < 64 {
            self.bits = self.bits & !(1 << self.depth) | (u64::from(object) << self.depth);
        } else {
            self.more.push(object);
        }
        self.depth += 1;
    }

    /// The innermost: whether it is an object (one is open).
    #[inline(always)]
    fn top(&self) -> bool {
        match self.depth {
            d if d <= 64 => self.bits >> (d - 1) & 1 == 1,
            _ => self.more.last().copied().unwrap_or_default(),
        }
    }

    #[inline(always)]
    fn pop(&mut self) {
        if self.depth > 64 {
            self.more.pop();
        }
        self.depth -= 1;
    }
}

/// Past any one value at `i` (whitespace first), checked (arrays and
/// objects of any depth, without recursion).
#[inline(never)]
fn skip_value(b: &[u8], mut i: usize) -> Res<usize> {
    let mut nest = Nest {
        depth: 0,
        bits: 0,
        more: Vec::new(),
    };
    loop {
        // A value.
        i = ws(b, i);
        match *b.get(i).ok_or(Invalid)? {
            b'"' => i = string::<false>(b, i + 1)?.0 + 1,
            b'{' => {
                i = ws(b, i + 1);
                if b.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    nest.push(true);
                    i = member_name(b, i)?;
                    continue;
                }
            }
            b'[' => {
                i = ws(b, i + 1);
                if b.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    nest.push(false);
                    continue;
                }
            }
            b'-' | b'0'..=b'9' => i = number(b, i)?,
            b'n' => i = word(b, i, b"null")?,
            b't' => i = word(b, i, b"true")?,
            b'f' => i = word(b, i, b"false")?,
            _ => return Err(Invalid),
        }
        // After a value: the ends of what it closes, then a comma.
        loop {
            if nest.depth == 0 {
                return Ok(i);
            }
            let object = nest.top();
            i = ws(b, i);
            match *b.get(i).ok_or(Invalid)? {
                b',' => {
                    i += 1;
                    if object {
                        i = member_name(b, ws(b, i))?;
                    }
                    break;
                }
                b']' if !object => {}
                b'}' if object => {}
                _ => return Err(Invalid),
            }
            i += 1;
            nest.pop();
        }
    }
}

/// Past a skipped object's member name at `i` and its colon.
#[inline(always)]
fn member_name(b: &[u8], i: usize) -> Res<usize> {
    if b.get(i) != Some(&b'"') {
        return Err(Invalid);
    }
    let (end, _) = string::<false>(b, i + 1)?;
    let i = ws(b, end + 1);
    if b.get(i) != Some(&b':') {
        return Err(Invalid);
    }
    Ok(i + 1)
}

#[cfg(test)]
mod tests;
