//! AgentService served through `axum::serve` on a real loopback socket, called by
//! the crate's own tonic client; a plain HTTP/1.1 route shares the port.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use par_a2a::{client, Backend, ACTION_METHOD_PREFIX, RPC_METHODS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

/// Handlers like an agent's `custom_handlers`: echo, add, fail.
struct TestBackend {
    healthy: AtomicBool,
    with_handlers: bool,
}

impl Backend for TestBackend {
    fn invoke(
        &self,
        action: String,
        parameters: HashMap<String, String>,
    ) -> BoxFuture<'static, Result<String, String>> {
        async move {
            match action.as_str() {
                "echo" => Ok(parameters.get("message").cloned().unwrap_or_default()),
                "add" => {
                    let num = |k: &str| -> Result<i64, String> {
                        parameters
                            .get(k)
                            .ok_or(format!("missing {k}"))?
                            .parse::<i64>()
                            .map_err(|e| format!("bad {k}: {e}"))
                    };
                    Ok((num("a")? + num("b")?).to_string())
                }
                "fail" => Err("requested failure".to_string()),
                other => panic!("service invoked an unlisted action {other}"),
            }
        }
        .boxed()
    }

    fn actions(&self) -> BoxFuture<'static, Result<Vec<String>, String>> {
        let actions = if self.with_handlers {
            vec!["echo".into(), "add".into(), "fail".into()]
        } else {
            Vec::new()
        };
        async move { Ok(actions) }.boxed()
    }

    fn health(&self) -> BoxFuture<'static, (bool, String)> {
        let ok = self.healthy.load(Ordering::SeqCst);
        async move {
            (
                ok,
                if ok {
                    "ready".into()
                } else {
                    "agent host down".into()
                },
            )
        }
        .boxed()
    }
}

struct Server {
    uri: String,
    addr: std::net::SocketAddr,
    backend: Arc<TestBackend>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(with_handlers: bool) -> Server {
    let backend = Arc::new(TestBackend {
        healthy: AtomicBool::new(true),
        with_handlers,
    });
    let metadata = HashMap::from([
        ("name".to_string(), "calc".to_string()),
        ("version".to_string(), "1.2.3".to_string()),
    ]);
    // Merged into a router with its own fallback, as the worker does.
    let app = axum::Router::new()
        .route("/plain", axum::routing::get(|| async { "plain http/1.1" }))
        .fallback(|| async { (http::StatusCode::NOT_FOUND, "worker fallback") })
        .merge(par_a2a::router(backend.clone(), metadata));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        uri: format!("http://{addr}"),
        addr,
        backend,
        task,
    }
}

fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

#[tokio::test]
async fn invoke_runs_handlers_and_reports_errors() {
    let s = start(true).await;

    let r = within(client::invoke(
        &s.uri,
        "echo",
        params(&[("message", "hi there")]),
        "id-1",
    ))
    .await
    .unwrap();
    assert!(r.success, "{r:?}");
    assert_eq!(r.result, "hi there");
    assert_eq!(r.error, "");
    assert_eq!(r.request_id, "id-1");
    assert!(r.duration_ms >= 0);

    let r = within(client::invoke(
        &s.uri,
        "add",
        params(&[("a", "40"), ("b", "2")]),
        "",
    ))
    .await
    .unwrap();
    assert!(r.success, "{r:?}");
    assert_eq!(r.result, "42");
    assert!(
        r.request_id.starts_with("req-"),
        "generated id: {}",
        r.request_id
    );

    let r = within(client::invoke(
        &s.uri,
        "add",
        params(&[("a", "x"), ("b", "2")]),
        "id-3",
    ))
    .await
    .unwrap();
    assert!(!r.success);
    assert!(r.error.contains("bad a"), "{}", r.error);

    let r = within(client::invoke(&s.uri, "fail", HashMap::new(), "id-4"))
        .await
        .unwrap();
    assert!(!r.success);
    assert_eq!(r.result, "");
    assert_eq!(r.error, "requested failure");
    assert_eq!(r.request_id, "id-4");

    let r = within(client::invoke(&s.uri, "nope", HashMap::new(), "id-5"))
        .await
        .unwrap();
    assert!(!r.success);
    assert!(
        r.error.contains("No handler found for action: nope"),
        "{}",
        r.error
    );
    assert!(r.error.contains("echo, add, fail"), "{}", r.error);
    assert_eq!(r.request_id, "id-5");

    let r = within(client::invoke(&s.uri, "", HashMap::new(), ""))
        .await
        .unwrap();
    assert!(!r.success);
    assert!(r.error.contains("missing action"), "{}", r.error);
}

