//! The kops-controller client: what nodeup's `getNodeConfigFromServers` and its
//! `BootstrapClientTask` do, for nodewright.
//!
//! - Only kube_env's CA bundle is trusted for kops-controller's HTTPS.
//! - Servers are tried in turn under one deadline, with jittered backoff. A name that
//!   does not resolve yet, or resolves only to kops's placeholder (203.0.113.123, or
//!   fd00:dead:add:: on IPv6), is "not ready": nothing is sent to it.
//! - Every attempt is signed afresh (the proof is bound to the body and dated).
//! - 409 means the node is registered already: not an error, the caller keeps the
//!   credentials it holds. 403 (the proof was refused) is retried until the deadline,
//!   as nodeup does (a new instance may not be visible to EC2's API yet), then reported.

pub mod credentials;
pub mod protocol;
pub mod token;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use nodewright_shim::client::{ClientError, StsSigner, error_chain};

use crate::bootstrap::exit;
use protocol::{BootstrapRequest, BootstrapResponse};

/// kops's placeholder DNS answers for names the control plane has not published.
pub const PLACEHOLDER_IPV4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 123));
pub const PLACEHOLDER_IPV6: IpAddr =
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xdead, 0x0add, 0, 0, 0, 0, 0));

/// Largest answer read (a nodeupconfig and three certificates are a few KiB).
const MAX_RESPONSE_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("kops-controller client settings: {0}")]
    Config(String),
    #[error("{server}: not ready yet: {detail}")]
    NotReady { server: String, detail: String },
    #[error("{server}: {detail}")]
    Transport { server: String, detail: String },
    #[error("{server} refused this instance's identity proof (403 {body}): is the instance role one of kops-controller's node roles, and the instance tagged with its instance group?")]
    Forbidden { server: String, body: String },
    #[error("{server} answered HTTP {status}: {body}")]
    Status {
        server: String,
        status: u16,
        body: String,
    },
    #[error("signing the identity proof: {0}")]
    Sign(#[from] ClientError),
    #[error("{server}: {detail}")]
    Answer { server: String, detail: String },
    #[error("gave up after {attempts} attempts in {:.0}s: {last}", elapsed.as_secs_f64())]
    Deadline {
        attempts: u32,
        elapsed: Duration,
        last: Box<ControllerError>,
    },
}

impl ControllerError {
    /// Whether another attempt (later, or at another server) may succeed.
    pub fn transient(&self) -> bool {
        match self {
            Self::NotReady { .. } | Self::Transport { .. } | Self::Forbidden { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::Sign(e) => e.transient(),
            Self::Config(_) | Self::Answer { .. } | Self::Deadline { .. } => false,
        }
    }

    /// The last error, when the deadline passed.
    pub fn root(&self) -> &ControllerError {
        match self {
            Self::Deadline { last, .. } => last.root(),
            other => other,
        }
    }

    /// 3 when kops-controller refused us (403, 4xx, a bad answer); 4 when it never
    /// answered before the deadline.
    pub fn exit_code(&self) -> u8 {
        match self.root() {
            Self::NotReady { .. } | Self::Transport { .. } => exit::UNREACHABLE,
            Self::Status { status, .. } if *status >= 500 || *status == 429 => exit::UNREACHABLE,
            Self::Sign(e) if e.transient() => exit::UNREACHABLE,
            _ => exit::INVALID_INPUT,
        }
    }
}

/// What kops-controller answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Bootstrapped(BootstrapResponse),
    /// 409: this node is registered (and Ready) already.
    AlreadyBootstrapped { server: String },
}

