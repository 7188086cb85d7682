//! Property tests: untrusted manifests and archives never panic the parser or
//! the extractor, and whatever parses is valid.

use std::io::{Cursor, Write};

use par_package::{load, LoadOptions, Manifest};
use proptest::prelude::*;

const KEYS: &[&str] = &[
    "name",
    "version",
    "entrypoint",
    "runtime",
    "environment",
    "dependencies",
    "capabilities",
    "metadata",
    "a2a",
    "rest",
    "ui",
    "http_server",
    "mcp",
    "sub_agents",
    "entry",
    "service",
    "path",
    "basePath",
    "public",
    "tags",
    "x",
];

/// YAML-ish trees over the manifest's own keys, so that deep paths get exercised.
fn yaml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("1.5".to_string()),
        Just("'1.0'".to_string()),
        Just("src.main:handler".to_string()),
        Just("python3.11".to_string()),
        "[a-z:._/-]{0,12}".prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|i| i.to_string()),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

fn yaml_doc() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(KEYS), yaml_value()), 0..10).prop_map(|kv| {
        kv.into_iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect::<String>()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_text_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = Manifest::parse(&text, "agent.yaml");
    }

    #[test]
    fn random_manifests_never_panic_and_parse_only_when_valid(doc in yaml_doc()) {
        match Manifest::parse(&doc, "agent.yaml") {
            Ok(m) => {
                prop_assert!(m.name.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
                prop_assert!(m.entrypoint.is_some() || m.rest.is_some() || m.a2a.is_some()
                    || m.ui.is_some() || m.http_server.is_some());
                prop_assert!(par_package::manifest::RUNTIMES.contains(&m.runtime.as_str()));
            }
            Err(e) => {
                prop_assert!(!e.errors.is_empty());
                prop_assert!(e.to_string().contains("agent.yaml"));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random bytes, and valid archives with random bytes spliced in, never panic
    /// the loader, and nothing is written outside the cache.
    #[test]
    fn random_archives_never_panic(
        noise in prop::collection::vec(any::<u8>(), 0..256),
        at in any::<prop::sample::Index>(),
        names in prop::collection::vec("[a-z./\\\\]{1,10}", 0..5),
    ) {
        let world = tempfile::tempdir().unwrap();
        let home = world.path().join("home");
        let opts = LoadOptions::default().with_home(&home);

        let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let o = zip::write::SimpleFileOptions::default();
        zw.start_file("agent.yaml", o).unwrap();
        zw.write_all(b"name: fuzz\nentrypoint: m:f\n").unwrap();
        for n in &names {
            if zw.start_file(n.as_str(), o).is_ok() {
                zw.write_all(n.as_bytes()).unwrap();
            }
        }
        let good = zw.finish().unwrap().into_inner();
        let mut spliced = good.clone();
        let i = at.index(spliced.len());
        let end = (i + noise.len()).min(spliced.len());
        spliced.splice(i..end, noise.iter().copied());

        for (k, bytes) in [noise.clone(), good, spliced].into_iter().enumerate() {
            let src = world.path().join(format!("p{k}.apkg"));
            std::fs::write(&src, &bytes).unwrap();
            let _ = load(&src, &opts);
        }
        for e in std::fs::read_dir(world.path()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            prop_assert!(name == "home" || name.ends_with(".apkg"), "wrote {}", name);
        }
        if home.join("packages").is_dir() {
            for e in std::fs::read_dir(home.join("packages")).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                prop_assert!(!name.starts_with(".tmp-"), "temp folder left: {}", name);
            }
        }
    }
}
