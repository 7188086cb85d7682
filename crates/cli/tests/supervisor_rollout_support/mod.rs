//! Helpers of the rollout and package-source tests: versioned stdlib agents
//! (folders and packed APKGs), a loopback HTTP file server whose files the
//! test changes and whose GETs it counts, a bounded invoke load, moto_server.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::supervisor_support::*;

/// A stdlib agent whose handler answers `{"version": version}`.
pub fn agent_dir(root: &Path, name: &str, version: &str) -> PathBuf {
    let dir = root.join(format!("{name}-{version}"));
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("agent.yaml"),
        format!(
            "name: {name}\ndisplay_name: Versioned\ndescription: answers its version\nversion: '1.0'\nentrypoint: src.main:handler\nruntime: python3.11\nmetadata:\n  version: {version}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("src/__init__.py"), "").unwrap();
    std::fs::write(
        dir.join("src/main.py"),
        format!(
            "import os\n\nVERSION = {version:?}\n\ndef handler(context):\n    return {{\"version\": VERSION, \"pid\": os.getpid()}}\n"
        ),
    )
    .unwrap();
    dir
}

/// An agent whose module fails to import (a package failure at load).
pub fn broken_import_dir(root: &Path, name: &str) -> PathBuf {
    let dir = agent_dir(root, name, "9.9.9");
    std::fs::write(
        dir.join("src/main.py"),
        "import module_that_does_not_exist_par\n\ndef handler(ctx):\n    return {}\n",
    )
    .unwrap();
    dir
}

/// An agent whose manifest is invalid (no entrypoint, bad field type).
pub fn broken_manifest_dir(root: &Path, name: &str) -> PathBuf {
    let dir = agent_dir(root, name, "8.8.8");
    std::fs::write(
        dir.join("agent.yaml"),
        format!("name: {name}\nversion: [not, a, string]\n"),
    )
    .unwrap();
    dir
}

/// `par pack DIR -o OUT.apkg`; returns the file's bytes.
pub fn pack(dir: &Path, out: &Path, home: &Path) -> Vec<u8> {
    let o = Command::new(env!("CARGO_BIN_EXE_par"))
        .arg("pack")
        .arg(dir)
        .arg("-o")
        .arg(out)
        .env("PAR_HOME", home)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "par pack failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(out).unwrap()
}

pub fn sha256_hex(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Each path's script of replies and how many it has answered.
type Scripts = Arc<Mutex<HashMap<String, (usize, Vec<Reply>)>>>;

/// One scripted answer of the file server.
#[derive(Clone)]
pub enum Reply {
    Body(Arc<Vec<u8>>),
    Status(u16),
}

/// A loopback HTTP/1.1 server: each path answers its script (the last reply
/// repeats); the test changes scripts at will and counts GETs per path.
pub struct FileServer {
    pub port: u16,
    routes: Scripts,
    gets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FileServer {
    pub fn start() -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let routes: Scripts = Default::default();
        let gets: Arc<Mutex<Vec<String>>> = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, g, st) = (routes.clone(), gets.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (r, g) = (r.clone(), g.clone());
                        std::thread::spawn(move || serve_one(s, r, g));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FileServer {
            port,
            routes,
            gets,
            stop,
        }
    }

    pub fn set(&self, path: &str, script: Vec<Reply>) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_string(), (0, script));
    }

    pub fn body(&self, path: &str, bytes: Vec<u8>) {
        self.set(path, vec![Reply::Body(Arc::new(bytes))]);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn gets(&self, path: &str) -> usize {
        self.gets
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.as_str() == path)
            .count()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_one(s: TcpStream, routes: Scripts, gets: Arc<Mutex<Vec<String>>>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/").to_string();
    if method == "GET" {
        gets.lock().unwrap().push(path.clone());
    }
    let reply = routes.lock().unwrap().get_mut(&path).map(|(n, script)| {
        let r = script[(*n).min(script.len() - 1)].clone();
        *n += 1;
        r
    });
    let mut s = s;
    let _ = match reply {
        Some(Reply::Body(b)) => s
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    b.len()
                )
                .as_bytes(),
            )
            .and_then(|_| s.write_all(&b)),
        Some(Reply::Status(code)) => s.write_all(
            format!("HTTP/1.1 {code} Scripted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        ),
        None => s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
    };
    let _ = s.flush();
}

/// What a bounded load saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: usize,
    pub failed: Vec<String>,
    /// Per client, the versions answered, in order.
    pub versions: Vec<Vec<String>>,
    /// (time since start, version) of every answer, all clients.
    pub timeline: Vec<(Duration, String)>,
}

/// `clients` threads invoking `/agents/{agent}/invoke` over keep-alive
/// connections until `stop` is set (or `max` passes).
pub fn run_load(
    port: u16,
    agent: &str,
    clients: usize,
    stop: Arc<AtomicBool>,
    max: Duration,
) -> std::thread::JoinHandle<LoadReport> {
    let agent = agent.to_string();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (agent, stop) = (agent.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut ok = 0;
                    let mut failed = Vec::new();
                    let mut versions = Vec::new();
                    let mut timeline = Vec::new();
                    let mut conn: Option<Conn> = None;
                    while !stop.load(Ordering::Relaxed) && t0.elapsed() < max {
                        if conn.is_none() {
                            match Conn::open(port) {
                                Ok(c) => conn = Some(c),
                                Err(e) => {
                                    failed.push(format!("connect: {e}"));
                                    std::thread::sleep(Duration::from_millis(10));
                                    continue;
                                }
                            }
                        }
                        let c = conn.as_mut().unwrap();
                        match c.request(
                            "POST",
                            &format!("/agents/{agent}/invoke"),
                            &[("Content-Type", "application/json")],
                            br#"{"n":1}"#,
                        ) {
                            Ok(r) if r.status == 200 => {
                                ok += 1;
                                let v = serde_json::from_slice::<serde_json::Value>(&r.body)
                                    .ok()
                                    .and_then(|j| j["data"]["version"].as_str().map(str::to_owned))
                                    .unwrap_or_else(|| "?".into());
                                timeline.push((t0.elapsed(), v.clone()));
                                versions.push(v);
                                if r.header("connection")
                                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                                {
                                    conn = None;
                                }
                            }
                            Ok(r) => {
                                failed.push(format!("HTTP {}: {}", r.status, r.text()));
                                conn = None;
                            }
                            Err(e) => {
                                failed.push(format!("io: {e}"));
                                conn = None;
                            }
                        }
                    }
                    (ok, failed, versions, timeline)
                })
            })
            .collect();
        let mut report = LoadReport::default();
        for h in handles {
            let (ok, failed, versions, timeline) = h.join().unwrap();
            report.ok += ok;
            report.failed.extend(failed);
            report.versions.push(versions);
            report.timeline.extend(timeline);
        }
        report.timeline.sort_by_key(|(t, _)| *t);
        report
    })
}

