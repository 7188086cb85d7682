use super::*;
use prost::Message as _;

mod reference;

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

/// A tracer whose queue (of `capacity`) nobody drains but the test.
fn detached(capacity: usize, sampler: Sampler) -> &'static Tracer {
    Box::leak(Box::new(Tracer {
        sampler,
        queue: export::Queue::detached(capacity),
        stats: Arc::default(),
    }))
}

#[test]
fn off_without_an_endpoint_or_when_disabled() {
    let none = |p: &[(&str, &str)]| Config::from_env(&vars(p), "x", false).unwrap().is_none();
    assert!(none(&[]));
    assert!(none(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]));
    assert!(none(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ("OTEL_SDK_DISABLED", "TRUE")
    ]));
    assert!(none(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ("OTEL_TRACES_EXPORTER", "none")
    ]));
    for bad in [
        vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")],
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_SAMPLER", "weird"),
        ],
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ],
    ] {
        assert!(
            Config::from_env(&vars(&bad), "x", false).is_err(),
            "{bad:?}"
        );
    }
    // No tracer in this test process: the check is a None.
    assert!(tracer().is_none());
    assert_eq!(counters(), Counters::default());
}

#[test]
fn endpoints_headers_service_and_resource_from_the_standard_variables() {
    let c = Config::from_env(
        &vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,x-team=par"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=c"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,service.name=from-attrs",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]),
        "par-supervisor",
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!(c.endpoint.to_string(), "http://127.0.0.1:4318/v1/traces");
    let h: Vec<(String, String)> = c
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        h,
        [
            ("x-team".into(), "par".into()),
            ("api-key".into(), "c".into())
        ]
    );
    assert_eq!(c.timeout, Duration::from_millis(2500));
    assert_eq!(
        c.sampler,
        Sampler {
            parent_based: true,
            ratio: 0.25
        }
    );
    assert_eq!(c.service_name, "from-attrs");
    let get = |k: &str| {
        c.resource
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("service.name"), Some("from-attrs".to_string().into()));
    assert_eq!(
        get("deployment.environment"),
        Some("prod".to_string().into())
    );
    assert_eq!(
        get("process.pid"),
        Some(i64::from(std::process::id()).into())
    );
    assert!(get("telemetry.sdk.name").is_some());

    // A worker: its agent id wins over the supervisor's service.name, not
    // over its own OTEL_SERVICE_NAME.
    let w = |extra: &[(&str, &str)]| {
        let mut p = vec![
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:4318/custom",
            ),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=par-supervisor"),
        ];
        p.extend_from_slice(extra);
        Config::from_env(&vars(&p), "echo", true).unwrap().unwrap()
    };
    assert_eq!(w(&[]).service_name, "echo");
    assert_eq!(w(&[]).endpoint.to_string(), "http://127.0.0.1:4318/custom");
    assert_eq!(w(&[("OTEL_SERVICE_NAME", "mine")]).service_name, "mine");
}

#[test]
fn samplers() {
    let parent = |sampled: bool| SpanContext {
        trace_id: TraceId::random(),
        span_id: SpanId::random(),
        flags: if sampled { SAMPLED } else { 0 },
        state: None,
    };
    let s = Sampler::from_vars(None, None).unwrap();
    assert!(s.should_sample(None, TraceId::random()));
    assert!(!s.should_sample(Some(&parent(false)), TraceId::random()));
    let s = Sampler::from_vars(Some("always_on"), None).unwrap();
    assert!(s.should_sample(Some(&parent(false)), TraceId::random()));
    let s = Sampler::from_vars(Some("always_off"), None).unwrap();
    assert!(!s.should_sample(Some(&parent(true)), TraceId::random()));
    let s = Sampler::from_vars(Some("traceidratio"), Some("0.3")).unwrap();
    let n = (0..20_000)
        .filter(|_| s.should_sample(None, TraceId::random()))
        .count();
    assert!((5_000..7_000).contains(&n), "{n} of 20000 at 0.3");
}

