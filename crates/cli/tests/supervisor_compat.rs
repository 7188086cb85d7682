//! End-to-end through the supervisor, with the real worker and Python: what
//! real packages and clients expect. The UI at `/agents/{id}/ui/` (where
//! `pixell dev` serves it) for packages laid out as pixell-kit 0.4 and
//! pixell-sdk 0.5 build them, the legacy export names of the original PAR,
//! and a 400 for an empty body.

mod supervisor_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use supervisor_support::*;

/// First start installs FastAPI into the shared environment cache.
const READY: Duration = Duration::from_secs(600);

/// The same requirement list as the other FastAPI test agents, so they share one environment.
const REQUIREMENTS: &str = "fastapi>=0.112.0\nuvicorn>=0.30.0\nwatchdog>=4.0.0\n";

const INDEX_HTML: &str = "<!doctype html>\n<html>\n  <head><meta charset=\"utf-8\" /><title>Pixell Agent UI</title>\n  <script type=\"module\" src=\"./assets/index-4f3a9c1b.js\"></script></head>\n  <body><h1>Pixell Agent UI</h1></body>\n</html>\n";
const APP_JS: &str = "console.log('hashed bundle');\n";

const HANDLER: &str = "def handler(context):\n    \"\"\"Example entrypoint.\"\"\"\n    return {\"message\": \"Hello from handler\", \"received\": context}\n";
const REST: &str = "from fastapi import FastAPI\n\n\ndef mount(app: FastAPI) -> None:\n    @app.get(\"/api/hello\")\n    async def hello():\n        return {\"message\": \"Hello from REST\"}\n";
const A2A: &str =
    "def serve() -> None:\n    print(\"A2A server stub - implement gRPC service here\")\n";

