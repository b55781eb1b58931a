//! TLS for the workers' listener: the serving certificate, re-read when its files change
//! (the control plane renews it without restarting the shim), and an optional client
//! certificate from the cluster CA (a bootstrapped node's kubelet client certificate,
//! its proof of the key the shim recorded).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
#[error("the serving certificate {cert} / {key}: {detail}")]
pub struct TlsError {
    cert: String,
    key: String,
    detail: String,
}

/// The serving certificate, reloaded when its files' modification times change.
#[derive(Debug)]
pub struct ServingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

impl ServingCert {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, TlsError> {
        let key = read_pair(cert_file, key_file)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new((Arc::new(key), stamp(cert_file, key_file))),
        }))
    }

    /// Re-reads the pair if either file changed; a bad new pair keeps the old one.
    pub fn reload_if_changed(&self) {
        let now = stamp(&self.cert_file, &self.key_file);
        let known = self.current.read().map(|c| c.1).unwrap_or(None);
        if now == known {
            return;
        }
        match read_pair(&self.cert_file, &self.key_file) {
            Ok(key) => {
                if let Ok(mut current) = self.current.write() {
                    *current = (Arc::new(key), now);
                }
                tracing::info!(cert = %self.cert_file.display(), "reloaded the serving certificate");
            }
            Err(e) => tracing::error!(error = %e, "keeping the old serving certificate"),
        }
    }

    /// The acceptor: asks every client for a certificate from `client_ca_pem` and takes
    /// a connection without one (a node that has not bootstrapped has none). A client
    /// that presents one that does not verify (another CA, expired, not for client
    /// authentication) fails the handshake.
    pub fn acceptor(self: &Arc<Self>, client_ca_pem: &str) -> Result<TlsAcceptor, TlsError> {
        let fail = |detail: String| TlsError {
            cert: self.cert_file.display().to_string(),
            key: self.key_file.display().to_string(),
            detail,
        };
        let provider = Arc::new(aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| fail(format!("the client CA: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| fail(format!("the client CA: {e}")))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| fail(format!("the client CA: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Re-reads the pair every 30 s while the returned task runs.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let cert = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                cert.reload_if_changed();
            }
        })
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }
}

fn stamp(cert: &Path, key: &Path) -> Option<SystemTime> {
    let a = std::fs::metadata(cert).and_then(|m| m.modified()).ok()?;
    let b = std::fs::metadata(key).and_then(|m| m.modified()).ok()?;
    Some(a.max(b))
}

fn read_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let fail = |detail: String| TlsError {
        cert: cert_file.display().to_string(),
        key: key_file.display().to_string(),
        detail,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no certificate in the file".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| fail(e.to_string()))?;
    let provider = aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| fail(e.to_string()))?;
    let pair = CertifiedKey::new(certs, signing);
    pair.keys_match()
        .map_err(|e| fail(format!("the key does not match: {e}")))?;
    Ok(pair)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pki::{CertificateAuthority, KeyAlgorithm, PrivateKey, Profile, Subject, Usage};

    fn write_pair(dir: &Path, ca: &CertificateAuthority, name: &str) -> Vec<u8> {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let cert = ca
            .issue(
                &key.public_key(),
                &Profile {
                    subject: Subject::new(name, &[]),
                    dns_names: vec!["localhost".into()],
                    ips: vec![],
                    usage: Usage::Server,
                    validity: Duration::from_secs(3600),
                    backdate: Duration::ZERO,
                },
            )
            .unwrap();
        std::fs::write(dir.join("tls.crt"), &cert.pem).unwrap();
        std::fs::write(dir.join("tls.key"), key.to_pem()).unwrap();
        CertificateDer::from_pem_slice(cert.pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    fn current(cert: &ServingCert) -> Vec<u8> {
        cert.current.read().unwrap().0.cert[0].to_vec()
    }

    #[test]
    fn a_renewed_certificate_is_picked_up_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = CertificateAuthority::create("ca", Duration::from_secs(3600)).unwrap();
        let first = write_pair(dir.path(), &ca, "first");
        let cert =
            ServingCert::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap();
        assert_eq!(current(&cert), first);

        std::thread::sleep(Duration::from_millis(20));
        let second = write_pair(dir.path(), &ca, "second");
        cert.reload_if_changed();
        assert_eq!(current(&cert), second);

        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
        cert.reload_if_changed();
        assert_eq!(
            current(&cert),
            second,
            "a broken pair must not replace a good one"
        );

        // A key that is not the certificate's is refused at load.
        let other = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        std::fs::write(dir.path().join("tls.key"), other.to_pem()).unwrap();
        let err = ServingCert::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match"), "{err}");
    }
}