#[test]
fn spans_continue_the_parent_and_record_what_was_set() {
    let t = detached(16, Sampler::default());
    let mut h = http::HeaderMap::new();
    h.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    h.insert("tracestate", "rojo=1".parse().unwrap());
    h.insert(
        "x-amzn-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793".parse().unwrap(),
    );
    let mut s = t.server_span("POST /invoke", &h);
    assert!(s.is_recording());
    let tp = s.context().traceparent();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(tp.ends_with("-01"));
    assert_ne!(s.span_id(), "00f067aa0ba902b7");
    s.set("http.request.method", "POST");
    s.set("http.response.status_code", 200i64);
    s.set("http.response.status_code", 201i64);
    s.set("ok", true);
    s.set("ratio", 0.5);
    s.event("host.call", &[("bytes", 12i64.into())]);
    let child = s.child("host", Kind::Internal);
    let child_id = child.context().span_id;
    child.end();
    s.set_status(Status::Error("boom".into()));
    drop(s);
    let mut rx = t.queue.take().into_iter();
    let c = rx.next().unwrap();
    assert_eq!(c.parent, Some(parse_traceparent(&tp).unwrap().span_id));
    assert_eq!(c.context.span_id, child_id);
    let d = rx.next().unwrap();
    assert_eq!(d.parent.unwrap().to_hex(), "00f067aa0ba902b7");
    assert_eq!(d.context.state.as_deref(), Some("rojo=1"));
    assert_eq!(d.kind, Kind::Server);
    assert!(d.end >= d.start && d.start > 0);
    assert_eq!(d.attributes.len(), 4);
    assert_eq!(
        d.attributes[1],
        ("http.response.status_code", Value::Int(201))
    );
    assert_eq!(d.links.len(), 1);
    assert_eq!(
        d.links[0].0.trace_id.to_hex(),
        "5759e988bd862e3fe1be46a994272793"
    );

    // The protobuf the collector gets decodes to the same.
    let body = export::encode(&[], &[d]);
    let back = proto::ExportTraceServiceRequest::decode(&body[..]).unwrap();
    let sp = &back.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(hexs(&sp.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hexs(&sp.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(sp.kind, 2);
    assert_eq!(sp.trace_state, "rojo=1");
    assert_eq!(sp.events[0].name, "host.call");
    assert_eq!(sp.status.as_ref().unwrap().code, 2);
    assert_eq!(sp.links.len(), 1);
}

/// The encoder writes the bytes prost writes for `proto`'s messages, for
/// spans with every kind of field and value (and lengths of one, two and
/// three bytes).
#[test]
fn the_encoding_is_protos() {
    let t = detached(16, Sampler::default());
    let p = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let mut a = t.start("", Kind::Client, Some(&p));
    a.set("", "");
    a.set("neg", -5i64);
    a.set("zero", 0i64);
    a.set("f", 0.0);
    a.set("no", false);
    a.set("shared", Arc::<str>::from("x"));
    a.set("header", http::HeaderValue::from_static("p-1"));
    a.set("long", "y".repeat(300));
    a.event("", &[]);
    a.event("e", &[("k", "v".into()), ("n", 1i64.into())]);
    a.link(p.clone(), vec![]);
    a.set_status(Status::Ok);
    a.end();
    let mut b = t.start("big", Kind::Server, None);
    b.set("huge", "z".repeat(20_000));
    b.set_status(Status::Error("".into()));
    b.end();
    let mut c = t.start("c", Kind::Internal, None);
    c.set_status(Status::Error("why".into()));
    c.end();
    let mut d = t.start_parts(
        &["GET", " /agents/", "echo"],
        Kind::Server,
        Incoming::default(),
    );
    d.add_text("url.path", "/agents/echo/invoke");
    d.add_text("empty", "");
    d.event("admitted", &[("p", "x".into())]);
    d.add_text("par.agent_id", "echo");
    d.end();
    let spans = t.queue.take();
    let resource: Vec<(String, Value)> = vec![
        ("service.name".into(), "par".into()),
        ("n".into(), 3i64.into()),
    ];
    let ours = export::encode(&resource, &spans);
    let theirs = reference::request(&resource, &spans).encode_to_vec();
    assert_eq!(&ours[..], &theirs[..]);
    let ours = export::encode(&[], &spans[..1]);
    let theirs = reference::request(&[], &spans[..1]).encode_to_vec();
    assert_eq!(&ours[..], &theirs[..]);
}

/// A span built on an exported one's room carries nothing of it.
#[test]
fn a_reused_span_starts_empty() {
    let t = detached(16, Sampler::default());
    let mut p =
        parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    p.state = Some("rojo=1".into());
    let mut a = t.start_parts(
        &["a", "b"],
        Kind::Client,
        Incoming {
            parent: Some(p.clone()),
            link: None,
        },
    );
    a.add_text("k", "v");
    a.event("e", &[("n", 1i64.into())]);
    a.link(p.clone(), vec![("x", true.into())]);
    a.set_status(Status::Error("boom".into()));
    a.end();
    t.queue.give_back(t.queue.take());
    let mut b = t.start("b", Kind::Server, None);
    b.event("f", &[]);
    b.end();
    let b = t.queue.take().pop().unwrap();
    assert_eq!(b.name(), "b");
    assert!(b.text.is_empty() && b.name_at.is_none());
    assert_eq!(b.kind, Kind::Server);
    assert_eq!(b.parent, None);
    assert_eq!(b.context.state, None);
    assert!(b.attributes.is_empty() && b.links.is_empty() && b.event_attributes.is_empty());
    assert_eq!(b.events.len(), 1);
    assert_eq!(b.events[0].attributes, 0..0);
    assert_eq!(b.status, Status::Unset);
    assert!(b.end >= b.start && b.start > 0);
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

#[test]
fn unsampled_spans_pass_the_trace_on_and_record_nothing() {
    let t = detached(16, Sampler::default());
    let p = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
    let mut s = t.start("x", Kind::Server, Some(&p));
    s.set("a", 1i64);
    assert!(!s.is_recording());
    assert!(s
        .context()
        .traceparent()
        .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(s.context().traceparent().ends_with("-00"));
    drop(s);
    assert!(t.queue.take().is_empty());
}

#[test]
fn a_full_queue_drops_and_counts_and_never_waits() {
    let t = detached(QUEUE, Sampler::default());
    let started = std::time::Instant::now();
    for _ in 0..QUEUE + 500 {
        t.start("s", Kind::Internal, None).end();
    }
    let took = started.elapsed();
    assert_eq!(t.counters().dropped, 500);
    assert_eq!(t.queue.take().len(), QUEUE);
    println!("{} spans offered to a full queue in {took:?}", QUEUE + 500);
}

/// Prints what building and ending one span costs (a benchmark, not a check).
#[test]
fn cost_per_span() {
    let t = detached(1 << 20, Sampler::default());
    let n = 100_000;
    let h = http::HeaderMap::new();
    let started = std::time::Instant::now();
    for i in 0..n {
        let mut s = t.server_span("POST /invoke", &h);
        s.set("http.request.method", "POST");
        s.set("url.path", "/invoke");
        s.set("http.response.status_code", 200i64);
        s.set("par.agent_id", "echo");
        s.event("host.reply", &[("bytes", (i as i64).into())]);
        s.end();
        if i % 1024 == 0 {
            drop(t.queue.take());
        }
    }
    let per = started.elapsed().as_nanos() / n as u128;
    let started = std::time::Instant::now();
    let mut off = 0;
    for _ in 0..n {
        if let Some(t) = std::hint::black_box(tracer()) {
            off += t.counters().exported;
        }
    }
    let off_per = started.elapsed().as_nanos() as f64 / n as f64;
    println!("span with 4 attributes and 1 event, built and queued: {per} ns; tracing off (the check): {off_per:.2} ns ({off})");
}

/// Answers each HTTP/1.1 request on `listener` with `reply(path, body)`,
/// passing on (path, headers, body) of each.
fn serve(
    listener: std::net::TcpListener,
    reply: fn(&str) -> (u16, Vec<u8>),
    seen: std::sync::mpsc::Sender<(String, String, Vec<u8>)>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or("").to_string();
                    let mut head = String::new();
                    let mut len = 0;
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        if h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        head.push_str(&h);
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let (status, out) = reply(&path);
                    let _ = seen.send((path, head, body));
                    let _ = write!(
                        w,
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n",
                        out.len()
                    );
                    let _ = w.write_all(&out);
                }
            });
        }
    });
}

