//! The accept loop and each connection's life: how many connections, from whom, and for
//! how long.
//!
//! - At most `max_connections` at once (kept under the open-files limit, so the shim
//!   never fails `accept` for want of a descriptor); more wait in the kernel's queue.
//! - At most `per_source` from one source address; more are closed at once.
//! - The TLS handshake and each request's headers within `handshake_timeout`; a
//!   connection is closed (after the request in flight) at `max_age`. Bodies and whole
//!   requests have their own deadlines in the handlers.
//!
//! Every request carries a [`Peer`] in its extensions: the source address and the
//! client certificate the TLS handshake verified, if any.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::metrics::Metrics;
use super::sources::ConnectionCounts;

/// Who sent a request.
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: SocketAddr,
    /// DER of the client certificate the handshake verified against the cluster CA.
    pub client_certificate: Option<Arc<[u8]>>,
}

#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub per_source: usize,
    pub handshake_timeout: Duration,
    pub max_age: Duration,
    /// How long a closing connection may take to finish its request.
    pub grace: Duration,
}

/// Largest request head (request line and headers); a proof is a few KiB.
const MAX_HEAD_BYTES: usize = 32 << 10;

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown`
/// resolves, then lets the requests in flight finish for up to `limits.grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let sources = ConnectionCounts::new(limits.per_source);
    let (stop, stopping) = watch::channel(false);
    let mut accept_errors = super::refusal::Sampler::new(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    metrics.connection_refused("accept_error");
                    if let Some(skipped) = accept_errors.take() {
                        tracing::error!(error = %e, skipped, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(source) = sources.try_open(address.ip()) else {
            // Closed before the handshake: a source over its share costs next to nothing.
            metrics.connection_refused("per_source");
            continue;
        };
        let open = metrics.connection_opened();
        let _ = stream.set_nodelay(true);
        let (tls, router, limits, metrics) =
            (tls.clone(), router.clone(), limits.clone(), metrics.clone());
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _source = source;
            let _open = open;
            let Some(tls) = tls else {
                let peer = Peer {
                    address,
                    client_certificate: None,
                };
                connection(stream, peer, router, &limits, stopping).await;
                return;
            };
            match tokio::time::timeout(limits.handshake_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let client_certificate = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|cert| Arc::from(cert.as_ref()));
                    let peer = Peer {
                        address,
                        client_certificate,
                    };
                    connection(stream, peer, router, &limits, stopping).await;
                }
                Ok(Err(e)) => {
                    metrics.connection_refused("tls_handshake");
                    tracing::debug!(peer = %address, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    metrics.connection_refused("tls_handshake_timeout");
                    tracing::debug!(peer = %address, "TLS handshake timed out");
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it ends: all of them back means all done.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(
        limits.grace + Duration::from_secs(1),
        slots.acquire_many(all),
    )
    .await
    .is_err()
    {
        tracing::warn!(
            "requests were still in flight after {:?}; stopping anyway",
            limits.grace
        );
    }
}

/// One connection: HTTP/1.1 with a header deadline, until the client closes it, it
/// reaches its age, or the server stops.
async fn connection<I>(
    io: I,
    peer: Peer,
    router: Router,
    limits: &ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let address = peer.address;
    let service = tower::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(peer.clone());
        router.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let closing = tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(peer = %address, error = %e, "connection ended with an error");
            }
            return;
        }
        () = tokio::time::sleep(limits.max_age) => "its age",
        _ = stopping.wait_for(|stop| *stop) => "the server stopping",
    };
    connection.as_mut().graceful_shutdown();
    if tokio::time::timeout(limits.grace, connection)
        .await
        .is_err()
    {
        tracing::debug!(peer = %address, closing, "closed a connection that did not finish in time");
    }
}

/// How many connections the shim may hold open: `configured`, kept `reserve`
/// descriptors under the open-files limit (for the listeners, AWS connections, files).
pub fn connection_budget(configured: usize, open_files_limit: Option<u64>) -> usize {
    const RESERVE: u64 = 64;
    match open_files_limit {
        Some(limit) => {
            let room = limit.saturating_sub(RESERVE).max(limit / 2).max(1);
            configured.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => configured,
    }
}

/// Raises the soft open-files limit to the hard one and returns it (what services
/// written in Go do at start: the soft default, often 1024, is a relic).
pub fn raise_open_files_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_stay_under_the_open_files_limit() {
        assert_eq!(connection_budget(8192, None), 8192);
        assert_eq!(connection_budget(8192, Some(1024)), 960);
        assert_eq!(connection_budget(100, Some(1 << 20)), 100);
        // A tiny limit still leaves half of it for connections.
        assert_eq!(connection_budget(8192, Some(100)), 50);
        assert_eq!(connection_budget(8192, Some(0)), 1);
    }
}
