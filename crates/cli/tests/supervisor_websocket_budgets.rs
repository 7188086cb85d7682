//! End-to-end: WebSocket size limits through the supervisor, with the
//! FastAPI echo agent of the tests (crates/cli/tests/agents/ws-echo) and a
//! tungstenite client. A message or frame over `websocket_max_message` /
//! `websocket_max_frame` closes the socket with 1009 to the side that sent
//! it (1001 to the other), a frame the protocol forbids with 1002, and 100
//! sockets each holding an unfinished fragmented message do not grow the
//! supervisor past 100 MB.

mod supervisor_support;

use std::io::Write as _;
use std::net::TcpStream;
use std::time::Duration;

use supervisor_support::*;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// First start installs FastAPI into the shared environment cache.
const READY: Duration = Duration::from_secs(600);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const RSS_LIMIT_KB: u64 = 100 * 1024;

fn start(tag: &str, supervisor_toml: &str) -> Supervisor {
    start_ws_echo(tag, supervisor_toml, READY)
}

type Ws = WebSocket<TcpStream>;

fn connect(port: u16, path: &str) -> Ws {
    let req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    tungstenite::client(req, stream)
        .unwrap_or_else(|e| panic!("WebSocket handshake with {path}: {e}"))
        .0
}

/// Reads until a close frame (data before it is skipped).
fn read_close(ws: &mut Ws) -> Option<CloseFrame> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame,
            Ok(_) => {}
            Err(e) => panic!("expected a close frame, the socket failed: {e}"),
        }
    }
}

/// One frame of a binary message, as the client sends it (masked).
fn fragment(ws: &mut Ws, payload: Vec<u8>, first: bool, last: bool) {
    let op = if first {
        OpCode::Data(Data::Binary)
    } else {
        OpCode::Data(Data::Continue)
    };
    ws.write(Message::Frame(Frame::message(payload, op, last)))
        .unwrap();
    ws.flush().unwrap();
}

fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(text));
}

#[test]
fn messages_and_frames_over_the_limits_close_with_1009() {
    let sup = start(
        "ws-limits",
        "websocket_max_message = \"1MiB\"\nwebsocket_max_frame = \"256KiB\"\n",
    );
    // Below the limits: a fragmented message of 4 x 50 KiB arrives whole
    // (and its echo, one frame of 200 KiB, too).
    let mut ws = connect(sup.port, "/agents/ws/ws");
    let part: Vec<u8> = (0..50 * 1024u32).map(|i| (i % 251) as u8).collect();
    for i in 0..4 {
        fragment(&mut ws, part.clone(), i == 0, i == 3);
    }
    match ws.read().unwrap() {
        Message::Binary(b) => {
            assert_eq!(b.len(), 4 * part.len());
            assert!(b.chunks(part.len()).all(|c| c == &part[..]));
        }
        other => panic!("{other:?}"),
    }
    echo(&mut ws, "still open");

    // One frame over websocket_max_frame.
    let mut ws = connect(sup.port, "/agents/ws/ws");
    fragment(&mut ws, vec![1u8; 300 * 1024], true, true);
    let frame = read_close(&mut ws).expect("a close frame");
    assert_eq!(frame.code, CloseCode::Size, "{frame:?}");

    // A fragmented message over websocket_max_message, each frame within
    // the frame limit.
    let mut ws = connect(sup.port, "/agents/ws/ws");
    let big = vec![2u8; 200 * 1024];
    let mut sent = 0;
    let frame = loop {
        fragment(&mut ws, big.clone(), sent == 0, false);
        sent += big.len();
        assert!(sent <= 2 << 20, "still open after {sent} bytes");
        if sent > 1 << 20 {
            break read_close(&mut ws).expect("a close frame");
        }
    };
    assert_eq!(frame.code, CloseCode::Size, "{frame:?}");
    // The app was told the client went away.
    wait_until(Duration::from_secs(10), "the app sees 1001", || {
        let seen = get(sup.port, "/agents/ws/api/seen").unwrap().json();
        seen["disconnects"]
            .as_array()
            .unwrap()
            .contains(&1001.into())
            .then_some(())
    });

    // The app sends more than websocket_max_message: it gets 1009, the
    // client 1001.
    let mut ws = connect(sup.port, "/agents/ws/ws/flood?size=2000000&count=1");
    let frame = read_close(&mut ws).expect("a close frame");
    assert_eq!(frame.code, CloseCode::Away, "{frame:?}");
    assert_eq!(frame.reason.as_str(), "peer sent a message too big");

    // The supervisor and other sockets are unaffected.
    let mut ws = connect(sup.port, "/agents/ws/ws");
    echo(&mut ws, "after");
}

