//! End-to-end: WebSockets from a real client through the supervisor to a
//! FastAPI app (crates/cli/tests/agents/ws-echo) in the real worker. Echo in
//! order, binary, subprotocols, close codes both ways, refusal, flow control
//! against a client that does not read, the idle timeout, metrics, and a
//! worker that dies or restarts mid-socket (the client gets 1012, not a hang).

mod supervisor_support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use supervisor_support::*;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Response as Handshake;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{HandshakeError, Message, WebSocket};

/// First start installs FastAPI into the shared environment cache.
const READY: Duration = Duration::from_secs(600);
/// Longest wait for any one WebSocket read: a hang fails the test.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

fn start(tag: &str, supervisor_toml: &str) -> Supervisor {
    start_ws_echo(tag, supervisor_toml, READY)
}

type Ws = WebSocket<TcpStream>;

fn connect(port: u16, path: &str, protocols: Option<&str>) -> Result<(Ws, Handshake), u16> {
    let mut req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    match tungstenite::client(req, stream) {
        Ok(x) => Ok(x),
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => Err(resp.status().as_u16()),
        Err(e) => panic!("WebSocket handshake with {path}: {e}"),
    }
}

/// Reads until a close frame; panics on anything but `expect_data` messages.
fn read_close(ws: &mut Ws) -> Option<CloseFrame> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame,
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(other) => panic!("expected a close frame, got {other:?}"),
            Err(e) => panic!("expected a close frame, the socket failed: {e}"),
        }
    }
}

/// What the app has seen (`GET /api/seen` of the ws-echo agent).
fn seen(port: u16) -> serde_json::Value {
    get(port, "/agents/ws/api/seen").unwrap().json()
}

#[test]
fn a_fastapi_websocket_echoes_in_order_and_closes_with_the_apps_code() {
    let sup = start("ws-echo", "");
    let (mut ws, resp) = connect(sup.port, "/agents/ws/ws", Some("chat.v0, echo.v1")).unwrap();
    assert_eq!(resp.status(), 101);
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok());
    assert_eq!(header("sec-websocket-protocol"), Some("echo.v1"));
    assert!(header("x-request-id").is_some(), "{:?}", resp.headers());

    // 1,000 text messages sent ahead of any reply, answered in order.
    for i in 0..1000 {
        ws.write(Message::text(format!("message {i}"))).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..1000 {
        match ws.read().unwrap() {
            Message::Text(t) => assert_eq!(t.as_str(), format!("message {i}")),
            other => panic!("message {i}: {other:?}"),
        }
    }
    let blob: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(blob.clone())).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert_eq!(&b[..], &blob[..]),
        other => panic!("binary echo: {other:?}"),
    }

    // The app closes with a code of its choosing; it reaches the client.
    ws.send(Message::text("close:4001")).unwrap();
    let frame = read_close(&mut ws).expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::from(4001));
    assert_eq!(frame.reason.as_str(), "closed by the app");
    drop(ws);

    // The client's close code reaches the app.
    let (mut ws, _) = connect(sup.port, "/agents/ws/ws/hold", None).unwrap();
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4321),
        reason: "bye".into(),
    }))
    .unwrap();
    let reply = read_close(&mut ws);
    assert_eq!(reply.map(|f| f.code), Some(CloseCode::from(4321)));
    wait_until(Duration::from_secs(10), "the app sees code 4321", || {
        seen(sup.port)["disconnects"]
            .as_array()
            .unwrap()
            .contains(&4321.into())
            .then_some(())
    });

    // A client that just goes away: the app still hears of it.
    let (ws, _) = connect(sup.port, "/agents/ws/ws/hold", None).unwrap();
    drop(ws);
    wait_until(
        Duration::from_secs(10),
        "the app sees the client gone (1006)",
        || {
            seen(sup.port)["disconnects"]
                .as_array()
                .unwrap()
                .contains(&1006.into())
                .then_some(())
        },
    );

    // The app refuses before accepting: 403, as for uvicorn.
    assert_eq!(
        connect(sup.port, "/agents/ws/ws/refuse", None).err(),
        Some(403)
    );
    // No such WebSocket route: the app's own answer.
    assert_eq!(connect(sup.port, "/agents/ws/nope", None).err(), Some(403));
    // Unknown agent: the supervisor's 404.
    assert_eq!(
        connect(sup.port, "/agents/nobody/ws", None).err(),
        Some(404)
    );

    let metrics = get(sup.port, "/metrics").unwrap().text();
    let value = |line: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line} not in /metrics:\n{metrics}"))
    };
    assert!(value("par_agent_websockets_total{agent_id=\"ws\"}") >= 3);
    assert!(value("par_agent_websocket_messages_total{agent_id=\"ws\",direction=\"in\"}") >= 1002);
    assert!(value("par_agent_websocket_messages_total{agent_id=\"ws\",direction=\"out\"}") >= 1001);
    wait_until(Duration::from_secs(10), "no WebSocket left open", || {
        let m = get(sup.port, "/metrics").unwrap().text();
        m.contains("par_agent_websockets_open{agent_id=\"ws\"} 0")
            .then_some(())
    });
}

