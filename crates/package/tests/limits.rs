//! Package limits with archives and folders made here: a zip bomb split into
//! many small entries, sizes that lie, the total-size limit on inflated bytes,
//! symbolic links out of a folder package, manifest field sizes, memory while
//! packing a large folder, and the cache sweep.

use std::collections::HashSet;
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use par_package::{load, pack, sweep_packages, LoadOptions, PackageError};

mod support;
use support::{deflated, World, MANIFEST};

/// An archive: agent.yaml, then `copies` entries `blob/NNNN.bin` each holding
/// `entry_bytes` zeros. The entry is compressed once and its compressed bytes
/// copied, so that a 900 MB bomb is made in milliseconds.
fn split_bomb(copies: usize, entry_bytes: usize) -> Vec<u8> {
    let mut one = zip::ZipWriter::new(Cursor::new(Vec::new()));
    one.start_file("zeros.bin", deflated()).unwrap();
    one.write_all(&vec![0u8; entry_bytes]).unwrap();
    let one = one.finish().unwrap().into_inner();
    let mut src = zip::ZipArchive::new(Cursor::new(one)).unwrap();

    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zw.start_file("agent.yaml", deflated()).unwrap();
    zw.write_all(MANIFEST.as_bytes()).unwrap();
    for i in 0..copies {
        let entry = src.by_index_raw(0).unwrap();
        zw.raw_copy_file_rename(entry, format!("blob/{i:04}.bin"))
            .unwrap();
    }
    zw.finish().unwrap().into_inner()
}

