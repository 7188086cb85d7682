//! Downloading a package over HTTPS (or HTTP on loopback) with reqwest.

use futures_util::StreamExt;
use url::Url;

use crate::cache::{Download, WriteError};
use crate::error::FetchError;
use crate::options::FetchOptions;
use crate::retry::{self, AttemptError};
use crate::source::{redact_url, Source};
use crate::{tls, Fetched};

pub(crate) async fn fetch(
    url: &Url,
    opts: &FetchOptions,
    expected: Option<&str>,
) -> Result<Fetched, FetchError> {
    let location = redact_url(url);
    if url.scheme() == "http" && !opts.allow_http && !Source::is_loopback_http(url) {
        return Err(FetchError::InsecureHttp { location });
    }
    let client = client(opts, &location)?;
    retry::run(opts, &location, |_| {
        attempt(&client, url, opts, expected, &location)
    })
    .await
}

fn client(opts: &FetchOptions, location: &str) -> Result<reqwest::Client, FetchError> {
    tls::ensure_crypto_provider();
    let roots = tls::reqwest_roots(&opts.extra_root_certs)?;
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("par/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.timeout);
    if !roots.is_empty() {
        builder = builder.tls_certs_merge(roots);
    }
    builder.build().map_err(|e| FetchError::Client {
        location: location.to_string(),
        cause: e.without_url(),
    })
}

async fn attempt(
    client: &reqwest::Client,
    url: &Url,
    opts: &FetchOptions,
    expected: Option<&str>,
    location: &str,
) -> Result<Fetched, AttemptError> {
    // reqwest errors carry the full URL; `without_url` keeps presigned query
    // strings out of messages.
    let transport = |e: reqwest::Error| {
        let transient = !(e.is_builder() || e.is_redirect() || is_tls_rejection(&e));
        let error = FetchError::Transport {
            location: location.to_string(),
            cause: e.without_url(),
        };
        AttemptError { error, transient }
    };
    let response = client.get(url.clone()).send().await.map_err(transport)?;
    let status = response.status();
    if !status.is_success() {
        let code = status.as_u16();
        let transient = status.is_server_error() || code == 408 || code == 429;
        let error = if code == 404 || code == 410 {
            FetchError::NotFound {
                location: location.to_string(),
                status: code,
            }
        } else {
            FetchError::Status {
                location: location.to_string(),
                status: code,
            }
        };
        return Err(AttemptError { error, transient });
    }
    let too_large = |size| {
        AttemptError::permanent(FetchError::TooLarge {
            location: location.to_string(),
            limit_mb: opts.limit_mb(),
            size,
        })
    };
    if let Some(len) = response.content_length() {
        if len > opts.max_size_bytes {
            return Err(too_large(Some(len)));
        }
    }
    let mut download = Download::start(&opts.downloads_dir(), opts.max_size_bytes)
        .map_err(AttemptError::permanent)?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(transport)?;
        download.write(&chunk).await.map_err(|e| match e {
            WriteError::TooLarge => too_large(None),
            WriteError::Io(e) => AttemptError::permanent(e),
        })?;
    }
    download
        .finish(expected, location)
        .await
        .map_err(AttemptError::permanent)
}

/// True when the server's certificate (or the TLS handshake) was refused:
/// retrying cannot help. rustls errors arrive wrapped in `io::Error`, whose
/// `source()` skips the wrapped error, hence the explicit `get_ref`.
fn is_tls_rejection(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => None,
            },
            None => err.source(),
        };
    }
    false
}
