//! Checks of agent specs against the rules and the machine (a local package
//! must exist), reporting every problem at once, each naming its field.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::model::AgentSpec;

/// Every problem of a spec, fields prefixed with `prefix` (e.g. `agents[0].`):
/// its id, its package (the path must exist), hash, environment, limits and
/// restart settings.
pub fn validate_spec(spec: &AgentSpec, prefix: &str, errors: &mut ValidationErrors) {
    let f = |name: &str| format!("{prefix}{name}");
    if let Err(msg) = crate::model::AgentId::new(&spec.id) {
        errors.push(f("agent_id"), msg);
    }
    if spec.package.trim().is_empty() {
        errors.push(
            f("package_path"),
            "is required (a folder, an .apkg file, https:// or s3://)",
        );
    } else if spec.is_remote() {
        if let Err(msg) = validate_url(&spec.package) {
            errors.push(f("package_path"), msg);
        }
    } else {
        let p = Path::new(&spec.package);
        if !p.exists() {
            errors.push(
                f("package_path"),
                format!("{} does not exist", spec.package),
            );
        } else if p.is_file() && p.extension().and_then(|e| e.to_str()) != Some("apkg") {
            errors.push(
                f("package_path"),
                format!("{} is neither a folder nor an .apkg file", spec.package),
            );
        }
    }
    if let Some(sha) = &spec.sha256 {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            errors.push(f("sha256"), "must be 64 hexadecimal characters");
        }
    }
    for (k, v) in &spec.env_vars {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            errors.push(f(&format!("env_vars.{k}")), "is not a valid variable name");
        } else if par_contract::env::RESERVED.contains(&k.as_str()) {
            errors.push(
                f(&format!("env_vars.{k}")),
                "is set by the supervisor and cannot be overridden",
            );
        }
        if v.contains('\0') {
            errors.push(f(&format!("env_vars.{k}")), "contains a NUL byte");
        }
    }
    if let Some(m) = spec.memory_limit_mb {
        if !(16..=1_048_576).contains(&m) {
            errors.push(f("memory_limit_mb"), "must be between 16 and 1048576");
        }
    }
    if let Some(d) = spec.disk_limit_mb {
        if !(1..=16_777_216).contains(&d) {
            errors.push(f("disk_limit_mb"), "must be between 1 and 16777216");
        }
    }
    if let Some(c) = spec.cpu_limit {
        if !c.is_finite() || c <= 0.0 || c > 1024.0 {
            errors.push(
                f("cpu_limit"),
                "must be a number of CPUs above 0 (e.g. 0.5)",
            );
        }
    }
    let secs = |v: f64| v.is_finite() && (0.0..=86_400.0).contains(&v);
    if !secs(spec.restart_delay_seconds) {
        errors.push(f("restart_delay_seconds"), "must be between 0 and 86400");
    }
    if !spec.backoff_multiplier.is_finite() || !(1.0..=100.0).contains(&spec.backoff_multiplier) {
        errors.push(f("backoff_multiplier"), "must be between 1 and 100");
    }
    if !secs(spec.max_restart_delay_seconds) {
        errors.push(
            f("max_restart_delay_seconds"),
            "must be between 0 and 86400",
        );
    } else if spec.max_restart_delay_seconds < spec.restart_delay_seconds {
        errors.push(
            f("max_restart_delay_seconds"),
            "must not be below restart_delay_seconds",
        );
    }
    if !secs(spec.stable_period_seconds) {
        errors.push(f("stable_period_seconds"), "must be between 0 and 86400");
    }
    validate_scaling(spec, &f, errors);
}