#[test]
fn a_bomb_split_into_entries_under_a_mebibyte_is_refused_before_any_write() {
    // As in the report: each entry just under 1 MiB, ~1 MB of archive, ~900 MB inside.
    let bytes = split_bomb(900, 1_000_000);
    let w = World::new();
    let err = w.load_bytes(&bytes, &w.opts()).unwrap_err();
    eprintln!("{err}");
    match err {
        PackageError::ArchiveRatioTooHigh {
            archive_bytes,
            expands,
            ratio,
            limit,
        } => {
            assert_eq!(archive_bytes, bytes.len() as u64);
            assert!(archive_bytes < 1_100_000, "{archive_bytes}");
            assert!(expands > 200 * archive_bytes, "{expands}");
            assert!(ratio > 200, "{ratio}");
            assert_eq!(limit, 200);
        }
        other => panic!("expected the archive-wide ratio error, got {other}"),
    }
    assert!(w.cached().is_empty(), "written: {:?}", w.cached());

    // Loaded with a ratio that allows it, the same archive's total (declared) is
    // what it would expand to: 900 MB.
    let err = w
        .load_bytes(
            &bytes,
            &w.opts()
                .with_max_ratio(10_000)
                .with_max_total_bytes(800 << 20),
        )
        .unwrap_err();
    assert!(
        matches!(err, PackageError::TooLarge { size, limit } if size > 800 << 20 && limit == 800 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("PAR_PACKAGE_MAX_BYTES"), "{err}");
    assert!(w.cached().is_empty(), "written: {:?}", w.cached());
}

#[test]
fn a_small_package_of_text_is_not_held_to_the_ratio() {
    // 600 KiB of very compressible text: far over 200:1, but under the 1 MiB floor.
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zw.start_file("agent.yaml", deflated()).unwrap();
    zw.write_all(MANIFEST.as_bytes()).unwrap();
    zw.start_file("main.py", deflated()).unwrap();
    zw.write_all(&vec![b'#'; 600 * 1024]).unwrap();
    let bytes = zw.finish().unwrap().into_inner();
    assert!(bytes.len() * 200 < 600 * 1024, "{}", bytes.len());
    let w = World::new();
    let root = w.load_bytes(&bytes, &w.opts()).unwrap();
    assert_eq!(
        fs::metadata(root.join("main.py")).unwrap().len(),
        600 * 1024
    );
}

/// Rewrites the declared uncompressed size of every entry named `name`
/// (local header and central directory) to `size`.
fn lie_about_size(bytes: &mut [u8], name: &str, size: u32) {
    let mut patched = 0;
    let mut i = 0;
    while i + 46 <= bytes.len() {
        let sig = &bytes[i..i + 4];
        let (name_at, size_at) = match sig {
            b"PK\x03\x04" => (30, 22),
            b"PK\x01\x02" => (46, 24),
            _ => {
                i += 1;
                continue;
            }
        };
        let name_len_at = if sig == b"PK\x03\x04" { 26 } else { 28 };
        let n = u16::from_le_bytes([bytes[i + name_len_at], bytes[i + name_len_at + 1]]) as usize;
        if bytes.get(i + name_at..i + name_at + n) == Some(name.as_bytes()) {
            bytes[i + size_at..i + size_at + 4].copy_from_slice(&size.to_le_bytes());
            patched += 1;
        }
        i += 4;
    }
    assert_eq!(patched, 2, "local header and central directory entry");
}

#[test]
fn sizes_that_lie_are_caught_while_inflating() {
    // 8 MiB of zeros declared as 100 bytes: the first pass sees nothing wrong.
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zw.start_file("agent.yaml", deflated()).unwrap();
    zw.write_all(MANIFEST.as_bytes()).unwrap();
    zw.start_file("liar.bin", deflated()).unwrap();
    zw.write_all(&vec![0u8; 8 << 20]).unwrap();
    let mut bytes = zw.finish().unwrap().into_inner();
    lie_about_size(&mut bytes, "liar.bin", 100);

    let w = World::new();
    let err = w.load_bytes(&bytes, &w.opts()).unwrap_err();
    eprintln!("{err}: {:?}", std::error::Error::source(&err));
    // Either inflating stops at the budget (ratio over the whole archive), or
    // the zip reader stops at the declared size and the checksum fails.
    assert!(
        matches!(
            err,
            PackageError::ArchiveRatioTooHigh { .. } | PackageError::Entry { .. }
        ),
        "{err}"
    );
    assert!(w.cached().is_empty(), "written: {:?}", w.cached());

    // And the total limit holds on inflated bytes when the ratio would not stop it.
    let err = w
        .load_bytes(
            &bytes,
            &w.opts()
                .with_max_ratio(1 << 30)
                .with_max_total_bytes(2 << 20),
        )
        .unwrap_err();
    assert!(
        matches!(err, PackageError::TooLarge { limit, .. } if limit == 2 << 20)
            || matches!(err, PackageError::Entry { .. }),
        "{err}"
    );
    assert!(w.cached().is_empty(), "written: {:?}", w.cached());
}

#[test]
fn errors_name_the_limit_and_the_figure() {
    let bytes = split_bomb(40, 1_000_000);
    let w = World::new();
    let text = w.load_bytes(&bytes, &w.opts()).unwrap_err().to_string();
    assert!(
        text.starts_with(&format!("package of {} bytes (", bytes.len())),
        "{text}"
    );
    assert!(text.contains("expands to at least "), "{text}");
    assert!(text.contains("more than the limit of 200:1"), "{text}");
    assert!(text.contains("PAR_PACKAGE_MAX_RATIO"), "{text}");
}

// --- folder packages -------------------------------------------------------

fn agent_folder(dir: &Path) {
    fs::create_dir_all(dir.join("ui")).unwrap();
    fs::write(
        dir.join("agent.yaml"),
        "name: folder-agent\nentrypoint: main:handler\nui:\n  path: ui\n",
    )
    .unwrap();
    fs::write(dir.join("main.py"), "def handler(ctx):\n    return ctx\n").unwrap();
    fs::write(dir.join("ui/index.html"), "<h1>hi</h1>").unwrap();
}

#[cfg(unix)]
#[test]
fn symlinks_out_of_a_folder_package_are_refused() {
    use std::os::unix::fs::symlink;
    let w = World::new();
    let secret = w.src().join("host-secret.txt");
    fs::write(&secret, "the host's own file").unwrap();
    let cases: &[(&str, PathBuf)] = &[
        ("ui/hostlink.txt", secret.clone()),
        ("ui/relative.txt", PathBuf::from("../../host-secret.txt")),
        ("ui/etc", PathBuf::from("/etc")),
        ("agent.yaml", secret.clone()),
    ];
    for (i, (link, target)) in cases.iter().enumerate() {
        let dir = w.src().join(format!("agent{i}"));
        agent_folder(&dir);
        let _ = fs::remove_file(dir.join(link));
        symlink(target, dir.join(link)).unwrap();

        let err = load(&dir, &w.opts()).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, PackageError::SymlinkEscape { .. }),
            "{link}: {text}"
        );
        assert!(
            text.contains(&dir.join(link).display().to_string()),
            "{text}"
        );
        assert!(text.contains(&target.display().to_string()), "{text}");
        assert!(!text.contains("the host's own file"), "{text}");

        let out = w.src().join(format!("out{i}.apkg"));
        let err = pack(&dir, &out).unwrap_err();
        assert!(matches!(err, PackageError::SymlinkEscape { .. }), "{err}");
        assert!(!out.exists());
    }
    assert!(w.cached().is_empty(), "written: {:?}", w.cached());
}

