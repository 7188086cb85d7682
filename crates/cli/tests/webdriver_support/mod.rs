//! A W3C WebDriver session with Debian's headless Chromium through
//! `chromedriver` (the protocol selenium speaks), over the tests' own HTTP
//! client: navigate, run a script, click, type, take a screenshot.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::supervisor_support::{free_port, http, Supervisor, TempDir};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The admin port (the dashboard's) that `sup` logged in its "supervisor
/// listening" line; `None` when it runs without one.
pub fn admin_port(sup: &Supervisor) -> Option<u16> {
    let line = sup
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "supervisor listening")
        .unwrap_or_else(|| panic!("no listening line; log:\n{}", sup.log_text()));
    line["fields"]["admin_port"].as_u64().map(|p| p as u16)
}

/// A program on PATH or at one of the usual Debian places.
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path).chain([
            PathBuf::from("/usr/bin"),
            PathBuf::from("/usr/lib/chromium"),
        ]) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Chromium and chromedriver, or a failure that says how to get them.
pub fn browser_tools() -> (PathBuf, PathBuf) {
    let chromium = find(&["chromium", "chromium-browser"]);
    let driver = find(&["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        (c, d) => panic!(
            "the dashboard test runs in a real headless Chromium and needs Debian's \
             `chromium` and `chromium-driver` packages (apt-get install -y chromium \
             chromium-driver; .ci/run installs them). Found chromium: {c:?}, chromedriver: {d:?}"
        ),
    }
}

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: TempDir,
    pub log: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a new empty profile.
    pub fn start(log_dir: &Path, width: u32, height: u32) -> Browser {
        let (chromium, driver_bin) = browser_tools();
        let port = free_port();
        let log = log_dir.join("chromedriver.log");
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = TempDir::new("chromium-profile");
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http(port, "GET", "/status", &[], b"") {
                if r.json()["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", b._profile.path().display()),
            &format!("--window-size={width},{height}"),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let v = b.call("POST", "/session", caps);
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let r = http(
            self.port,
            method,
            path,
            &[("Content-Type", "application/json; charset=utf-8")],
            &body,
        )
        .unwrap_or_else(|e| panic!("chromedriver {method} {path}: {e}"));
        let v = r.json();
        assert!(
            r.status == 200,
            "chromedriver {method} {path}: {} {v}",
            r.status
        );
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), json!({ "url": url }));
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            json!({"script": script, "args": args}),
        )
    }

    /// Runs an async `script`: it ends by calling `arguments[arguments.length - 1](value)`.
    pub fn js_async(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/async"),
            json!({"script": script, "args": args}),
        )
    }

    /// Waits until `script` returns something truthy; returns it.
    pub fn wait_js(&self, timeout: Duration, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        loop {
            let v = self.js(script, args.clone());
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            if v != Value::Null {
                last = v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what} (last: {last})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            json!({"using": "css selector", "value": css}),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// A real click (the driver's pointer) on the first element matching `css`, once it is visible.
    pub fn click(&self, css: &str) {
        self.wait_js(
            Duration::from_secs(10),
            &format!("{css} to be visible"),
            "const e = document.querySelector(arguments[0]); if (!e || !e.checkVisibility()) return false; e.scrollIntoView({block: 'center'}); return true;",
            json!([css]),
        );
        let id = self.element(css);
        self.call("POST", &self.s(&format!("/element/{id}/click")), json!({}));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{id}/value")),
            json!({ "text": text }),
        );
    }

    /// Enters the admin `token` in the dashboard's token box and waits up to
    /// `timeout` for the page to be in admin mode.
    pub fn enter_token(&self, token: &str, timeout: Duration) {
        self.click("#token-button");
        self.type_into("#token-input", token);
        self.click("#token-save");
        self.wait_js(
            timeout,
            "admin mode",
            "return document.getElementById('auth').dataset.mode === 'admin';",
            json!([]),
        );
    }

    /// The address each frame (the first element matching each selector)
    /// holds, read from inside it by the driver, whatever its origin: a
    /// frame the browser refused to load holds its error page.
    pub fn frames_href(&self, selectors: &[&str]) -> Vec<(String, String)> {
        selectors
            .iter()
            .map(|css| {
                let id = self.element(css);
                self.call("POST", &self.s("/frame"), json!({"id": {ELEMENT: id}}));
                let href = self.js("return location.href + ' ' + document.title", json!([]));
                self.call("POST", &self.s("/frame/parent"), json!({}));
                (
                    css.to_string(),
                    href.as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    pub fn set_window(&self, width: u32, height: u32) {
        self.call(
            "POST",
            &self.s("/window/rect"),
            json!({"width": width, "height": height}),
        );
    }

    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let v = self.call("GET", &self.s("/screenshot"), Value::Null);
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("screenshot data"))
            .expect("screenshot base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(self.port, "DELETE", &self.s(""), &[], b"");
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