#[tokio::test]
async fn health_ping_describe() {
    let s = start(true).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;

    let h = within(client::health(&s.uri)).await.unwrap();
    assert!(h.ok);
    assert_eq!(h.message, "ready");
    assert!(h.timestamp >= before, "unix ms timestamp: {}", h.timestamp);

    s.backend.healthy.store(false, Ordering::SeqCst);
    let h = within(client::health(&s.uri)).await.unwrap();
    assert!(!h.ok);
    assert_eq!(h.message, "agent host down");

    let p = within(client::ping(&s.uri)).await.unwrap();
    assert_eq!(p.message, "pong");
    assert!(p.timestamp >= before);

    let c = within(client::describe(&s.uri)).await.unwrap();
    let mut expected: Vec<String> = RPC_METHODS.iter().map(|m| m.to_string()).collect();
    for a in ["echo", "add", "fail"] {
        expected.push(format!("{ACTION_METHOD_PREFIX}{a}"));
    }
    assert_eq!(c.methods, expected);
    assert_eq!(c.metadata.get("name").map(String::as_str), Some("calc"));
    assert_eq!(c.metadata.get("version").map(String::as_str), Some("1.2.3"));
}

#[tokio::test]
async fn service_without_handlers_still_answers() {
    let s = start(false).await;
    assert!(within(client::health(&s.uri)).await.unwrap().ok);
    assert_eq!(within(client::ping(&s.uri)).await.unwrap().message, "pong");
    let c = within(client::describe(&s.uri)).await.unwrap();
    assert_eq!(c.methods, RPC_METHODS.map(String::from).to_vec());
    let r = within(client::invoke(&s.uri, "echo", HashMap::new(), ""))
        .await
        .unwrap();
    assert!(!r.success);
    assert!(r.error.contains("available actions: none"), "{}", r.error);
}

#[tokio::test]
async fn plain_http1_shares_the_port() {
    let s = start(true).await;
    let mut conn = within(tokio::net::TcpStream::connect(s.addr))
        .await
        .unwrap();
    within(conn.write_all(b"GET /plain HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
        .await
        .unwrap();
    let mut reply = String::new();
    within(conn.read_to_string(&mut reply)).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("plain http/1.1"), "{reply}");
    let mut conn = within(tokio::net::TcpStream::connect(s.addr))
        .await
        .unwrap();
    within(conn.write_all(b"GET /elsewhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
        .await
        .unwrap();
    let mut reply = String::new();
    within(conn.read_to_string(&mut reply)).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    assert!(reply.ends_with("worker fallback"), "{reply}");
    // gRPC still works on the same port afterwards.
    assert!(within(client::health(&s.uri)).await.unwrap().ok);
}

#[tokio::test]
async fn concurrent_invokes_over_one_connection() {
    let s = start(true).await;
    let c = within(client::connect(&s.uri)).await.unwrap();
    let calls = (0..50).map(|i| {
        let mut c = c.clone();
        async move {
            let req = par_a2a::proto::ActionRequest {
                action: "add".into(),
                parameters: params(&[("a", &i.to_string()), ("b", "1")]),
                request_id: format!("r{i}"),
            };
            let r = c.invoke(req).await.unwrap().into_inner();
            assert_eq!(r.result, (i + 1).to_string());
            assert_eq!(r.request_id, format!("r{i}"));
        }
    });
    within(futures_util::future::join_all(calls)).await;
}

#[tokio::test]
async fn unreachable_service_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = within(client::health(&uri)).await.unwrap_err();
    assert!(
        matches!(err, client::ClientError::Connect { .. }),
        "{err:?}"
    );
    let err = within(client::health("not a uri")).await.unwrap_err();
    assert!(
        matches!(err, client::ClientError::InvalidUri { .. }),
        "{err:?}"
    );
}
