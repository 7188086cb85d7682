//! End-to-end tests of `par pack` and `par inspect` with the real binary, the
//! real fixture APKGs and the example agents.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PAR: &str = env!("CARGO_BIN_EXE_par");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `par` with a private `PAR_HOME` so nothing touches the shared cache.
fn par(home: &Path, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(PAR)
        .args(args)
        .env("PAR_HOME", home)
        .env_remove("PAR_MODE")
        .output()
        .expect("par runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "par failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

#[test]
fn inspect_prints_every_fixture() {
    let home = tempfile::tempdir().unwrap();
    let cases = [
        (
            "pk-full-0.1.0.apkg",
            "pk-full@0.1.0",
            "invoke, rest, a2a, ui",
            "src.main:handler",
        ),
        (
            "sdk-full-0.1.0.apkg",
            "sdk-full@0.1.0",
            "invoke, rest, a2a, ui",
            "src.main:handler",
        ),
        (
            "pk-handler-env-0.2.0.apkg",
            "pk-handler-env@0.2.0",
            "invoke",
            "src.main:handler",
        ),
        ("pk-rest-only-0.1.0.apkg", "pk-rest-only@0.1.0", "rest", "-"),
    ];
    for (file, id, surfaces, entrypoint) in cases {
        let path = par_fixtures::apkg(file);
        let text = ok(&par(home.path(), &[os("inspect"), path.as_os_str()]));
        let sha = par_package::sha256_file(&path).unwrap();
        assert!(text.contains(&format!("package id:   {id}\n")), "{text}");
        assert!(text.contains(&format!("sha256:       {sha}\n")), "{text}");
        assert!(
            text.contains(&format!("surfaces:     {surfaces}\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("entrypoint:   {entrypoint}\n")),
            "{text}"
        );
        assert!(text.contains("runtime:      python3.11\n"), "{text}");
        assert!(text.contains("fastapi>=0.112.0"), "{text}");
        // .env values are never printed; environment keys only.
        assert!(
            !text.contains("from-dotenv") && !text.contains("from-manifest"),
            "{text}"
        );

        let json: serde_json::Value = serde_json::from_str(&ok(&par(
            home.path(),
            &[os("inspect"), os("--json"), path.as_os_str()],
        )))
        .unwrap();
        assert_eq!(json["package_id"], id);
        assert_eq!(json["sha256"], sha);
        assert_eq!(json["runtime"], "python3.11");
        let want: Vec<&str> = surfaces.split(", ").collect();
        for s in ["invoke", "rest", "a2a", "ui", "http_server"] {
            assert_eq!(json["surfaces"][s], want.contains(&s), "{file} surface {s}");
        }
    }
    // Inspect is read-only: nothing went into the cache.
    assert_eq!(fs::read_dir(home.path()).unwrap().count(), 0);
}

#[test]
fn inspect_json_details_of_the_ui_and_a2a_forms() {
    let home = tempfile::tempdir().unwrap();
    let pk = par_fixtures::apkg("pk-full-0.1.0.apkg");
    let j: serde_json::Value = serde_json::from_str(&ok(&par(
        home.path(),
        &[os("inspect"), os("--json"), pk.as_os_str()],
    )))
    .unwrap();
    assert_eq!(j["a2a"]["entry"], "src.a2a.server:serve");
    assert_eq!(j["rest"], "src.rest.index:mount");
    assert_eq!(j["ui"]["path"], "ui");
    assert_eq!(j["ui"]["base_path"], "/");
    let env = par_fixtures::apkg("pk-handler-env-0.2.0.apkg");
    let j: serde_json::Value = serde_json::from_str(&ok(&par(
        home.path(),
        &[os("inspect"), os("--json"), env.as_os_str()],
    )))
    .unwrap();
    assert_eq!(j["capabilities"], serde_json::json!(["echo", "env"]));
    assert_eq!(
        j["environment_keys"],
        serde_json::json!(["BOTH", "MANIFEST_ONLY"])
    );
}

#[test]
fn pack_then_load_every_example_agent() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let examples = repo_root().join("examples/agents");
    let mut packed = 0;
    let mut names: Vec<_> = fs::read_dir(&examples)
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    names.sort();
    for example in names.into_iter().filter(|p| p.join("agent.yaml").is_file()) {
        let out = dir.path().join(format!(
            "{}.apkg",
            example.file_name().unwrap().to_string_lossy()
        ));
        let text = ok(&par(
            &home,
            &[os("pack"), example.as_os_str(), os("-o"), out.as_os_str()],
        ));
        assert!(text.starts_with("packed "), "{text}");
        let pkg = par_package::load(&out, &par_package::LoadOptions::default().with_home(&home))
            .unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        assert!(text.contains(&pkg.package_id()), "{text}");
        assert!(text.contains(&pkg.sha256), "{text}");
        assert!(pkg.root.join("agent.yaml").is_file());
        assert!(pkg.root.join(".pixell/package.json").is_file());
        // The same folder loaded directly gives the same manifest.
        let direct = par_package::load(
            &example,
            &par_package::LoadOptions::default().with_home(&home),
        )
        .unwrap();
        assert_eq!(direct.package_id(), pkg.package_id());
        packed += 1;
    }
    assert!(
        packed >= 1 || !examples.exists(),
        "no example agent was packed"
    );
    // `par pack` never writes into the example folders.
    let status = Command::new("git")
        .args(["status", "--porcelain", "--", "examples/agents"])
        .current_dir(repo_root())
        .output();
    if let Ok(s) = status {
        let text = String::from_utf8_lossy(&s.stdout);
        assert!(!text.contains(".apkg"), "{text}");
    }
}

fn write_agent(dir: &Path, manifest: &str) {
    fs::create_dir_all(dir.join("src/__pycache__")).unwrap();
    fs::write(dir.join("agent.yaml"), manifest).unwrap();
    fs::write(dir.join("src/__init__.py"), "").unwrap();
    fs::write(
        dir.join("src/main.py"),
        "def handler(ctx):\n    return {'ok': True}\n",
    )
    .unwrap();
    fs::write(dir.join("src/__pycache__/main.cpython-311.pyc"), "junk").unwrap();
}

#[test]
fn pack_is_reproducible_and_names_its_default_output() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("agent");
    write_agent(
        &src,
        "name: repro\nentrypoint: src.main:handler\nmetadata:\n  version: 2.0.1\n",
    );
    let run = |cwd: &Path, extra: &[&str]| {
        Command::new(PAR)
            .arg("pack")
            .arg(&src)
            .args(extra)
            .current_dir(cwd)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("PAR_HOME", dir.path().join("home"))
            .output()
            .unwrap()
    };
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    ok(&run(&a, &[]));
    ok(&run(&b, &[]));
    let first = fs::read(a.join("repro-2.0.1.apkg")).unwrap();
    let second = fs::read(b.join("repro-2.0.1.apkg")).unwrap();
    assert_eq!(
        first, second,
        "same folder, same SOURCE_DATE_EPOCH: same bytes"
    );

    let out = dir.path().join("x.apkg");
    let text = ok(&run(dir.path(), &["-o", out.to_str().unwrap()]));
    assert!(text.contains("repro@2.0.1"), "{text}");
    let listing = Command::new("unzip").arg("-Z1").arg(&out).output();
    if let Ok(l) = listing {
        if l.status.success() {
            let names = String::from_utf8_lossy(&l.stdout);
            assert!(
                names.lines().any(|n| n == "src/"),
                "explicit folder entries: {names}"
            );
            assert!(names.lines().any(|n| n == "agent.yaml"), "{names}");
            assert!(
                names.lines().any(|n| n == ".pixell/package.json"),
                "{names}"
            );
            assert!(
                !names.contains("__pycache__") && !names.contains("./"),
                "{names}"
            );
        }
    }
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");

    let missing = dir.path().join("nope.apkg");
    let out = par(&home, &[os("inspect"), missing.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");

    let src = dir.path().join("bad");
    write_agent(&src, "name: Bad_Name\nentrypoint: nope\nenvironment: [1]\n");
    let apkg = dir.path().join("bad.apkg");
    let out = par(
        &home,
        &[os("pack"), src.as_os_str(), os("-o"), apkg.as_os_str()],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for field in ["name:", "entrypoint:", "environment:", "agent.yaml"] {
        assert!(err.contains(field), "missing {field} in: {err}");
    }
    assert!(!apkg.exists());

    let garbage = dir.path().join("garbage.apkg");
    fs::write(&garbage, b"not a zip at all").unwrap();
    let out = par(&home, &[os("inspect"), garbage.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a valid zip archive"), "{err}");

    let out = par(&home, &[os("pack"), missing.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a folder"));
    assert!(!home.exists(), "failed commands wrote to PAR_HOME");
}
