//! `load` of arbitrary bytes as an `.apkg` into a scratch cache: never panics,
//! never writes outside the cache, and leaves no temp folder behind.
#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use par_package::{load, LoadOptions};

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("PAR_FUZZ_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("par-fuzz-extract-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let src = dir.join("input.apkg");
    let home = dir.join("home");
    fs::write(&src, data).unwrap();
    // Small limits so that a bomb costs little time.
    let opts = LoadOptions::default()
        .with_home(&home)
        .with_max_entries(200)
        .with_max_total_bytes(8 << 20)
        .with_max_ratio(100);
    if let Ok(pkg) = load(&src, &opts) {
        assert!(pkg.root.starts_with(home.join("packages")));
        assert!(pkg.root.join("agent.yaml").is_file());
    }
    // Nothing but finished package folders (and the lock) may be left.
    if let Ok(entries) = fs::read_dir(home.join("packages")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                name == ".lock" || (name.len() == 64 && e.path().is_dir()),
                "left behind: {name}"
            );
        }
    }
    let _ = fs::remove_dir_all(&home);
    // Only the input and the cache live in the scratch folder.
    for e in fs::read_dir(dir).unwrap().flatten() {
        assert_eq!(e.file_name(), "input.apkg", "written outside the cache");
    }
});
