//! The fuzz's requests (supervisor_framing_fuzz.rs): random, from a seed,
//! each with what must come of it.

/// splitmix64: small, seeded, the same sequence everywhere.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// What must come of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Want {
    /// Passed on once, this body with this framing, answered to its sender
    /// (or, when `either`, refused with a 4xx).
    Forward {
        body: Vec<u8>,
        chunked: bool,
        either: bool,
    },
    /// Refused with this 4xx, nothing passed on.
    Refuse(u16),
    /// A management request (moves the connection to the general path).
    Health,
}

pub struct Case {
    pub id: String,
    pub method: String,
    pub bytes: Vec<u8>,
    pub want: Want,
    /// The connection ends after it (HTTP/1.0, `Connection: close`).
    pub last: bool,
}

const SMUGGLED: &[u8] =
    b"GET /agents/a/fz/SMUGGLED HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";

fn body(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0 => Vec::new(),
        1 => SMUGGLED.to_vec(),
        2 => {
            let mut b = SMUGGLED.to_vec();
            b.extend_from_slice(b"POST /fz/SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n");
            b
        }
        // Past the direct path's 64 KiB: streamed by the general path.
        3 if rng.chance(10) => (0..70_000).map(|_| rng.next() as u8).collect(),
        _ => {
            let n = rng.below(300);
            (0..n)
                .map(|_| *rng.pick(b"ab\r\n0123 :;{}\"xyz\t"))
                .collect()
        }
    }
}

