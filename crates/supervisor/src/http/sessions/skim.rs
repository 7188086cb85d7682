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

use std::borrow::Cow;

/// One level's fields, each a string still escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Level<'a> {
    /// `sessionId`, `clarificationId`, `selectionId`, `planId`, `permissionId`.
    pub fields: [Option<Str<'a>>; 5],
}

/// The two levels of a body: the top and its `params`.
#[derive(Debug, Default)]
pub struct Body<'a> {
    pub top: Level<'a>,
    pub params: Level<'a>,
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
    /// An index into `Level::fields`.
    Named(usize),
}

/// The names, unescaped, in the order of `Level::fields`.
const NAMES: [&[u8]; 5] = [
    b"sessionId",
    b"clarificationId",
    b"selectionId",
    b"planId",
    b"permissionId",
];

/// Longest name (`clarificationId`).
const LONGEST: usize = 15;

/// Reads `body`'s session fields.
pub fn skim(body: &[u8]) -> Res<Body<'_>> {
    let mut s = Skim { b: body, i: 0 };
    let mut out = Body::default();
    s.level(true, &mut out)?;
    s.ws();
    if s.i != s.b.len() {
        return Err(Invalid);
    }
    Ok(out)
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

    /// Which field a name is, if one of ours.
    fn field(&self) -> Option<Field> {
        let mut buf = [0u8; LONGEST];
        let name = if self.escaped {
            let n = unescape(self.raw, &mut buf)?;
            &buf[..n]
        } else {
            self.raw
        };
        let field = match name.len() {
            6 if name == b"params" => Field::Params,
            6 => Field::Named(3),
            9 => Field::Named(0),
            11 => Field::Named(2),
            12 => Field::Named(4),
            15 => Field::Named(1),
            _ => return None,
        };
        match field {
            Field::Named(n) if NAMES[n] != name => None,
            f => Some(f),
        }
    }
}

/// Writes the string `raw` (valid JSON, as `Skim::string` checked it)
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

/// The first quote, backslash or control byte (< 0x20) in `b` from `i`
/// (`b.len()` if none), eight bytes a step.
fn special(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    while let Some(chunk) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        // A byte's high bit is set where it is below 0x20, or equal to a
        // quote or backslash (the lowest such byte is exact).
        let control = x.wrapping_sub(ONES * 0x20) & !x;
        let q = x ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let e = x ^ (ONES * u64::from(b'\\'));
        let backslash = e.wrapping_sub(ONES) & !e;
        let found = (control | quote | backslash) & HIGH;
        if found != 0 {
            return i + found.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c < 0x20 || c == b'"' || c == b'\\' {
            break;
        }
        i += 1;
    }
    i
}

/// Open arrays and objects while a value is skipped: a bit each
/// (1: an object), the first 128 in place, deeper ones in `more`.
#[derive(Default)]
struct Nest {
    depth: usize,
    bits: u128,
    more: Vec<bool>,
}

impl Nest {
    fn push(&mut self, object: bool) {
        if self.depth < 128 {
            self.bits = self.bits & !(1 << self.depth) | (u128::from(object) << self.depth);
        } else {
            self.more.push(object);
        }
        self.depth += 1;
    }

    /// The innermost: whether it is an object; None when none is open.
    fn top(&self) -> Option<bool> {
        match self.depth {
            0 => None,
            d if d <= 128 => Some(self.bits >> (d - 1) & 1 == 1),
            _ => self.more.last().copied(),
        }
    }

    fn pop(&mut self) {
        if self.depth > 128 {
            self.more.pop();
        }
        self.depth -= 1;
    }
}