/// How to reach kops-controller.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// `https://kops-controller.internal.<cluster>:3988/`, tried in turn.
    pub servers: Vec<String>,
    /// PEM, possibly several certificates: the only CAs trusted for the servers.
    pub ca_pem: String,
    /// Verify the servers' certificates for this name instead of the URL's host.
    pub tls_server_name: Option<String>,
    /// Names answered without DNS (kube_env's APIServerIPs with `dns: none`).
    pub pinned: Vec<(String, Vec<IpAddr>)>,
    pub proxies: Vec<reqwest::Proxy>,
    pub deadline: Duration,
    /// One attempt's limit (kops: 15 s).
    pub attempt_timeout: Duration,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl ControllerSettings {
    pub fn new(servers: Vec<String>, ca_pem: String, deadline: Duration) -> Self {
        Self {
            servers,
            ca_pem,
            tls_server_name: None,
            pinned: Vec::new(),
            proxies: Vec::new(),
            deadline,
            attempt_timeout: Duration::from_secs(15),
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ControllerClient {
    settings: ControllerSettings,
    certs: Vec<reqwest::Certificate>,
}

impl ControllerClient {
    pub fn new(settings: ControllerSettings) -> Result<Self, ControllerError> {
        if settings.servers.is_empty() {
            return Err(ControllerError::Config("no kops-controller servers".to_owned()));
        }
        for server in &settings.servers {
            if !server.starts_with("https://") || host_port(server).is_none() {
                return Err(ControllerError::Config(format!(
                    "server {server:?} must be an https:// URL with a host"
                )));
            }
        }
        let certs = reqwest::Certificate::from_pem_bundle(settings.ca_pem.as_bytes())
            .map_err(|e| ControllerError::Config(format!("the CA bundle is not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(ControllerError::Config("the CA bundle holds no certificate".to_owned()));
        }
        Ok(Self { settings, certs })
    }

    /// Sends one bootstrap request, with retries, and returns the first useful answer.
    pub async fn bootstrap(
        &self,
        signer: &StsSigner,
        request: &BootstrapRequest,
    ) -> Result<Answer, ControllerError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| ControllerError::Config(format!("encoding the request: {e}")))?;
        let hash = token::body_hash(&body);
        let started = Instant::now();
        let servers = &self.settings.servers;
        let mut attempts = 0u32;
        loop {
            let server = servers[attempts as usize % servers.len()].clone();
            attempts += 1;
            let error = match self.attempt(&server, signer, &body, &hash).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            if !error.transient() {
                return Err(error);
            }
            let delay = backoff(&self.settings, attempts);
            let elapsed = started.elapsed();
            if elapsed + delay >= self.settings.deadline {
                return Err(ControllerError::Deadline {
                    attempts,
                    elapsed,
                    last: Box::new(error),
                });
            }
            tracing::warn!(server, attempt = attempts, error = %error,
                retry_in_ms = delay.as_millis() as u64, "kops-controller attempt failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        server: &str,
        signer: &StsSigner,
        body: &[u8],
        hash: &str,
    ) -> Result<Answer, ControllerError> {
        let (host, port) = host_port(server)
            .ok_or_else(|| ControllerError::Config(format!("{server}: no host")))?;
        let addresses = self.resolve(server, &host, port).await?;
        // The URL and the name the certificate must carry.
        let name = self.settings.tls_server_name.clone().unwrap_or(host.clone());
        let url = format!(
            "https://{}:{port}{}",
            bracketed(&name),
            protocol::PATH
        );
        let mut builder = reqwest::Client::builder()
            .tls_certs_only(self.certs.clone())
            .timeout(self.settings.attempt_timeout)
            .connect_timeout(self.settings.attempt_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("nodewright/", env!("CARGO_PKG_VERSION")));
        if name.parse::<IpAddr>().is_err() && !addresses.is_empty() {
            let sockets: Vec<SocketAddr> =
                addresses.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            builder = builder.resolve_to_addrs(&name, &sockets);
        }
        if self.settings.proxies.is_empty() {
            builder = builder.no_proxy();
        }
        for proxy in &self.settings.proxies {
            builder = builder.proxy(proxy.clone());
        }
        let http = builder
            .build()
            .map_err(|e| ControllerError::Config(error_chain(&e)))?;
        let signed = signer.sign_binding(token::BODY_HASH_HEADER, hash).await?;
        let response = http
            .post(url)
            .header("authorization", token::header(&signed))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| ControllerError::Transport {
                server: server.to_owned(),
                detail: error_chain(&e),
            })?;
        read_answer(server, response).await
    }

    /// The server's addresses: pinned, a literal, or from DNS; never only the placeholder.
    async fn resolve(
        &self,
        server: &str,
        host: &str,
        port: u16,
    ) -> Result<Vec<IpAddr>, ControllerError> {
        let addresses: Vec<IpAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
            vec![ip]
        } else if let Some((_, pinned)) = self.settings.pinned.iter().find(|(n, _)| n == host) {
            pinned.clone()
        } else if !self.settings.proxies.is_empty() {
            return Ok(Vec::new()); // the proxy resolves the name
        } else {
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| ControllerError::NotReady {
                    server: server.to_owned(),
                    detail: format!("{host} does not resolve yet: {e}"),
                })?
                .map(|a| a.ip())
                .collect()
        };
        let usable: Vec<IpAddr> = addresses
            .into_iter()
            .filter(|ip| *ip != PLACEHOLDER_IPV4 && *ip != PLACEHOLDER_IPV6)
            .collect();
        if usable.is_empty() {
            return Err(ControllerError::NotReady {
                server: server.to_owned(),
                detail: format!(
                    "{host} still resolves to kops's placeholder ({PLACEHOLDER_IPV4} / {PLACEHOLDER_IPV6}): the control plane has not published it"
                ),
            });
        }
        Ok(usable)
    }
}

async fn read_answer(server: &str, response: reqwest::Response) -> Result<Answer, ControllerError> {
    let status = response.status().as_u16();
    if response
        .content_length()
        .is_some_and(|n| n as usize > MAX_RESPONSE_BYTES)
    {
        return Err(ControllerError::Answer {
            server: server.to_owned(),
            detail: "the answer is too large".to_owned(),
        });
    }
    let bytes = response.bytes().await.map_err(|e| ControllerError::Transport {
        server: server.to_owned(),
        detail: error_chain(&e),
    })?;
    if bytes.len() > MAX_RESPONSE_BYTES {
        return Err(ControllerError::Answer {
            server: server.to_owned(),
            detail: "the answer is too large".to_owned(),
        });
    }
    let text = || {
        String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    match status {
        200 => serde_json::from_slice(&bytes)
            .map(Answer::Bootstrapped)
            .map_err(|e| ControllerError::Answer {
                server: server.to_owned(),
                detail: format!("the answer does not parse: {e}"),
            }),
        409 => Ok(Answer::AlreadyBootstrapped {
            server: server.to_owned(),
        }),
        403 => Err(ControllerError::Forbidden {
            server: server.to_owned(),
            body: text(),
        }),
        _ => Err(ControllerError::Status {
            server: server.to_owned(),
            status,
            body: text(),
        }),
    }
}

fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => 443,
        };
        return Some((host.to_owned(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (authority, 443),
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

fn bracketed(host: &str) -> String {
    if host.parse::<Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn backoff(settings: &ControllerSettings, attempt: u32) -> Duration {
    let exp = settings
        .initial_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(settings.max_delay);
    let half = capped / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_as_kops_writes_them() {
        assert_eq!(
            host_port("https://kops-controller.internal.a.example.com:3988/"),
            Some(("kops-controller.internal.a.example.com".into(), 3988))
        );
        assert_eq!(host_port("https://[fd00::1]:3988/"), Some(("fd00::1".into(), 3988)));
        assert_eq!(host_port("https://10.0.0.1/"), Some(("10.0.0.1".into(), 443)));
        assert_eq!(host_port("http://a:1/"), None);
        assert_eq!(bracketed("fd00::1"), "[fd00::1]");
    }

    #[tokio::test]
    async fn the_placeholder_is_skipped_not_contacted() {
        let ca = nodewright_shim::pki::CertificateAuthority::create("ca", Duration::from_secs(60))
            .unwrap()
            .0;
        let mut settings = ControllerSettings::new(
            vec!["https://kops-controller.internal.a.example.com:3988/".into()],
            ca.cert_pem().to_owned(),
            Duration::from_secs(1),
        );
        settings.pinned = vec![(
            "kops-controller.internal.a.example.com".into(),
            vec![PLACEHOLDER_IPV4],
        )];
        let client = ControllerClient::new(settings).unwrap();
        let err = client
            .resolve("s", "kops-controller.internal.a.example.com", 3988)
            .await
            .unwrap_err();
        assert!(matches!(err, ControllerError::NotReady { .. }) && err.transient(), "{err}");
        assert!(err.to_string().contains("203.0.113.123"), "{err}");
        assert_eq!(err.exit_code(), exit::UNREACHABLE);
        let err = client.resolve("s", "203.0.113.123", 3988).await.unwrap_err();
        assert!(matches!(err, ControllerError::NotReady { .. }));
    }

    #[test]
    fn exit_codes_say_refused_or_unreachable() {
        let forbidden = ControllerError::Deadline {
            attempts: 3,
            elapsed: Duration::from_secs(1),
            last: Box::new(ControllerError::Forbidden {
                server: "s".into(),
                body: "failed to verify token".into(),
            }),
        };
        assert_eq!(forbidden.exit_code(), exit::INVALID_INPUT);
        assert!(forbidden.to_string().contains("403"), "{forbidden}");
        let down = ControllerError::Deadline {
            attempts: 3,
            elapsed: Duration::from_secs(1),
            last: Box::new(ControllerError::Transport {
                server: "s".into(),
                detail: "connection refused".into(),
            }),
        };
        assert_eq!(down.exit_code(), exit::UNREACHABLE);
    }
}