#[test]
fn a_client_that_does_not_read_holds_the_app_back() {
    let sup = start("ws-flow", "");
    // 128 MiB offered as fast as the app's `send` returns.
    const COUNT: usize = 2048;
    let path = format!("/agents/ws/ws/flood?size=65536&count={COUNT}");
    let (mut ws, _) = connect(sup.port, &path, None).unwrap();
    // Wait until the app is held back: nothing more goes out while nobody reads.
    let mut last = u64::MAX;
    let sent = wait_until(Duration::from_secs(60), "the flood to stall", || {
        std::thread::sleep(Duration::from_millis(500));
        let now = seen(sup.port)["flood_sent"].as_u64().unwrap();
        let stalled = now == last && now > 0;
        last = now;
        stalled.then_some(now)
    });
    // The window plus the sockets' buffers on the way (about 10 MiB here).
    assert!(
        sent <= 64 << 20,
        "the app sent {sent} bytes to a client that reads nothing"
    );
    let mut got = 0usize;
    let frame = loop {
        match ws.read().unwrap() {
            Message::Binary(b) => {
                assert!(b.iter().all(|&c| c == b'x'));
                got += b.len();
            }
            Message::Close(f) => break f,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(got, COUNT * 65536);
    assert_eq!(frame.map(|f| f.code), Some(CloseCode::Normal));
    eprintln!(
        "the app had sent {:.1} MiB while the client read nothing",
        sent as f64 / 1048576.0
    );
}

#[test]
fn an_app_that_does_not_read_holds_the_client_back() {
    let sup = start("ws-sink", "");
    let (mut ws, _) = connect(sup.port, "/agents/ws/ws/sink", None).unwrap();
    // Writes that cannot go anywhere time out instead of blocking the test.
    ws.get_mut()
        .set_write_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    const COUNT: usize = 2048;
    let chunk = vec![7u8; 65536];
    let mut written = 0;
    while written < COUNT {
        match ws.send(Message::binary(chunk.clone())) {
            Ok(()) => written += 1,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("after {written} messages: {e}"),
        }
    }
    // The app's window plus the sockets' buffers on the way: far below 128 MiB.
    assert!(
        written < COUNT / 2,
        "{written} messages of 64 KiB went out to an app that reads nothing"
    );
    eprintln!(
        "{:.1} MiB went out while the app read nothing",
        written as f64 / 16.0
    );
    let r = http(sup.port, "POST", "/agents/ws/api/sink/open", &[], b"{}").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    ws.get_mut().set_write_timeout(None).unwrap();
    // The message that timed out is still queued; the rest follows it.
    let queued = written < COUNT;
    ws.flush().unwrap();
    for _ in written + usize::from(queued)..COUNT {
        ws.send(Message::binary(chunk.clone())).unwrap();
    }
    ws.send(Message::text("end")).unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::text(format!("{COUNT} {}", COUNT * 65536))
    );
}

#[test]
fn a_worker_killed_or_restarted_mid_socket_closes_it_with_1012() {
    let sup = start("ws-kill", "");
    let (mut ws, _) = connect(sup.port, "/agents/ws/ws", None).unwrap();
    ws.send(Message::text("before")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("before"));
    let pid = sup.process("ws").unwrap()["pid"].as_u64().unwrap();
    let t0 = Instant::now();
    unsafe_free_kill(pid as i32, 9);
    let frame = read_close(&mut ws).expect("a close frame after kill -9 of the worker");
    assert_eq!(frame.code, CloseCode::Restart, "{frame:?}");
    eprintln!("close 1012 {:?} after kill -9", t0.elapsed());

    // Back with a new worker; a graceful restart closes the same way (sent by the worker).
    wait_until(READY, "ws restarted and ready", || {
        sup.process("ws")
            .filter(|p| p["state"] == "ready" && p["pid"].as_u64() != Some(pid))
    });
    let (mut ws, _) = connect(sup.port, "/agents/ws/ws", None).unwrap();
    ws.send(Message::text("after")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("after"));
    let r = http(sup.port, "POST", "/supervisor/restart/par-ws", &[], b"").unwrap();
    assert!(r.status < 300, "{}", r.text());
    let frame = read_close(&mut ws).expect("a close frame on restart");
    assert_eq!(frame.code, CloseCode::Restart, "{frame:?}");
}

#[test]
fn an_idle_websocket_is_closed_by_the_supervisor() {
    let sup = start("ws-idle", "stream_idle_timeout = \"1s\"\n");
    let (mut ws, _) = connect(sup.port, "/agents/ws/ws/hold", None).unwrap();
    let t0 = Instant::now();
    let frame = read_close(&mut ws).expect("a close frame when idle");
    assert_eq!(frame.code, CloseCode::Away);
    assert_eq!(frame.reason.as_str(), "idle timeout");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    wait_until(Duration::from_secs(10), "the app sees 1001", || {
        seen(sup.port)["disconnects"]
            .as_array()
            .unwrap()
            .contains(&1001.into())
            .then_some(())
    });
    // Traffic keeps a socket open past the idle time.
    let (mut ws, _) = connect(sup.port, "/agents/ws/ws", None).unwrap();
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(400));
        ws.send(Message::text(format!("tick {i}"))).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(format!("tick {i}")));
    }
}

#[test]
fn a_supervisor_shutting_down_closes_its_websockets() {
    let mut sup = start("ws-shutdown", "");
    let (mut ws, _) = connect(sup.port, "/agents/ws/ws", None).unwrap();
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    sup.signal(15);
    let frame = read_close(&mut ws).expect("a close frame on shutdown");
    assert_eq!(frame.code, CloseCode::Away, "{frame:?}");
    assert_eq!(sup.wait_exit(Duration::from_secs(30)), Some(0));
}