struct Skim<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Skim<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// After whitespace, `c` (taken).
    fn expect(&mut self, c: u8) -> Res<()> {
        self.ws();
        if self.peek() != Some(c) {
            return Err(Invalid);
        }
        self.i += 1;
        Ok(())
    }

    /// A level's fields into `out`: the top (whose `params` is the level
    /// below, read into `out.params`) or `params` (its own `params` skipped).
    fn level(&mut self, top: bool, out: &mut Body<'a>) -> Res<()> {
        self.ws();
        let array = match self.peek() {
            Some(b'{') => false,
            Some(b'[') => true,
            _ => return Err(Invalid),
        };
        self.i += 1;
        // Fields seen: bit 0 params, then the names.
        let mut seen = 0u8;
        let mut first = true;
        for at in 0.. {
            self.ws();
            let c = self.peek().ok_or(Invalid)?;
            if c == if array { b']' } else { b'}' } {
                self.i += 1;
                return Ok(());
            }
            if !first {
                // A comma, then a field (a comma before the end is an
                // error where the field is read).
                if c != b',' {
                    return Err(Invalid);
                }
                self.i += 1;
                self.ws();
            }
            first = false;
            let field = if array {
                // Past the sixth element: only the end may follow.
                if at == NAMES.len() + 1 {
                    return Err(Invalid);
                }
                Some(if at == 0 {
                    Field::Params
                } else {
                    Field::Named(at - 1)
                })
            } else {
                if self.peek() != Some(b'"') {
                    return Err(Invalid);
                }
                self.i += 1;
                let name = self.string(true)?;
                self.expect(b':')?;
                let field = name.field();
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
            match field {
                None => self.skip_value()?,
                Some(Field::Named(n)) => {
                    let value = self.string_or_null()?;
                    let level = if top { &mut out.top } else { &mut out.params };
                    level.fields[n] = value;
                }
                Some(Field::Params) => {
                    self.ws();
                    if !top || self.peek() == Some(b'n') {
                        // `null`, or below the top any value: skipped.
                        self.skip_value()?;
                    } else {
                        self.level(false, out)?;
                    }
                }
            }
        }
        unreachable!()
    }

    /// A session field's value: a string (checked as text) or `null`.
    fn string_or_null(&mut self) -> Res<Option<Str<'a>>> {
        self.ws();
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                self.string(true).map(Some)
            }
            Some(b'n') => self.word(b"null").map(|()| None),
            _ => Err(Invalid),
        }
    }

    fn word(&mut self, w: &[u8]) -> Res<()> {
        if !self.b[self.i..].starts_with(w) {
            return Err(Invalid);
        }
        self.i += w.len();
        Ok(())
    }

    /// The rest of a string whose opening quote was taken. `text`: it must
    /// be UTF-8 (no lone surrogate in its escapes); else only its escapes
    /// are checked, as serde_json does with a string it skips.
    fn string(&mut self, text: bool) -> Res<Str<'a>> {
        let start = self.i;
        let mut escaped = false;
        loop {
            // The bytes up to the next quote, backslash or control byte.
            let run = self.i;
            let i = special(self.b, run);
            if text && !self.b[run..i].is_ascii() {
                // Escapes give whole characters: each run between them
                // must be UTF-8 itself.
                std::str::from_utf8(&self.b[run..i]).map_err(|_| Invalid)?;
            }
            self.i = i + 1;
            match self.b.get(i) {
                Some(b'"') => {
                    return Ok(Str {
                        raw: &self.b[start..i],
                        escaped,
                    })
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape(text)?;
                }
                _ => return Err(Invalid),
            }
        }
    }

    /// An escape after its backslash.
    fn escape(&mut self, text: bool) -> Res<()> {
        let c = self.peek().ok_or(Invalid)?;
        self.i += 1;
        match c {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' => {
                let n = self.hex()?;
                if !text {
                    return Ok(());
                }
                if (0xDC00..=0xDFFF).contains(&n) {
                    return Err(Invalid);
                }
                if (0xD800..=0xDBFF).contains(&n) {
                    // A low surrogate must follow.
                    if !self.b[self.i..].starts_with(b"\\u") {
                        return Err(Invalid);
                    }
                    self.i += 2;
                    if !(0xDC00..=0xDFFF).contains(&self.hex()?) {
                        return Err(Invalid);
                    }
                }
                Ok(())
            }
            _ => Err(Invalid),
        }
    }

    fn hex(&mut self) -> Res<u16> {
        let v = hex4(&self.b[self.i..]).ok_or(Invalid)?;
        self.i += 4;
        Ok(v)
    }

    /// A number's grammar: `-`? (`0` | [1-9][0-9]*) (`.` [0-9]+)? ([eE] [+-]? [0-9]+)?
    fn number(&mut self) -> Res<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return Err(Invalid);
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Invalid),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(Invalid);
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(Invalid);
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// Any one value, checked and passed over (arrays and objects of any
    /// depth, without recursion).
    fn skip_value(&mut self) -> Res<()> {
        let mut nest = Nest::default();
        loop {
            // A value.
            self.ws();
            match self.peek().ok_or(Invalid)? {
                b'n' => self.word(b"null")?,
                b't' => self.word(b"true")?,
                b'f' => self.word(b"false")?,
                b'-' | b'0'..=b'9' => self.number()?,
                b'"' => {
                    self.i += 1;
                    self.string(false)?;
                }
                b'[' => {
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                    } else {
                        nest.push(false);
                        continue;
                    }
                }
                b'{' => {
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                    } else {
                        nest.push(true);
                        self.member_name()?;
                        continue;
                    }
                }
                _ => return Err(Invalid),
            }
            // After a value: the ends of what it closes, then a comma.
            loop {
                let Some(object) = nest.top() else {
                    return Ok(());
                };
                self.ws();
                match self.peek().ok_or(Invalid)? {
                    b',' => {
                        self.i += 1;
                        if object {
                            self.ws();
                            self.member_name()?;
                        }
                        break;
                    }
                    b']' if !object => {}
                    b'}' if object => {}
                    _ => return Err(Invalid),
                }
                self.i += 1;
                nest.pop();
            }
        }
    }

    /// A skipped object's member name and its colon.
    fn member_name(&mut self) -> Res<()> {
        if self.peek() != Some(b'"') {
            return Err(Invalid);
        }
        self.i += 1;
        self.string(false)?;
        self.expect(b':')
    }
}

#[cfg(test)]
mod tests;
