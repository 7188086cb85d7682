//! Test support for the supervisor's end-to-end tests: a temp dir, a minimal
//! HTTP/1.1 client over std sockets, and a running `par supervisor` with the
//! fake worker (crates/supervisor/tests/fake_worker.py) or the real one.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod agents;
pub mod sessions;
#[allow(unused_imports)] // not every test uses these
pub use agents::*;

pub fn fake_worker() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../supervisor/tests/fake_worker.py")
        .to_string_lossy()
        .into_owned()
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "par-sup-{tag}-{}-{}",
            std::process::id(),
            fastrand_u64()
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A base for a block of `n` worker ports (random, so parallel tests rarely meet;
/// the supervisor skips ports in use anyway), below the kernel's ephemeral
/// range: the outgoing connections of tests running at once (one holds 20,000)
/// take their local ports from there, and a worker port one of them holds
/// while the supervisor starts is one it cannot reserve.
pub fn port_block(n: u16) -> (u16, u16) {
    let ephemeral_lo = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|lo| *lo > 20000 + 2 * n)
        .unwrap_or(32768);
    let base = 20000 + (fastrand_u64() % u64::from(ephemeral_lo - 20000 - n)) as u16;
    (base, base + n - 1)
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The admin token of each supervisor a test started, by port: requests to
/// it carry the token unless they name an `Authorization` header themselves
/// (an empty one: no token at all).
static TOKENS: std::sync::Mutex<Vec<(u16, String)>> = std::sync::Mutex::new(Vec::new());

pub fn token_of(port: u16) -> Option<String> {
    TOKENS
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _)| *p == port)
        .map(|(_, t)| t.clone())
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
    token: Option<String>,
}

impl Conn {
    pub fn open(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(s),
            token: token_of(port),
        })
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<()> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str("Host: 127.0.0.1\r\n");
        }
        let mut authorized = false;
        for (k, v) in headers {
            if k.eq_ignore_ascii_case("authorization") {
                authorized = true;
                if v.is_empty() {
                    continue;
                }
            }
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let (false, Some(t)) = (authorized, &self.token) {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        let s = self.reader.get_mut();
        s.write_all(req.as_bytes())?;
        s.write_all(body)
    }

    /// The socket (to write from another thread, say).
    pub fn socket(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Writes `bytes` as they are (several requests at once, say).
    pub fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    pub fn read_head(&mut self) -> std::io::Result<(u16, Vec<(String, String)>)> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad status line {line:?}"),
                )
            })?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
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

    /// Reads one chunk of a chunked body (None at the end).
    pub fn read_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim(), 16).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad chunk size {line:?}"),
            )
        })?;
        let mut buf = vec![0; size + 2];
        self.reader.read_exact(&mut buf)?;
        buf.truncate(size);
        Ok((size > 0).then_some(buf))
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        self.send(method, path, headers, body)?;
        self.read_response(method)
    }

    /// Reads the whole response to a request sent with `method`.
    pub fn read_response(&mut self, method: &str) -> std::io::Result<Resp> {
        let (status, hdrs) = self.read_head()?;
        let get = |n: &str| {
            hdrs.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if method == "HEAD" || status == 204 || status == 304 {
        } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            while let Some(c) = self.read_chunk()? {
                body.extend(c);
            }
        } else if let Some(n) = get("content-length").and_then(|n| n.parse::<usize>().ok()) {
            body.resize(n, 0);
            self.reader.read_exact(&mut body)?;
        } else {
            self.reader.read_to_end(&mut body)?;
        }
        Ok(Resp {
            status,
            headers: hdrs,
            body,
        })
    }
}

pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    Conn::open(port)?.request(method, path, headers, body)
}

pub fn get(port: u16, path: &str) -> std::io::Result<Resp> {
    http(port, "GET", path, &[], b"")
}

pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The port of the supervisor's "supervisor listening" log line, or why
/// there is none (it exited, or said nothing within `timeout`).
pub fn listening_port(child: &mut Child, log: &Path, timeout: Duration) -> Result<u16, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let port = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "supervisor listening")
            .and_then(|v| v["fields"]["port"].as_u64());
        if let Some(port) = port {
            return Ok(port as u16);
        }
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("it exited ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no \"supervisor listening\" line within {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `par supervisor`.
pub struct Supervisor {
    pub child: Child,
    pub port: u16,
    pub dir: TempDir,
    pub log: PathBuf,
}

impl Supervisor {
    /// Starts the supervisor with `extra` TOML appended after `[supervisor]`'s
    /// defaults for tests (fake worker, its own ports), and `agents` TOML.
    pub fn start(
        tag: &str,
        supervisor_extra: &str,
        agents: &str,
        env: &[(&str, &str)],
    ) -> Supervisor {
        Self::start_with(
            tag,
            &format!(
                "worker_command = [\"python3\", \"{}\"]\n{supervisor_extra}",
                fake_worker()
            ),
            agents,
            env,
        )
    }

    pub fn start_with(
        tag: &str,
        supervisor_toml: &str,
        agents: &str,
        env: &[(&str, &str)],
    ) -> Supervisor {
        Self::start_logging(tag, supervisor_toml, agents, env, false)
    }

    /// [`Supervisor::start_with`], with its stderr in `supervisor.stderr`
    /// beside the log (its stdout alone) when `split_stderr`.
    pub fn start_logging(
        tag: &str,
        supervisor_toml: &str,
        agents: &str,
        env: &[(&str, &str)],
        split_stderr: bool,
    ) -> Supervisor {
        let dir = TempDir::new(tag);
        std::fs::create_dir_all(dir.path().join("pkg")).unwrap();
        let (lo, hi) = port_block(40);
        let cfg = dir.path().join("sup.toml");
        // Port 0: the supervisor binds a free port itself and logs it. A port
        // picked here and bound later can be taken in between by another
        // test's connection or worker.
        std::fs::write(
            &cfg,
            format!(
                "[supervisor]\nport = 0\nhost = \"0.0.0.0\"\nworker_ports = \"{lo}-{hi}\"\nhome = \"{}\"\n{supervisor_toml}\n{agents}",
                dir.path().join("home").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("supervisor.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_par"));
        cmd.arg("supervisor")
            .arg("--config")
            .arg(&cfg)
            .env_remove("PAR_ADMIN_TOKEN")
            .env_remove("PAR_AGENTS")
            .env_remove("SUPERVISOR_PORT")
            .env_remove("PAR_WORKER_PORTS")
            .env_remove("PAR_MODE")
            // Agents under their own uids are tested on their own
            // (supervisor_uids.rs); fake workers have no packages to stage.
            .env("PAR_AGENT_UIDS", "off")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(if split_stderr {
                std::fs::File::create(dir.path().join("supervisor.stderr")).unwrap()
            } else {
                std::fs::File::options().append(true).open(&log).unwrap()
            }));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn par supervisor");
        let port = match listening_port(&mut child, &log, Duration::from_secs(60)) {
            Ok(port) => port,
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("the supervisor did not start listening: {why}; log:\n{text}");
            }
        };
        let token = env
            .iter()
            .find(|(k, v)| *k == "PAR_ADMIN_TOKEN" && !v.is_empty())
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| {
                let home = env
                    .iter()
                    .find(|(k, _)| *k == "PAR_HOME")
                    .map(|(_, v)| PathBuf::from(v))
                    .unwrap_or_else(|| dir.path().join("home"));
                let file = home.join(format!("run/supervisor-{port}.token"));
                wait_until(Duration::from_secs(20), "the boot token file", || {
                    std::fs::read_to_string(&file).ok()
                })
            });
        TOKENS.lock().unwrap().push((port, token));
        let sup = Supervisor {
            child,
            port,
            dir,
            log,
        };
        wait_until(Duration::from_secs(20), "the supervisor to answer", || {
            get(port, "/runtime/health").ok()
        });
        sup
    }

    pub fn token(&self) -> String {
        token_of(self.port).unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn processes(&self) -> Vec<Value> {
        let r = get(self.port, "/supervisor/processes").expect("GET /supervisor/processes");
        r.json()["processes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn process(&self, agent: &str) -> Option<Value> {
        self.processes()
            .into_iter()
            .find(|p| p["agent_id"] == agent)
    }

    /// Waits until `agent` is ready and returns its process entry.
    /// The agent as a whole from `/supervisor/status` (Null when not listed).
    pub fn agent_status(&self, id: &str) -> Value {
        let st = get(self.port, "/supervisor/status").unwrap().json();
        st["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["agent_id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub fn wait_ready(&self, agent: &str, timeout: Duration) -> Value {
        wait_until(timeout, &format!("agent {agent} ready"), || {
            self.process(agent).filter(|p| p["state"] == "ready")
        })
    }

    /// `POST /supervisor/spawn?wait=true` with `body`: answered once the
    /// agent is ready (201) or failed to start (422), within 120 s.
    pub fn spawn_wait(&self, body: &str) -> Resp {
        let conn = Conn::open(self.port).unwrap();
        // The answer may take the whole 120 s the request allows (an
        // environment built on a busy machine), longer than a read's usual bound.
        conn.socket()
            .set_read_timeout(Some(Duration::from_secs(130)))
            .unwrap();
        let mut conn = conn;
        conn.request(
            "POST",
            "/supervisor/spawn?wait=true&timeout=120",
            &[],
            body.as_bytes(),
        )
        .unwrap()
    }

    pub fn pkg(&self) -> String {
        self.dir.path().join("pkg").to_string_lossy().into_owned()
    }

    pub fn signal(&self, sig: i32) {
        unsafe_free_kill(self.child.id() as i32, sig);
    }

    /// Waits for the supervisor to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            if Instant::now() > deadline {
                panic!(
                    "supervisor did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill(pid, sig)` through the `kill` command (tests stay free of unsafe code).
pub fn unsafe_free_kill(pid: i32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// SIGKILL to every process of the group `pgid`.
pub fn kill_group(pgid: u32) {
    assert!(pgid > 1, "not a process group: {pgid}");
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pgid}")])
        .status();
}

/// Whether any process of the process group `pgid` exists (via /proc).
pub fn group_alive(pgid: u32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some((_, after)) = stat.rsplit_once(')') else {
            return false;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        f.len() > 2 && f[0] != "Z" && f[2].parse::<u32>().ok() == Some(pgid)
    })
}

pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, a)| a.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

/// The `[[agents]]` of examples/multipar.toml (a, b, c = echo, multi,
/// flaky) with absolute package paths.
pub fn example_agents_toml() -> String {
    let text = std::fs::read_to_string(repo_root().join("examples/multipar.toml")).unwrap();
    let agents = text
        .split_once("[[agents]]")
        .map(|(_, a)| format!("[[agents]]{a}"))
        .unwrap();
    agents.replace(
        "package = \"agents/",
        &format!("package = \"{}/examples/agents/", repo_root().display()),
    )
}

/// `PAR_AGENT_UIDS` of every test that runs agents under uids of their own,
/// all in this one table. Two tests running at once must never share a uid: a
/// stop ends every process of its agent's uid, and a build every process of
/// the build uid (a range's first), so a shared uid would end the other
/// test's agents. Each range is a test's (or a file's) alone.
pub mod uid_ranges {
    pub const UIDS_OWN_AGENT: &str = "21000-21999";
    pub const UIDS_HOSTILE: &str = "22000-22999";
    pub const UIDS_INSTALLER: &str = "23000-23999";
    pub const PORTS: &str = "24000-24999";
    pub const LIVENESS: &str = "25000-25499";
    pub const PRIVATE_CHECKOUT: (u32, u32) = (25500, 25749);
    pub const PRIVATE_CHECKOUT_DROP: (u32, u32) = (25750, 25999);
    pub const SEALED_HOSTILE_BUILD: &str = "26000-26499";
    pub const SEALED_FAILED_BUILD: &str = "26500-26999";
    pub const SEALED_DISK: &str = "27000-27499";
    pub const SEALED_SLOW_BUILD: &str = "27500-27999";
    pub const TENANCY_ENV: &str = "28000-28249";
    pub const TENANCY_DETACHED: &str = "28250-28499";
    pub const TENANCY_SWARM: &str = "28500-28749";
    pub const TENANCY_ROLLOUT: &str = "28750-28999";
    pub const SEALED_DISK_REAPER: &str = "29000-29499";
    pub const DASHBOARD_BROWSER: &str = "29500-29749";
    pub const DASHBOARD_HTTP: &str = "29750-29999";
    /// The private checkout test's refusals (no agent starts).
    pub const PRIVATE_CHECKOUT_REFUSED: &str = "30000-30249";
    // 30250-30999: deploy.rs (the image's environment; it has no use of this module).
    pub const UNREADABLE_PACKAGE: &str = "31000-31249";
}