#[cfg(unix)]
#[test]
fn symlinks_inside_a_folder_package_are_followed() {
    use std::os::unix::fs::symlink;
    let w = World::new();
    let dir = w.src().join("agent");
    agent_folder(&dir);
    symlink("../main.py", dir.join("ui/main-copy.py")).unwrap();
    symlink(dir.join("ui/index.html"), dir.join("ui/home.html")).unwrap();
    symlink("nowhere", dir.join("ui/dangling")).unwrap();
    let pkg = load(&dir, &w.opts()).unwrap();
    assert_eq!(
        fs::read_to_string(pkg.root.join("ui/main-copy.py")).unwrap(),
        "def handler(ctx):\n    return ctx\n"
    );
    assert_eq!(
        fs::read_to_string(pkg.root.join("ui/home.html")).unwrap(),
        "<h1>hi</h1>"
    );
    assert!(!pkg.root.join("ui/dangling").exists());
    assert!(!pkg.root.join("ui/main-copy.py").is_symlink());
}

#[test]
fn folder_packages_go_through_the_same_limits() {
    let w = World::new();
    let dir = w.src().join("agent");
    agent_folder(&dir);
    fs::write(dir.join("big.bin"), vec![7u8; 300_000]).unwrap();
    let err = load(&dir, &w.opts().with_max_total_bytes(200_000)).unwrap_err();
    assert!(
        matches!(err, PackageError::TooLarge { limit: 200_000, .. }),
        "{err}"
    );
    let err = load(&dir, &w.opts().with_max_entries(3)).unwrap_err();
    assert!(matches!(err, PackageError::TooManyEntries { .. }), "{err}");
    // The packed copy is a temp file of the cache: gone after an error too.
    assert!(w.cached().is_empty(), "written: {:?}", w.cached());
    load(&dir, &w.opts()).unwrap();
    assert_eq!(w.cached().len(), 1, "{:?}", w.cached());
}

fn vm_hwm_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Child side of [`packing_a_large_folder_keeps_memory_flat`]: loads the
/// folder named by the environment and prints its peak memory before and
/// after. Does nothing when run normally.
#[test]
fn child_process_pack_memory_helper() {
    let (Some(src), Some(home)) = (
        std::env::var_os("PAR_TEST_PACK_SRC"),
        std::env::var_os("PAR_TEST_PACK_HOME"),
    ) else {
        return;
    };
    let before = vm_hwm_kib();
    load(Path::new(&src), &LoadOptions::builtin().with_home(home)).unwrap();
    println!("HWM={before},{}", vm_hwm_kib());
}

#[cfg(target_os = "linux")]
#[test]
fn packing_a_large_folder_keeps_memory_flat() {
    let w = World::new();
    let dir = w.src().join("agent");
    agent_folder(&dir);
    // 48 MiB of noise in three files: packing whole files or the whole archive
    // in memory would raise the peak by 16-48 MiB or more.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut chunk = vec![0u8; 1 << 20];
    for f in 0..3 {
        let mut out = fs::File::create(dir.join(format!("blob{f}.bin"))).unwrap();
        for _ in 0..16 {
            for b in chunk.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes());
            }
            out.write_all(&chunk).unwrap();
        }
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_pack_memory_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PAR_TEST_PACK_SRC", &dir)
        .env("PAR_TEST_PACK_HOME", w.home())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (before, after) = text
        .lines()
        .find_map(|l| l.split_once("HWM=").map(|(_, r)| r.trim().to_string()))
        .and_then(|r| {
            let (a, b) = r.split_once(',')?;
            Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
        })
        .unwrap_or_else(|| panic!("child printed no HWM: {text}"));
    eprintln!("peak memory: {before} KiB before, {after} KiB after packing 48 MiB");
    assert!(
        after - before < 12 * 1024,
        "peak memory grew by {} KiB while packing 48 MiB",
        after - before
    );
}

// --- manifest limits ---------------------------------------------------------

