//! The dashboard (`/supervisor/ui` on the admin port) in a real headless
//! Chromium, against a real supervisor running the example agents with an
//! admin token: the agents and their states, a crash seen as backoff then
//! ready without a reload, an agent's printed line in its log view, restart
//! refused without the token and done with it, a failing agent, an
//! unreachable supervisor.
//!
//! `PAR_SCREENSHOTS=DIR` saves the main views as PNG files in DIR
//! (`dev/screenshots` writes the README's into docs/).

mod supervisor_support;
mod webdriver_support;

use std::time::Duration;

use serde_json::{json, Value};
use supervisor_support::*;
use webdriver_support::{admin_port, Browser};

const TOKEN: &str = "dashboard-token-for-tests";
const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(20);

/// The state shown in the row of `agent`, or null.
const ROW_STATE: &str = "const tr = document.querySelector(`#agents tbody tr[data-agent=\"${arguments[0]}\"]`); \
    const pill = tr && tr.querySelector('[data-field=state] .pill'); return pill ? pill.dataset.state : null;";

fn save(browser: &Browser, name: &str) {
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
    if let Some(dir) = std::env::var_os("PAR_SCREENSHOTS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), &png).unwrap();
    }
}

/// Waits until the newest action result is `ok` and contains `text`.
fn last_result(browser: &Browser, ok: bool, text: &str) -> String {
    let v = browser.wait_js(
        SHORT,
        &format!("the result {text:?}"),
        "const all = document.querySelectorAll('[data-testid=action-result]'); const t = all[all.length - 1]; \
         return t && t.dataset.ok === String(arguments[0]) && t.textContent.includes(arguments[1]) && t.textContent;",
        json!([ok, text]),
    );
    v.as_str().unwrap_or_default().to_string()
}

/// A copy of the echo example with another version, as a new package to roll out.
fn echo_v2(dir: &std::path::Path) -> String {
    let src = repo_root().join("examples/agents/echo");
    let dst = dir.join("echo-v2");
    std::fs::create_dir_all(dst.join("src")).unwrap();
    let manifest = std::fs::read_to_string(src.join("agent.yaml")).unwrap();
    std::fs::write(
        dst.join("agent.yaml"),
        manifest.replace("version: 0.1.0", "version: 0.2.0"),
    )
    .unwrap();
    for f in ["__init__.py", "main.py"] {
        std::fs::copy(src.join("src").join(f), dst.join("src").join(f)).unwrap();
    }
    dst.display().to_string()
}

fn process(sup: &Supervisor, id: &str) -> Value {
    sup.process(id)
        .unwrap_or_else(|| panic!("agent {id} not listed"))
}

