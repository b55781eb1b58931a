//! HTTPS only: rustls in front of the router, with the serving certificate re-read when
//! its files change (the control plane renews it without restarting the shim).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 8192;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

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

    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("the default provider supports the default versions")
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
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

/// Serves `router` over TLS on `listener` until `shutdown` resolves, then lets requests
/// in flight finish (for up to `drain`).
pub async fn serve(
    listener: TcpListener,
    cert: Arc<ServingCert>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) {
    let acceptor = cert.acceptor();
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let reloader = {
        let cert = cert.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                cert.reload_if_changed();
            }
        })
    };
    tokio::pin!(shutdown);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    reloader.abort();
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests were still in flight after {drain:?}; stopping anyway");
    }
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
