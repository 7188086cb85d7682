//! Real environments: a real install of a tiny package from PyPI with uv and with
//! venv + pip, the cache hit, a requirement that does not exist, concurrent builds.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use par_package::{load, LoadOptions, LoadedPackage};
use par_pyenv::{collect_requirements, ensure_env, on_path, EnvError, EnvOptions, Installer};

/// A source-folder package with `agent.yaml` and extra files, loaded into `home`.
fn package(home: &Path, src: &Path, manifest: &str, files: &[(&str, &str)]) -> LoadedPackage {
    fs::create_dir_all(src).unwrap();
    fs::write(src.join("agent.yaml"), manifest).unwrap();
    for (name, content) in files {
        fs::write(src.join(name), content).unwrap();
    }
    load(src, &LoadOptions::default().with_home(home)).unwrap()
}

fn python_says(python: &Path, code: &str) -> String {
    let out = Command::new(python).args(["-c", code]).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn no_requirements_means_no_environment() {
    let w = tempfile::tempdir().unwrap();
    let pkg = package(
        w.path(),
        &w.path().join("src"),
        "name: plain\nentrypoint: m:f\n",
        &[],
    );
    let t = Instant::now();
    let env = ensure_env(
        &pkg,
        &EnvOptions::default().with_home(w.path()),
        &mut |_| {},
    )
    .unwrap();
    println!("no-requirements ensure_env: {:?}", t.elapsed());
    assert!(env.env_dir.is_none() && env.requirements_hash.is_none());
    assert_eq!(python_says(&env.python, "print(6*7)"), "42");
    assert!(!w.path().join("envs").exists());
}

#[test]
fn a_runtime_that_is_not_python_is_refused() {
    let w = tempfile::tempdir().unwrap();
    let pkg = package(
        w.path(),
        &w.path().join("src"),
        "name: js\nentrypoint: m:f\nruntime: node20\n",
        &[],
    );
    let err = ensure_env(
        &pkg,
        &EnvOptions::default().with_home(w.path()),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, EnvError::UnsupportedRuntime(_)));
    assert!(err.to_string().contains("node20"), "{err}");
}

