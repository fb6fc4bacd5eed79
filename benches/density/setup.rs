//! What a run generates once and hands to every server and client: the TLS certificate, the
//! device credentials, and the client's TLS configuration.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

pub(crate) use hub_benches::density::{PUBLISHER_USER, access_key, device_id, publisher_password};

/// The name the server certificate is issued for and the client checks.
pub(crate) const SERVER_NAME: &str = "localhost";

/// Where a run's certificate files are.
#[derive(Debug, Clone)]
pub(crate) struct CertFiles {
    /// The throwaway CA certificate (PEM) the clients trust.
    pub(crate) ca: PathBuf,
    /// The server certificate (PEM).
    pub(crate) cert: PathBuf,
    /// The server's private key (PKCS#8 PEM).
    pub(crate) key: PathBuf,
}

/// Generates a throwaway CA and a server certificate for `localhost` and 127.0.0.1, both with
/// ECDSA P-256 keys, and writes them into `dir`. Every server under test gets the same files.
pub(crate) fn generate_certs(dir: &Path) -> Result<CertFiles, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let err = |e: rcgen::Error| format!("certificate generation: {e}");

    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "density bench CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned(), "127.0.0.1".to_owned()])
        .map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, SERVER_NAME);
    let server_cert = params.signed_by(&server_key, &issuer).map_err(err)?;

    let files = CertFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write(&files.ca, ca_cert.pem())?;
    write(&files.cert, server_cert.pem())?;
    write(&files.key, server_key.serialize_pem())?;
    Ok(files)
}

/// A fresh random seed for a run's device credentials, as hex.
pub(crate) fn random_seed() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The client's TLS configuration: TLS 1.3 only, X25519 key exchange only (OpenSSL 3.0 in
/// Mosquitto has no post-quantum hybrid group; limiting the client keeps both servers doing the
/// same work), no session resumption (every handshake is a full one), trusting only the run's CA.
pub(crate) fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("reading the CA: {e}"))? {
        let cert = cert.map_err(|e| format!("reading the CA: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("trusting the CA: {e}"))?;
    }
    let provider = rustls::crypto::CryptoProvider {
        kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The server name the client checks.
pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_into_a_client_config() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate_certs(dir.path()).unwrap();
        let key = std::fs::read_to_string(&files.key).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        client_config(&files.ca).unwrap();
    }
}
