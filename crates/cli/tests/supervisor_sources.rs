//! Remote package sources in the supervisor, with the real worker: agents
//! from `s3://` (a local moto_server) and from an HTTP(S) URL (a loopback
//! server), a sha256 mismatch refused with its reason, no second download on
//! reload or restart of the same hash, transient failures retried.

mod supervisor_rollout_support;
mod supervisor_support;

use std::time::Duration;

use supervisor_rollout_support::*;
use supervisor_support::*;

const LONG: Duration = Duration::from_secs(120);

#[test]
fn agents_from_s3_and_https_with_sha_checks_and_the_download_cache() {
    let scratch = TempDir::new("srcpkgs");
    let pack_home = scratch.path().join("packhome");
    let v1 = pack(
        &agent_dir(scratch.path(), "remote", "1.0.0"),
        &scratch.path().join("remote-1.apkg"),
        &pack_home,
    );
    let v2 = pack(
        &agent_dir(scratch.path(), "remote", "2.0.0"),
        &scratch.path().join("remote-2.apkg"),
        &pack_home,
    );
    let sha1 = sha256_hex(&scratch.path().join("remote-1.apkg"));
    let sha2 = sha256_hex(&scratch.path().join("remote-2.apkg"));

    let moto = Moto::start();
    moto.put("/pkgs", b"");
    moto.put("/pkgs/agents/remote-1.apkg", &v1);
    moto.put("/pkgs/agents/remote-2.apkg", &v2);
    let s3 = CountingProxy::start(moto.addr);
    let files = FileServer::start();
    files.body("/remote-1.apkg", v1.clone());

    let wrong = "0".repeat(64);
    let agents = format!(
        r#"
[[agents]]
id = "from-s3"
package = "s3://pkgs/agents/remote-1.apkg"
sha256 = "{sha1}"

[[agents]]
id = "from-http"
package = "{http}"
sha256 = "{sha1}"

[[agents]]
id = "bad-sha"
package = "{http}"
sha256 = "{wrong}"

[[agents]]
id = "missing"
package = "s3://pkgs/agents/nope.apkg"
"#,
        http = files.url("/remote-1.apkg")
    );
    let endpoint = s3.url();
    let sup = Supervisor::start_with(
        "sources",
        "",
        &agents,
        &[
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let downloads = sup.dir.path().join("home/downloads");
    for id in ["from-s3", "from-http"] {
        let p = sup.wait_ready(id, LONG);
        assert_eq!(version_of(sup.port, id).as_deref(), Some("1.0.0"), "{id}");
        assert_eq!(p["sha256"], sha1.as_str(), "{p}");
        assert_eq!(
            p["package_file"].as_str().unwrap(),
            downloads.join(format!("{sha1}.apkg")).to_str().unwrap()
        );
        assert_eq!(p["current_package"]["sha256"], sha1.as_str());
        assert_eq!(p["current_package"]["package_id"], "remote@1.0.0");
    }
    // The two lasting failures: failed at once with their reason, no restarts.
    let bad = wait_until(LONG, "bad-sha to fail", || {
        sup.process("bad-sha").filter(|p| p["state"] == "failed")
    });
    let err = bad["last_error"].as_str().unwrap();
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(!downloads.join(format!("{wrong}.apkg")).exists());
    let missing = wait_until(LONG, "missing to fail", || {
        sup.process("missing").filter(|p| p["state"] == "failed")
    });
    let err = missing["last_error"].as_str().unwrap();
    assert!(
        err.contains("not found") && err.contains("nope.apkg"),
        "{err}"
    );
    assert_eq!(missing["restarts"], 0);
    let r = get(sup.port, "/agents/bad-sha/health").unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("fetch_failed"), "{}", r.text());
    let bad = sup.process("bad-sha").unwrap();
    assert!(
        bad["last_error"]
            .as_str()
            .unwrap()
            .contains("sha256 mismatch"),
        "{bad}"
    );

    let s3_gets = s3.gets("/pkgs/agents/remote-1.apkg");
    let http_gets = files.gets("/remote-1.apkg");
    assert_eq!(s3_gets, 1, "one S3 download");
    assert!(http_gets >= 1);

    // Same hash again — a reload that rolls (new env), a restart, a new agent
    // from the same URL: nothing is downloaded.
    rewrite_agents(
        &sup,
        &agents
            .replace(
                "id = \"from-http\"\n",
                "id = \"from-http\"\nenv_vars = { ROLL = \"1\" }\n",
            )
            .replace(
                "id = \"from-s3\"\n",
                "id = \"from-s3\"\nenv_vars = { ROLL = \"1\" }\n",
            ),
    );
    let r = http(sup.port, "POST", "/supervisor/reload", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    let rolled = j["rolled"].as_array().unwrap();
    assert!(
        rolled.contains(&"from-s3".into()) && rolled.contains(&"from-http".into()),
        "{j}"
    );
    for id in ["from-s3", "from-http"] {
        let p = wait_rollout(&sup, id, LONG);
        assert_eq!(p["rollout"]["state"], "rolled_out", "{p}");
    }
    let r = http(
        sup.port,
        "POST",
        "/supervisor/restart/par-from-http",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 202);
    let body = format!(
        r#"{{"agent_id":"copy","package":"{}","sha256":"{sha1}"}}"#,
        files.url("/remote-1.apkg")
    );
    let r = sup.spawn_wait(&body);
    assert_eq!(r.status, 201, "{}", r.text());
    sup.wait_ready("from-http", LONG);
    assert_eq!(
        s3.gets("/pkgs/agents/remote-1.apkg"),
        s3_gets,
        "no second S3 GET"
    );
    assert_eq!(
        files.gets("/remote-1.apkg"),
        http_gets,
        "no second HTTP GET"
    );

    // A new version from S3 through PUT: fetched (state of the rollout), then rolled.
    let body = format!(r#"{{"package":"s3://pkgs/agents/remote-2.apkg","sha256":"{sha2}"}}"#);
    let r = http(
        sup.port,
        "PUT",
        "/supervisor/agents/from-s3?wait=true&timeout=120",
        &[],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let p = r.json();
    assert_eq!(p["rollout"]["state"], "rolled_out", "{p}");
    assert_eq!(version_of(sup.port, "from-s3").as_deref(), Some("2.0.0"));
    let p = sup.process("from-s3").unwrap();
    assert_eq!(p["current_package"]["sha256"], sha2.as_str());
    assert_eq!(p["previous_package"]["sha256"], sha1.as_str());
    assert_eq!(s3.gets("/pkgs/agents/remote-2.apkg"), 1);
}

#[test]
fn transient_download_failures_are_retried_with_backoff() {
    let scratch = TempDir::new("srcretry");
    let v1 = pack(
        &agent_dir(scratch.path(), "flaky", "1.0.0"),
        &scratch.path().join("flaky.apkg"),
        &scratch.path().join("packhome"),
    );
    let files = FileServer::start();
    // More 503s than one fetch retries (1 + 3 attempts): the supervisor backs off and tries again.
    let mut script = vec![Reply::Status(503); 6];
    script.push(Reply::Body(std::sync::Arc::new(v1)));
    files.set("/flaky.apkg", script);
    let agents = format!(
        "[[agents]]\nid = \"flaky\"\npackage = \"{}\"\n",
        files.url("/flaky.apkg")
    );
    let sup = Supervisor::start_with("srcretry", "", &agents, &[]);
    let p = sup.wait_ready("flaky", LONG);
    assert_eq!(files.gets("/flaky.apkg"), 7);
    assert_eq!(p["restarts"], 0);
    assert_eq!(version_of(sup.port, "flaky").as_deref(), Some("1.0.0"));
    let logs = http(
        sup.port,
        "GET",
        "/supervisor/logs?process_id=par-flaky",
        &[],
        b"",
    )
    .unwrap()
    .text();
    assert!(logs.contains("fetch failed (will retry in"), "{logs}");
    assert!(logs.contains("fetching -> backoff"), "{logs}");
}

/// A registry index kept in S3 (`PAR_REGISTRY_URL=s3://…`) is read with the
/// same credentials and endpoint as packages, and changes to it are applied
/// on the next poll.
#[test]
fn a_registry_index_in_s3_is_read_and_followed() {
    let scratch = TempDir::new("s3registry");
    let v1 = pack(
        &agent_dir(scratch.path(), "listed", "1.0.0"),
        &scratch.path().join("listed.apkg"),
        &scratch.path().join("packhome"),
    );
    let moto = Moto::start();
    moto.put("/reg", b"");
    moto.put("/reg/agents/listed.apkg", &v1);
    let index = |ids: &[&str]| {
        let items: Vec<String> = ids
            .iter()
            .map(|id| {
                format!(r#"{{"agent_id":"{id}","package_path":"s3://reg/agents/listed.apkg"}}"#)
            })
            .collect();
        format!("[{}]", items.join(","))
    };
    moto.put("/reg/index.json", index(&["one"]).as_bytes());
    let endpoint = moto.url();
    let sup = Supervisor::start_with(
        "s3registry",
        "",
        "",
        &[
            ("PAR_REGISTRY_URL", "s3://reg/index.json"),
            ("PAR_REGISTRY_POLL", "300ms"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    sup.wait_ready("one", LONG);
    assert_eq!(version_of(sup.port, "one").as_deref(), Some("1.0.0"));
    moto.put("/reg/index.json", index(&["one", "two"]).as_bytes());
    sup.wait_ready("two", LONG);
    let status = get(sup.port, "/supervisor/status").unwrap().json();
    let registry = &status["desired"]["registry"];
    assert_eq!(
        registry["last_error"],
        serde_json::Value::Null,
        "{registry}"
    );
    assert_eq!(registry["agents"], 2, "{registry}");
    // The index is read into memory: no download folder is ever made for it.
    assert!(!sup.dir.path().join("home/run/registry").exists());
}

/// Downloaded packages that no agent runs, ran last or rolls to leave the
/// download cache once unused for `PAR_PACKAGE_KEEP_UNUSED`.
#[test]
fn downloads_no_agent_needs_are_swept() {
    let scratch = TempDir::new("dlsweep");
    let (mut bodies, mut shas) = (Vec::new(), Vec::new());
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        let file = scratch.path().join(format!("kept-{v}.apkg"));
        bodies.push(pack(
            &agent_dir(scratch.path(), "kept", v),
            &file,
            &scratch.path().join("packhome"),
        ));
        shas.push(sha256_hex(&file));
    }
    let files = FileServer::start();
    for (i, b) in bodies.iter().enumerate() {
        files.body(&format!("/v{i}.apkg"), b.clone());
    }
    let sup = Supervisor::start_with("dlsweep", "", "", &[("PAR_PACKAGE_KEEP_UNUSED", "2s")]);
    let spec = |i: usize| {
        format!(
            r#"{{"agent_id":"kept","package":"{}","sha256":"{}"}}"#,
            files.url(&format!("/v{i}.apkg")),
            shas[i]
        )
    };
    let r = sup.spawn_wait(&spec(0));
    assert_eq!(r.status, 201, "{}", r.text());
    for i in 1..3 {
        let r = http(
            sup.port,
            "PUT",
            "/supervisor/agents/kept?wait=true&timeout=120",
            &[],
            spec(i).as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 202, "{}", r.text());
    }
    assert_eq!(version_of(sup.port, "kept").as_deref(), Some("3.0.0"));
    let downloads = sup.dir.path().join("home/downloads");
    let cached = || {
        let mut names: Vec<String> = std::fs::read_dir(&downloads)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".apkg"))
            .collect();
        names.sort();
        names
    };
    // v1 goes; v2 (the previous version, to roll back to) and v3 stay.
    let mut want = vec![format!("{}.apkg", shas[1]), format!("{}.apkg", shas[2])];
    want.sort();
    wait_until(Duration::from_secs(30), "v1's download swept", || {
        (cached() == want).then_some(())
    });
    // A download made now, used by nobody: once a sweep has taken it, v2's
    // (older) has been through a sweep that kept it only as the version
    // to roll back to.
    let decoy = downloads.join(format!("{}.apkg", "d".repeat(64)));
    std::fs::write(&decoy, b"unused").unwrap();
    wait_until(Duration::from_secs(30), "an unused download swept", || {
        (!decoy.exists()).then_some(())
    });
    assert_eq!(cached(), want);
    assert!(sup.log_text().contains("download cache swept"));
}
