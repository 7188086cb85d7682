//! The tracer's settings, read from the standard `OTEL_*` variables.

use std::time::Duration;

use super::{SpanContext, TraceId, Value};

/// Which spans are recorded and exported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// A span with a parent follows the parent's `sampled` flag.
    pub parent_based: bool,
    /// Otherwise (a root span), the share sampled: 0.0 to 1.0 by trace id.
    pub ratio: f64,
}

impl Default for Sampler {
    fn default() -> Sampler {
        Sampler {
            parent_based: true,
            ratio: 1.0,
        }
    }
}

impl Sampler {
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    pub fn from_vars(name: Option<&str>, arg: Option<&str>) -> Result<Sampler, String> {
        let ratio = || -> Result<f64, String> {
            match arg.map(str::trim) {
                None | Some("") => Ok(1.0),
                Some(a) => a
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        format!("OTEL_TRACES_SAMPLER_ARG={a} is not a ratio between 0 and 1")
                    }),
            }
        };
        let (parent_based, ratio) = match name.map(|n| n.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("parentbased_always_on") => (true, 1.0),
            Some("always_on") => (false, 1.0),
            Some("always_off") => (false, 0.0),
            Some("parentbased_always_off") => (true, 0.0),
            Some("traceidratio") => (false, ratio()?),
            Some("parentbased_traceidratio") => (true, ratio()?),
            Some(other) => return Err(format!("OTEL_TRACES_SAMPLER={other} is not supported")),
        };
        Ok(Sampler {
            parent_based,
            ratio,
        })
    }

    /// Whether a span with this parent (or none) in this trace is sampled.
    pub fn should_sample(&self, parent: Option<&SpanContext>, trace_id: TraceId) -> bool {
        if let (true, Some(p)) = (self.parent_based, parent) {
            return p.sampled();
        }
        if self.ratio >= 1.0 {
            return true;
        }
        if self.ratio <= 0.0 {
            return false;
        }
        // The trace id's low 8 bytes are random: sampled when below the share.
        let low = u64::from_be_bytes(trace_id.0[8..].try_into().expect("8 bytes"));
        (low as f64) < self.ratio * (u64::MAX as f64)
    }
}

/// Everything the tracer and its exporter need.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where spans are POSTed (`.../v1/traces`), an `http://` URL.
    pub endpoint: http::Uri,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Longest one export request may take.
    pub timeout: Duration,
    pub sampler: Sampler,
    pub service_name: String,
    /// The resource's attributes (service, process, host, SDK, and
    /// `OTEL_RESOURCE_ATTRIBUTES`); the ECS task's are added by the exporter.
    pub resource: Vec<(String, Value)>,
    /// `ECS_CONTAINER_METADATA_URI_V4`, read once by the exporter.
    pub ecs_metadata_uri: Option<String>,
}

