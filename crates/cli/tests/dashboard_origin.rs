//! The admin credential out of reach of agent pages. The dashboard lives on
//! the admin port, an origin no agent is ever served from; an agent's page
//! (a real agent's UI on the main port) tries everything a script can: read
//! the storages and cookies, frame and open the dashboard on both origins and
//! read it, and call the mutating routes on both origins with
//! `credentials: 'include'`. It learns nothing and changes nothing, as its
//! own report and the supervisor's state both say. Then the same rules from
//! a plain HTTP client: the admin port's headers, no `/agents/*` there, the
//! main port's notice page, browser-sent mutations refused on the main port.

mod supervisor_support;
mod webdriver_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use supervisor_support::*;
use webdriver_support::{admin_port, Browser};

const TOKEN: &str = "origin-test-admin-token-5f1c";
const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(20);

/// The agent whose UI's script (`ui/attack.js`) goes for the credential.
fn evil_agent() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agents/dashboard-thief")
}

/// The victim (the echo example) and the evil agent, under uids of their
/// own from `uids` (a range no other test running at once uses).
fn start(tag: &str, uids: &str) -> Supervisor {
    let evil = evil_agent();
    let agents = format!(
        "[[agents]]\nid = \"victim\"\npackage = \"{}/examples/agents/echo\"\n\
         [[agents]]\nid = \"evil\"\npackage = \"{}\"\n",
        repo_root().display(),
        evil.display()
    );
    let sup = Supervisor::start_with(
        tag,
        "",
        &agents,
        &[("PAR_ADMIN_TOKEN", TOKEN), ("PAR_AGENT_UIDS", uids)],
    );
    sup.wait_ready("victim", LONG);
    sup.wait_ready("evil", LONG);
    sup
}

