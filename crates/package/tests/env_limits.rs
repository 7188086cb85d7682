//! The operator's package limits from the environment. One test in a binary of
//! its own: it changes the process environment.

use std::io::{Cursor, Write};

use par_package::{load, LoadOptions, PackageError};

fn set(var: &str, value: Option<&str>) {
    match value {
        Some(v) => std::env::set_var(var, v),
        None => std::env::remove_var(var),
    }
}

#[test]
fn limits_come_from_the_environment_and_bad_values_are_named() {
    const VARS: [&str; 3] = [
        "PAR_PACKAGE_MAX_ENTRIES",
        "PAR_PACKAGE_MAX_BYTES",
        "PAR_PACKAGE_MAX_RATIO",
    ];
    for v in VARS {
        set(v, None);
    }
    let d = LoadOptions::from_env().unwrap();
    assert_eq!(
        (d.max_entries, d.max_total_bytes, d.max_ratio),
        (10_000, 1 << 30, 200)
    );

    set("PAR_PACKAGE_MAX_ENTRIES", Some("3"));
    set("PAR_PACKAGE_MAX_BYTES", Some("64M"));
    set("PAR_PACKAGE_MAX_RATIO", Some(" 50 "));
    let o = LoadOptions::from_env().unwrap();
    assert_eq!(
        (o.max_entries, o.max_total_bytes, o.max_ratio),
        (3, 64 << 20, 50)
    );
    let d = LoadOptions::default();
    assert_eq!(
        (d.max_entries, d.max_total_bytes, d.max_ratio),
        (3, 64 << 20, 50)
    );

    // A load under the operator's entry limit.
    let dir = tempfile::tempdir().unwrap();
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for name in ["agent.yaml", "a.py", "b.py", "c.py"] {
        zw.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zw.write_all(b"name: x\nentrypoint: a:b\n").unwrap();
    }
    let src = dir.path().join("p.apkg");
    std::fs::write(&src, zw.finish().unwrap().into_inner()).unwrap();
    let err = load(
        &src,
        &LoadOptions::default().with_home(dir.path().join("home")),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "package has 4 entries, more than the limit of 3 (PAR_PACKAGE_MAX_ENTRIES)"
    );

    for (var, value) in [
        ("PAR_PACKAGE_MAX_ENTRIES", "many"),
        ("PAR_PACKAGE_MAX_BYTES", "1.5G"),
        ("PAR_PACKAGE_MAX_RATIO", "0"),
    ] {
        set(var, Some(value));
        let err = LoadOptions::from_env().unwrap_err();
        assert!(matches!(err, PackageError::BadLimit { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("invalid {var}={value:?}: expected")),
            "{text}"
        );
        // default() cannot fail: it logs and uses the built-in limits.
        let d = LoadOptions::default();
        assert_eq!(
            (d.max_entries, d.max_total_bytes, d.max_ratio),
            (10_000, 1 << 30, 200)
        );
        set(var, Some(""));
    }
    // Empty means unset.
    let d = LoadOptions::from_env().unwrap();
    assert_eq!(
        (d.max_entries, d.max_total_bytes, d.max_ratio),
        (10_000, 1 << 30, 200)
    );
}
