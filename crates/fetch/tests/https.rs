//! HTTP(S) sources against a real loopback server: TLS with an extra root,
//! cache hits, retries on 503, no retry on 404, size limits, sha mismatch,
//! and no secrets in errors.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use par_fetch::{fetch, FetchError, FetchOptions, Source};
use support::{chain, files_in, fixture_apkg, sha256_hex, tls_config, Reply, TestServer};

fn quick_opts(home: &std::path::Path) -> FetchOptions {
    let mut opts = FetchOptions::new(home);
    opts.backoff_initial = Duration::from_millis(20);
    opts.backoff_max = Duration::from_millis(100);
    opts.timeout = Duration::from_secs(30);
    opts
}

#[tokio::test]
async fn https_download_is_verified_cached_and_second_fetch_downloads_nothing() {
    let apkg = std::fs::read(fixture_apkg()).unwrap();
    let sha = sha256_hex(&apkg);
    let (tls, ca_pem) = tls_config();
    let server = TestServer::start(
        vec![(
            "/agents/pk-handler-env-0.2.0.apkg",
            vec![Reply::Body(Arc::new(apkg.clone()))],
        )],
        Some(tls),
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let ca = home.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let mut opts = quick_opts(home.path()).with_sha256(sha.to_uppercase());
    opts.extra_root_certs = vec![ca];
    let source = Source::parse(&format!(
        "https://localhost:{}/agents/pk-handler-env-0.2.0.apkg",
        server.addr.port()
    ))
    .unwrap();

    let t = Instant::now();
    let first = fetch(&source, &opts).await.unwrap();
    let download_time = t.elapsed();
    assert!(first.downloaded);
    assert_eq!(first.sha256, sha);
    assert_eq!(first.bytes, apkg.len() as u64);
    assert_eq!(
        first.path,
        home.path().join(format!("downloads/{sha}.apkg"))
    );
    assert_eq!(std::fs::read(&first.path).unwrap(), apkg);
    assert_eq!(
        files_in(&home.path().join("downloads")),
        vec![format!("{sha}.apkg")]
    );

    let t = Instant::now();
    let second = fetch(&source, &opts).await.unwrap();
    let hit_time = t.elapsed();
    assert!(
        !second.downloaded,
        "second fetch of a known hash must be a cache hit"
    );
    assert_eq!(second.path, first.path);
    assert_eq!(second.bytes, first.bytes);
    assert_eq!(
        server.count("/agents/pk-handler-env-0.2.0.apkg"),
        1,
        "{:?}",
        server.requests()
    );
    println!(
        "figures: https download of {} bytes (incl. TLS handshake, client set-up): {:?}; cache hit: {:?}",
        apkg.len(),
        download_time,
        hit_time
    );

    // Without a hash there is no way to know the content: it downloads again
    // and lands on the same content-addressed file.
    let mut no_hash = opts.clone();
    no_hash.sha256 = None;
    let third = fetch(&source, &no_hash).await.unwrap();
    assert!(third.downloaded);
    assert_eq!(third.path, first.path);
    assert_eq!(server.count("/agents/pk-handler-env-0.2.0.apkg"), 2);
}

#[tokio::test]
async fn https_with_an_untrusted_certificate_is_refused_without_retrying() {
    let (tls, _ca) = tls_config();
    let server = TestServer::start(
        vec![("/a.apkg", vec![Reply::Body(Arc::new(b"x".to_vec()))])],
        Some(tls),
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let mut opts = quick_opts(home.path());
    opts.retries = 3;
    let source =
        Source::parse(&format!("https://127.0.0.1:{}/a.apkg", server.addr.port())).unwrap();
    let err = fetch(&source, &opts).await.unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, FetchError::Transport { .. }), "{text}");
    assert!(
        text.contains(&format!("https://127.0.0.1:{}/a.apkg", server.addr.port())),
        "{text}"
    );
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert_eq!(server.count("/a.apkg"), 0);
    assert!(files_in(&home.path().join("downloads")).is_empty());
}