fn logs_of_victim(sup: &Supervisor) -> usize {
    let auth = format!("Bearer {TOKEN}");
    let r = http(
        sup.port,
        "GET",
        "/supervisor/logs?process_id=par-victim&limit=1000",
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["logs"].as_array().map_or(0, Vec::len)
}

#[test]
fn an_agent_page_cannot_read_or_use_the_dashboards_credential() {
    let sup = start(
        "origin-browser",
        supervisor_support::uid_ranges::DASHBOARD_BROWSER,
    );
    let admin = admin_port(&sup).expect("an admin port");
    assert_ne!(admin, sup.port);
    let victim = sup.process("victim").unwrap();
    let victim_logs = logs_of_victim(&sup);
    assert!(victim_logs > 0, "the victim has log lines to clear");
    let reconciled = reconciles(&sup);

    let browser = Browser::start(sup.dir.path(), 1280, 900);
    // The operator opens the dashboard on the admin origin and enters the token.
    browser.goto(&format!("http://127.0.0.1:{admin}/supervisor/ui/"));
    browser.wait_js(
        SHORT,
        "the victim's row",
        "return !!document.querySelector('#agents tbody tr[data-agent=\"victim\"]');",
        json!([]),
    );
    browser.enter_token(TOKEN, SHORT);

    // Then, in the same tab (the same storage as the dashboard had), an agent's page.
    browser.goto(&format!(
        "http://127.0.0.1:{}/agents/evil/ui/?admin={admin}",
        sup.port
    ));
    browser.wait_js(
        Duration::from_secs(60),
        "the agent page's report",
        "return document.title === 'done';",
        json!([]),
    );
    // Neither framed dashboard loaded: the frames hold the browser's error page.
    let framed = browser.frames_href(&["#frame-main_ui", "#frame-admin_ui"]);
    let report = browser.js("return window.__report", json!([]));
    eprintln!("frames as the browser loaded them: {framed:?}");
    eprintln!("the agent page's report: {report:#}");

    // The agent page's own view: no token anywhere in what it saw.
    let text = report.to_string();
    assert!(report["crashed"].is_null(), "{report}");
    assert!(
        !text.contains(TOKEN),
        "the agent page read the admin token: {report:#}"
    );
    assert_eq!(report["stolen"], json!([]), "{report:#}");
    assert_eq!(report["cookies"], "", "{report:#}");
    for (name, f) in report["frames"].as_object().unwrap() {
        assert!(
            f["session_error"].is_string(),
            "frame {name} was readable: {f}"
        );
        assert!(f["html"].is_null(), "frame {name} was readable: {f}");
    }
    for (name, href) in &framed {
        assert!(
            !href.contains("/supervisor/ui"),
            "the dashboard loaded in the agent's frame {name}: {href}"
        );
    }
    // The notice on the main origin holds nothing: even a readable window has no dashboard.
    let main_w = &report["windows"]["main_window"];
    assert!(
        main_w["auth"].is_null()
            && !main_w["html"]
                .as_str()
                .unwrap_or("")
                .contains("token-input"),
        "{main_w}"
    );
    assert!(
        report["windows"]["admin_window"]["session_error"].is_string()
            || report["windows"]["admin_window"]["opened"] == false
    );
    let fetches = report["fetches"].as_array().unwrap();
    assert!(fetches.len() >= 20, "{report:#}");
    for f in fetches {
        let status = f["status"].as_u64().unwrap_or(0);
        assert!(
            !(200..300).contains(&status),
            "an agent page's request succeeded: {f}"
        );
        // Same-origin requests to the main port are refused as browser-sent.
        if f["base"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", sup.port))
            && f["mode"] == "cors"
            && f["method"] != "GET"
        {
            assert_eq!(status, 403, "{f}");
        }
    }

    // The supervisor's view: nothing changed.
    let now = sup.process("victim").expect("the victim is still there");
    for field in [
        "state",
        "pid",
        "port",
        "restarts",
        "package_id",
        "max_restarts",
        "restart_policy",
    ] {
        assert_eq!(
            now[field], victim[field],
            "the victim's {field} changed: {now}"
        );
    }
    assert_eq!(now["state"], "ready", "{now}");
    assert!(sup.process("planted").is_none(), "an agent was spawned");
    assert!(logs_of_victim(&sup) >= victim_logs, "the logs were cleared");
    assert_eq!(reconciles(&sup), reconciled, "a reload happened");
}

/// How many times the declared agents were reconciled (start, reloads).
fn reconciles(sup: &Supervisor) -> usize {
    sup.log_text()
        .matches("reconciled the declared agents")
        .count()
}

/// The headers every admin-port response carries.
fn assert_hardened(r: &Resp, what: &str) {
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("frame-ancestors 'none'"),
        "{what}: CSP {csp:?}"
    );
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        assert_eq!(r.header(name), Some(value), "{what}: {name}");
    }
    assert_eq!(r.header("access-control-allow-origin"), None, "{what}");
    assert_eq!(r.header("set-cookie"), None, "{what}");
}

