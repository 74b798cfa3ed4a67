//! TLS on the listener: rustls with the *ring* provider, the certificate chain and key read
//! from PEM files (`--tls-cert`, `--tls-key`) and reloadable without a restart.
//!
//! The certificate is chosen per handshake by [`ReloadableCert`], so a reload (SIGHUP)
//! changes what new connections see while connections already open keep theirs. A reload
//! that fails (a missing file, a key that does not match the certificate) keeps the
//! certificate in use and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

/// The PEM files of the listener's certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1), readable by the server's user only.
    pub key: PathBuf,
}

/// The certificate the listener presents, replaced by [`ReloadableCert::reload`].
#[derive(Debug)]
pub struct ReloadableCert {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Read the files; an unreadable file, a file without a certificate or key, or a key
    /// that does not match the certificate is an error naming the file.
    pub fn load(files: TlsFiles) -> anyhow::Result<Arc<Self>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = load_certified_key(&files, &provider)?;
        Ok(Arc::new(Self {
            files,
            provider,
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Read the files again and present the new certificate to new connections; on
    /// failure the certificate in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = load_certified_key(&self.files, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
    }

    /// The files this certificate is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// A TLS acceptor presenting this certificate (HTTP/1.1 only, as the listener).
    pub fn acceptor(self: &Arc<Self>) -> anyhow::Result<TlsAcceptor> {
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .context("the TLS provider supports no protocol version")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

fn load_certified_key(files: &TlsFiles, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    CertifiedKey::from_der(certs, key, provider).map_err(|error| {
        anyhow::anyhow!(
            "the TLS key {} does not fit the certificate {}: {error}",
            files.key.display(),
            files.cert.display()
        )
    })
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the TLS certificate {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the TLS certificate {} is not valid PEM", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the TLS certificate file {} holds no CERTIFICATE block",
        path.display()
    );
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    crate::credentials::check_private(path, "the TLS key")?;
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the TLS key {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
        anyhow::anyhow!(
            "the TLS key file {} holds no usable private key ({error})",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("cert");
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.cert.pem()).expect("write cert");
        std::fs::remove_file(&files.key).ok();
        crate::credentials::write_private(&files.key, &cert.signing_key.serialize_pem())
            .expect("write key");
        files
    }

    fn presented(cert: &ReloadableCert) -> Vec<u8> {
        cert.current
            .read()
            .expect("lock")
            .end_entity_cert()
            .expect("leaf")
            .to_vec()
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = write_pair(dir.path(), "one");
        let cert = ReloadableCert::load(files.clone()).expect("load");
        let first = presented(&cert);

        // A key of another certificate: refused, the old pair stays.
        let other = write_pair(dir.path(), "two");
        std::fs::copy(&other.key, &files.key).expect("swap key only");
        // (copy keeps the 0600 of the target)
        let error = cert.reload().expect_err("mismatched key");
        assert!(format!("{error:#}").contains("does not fit"), "{error:#}");
        assert_eq!(presented(&cert), first);

        std::fs::write(&files.cert, "not pem").expect("garbage");
        let error = cert.reload().expect_err("no certificate");
        assert!(format!("{error:#}").contains("one.crt"), "{error:#}");
        assert_eq!(presented(&cert), first);

        // The matching pair: taken.
        std::fs::copy(&other.cert, &files.cert).expect("swap cert");
        cert.reload().expect("reload");
        assert_ne!(presented(&cert), first);
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = ReloadableCert::load(TlsFiles {
            cert: dir.path().join("absent.crt"),
            key: dir.path().join("absent.key"),
        })
        .expect_err("missing");
        assert!(format!("{error:#}").contains("absent.crt"), "{error:#}");
    }
}
