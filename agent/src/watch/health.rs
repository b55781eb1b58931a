//! The watch's health endpoint: plain HTTP on loopback, `GET /healthz` and
//! `GET /metrics` (see `metrics`).
//!
//! `/healthz`: 200 while the last round succeeded and is recent (within three
//! intervals), 503 otherwise; the body is the last round's record as JSON. A few lines over tokio
//! rather than an HTTP server crate: one path, one method, no keep-alive.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::controlplane::ControlPlaneRecord;

#[derive(Debug, Default)]
pub struct Health {
    pub last: Option<(Instant, ControlPlaneRecord)>,
    pub rounds: u64,
    /// The etcd clusters the spec backs up, whose backup records `/metrics` reads.
    pub backups: Vec<String>,
    pub state_dir: std::path::PathBuf,
}

pub type Shared = Arc<Mutex<Health>>;

/// Whether the node is healthy, and the JSON body.
pub fn answer(health: &Health, interval: Duration) -> (bool, String) {
    let fresh = |at: &Instant| at.elapsed() <= interval * 3;
    let healthy = health
        .last
        .as_ref()
        .is_some_and(|(at, record)| record.ok && fresh(at));
    let body = serde_json::json!({
        "healthy": healthy,
        "rounds": health.rounds,
        "secondsSinceLastRound": health.last.as_ref().map(|(at, _)| at.elapsed().as_secs()),
        "lastRound": health.last.as_ref().map(|(_, r)| r),
    });
    (healthy, body.to_string())
}

pub async fn bind(address: &str) -> std::io::Result<TcpListener> {
    let address: SocketAddr = address.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{address}: {e}"))
    })?;
    if !address.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{address}: the health endpoint only listens on loopback"),
        ));
    }
    TcpListener::bind(address).await
}

pub async fn serve(listener: TcpListener, health: Shared, interval: Duration) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let health = health.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 2048];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
            let Ok(Ok(n)) = read else {
                return;
            };
            let request = String::from_utf8_lossy(&buffer[..n]);
            let line = request.lines().next().unwrap_or_default();
            let (status, body) = if line.starts_with("GET /healthz ") || line == "GET /healthz" {
                let (healthy, body) = answer(&health.lock().expect("health lock"), interval);
                (
                    if healthy {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    },
                    body,
                )
            } else if line.starts_with("GET /metrics ") || line == "GET /metrics" {
                let body =
                    super::metrics::render(&health.lock().expect("health lock"), SystemTime::now());
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
                return;
            } else {
                (
                    "404 Not Found",
                    "{\"error\":\"only GET /healthz and GET /metrics are served\"}".to_owned(),
                )
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