#[test]
fn oversized_manifest_fields_are_refused_by_name() {
    let w = World::new();
    let long = "x".repeat(1 << 20);
    let yaml = format!("name: big\nentrypoint: main:handler\ndescription: {long}\n");
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zw.start_file("agent.yaml", deflated()).unwrap();
    zw.write_all(yaml.as_bytes()).unwrap();
    let bytes = zw.finish().unwrap().into_inner();
    // A 1 MiB description makes agent.yaml itself too large.
    let text = w.load_bytes(&bytes, &w.opts()).unwrap_err().to_string();
    assert!(text.contains("(file): is "), "{text}");
    assert!(
        text.contains("more than the limit of 262144 bytes"),
        "{text}"
    );
    assert!(!text.contains("xxxxxxxx"), "{text}");

    let long = "x".repeat(5000);
    let yaml = format!("name: big\nentrypoint: main:handler\ndescription: {long}\n");
    let dir = w.src().join("agent");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("agent.yaml"), yaml).unwrap();
    let text = load(&dir, &w.opts()).unwrap_err().to_string();
    assert!(
        text.contains("description: is 5000 bytes, more than the limit of 4096 bytes"),
        "{text}"
    );
    assert!(w.cached().is_empty(), "written: {:?}", w.cached());
}

// --- the cache sweep ---------------------------------------------------------

/// Sets a path's mtime `ago` in the past.
fn age_by(path: &Path, ago: Duration) {
    let f = fs::File::open(path).unwrap();
    f.set_modified(SystemTime::now() - ago).unwrap();
}

fn small_package(name: &str) -> Vec<u8> {
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zw.start_file("agent.yaml", deflated()).unwrap();
    zw.write_all(format!("name: {name}\nentrypoint: main:handler\n").as_bytes())
        .unwrap();
    zw.start_file("main.py", deflated()).unwrap();
    zw.write_all(b"def handler(ctx):\n    return ctx\n")
        .unwrap();
    zw.finish().unwrap().into_inner()
}

#[test]
fn sweep_removes_old_unkept_packages_only() {
    let w = World::new();
    let mut roots = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let src = w.src().join(format!("{name}.apkg"));
        fs::write(&src, small_package(name)).unwrap();
        roots.push(load(&src, &w.opts()).unwrap());
    }
    let hour = Duration::from_secs(3600);
    // a: old, kept by the caller; b: old, not kept; c: old, not kept; d: recent.
    for pkg in &roots[..3] {
        age_by(&pkg.root, 2 * hour);
    }
    // c is loaded again: a cache hit marks it used.
    let again = load(&w.src().join("c.apkg"), &w.opts()).unwrap();
    assert_eq!(again.root, roots[2].root);
    // Leftovers of a crashed load and of a crashed sweep.
    let packages = w.home().join("packages");
    let stale_tmp = packages.join(".tmp-0123456789abcdef-1-0");
    fs::create_dir_all(stale_tmp.join("src")).unwrap();
    fs::write(stale_tmp.join("src/x.py"), "x").unwrap();
    age_by(&stale_tmp, 2 * hour);
    let stale_pack = packages.join(".tmp-pack-1-0.apkg");
    fs::write(&stale_pack, "partial").unwrap();
    age_by(&stale_pack, 2 * hour);
    let fresh_tmp = packages.join(".tmp-fedcba9876543210-2-0");
    fs::create_dir_all(&fresh_tmp).unwrap();
    fs::create_dir_all(packages.join(format!(".trash-{}-9-9", roots[1].sha256))).unwrap();
    // Something that is not the cache's: never touched.
    fs::create_dir_all(packages.join("not-a-package")).unwrap();
    age_by(&packages.join("not-a-package"), 2 * hour);

    let keep: HashSet<String> = [roots[0].sha256.to_uppercase()].into();
    let report = sweep_packages(&w.home(), &keep, hour);
    assert!(!report.busy);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.removed, vec![roots[1].sha256.clone()]);
    assert_eq!((report.kept, report.recent), (1, 2));
    assert_eq!(report.leftovers_removed, 3);
    assert!(report.freed_bytes > 0);

    assert!(roots[0].root.join("main.py").is_file());
    assert!(!roots[1].root.exists());
    assert!(roots[2].root.join("main.py").is_file());
    assert!(roots[3].root.join("main.py").is_file());
    assert!(!stale_tmp.exists() && !stale_pack.exists());
    assert!(fresh_tmp.exists());
    assert!(packages.join("not-a-package").exists());

    // A removed package comes back on its next load.
    let b = load(&w.src().join("b.apkg"), &w.opts()).unwrap();
    assert!(b.root.join("main.py").is_file());

    // Nothing to do on a home without a cache.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        sweep_packages(empty.path(), &HashSet::new(), Duration::ZERO),
        Default::default()
    );
}

