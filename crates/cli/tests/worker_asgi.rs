//! End-to-end: agents that ARE an ASGI app (FastAPI/Starlette) or mount REST routes,
//! driven through the real worker: streaming (SSE), query strings, bodies, lifespan,
//! REST entry forms, and a partial surface failure.

mod worker_support;

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;
use worker_support::*;

const READY: Duration = Duration::from_secs(600);

const APP: &str = r#"
import asyncio, contextlib
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

state = {}

@contextlib.asynccontextmanager
async def lifespan(app):
    state["started"] = True
    yield
    state["stopped"] = True

app = FastAPI(lifespan=lifespan)

@app.get("/lifespan")
async def lifespan_state():
    return state

@app.get("/query")
async def query(request: Request):
    return {"items": list(request.query_params.multi_items()), "raw": request.url.query}

@app.post("/upload")
async def upload(request: Request):
    n = 0
    chunks = 0
    async for chunk in request.stream():
        n += len(chunk)
        chunks += 1
    return {"bytes": n}

@app.get("/sse")
async def sse():
    async def events():
        yield ":" + "-" * 2048 + "\n\n"
        yield "id: 1\nevent: message\ndata: first\n\n"
        await asyncio.sleep(2)
        yield "id: 2\nevent: message\ndata: second\n\n"
    return StreamingResponse(events(), media_type="text/event-stream")

@app.get("/sync")
def sync_route():
    return {"sync": True}
"#;

fn asgi_agent(
    dir: &std::path::Path,
    agent_yaml: &str,
    extra: &[(&str, &str)],
) -> std::path::PathBuf {
    let mut files = vec![
        ("agent.yaml", agent_yaml),
        ("requirements.txt", FASTAPI_REQUIREMENTS),
        ("src/__init__.py", ""),
        ("src/app.py", APP),
    ];
    files.extend_from_slice(extra);
    write_agent(dir, &files)
}

#[test]
fn http_server_app_streams_sse_keeps_query_and_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = asgi_agent(
        dir.path(),
        "name: asgi-app\nversion: '1.0'\nhttp_server: src.app:app\nmetadata:\n  version: 0.5.0\n",
        &[],
    );
    let mut w = Worker::start(&pkg, "asgi-app", &[]);
    let health = w.wait_ready(READY);
    assert_eq!(health["surfaces"], json!({"rest":{"status":"ready"}}));

    // Lifespan startup ran before the first request.
    assert_eq!(
        w.get("/lifespan").expect("lifespan").json(),
        json!({"started": true})
    );
    assert_eq!(w.get("/sync").expect("sync").json(), json!({"sync": true}));

    let r = w.get("/query?a=1&b=x%20y&a=2&a=3").expect("query");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"items": [["a","1"],["b","x y"],["a","2"],["a","3"]], "raw": "a=1&b=x%20y&a=2&a=3"})
    );

    // A 3 MB body sent in chunks, streamed to the app.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", w.port)).expect("connect");
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = vec![b'x'; 100_000];
    for _ in 0..30 {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        s.write_all(&chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut reader = std::io::BufReader::new(s);
    let (status, headers) = read_head(&mut reader).expect("head");
    assert_eq!(status, 200);
    let mut body = Vec::new();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        while let Some(c) = read_chunk(&mut reader).expect("chunk") {
            body.extend(c);
        }
    } else {
        std::io::Read::read_to_end(&mut reader, &mut body).expect("body");
    }
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        json!({"bytes": 3_000_000})
    );

    // SSE: the first event arrives long before the stream ends.
    let t = Instant::now();
    let (status, headers, mut reader) =
        open_stream(w.port, "GET", "/sse", &[("accept", "text/event-stream")]);
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-type")
                && v.starts_with("text/event-stream"))
    );
    let mut seen = String::new();
    let mut first_at = None;
    while let Some(c) = read_chunk(&mut reader).expect("chunk") {
        seen.push_str(&String::from_utf8_lossy(&c));
        if first_at.is_none() && seen.contains("data: first") {
            first_at = Some(t.elapsed());
        }
    }
    let end_at = t.elapsed();
    let first_at = first_at.expect("first event");
    eprintln!("SSE first event after {first_at:?}, stream ended after {end_at:?}");
    assert!(
        first_at + Duration::from_millis(1000) < end_at,
        "first {first_at:?} end {end_at:?}"
    );
    let expected = format!(
        ":{}\n\nid: 1\nevent: message\ndata: first\n\nid: 2\nevent: message\ndata: second\n\n",
        "-".repeat(2048)
    );
    assert_eq!(seen, expected, "byte-exact stream");
}

#[test]
fn rest_entry_forms_and_partial_ui_failure() {
    // `module` without `:` -> its mount(); the UI folder is missing: only `ui` fails.
    let dir = tempfile::tempdir().expect("tempdir");
    let mount = "from fastapi import FastAPI\n\ndef mount(app: FastAPI):\n    @app.get('/api/form')\n    def form():\n        return {'form': 'module'}\n";
    let pkg = asgi_agent(
        dir.path(),
        "name: rest-module\nversion: '1.0'\nentrypoint: src.main:handler\nrest:\n  entry: src.rest\nui:\n  path: missing-ui\nmetadata:\n  version: 0.1.0\n",
        &[("src/rest.py", mount), ("src/main.py", "def handler(c):\n    return c\n")],
    );
    let mut w = Worker::start(&pkg, "rest-module", &[]);
    let health = w.wait_ready(READY);
    assert_eq!(health["surfaces"]["rest"], json!({"status":"ready"}));
    assert_eq!(health["surfaces"]["ui"]["status"], "error", "{health}");
    assert_eq!(
        w.get("/api/form").expect("form").json(),
        json!({"form":"module"})
    );
    assert_eq!(
        w.post("/invoke", r#"{"z":1}"#).json()["data"],
        json!({"z":1})
    );
    assert_eq!(w.get("/ui/health").expect("ui health").status, 503);
    drop(w);

    // pixell-sdk 0.5: a bare function name in the entrypoint's module.
    let dir = tempfile::tempdir().expect("tempdir");
    let main = "from fastapi import FastAPI\n\ndef handler(c):\n    return c\n\ndef add_routes(app: FastAPI):\n    @app.get('/api/form')\n    async def form():\n        return {'form': 'bare'}\n";
    let pkg = asgi_agent(
        dir.path(),
        "name: rest-bare\nversion: '1.0'\nentrypoint: src.main:handler\nrest:\n  entry: add_routes\n",
        &[("src/main.py", main)],
    );
    let mut w = Worker::start(&pkg, "rest-bare", &[]);
    w.wait_ready(READY);
    assert_eq!(
        w.get("/api/form").expect("form").json(),
        json!({"form":"bare"})
    );
}

#[test]
fn asgi_exception_is_a_json_500_in_a_request_and_in_a_websocket_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = "async def app(scope, receive, send):\n    if scope['type'] == 'lifespan':\n        return\n    raise ValueError('boom')\n";
    let pkg = write_agent(
        dir.path(),
        &[
            (
                "agent.yaml",
                "name: raw-asgi\nversion: '1.0'\nhttp_server: src.app:app\n",
            ),
            ("src/__init__.py", ""),
            ("src/app.py", app),
        ],
    );
    let mut w = Worker::start(&pkg, "raw-asgi", &[]);
    w.wait_ready(Duration::from_secs(60));
    let r = w.get("/x").expect("500");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ValueError: boom"));
    let r = request(
        w.port,
        "GET",
        "/ws",
        &[
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        None,
    )
    .expect("ws");
    // WebSockets reach the app now; one that raises before accepting is a 500.
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ValueError: boom"));
}
