//! Loading packages: real fixture APKGs, hostile archives built here, the cache,
//! sha256 checks, folder sources and `pack`.

use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use par_package::{load, pack, LoadOptions, PackageError};

use par_fixtures::apkg as fixture;

mod support;
use support::{deflated, package_entries, walk, World, MANIFEST};

/// Builds an archive holding a valid agent.yaml plus whatever `add` writes.
fn archive(add: impl FnOnce(&mut zip::ZipWriter<Cursor<Vec<u8>>>)) -> Vec<u8> {
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zw.start_file("agent.yaml", deflated()).unwrap();
    zw.write_all(MANIFEST.as_bytes()).unwrap();
    add(&mut zw);
    zw.finish().unwrap().into_inner()
}

fn file(zw: &mut zip::ZipWriter<Cursor<Vec<u8>>>, name: &str, data: &[u8]) {
    zw.start_file(name, deflated()).unwrap();
    zw.write_all(data).unwrap();
}

/// Loads `bytes` as an .apkg in a fresh world; returns the error and what was written.
fn load_hostile(
    bytes: Vec<u8>,
    tune: impl FnOnce(LoadOptions) -> LoadOptions,
) -> (PackageError, Vec<String>) {
    let w = World::new();
    let src = w.src().join("hostile.apkg");
    fs::write(&src, bytes).unwrap();
    let err = load(&src, &tune(w.opts())).expect_err("hostile archive must be refused");
    let written = w.written();
    // Nothing at all may be left: no package folder, no temp folder, nothing outside.
    let leftovers: Vec<_> = written
        .iter()
        .filter(|p| !matches!(p.as_str(), "home" | "home/packages" | "home/packages/.lock"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "left behind after refusal: {leftovers:?}"
    );
    (err, written)
}

#[test]
fn refuses_absolute_paths() {
    let (err, _) = load_hostile(archive(|zw| file(zw, "/tmp/par-evil-abs", b"x")), |o| o);
    assert!(matches!(err, PackageError::UnsafeEntry { .. }), "{err}");
    assert!(err.to_string().contains("absolute path"), "{err}");
    assert!(err.to_string().contains("/tmp/par-evil-abs"), "{err}");
    assert!(!Path::new("/tmp/par-evil-abs").exists());
}

#[test]
fn refuses_parent_dir_escapes() {
    for name in ["../x", "a/../../x", "ok/../../../x", "..\\x"] {
        let (err, _) = load_hostile(archive(|zw| file(zw, name, b"x")), |o| o);
        assert!(
            matches!(err, PackageError::UnsafeEntry { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(".."), "{name}: {err}");
    }
}

#[test]
fn refuses_symlink_entries() {
    let bytes = archive(|zw| {
        zw.add_symlink("link", "/etc/passwd", deflated()).unwrap();
    });
    let (err, _) = load_hostile(bytes, |o| o);
    assert!(
        err.to_string().contains("symbolic links are not allowed"),
        "{err}"
    );
    assert!(err.to_string().contains("\"link\""), "{err}");
}

#[test]
fn refuses_too_many_entries() {
    let bytes = archive(|zw| {
        for i in 0..20 {
            file(zw, &format!("f{i}.txt"), b"x");
        }
    });
    let (err, _) = load_hostile(bytes, |o| o.with_max_entries(10));
    assert!(
        matches!(
            err,
            PackageError::TooManyEntries {
                count: 21,
                limit: 10
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "package has 21 entries, more than the limit of 10 (PAR_PACKAGE_MAX_ENTRIES)"
    );
}

#[test]
fn refuses_a_zip_bomb_by_ratio() {
    let zeros = vec![0u8; 20 << 20];
    let bytes = archive(|zw| file(zw, "bomb.bin", &zeros));
    assert!(bytes.len() < 200_000, "deflated zeros should be tiny");
    let (err, _) = load_hostile(bytes, |o| o);
    assert!(matches!(err, PackageError::RatioTooHigh { .. }), "{err}");
    assert!(err.to_string().contains("bomb.bin"), "{err}");
    assert!(err.to_string().contains("zip bomb"), "{err}");
}

#[test]
fn refuses_a_package_larger_than_the_limit() {
    let data: Vec<u8> = (0..50_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let bytes = archive(|zw| {
        file(zw, "a.bin", &data);
        file(zw, "b.bin", &data);
    });
    let (err, _) = load_hostile(bytes, |o| o.with_max_total_bytes(80_000));
    assert!(
        matches!(err, PackageError::TooLarge { limit: 80_000, .. }),
        "{err}"
    );
}

#[test]
fn refuses_duplicate_entries() {
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zw.start_file("agent.yaml", deflated()).unwrap();
    zw.write_all(MANIFEST.as_bytes()).unwrap();
    // The zip writer refuses duplicate names, so write the second copy with a
    // different spelling that maps to the same path.
    file(&mut zw, "dir/a.txt", b"1");
    file(&mut zw, "dir//a.txt", b"2");
    let bytes = zw.finish().unwrap().into_inner();
    let (err, _) = load_hostile(bytes, |o| o);
    assert!(err.to_string().contains("duplicate entry"), "{err}");
}

#[test]
fn refuses_non_zip_and_missing_manifest_and_bad_manifest() {
    let (err, _) = load_hostile(b"definitely not a zip".to_vec(), |o| o);
    assert!(matches!(err, PackageError::NotZip { .. }), "{err}");
    assert!(
        err.to_string().contains("is not a valid zip archive"),
        "{err}"
    );

    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    file(&mut zw, "main.py", b"");
    let (err, _) = load_hostile(zw.finish().unwrap().into_inner(), |o| o);
    assert!(matches!(err, PackageError::NoManifest), "{err}");

    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    file(&mut zw, "agent.yaml", b"name: Bad\nruntime: cobol\n");
    let (err, _) = load_hostile(zw.finish().unwrap().into_inner(), |o| o);
    let text = err.to_string();
    assert!(text.contains("agent.yaml in "), "{text}");
    assert!(
        text.contains("name:") && text.contains("runtime:") && text.contains("entrypoint:"),
        "{text}"
    );
}

#[test]
fn missing_source_is_a_clear_error() {
    let w = World::new();
    let err = load(&w.src().join("nope.apkg"), &w.opts()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn loads_every_fixture_into_the_cache() {
    let w = World::new();
    for (name, id) in [
        ("pk-full-0.1.0.apkg", "pk-full@0.1.0"),
        ("sdk-full-0.1.0.apkg", "sdk-full@0.1.0"),
        ("pk-handler-env-0.2.0.apkg", "pk-handler-env@0.2.0"),
        ("pk-rest-only-0.1.0.apkg", "pk-rest-only@0.1.0"),
    ] {
        let pkg = load(&fixture(name), &w.opts()).unwrap();
        assert_eq!(pkg.package_id(), id);
        assert_eq!(pkg.root, w.home().join("packages").join(&pkg.sha256));
        assert!(pkg.root.join("agent.yaml").is_file());
        assert!(pkg.root.join("src/main.py").is_file());
        assert_eq!(
            pkg.sha256,
            par_package::sha256_file(&fixture(name)).unwrap()
        );
    }
    // Only the four package folders: no temp folders left.
    assert_eq!(package_entries(&w.home()).len(), 4);
}

#[test]
fn second_load_reuses_the_cache() {
    let w = World::new();
    let src = fixture("pk-handler-env-0.2.0.apkg");
    let t = std::time::Instant::now();
    let first = load(&src, &w.opts()).unwrap();
    let cold = t.elapsed();
    let sentinel = first.root.join("sentinel");
    fs::write(&sentinel, "kept").unwrap();
    let t = std::time::Instant::now();
    let second = load(&src, &w.opts()).unwrap();
    println!(
        "load pk-handler-env: extract {cold:?}, cache hit {:?}",
        t.elapsed()
    );
    assert_eq!(first.root, second.root);
    assert_eq!(
        fs::read_to_string(&sentinel).unwrap(),
        "kept",
        "re-extracted"
    );
}

#[test]
fn sha256_is_checked_when_given() {
    let w = World::new();
    let src = fixture("pk-rest-only-0.1.0.apkg");
    let sha = par_package::sha256_file(&src).unwrap();
    load(&src, &w.opts().with_sha256(Some(sha.to_uppercase()))).unwrap();

    let wrong = "0".repeat(64);
    let err = load(&src, &w.opts().with_sha256(Some(wrong.clone()))).unwrap_err();
    assert!(matches!(err, PackageError::Sha256Mismatch { .. }), "{err}");
    assert!(
        err.to_string().contains(&wrong) && err.to_string().contains(&sha),
        "{err}"
    );

    let err = load(&src, &w.opts().with_sha256(Some("abc"))).unwrap_err();
    assert!(err.to_string().contains("64 hex digits"), "{err}");
}

#[test]
fn environment_merges_dotenv_and_manifest() {
    let w = World::new();
    let pkg = load(&fixture("pk-handler-env-0.2.0.apkg"), &w.opts()).unwrap();
    let env = pkg.environment().unwrap();
    assert_eq!(env["MANIFEST_ONLY"], "m");
    assert_eq!(env["DOTENV_ONLY"], "d");
    assert_eq!(env["BOTH"], "from-manifest");
    assert_eq!(env["QUOTED"], "q v");
    assert_eq!(env.len(), 4);
}

#[test]
fn ui_dir_falls_back_to_dist() {
    let w = World::new();
    let pk = load(&fixture("pk-full-0.1.0.apkg"), &w.opts()).unwrap();
    assert_eq!(pk.ui_dir().unwrap(), pk.root.join("dist/ui"));
    let sdk = load(&fixture("sdk-full-0.1.0.apkg"), &w.opts()).unwrap();
    assert_eq!(sdk.ui_dir().unwrap(), sdk.root.join("ui"));
    let rest = load(&fixture("pk-rest-only-0.1.0.apkg"), &w.opts()).unwrap();
    assert_eq!(rest.ui_dir(), None);
}

#[test]
fn concurrent_loads_of_one_package_agree() {
    let w = World::new();
    let src = fixture("pk-full-0.1.0.apkg");
    let opts = w.opts();
    let roots: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| load(&src, &opts).map(|p| p.root)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    assert!(roots.windows(2).all(|r| r[0] == r[1]));
    let entries = package_entries(&w.home());
    assert_eq!(entries.len(), 1, "temp folders left behind: {entries:?}");
    let mut zip = zip::ZipArchive::new(fs::File::open(&src).unwrap()).unwrap();
    let mut expected = String::new();
    std::io::Read::read_to_string(
        &mut zip.by_name("dist/ui/index.html").unwrap(),
        &mut expected,
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(roots[0].join("dist/ui/index.html")).unwrap(),
        expected
    );
}

fn example_folder(dir: &Path) {
    fs::create_dir_all(dir.join("src/__pycache__")).unwrap();
    fs::create_dir_all(dir.join(".git")).unwrap();
    fs::create_dir_all(dir.join(".venv/bin")).unwrap();
    fs::create_dir_all(dir.join(".pixell")).unwrap();
    fs::write(
        dir.join("agent.yaml"),
        "name: folder-agent\nentrypoint: src.main:handler\nmetadata:\n  version: 0.4.0\n",
    )
    .unwrap();
    fs::write(dir.join("src/__init__.py"), "").unwrap();
    fs::write(
        dir.join("src/main.py"),
        "def handler(ctx):\n    return ctx\n",
    )
    .unwrap();
    fs::write(dir.join("src/__pycache__/main.cpython-311.pyc"), "x").unwrap();
    fs::write(dir.join("src/old.pyc"), "x").unwrap();
    fs::write(dir.join(".git/HEAD"), "ref").unwrap();
    fs::write(dir.join(".venv/bin/python"), "").unwrap();
    fs::write(dir.join(".pixell/config.json"), "{\"api_key\":\"secret\"}").unwrap();
    fs::write(dir.join(".env"), "A=1\n").unwrap();
}

#[test]
fn folder_sources_pack_deterministically() {
    let w = World::new();
    let dir = w.src().join("agent");
    example_folder(&dir);
    let a = load(&dir, &w.opts()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // Touch a file: same content must give the same hash.
    fs::write(
        dir.join("src/main.py"),
        "def handler(ctx):\n    return ctx\n",
    )
    .unwrap();
    let b = load(&dir, &w.opts()).unwrap();
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(a.package_id(), "folder-agent@0.4.0");
    assert!(a.root.join("src/main.py").is_file());
    assert!(!a.root.join("src/__pycache__").exists());
    assert!(!a.root.join(".git").exists());
    assert!(!a.root.join(".venv").exists());
    assert!(!a.root.join(".pixell/config.json").exists());
    assert!(a.root.join(".pixell/package.json").is_file());

    fs::write(dir.join("src/main.py"), "def handler(ctx):\n    return 1\n").unwrap();
    let c = load(&dir, &w.opts()).unwrap();
    assert_ne!(a.sha256, c.sha256);
    // The folder source itself is never written to.
    let mut names = Vec::new();
    walk(&dir, &dir, &mut names);
    names.sort();
    assert!(!names.iter().any(|n| n.ends_with(".apkg")), "{names:?}");
}

#[test]
fn pack_writes_the_pixell_kit_layout() {
    let w = World::new();
    let dir = w.src().join("agent");
    example_folder(&dir);
    let out = w.src().join("out.apkg");
    let summary = pack(&dir, &out).unwrap();
    assert_eq!(summary.manifest.name, "folder-agent");
    assert_eq!(summary.sha256, par_package::sha256_file(&out).unwrap());

    let mut zip = zip::ZipArchive::new(fs::File::open(&out).unwrap()).unwrap();
    let names: Vec<String> = (0..zip.len())
        .map(|i| zip.by_index_raw(i).unwrap().name().unwrap().to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ".env",
            ".pixell/",
            ".pixell/package.json",
            "agent.yaml",
            "src/",
            "src/__init__.py",
            "src/main.py"
        ]
    );
    assert!(names
        .iter()
        .all(|n| !n.starts_with("./") && !n.starts_with('/')));
    let mut meta = String::new();
    std::io::Read::read_to_string(&mut zip.by_name(".pixell/package.json").unwrap(), &mut meta)
        .unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["format_version"], "1.0");
    assert_eq!(meta["created_by"], "par");
    assert!(meta["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(meta["manifest"]["name"], "folder-agent");
    assert_eq!(meta["manifest"]["metadata"]["version"], "0.4.0");

    // The packed file loads, and packing again with a fixed date is byte-identical.
    let pkg = load(&out, &w.opts()).unwrap();
    assert_eq!(pkg.package_id(), "folder-agent@0.4.0");
}

#[test]
fn pack_refuses_an_invalid_manifest() {
    let w = World::new();
    let dir = w.src().join("bad");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("agent.yaml"), "name: ok\nenvironment: [1]\n").unwrap();
    let out = w.src().join("bad.apkg");
    let err = pack(&dir, &out).unwrap_err();
    assert!(
        err.to_string().contains("environment: expected a mapping"),
        "{err}"
    );
    assert!(!out.exists());
}

/// Child side of [`concurrent_loads_from_several_processes`]: loads the package
/// named by the environment and prints its root. Does nothing when run normally.
#[test]
fn child_process_load_helper() {
    let (Some(src), Some(home)) = (
        std::env::var_os("PAR_TEST_CHILD_SRC"),
        std::env::var_os("PAR_TEST_CHILD_HOME"),
    ) else {
        return;
    };
    let pkg = load(Path::new(&src), &LoadOptions::default().with_home(home)).unwrap();
    println!("ROOT={}", pkg.root.display());
}

#[test]
fn concurrent_loads_from_several_processes() {
    let w = World::new();
    let src = fixture("sdk-full-0.1.0.apkg");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "child_process_load_helper",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("PAR_TEST_CHILD_SRC", &src)
                .env("PAR_TEST_CHILD_HOME", w.home())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut roots = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let root = text
            .lines()
            .find_map(|l| l.split_once("ROOT=").map(|(_, r)| r.trim()))
            .unwrap_or_else(|| panic!("child printed no root: {text}"))
            .to_string();
        roots.push(root);
    }
    assert!(roots.windows(2).all(|r| r[0] == r[1]), "{roots:?}");
    let entries = package_entries(&w.home());
    assert_eq!(entries.len(), 1, "temp folders left behind: {entries:?}");
    assert!(Path::new(&roots[0]).join("ui/index.html").is_file());
}
