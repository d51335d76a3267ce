//! TLS for LDAPS and StartTLS (rustls): the configured PEM certificate and key, or else a
//! self-signed pair generated once into the data directory (key file 0600) and reused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub fingerprint: String,
    pub generated: Option<PathBuf>,
}

const CERT_FILE: &str = "ldap-cert.pem";
const KEY_FILE: &str = "ldap-key.pem";

pub fn acceptor(cert: Option<&str>, key: Option<&str>, data_dir: &Path) -> Result<Tls> {
    let (cert_path, key_path, generated) = match (cert, key) {
        (Some(c), Some(k)) => (PathBuf::from(c), PathBuf::from(k), None),
        (None, None) => {
            let (c, k) = (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE));
            if !c.exists() || !k.exists() {
                generate(&c, &k)?;
            }
            (c.clone(), k, Some(c))
        }
        _ => bail!("set both CAIRN_LDAP_TLS_CERT and CAIRN_LDAP_TLS_KEY, or neither (a self-signed pair is then made)"),
    };
    let cert_pem = std::fs::read(&cert_path).with_context(|| format!("cannot read {}", cert_path.display()))?;
    let key_pem = std::fs::read(&key_path).with_context(|| format!("cannot read {}", key_path.display()))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("{} holds no readable PEM certificate", cert_path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", cert_path.display());
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("{} holds no readable PEM key", key_path.display()))?
        .with_context(|| format!("{} holds no PEM private key", key_path.display()))?;
    let fingerprint =
        Sha256::digest(certs[0].as_ref()).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!("the certificate {} and key {} do not go together", cert_path.display(), key_path.display())
        })?;
    Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(config)), fingerprint, generated })
}

fn generate(cert: &Path, key: &Path) -> Result<()> {
    let host = hostname();
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Some(h) = host {
        names.push(h);
    }
    let ck = rcgen::generate_simple_self_signed(names).context("cannot generate a TLS certificate")?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_private(key, ck.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, ck.cert.pem()).with_context(|| format!("cannot write {}", cert.display()))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate for LDAP");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}