#[test]
fn the_admin_port_serves_the_dashboard_and_never_an_agent() {
    let sup = start(
        "origin-http",
        supervisor_support::uid_ranges::DASHBOARD_HTTP,
    );
    let admin = admin_port(&sup).expect("an admin port");
    let main_origin = format!("http://127.0.0.1:{}", sup.port);
    let admin_host = format!("127.0.0.1:{admin}");
    let bearer = format!("Bearer {TOKEN}");

    // The dashboard and the API on the admin port, each response hardened.
    let page = http(
        admin,
        "GET",
        "/supervisor/ui/",
        &[("Authorization", "")],
        b"",
    )
    .unwrap();
    assert_eq!(page.status, 200);
    assert!(page.text().contains("token-input"), "the dashboard itself");
    assert_hardened(&page, "the page");
    for path in [
        "/supervisor/ui/main.js",
        "/supervisor/status",
        "/supervisor/nope",
    ] {
        let r = http(admin, "GET", path, &[("Authorization", "")], b"").unwrap();
        assert_hardened(&r, path);
    }
    // No agent is ever served there, while the main port serves its page.
    for path in [
        "/agents/evil/ui/",
        "/agents/evil/ui/attack.js",
        "/agents/victim/health",
    ] {
        let r = http(admin, "GET", path, &[("Authorization", "")], b"").unwrap();
        assert_eq!(r.status, 404, "{path} on the admin port: {}", r.text());
        assert!(!r.text().contains("window.__report"));
    }
    let agent_page = get(sup.port, "/agents/evil/ui/attack.js").unwrap();
    assert_eq!(agent_page.status, 200);
    assert!(agent_page.text().contains("window.__report"));

    // The same port on [::1]: `localhost`, which a browser may try over
    // IPv6 first, cannot lead to a look-alike page someone else serves.
    let v6 = raw_get(("::1", admin), "/supervisor/ui/");
    assert!(
        v6.starts_with("HTTP/1.1 200") && v6.contains("token-input"),
        "{v6}"
    );
    // Connections are bounded: past 64, a new one is closed at once, and
    // the port serves again once they are gone.
    let held: Vec<_> = (0..64)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap())
        .collect();
    let over = raw_get(("127.0.0.1", admin), "/supervisor/status");
    assert_eq!(over, "", "the 65th connection is served");
    drop(held);
    wait_until(SHORT, "the admin port again", || {
        raw_get(("127.0.0.1", admin), "/supervisor/status")
            .starts_with("HTTP/1.1 200")
            .then_some(())
    });

    // Another origin (an agent's page) is refused there, preflight or not,
    // even with the token; the dashboard's own requests are taken.
    let from_agent = [
        ("Origin", main_origin.as_str()),
        ("Sec-Fetch-Site", "same-site"),
        ("Sec-Fetch-Mode", "cors"),
    ];
    let pre = http(
        admin,
        "OPTIONS",
        "/supervisor/restart/par-victim",
        &[
            from_agent[0],
            from_agent[1],
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(pre.status, 403, "{}", pre.text());
    assert_hardened(&pre, "a preflight");
    let pid = sup.process("victim").unwrap()["pid"].clone();
    let mut with_token = from_agent.to_vec();
    with_token.push(("Authorization", &bearer));
    let r = http(
        admin,
        "POST",
        "/supervisor/restart/par-victim",
        &with_token,
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("another origin"), "{}", r.text());
    let r = http(
        admin,
        "POST",
        "/supervisor/restart/par-victim",
        &[
            ("Origin", "http://evil.example"),
            ("Authorization", &bearer),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(
        r.status,
        403,
        "an old browser's cross-origin POST: {}",
        r.text()
    );
    assert_eq!(
        sup.process("victim").unwrap()["pid"],
        pid,
        "nothing restarted"
    );

    // The main port: the notice instead of the dashboard; its API takes
    // par ctl's requests and refuses a browser's, token or not.
    for path in [
        "/supervisor/ui",
        "/supervisor/ui/",
        "/supervisor/ui/main.js",
    ] {
        let r = get(sup.port, path).unwrap();
        assert_eq!(r.status, 200, "{path}");
        let text = r.text();
        assert!(
            text.contains(&format!("http://{admin_host}/supervisor/ui/")),
            "{path}: {text}"
        );
        assert!(
            !text.contains("<script") && !text.contains("token-input"),
            "{text}"
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert!(r
            .header("content-security-policy")
            .is_some_and(|c| c.contains("frame-ancestors 'none'")));
        assert_eq!(r.header("set-cookie"), None);
    }
    for browser in [
        vec![
            ("Origin", main_origin.as_str()),
            ("Authorization", bearer.as_str()),
        ],
        vec![
            ("Sec-Fetch-Site", "same-origin"),
            ("Authorization", bearer.as_str()),
        ],
    ] {
        let r = http(
            sup.port,
            "POST",
            "/supervisor/restart/par-victim",
            &browser,
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 403, "{browser:?}: {}", r.text());
        assert!(r.text().contains("PAR_ADMIN_PORT"), "{}", r.text());
    }
    assert_eq!(
        sup.process("victim").unwrap()["pid"],
        pid,
        "nothing restarted"
    );
    let r = http(
        sup.port,
        "POST",
        "/supervisor/restart/par-victim",
        &[("Authorization", "")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 401, "no token, no restart: {}", r.text());
    assert_eq!(r.header("set-cookie"), None);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer"),
        "no Basic prompt a browser would remember"
    );

    // What the dashboard sends (its own origin, the token) works; so does par ctl on the main port.
    let r = http(
        admin,
        "POST",
        "/supervisor/restart/par-victim",
        &[
            ("Host", &admin_host),
            ("Origin", &format!("http://{admin_host}")),
            ("Sec-Fetch-Site", "same-origin"),
            ("Sec-Fetch-Mode", "cors"),
            ("Authorization", &bearer),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let restarted = wait_until(LONG, "the victim restarted", || {
        sup.process("victim")
            .filter(|p| p["state"] == "ready" && p["pid"] != pid)
    });
    let r = http(
        sup.port,
        "POST",
        "/supervisor/restart/par-victim",
        &[("Authorization", &bearer)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    wait_until(LONG, "the victim restarted again", || {
        sup.process("victim")
            .filter(|p| p["state"] == "ready" && p["pid"] != restarted["pid"])
    });
}

/// A GET over a new connection to `addr`; the whole answer ("" when the
/// connection is closed without one).
fn raw_get(addr: impl std::net::ToSocketAddrs, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(SHORT)).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(req.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `par supervisor --check-config` with `env`: its exit code and output.
fn check_config(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_par"));
    cmd.args(["supervisor", "--check-config"])
        .env_remove("PAR_CONFIG")
        .env_remove("SUPERVISOR_PORT")
        .env_remove("PAR_WORKER_PORTS")
        .env_remove("PAR_ADMIN_PORT")
        .env_remove("PAR_ADMIN_HOST");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn the_admin_port_setting_names_what_is_wrong() {
    let (code, text) = check_config(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("admin port 8900 on 127.0.0.1"), "{text}");
    let (code, text) = check_config(&[("PAR_ADMIN_PORT", "8050")]);
    assert_ne!(code, Some(0));
    assert!(
        text.contains("supervisor.admin_port") && text.contains("worker port range"),
        "{text}"
    );
    let (code, text) = check_config(&[("PAR_ADMIN_PORT", "8000")]);
    assert_ne!(code, Some(0));
    assert!(text.contains("own port"), "{text}");
    let (code, text) = check_config(&[("PAR_ADMIN_PORT", "dashboard")]);
    assert_ne!(code, Some(0));
    assert!(
        text.contains("PAR_ADMIN_PORT") && text.contains("\"dashboard\""),
        "{text}"
    );
    let (code, text) = check_config(&[("PAR_ADMIN_PORT", "off")]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("no admin port"), "{text}");

    // A taken admin port stops the start, naming it; `off` starts without one.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = TempDir::new("origin-taken");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_par"))
        .args(["supervisor", "--port", "0", "--home"])
        .arg(dir.path())
        .env_remove("PAR_CONFIG")
        .env_remove("PAR_AGENTS")
        .env("PAR_ADMIN_PORT", &port)
        .env("PAR_AGENT_UIDS", "off")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text.contains("admin port") && text.contains("PAR_ADMIN_PORT") && text.contains(&port),
        "{text}"
    );

    let sup = Supervisor::start_with("origin-off", "admin_port = \"off\"", "", &[]);
    assert_eq!(admin_port(&sup), None);
    let notice = get(sup.port, "/supervisor/ui/").unwrap().text();
    assert!(notice.contains("turned off"), "{notice}");
}