#[test]
fn the_exporter_posts_batches_with_the_ecs_tasks_identity() {
    let (tx, rx) = std::sync::mpsc::channel();
    let ecs = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ecs_port = ecs.local_addr().unwrap().port();
    serve(
        ecs,
        |_| {
            (
                200,
                br#"{"Cluster":"par","TaskARN":"arn:aws:ecs:eu-west-1:123456789012:task/par/abc123","Family":"par-task","Revision":"7","AvailabilityZone":"eu-west-1b","LaunchType":"FARGATE"}"#.to_vec(),
            )
        },
        tx.clone(),
    );
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = collector.local_addr().unwrap().port();
    serve(collector, |_| (200, Vec::new()), tx);
    let endpoint = format!("http://127.0.0.1:{port}");
    let ecs_uri = format!("http://127.0.0.1:{ecs_port}/v4/x");
    let cfg = Config::from_env(
        &vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t"),
            ("ECS_CONTAINER_METADATA_URI_V4", &ecs_uri),
        ]),
        "par-supervisor",
        false,
    )
    .unwrap()
    .unwrap();
    let t: &'static Tracer = Box::leak(Box::new(Tracer::new(cfg)));
    for i in 0..600 {
        let mut s = t.start("op", Kind::Internal, None);
        s.set("i", i as i64);
        s.end();
    }
    t.flush(Duration::from_secs(10));
    let mut posts = Vec::new();
    let mut got_task = false;
    while let Ok((path, head, body)) = rx.recv_timeout(Duration::from_millis(500)) {
        if path == "/v4/x/task" {
            got_task = true;
        } else {
            assert_eq!(path, "/v1/traces");
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: application/x-protobuf"),
                "{head}"
            );
            assert!(head.contains("Bearer t"), "{head}");
            posts.push(proto::ExportTraceServiceRequest::decode(&body[..]).unwrap());
        }
    }
    assert!(got_task);
    // 600 spans: a batch of at most 512, then the rest.
    let sizes: Vec<usize> = posts
        .iter()
        .map(|p| p.resource_spans[0].scope_spans[0].spans.len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 600, "{sizes:?}");
    assert!(sizes.iter().all(|n| *n <= BATCH), "{sizes:?}");
    let res = posts[0].resource_spans[0].resource.as_ref().unwrap();
    let attr = |k: &str| {
        res.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| match &a.value.as_ref()?.value {
                Some(proto::any_value::Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
    };
    assert_eq!(attr("service.name").as_deref(), Some("par-supervisor"));
    assert_eq!(attr("cloud.platform").as_deref(), Some("aws_ecs"));
    assert_eq!(attr("cloud.region").as_deref(), Some("eu-west-1"));
    assert_eq!(
        attr("cloud.availability_zone").as_deref(),
        Some("eu-west-1b")
    );
    assert_eq!(attr("aws.ecs.task.family").as_deref(), Some("par-task"));
    assert_eq!(attr("aws.ecs.task.revision").as_deref(), Some("7"));
    assert_eq!(attr("aws.ecs.launchtype").as_deref(), Some("fargate"));
    assert_eq!(
        attr("aws.ecs.cluster.arn").as_deref(),
        Some("arn:aws:ecs:eu-west-1:123456789012:cluster/par")
    );
    assert_eq!(
        t.counters(),
        Counters {
            exported: 600,
            dropped: 0,
            failed_exports: 0
        }
    );
}
