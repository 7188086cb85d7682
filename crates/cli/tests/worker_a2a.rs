//! End-to-end: A2A gRPC on the worker's port, dispatched to the agent's
//! `custom_handlers` (sync and async) through the agent host.

mod worker_support;

use std::collections::HashMap;
use std::time::Duration;

use worker_support::*;

const SERVER: &str = r#"
import asyncio


class Service:
    def __init__(self):
        self.custom_handlers = {"echo": self.echo, "add": add, "fail": fail}

    async def echo(self, parameters):
        await asyncio.sleep(0)
        return parameters.get("text", "")


def add(parameters):
    return {"sum": int(parameters["a"]) + int(parameters["b"])}


async def fail(parameters):
    raise ValueError("bad input")


def serve():
    return Service()
"#;

#[test]
fn custom_handlers_results_errors_and_capabilities() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = write_agent(
        dir.path(),
        &[
            ("agent.yaml", "name: a2a-agent\nversion: '1.0'\na2a:\n  entry: src.a2a.server:serve\nmetadata:\n  version: 0.3.0\n"),
            ("src/__init__.py", ""),
            ("src/a2a/__init__.py", ""),
            ("src/a2a/server.py", SERVER),
        ],
    );
    let mut w = Worker::start(&pkg, "a2a-agent", &[]);
    let health = w.wait_ready(Duration::from_secs(60));
    assert_eq!(
        health["surfaces"],
        serde_json::json!({"a2a":{"status":"ready"}})
    );
    let uri = format!("http://127.0.0.1:{}", w.port);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let params = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let r = par_a2a::client::invoke(&uri, "echo", params(&[("text", "hi")]), "r1")
            .await
            .expect("echo");
        assert!(r.success, "{r:?}");
        assert_eq!(r.result, "hi");
        let r = par_a2a::client::invoke(&uri, "add", params(&[("a", "2"), ("b", "40")]), "r2")
            .await
            .expect("add");
        assert!(r.success, "{r:?}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&r.result).unwrap(),
            serde_json::json!({"sum": 42})
        );
        let r = par_a2a::client::invoke(&uri, "fail", params(&[]), "r3")
            .await
            .expect("fail");
        assert!(!r.success);
        assert!(r.error.contains("bad input"), "{r:?}");
        let r = par_a2a::client::invoke(&uri, "nope", params(&[]), "r4")
            .await
            .expect("unknown");
        assert!(!r.success);
        let caps = par_a2a::client::describe(&uri).await.expect("describe");
        for action in ["echo", "add", "fail"] {
            assert!(caps.methods.iter().any(|m| m.ends_with(action)), "{caps:?}");
        }
        assert_eq!(
            caps.metadata.get("name").map(String::as_str),
            Some("a2a-agent")
        );
        let h = par_a2a::client::health(&uri).await.expect("health");
        assert!(h.ok);
    });
    assert_eq!(w.get("/a2a/health").expect("a2a health").status, 200);
    // No entrypoint: /invoke names that.
    assert_eq!(
        w.post("/invoke", "{}").json()["error"]["code"],
        "no_entrypoint"
    );
}
