//! Every environment variable the binaries read is described in README.md.
//!
//! The names come from the source itself, not from a list kept by hand:
//! `std::env::var` / `var_os` and `EnvFilter::try_from_env` with a literal or
//! a `const` (resolved, in any crate: `par_contract::env::LISTEN_FD`, the
//! package limits' `ENV_MAX_ENTRIES`; a helper reading a variable it is
//! given counts every name-like `const` of its file), clap's `env = "..."`,
//! `os.environ` / `os.getenv` in the embedded Python, and every variable of
//! the worker contract (`par_contract::env`, set by the supervisor for its
//! workers). Unit-test modules (`#[cfg(test)]` onwards) and `tests/` folders
//! are not the binaries' and are left out. What the supervisor only passes on
//! to workers by name (the allow-list in `runtime/isolation/environment.rs`)
//! is not a setting it reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `crates/*/src/**` files ending in `ext`, with their text (Rust files cut
/// at their first `#[cfg(test)]`).
fn sources(ext: &str) -> Vec<(String, String)> {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "tests") {
                    walk(&p, ext, out);
                }
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    let root = repo();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        let src = krate.path().join("src");
        if src.is_dir() {
            walk(&src, ext, &mut files);
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let mut text = std::fs::read_to_string(&p).unwrap();
            if let Some(i) = text.find("#[cfg(test)]") {
                text.truncate(i);
            }
            let name = p.strip_prefix(&root).unwrap().display().to_string();
            (name, text)
        })
        .collect()
}

fn is_env_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// What follows each `marker` in `text`: a string literal, else a path.
enum Arg {
    Literal(String),
    Path(String),
}

fn args_after(text: &str, marker: &str) -> Vec<Arg> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices(marker) {
        let rest = text[i + marker.len()..].trim_start();
        if let Some(lit) = rest.strip_prefix('"').or_else(|| rest.strip_prefix('\'')) {
            let end = lit.find(['"', '\'']).unwrap_or(0);
            out.push(Arg::Literal(lit[..end].to_string()));
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            out.push(Arg::Path(rest[..end].to_string()));
        }
    }
    out
}

/// `const NAME: &str = "VALUE";` of a file, VALUE a variable's name.
fn consts(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        let Some(i) = line.find("const ") else {
            continue;
        };
        let rest = &line[i + 6..];
        let Some((name, rest)) = rest.split_once(':') else {
            continue;
        };
        let Some((ty, value)) = rest.split_once('=') else {
            continue;
        };
        if !ty.contains("str") || ty.contains('[') {
            continue;
        }
        let value = value.trim().trim_end_matches(';').trim_matches('"');
        if is_env_name(value) {
            out.push((name.trim().to_string(), value.to_string()));
        }
    }
    out
}

/// Every variable read, with the first file that reads it.
fn read_variables() -> BTreeMap<String, String> {
    let rust = sources("rs");
    let all_consts: BTreeMap<String, String> = rust.iter().flat_map(|(_, t)| consts(t)).collect();
    let mut found = BTreeMap::new();
    let mut unresolved = Vec::new();
    for (file, text) in &rust {
        let mut add = |name: String| {
            found.entry(name).or_insert_with(|| file.clone());
        };
        let reads = ["env::var(", "env::var_os(", "try_from_env("];
        for arg in reads.iter().flat_map(|m| args_after(text, m)) {
            match arg {
                Arg::Literal(name) => add(name),
                Arg::Path(path) => {
                    let last = path.rsplit("::").next().unwrap_or_default();
                    if let Some(name) = all_consts.get(last) {
                        add(name.clone());
                    } else if last.starts_with(|c: char| c.is_ascii_lowercase()) {
                        // A helper reading the variable it is handed: the
                        // names it is handed are this file's constants.
                        consts(text).into_iter().for_each(|(_, v)| add(v));
                    } else {
                        unresolved.push(format!("{file}: {path}"));
                    }
                }
            }
        }
        for arg in args_after(text, "env = ") {
            if let Arg::Literal(name) = arg {
                add(name);
            }
        }
        if file.ends_with("crates/contract/src/lib.rs") {
            consts(text).into_iter().for_each(|(_, v)| add(v));
        }
    }
    for (file, text) in sources("py") {
        let reads = [
            "os.environ.get(",
            "os.environ[",
            "os.getenv(",
            "environ.get(",
        ];
        for arg in reads.iter().flat_map(|m| args_after(&text, m)) {
            match arg {
                Arg::Literal(name) => {
                    found.entry(name).or_insert_with(|| file.clone());
                }
                Arg::Path(path) => unresolved.push(format!("{file}: {path}")),
            }
        }
    }
    assert!(
        unresolved.is_empty(),
        "variables read through a name this test cannot resolve (name the \
         variable in a const, or teach the test): {unresolved:?}"
    );
    found
}

/// Whether `name` is in `text` as a name of its own (not a part of a longer one).
fn mentions(text: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

#[test]
fn every_environment_variable_the_binaries_read_is_in_the_readme() {
    let found = read_variables();
    // The scan sees each kind of read (else it would pass on nothing).
    for (name, how) in [
        ("SUPERVISOR_PORT", "clap env"),
        ("PAR_PACKAGE_MAX_ENTRIES", "a helper given a const"),
        ("PAR_PROXY_THREADS", "env::var with a literal"),
        ("PAR_LOG", "EnvFilter::try_from_env"),
        ("PAR_LISTEN_FD", "the worker contract"),
        ("PAR_PACKAGE_ROOTS", "clap env"),
    ] {
        assert!(
            found.contains_key(name),
            "the scan missed {name} ({how}): {found:?}"
        );
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let missing: BTreeSet<String> = found
        .iter()
        .filter(|(name, _)| !mentions(&readme, name))
        .map(|(name, file)| format!("{name} (in {file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "environment variables the binaries read that README.md does not \
         describe:\n  {}",
        missing.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

#[test]
fn the_scan_resolves_constants_and_literals() {
    let text = "const ENV_A: &str = \"PAR_A\";\nfn f() { std::env::var(\"PAR_B\"); \
                std::env::var_os(ENV_A); read(x); }\n#[arg(long, env = \"PAR_C\")]";
    let c = consts(text);
    assert_eq!(c, vec![("ENV_A".to_string(), "PAR_A".to_string())]);
    let lits: Vec<String> = args_after(text, "env::var(")
        .into_iter()
        .chain(args_after(text, "env = "))
        .map(|a| match a {
            Arg::Literal(s) => s,
            Arg::Path(p) => format!("path {p}"),
        })
        .collect();
    assert_eq!(lits, vec!["PAR_B", "PAR_C"]);
    assert!(matches!(&args_after(text, "env::var_os(")[..], [Arg::Path(p)] if p == "ENV_A"));
    assert!(mentions("`PAR_HOST` and", "PAR_HOST"));
    assert!(!mentions("`PAR_HOST_THREADS`", "PAR_HOST"));
}
