//! What of the supervisor's own environment a worker (and so its agent host
//! and the agent's code) starts with: an allow-list, nothing else. Secrets the
//! supervisor was started with (database URLs, cloud keys, the admin token)
//! stay with the supervisor; the task role's credentials reach an agent only
//! when its spec says `task_role = true`.
//!
//! What the allow-list does not stop: an agent can still open connections,
//! the ECS metadata endpoint (169.254.170.2) among them; without the
//! credentials' URI and token it cannot ask it for the role's credentials,
//! but anything reachable by network alone stays reachable.

use std::ffi::OsString;

/// Passed on as they are: where programs are, the locale, the time zone, and
/// (replaced by the agent's own folders under per-agent uids) home and temp.
const BASE: &[&str] = &["PATH", "LANG", "LANGUAGE", "TZ", "HOME", "TMPDIR"];
const BASE_PREFIXES: &[&str] = &["LC_"];

/// The worker's own settings, given to every worker alike through the
/// supervisor's environment.
const WORKER_SETTINGS: &[&str] = &[
    "PAR_LOG",
    "PAR_PACKAGE_MAX_ENTRIES",
    "PAR_PACKAGE_MAX_BYTES",
    "PAR_PACKAGE_MAX_RATIO",
    "PAR_PACKAGE_KEEP_UNUSED",
    "PAR_INVOKE_TIMEOUT",
    "PAR_SHUTDOWN_GRACE",
    "PAR_HOST_THREADS",
    "PAR_LIVENESS_INTERVAL",
    "PAR_LIVENESS_TIMEOUT",
    "PAR_LIVENESS_FAILURES",
];

/// Traces: where to export them and how (the standard OpenTelemetry
/// variables), so that workers and the agents' own OpenTelemetry SDKs
/// export where the supervisor does. Not `OTEL_SERVICE_NAME`: each worker
/// and its agent are named after the agent (the worker sets it for the
/// agent unless the spec's `env_vars` or the package do).
const TRACES: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_TRACES_EXPORTER",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_PROPAGATORS",
    "OTEL_SDK_DISABLED",
];

/// What building a Python environment needs (the index, TLS trust, the
/// proxy): passed only to a worker that builds its own environment, i.e.
/// when agents share the supervisor's uid (under per-agent uids the
/// installer builds it and the worker is given the interpreter).
const INSTALL: &[&str] = &[
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
];
const INSTALL_PREFIXES: &[&str] = &["UV_", "PIP_"];

/// The ECS task role's credentials and where to ask for them: only for an
/// agent whose spec has `task_role = true`.
pub const TASK_ROLE: &[&str] = &[
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "ECS_CONTAINER_METADATA_URI",
    "ECS_CONTAINER_METADATA_URI_V4",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
];

/// Which variables of the supervisor's environment a worker may start with.
#[derive(Debug, Clone, Copy)]
pub struct Inherit {
    /// The agent's spec asks for the task role (`task_role = true`).
    pub task_role: bool,
    /// The worker builds its own Python environment (shared uid).
    pub installs: bool,
}

impl Inherit {
    /// Whether `name` of the supervisor's environment is passed on.
    pub fn passes(self, name: &str) -> bool {
        let listed = |names: &[&str], prefixes: &[&str]| {
            names.contains(&name) || prefixes.iter().any(|p| name.starts_with(p))
        };
        listed(BASE, BASE_PREFIXES)
            || WORKER_SETTINGS.contains(&name)
            || TRACES.contains(&name)
            || (self.installs && listed(INSTALL, INSTALL_PREFIXES))
            || (self.task_role && TASK_ROLE.contains(&name))
    }

    /// The variables of `vars` (the supervisor's environment) passed on;
    /// names that are not UTF-8 are no one's setting and are dropped.
    pub fn filter(
        self,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Vec<(OsString, OsString)> {
        vars.into_iter()
            .filter(|(k, _)| k.to_str().is_some_and(|k| self.passes(k)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_settings_reach_every_worker_but_not_the_supervisors_name() {
        let plain = Inherit {
            task_role: false,
            installs: false,
        };
        let vars = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG",
            "OTEL_RESOURCE_ATTRIBUTES",
            "OTEL_SERVICE_NAME",
            "OTEL_SOMETHING_ELSE",
        ];
        assert_eq!(
            names(plain, &vars),
            [
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_HEADERS",
                "OTEL_TRACES_SAMPLER",
                "OTEL_TRACES_SAMPLER_ARG",
                "OTEL_RESOURCE_ATTRIBUTES"
            ]
        );
    }

    fn names(i: Inherit, vars: &[&str]) -> Vec<String> {
        let vars = vars
            .iter()
            .map(|k| (OsString::from(k), OsString::from("v")));
        i.filter(vars)
            .into_iter()
            .map(|(k, _)| k.into_string().unwrap())
            .collect()
    }

    const SUPERVISOR: &[&str] = &[
        "PATH",
        "LANG",
        "LC_ALL",
        "TZ",
        "HOME",
        "TMPDIR",
        "PAR_LOG",
        "PAR_ADMIN_TOKEN",
        "PAR_AGENTS",
        "PAR_REGISTRY_URL",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SESSION_TOKEN",
        "DATABASE_URL",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "ECS_CONTAINER_METADATA_URI_V4",
        "AWS_REGION",
        "PYTHONPATH",
        "PYTHONHOME",
        "UV_INDEX_URL",
        "PIP_INDEX_URL",
        "SSL_CERT_FILE",
        "LD_PRELOAD",
        "OTEL_SERVICE_NAME",
    ];

    #[test]
    fn only_the_allow_list_passes() {
        let plain = Inherit {
            task_role: false,
            installs: false,
        };
        assert_eq!(
            names(plain, SUPERVISOR),
            ["PATH", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR", "PAR_LOG"]
        );
    }

    #[test]
    fn the_task_role_adds_its_own_variables_and_nothing_else() {
        let role = Inherit {
            task_role: true,
            installs: false,
        };
        let got = names(role, SUPERVISOR);
        let added: Vec<_> = got.iter().skip(7).map(String::as_str).collect();
        assert_eq!(
            added,
            [
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                "ECS_CONTAINER_METADATA_URI_V4",
                "AWS_REGION"
            ]
        );
        assert!(!got.iter().any(|k| k == "AWS_SECRET_ACCESS_KEY"));
    }

    #[test]
    fn a_worker_that_installs_gets_the_installers_settings() {
        let shared = Inherit {
            task_role: false,
            installs: true,
        };
        let got = names(shared, SUPERVISOR);
        for k in ["UV_INDEX_URL", "PIP_INDEX_URL", "SSL_CERT_FILE"] {
            assert!(got.iter().any(|g| g == k), "{k}: {got:?}");
        }
        for k in [
            "DATABASE_URL",
            "PYTHONPATH",
            "LD_PRELOAD",
            "PAR_ADMIN_TOKEN",
        ] {
            assert!(!got.iter().any(|g| g == k), "{k}: {got:?}");
        }
    }
}
