//! WebSocket round-trip load for `bench/websocket`: N connections, each
//! sending one text message and waiting for its echo, for a fixed time.
//! Prints one JSON line: round trips, per second, p50 and p99 in microseconds.
//!
//! Usage: ws_roundtrips URL CONNECTIONS SECONDS [MESSAGE_BYTES]

use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: ws_roundtrips URL CONNECTIONS SECONDS [MESSAGE_BYTES]");
        std::process::exit(2);
    }
    let url = args[1].clone();
    let conns: usize = args[2].parse().expect("CONNECTIONS is a number");
    let secs: f64 = args[3].parse().expect("SECONDS is a number");
    let size: usize = args
        .get(4)
        .map_or(32, |s| s.parse().expect("MESSAGE_BYTES"));
    let duration = Duration::from_secs_f64(secs);
    let payload = "x".repeat(size);
    let started = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (url, payload) = (url.clone(), payload.clone());
            std::thread::spawn(move || run(&url, &payload, duration))
        })
        .collect();
    let mut latencies: Vec<u32> = Vec::new();
    for t in threads {
        latencies.extend(t.join().expect("client thread"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{{\"round_trips\":{},\"seconds\":{elapsed:.3},\"per_second\":{:.1},\"p50_us\":{},\"p99_us\":{}}}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
}

/// One connection's round trips; returns each one's latency in microseconds.
fn run(url: &str, payload: &str, duration: Duration) -> Vec<u32> {
    let req = url.into_client_request().expect("a ws:// URL");
    let host = req.uri().host().unwrap_or("127.0.0.1").to_string();
    let port = req.uri().port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.as_str(), port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    // A small read buffer: the default (128 KiB) is zeroed before every read.
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (mut ws, _) = tungstenite::client::client_with_config(req, stream, Some(config))
        .expect("WebSocket handshake");
    let mut out = Vec::new();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let t0 = Instant::now();
        ws.send(Message::text(payload)).expect("send");
        match ws.read().expect("read") {
            Message::Text(t) if t.len() == payload.len() => {}
            other => panic!("unexpected reply: {other:?}"),
        }
        out.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    let _ = ws.close(None);
    let _ = ws.flush();
    out
}
