//! Helpers for the worker end-to-end tests: start the real `par worker` on a free
//! port, a small HTTP/1.1 client over std sockets, fixtures and temp agents.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Shared cache for the whole test run, so Python environments install once.
pub fn par_home() -> PathBuf {
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("par-home");
    std::fs::create_dir_all(&home).expect("create par home");
    home
}

/// A fixture APKG from `target/fixtures/` (built by `dev/build-fixtures`).
#[track_caller]
pub fn fixture(name: &str) -> PathBuf {
    par_fixtures::apkg(name)
}

pub fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/agents")
        .join(name)
}

/// The requirements of the fixtures (fastapi, uvicorn, watchdog): a temp agent
/// that uses the same list shares their cached environment.
pub const FASTAPI_REQUIREMENTS: &str = "fastapi>=0.112.0\nuvicorn>=0.30.0\nwatchdog>=4.0.0\n";

/// Writes a source-folder agent: `files` are (relative path, content).
pub fn write_agent(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    for (rel, content) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write agent file");
    }
    dir.to_path_buf()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running `par worker`; killed on drop.
pub struct Worker {
    pub child: Child,
    pub port: u16,
}

impl Worker {
    pub fn start(package: &Path, agent_id: &str, extra: &[(&str, &str)]) -> Worker {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_par"));
        cmd.arg("worker")
            .env("PAR_PORT", port.to_string())
            .env("PAR_AGENT_ID", agent_id)
            .env("PAR_PACKAGE_PATH", package)
            .env("PAR_HOME", par_home())
            .env("PAR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn par worker");
        Worker { child, port }
    }

    /// Polls /health until `ready` (panics on `error`, exit, or timeout).
    pub fn wait_ready(&mut self, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("worker exited before ready: {status}");
            }
            if let Ok(r) = self.get("/health") {
                let v = r.json();
                match v["status"].as_str() {
                    Some("ready") => {
                        assert_eq!(r.status, 200);
                        return v;
                    }
                    Some("error") => panic!("worker reports error: {v}"),
                    _ => {}
                }
            }
            assert!(
                Instant::now() < deadline,
                "worker not ready within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn get(&self, path: &str) -> std::io::Result<Response> {
        request(self.port, "GET", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &str) -> Response {
        request(
            self.port,
            "POST",
            path,
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
        .expect("POST")
    }

    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    Ok(s)
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Response> {
    let mut s = connect(port)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    if let Some(b) = body {
        s.write_all(b)?;
    }
    let mut reader = BufReader::new(s);
    let (status, headers) = read_head(&mut reader)?;
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        while let Some(chunk) = read_chunk(&mut reader)? {
            body.extend_from_slice(&chunk);
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

pub fn read_head(reader: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

/// One chunk of a chunked body; `None` at the end.
pub fn read_chunk(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
        .map_err(|e| std::io::Error::other(format!("bad chunk size {line:?}: {e}")))?;
    let mut data = vec![0; size + 2];
    reader.read_exact(&mut data)?;
    data.truncate(size);
    if size == 0 {
        return Ok(None);
    }
    Ok(Some(data))
}

/// Opens a streaming request and returns the reader positioned at the body.
pub fn open_stream(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, BufReader<TcpStream>) {
    let empty: &[u8] = b"";
    open_request(
        port,
        method,
        path,
        headers,
        (method == "POST").then_some(empty),
    )
}

/// Sends a request (with `body` when given) and returns the status, the headers
/// and the reader positioned at the response body, for reading a stream.
pub fn open_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, Vec<(String, String)>, BufReader<TcpStream>) {
    let mut s = connect(port).expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write");
    if let Some(b) = body {
        s.write_all(b).expect("write body");
    }
    let mut reader = BufReader::new(s);
    let (status, headers) = read_head(&mut reader).expect("head");
    (status, headers, reader)
}