#[test]
fn sockets_holding_unfinished_fragmented_messages_do_not_grow_the_supervisor() {
    const SOCKETS: usize = 100;
    // Each socket holds a message just under the limit, never finished.
    const HELD: usize = (2 << 20) - (64 << 10);
    let sup = start("ws-held", "websocket_max_message = \"2MiB\"\n");
    let pid = sup.child.id();
    let before = rss_kb(pid);
    let chunk = vec![3u8; 64 << 10];
    let mut sockets = Vec::new();
    let mut peak = before;
    for i in 0..SOCKETS {
        let mut ws = connect(sup.port, "/agents/ws/ws");
        let mut held = 0;
        while held < HELD {
            fragment(&mut ws, chunk.clone(), held == 0, false);
            held += chunk.len();
        }
        // A ping keeps it alive and shows it is still served.
        ws.send(Message::Ping(vec![i as u8].into())).unwrap();
        sockets.push(ws);
        peak = peak.max(rss_kb(pid));
    }
    // Every socket answers its ping: everything sent is through the relay.
    for (i, ws) in sockets.iter_mut().enumerate() {
        match ws.read().unwrap() {
            Message::Pong(p) => assert_eq!(&p[..], &[i as u8]),
            other => panic!("socket {i}: {other:?}"),
        }
    }
    peak = peak.max(rss_kb(pid));
    let held_rss = rss_kb(pid);
    eprintln!(
        "{SOCKETS} sockets holding {:.1} MiB each: supervisor RSS {before} kB before, {held_rss} kB while held, peak {peak} kB",
        HELD as f64 / 1048576.0
    );
    assert!(
        peak < RSS_LIMIT_KB,
        "supervisor RSS {peak} kB with {SOCKETS} unfinished messages (was {before} kB)"
    );
    // Other sockets still echo, and a held message completes whole.
    let mut fresh = connect(sup.port, "/agents/ws/ws");
    echo(&mut fresh, "fresh socket");
    let ws = &mut sockets[7];
    fragment(ws, b"end".to_vec(), false, true);
    match ws.read().unwrap() {
        Message::Binary(b) => {
            assert_eq!(b.len(), HELD + 3);
            assert!(b[..HELD].iter().all(|&c| c == 3));
            assert_eq!(&b[HELD..], b"end");
        }
        other => panic!("{other:?}"),
    }
    echo(ws, "and on");
}

#[test]
fn frames_the_protocol_forbids_close_with_1002() {
    let sup = start("ws-protocol", "");
    // A client frame without a mask (a client must mask every frame).
    let mut ws = connect(sup.port, "/agents/ws/ws");
    echo(&mut ws, "before");
    ws.get_mut().write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    let frame = read_close(&mut ws).expect("a close frame");
    assert_eq!(frame.code, CloseCode::Protocol, "{frame:?}");
    // Reserved bits set (no extension was negotiated).
    let mut ws = connect(sup.port, "/agents/ws/ws");
    ws.get_mut()
        .write_all(&[0xc1, 0x82, 0, 0, 0, 0, b'h', b'i'])
        .unwrap();
    let frame = read_close(&mut ws).expect("a close frame");
    assert_eq!(frame.code, CloseCode::Protocol, "{frame:?}");
    // A continuation with no message begun.
    let mut ws = connect(sup.port, "/agents/ws/ws");
    fragment(&mut ws, b"orphan".to_vec(), false, true);
    let frame = read_close(&mut ws).expect("a close frame");
    assert_eq!(frame.code, CloseCode::Protocol, "{frame:?}");
    let mut ws = connect(sup.port, "/agents/ws/ws");
    echo(&mut ws, "others unaffected");
}
