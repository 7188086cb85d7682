//! Test helpers shared by the par-fetch integration tests: a tiny loopback
//! HTTP(S) server with scripted replies, fixtures and error-chain formatting.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A real APKG built by pixell-kit (see fixtures/README.md).
#[track_caller]
pub fn fixture_apkg() -> PathBuf {
    par_fixtures::apkg("pk-handler-env-0.2.0.apkg")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The error and all its causes, joined by ": ".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Every file name in a folder (empty if the folder does not exist).
pub fn files_in(dir: &std::path::Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Each path's script and how many requests it has answered.
type Routes = Arc<Mutex<HashMap<String, (usize, Vec<Reply>)>>>;

/// One scripted answer.
#[derive(Clone)]
pub enum Reply {
    /// 200 with a Content-Length.
    Body(Arc<Vec<u8>>),
    /// 200 without Content-Length: the body ends when the connection closes.
    BodyNoLength(Arc<Vec<u8>>),
    /// An empty answer with this status.
    Status(u16),
}

/// A loopback HTTP/1.1 server (optionally TLS) answering each path with a
/// script of replies (the last one repeats) and logging every request line.
pub struct TestServer {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start(
        routes: Vec<(&str, Vec<Reply>)>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let routes: Routes = Arc::new(Mutex::new(
            routes
                .into_iter()
                .map(|(p, r)| (p.to_string(), (0, r)))
                .collect(),
        ));
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (log, routes, acceptor) = (task_log.clone(), routes.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve(stream, log, routes).await;
                            }
                        }
                        None => serve(tcp, log, routes).await,
                    }
                });
            }
        });
        Self { addr, log, task }
    }

    /// Request lines seen so far, e.g. `GET /pkg.apkg?x=1`.
    pub fn requests(&self) -> Vec<String> {
        self.heads()
            .iter()
            .map(|h| {
                let mut p = h.lines().next().unwrap_or_default().split(' ');
                format!(
                    "{} {}",
                    p.next().unwrap_or_default(),
                    p.next().unwrap_or_default()
                )
            })
            .collect()
    }

    /// Full request heads (request line and headers) seen so far.
    pub fn heads(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|l| {
                l.split(' ')
                    .nth(1)
                    .is_some_and(|p| p.split('?').next() == Some(path))
            })
            .count()
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    log: Arc<Mutex<Vec<String>>>,
    routes: Routes,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Some(())
    };
    if tokio::time::timeout(Duration::from_secs(10), read_head)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        return;
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default().to_string();
    let target = line.split(' ').nth(1).unwrap_or_default().to_string();
    log.lock().unwrap().push(text.to_string());
    let path = target.split('?').next().unwrap_or_default().to_string();
    let reply = {
        let mut routes = routes.lock().unwrap();
        routes.get_mut(&path).map(|(n, script)| {
            let r = script[(*n).min(script.len() - 1)].clone();
            *n += 1;
            r
        })
    };
    let reply = reply.unwrap_or(Reply::Status(404));
    let _ = match reply {
        Reply::Body(body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            write_all(&mut stream, head.as_bytes(), &body).await
        }
        Reply::BodyNoLength(body) => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n";
            write_all(&mut stream, head.as_bytes(), &body).await
        }
        Reply::Status(code) => {
            let head = format!(
                "HTTP/1.1 {code} Scripted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            write_all(&mut stream, head.as_bytes(), &[]).await
        }
    };
}

async fn write_all<S: AsyncWrite + Unpin>(
    s: &mut S,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<()> {
    s.write_all(head).await?;
    s.write_all(body).await?;
    s.flush().await?;
    s.shutdown().await
}

/// A test CA and a server certificate for `localhost` and `127.0.0.1`
/// signed by it. Returns the server config and the CA certificate in PEM.
pub fn tls_config() -> (Arc<rustls::ServerConfig>, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "par-fetch test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    (Arc::new(config), ca_cert.pem())
}