/// The version an invoke through the supervisor answers.
pub fn version_of(port: u16, agent: &str) -> Option<String> {
    let r = http(
        port,
        "POST",
        &format!("/agents/{agent}/invoke"),
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .ok()?;
    (r.status == 200).then(|| r.json()["data"]["version"].as_str().map(str::to_owned))?
}

/// Waits until the agent's rollout has left `rolling`; returns its process entry.
pub fn wait_rollout(sup: &Supervisor, agent: &str, timeout: Duration) -> serde_json::Value {
    wait_until(timeout, &format!("rollout of {agent} to end"), || {
        sup.process(agent)
            .filter(|p| p["rollout"].is_object() && p["rollout"]["state"] != "rolling")
    })
}

const MOTO_HINT: &str = "moto_server (a local S3 server) is required but was not found on PATH \
or in target/pytools/bin. Install it with: python3 -m venv target/pytools && \
target/pytools/bin/pip install -r crates/fetch/tests/requirements.txt (dev/test does this)";

/// A moto_server on a free loopback port, killed on drop.
pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    pub fn start() -> Moto {
        let exe = std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("moto_server"))
                    .find(|p| p.is_file())
            })
            .or_else(|| {
                let p = repo_root().join("target/pytools/bin/moto_server");
                p.is_file().then_some(p)
            })
            .unwrap_or_else(|| panic!("{MOTO_HINT}"));
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&exe)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("failed to start {}: {e}", exe.display()));
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Moto { child, addr };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto_server did not start listening");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// PUT: creates a bucket or an object, or replaces one. Moto checks no
    /// signatures, but refuses anonymous requests on an object that exists:
    /// the request names a (made-up) AWS signature.
    pub fn put(&self, path: &str, body: &[u8]) {
        let auth = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, \
                    SignedHeaders=host, Signature=0";
        let r = http(
            self.addr.port(),
            "PUT",
            path,
            &[("Authorization", auth)],
            body,
        )
        .unwrap();
        assert!(r.status < 300, "PUT {path}: HTTP {} {}", r.status, r.text());
    }
}

/// A TCP proxy that counts `GET ` request lines going through it (to see
/// whether the supervisor downloaded anything).
pub struct CountingProxy {
    pub port: u16,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl CountingProxy {
    pub fn start(upstream: SocketAddr) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<u8>>> = Default::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let log = log.clone();
                let (mut cr, mut sw) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut sr, mut cw) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match cr.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                log.lock().unwrap().extend_from_slice(&buf[..n]);
                                if sw.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = sw.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut sr, &mut cw);
                    let _ = cw.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CountingProxy { port, seen }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn gets(&self, path: &str) -> usize {
        String::from_utf8_lossy(&self.seen.lock().unwrap())
            .matches(&format!("GET {path}"))
            .count()
    }
}

/// Rewrites the supervisor's config file: its `[supervisor]` part, then `agents`.
pub fn rewrite_agents(sup: &Supervisor, agents: &str) {
    let cfg = sup.dir.path().join("sup.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let head = text.split("[[agents]]").next().unwrap().to_string();
    std::fs::write(&cfg, format!("{head}{agents}")).unwrap();
}
