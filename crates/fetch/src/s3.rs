//! Downloading a package from S3 with object_store; credentials from the
//! standard AWS chain unless given explicitly.

use std::sync::Arc;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStoreExt, RetryConfig, StaticCredentialProvider,
};

use crate::cache::{Download, WriteError};
use crate::error::FetchError;
use crate::options::FetchOptions;
use crate::retry::{self, AttemptError};
use crate::{tls, Fetched};

pub(crate) async fn fetch(
    bucket: &str,
    key: &str,
    opts: &FetchOptions,
    expected: Option<&str>,
) -> Result<Fetched, FetchError> {
    let location = format!("s3://{bucket}/{key}");
    let store = store(bucket, opts, &location)?;
    let path = ObjectPath::from(key);
    retry::run(opts, &location, |_| {
        attempt(&store, &path, opts, expected, &location)
    })
    .await
}

/// An S3 client for one bucket. `AmazonS3Builder::from_env` reads the
/// standard variables: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/
/// `AWS_SESSION_TOKEN`, the ECS task role (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`
/// or `_FULL_URI`), web identity, `AWS_REGION`/`AWS_DEFAULT_REGION`,
/// `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`, and falls back to instance metadata.
fn store(bucket: &str, opts: &FetchOptions, location: &str) -> Result<AmazonS3, FetchError> {
    tls::ensure_crypto_provider();
    let mut client = ClientOptions::new()
        .with_timeout(opts.timeout)
        .with_connect_timeout(opts.connect_timeout);
    for cert in tls::object_store_roots(&opts.extra_root_certs)? {
        client = client.with_root_certificate(cert);
    }
    // object_store retries single requests itself (5xx, connection errors,
    // not 4xx) with the same budget; the outer loop only retries broken bodies.
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: opts.backoff_initial,
            max_backoff: opts.backoff_max,
            base: 2.0,
        },
        max_retries: opts.retries as usize,
        retry_timeout: opts.timeout,
    };
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry)
        .with_client_options(client);
    if let Some(region) = &opts.s3_region {
        builder = builder.with_region(region);
    }
    if let Some(endpoint) = &opts.s3_endpoint {
        // The S3-specific key wins over the generic one inside object_store.
        builder = builder
            .with_endpoint(endpoint)
            .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
    }
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
        .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
    if endpoint.is_some_and(|e| e.starts_with("http://")) {
        builder = builder.with_allow_http(true);
    }
    if let Some(creds) = &opts.s3_credentials {
        builder =
            builder.with_credentials(Arc::new(StaticCredentialProvider::new(AwsCredential {
                key_id: creds.access_key_id.clone(),
                secret_key: creds.secret_access_key.clone(),
                token: creds.session_token.clone(),
            })));
    }
    builder.build().map_err(|cause| FetchError::S3 {
        location: location.to_string(),
        cause,
    })
}

/// Reads a small object (a registry index) into memory, within
/// `opts.max_size_bytes`: nothing is written to disk.
pub(crate) async fn read(
    bucket: &str,
    key: &str,
    opts: &FetchOptions,
) -> Result<Vec<u8>, FetchError> {
    let location = format!("s3://{bucket}/{key}");
    let store = store(bucket, opts, &location)?;
    let path = ObjectPath::from(key);
    retry::run(opts, &location, |_| async {
        let (size, mut body) = open(&store, &path, opts, &location).await?;
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| AttemptError::transient(s3_error(e, &location)))?;
            if (bytes.len() + chunk.len()) as u64 > opts.max_size_bytes {
                return Err(too_large(opts, &location, None));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    })
    .await
}

fn s3_error(cause: object_store::Error, location: &str) -> FetchError {
    match cause {
        object_store::Error::NotFound { .. } => FetchError::NotFound {
            location: location.to_string(),
            status: 404,
        },
        cause => FetchError::S3 {
            location: location.to_string(),
            cause,
        },
    }
}

fn too_large(opts: &FetchOptions, location: &str, size: Option<u64>) -> AttemptError {
    AttemptError::permanent(FetchError::TooLarge {
        location: location.to_string(),
        limit_mb: opts.limit_mb(),
        size,
    })
}

/// Starts the GET: the object's size (checked against the limit) and its body.
async fn open(
    store: &AmazonS3,
    path: &ObjectPath,
    opts: &FetchOptions,
    location: &str,
) -> Result<
    (
        u64,
        futures_util::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    ),
    AttemptError,
> {
    // Request-level failures were already retried by object_store.
    let result = store
        .get(path)
        .await
        .map_err(|e| AttemptError::permanent(s3_error(e, location)))?;
    if result.meta.size > opts.max_size_bytes {
        return Err(too_large(opts, location, Some(result.meta.size)));
    }
    Ok((result.meta.size, result.into_stream()))
}

async fn attempt(
    store: &AmazonS3,
    path: &ObjectPath,
    opts: &FetchOptions,
    expected: Option<&str>,
    location: &str,
) -> Result<Fetched, AttemptError> {
    let (_, mut body) = open(store, path, opts, location).await?;
    let mut download = Download::start(&opts.downloads_dir(), opts.max_size_bytes)
        .map_err(AttemptError::permanent)?;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| AttemptError::transient(s3_error(e, location)))?;
        download.write(&chunk).await.map_err(|e| match e {
            WriteError::TooLarge => too_large(opts, location, None),
            WriteError::Io(e) => AttemptError::permanent(e),
        })?;
    }
    download
        .finish(expected, location)
        .await
        .map_err(AttemptError::permanent)
}
