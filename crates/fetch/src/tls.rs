//! TLS set-up shared by the HTTPS and S3 clients: the ring crypto provider and
//! extra trusted root certificates.

use std::path::Path;
use std::sync::Once;

use crate::error::FetchError;

/// Installs rustls' ring provider as the process default, once. reqwest is
/// built without a bundled provider (to keep aws-lc-rs and its C build out),
/// so a provider must be installed before the first client is built. If the
/// program installed another provider first, that one is kept.
pub(crate) fn ensure_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Reads a PEM file holding one or more certificates.
pub(crate) fn read_pem(path: &Path) -> Result<Vec<u8>, FetchError> {
    let pem = std::fs::read(path).map_err(|cause| FetchError::RootCertificate {
        path: path.to_path_buf(),
        cause,
    })?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(FetchError::RootCertificateEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(pem)
}

/// The extra roots for reqwest.
pub(crate) fn reqwest_roots(
    paths: &[impl AsRef<Path>],
) -> Result<Vec<reqwest::Certificate>, FetchError> {
    let mut out = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let pem = read_pem(path)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            FetchError::RootCertificate {
                path: path.to_path_buf(),
                cause: std::io::Error::other(e),
            }
        })?;
        if certs.is_empty() {
            return Err(FetchError::RootCertificateEmpty {
                path: path.to_path_buf(),
            });
        }
        out.extend(certs);
    }
    Ok(out)
}

/// The extra roots for object_store.
pub(crate) fn object_store_roots(
    paths: &[impl AsRef<Path>],
) -> Result<Vec<object_store::Certificate>, FetchError> {
    let mut out = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let pem = read_pem(path)?;
        let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
            FetchError::RootCertificate {
                path: path.to_path_buf(),
                cause: std::io::Error::other(e),
            }
        })?;
        out.extend(certs);
    }
    Ok(out)
}
