//! Building a rustls server configuration (aws-lc-rs provider) from PEM.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;

#[cfg(feature = "compact-tls")]
pub(crate) mod compact;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Which TLS versions a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsVersions {
    /// TLS 1.3 only (the default).
    #[default]
    Tls13,
    /// TLS 1.3 and 1.2, for older device stacks.
    Tls13And12,
}

/// A certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The PEM holds no certificate or no usable private key.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// A server configuration presenting `cert_chain_pem` (leaf first) with `key_pem` (PKCS#8, PKCS#1
/// or SEC1), on the aws-lc-rs provider, without client certificates. ALPN is left empty: MQTT
/// clients rarely send it.
pub fn server_config_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    versions: TlsVersions,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let protocols: &[&rustls::SupportedProtocolVersion] = match versions {
        TlsVersions::Tls13 => &[&rustls::version::TLS13],
        TlsVersions::Tls13And12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(protocols)?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// [`server_config_from_pem`] reading the two files.
pub fn server_config_from_pem_files(
    cert_chain: &Path,
    key: &Path,
    versions: TlsVersions,
) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Io {
            path: p.display().to_string(),
            source,
        })
    };
    server_config_from_pem(&read(cert_chain)?, &read(key)?, versions)
}
