//! Golden-file tests of the manifest parser: `tests/ui/*.yaml` with the expected
//! parsed manifest in `*.json` or the expected error text in `*.err`.
//! Regenerate the expectations with `BLESS=1 cargo test -p par-package --test ui`.

use std::fs;
use std::path::Path;

use par_package::Manifest;

#[test]
fn manifests_match_their_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let bless = std::env::var_os("BLESS").is_some();
    let mut yamls: Vec<_> = fs::read_dir(&dir)
        .expect("tests/ui exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    yamls.sort();
    assert!(
        yamls.len() >= 30,
        "expected the full golden set, found {}",
        yamls.len()
    );

    let mut failures = Vec::new();
    for yaml in &yamls {
        let stem = yaml.file_stem().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(yaml).unwrap();
        let file_name = format!("{stem}.yaml");
        let (actual, ext, other) = match Manifest::parse(&text, &file_name) {
            Ok(m) => (
                serde_json::to_string_pretty(&m).unwrap() + "\n",
                "json",
                "err",
            ),
            Err(e) => (e.to_string() + "\n", "err", "json"),
        };
        // Names say what is expected, so a wrongly blessed file stands out.
        if stem.starts_with("valid-") || stem.starts_with("fixture-") {
            if ext != "json" {
                failures.push(format!("{stem}: expected to parse, got:\n{actual}"));
                continue;
            }
        } else if stem.starts_with("invalid-") && ext != "err" {
            failures.push(format!("{stem}: expected an error, parsed as:\n{actual}"));
            continue;
        }
        let expected_path = dir.join(format!("{stem}.{ext}"));
        let stale = dir.join(format!("{stem}.{other}"));
        if bless {
            fs::write(&expected_path, &actual).unwrap();
            let _ = fs::remove_file(&stale);
            continue;
        }
        if stale.exists() {
            failures.push(format!("{stem}: has a stale .{other} file"));
        }
        match fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{stem}.{ext} differs\n--- expected\n{expected}--- actual\n{actual}"
            )),
            Err(_) => failures.push(format!("{stem}.{ext} is missing; actual:\n{actual}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatch(es) (BLESS=1 to regenerate):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_error_names_its_field_and_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if !stem.starts_with("invalid-") || path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let err = Manifest::parse(&text, "some/agent.yaml").unwrap_err();
        assert!(err.to_string().contains("some/agent.yaml"), "{stem}: {err}");
        assert!(!err.errors.is_empty(), "{stem}");
        for e in &err.errors {
            assert!(
                !e.field.is_empty() && !e.message.is_empty(),
                "{stem}: {e:?}"
            );
        }
    }
}
