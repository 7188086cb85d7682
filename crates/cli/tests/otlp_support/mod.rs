//! The tests' OTLP/HTTP trace receiver (receiver.py beside this file): a
//! Python process that decodes each export with the reference protobuf
//! classes (`opentelemetry-proto`) and appends every span as a JSON line.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The receiver: a Python process appending each span as a JSON line.
pub struct Receiver {
    child: Child,
    pub port: u16,
    out: PathBuf,
}

impl Receiver {
    pub fn start(dir: &Path) -> Receiver {
        let out = dir.join("spans.jsonl");
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/otlp_support/receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OTLP receiver (python3 with opentelemetry-proto: dev/requirements-test.txt)");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("receiver port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!(
                "the receiver printed {line:?}, not its port (is opentelemetry-proto installed?)"
            )
        });
        Receiver { child, port, out }
    }

    pub fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("span line"))
            .collect()
    }

    /// Waits until a span named `name` in trace `trace_id` arrived.
    pub fn wait_span(&self, trace_id: &str, name: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self
                .spans()
                .into_iter()
                .find(|s| s["trace_id"] == trace_id && s["name"] == name)
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no span {name:?} in trace {trace_id} within 20 s; got: {:#?}",
                self.spans()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `span`'s parents (spans of the agent's own, FastAPI's
    /// among them, may stand between) lead to the span `ancestor`.
    pub fn assert_descends(&self, span: &Value, ancestor: &Value) {
        let trace = span["trace_id"].as_str().unwrap();
        let want = ancestor["span_id"].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            let mut chain = vec![span["name"].to_string()];
            let mut parent = span["parent_span_id"].as_str().unwrap().to_string();
            let mut reached = false;
            while !parent.is_empty() {
                if parent == want {
                    reached = true;
                    break;
                }
                let Some(p) = spans
                    .iter()
                    .find(|s| s["trace_id"] == trace && s["span_id"] == parent.as_str())
                else {
                    break;
                };
                chain.push(p["name"].to_string());
                parent = p["parent_span_id"].as_str().unwrap().to_string();
            }
            if reached {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} does not descend from {}: chain {chain:?}; spans: {spans:#?}",
                span["name"],
                ancestor["name"]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An A2A gRPC `Invoke` ("echo") on `port` with `traceparent` in its
/// metadata (and `x-agent-id` when going through the supervisor).
pub fn grpc_echo(
    port: u16,
    traceparent: &str,
    agent: Option<&str>,
) -> par_a2a::proto::ActionResult {
    let uri = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = par_a2a::client::connect(&uri).await.expect("connect");
        let mut req = tonic::Request::new(par_a2a::proto::ActionRequest {
            action: "echo".into(),
            parameters: std::collections::HashMap::from([("text".to_string(), "hi".to_string())]),
            request_id: "r1".into(),
        });
        req.metadata_mut()
            .insert("traceparent", traceparent.parse().unwrap());
        if let Some(a) = agent {
            req.metadata_mut().insert("x-agent-id", a.parse().unwrap());
        }
        client.invoke(req).await.expect("invoke").into_inner()
    })
}
