//! A development PKI: on first start a CA and a server certificate signed by it, written to the
//! data directory; later starts load them.
//!
//! Files: `ca.pem` (give it to clients: `curl --cacert`, `mosquitto_sub --cafile`),
//! `server.pem` and `server.key` (mode 0600). The CA's private key is never written: it signs the
//! server certificate once and is dropped, so nobody can later mint certificates with it. To
//! change the host names, delete the three files and start again.
//!
//! This is for development and tests. In production, give the hub certificates from your own CA
//! or an ACME client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The development certificates of a hub.
#[derive(Debug)]
pub struct DevPki {
    /// The CA certificate clients trust.
    pub ca_pem_path: PathBuf,
    /// The server certificate chain (server certificate, then the CA).
    pub chain: Vec<CertificateDer<'static>>,
    /// The server's private key.
    pub key: PrivateKeyDer<'static>,
    /// Whether the files were made by this call.
    pub created: bool,
}

impl DevPki {
    /// Loads the certificates from `dir`, or makes them for `hostnames` (DNS names or IP
    /// addresses) when they are not there.
    pub fn load_or_create(dir: &Path, hostnames: &[String]) -> std::io::Result<DevPki> {
        let ca_pem_path = dir.join("ca.pem");
        let cert_path = dir.join("server.pem");
        let key_path = dir.join("server.key");
        let created = if ca_pem_path.exists() && cert_path.exists() && key_path.exists() {
            false
        } else {
            create(dir, hostnames, &ca_pem_path, &cert_path, &key_path)?;
            true
        };
        let chain = CertificateDer::pem_file_iter(&cert_path)
            .map_err(invalid)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(invalid)?;
        Ok(DevPki {
            ca_pem_path,
            chain,
            key,
            created,
        })
    }

    /// A rustls server configuration (aws-lc-rs, TLS 1.3 and 1.2) for these certificates, with
    /// the given ALPN protocols.
    pub fn server_config(&self, alpn: &[&[u8]]) -> std::io::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(invalid)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

fn create(
    dir: &Path,
    hostnames: &[String],
    ca_pem_path: &Path,
    cert_path: &Path,
    key_path: &Path,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(invalid)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "IoT hub development CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate().map_err(invalid)?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(invalid)?;

    let mut params = rcgen::CertificateParams::new(hostnames.to_vec()).map_err(invalid)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "IoT hub (development)");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().map_err(invalid)?;
    let cert = params.signed_by(&key, &ca).map_err(invalid)?;

    write_private(key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, format!("{}{}", cert.pem(), ca.pem()))?;
    std::fs::write(ca_pem_path, ca.pem())?;
    Ok(())
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