fn truthy(v: Option<String>) -> bool {
    v.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// `%XX` escapes decoded (the W3C baggage octets the OTEL lists use).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(h) = h {
                out.push(h);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key=value,key2=value2` (values percent-encoded), as the OTEL variables
/// for headers and resource attributes spell them; malformed members skipped.
pub fn key_values(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|m| {
            let (k, v) = m.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (percent_decode(k), percent_decode(v.trim())))
        })
        .collect()
}

impl Config {
    /// The settings from variables (`vars` reads one); `Ok(None)`: tracing
    /// off (no endpoint, `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`).
    pub fn from_env(
        vars: &dyn Fn(&str) -> Option<String>,
        default_service: &str,
        default_wins_over_resource: bool,
    ) -> Result<Option<Config>, String> {
        if truthy(vars("OTEL_SDK_DISABLED")) {
            return Ok(None);
        }
        match vars("OTEL_TRACES_EXPORTER").map(|e| e.trim().to_ascii_lowercase()) {
            Some(e) if e == "none" => return Ok(None),
            None => {}
            Some(e) if e.is_empty() || e == "otlp" => {}
            Some(e) => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER={e} is not supported (otlp, none)"
                ))
            }
        }
        let nonempty = |k: &str| vars(k).filter(|v| !v.trim().is_empty());
        let endpoint = match (
            nonempty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            nonempty("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(e), _) => e.trim().to_string(),
            (None, Some(e)) => format!("{}/v1/traces", e.trim().trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        let protocol = nonempty("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| nonempty("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(p) = protocol.filter(|p| p.trim() != "http/protobuf") {
            return Err(format!(
                "OTLP protocol {p} is not supported: PAR exports http/protobuf"
            ));
        }
        let endpoint: http::Uri = endpoint
            .parse()
            .map_err(|e| format!("the OTLP endpoint {endpoint} is not a URL: {e}"))?;
        if endpoint.scheme_str() != Some("http") || endpoint.host().is_none() {
            return Err(format!(
                "the OTLP endpoint {endpoint} is not an http:// URL (PAR sends to a collector on loopback or in the VPC, e.g. the ADOT sidecar at http://127.0.0.1:4318)"
            ));
        }
        let mut headers = Vec::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            for (k, v) in key_values(&vars(var).unwrap_or_default()) {
                match (
                    http::HeaderName::from_bytes(k.trim().as_bytes()),
                    http::HeaderValue::from_str(&v),
                ) {
                    (Ok(k), Ok(v)) => {
                        headers.retain(|(h, _): &(http::HeaderName, _)| *h != k);
                        headers.push((k, v));
                    }
                    _ => tracing::warn!("{var}: header {k} skipped (not a valid header)"),
                }
            }
        }
        let timeout_ms = nonempty("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| nonempty("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .map(|t| {
                t.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("OTLP timeout {t} is not milliseconds"))
            })
            .transpose()?
            .unwrap_or(10_000);
        let sampler = Sampler::from_vars(
            vars("OTEL_TRACES_SAMPLER").as_deref(),
            vars("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )?;
        let from_resource = key_values(&vars("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default());
        let resource_name = from_resource
            .iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v.clone());
        let service_name = match (nonempty("OTEL_SERVICE_NAME"), resource_name) {
            (Some(n), _) => n.trim().to_string(),
            (None, Some(n)) if !default_wins_over_resource => n,
            _ => default_service.to_string(),
        };
        let mut resource: Vec<(String, Value)> = vec![
            ("service.name".into(), service_name.clone().into()),
            ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
            ("process.pid".into(), i64::from(std::process::id()).into()),
            ("telemetry.sdk.name".into(), "par".into()),
            ("telemetry.sdk.language".into(), "rust".into()),
            (
                "telemetry.sdk.version".into(),
                env!("CARGO_PKG_VERSION").into(),
            ),
        ];
        if let Some(h) = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
        {
            resource.push(("host.name".into(), h.into()));
        }
        for (k, v) in from_resource {
            if k == "service.name" {
                continue;
            }
            resource.retain(|(r, _)| *r != k);
            resource.push((k, v.into()));
        }
        Ok(Some(Config {
            endpoint,
            headers,
            timeout: Duration::from_millis(timeout_ms),
            sampler,
            service_name,
            resource,
            ecs_metadata_uri: nonempty("ECS_CONTAINER_METADATA_URI_V4"),
        }))
    }
}

/// The resource attributes of an ECS task, from its metadata (`${URI}/task`).
pub fn ecs_attributes(task: &serde_json::Value) -> Vec<(String, Value)> {
    let s = |k: &str| task.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let mut out: Vec<(String, Value)> = vec![
        ("cloud.provider".into(), "aws".into()),
        ("cloud.platform".into(), "aws_ecs".into()),
    ];
    let cluster = s("Cluster");
    let task_arn = s("TaskARN");
    // arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID
    let arn_parts: Vec<&str> = task_arn.as_deref().unwrap_or("").split(':').collect();
    if let Some(t) = &task_arn {
        out.push(("aws.ecs.task.arn".into(), t.clone().into()));
        if arn_parts.len() >= 6 {
            out.push(("cloud.region".into(), arn_parts[3].to_string().into()));
            out.push(("cloud.account.id".into(), arn_parts[4].to_string().into()));
            if let Some(id) = arn_parts[5].rsplit('/').next() {
                out.push(("aws.ecs.task.id".into(), id.to_string().into()));
            }
        }
    }
    if let Some(c) = cluster {
        // The cluster is given as an ARN or a bare name.
        let arn = if c.starts_with("arn:") || arn_parts.len() < 6 {
            c
        } else {
            format!(
                "arn:{}:ecs:{}:{}:cluster/{c}",
                arn_parts[1], arn_parts[3], arn_parts[4]
            )
        };
        out.push(("aws.ecs.cluster.arn".into(), arn.into()));
    }
    if let Some(f) = s("Family") {
        out.push(("aws.ecs.task.family".into(), f.into()));
    }
    if let Some(r) = s("Revision") {
        out.push(("aws.ecs.task.revision".into(), r.into()));
    }
    if let Some(z) = s("AvailabilityZone") {
        out.push(("cloud.availability_zone".into(), z.into()));
    }
    if let Some(l) = s("LaunchType") {
        out.push(("aws.ecs.launchtype".into(), l.to_ascii_lowercase().into()));
    }
    out
}