fn chunked(rng: &mut Rng, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let n = (1 + rng.below(200)).min(rest.len());
        let size = if rng.chance(20) {
            format!("{n:X}")
        } else {
            format!("{n:x}")
        };
        out.extend_from_slice(size.as_bytes());
        if rng.chance(10) {
            out.extend_from_slice(b";ext=1");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    if rng.chance(10) {
        out.extend_from_slice(b"x-trailer: 1\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// One random request, with what must come of it.
pub fn case(rng: &mut Rng, id: String) -> Case {
    if rng.chance(5) {
        return Case {
            id,
            method: "GET".into(),
            bytes: b"GET /runtime/health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            want: Want::Health,
            last: false,
        };
    }
    let method = rng
        .pick(&[
            "GET", "POST", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "CONNECT", "post",
        ])
        .to_string();
    let http10 = rng.chance(5);
    let mut target = format!("/agents/a/fz/{id}");
    if rng.chance(30) {
        let query: &&str = rng.pick(&["?q=1", "?a=%20&b=/agents/b", "?", "/x/y?z"]);
        target.push_str(query);
    }
    let mut refuse: Option<u16> = None;
    let set = |r: u16, refuse: &mut Option<u16>| {
        // The first rule broken decides the status only when it is the
        // only one; any 4xx is right when several are.
        *refuse = Some(if refuse.is_some_and(|p| p != r) { 0 } else { r });
    };
    let mut headers: Vec<String> = Vec::new();
    match rng.below(40) {
        0 => {
            if !http10 {
                set(400, &mut refuse)
            }
        }
        1 => {
            headers.push("Host: x".into());
            headers.push("Host: y".into());
            set(400, &mut refuse);
        }
        _ => headers.push(format!("{}: par", rng.pick(&["Host", "host", "HOST"]))),
    }
    for _ in 0..rng.below(4) {
        headers.push(
            rng.pick(&[
                "Accept: */*",
                "User-Agent: fuzz",
                "Keep-Alive: timeout=5",
                "Proxy-Connection: keep-alive",
                "TE: trailers",
                "Trailer: x-trailer",
                "X-Secret: 1",
                "X-Forwarded-For: 1.2.3.4",
                "Proxy-Authorization: Basic eDp5",
                "X-Empty:",
            ])
            .to_string(),
        );
    }
    let mut last = http10;
    if rng.chance(25) {
        let n = 1 + rng.below(3);
        let mut tokens = Vec::new();
        for _ in 0..n {
            let t = *rng.pick(&[
                "keep-alive",
                "close",
                "X-Secret",
                "te",
                "upgrade-not",
                "Keep-Alive",
                "keep-alive",
                "X-Secret",
                "Content-Length",
                "content-length",
                "Transfer-Encoding",
                "host",
            ]);
            match t.to_ascii_lowercase().as_str() {
                "content-length" | "transfer-encoding" | "host" => set(400, &mut refuse),
                "close" => last = true,
                _ => {}
            }
            tokens.push(t);
        }
        let sep = *rng.pick(&[", ", ",", " , "]);
        headers.push(format!("Connection: {}", tokens.join(sep)));
    }
    if rng.chance(5) {
        if rng.chance(50) {
            headers.push("Expect: 100-continue".into());
        } else {
            headers.push("Expect: 999-bogus".into());
            set(417, &mut refuse);
        }
    }
    let b = body(rng);
    let mut chunked_body = false;
    let mut payload = Vec::new();
    match rng.below(20) {
        // No framing: no body.
        0..=2 if b.is_empty() => {}
        // Past the refusals below: the framing the proxy passes on.
        12..=19 | 0..=4 => {
            let zeros = if rng.chance(5) { "00" } else { "" };
            headers.push(format!("Content-Length: {zeros}{}", b.len()));
            payload = b.clone();
        }
        5 => {
            headers.push(format!("Content-Length: {}", b.len()));
            headers.push(format!("content-length: {}", b.len()));
            payload = b.clone();
        }
        6 => {
            headers.push(format!("Content-Length: {}", b.len()));
            headers.push(format!("Content-Length: {}", b.len() + 1));
            set(400, &mut refuse);
            payload = b.clone();
        }
        7 => {
            headers.push(format!(
                "Content-Length: {}",
                rng.pick(&["+1", "0x1", "1 1", "-0", "1,1", ""])
            ));
            set(400, &mut refuse);
        }
        8..=10 => {
            headers.push(format!(
                "Transfer-Encoding: {}",
                rng.pick(&["chunked", "Chunked", "chunked "])
            ));
            if http10 {
                set(400, &mut refuse);
            }
            if rng.chance(20) {
                // A length beside it: the chunked framing alone counts, and
                // the connection closes after the reply (RFC 9112 §6.3).
                headers.push("Content-Length: 3".into());
                last = true;
            }
            chunked_body = true;
            payload = chunked(rng, &b);
        }
        11 if rng.chance(50) => {
            headers.push(format!(
                "Transfer-Encoding: {}",
                rng.pick(&["gzip, chunked", "chunked, chunked", "identity", "gzip"])
            ));
            set(400, &mut refuse);
            payload = chunked(rng, &b);
        }
        _ => {
            headers.push("Transfer-Encoding: chunked".into());
            headers.push("Transfer-Encoding: chunked".into());
            set(400, &mut refuse);
            payload = chunked(rng, &b);
        }
    }
    if method == "CONNECT" {
        refuse = Some(if refuse.is_some_and(|p| p != 405) {
            0
        } else {
            405
        });
    }
    // Shuffle the header lines.
    for i in (1..headers.len()).rev() {
        let j = rng.below(i + 1);
        headers.swap(i, j);
    }
    // Now and then a line no strict parser takes: folded, ended by a bare
    // LF, a space before the colon, a control byte in a value.
    let mut ends = vec!["\r\n"; headers.len()];
    let mut either = false;
    if rng.chance(6) && !headers.is_empty() {
        let i = rng.below(headers.len());
        match rng.below(4) {
            0 => {
                headers.insert(i + 1, " folded".into());
                ends.insert(i + 1, "\r\n");
                set(400, &mut refuse);
            }
            // Read as a line end by some parsers: passed on exactly, or refused.
            1 => {
                ends[i] = "\n";
                either = true;
            }
            2 => {
                headers.insert(i, "X-Space : 1".into());
                ends.insert(i, "\r\n");
                set(400, &mut refuse);
            }
            _ => {
                headers.insert(i, "X-Ctl: a\u{1}b".into());
                ends.insert(i, "\r\n");
                set(400, &mut refuse);
            }
        }
    }
    if either && refuse.is_some() {
        refuse = Some(0);
    }
    let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
    let mut bytes = format!("{method} {target} {version}\r\n").into_bytes();
    for (h, end) in headers.iter().zip(&ends) {
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(end.as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(&payload);
    let want = match refuse {
        Some(s) => Want::Refuse(s),
        None => Want::Forward {
            body: if chunked_body || !payload.is_empty() {
                b
            } else {
                Vec::new()
            },
            chunked: chunked_body,
            either,
        },
    };
    Case {
        id,
        method,
        bytes,
        want,
        last: last || refuse.is_some(),
    }
}
