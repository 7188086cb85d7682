//! Management API access is by token, never by address: the configured
//! admin token, or, without one, the token the supervisor writes for this
//! boot (checked from loopback and from a real non-loopback source in a
//! network namespace).

mod supervisor_support;

use std::process::Command;
use std::time::Duration;

use supervisor_support::*;

#[test]
fn with_a_token_mutating_routes_and_logs_need_it() {
    let token = "s3cret-token-for-tests";
    let s = Supervisor::start("token", "", "", &[("PAR_ADMIN_TOKEN", token)]);
    let body = format!(r#"{{"agent_id":"a","package_path":"{}"}}"#, s.pkg());
    let none = [("Authorization", "")];
    let r = http(s.port, "POST", "/supervisor/spawn", &none, body.as_bytes()).unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = http(
        s.port,
        "POST",
        "/supervisor/spawn",
        &[("Authorization", "Bearer wrong-token-xxxx")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 401);
    for (method, path) in [
        ("GET", "/supervisor/logs"),
        ("DELETE", "/supervisor/logs"),
        ("POST", "/supervisor/stop/par-a"),
        ("POST", "/supervisor/reload"),
    ] {
        let r = http(s.port, method, path, &none, b"").unwrap();
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text());
    }
    let auth = format!("Bearer {token}");
    let r = http(
        s.port,
        "POST",
        "/supervisor/spawn",
        &[("Authorization", &auth)],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    // Reading status and routing need no token.
    let r = http(s.port, "GET", "/supervisor/status", &none, b"").unwrap();
    assert_eq!(r.status, 200);
    s.wait_ready("a", Duration::from_secs(20));
    assert_eq!(get(s.port, "/agents/a/x").unwrap().status, 200);
    // Agents never see the admin token.
    let env = get(s.port, "/agents/a/x").unwrap().json();
    assert_eq!(env["agent_id"], "a");
    let pid = s.process("a").unwrap()["pid"].as_u64().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains(token),
        "PAR_ADMIN_TOKEN leaked to a worker"
    );
    assert!(String::from_utf8_lossy(&environ)
        .contains(&format!("PAR_SUPERVISOR_URL=http://127.0.0.1:{}", s.port)));
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace joined to ours by a veth pair: 10.231.N.1 here, .2 there.
struct Netns {
    name: String,
    veth: String,
    host_ip: String,
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let n = std::process::id() % 250 + 1;
        let name = format!("parsup{}", std::process::id());
        let veth = format!("pv{}", std::process::id() % 100000);
        let peer = format!("{veth}p");
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name: name.clone(),
            veth: veth.clone(),
            host_ip: format!("10.231.{n}.1"),
        };
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &name])?;
        ip(&["addr", "add", &format!("10.231.{n}.1/30"), "dev", &veth])?;
        ip(&["link", "set", &veth, "up"])?;
        ip(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("10.231.{n}.2/30"),
            "dev",
            &peer,
        ])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", &peer, "up"])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.veth]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn without_a_configured_token_only_the_boot_token_opens_the_api() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("SKIPPED: cannot create a network namespace here ({e})");
            return;
        }
    };
    let s = Supervisor::start("netns", "", "", &[]);
    // The boot token is in $PAR_HOME/run, readable by the supervisor's user only.
    let file = s
        .dir
        .path()
        .join(format!("home/run/supervisor-{}.token", s.port));
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let token = std::fs::read_to_string(&file).unwrap();
    assert_eq!(token.len(), 64, "{token}");
    let body = format!(r#"{{"agent_id":"a","package_path":"{}"}}"#, s.pkg());
    let script = format!(
        "import urllib.request, urllib.error, sys\n\
         def call(method, path, body=None, token=None):\n\
         \x20   req = urllib.request.Request('http://{}:{}' + path, data=body, method=method)\n\
         \x20   if token: req.add_header('Authorization', 'Bearer ' + token)\n\
         \x20   try:\n\
         \x20       return urllib.request.urlopen(req, timeout=10).status\n\
         \x20   except urllib.error.HTTPError as e:\n\
         \x20       return e.code\n\
         print(call('POST', '/supervisor/spawn', sys.argv[1].encode()), call('GET', '/supervisor/logs'), call('GET', '/supervisor/status'), call('GET', '/runtime/health'), call('GET', '/supervisor/logs', token=sys.argv[2]))\n",
        ns.host_ip, s.port
    );
    let out = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "python3", "-c", &script, &body, &token,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.trim(),
        "401 401 200 200 200",
        "spawn and logs refused from 10.x without the token, reads allowed, logs with it"
    );
    assert!(s.processes().is_empty(), "nothing was spawned");
    // Loopback is no capability either: agent code runs there too.
    let none = [("Authorization", "")];
    let r = http(s.port, "POST", "/supervisor/spawn", &none, body.as_bytes()).unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains(".token"), "{}", r.text());
    let auth = format!("Bearer {token}");
    let r = http(
        s.port,
        "POST",
        "/supervisor/spawn",
        &[("Authorization", &auth)],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
}