/// The cache of package environments shared by the whole test run.
fn par_home() -> PathBuf {
    let home = std::env::var_os("PAR_TEST_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("par-home"));
    std::fs::create_dir_all(&home).unwrap();
    home
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
}

/// `par pack DIR -o DIR.apkg`: the agents run from real APKGs.
fn pack(dir: &Path) -> String {
    let out = dir.with_extension("apkg");
    let o = Command::new(env!("CARGO_BIN_EXE_par"))
        .arg("pack")
        .arg(dir)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "par pack: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.to_string_lossy().into_owned()
}

/// As `pixell build` (pixell-kit 0.4.12) lays out the `pixell init` template:
/// surface files copied under `dist/`, the UI at `dist/ui/` though `ui.path` is `ui`.
fn pk_full_like(root: &Path) -> String {
    let dir = root.join("pk-full");
    let manifest = "version: '1.0'\nname: pk-full\ndisplay_name: Pk Full\ndescription: A Pixell agent\nauthor: Your Name\nlicense: MIT\nentrypoint: src.main:handler\nruntime: python3.11\nenvironment: {}\ndependencies:\n- fastapi>=0.112.0\n- uvicorn>=0.30.0\n- watchdog>=4.0.0\nmetadata:\n  version: 0.1.0\na2a:\n  service: src.a2a.server:serve\nrest:\n  entry: src.rest.index:mount\nui:\n  path: ui\n";
    write(
        &dir,
        &[
            ("agent.yaml", manifest),
            ("requirements.txt", REQUIREMENTS),
            (".env", "API_KEY=not-a-secret\n"),
            (
                ".pixell/package.json",
                "{\"format_version\": \"1.0\", \"created_by\": \"pixell-kit\"}\n",
            ),
            ("src/__init__.py", ""),
            ("src/main.py", HANDLER),
            ("src/rest/__init__.py", ""),
            ("src/rest/index.py", REST),
            ("src/a2a/__init__.py", ""),
            ("src/a2a/server.py", A2A),
            ("dist/rest/index.py", REST),
            ("dist/a2a/server.py", A2A),
            ("dist/ui/index.html", INDEX_HTML),
            ("dist/ui/assets/index-4f3a9c1b.js", APP_JS),
            ("dist/ui/assets/app.css", "body{margin:40px}\n"),
        ],
    );
    pack(&dir)
}

/// As pixell-sdk 0.5.4 builds it: entry files also at the root by bare name,
/// `a2a: {entry, service}`, the UI at `ui/`.
fn sdk_full_like(root: &Path) -> String {
    let dir = root.join("sdk-full");
    let manifest = "version: '1.0'\nname: sdk-full\ndisplay_name: Sdk Full\ndescription: A Pixell agent\nauthor: Your Name\nlicense: MIT\nentrypoint: src.main:handler\ncapabilities: []\nruntime: python3.11\nenvironment: {}\ndependencies:\n- fastapi>=0.112.0\n- uvicorn>=0.30.0\n- watchdog>=4.0.0\nmetadata:\n  version: 0.1.0\n  tags: []\na2a:\n  entry: src.a2a.server:serve\n  service: src.a2a.server:serve\nrest:\n  entry: src.rest.index:mount\nui:\n  path: ui\n";
    write(
        &dir,
        &[
            ("agent.yaml", manifest),
            ("requirements.txt", REQUIREMENTS),
            (".env", "API_KEY=not-a-secret\n"),
            ("index.py", REST),
            ("server.py", A2A),
            ("src/__init__.py", ""),
            ("src/main.py", HANDLER),
            ("src/rest/__init__.py", ""),
            ("src/rest/index.py", REST),
            ("src/a2a/__init__.py", ""),
            ("src/a2a/server.py", A2A),
            ("ui/index.html", INDEX_HTML),
            ("ui/assets/index-4f3a9c1b.js", APP_JS),
            ("ui/assets/app.css", "body{margin:40px}\n"),
        ],
    );
    pack(&dir)
}

/// A UI-only package with its own `ui.basePath`.
fn console_ui(root: &Path) -> String {
    let dir = root.join("console");
    write(
        &dir,
        &[
            ("agent.yaml", "version: '1.0'\nname: console\nui:\n  path: web\n  basePath: /console\nmetadata:\n  version: 1.0.0\n"),
            ("web/index.html", INDEX_HTML),
            ("web/assets/index-4f3a9c1b.js", APP_JS),
        ],
    );
    dir.to_string_lossy().into_owned()
}

fn start(tag: &str, agents: &[(&str, String)]) -> Supervisor {
    let toml: String = agents
        .iter()
        .map(|(id, pkg)| format!("[[agents]]\nid = \"{id}\"\npackage = \"{pkg}\"\n"))
        .collect();
    let home = par_home();
    let sup = Supervisor::start_with(tag, "", &toml, &[("PAR_HOME", home.to_str().unwrap())]);
    for (id, _) in agents {
        let p = wait_until(READY, &format!("agent {id} ready or failed"), || {
            sup.process(id)
                .filter(|p| p["state"] == "ready" || p["state"] == "failed")
        });
        assert_eq!(p["state"], "ready", "{p}\n{}", sup.log_text());
    }
    sup
}

const HTML: (&str, &str) = ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8");

fn get_with(port: u16, path: &str, headers: &[(&str, &str)]) -> Resp {
    http(port, "GET", path, headers, b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn assert_index(r: &Resp, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/html; charset=utf-8"),
        "{what}"
    );
    assert_eq!(r.text(), INDEX_HTML, "{what}");
}

#[test]
fn the_ui_is_at_ui_for_pixell_kit_and_pixell_sdk_packages() {
    let dir = TempDir::new("compat-ui");
    let sup = start(
        "compat-ui",
        &[
            ("pk", pk_full_like(dir.path())),
            ("sdk", sdk_full_like(dir.path())),
            ("console", console_ui(dir.path())),
        ],
    );
    let port = sup.port;
    for id in ["pk", "sdk"] {
        let ui = format!("/agents/{id}/ui/");
        let r = get_with(port, &ui, &[HTML]);
        assert_index(&r, &ui);
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        let etag = r.header("etag").expect("ETag").to_string();
        assert!(r.header("last-modified").is_some(), "{:?}", r.headers);
        let r = get_with(port, &ui, &[HTML, ("If-None-Match", &etag)]);
        assert_eq!(r.status, 304, "{ui} revalidated");

        // A client-side route of the SPA gets index.html; a missing asset does not.
        let route = format!("/agents/{id}/ui/some/client/route");
        assert_index(&get_with(port, &route, &[HTML]), &route);
        let r = get_with(port, &format!("/agents/{id}/ui/missing.js"), &[HTML]);
        assert_eq!(r.status, 404, "{}", r.text());
        let r = get_with(
            port,
            &format!("/agents/{id}/ui/some/route"),
            &[("Accept", "application/json")],
        );
        assert_eq!(r.status, 404, "{}", r.text());

        // Assets: their type, and hashed names cached for good.
        let r = get_with(
            port,
            &format!("/agents/{id}/ui/assets/index-4f3a9c1b.js"),
            &[],
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), APP_JS);
        assert!(
            r.header("content-type").unwrap().contains("javascript"),
            "{:?}",
            r.headers
        );
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        let r = get_with(port, &format!("/agents/{id}/ui/assets/app.css"), &[]);
        assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
        assert_eq!(r.header("cache-control"), Some("no-cache"));

        // The bare mount sends the browser into the folder, relative to where it is.
        let r = get_with(port, &format!("/agents/{id}/ui"), &[HTML]);
        assert_eq!(r.status, 307);
        assert_eq!(r.header("location"), Some("ui/"));

        // REST keeps its routes; the UI at `/` takes only what REST does not answer.
        let r = get_with(port, &format!("/agents/{id}/api/hello"), &[HTML]);
        assert_eq!(r.json(), json!({"message": "Hello from REST"}));
        let r = get_with(
            port,
            &format!("/agents/{id}/api/nope"),
            &[("Accept", "application/json")],
        );
        assert_eq!(r.status, 404);
        assert_eq!(r.json(), json!({"detail": "Not Found"}));
        assert_index(&get_with(port, &format!("/agents/{id}/"), &[HTML]), "root");
        assert_index(
            &get_with(port, &format!("/agents/{id}/settings"), &[HTML]),
            "root route",
        );

        let r = get(port, &format!("/agents/{id}/ui/health")).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["status"], "ok");
        assert_eq!(r.json()["mounts"], json!(["/ui", "/"]));
        let health = get(port, &format!("/agents/{id}/health")).unwrap().json();
        assert_eq!(health["surfaces"]["ui"]["status"], "ready", "{health}");
    }

    // A UI with its own basePath: there and at /ui/, and nothing at `/`.
    assert_index(
        &get_with(port, "/agents/console/console/", &[HTML]),
        "basePath",
    );
    assert_index(
        &get_with(port, "/agents/console/console/x/y", &[HTML]),
        "basePath route",
    );
    assert_index(
        &get_with(port, "/agents/console/ui/", &[HTML]),
        "/ui/ of console",
    );
    let r = get_with(port, "/agents/console/console", &[HTML]);
    assert_eq!((r.status, r.header("location")), (307, Some("console/")));
    let r = get_with(port, "/agents/console/", &[HTML]);
    assert_eq!(r.status, 404, "{}", r.text());
    let r = get(port, "/agents/console/ui/health").unwrap();
    assert_eq!(r.json()["mounts"], json!(["/ui", "/console"]));
}

