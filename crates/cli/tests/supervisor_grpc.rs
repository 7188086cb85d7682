//! End-to-end: A2A gRPC calls entering through the SUPERVISOR's port, routed
//! to the agent's real worker by the `x-agent-id` metadata; a missing or
//! unknown agent is a clean gRPC status, never a hang.

mod supervisor_support;

use std::collections::HashMap;
use std::time::Duration;

use par_a2a::proto::agent_service_client::AgentServiceClient;
use par_a2a::proto::{ActionRequest, Empty};
use supervisor_support::*;
use tonic::transport::Channel;

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

/// Every call is bounded: a hang fails the test instead of stalling it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn write_a2a_agent(dir: &std::path::Path, name: &str) -> String {
    let files = [
        (
            "agent.yaml".to_string(),
            format!("name: {name}\nversion: '1.0'\na2a:\n  entry: src.a2a.server:serve\nmetadata:\n  version: 0.3.0\n"),
        ),
        ("src/__init__.py".to_string(), String::new()),
        ("src/a2a/__init__.py".to_string(), String::new()),
        ("src/a2a/server.py".to_string(), SERVER.to_string()),
    ];
    for (rel, content) in &files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    dir.to_string_lossy().into_owned()
}

async fn client(port: u16) -> AgentServiceClient<Channel> {
    par_a2a::client::connect_with_timeout(&format!("http://127.0.0.1:{port}"), CALL_TIMEOUT)
        .await
        .expect("connect to the supervisor port")
}

fn with_agent<T>(msg: T, agent: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(CALL_TIMEOUT);
    if let Some(a) = agent {
        req.metadata_mut()
            .insert("x-agent-id", a.parse().expect("metadata value"));
    }
    req
}

fn params(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn grpc_calls_reach_the_agent_named_by_x_agent_id() {
    let sup = Supervisor::start_with("grpc", "", "", &[]);
    let pkg_a = sup.dir.path().join("agent-a");
    let pkg_b = sup.dir.path().join("agent-b");
    let a = write_a2a_agent(&pkg_a, "a2a-one");
    let b = write_a2a_agent(&pkg_b, "a2a-two");
    for (id, pkg) in [("one", &a), ("two", &b)] {
        let body = serde_json::json!({"agent_id": id, "package_path": pkg}).to_string();
        let r = http(
            sup.port,
            "POST",
            "/supervisor/spawn",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .unwrap();
        assert!(
            r.status == 201 || r.status == 202,
            "{} {}",
            r.status,
            r.text()
        );
    }
    sup.wait_ready("one", Duration::from_secs(120));
    sup.wait_ready("two", Duration::from_secs(120));

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut c = client(sup.port).await;

        // Invoke: sync and async handlers, a handler failure, through one connection.
        let r = c
            .invoke(with_agent(
                ActionRequest {
                    action: "echo".into(),
                    parameters: params(&[("text", "through the supervisor")]),
                    request_id: "r1".into(),
                },
                Some("one"),
            ))
            .await
            .expect("echo via supervisor")
            .into_inner();
        assert!(r.success, "{r:?}");
        assert_eq!(r.result, "through the supervisor");
        assert_eq!(r.request_id, "r1");

        let r = c
            .invoke(with_agent(
                ActionRequest {
                    action: "add".into(),
                    parameters: params(&[("a", "2"), ("b", "40")]),
                    request_id: "r2".into(),
                },
                Some("two"),
            ))
            .await
            .expect("add via supervisor")
            .into_inner();
        assert!(r.success, "{r:?}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&r.result).unwrap(),
            serde_json::json!({"sum": 42})
        );

        let r = c
            .invoke(with_agent(
                ActionRequest {
                    action: "fail".into(),
                    parameters: params(&[]),
                    request_id: "r3".into(),
                },
                Some("one"),
            ))
            .await
            .expect("fail via supervisor")
            .into_inner();
        assert!(!r.success);
        assert!(r.error.contains("bad input"), "{r:?}");

        // Health and Ping, on the same connection, each agent by its metadata.
        for agent in ["one", "two"] {
            let h = c
                .health(with_agent(Empty {}, Some(agent)))
                .await
                .unwrap_or_else(|e| panic!("health of {agent}: {e}"))
                .into_inner();
            assert!(h.ok, "{agent}: {h:?}");
            c.ping(with_agent(Empty {}, Some(agent)))
                .await
                .unwrap_or_else(|e| panic!("ping of {agent}: {e}"));
        }

        // DescribeCapabilities proves which agent answered: the names differ.
        for (agent, name) in [("one", "a2a-one"), ("two", "a2a-two")] {
            let caps = c
                .describe_capabilities(with_agent(Empty {}, Some(agent)))
                .await
                .expect("describe via supervisor")
                .into_inner();
            assert_eq!(
                caps.metadata.get("name").map(String::as_str),
                Some(name),
                "{caps:?}"
            );
        }

        // Concurrent calls multiplexed on the one HTTP/2 connection.
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..32 {
            let mut c = c.clone();
            calls.spawn(async move {
                let agent = if i % 2 == 0 { "one" } else { "two" };
                let text = format!("call-{i}");
                let r = c
                    .invoke(with_agent(
                        ActionRequest {
                            action: "echo".into(),
                            parameters: params(&[("text", &text)]),
                            request_id: String::new(),
                        },
                        Some(agent),
                    ))
                    .await
                    .expect("concurrent echo")
                    .into_inner();
                assert!(r.success, "{r:?}");
                assert_eq!(r.result, text);
            });
        }
        while let Some(done) = calls.join_next().await {
            done.expect("concurrent call");
        }

        // No x-agent-id: INVALID_ARGUMENT naming the metadata, at once.
        let e = c
            .health(with_agent(Empty {}, None))
            .await
            .expect_err("no x-agent-id must fail");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("x-agent-id"), "{e:?}");

        // Unknown agent: NOT_FOUND naming it.
        let e = c
            .invoke(with_agent(
                ActionRequest {
                    action: "echo".into(),
                    parameters: params(&[]),
                    request_id: "r9".into(),
                },
                Some("nobody"),
            ))
            .await
            .expect_err("unknown agent must fail");
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        assert!(e.message().contains("nobody"), "{e:?}");

        // The connection is still good after the errors.
        c.ping(with_agent(Empty {}, Some("one")))
            .await
            .expect("ping after errors");
    });

    // A stopped agent: UNAVAILABLE, not a hang or a transport error.
    let r = http(sup.port, "POST", "/supervisor/stop/par-two", &[], b"").unwrap();
    assert!(r.status < 300, "{} {}", r.status, r.text());
    wait_until(Duration::from_secs(30), "two stopped", || {
        sup.process("two").filter(|p| p["state"] == "stopped")
    });
    rt.block_on(async {
        let mut c = client(sup.port).await;
        let e = c
            .ping(with_agent(Empty {}, Some("two")))
            .await
            .expect_err("stopped agent must fail");
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(e.message().contains("two"), "{e:?}");
    });
}
