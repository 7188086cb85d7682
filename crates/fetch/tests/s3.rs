//! S3 sources against a real local S3 server (moto_server) behind a counting
//! TCP proxy: download, cache hit with no traffic, sha mismatch, size limit,
//! missing key, and credentials from the container credentials endpoint.

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use par_fetch::{fetch, FetchError, FetchOptions, S3Credentials, Source};
use support::{chain, files_in, fixture_apkg, sha256_hex, Reply, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const INSTALL_HINT: &str = "moto_server (a local S3 server) is required by the par-fetch S3 tests \
but was not found on PATH. Install it with: python3 -m venv target/pytools && \
target/pytools/bin/pip install -r crates/fetch/tests/requirements.txt, then put target/pytools/bin \
on PATH (dev/test does both)";

/// A moto_server child on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    addr: SocketAddr,
    _logs: tempfile::TempDir,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Moto {
    fn start() -> Self {
        let exe = find_on_path("moto_server").unwrap_or_else(|| panic!("{INSTALL_HINT}"));
        let logs = tempfile::tempdir().unwrap();
        let mut last_log = String::new();
        // The port is picked free then handed over; if another process takes
        // it in between, moto exits and we try another one.
        for attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log_path = logs.path().join(format!("moto-{attempt}.log"));
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new(&exe)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("failed to start {}: {e}", exe.display()));
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Self {
                        child,
                        addr,
                        _logs: logs,
                    };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log.clear();
            let _ =
                std::fs::File::open(&log_path).and_then(|mut f| f.read_to_string(&mut last_log));
        }
        panic!("moto_server did not start listening within 60 s; its output:\n{last_log}");
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A TCP proxy to moto that keeps every byte clients send, so a test can see
/// exactly which requests reached the server.
struct CountingProxy {
    addr: SocketAddr,
    sent: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                                    if sw.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Self { addr, sent, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap()).into_owned()
    }

    /// How many `GET <path>` requests went through.
    fn gets(&self, path: &str) -> usize {
        self.text().matches(&format!("GET {path} ")).count()
    }
}

fn test_credentials() -> S3Credentials {
    S3Credentials {
        access_key_id: "AKIAPARTEST".into(),
        secret_access_key: "par-test-secret-do-not-print".into(),
        session_token: None,
    }
}

/// Creates a bucket (moto accepts unsigned requests) and returns a store for it.
async fn bucket(moto: &Moto, name: &str) -> AmazonS3 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let status = reqwest::Client::new()
        .put(format!("{}/{name}", moto.url()))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "create bucket {name}: HTTP {status}");
    AmazonS3Builder::new()
        .with_endpoint(moto.url())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(name)
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap()
}

fn opts(home: &Path, endpoint: String) -> FetchOptions {
    let mut opts = FetchOptions::new(home);
    opts.s3_endpoint = Some(endpoint);
    opts.s3_region = Some("us-east-1".into());
    opts.s3_credentials = Some(test_credentials());
    opts.backoff_initial = Duration::from_millis(20);
    opts.backoff_max = Duration::from_millis(100);
    opts.timeout = Duration::from_secs(30);
    opts
}

#[tokio::test]
async fn s3_download_is_verified_cached_and_mismatch_refused() {
    let moto = Moto::start();
    let store = bucket(&moto, "packages").await;
    let apkg = std::fs::read(fixture_apkg()).unwrap();
    let sha = sha256_hex(&apkg);
    let key = "agents/pk-handler-env-0.2.0.apkg";
    store
        .put(&ObjectPath::from(key), apkg.clone().into())
        .await
        .unwrap();
    let proxy = CountingProxy::start(moto.addr).await;
    let home = tempfile::tempdir().unwrap();
    let source = Source::parse(&format!("s3://packages/{key}")).unwrap();
    let get_path = format!("/packages/{key}");

    let t = Instant::now();
    let first = fetch(&source, &opts(home.path(), proxy.url()).with_sha256(&sha))
        .await
        .unwrap();
    let download_time = t.elapsed();
    assert!(first.downloaded);
    assert_eq!(first.sha256, sha);
    assert_eq!(first.bytes, apkg.len() as u64);
    assert_eq!(
        first.path,
        home.path().join(format!("downloads/{sha}.apkg"))
    );
    assert_eq!(std::fs::read(&first.path).unwrap(), apkg);
    assert_eq!(proxy.gets(&get_path), 1, "{}", proxy.text());
    let proxy_bytes = proxy.text().len();

    let t = Instant::now();
    let second = fetch(&source, &opts(home.path(), proxy.url()).with_sha256(&sha))
        .await
        .unwrap();
    let hit_time = t.elapsed();
    assert!(!second.downloaded, "same hash again must be a cache hit");
    assert_eq!(second.path, first.path);
    assert_eq!(proxy.gets(&get_path), 1, "no second GET");
    assert_eq!(
        proxy.text().len(),
        proxy_bytes,
        "nothing at all was sent on a cache hit"
    );
    println!(
        "figures: s3 (moto, loopback) download of {} bytes: {:?}; cache hit: {:?}",
        apkg.len(),
        download_time,
        hit_time
    );

    // Wrong hash: refused, nothing cached, the secret never shown.
    let wrong = "f".repeat(64);
    let other_home = tempfile::tempdir().unwrap();
    let err = fetch(
        &source,
        &opts(other_home.path(), proxy.url()).with_sha256(&wrong),
    )
    .await
    .unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, FetchError::ShaMismatch { .. }), "{text}");
    assert!(
        text.contains(&format!("s3://packages/{key}")) && text.contains(&sha),
        "{text}"
    );
    assert!(
        files_in(&other_home.path().join("downloads")).is_empty(),
        "{:?}",
        files_in(&other_home.path().join("downloads"))
    );
    assert_eq!(proxy.gets(&get_path), 2);
}