#[test]
fn legacy_export_names_reach_the_entrypoint_and_empty_bodies_are_refused() {
    let dir = TempDir::new("compat-exports");
    // A package whose own `execute` export must win over the legacy mapping.
    let own = dir.path().join("own");
    write(
        &own,
        &[
            ("agent.yaml", "version: '1.0'\nname: own\nentrypoint: src.main:handler\nmetadata:\n  version: 0.1.0\n  sub_agents:\n    - name: execute\n      public: true\n    - name: get_info\n      public: false\n"),
            ("src/__init__.py", ""),
            ("src/main.py", "def handler(context):\n    return {\"via\": \"handler\", \"context\": context}\n\n\ndef execute(args):\n    return {\"via\": \"own execute\", \"args\": args}\n"),
        ],
    );
    let echo = repo_root().join("examples/agents/echo");
    let multi = repo_root().join("examples/agents/multi");
    let sup = start(
        "compat-exports",
        &[
            ("a", echo.to_string_lossy().into_owned()),
            ("b", multi.to_string_lossy().into_owned()),
            ("own", own.to_string_lossy().into_owned()),
        ],
    );
    let post = |path: &str, body: &[u8]| {
        http(
            sup.port,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body,
        )
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    };

    // The echo example has no exports: the legacy names reach its handler, body as is.
    for name in ["execute", "invoke", "get_info", "list_capabilities"] {
        let r = post(&format!("/agents/a/exports/{name}"), br#"{"text":"hi"}"#);
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.json()["status"], "success");
        assert_eq!(
            r.json()["data"],
            json!({"echo": {"text": "hi"}, "agent_id": "a"}),
            "{name}"
        );
    }
    let r = post("/agents/a/exports/other", b"{}");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["error"]["message"],
        "no public export named 'other'"
    );

    // A package's own export of that name wins; a private one stays private.
    let r = post("/agents/own/exports/execute", br#"{"n":1}"#);
    assert_eq!(
        r.json()["data"],
        json!({"via": "own execute", "args": {"n": 1}})
    );
    let r = post("/agents/own/exports/invoke", br#"{"n":2}"#);
    assert_eq!(
        r.json()["data"],
        json!({"via": "handler", "context": {"n": 2}})
    );
    let r = post("/agents/own/exports/get_info", b"{}");
    assert_eq!(r.status, 404, "{}", r.text());

    // An empty or whitespace body is a malformed request, named as such.
    for (path, body, what) in [
        ("/agents/a/invoke", &b""[..], "empty"),
        ("/agents/a/invoke", &b" \r\n "[..], "only whitespace"),
        ("/agents/a/exports/execute", &b""[..], "empty"),
        ("/agents/b/exports/add", &b"\n"[..], "only whitespace"),
    ] {
        let r = post(path, body);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert_eq!(r.json()["error"]["code"], "bad_request");
        assert!(msg.contains(what) && msg.contains("JSON"), "{path}: {msg}");
    }
    // The same routes with a body still work.
    let r = post("/agents/b/exports/add", br#"{"values":[1,2,3]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post("/agents/a/invoke", b"{}");
    assert_eq!(r.json()["data"]["echo"], json!({}));
}
