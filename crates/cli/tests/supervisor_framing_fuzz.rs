//! Random requests through the real supervisor to a worker stand-in that
//! records exactly what it receives (framing_support): methods, targets,
//! header sets with hop-by-hop and `Connection`-named headers, every
//! `Content-Length` / `Transfer-Encoding` combination, bodies that hold
//! whole requests, pipelining, HTTP/1.0, writes cut at random bytes, on the
//! direct path and on hyper's. Each request in gives at most one request
//! out, with the same framing and body, answered to the client that sent
//! it; or a 4xx to that client and nothing out.
//!
//! `PAR_FUZZ_REQUESTS` (default 3000) requests; `PAR_FUZZ_SEED` replays a
//! run (the seed is printed).

mod framing_support;
mod supervisor_support;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use framing_support::random::*;
use framing_support::*;
use supervisor_support::*;

/// The outcome of one connection's requests: the ids answered 200 by the
/// worker, and what went wrong.
fn run_connection(port: u16, rng: &mut Rng, cases: &[Case]) -> (Vec<String>, Vec<String>) {
    let mut answered = Vec::new();
    let mut wrong = Vec::new();
    let mut stream = Vec::new();
    for c in cases {
        stream.extend_from_slice(&c.bytes);
        if c.last {
            break;
        }
    }
    let socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    socket.set_nodelay(true).unwrap();
    // Written in pieces cut at random bytes, on a thread (a pipelined
    // stream can be larger than what the socket buffers).
    let mut w = socket.try_clone().unwrap();
    let mut conn = BufReader::new(socket);
    let sent = stream.clone();
    let cuts: Vec<usize> = (0..rng.below(6))
        .map(|_| rng.below(stream.len() + 1))
        .collect();
    let writer = std::thread::spawn(move || {
        let mut cuts = cuts;
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        for pair in cuts.windows(2) {
            if w.write_all(&stream[pair[0]..pair[1]]).is_err() {
                return;
            }
            let _ = w.flush();
            std::thread::yield_now();
        }
    });
    for c in cases {
        let r = match read_response(&mut conn, &c.method) {
            Ok(r) => r,
            Err(e) => {
                wrong.push(format!(
                    "{}: no response ({e}); want {:?}",
                    c.id,
                    short(&c.want)
                ));
                break;
            }
        };
        let text = r.text();
        match &c.want {
            Want::Health => {
                if r.status != 200 {
                    wrong.push(format!("{}: health answered {}", c.id, r.status));
                }
            }
            Want::Refuse(s) => {
                let fits = if *s == 0 {
                    (400..500).contains(&r.status)
                } else {
                    r.status == *s
                };
                if !fits {
                    wrong.push(format!(
                        "{}: answered {} {text:?}, want {s}; sent {:?}",
                        c.id,
                        r.status,
                        String::from_utf8_lossy(&c.bytes)
                    ));
                }
            }
            Want::Forward { either: true, .. } if (400..500).contains(&r.status) => {}
            Want::Forward { body, .. } => {
                let target = text.split(' ').nth(2).unwrap_or_default();
                if r.status != 200 || (c.method != "HEAD" && id_of(target) != c.id) {
                    wrong.push(format!(
                        "{}: answered {} {text:?}; sent {:?}",
                        c.id,
                        r.status,
                        String::from_utf8_lossy(&c.bytes[..c.bytes.len().min(600)])
                    ));
                } else if c.method != "HEAD" {
                    let tail = format!("{} {}", body.len(), fnv(body));
                    if !text.ends_with(&tail) {
                        wrong.push(format!(
                            "{}: the worker read another body: {text:?}, want {tail}",
                            c.id
                        ));
                    }
                }
                if r.status == 200 {
                    answered.push(c.id.clone());
                }
            }
        }
        if c.last || r.status >= 400 {
            break;
        }
    }
    drop(conn);
    let _ = writer.join();
    if !wrong.is_empty() {
        let shown = &sent[..sent.len().min(3000)];
        wrong.push(format!(
            "  (that connection sent {:?})",
            String::from_utf8_lossy(shown)
        ));
    }
    (answered, wrong)
}

/// The id in a worker's target `/fz/{id}[/...][?...]`.
fn id_of(target: &str) -> &str {
    let rest = target.strip_prefix("/fz/").unwrap_or_default();
    rest.split(['/', '?']).next().unwrap_or_default()
}

fn short(w: &Want) -> String {
    match w {
        Want::Forward {
            body,
            chunked,
            either,
        } => {
            format!(
                "forward {} bytes chunked={chunked} or-4xx={either}",
                body.len()
            )
        }
        other => format!("{other:?}"),
    }
}