#[tokio::test]
async fn s3_oversize_and_missing_objects_are_refused_clearly() {
    let moto = Moto::start();
    let store = bucket(&moto, "big").await;
    store
        .put(
            &ObjectPath::from("huge.apkg"),
            vec![1u8; 2 * 1024 * 1024 + 1].into(),
        )
        .await
        .unwrap();
    let proxy = CountingProxy::start(moto.addr).await;
    let home = tempfile::tempdir().unwrap();
    let mut o = opts(home.path(), proxy.url());
    o.max_size_bytes = 2 * 1024 * 1024;

    let err = fetch(&Source::parse("s3://big/huge.apkg").unwrap(), &o)
        .await
        .unwrap_err();
    let text = chain(&err);
    assert!(
        matches!(err, FetchError::TooLarge { limit_mb: 2, size: Some(s), .. } if s == 2 * 1024 * 1024 + 1),
        "{text}"
    );
    assert!(
        text.contains("MAX_PACKAGE_SIZE_MB") && text.contains("s3://big/huge.apkg"),
        "{text}"
    );
    assert_eq!(proxy.gets("/big/huge.apkg"), 1, "too large is not retried");

    let err = fetch(&Source::parse("s3://big/missing.apkg").unwrap(), &o)
        .await
        .unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, FetchError::NotFound { .. }), "{text}");
    assert!(text.contains("s3://big/missing.apkg"), "{text}");
    assert_eq!(proxy.gets("/big/missing.apkg"), 1, "404 is not retried");

    assert!(files_in(&home.path().join("downloads")).is_empty());
    let shown = format!("{} {err:?} {o:?}", chain(&err));
    assert!(!shown.contains("par-test-secret-do-not-print"), "{shown}");
}

const CHILD_TEST: &str = "child_fetch_with_standard_aws_environment";

/// The standard AWS chain as used in ECS: only environment variables, the
/// credentials served by a container credentials endpoint (here a loopback
/// server with the `AWS_CONTAINER_CREDENTIALS_FULL_URI` + token file form,
/// since the task-role form points at the fixed ECS link-local address).
/// Runs the fetch in a child process so this process's environment stays untouched.
#[tokio::test]
async fn s3_credentials_come_from_the_container_credentials_endpoint() {
    let moto = Moto::start();
    let store = bucket(&moto, "ecs").await;
    let apkg = std::fs::read(fixture_apkg()).unwrap();
    let sha = sha256_hex(&apkg);
    store
        .put(&ObjectPath::from("a.apkg"), apkg.clone().into())
        .await
        .unwrap();
    let proxy = CountingProxy::start(moto.addr).await;
    let creds = serde_json_like_credentials("ASIAPARCHILD", "child-secret", "child-session-token");
    let creds_server = TestServer::start(
        vec![("/creds", vec![Reply::Body(Arc::new(creds.into_bytes()))])],
        None,
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("token");
    std::fs::write(&token_file, "par-test-container-token").unwrap();

    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        CHILD_TEST,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        format!("http://{}/creds", creds_server.addr),
    )
    .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file)
    .env("AWS_ENDPOINT_URL_S3", proxy.url())
    .env("AWS_REGION", "us-east-1")
    .env("MAX_PACKAGE_SIZE_MB", "5")
    .env("PAR_FETCH_CHILD_SOURCE", "s3://ecs/a.apkg")
    .env("PAR_FETCH_CHILD_HOME", home.path())
    .env("PAR_FETCH_CHILD_SHA", &sha)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::from(cmd).output(),
    )
    .await
    .expect("child fetch timed out")
    .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "child failed:\n{out}");
    assert!(out.contains("1 passed"), "child test did not run:\n{out}");

    let heads = creds_server.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("authorization: par-test-container-token"),
        "{heads:?}"
    );
    let sent = proxy.text();
    assert!(
        sent.contains("Credential=ASIAPARCHILD/"),
        "request not signed with the served credentials:\n{sent}"
    );
    assert!(
        sent.to_ascii_lowercase()
            .contains("x-amz-security-token: child-session-token"),
        "{sent}"
    );
    assert_eq!(proxy.gets("/ecs/a.apkg"), 1);
    assert_eq!(
        std::fs::read(home.path().join(format!("downloads/{sha}.apkg"))).unwrap(),
        apkg
    );
}

fn serde_json_like_credentials(key: &str, secret: &str, token: &str) -> String {
    format!(
        r#"{{"AccessKeyId":"{key}","SecretAccessKey":"{secret}","Token":"{token}","Expiration":"2099-01-01T00:00:00Z","RoleArn":"arn:aws:iam::000000000000:role/par-test"}}"#
    )
}

/// Run only by the test above, in a child process with a prepared environment.
#[tokio::test]
#[ignore = "run in a child process by s3_credentials_come_from_the_container_credentials_endpoint"]
async fn child_fetch_with_standard_aws_environment() {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| panic!("{k} not set: this test is run by its parent"))
    };
    let source = Source::parse(&var("PAR_FETCH_CHILD_SOURCE")).unwrap();
    let opts = FetchOptions::from_env(var("PAR_FETCH_CHILD_HOME"))
        .unwrap()
        .with_sha256(var("PAR_FETCH_CHILD_SHA"));
    assert_eq!(
        opts.max_size_bytes,
        5 * 1024 * 1024,
        "MAX_PACKAGE_SIZE_MB read"
    );
    assert!(opts.s3_credentials.is_none() && opts.s3_endpoint.is_none());
    let fetched = fetch(&source, &opts)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert!(fetched.downloaded);
}