#[test]
fn dashboard_in_a_real_browser() {
    // Agent c backs off for 5 s after a crash, longer than the page's 1 s poll.
    let agents =
        example_agents_toml().replace("restart_delay_seconds = 0.2", "restart_delay_seconds = 5.0");
    assert!(agents.contains("restart_delay_seconds = 5.0"));
    let mut sup = Supervisor::start_with("dashboard", "", &agents, &[("PAR_ADMIN_TOKEN", TOKEN)]);
    for id in ["a", "b", "c"] {
        sup.wait_ready(id, LONG);
    }
    let browser = Browser::start(sup.dir.path(), 1440, 1000);
    // On the admin port, the dashboard's own origin (dashboard_origin.rs:
    // agents' pages cannot reach it). Without the trailing slash: the
    // redirect to /supervisor/ui/ is part of the test.
    let admin = admin_port(&sup).expect("the supervisor's admin port");
    assert_ne!(admin, sup.port);
    browser.goto(&format!("http://127.0.0.1:{admin}/supervisor/ui"));

    // The example agents, each with its state, read without a token.
    browser.wait_js(
        SHORT,
        "rows a, b, c ready",
        "return ['a','b','c'].every(id => { const tr = document.querySelector(`#agents tbody tr[data-agent=\"${id}\"]`); \
         return tr && tr.querySelector('[data-field=state] .pill').dataset.state === 'ready'; });",
        json!([]),
    );
    let rows = browser.js(
        "return [...document.querySelectorAll('#agents tbody tr')].map(tr => ({ \
           agent: tr.dataset.agent, process: tr.dataset.process, \
           package: tr.querySelector('[data-field=package]').textContent, \
           pid: tr.querySelector('[data-field=pid]').textContent, \
           port: tr.querySelector('[data-field=port]').textContent }));",
        json!([]),
    );
    for (i, (id, pkg)) in [
        ("a", "echo@0.1.0"),
        ("b", "multi@0.1.0"),
        ("c", "flaky@0.1.0"),
    ]
    .iter()
    .enumerate()
    {
        let p = process(&sup, id);
        assert_eq!(rows[i]["agent"], *id, "{rows}");
        assert_eq!(rows[i]["process"], format!("par-{id}"));
        assert_eq!(rows[i]["package"], *pkg);
        assert_eq!(rows[i]["pid"], p["pid"].to_string());
        assert_eq!(rows[i]["port"], p["port"].to_string());
    }
    assert_eq!(
        browser.js(
            "return document.getElementById('auth').dataset.mode",
            json!([])
        ),
        "read-only"
    );
    assert_eq!(
        browser.js(
            "return document.getElementById('phase').dataset.phase",
            json!([])
        ),
        "serving"
    );

    // Weight and load time, as this browser saw them.
    let perf = browser.js(
        "const nav = performance.getEntriesByType('navigation')[0]; \
         const res = performance.getEntriesByType('resource').filter(r => r.name.includes('/supervisor/ui/')); \
         const first = performance.getEntriesByName('par-first-data')[0]; \
         return { html: nav.encodedBodySize, assets: res.reduce((a, r) => a + r.encodedBodySize, 0), files: res.length, \
                  dom_content_loaded_ms: nav.domContentLoadedEventEnd, load_ms: nav.loadEventEnd, \
                  first_data_ms: first ? first.startTime : null };",
        json!([]),
    );
    eprintln!("dashboard in headless Chromium: {perf}");
    assert!(perf["files"].as_u64().unwrap() >= 10, "{perf}");

    // The page's p95 is the same interpolation as `par ctl top`'s (and Prometheus').
    let q = browser.js_async(
        "const done = arguments[arguments.length - 1]; import('./metrics.js').then(m => done([ \
           m.quantile(0.5, [], [[0.01, 5], [0.1, 9], [Infinity, 10]]), \
           m.quantile(0.8, [], [[0.01, 5], [0.1, 9], [Infinity, 10]]), \
           m.quantile(0.99, [], [[0.01, 5], [0.1, 9], [Infinity, 10]]), \
           m.quantile(0.95, [[0.01, 5], [0.1, 9], [Infinity, 10]], [[0.01, 5], [0.1, 9], [Infinity, 10]])]));",
        json!([]),
    );
    let q: Vec<Option<f64>> = serde_json::from_value(q).unwrap();
    assert!(
        (q[0].unwrap() - 0.01).abs() < 1e-9 && (q[1].unwrap() - 0.0775).abs() < 1e-9,
        "{q:?}"
    );
    assert_eq!((q[2], q[3]), (Some(0.1), None), "NaN (no requests) is null");

    // Agent c crashes: the row goes through backoff and is ready again, in the same page.
    browser.js("window.__sameDocument = 'yes';", json!([]));
    let pid_c = process(&sup, "c")["pid"].clone();
    let _ = http(
        sup.port,
        "POST",
        "/agents/c/invoke",
        &[("Content-Type", "application/json")],
        br#"{"action":"crash"}"#,
    );
    let seen = browser.wait_js(SHORT, "c in backoff on the page", &format!("const s = (() => {{ {ROW_STATE} }})(); return ['backoff','crashed'].includes(s) ? s : null;"), json!(["c"]));
    eprintln!("the page showed c as {seen}");
    browser.set_window(1440, 800);
    save(&browser, "dashboard.png");
    browser.set_window(1440, 1000);
    browser.wait_js(
        SHORT,
        "c ready again on the page",
        &format!("return (() => {{ {ROW_STATE} }})() === 'ready';"),
        json!(["c"]),
    );
    assert_ne!(process(&sup, "c")["pid"], pid_c);
    assert_eq!(
        browser.js("return window.__sameDocument", json!([])),
        "yes",
        "the page was reloaded"
    );
    browser.wait_js(
        SHORT,
        "c's restarts at 1",
        "return document.querySelector('#agents tr[data-agent=\"c\"] [data-field=restarts]').textContent === '1';",
        json!([]),
    );

    // c in detail: without the token, logs are refused with a message, and so is restart.
    browser.click("#agents tbody tr[data-agent=\"c\"]");
    browser.wait_js(SHORT, "the detail of c", "const d = document.getElementById('detail'); return !d.hidden && d.querySelector('h2').textContent.startsWith('c');", json!([]));
    let notice = browser.wait_js(SHORT, "the logs notice", "const n = document.querySelector('[data-testid=log-notice]'); return n && !n.hidden && n.textContent;", json!([]));
    assert!(notice.as_str().unwrap().contains("admin token"), "{notice}");
    let restarts_c = process(&sup, "c")["restarts"].clone();
    browser.click("#detail [data-action=restart]");
    browser.click("#confirm-ok");
    let refusal = browser.wait_js(SHORT, "the refusal", "const t = document.querySelector('[data-testid=action-result][data-ok=false]'); return t && t.textContent;", json!([]));
    let refusal = refusal.as_str().unwrap();
    assert!(
        refusal.contains("refused (401)") && refusal.contains("admin token"),
        "{refusal}"
    );
    let last = browser.js(
        "return document.querySelector('[data-testid=last-action]').textContent",
        json!([]),
    );
    assert!(
        last.as_str().unwrap().contains("refused (401)"),
        "the detail shows the result too: {last}"
    );
    assert_eq!(process(&sup, "c")["restarts"], restarts_c);
    assert_eq!(process(&sup, "c")["state"], "ready");

    // The token, entered once: logs stream, and a line c prints appears.
    browser.enter_token(TOKEN, SHORT);
    assert_eq!(
        browser.js(
            "return sessionStorage.getItem('par-admin-token')",
            json!([])
        ),
        TOKEN
    );
    assert!(!browser
        .js("return location.href", json!([]))
        .as_str()
        .unwrap()
        .contains(TOKEN));
    browser.wait_js(
        SHORT,
        "the log stream",
        "return document.querySelectorAll('[data-testid=log-lines] .log-line').length > 0;",
        json!([]),
    );
    let marker = format!("printed-by-agent-c-{}", std::process::id());
    let r = http(
        sup.port,
        "POST",
        "/agents/c/invoke",
        &[("Content-Type", "application/json")],
        format!(r#"{{"action":"log","message":"{marker}"}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let line = browser.wait_js(
        SHORT,
        "the printed line in the log view",
        "const l = [...document.querySelectorAll('[data-testid=log-lines] .log-line')].find(l => l.textContent.includes(arguments[0])); return l && l.textContent;",
        json!([marker]),
    );
    assert!(line.as_str().unwrap().contains("stdout"), "{line}");
    // Search keeps only the matching lines in view.
    browser.type_into("[data-testid=log-search]", &marker);
    let visible = browser.wait_js(
        SHORT,
        "the search",
        "const v = [...document.querySelectorAll('[data-testid=log-lines] .log-line')].filter(l => !l.hidden); return v.length === 1 && v[0].textContent;",
        json!([]),
    );
    assert!(visible.as_str().unwrap().contains(&marker));

    // Restart with the token: accepted, a new worker, ready.
    let pid_c = process(&sup, "c")["pid"].clone();
    browser.click("#detail [data-action=restart]");
    browser.click("#confirm-ok");
    last_result(&browser, true, "Restart of par-c accepted (202)");
    wait_until(LONG, "c restarted", || {
        let p = sup.process("c")?;
        (p["state"] == "ready" && p["pid"] != pid_c).then_some(())
    });
    let pid = process(&sup, "c")["pid"].to_string();
    browser.wait_js(SHORT, "c's new pid on the page", "return document.querySelector('#agents tr[data-agent=\"c\"] [data-field=pid]').textContent === arguments[0];", json!([pid]));
    browser.wait_js(SHORT, "the restart in the log view", "return [...document.querySelectorAll('[data-testid=log-lines] .log-line')].some(l => l.textContent.includes('stopping -> starting'));", json!([]));
    browser.wait_js(
        SHORT,
        "c ready on the page",
        &format!("return (() => {{ {ROW_STATE} }})() === 'ready';"),
        json!(["c"]),
    );
    browser.js("const s = document.querySelector('[data-testid=log-search]'); s.value = ''; s.dispatchEvent(new Event('input'));", json!([]));
    browser.js(
        "document.querySelectorAll('.toast').forEach(t => t.remove()); window.scrollTo(0, 0);",
        json!([]),
    );
    browser.set_window(1440, 1500);
    save(&browser, "dashboard-agent.png");
    browser.set_window(1440, 1000);

    // Roll out a new version of a from the page; then stop, start, and reload (back to the declared one).
    let v2 = echo_v2(sup.dir.path());
    browser.click("#agents tbody tr[data-agent=\"a\"]");
    browser.wait_js(
        SHORT,
        "the detail of a",
        "return document.querySelector('#detail h2').textContent.startsWith('a');",
        json!([]),
    );
    browser.click("#detail [data-action=rollout]");
    browser.type_into("[data-testid=rollout-package]", &v2);
    browser.click("#confirm-ok");
    last_result(&browser, true, "Rollout of a to");
    browser.wait_js(SHORT, "a at 0.2.0 on the page", "return document.querySelector('#agents tr[data-agent=\"a\"] [data-field=package]').textContent === 'echo@0.2.0';", json!([]));
    browser.wait_js(SHORT, "the rollout card", "const c = document.querySelector('[data-testid=rollout]'); return c.textContent.includes('rolled_out') && c.textContent.includes('blue-green');", json!([]));
    assert_eq!(process(&sup, "a")["package_id"], "echo@0.2.0");
    // The spec sent kept a's explicit memory limit.
    assert_eq!(process(&sup, "a")["limits"]["memory_limit_mb"], 256);
    browser.click("#detail [data-action=stop]");
    browser.click("#confirm-ok");
    last_result(&browser, true, "par-a is stopped");
    browser.wait_js(
        SHORT,
        "a stopped on the page",
        &format!("return (() => {{ {ROW_STATE} }})() === 'stopped';"),
        json!(["a"]),
    );
    browser.click("#detail [data-action=start]");
    browser.click("#confirm-ok");
    last_result(&browser, true, "Start of par-a accepted");
    browser.wait_js(
        SHORT,
        "a ready on the page",
        &format!("return (() => {{ {ROW_STATE} }})() === 'ready';"),
        json!(["a"]),
    );
    browser.click("#reload-button");
    browser.click("#confirm-ok");
    last_result(&browser, true, "Reload done: rolled a");
    browser.wait_js(SHORT, "a back at 0.1.0", "return document.querySelector('#agents tr[data-agent=\"a\"] [data-field=package]').textContent === 'echo@0.1.0';", json!([]));

    // An agent that cannot load: failed, in red, with its error.
    let broken = sup.dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("agent.yaml"),
        "name: broken\nentrypoint: [not, a, string]\n",
    )
    .unwrap();
    let body = json!({"agent_id": "broken", "package_path": broken}).to_string();
    let auth = format!("Bearer {TOKEN}");
    let r = http(
        sup.port,
        "POST",
        "/supervisor/spawn",
        &[("Authorization", &auth)],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let failed = browser.wait_js(
        SHORT,
        "the failed agent",
        "const tr = document.querySelector('#agents tr[data-agent=\"broken\"]'); const p = tr && tr.querySelector('.pill'); \
         return p && p.dataset.state === 'failed' && p.classList.contains('st-bad') && tr.querySelector('[data-field=state]').textContent;",
        json!([]),
    );
    assert!(
        failed.as_str().unwrap().contains("invalid manifest"),
        "{failed}"
    );

    // The supervisor goes away: the page says so and keeps what it knew.
    sup.signal(15);
    sup.wait_exit(Duration::from_secs(40));
    let banner = browser.wait_js(
        SHORT,
        "the unreachable banner",
        "const b = document.getElementById('banner'); return !b.hidden && b.textContent;",
        json!([]),
    );
    assert!(
        banner.as_str().unwrap().contains("not reachable"),
        "{banner}"
    );
    assert_eq!(
        browser.js(
            "return document.getElementById('phase').dataset.phase",
            json!([])
        ),
        "unreachable"
    );
    assert!(
        browser
            .js(
                "return document.querySelectorAll('#agents tbody tr').length",
                json!([])
            )
            .as_u64()
            .unwrap()
            >= 3
    );
}