/// One final response (interim ones skipped): status, head, body.
fn read_response(r: &mut BufReader<TcpStream>, method: &str) -> std::io::Result<Resp> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| bad(format!("header {h:?}")))?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if method == "HEAD" || status == 204 || status == 304 {
        } else if get("transfer-encoding").is_some() {
            return Err(bad("a chunked reply (the recorder sends none)".into()));
        } else if let Some(n) = get("content-length") {
            body.resize(n.parse().map_err(|_| bad(format!("length {n}")))?, 0);
            r.read_exact(&mut body)?;
        } else {
            r.read_to_end(&mut body)?;
        }
        return Ok(Resp {
            status,
            headers,
            body,
        });
    }
}

#[test]
fn random_requests_reach_the_worker_once_with_their_own_framing_or_are_refused() {
    let total: usize = std::env::var("PAR_FUZZ_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("PAR_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("fuzz: {total} requests, PAR_FUZZ_SEED={seed}");
    let (sup, rec, _d) = supervisor_with_recorder("fuzz", "a", "", &[]);
    const THREADS: u64 = 4;
    let wants: Arc<Mutex<HashMap<String, Want>>> = Arc::default();
    let results: Vec<(Vec<String>, Vec<String>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let wants = Arc::clone(&wants);
                let port = sup.port;
                s.spawn(move || {
                    let mut rng = Rng(seed ^ (t.wrapping_mul(0x2545f4914f6cdd1d)));
                    let (mut answered, mut wrong, mut sent) = (Vec::new(), Vec::new(), 0);
                    let mut n = 0usize;
                    while sent < total / THREADS as usize {
                        let most = if rng.chance(30) { 5 } else { 1 };
                        let k = 1 + rng.below(most);
                        let cases: Vec<Case> = (0..k)
                            .map(|_| {
                                n += 1;
                                case(&mut rng, format!("{t}-{n}"))
                            })
                            .collect();
                        {
                            let mut w = wants.lock().unwrap();
                            for c in &cases {
                                w.insert(c.id.clone(), c.want.clone());
                            }
                        }
                        sent += cases.len();
                        let (a, w) = run_connection(port, &mut rng, &cases);
                        answered.extend(a);
                        wrong.extend(w);
                    }
                    (answered, wrong, sent)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut wrong: Vec<String> = results.iter().flat_map(|r| r.1.clone()).collect();
    let answered: std::collections::HashSet<String> =
        results.iter().flat_map(|r| r.0.clone()).collect();
    let sent: usize = results.iter().map(|r| r.2).sum();
    // What the worker received: each id at most once, only ids answered
    // 200, with the framing and body sent.
    let wants = wants.lock().unwrap();
    let mut count: HashMap<String, usize> = HashMap::new();
    for s in rec.seen("/fz/") {
        let id = id_of(&s.target).to_string();
        *count.entry(id.clone()).or_default() += 1;
        match wants.get(&id) {
            Some(Want::Forward { body, chunked, .. }) => {
                if s.body != *body {
                    wrong.push(format!(
                        "{id}: the worker read {} bytes, {} were sent",
                        s.body.len(),
                        body.len()
                    ));
                }
                let framing_ok = match s.framing {
                    Framing::Chunked => *chunked,
                    Framing::Length(n) => !*chunked && n as usize == body.len(),
                    Framing::None => !*chunked && body.is_empty(),
                };
                if !framing_ok {
                    wrong.push(format!(
                        "{id}: framing {:?} at the worker, chunked={chunked} sent",
                        s.framing
                    ));
                }
                if !answered.contains(&id) {
                    wrong.push(format!(
                        "{id}: reached the worker but its sender got no 200"
                    ));
                }
            }
            other => wrong.push(format!("{id} reached the worker: {s:?}; want {other:?}")),
        }
    }
    for (id, n) in &count {
        if *n > 1 {
            wrong.push(format!("{id} reached the worker {n} times"));
        }
    }
    for p in rec.problems() {
        wrong.push(format!("the worker read a malformed request: {p}"));
    }
    let forwarded = count.len();
    eprintln!(
        "fuzz: {sent} requests sent, {forwarded} reached the worker, {} differences (seed {seed})",
        wrong.len()
    );
    for w in wrong.iter().take(12) {
        eprintln!("  {w}");
    }
    assert!(
        wrong.is_empty(),
        "{} framing differences; replay with PAR_FUZZ_SEED={seed}",
        wrong.len()
    );
    assert!(
        forwarded > sent / 3,
        "too few requests were served to mean anything: {forwarded} of {sent}"
    );
    drop(sup);
}