/// Replicas, autoscale, concurrency, queue and idle settings.
fn validate_scaling(spec: &AgentSpec, f: &dyn Fn(&str) -> String, errors: &mut ValidationErrors) {
    const MAX_REPLICAS: u32 = 64;
    if !(1..=MAX_REPLICAS).contains(&spec.replicas) {
        errors.push(
            f("replicas"),
            format!("must be between 1 and {MAX_REPLICAS}"),
        );
    }
    match (
        spec.min_replicas,
        spec.max_replicas,
        spec.target_concurrency,
    ) {
        (_, None, Some(_)) | (Some(_), None, _) => errors.push(
            f("max_replicas"),
            "is required to autoscale (with min_replicas and target_concurrency)",
        ),
        (min, Some(max), target) => {
            if !(1..=MAX_REPLICAS).contains(&max) {
                errors.push(
                    f("max_replicas"),
                    format!("must be between 1 and {MAX_REPLICAS}"),
                );
            }
            if min.is_some_and(|m| m > max) {
                errors.push(f("min_replicas"), "must not be above max_replicas");
            }
            if target.is_none() {
                errors.push(f("target_concurrency"), "is required to autoscale");
            }
            if spec.replicas != 1 {
                errors.push(
                    f("replicas"),
                    "is chosen by the autoscaler when max_replicas is set; leave it out",
                );
            }
        }
        (None, None, None) => {}
    }
    if let Some(t) = spec.target_concurrency {
        if !t.is_finite() || t <= 0.0 || t > 100_000.0 {
            errors.push(f("target_concurrency"), "must be a number above 0");
        }
    }
    if spec.max_concurrency == Some(0) {
        errors.push(
            f("max_concurrency"),
            "must be at least 1 (leave it out for no limit)",
        );
    }
    if spec.max_queue > 1_000_000 {
        errors.push(f("max_queue"), "must be at most 1000000");
    }
    if spec.queue_timeout.is_zero() || spec.queue_timeout > std::time::Duration::from_secs(3600) {
        errors.push(f("queue_timeout"), "must be above 0 and at most 1h");
    }
    if spec
        .idle_timeout
        .is_some_and(|d| d < std::time::Duration::from_millis(100))
    {
        errors.push(f("idle_timeout"), "must be at least 100ms");
    }
    if spec.scale_down_window < std::time::Duration::from_millis(100) {
        errors.push(f("scale_down_window"), "must be at least 100ms");
    }
    let day = std::time::Duration::from_secs(24 * 3600);
    for (name, d) in [
        ("session_idle_timeout", spec.session_idle_timeout),
        ("session_max_lifetime", spec.session_max_lifetime),
        ("session_drain_timeout", spec.session_drain_timeout),
    ] {
        if d < std::time::Duration::from_millis(100) || d > day {
            errors.push(f(name), "must be at least 100ms and at most 24h");
        }
    }
    if spec.max_sessions == 0 || spec.max_sessions > 1_000_000 {
        errors.push(f("max_sessions"), "must be at least 1 and at most 1000000");
    }
}

/// Checks a remote location: `s3://bucket/key`, `https://host/...`, or
/// `http://` to a loopback host only (plain HTTP elsewhere is refused).
pub fn validate_url(url: &str) -> Result<(), String> {
    if url.starts_with("s3://") {
        return par_fetch::Source::parse(url)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| "must start with https://, http:// (loopback only) or s3://".to_string())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if url.starts_with("http://") {
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err("http:// is accepted for loopback hosts only; use https://".into());
        }
    }
    par_fetch::Source::parse(url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One problem, naming the field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every problem found at once.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_every_field() {
        let mut a = AgentSpec::new("a/b", "/does/not/exist");
        a.cpu_limit = Some(-1.0);
        a.backoff_multiplier = 0.5;
        a.env_vars.insert("PAR_PORT".into(), "1".into());
        let mut e = ValidationErrors::default();
        validate_spec(&a, "", &mut e);
        let fields: Vec<_> = e.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "agent_id",
                "package_path",
                "env_vars.PAR_PORT",
                "cpu_limit",
                "backoff_multiplier"
            ]
        );
    }

    #[test]
    fn an_id_beginning_with_par_is_refused_naming_the_rule() {
        let mut e = ValidationErrors::default();
        validate_spec(
            &AgentSpec::new("par-a", "s3://b/k.apkg"),
            "agents[0].",
            &mut e,
        );
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].field, "agents[0].agent_id");
        let m = &e.0[0].message;
        assert!(
            m.contains("\"par-a\"") && m.contains("may not begin with \"par-\""),
            "{m}"
        );
    }

    #[test]
    fn remote_locations() {
        for ok in [
            "https://example.com/a.apkg",
            "s3://bucket/dir/a.apkg",
            "http://127.0.0.1:9000/a.apkg",
            "http://localhost/a.apkg",
            "http://[::1]:8/a",
        ] {
            assert!(validate_url(ok).is_ok(), "{ok}");
        }
        for (bad, needle) in [
            ("http://example.com/a.apkg", "loopback"),
            ("s3://bucket-only", "s3://bucket/key"),
            ("https:///a", "no host"),
            ("ftp://x/a", "must start with"),
        ] {
            let e = validate_url(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let mut e = ValidationErrors::default();
        validate_spec(&AgentSpec::new("a", "http://10.0.0.1/a.apkg"), "", &mut e);
        assert_eq!(e.0[0].field, "package_path");
    }
}
