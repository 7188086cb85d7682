//! End-to-end: streamed ASGI responses through the real worker: a slow client
//! holds a fast producer back (per-request flow-control window, bounded worker
//! memory), and a stream may stay silent longer than the invoke timeout.

mod worker_support;

use std::io::Read;
use std::time::{Duration, Instant};

use worker_support::*;

/// A raw ASGI app (no dependencies): `/flood?total=N` streams N bytes in 64 KiB
/// chunks as fast as the worker takes them, chunk `i` being the u64 `i`
/// repeated; `/progress` says how far the flood got. `/quiet?gap=S` sends a
/// chunk, stays silent S seconds, then sends two more; `/slowhead?delay=S`
/// answers only after S seconds.
const APP: &str = r#"
import asyncio, json
from urllib.parse import parse_qs

CHUNK = 64 * 1024
PROGRESS = {"sent": 0, "done": False}

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"]
    if path == "/progress":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(PROGRESS).encode()})
    elif path == "/flood":
        total = int(q["total"])
        PROGRESS.update(sent=0, done=False)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
        i = 0
        while i * CHUNK < total:
            await send({"type": "http.response.body", "body": i.to_bytes(8, "big") * (CHUNK // 8), "more_body": True})
            i += 1
            PROGRESS["sent"] = i * CHUNK
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        PROGRESS["done"] = True
    elif path == "/quiet":
        gap = float(q["gap"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: before\n\n", "more_body": True})
        await asyncio.sleep(gap)
        await send({"type": "http.response.body", "body": b"data: after-1\n\n", "more_body": True})
        await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b"data: after-2\n\n", "more_body": False})
    elif path == "/slowhead":
        await asyncio.sleep(float(q["delay"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found"})
"#;

fn stream_agent(dir: &std::path::Path) -> std::path::PathBuf {
    write_agent(
        dir,
        &[
            (
                "agent.yaml",
                "name: stream-app\nversion: '1.0'\nhttp_server: src.app:app\n",
            ),
            ("src/__init__.py", ""),
            ("src/app.py", APP),
        ],
    )
}

fn progress(w: &Worker) -> (u64, bool) {
    let v = w.get("/progress").expect("progress").json();
    (
        v["sent"].as_u64().expect("sent"),
        v["done"].as_bool().expect("done"),
    )
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Reads `n` bytes of a chunked body, carrying partial chunks over in `rest`.
fn read_body(
    reader: &mut std::io::BufReader<std::net::TcpStream>,
    rest: &mut Vec<u8>,
    n: usize,
) -> Vec<u8> {
    while rest.len() < n {
        match read_chunk(reader).expect("chunk") {
            Some(c) => rest.extend_from_slice(&c),
            None => break,
        }
    }
    let take = n.min(rest.len());
    rest.drain(..take).collect()
}

const MIB: u64 = 1024 * 1024;
const TOTAL: u64 = 128 * MIB;
/// How far the producer may run ahead of what the client read: the worker's
/// per-request window (1 MiB), what the kernel may buffer on the way (the
/// client's receive buffer and the worker's send buffer, which autotuning
/// grows up to the maximums of net.ipv4.tcp_rmem and tcp_wmem: 32 MiB and
/// 4 MiB on some machines), and 2 MiB for the HTTP layers and the chunk in
/// hand. Without the window the producer would be done at once (128 MiB).
fn ahead() -> u64 {
    let max = |file: &str| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.split_whitespace().nth(2)?.parse::<u64>().ok())
            .unwrap_or(6 * MIB)
    };
    MIB + max("/proc/sys/net/ipv4/tcp_rmem") + max("/proc/sys/net/ipv4/tcp_wmem") + 2 * MIB
}

#[test]
fn slow_client_holds_back_a_fast_producer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = stream_agent(dir.path());
    let mut w = Worker::start(&pkg, "stream-app", &[]);
    w.wait_ready(Duration::from_secs(60));
    let rss_before = rss_kib(w.child.id());

    let (status, _, mut reader) = open_stream(w.port, "GET", &format!("/flood?total={TOTAL}"), &[]);
    assert_eq!(status, 200);
    // The client reads nothing: the producer must stall, not fill the worker.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = progress(&w);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = progress(&w);
        assert!(
            !now.1,
            "the producer finished while the client read nothing"
        );
        assert!(
            now.0 <= ahead(),
            "the producer ran {} MiB ahead of a client that read nothing",
            now.0 / MIB
        );
        if now.0 == last.0 && now.0 > 0 {
            break;
        }
        last = now;
        assert!(Instant::now() < deadline, "the producer never stalled");
    }
    let rss_stalled = rss_kib(w.child.id());
    eprintln!(
        "producer stalled at {} KiB; worker RSS {} KiB before, {} KiB stalled",
        last.0 / 1024,
        rss_before,
        rss_stalled
    );
    assert!(
        rss_stalled < rss_before + 32 * 1024,
        "worker RSS grew from {rss_before} KiB to {rss_stalled} KiB"
    );

    // Read slowly, in steps: the producer stays within the bound of what was read.
    let mut rest = Vec::new();
    let mut read: u64 = 0;
    let mut chunk_index: u64 = 0;
    let check = |bytes: &[u8], chunk_index: &mut u64, offset: u64| {
        // Every 64 KiB chunk is its index repeated: order and content intact.
        let mut at = offset;
        for b in bytes.chunks(8) {
            let i = at / (64 * 1024);
            assert_eq!(b, &i.to_be_bytes()[..b.len()], "byte {at}");
            at += b.len() as u64;
            *chunk_index = i;
        }
    };
    while read < TOTAL {
        let step = if read < 32 * MIB { 4 * MIB } else { 16 * MIB };
        let got = read_body(&mut reader, &mut rest, step as usize);
        assert!(!got.is_empty(), "stream ended early at {read}");
        check(&got, &mut chunk_index, read);
        read += got.len() as u64;
        if read < TOTAL {
            std::thread::sleep(Duration::from_millis(200));
            let (sent, _) = progress(&w);
            assert!(
                sent <= read + ahead(),
                "producer at {} MiB while the client read {} MiB",
                sent / MIB,
                read / MIB
            );
        }
    }
    assert_eq!(read, TOTAL);
    assert_eq!(chunk_index, TOTAL / (64 * 1024) - 1);
    assert!(
        read_chunk(&mut reader).expect("end").is_none(),
        "no bytes after the total"
    );
    assert_eq!(progress(&w), (TOTAL, true));

    // A client that disconnects mid-stream releases the producer waiting for the
    // window: its further sends are dropped (ASGI: no-ops after a disconnect),
    // so it runs to its end without the worker holding any of it.
    let (status, _, reader) = open_stream(w.port, "GET", &format!("/flood?total={TOTAL}"), &[]);
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(500));
    let (sent, done) = progress(&w);
    assert!(!done && sent <= ahead(), "{sent} {done}");
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !progress(&w).1 {
        assert!(
            Instant::now() < deadline,
            "the producer stayed blocked after the client left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_after = rss_kib(w.child.id());
    assert!(
        rss_after < rss_before + 32 * 1024,
        "worker RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The worker still serves.
    assert_eq!(w.get("/progress").expect("progress").status, 200);
}

#[test]
fn a_stream_may_stay_silent_longer_than_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = stream_agent(dir.path());
    let mut w = Worker::start(&pkg, "stream-app", &[("PAR_INVOKE_TIMEOUT", "1")]);
    w.wait_ready(Duration::from_secs(60));
    let t = Instant::now();
    let (status, headers, mut reader) = open_stream(w.port, "GET", "/quiet?gap=2.5", &[]);
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v == "text/event-stream"));
    let mut body = Vec::new();
    let mut first_at = None;
    while let Some(c) = read_chunk(&mut reader).expect("chunk") {
        body.extend_from_slice(&c);
        first_at.get_or_insert(t.elapsed());
    }
    let end_at = t.elapsed();
    eprintln!("quiet stream: first bytes after {first_at:?}, end after {end_at:?}");
    assert_eq!(
        String::from_utf8_lossy(&body),
        "data: before\n\ndata: after-1\n\ndata: after-2\n\n"
    );
    // The silence (2.5 s) was longer than the 1 s timeout, and the stream survived it.
    assert!(end_at >= Duration::from_millis(2500), "{end_at:?}");
    let mut tail = Vec::new();
    reader.read_to_end(&mut tail).expect("eof");
    assert!(tail.is_empty());

    // The same 1 s timeout does apply to a response head.
    let r = w.get("/slowhead?delay=2.5").expect("slow head");
    assert_eq!(r.status, 504, "{}", r.text());
}