#[test]
fn a_missing_runtime_interpreter_falls_back_with_a_warning() {
    let missing = ["python3.9", "python3.10", "python3.12", "python3.13"]
        .into_iter()
        .find(|p| par_pyenv::probe(p).is_none());
    let Some(missing) = missing else {
        println!("every python3.x runtime is installed here; fallback not exercised");
        return;
    };
    let w = tempfile::tempdir().unwrap();
    let manifest = format!("name: old\nentrypoint: m:f\nruntime: {missing}\n");
    let pkg = package(w.path(), &w.path().join("src"), &manifest, &[]);
    let env = ensure_env(
        &pkg,
        &EnvOptions::default().with_home(w.path()),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(env.warnings.len(), 1, "{:?}", env.warnings);
    assert!(env.warnings[0].contains(missing) && env.warnings[0].contains("python3"));
    python_says(&env.python, "pass");
}

#[test]
fn the_runtime_interpreter_is_used_when_present() {
    let w = tempfile::tempdir().unwrap();
    let pkg = package(
        w.path(),
        &w.path().join("src"),
        "name: p\nentrypoint: m:f\nruntime: python3.11\n",
        &[],
    );
    let env = ensure_env(
        &pkg,
        &EnvOptions::default().with_home(w.path()),
        &mut |_| {},
    )
    .unwrap();
    if par_pyenv::probe("python3.11").is_some() {
        assert!(env.warnings.is_empty());
        assert_eq!(
            python_says(
                &env.python,
                "import sys; print('%d.%d' % sys.version_info[:2])"
            ),
            "3.11"
        );
    }
}

fn install_six(installer: Installer) {
    let w = tempfile::tempdir().unwrap();
    let pkg = package(
        w.path(),
        &w.path().join("src"),
        "name: sixer\nentrypoint: m:f\n",
        &[("requirements.txt", "# tiny and pure Python\nsix==1.16.0\n")],
    );
    let opts = EnvOptions::default()
        .with_home(w.path())
        .with_installer(installer);
    let mut lines = Vec::new();
    let t = Instant::now();
    let env = ensure_env(&pkg, &opts, &mut |l| lines.push(l.to_string())).unwrap();
    let cold = t.elapsed();
    let dir = env.env_dir.clone().unwrap();
    assert!(dir.starts_with(w.path().join("envs")));
    assert_eq!(env.python, dir.join("bin/python"));
    assert_eq!(
        python_says(&env.python, "import six; print(six.__version__)"),
        "1.16.0"
    );
    assert!(lines.iter().any(|l| l.contains("install")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("six")), "{lines:#?}");

    let mut again = Vec::new();
    let t = Instant::now();
    let hit = ensure_env(&pkg, &opts, &mut |l| again.push(l.to_string())).unwrap();
    let warm = t.elapsed();
    assert_eq!(hit.env_dir, env.env_dir);
    assert_eq!(hit.requirements_hash, env.requirements_hash);
    assert!(again.is_empty(), "cache hit must not reinstall: {again:#?}");
    println!("{installer:?}: cold build {cold:?}, cache hit {warm:?}");
}

#[test]
fn installs_a_real_package_with_the_default_installer() {
    install_six(Installer::Auto);
}

#[test]
fn installs_a_real_package_with_venv_and_pip() {
    install_six(Installer::Pip);
}

#[test]
fn installs_a_real_package_with_uv_when_present() {
    if on_path("uv").is_none() {
        println!("uv not on PATH; uv path not exercised");
        return;
    }
    install_six(Installer::Uv);
}

#[test]
fn a_requirement_that_does_not_exist_is_a_clear_error_and_leaves_nothing() {
    let w = tempfile::tempdir().unwrap();
    let name = "par-no-such-package-7f3a9c1e";
    let manifest = format!("name: broken\nentrypoint: m:f\ndependencies:\n  - {name}==1.0\n");
    let pkg = package(w.path(), &w.path().join("src"), &manifest, &[]);
    let err = ensure_env(
        &pkg,
        &EnvOptions::default().with_home(w.path()),
        &mut |_| {},
    )
    .unwrap_err();
    let text = err.to_string();
    println!("{text}");
    assert!(matches!(err, EnvError::Install { .. }), "{text}");
    assert!(
        text.contains(name),
        "the installer's output must be in the error: {text}"
    );
    let left: Vec<_> = fs::read_dir(w.path().join("envs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "half environment left: {left:?}");
}

#[test]
fn two_builds_of_one_environment_at_once_share_it() {
    let w = tempfile::tempdir().unwrap();
    let pkg = package(
        w.path(),
        &w.path().join("src"),
        "name: twins\nentrypoint: m:f\ndependencies: ['six>=1.15']\n",
        &[],
    );
    let opts = EnvOptions::default().with_home(w.path());
    let envs = std::thread::scope(|s| {
        let a = s.spawn(|| ensure_env(&pkg, &opts, &mut |_| {}));
        let b = s.spawn(|| ensure_env(&pkg, &opts, &mut |_| {}));
        [a.join().unwrap().unwrap(), b.join().unwrap().unwrap()]
    });
    assert_eq!(envs[0].env_dir, envs[1].env_dir);
    python_says(&envs[0].python, "import six");
    let dirs: Vec<_> = fs::read_dir(w.path().join("envs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
}

#[test]
fn requirements_come_from_the_first_source_and_rest_brings_fastapi() {
    let w = tempfile::tempdir().unwrap();
    let rest = "name: r\nrest:\n  entry: src.api:mount\ndependencies: ['ignored>=1']\n";

    let pkg = package(
        w.path(),
        &w.path().join("a"),
        rest,
        &[("requirements.txt", "six\n")],
    );
    let r = collect_requirements(&pkg).unwrap();
    assert_eq!(r.source, "requirements.txt");
    assert_eq!(r.normalized, ["fastapi", "six"]);

    let pyproject = "[project]\nname = \"x\"\ndependencies = [\"six>=1\", \"FastAPI>=0.100\"]\n";
    let pkg = package(
        w.path(),
        &w.path().join("b"),
        rest,
        &[("pyproject.toml", pyproject)],
    );
    let r = collect_requirements(&pkg).unwrap();
    assert_eq!(r.source, "pyproject.toml");
    assert_eq!(r.normalized, ["FastAPI>=0.100", "six>=1"]);

    let pkg = package(w.path(), &w.path().join("c"), rest, &[]);
    let r = collect_requirements(&pkg).unwrap();
    assert_eq!(r.source, "agent.yaml dependencies");
    assert_eq!(r.normalized, ["fastapi", "ignored>=1"]);

    let pkg = package(
        w.path(),
        &w.path().join("d"),
        "name: d\nentrypoint: m:f\n",
        &[("pyproject.toml", "[project\n")],
    );
    let err = collect_requirements(&pkg).unwrap_err();
    assert!(err.to_string().contains("pyproject.toml"), "{err}");

    // Same requirements in another order and spelling: same environment.
    let p1 = package(
        w.path(),
        &w.path().join("e"),
        "name: e\nentrypoint: m:f\n",
        &[("requirements.txt", "b\n\na  # c\n")],
    );
    let p2 = package(
        w.path(),
        &w.path().join("f"),
        "name: f\nentrypoint: m:f\n",
        &[("requirements.txt", "a\nb\n")],
    );
    let (h1, h2) = (
        collect_requirements(&p1).unwrap().hash("3.11", &p1.sha256),
        collect_requirements(&p2).unwrap().hash("3.11", &p2.sha256),
    );
    assert_eq!(h1, h2);
    // A requirement built from the package's own files: one environment
    // per package, whatever the lines say.
    let p3 = package(
        w.path(),
        &w.path().join("g"),
        "name: g\nentrypoint: m:f\n",
        &[("requirements.txt", "./lib\n"), ("x.py", "1")],
    );
    let p4 = package(
        w.path(),
        &w.path().join("h"),
        "name: h\nentrypoint: m:f\n",
        &[("requirements.txt", "./lib\n"), ("x.py", "2")],
    );
    assert_ne!(
        collect_requirements(&p3).unwrap().hash("3.11", &p3.sha256),
        collect_requirements(&p4).unwrap().hash("3.11", &p4.sha256),
    );
}