#[cfg(unix)]
#[test]
fn sweep_never_runs_during_a_load() {
    use std::sync::mpsc;
    let w = World::new();
    let src = w.src().join("a.apkg");
    fs::write(&src, small_package("a")).unwrap();
    let a = load(&src, &w.opts()).unwrap();

    // Hold the cache's shared lock as a running load does, while sweeping.
    let (locked_tx, locked_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let lock_path = w.home().join("packages/.lock");
    let holder = std::thread::spawn(move || {
        let f = fs::File::open(lock_path).unwrap();
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockShared).unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        drop(lock);
    });
    locked_rx.recv().unwrap();
    let report = sweep_packages(&w.home(), &HashSet::new(), Duration::ZERO);
    assert!(report.busy, "{report:?}");
    assert!(report.removed.is_empty());
    assert!(a.root.join("main.py").is_file());
    release_tx.send(()).unwrap();
    holder.join().unwrap();

    let report = sweep_packages(&w.home(), &HashSet::new(), Duration::ZERO);
    assert!(!report.busy);
    assert_eq!(report.removed, vec![a.sha256.clone()]);
    assert!(!a.root.exists());
}

#[test]
fn loads_and_sweeps_race_without_losing_a_loaded_package() {
    // Each round: the package is old and not kept, then a load and a sweep
    // start together. Either the sweep takes it first (the load extracts it
    // again) or the load marks it used first (the sweep leaves it): what the
    // load returns is always there.
    let w = World::new();
    let src = w.src().join("a.apkg");
    fs::write(&src, small_package("a")).unwrap();
    let opts = w.opts();
    let home = w.home();
    let (mut swept, mut spared) = (0, 0);
    for _ in 0..100 {
        if let Ok(pkg) = load(&src, &opts) {
            age_by(&pkg.root, Duration::from_secs(3600));
        }
        let start = std::sync::Barrier::new(2);
        let (pkg, report) = std::thread::scope(|s| {
            let loader = s.spawn(|| {
                start.wait();
                load(&src, &opts).unwrap()
            });
            let sweeper = s.spawn(|| {
                start.wait();
                sweep_packages(&home, &HashSet::new(), Duration::from_secs(60))
            });
            (loader.join().unwrap(), sweeper.join().unwrap())
        });
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        if report.removed.is_empty() {
            spared += 1;
        } else {
            swept += 1;
        }
        assert!(
            pkg.root.join("main.py").is_file(),
            "a loaded package was swept: {report:?}"
        );
    }
    eprintln!("swept first {swept} times, loaded first {spared} times");
}

fn field_errors(yaml: &str) -> Vec<(String, String)> {
    let errs = par_package::Manifest::parse(yaml, "agent.yaml").unwrap_err();
    errs.errors
        .into_iter()
        .map(|e| (e.field, e.message))
        .collect()
}