#[tokio::test]
async fn transient_503_is_retried_until_200() {
    let apkg = std::fs::read(fixture_apkg()).unwrap();
    let server = TestServer::start(
        vec![(
            "/p.apkg",
            vec![
                Reply::Status(503),
                Reply::Status(503),
                Reply::Body(Arc::new(apkg.clone())),
            ],
        )],
        None,
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let mut opts = quick_opts(home.path()).with_sha256(sha256_hex(&apkg));
    opts.retries = 3;
    let source = Source::parse(&format!("http://127.0.0.1:{}/p.apkg", server.addr.port())).unwrap();
    let fetched = fetch(&source, &opts).await.unwrap();
    assert!(fetched.downloaded);
    assert_eq!(std::fs::read(&fetched.path).unwrap(), apkg);
    assert_eq!(server.count("/p.apkg"), 3, "{:?}", server.requests());
}

#[tokio::test]
async fn persistent_503_gives_up_after_the_retry_budget() {
    let server = TestServer::start(vec![("/p.apkg", vec![Reply::Status(503)])], None).await;
    let home = tempfile::tempdir().unwrap();
    let mut opts = quick_opts(home.path());
    opts.retries = 2;
    let source = Source::parse(&format!("http://127.0.0.1:{}/p.apkg", server.addr.port())).unwrap();
    let err = fetch(&source, &opts).await.unwrap_err();
    let text = chain(&err);
    assert!(
        matches!(err, FetchError::RetriesExhausted { attempts: 3, .. }),
        "{text}"
    );
    assert!(text.contains("HTTP 503"), "{text}");
    assert_eq!(server.count("/p.apkg"), 3);
}

#[tokio::test]
async fn not_found_is_not_retried_and_hides_the_query_string() {
    let server = TestServer::start(vec![], None).await;
    let home = tempfile::tempdir().unwrap();
    let mut opts = quick_opts(home.path());
    opts.retries = 3;
    let url = format!(
        "http://127.0.0.1:{}/missing.apkg?X-Amz-Credential=AKIDEXAMPLE&X-Amz-Signature=topsecret",
        server.addr.port()
    );
    let source = Source::parse(&url).unwrap();
    let err = fetch(&source, &opts).await.unwrap_err();
    let text = chain(&err);
    assert!(
        matches!(err, FetchError::NotFound { status: 404, .. }),
        "{text}"
    );
    assert!(text.contains("/missing.apkg"), "{text}");
    assert!(
        !text.contains("topsecret") && !text.contains("AKIDEXAMPLE"),
        "{text}"
    );
    assert!(!format!("{err:?}").contains("topsecret"), "{err:?}");
    assert_eq!(server.count("/missing.apkg"), 1, "4xx must not be retried");
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported_without_secrets() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = tempfile::tempdir().unwrap();
    let mut opts = quick_opts(home.path());
    opts.retries = 2;
    let source = Source::parse(&format!("http://127.0.0.1:{port}/a.apkg?sig=topsecret")).unwrap();
    let err = fetch(&source, &opts).await.unwrap_err();
    let text = chain(&err);
    assert!(
        matches!(err, FetchError::RetriesExhausted { attempts: 3, .. }),
        "{text}"
    );
    assert!(text.contains(&format!("127.0.0.1:{port}/a.apkg")), "{text}");
    assert!(
        !text.contains("topsecret") && !format!("{err:?}").contains("topsecret"),
        "{text}"
    );
}

#[tokio::test]
async fn sha_mismatch_is_refused_and_leaves_nothing_in_the_cache() {
    let apkg = std::fs::read(fixture_apkg()).unwrap();
    let server = TestServer::start(
        vec![("/p.apkg", vec![Reply::Body(Arc::new(apkg.clone()))])],
        None,
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let wrong = "0".repeat(64);
    let opts = quick_opts(home.path()).with_sha256(&wrong);
    let source = Source::parse(&format!("http://127.0.0.1:{}/p.apkg", server.addr.port())).unwrap();
    let err = fetch(&source, &opts).await.unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, FetchError::ShaMismatch { .. }), "{text}");
    assert!(
        text.contains(&wrong) && text.contains(&sha256_hex(&apkg)),
        "{text}"
    );
    assert!(
        files_in(&home.path().join("downloads")).is_empty(),
        "{:?}",
        files_in(&home.path().join("downloads"))
    );
    assert_eq!(server.count("/p.apkg"), 1, "a mismatch is not retried");
}

#[tokio::test]
async fn oversize_body_is_refused_by_content_length_and_while_streaming() {
    let big = Arc::new(vec![7u8; 3 * 1024 * 1024]);
    let server = TestServer::start(
        vec![
            ("/with-length.apkg", vec![Reply::Body(big.clone())]),
            ("/no-length.apkg", vec![Reply::BodyNoLength(big.clone())]),
        ],
        None,
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let mut opts = quick_opts(home.path());
    opts.max_size_bytes = 1024 * 1024;
    for path in ["/with-length.apkg", "/no-length.apkg"] {
        let source =
            Source::parse(&format!("http://127.0.0.1:{}{path}", server.addr.port())).unwrap();
        let err = fetch(&source, &opts).await.unwrap_err();
        let text = chain(&err);
        assert!(
            matches!(err, FetchError::TooLarge { limit_mb: 1, .. }),
            "{text}"
        );
        assert!(
            text.contains("MAX_PACKAGE_SIZE_MB") && text.contains(path),
            "{text}"
        );
        assert_eq!(server.count(path), 1, "too large is not retried");
    }
    assert!(files_in(&home.path().join("downloads")).is_empty());
}

#[tokio::test]
async fn plain_http_to_a_remote_host_is_refused_unless_allowed() {
    let home = tempfile::tempdir().unwrap();
    let source = Source::parse("http://packages.invalid/a.apkg").unwrap();
    let err = fetch(&source, &quick_opts(home.path())).await.unwrap_err();
    assert!(
        matches!(err, FetchError::InsecureHttp { .. }),
        "{}",
        chain(&err)
    );
    assert!(err.to_string().contains("http://packages.invalid/a.apkg"));
}

#[tokio::test]
async fn local_files_pass_through_hashed_and_folders_are_refused() {
    let path = fixture_apkg();
    let apkg = std::fs::read(&path).unwrap();
    let home = tempfile::tempdir().unwrap();
    let source = Source::parse(path.to_str().unwrap()).unwrap();
    let fetched = fetch(&source, &quick_opts(home.path())).await.unwrap();
    assert_eq!(fetched.path, path);
    assert_eq!(fetched.sha256, sha256_hex(&apkg));
    assert!(!fetched.downloaded);

    let err = fetch(
        &source,
        &quick_opts(home.path()).with_sha256("1".repeat(64)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, FetchError::ShaMismatch { .. }),
        "{}",
        chain(&err)
    );

    let dir = Source::Local(home.path().to_path_buf());
    let err = fetch(&dir, &quick_opts(home.path())).await.unwrap_err();
    assert!(
        matches!(err, FetchError::IsDirectory { .. }),
        "{}",
        chain(&err)
    );

    let missing = Source::Local(home.path().join("nope.apkg"));
    let err = fetch(&missing, &quick_opts(home.path())).await.unwrap_err();
    assert!(chain(&err).contains("nope.apkg"), "{}", chain(&err));
}