#[test]
fn every_free_text_field_and_list_has_a_limit() {
    let base = "entrypoint: main:handler\n";
    let n300 = "a".repeat(300);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("name: {n300}\n{base}"),
            "name",
            "limit of 256 bytes",
        ),
        (
            format!("name: x\nversion: '{n300}'\n{base}"),
            "version",
            "limit of 256 bytes",
        ),
        (
            format!("name: x\ndisplay_name: {n300}\n{base}"),
            "display_name",
            "limit of 256 bytes",
        ),
        (
            format!("name: x\nauthor: {n300}\n{base}"),
            "author",
            "limit of 256 bytes",
        ),
        (
            format!("name: x\nlicense: {n300}\n{base}"),
            "license",
            "limit of 256 bytes",
        ),
        (
            format!("name: x\nruntime: {n300}\n{base}"),
            "runtime",
            "limit of 256 bytes",
        ),
        (
            format!("name: x\nentrypoint: main:{}\n", "h".repeat(600)),
            "entrypoint",
            "limit of 512 bytes",
        ),
        (
            format!("name: x\n{base}metadata:\n  version: '{n300}'\n"),
            "metadata.version",
            "limit of 256 bytes",
        ),
        (
            format!(
                "name: x\n{base}metadata:\n  homepage: https://{}\n",
                "h".repeat(3000)
            ),
            "metadata.homepage",
            "limit of 2048 bytes",
        ),
        (
            format!(
                "name: x\n{base}metadata:\n  tags: [{}]\n",
                vec!["t"; 101].join(", ")
            ),
            "metadata.tags",
            "has 101 items, more than the limit of 100",
        ),
        (
            format!(
                "name: x\n{base}capabilities: [{}]\n",
                vec!["c"; 101].join(", ")
            ),
            "capabilities",
            "has 101 items, more than the limit of 100",
        ),
        (
            format!(
                "name: x\n{base}dependencies: [{}]\n",
                vec!["requests"; 501].join(", ")
            ),
            "dependencies",
            "has 501 items, more than the limit of 500",
        ),
        (
            format!(
                "name: x\n{base}metadata:\n  sub_agents:\n{}",
                (0..101)
                    .map(|i| format!("    - {{name: s{i}, public: true}}\n"))
                    .collect::<String>()
            ),
            "metadata.sub_agents",
            "has 101 sub-agents, more than the limit of 100",
        ),
        (
            format!(
                "name: x\n{base}metadata:\n  sub_agents:\n    - {{name: s, description: {}}}\n",
                "d".repeat(5000)
            ),
            "metadata.sub_agents[0].description",
            "is 5000 bytes, more than the limit of 4096 bytes",
        ),
        (
            format!(
                "name: x\n{base}environment:\n  BIG: {}\n",
                "v".repeat(40_000)
            ),
            "environment.BIG",
            "is 40000 bytes, more than the limit of 32768 bytes",
        ),
        (
            format!(
                "name: x\n{base}environment:\n{}",
                (0..1001)
                    .map(|i| format!("  V{i}: x\n"))
                    .collect::<String>()
            ),
            "environment",
            "has 1001 variables, more than the limit of 1000",
        ),
        (
            format!("name: x\n{base}ui:\n  path: {}\n", "p".repeat(1100)),
            "ui.path",
            "limit of 1024 bytes",
        ),
    ];
    for (yaml, field, message) in cases {
        let errors = field_errors(&yaml);
        assert!(
            errors
                .iter()
                .any(|(f, m)| f == field && m.contains(message)),
            "{field}: {errors:?}"
        );
        // The oversized value itself is never repeated in a message.
        for (_, m) in &errors {
            assert!(m.len() < 300, "{field}: {m}");
        }
    }
}

#[test]
fn yaml_alias_expansion_is_bounded() {
    // "Billion laughs": nine levels of ten aliases each.
    let mut yaml = String::from("name: x\nentrypoint: main:handler\na0: &a0 [lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        yaml.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    yaml.push_str("mcp: *a9\n");
    let started = std::time::Instant::now();
    let result = par_package::Manifest::parse(&yaml, "agent.yaml");
    assert!(started.elapsed() < Duration::from_secs(5));
    let errors = result.unwrap_err();
    assert!(errors.to_string().contains("(yaml)"), "{errors}");
}

#[test]
fn packing_into_the_folder_itself_never_packs_the_archive() {
    let w = World::new();
    let dir = w.src().join("agent");
    agent_folder(&dir);
    let out = dir.join("dist.apkg");
    let first = pack(&dir, &out).unwrap();
    let second = pack(&dir, &out).unwrap();
    assert_eq!(first.entries, second.entries);
    let names = |path: &Path| -> Vec<String> {
        let mut zip = zip::ZipArchive::new(fs::File::open(path).unwrap()).unwrap();
        (0..zip.len())
            .map(|i| String::from_utf8_lossy(zip.by_index_raw(i).unwrap().name_raw()).into_owned())
            .collect()
    };
    let packed = names(&out);
    assert!(!packed.iter().any(|n| n.contains("apkg")), "{packed:?}");
    // A cache inside the folder: the temp archive is not packed into itself.
    let pkg = load(&dir, &LoadOptions::builtin().with_home(dir.join("cache"))).unwrap();
    let mut files = Vec::new();
    let mut stack = vec![pkg.root.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    assert!(!files.iter().any(|n| n.starts_with(".tmp-")), "{files:?}");
    assert!(files.iter().any(|n| n == "dist.apkg"), "{files:?}");
}
