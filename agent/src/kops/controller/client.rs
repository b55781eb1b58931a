//! The HTTPS client nodeup uses for kops-controller (`pkg/kopscontrollerclient`), for
//! nodewright.
//!
//! - Only kube_env's CA bundle is trusted for kops-controller's HTTPS (not the OS store),
//!   verified for `tlsServerName` when kube_env names one, else for the URL's host.
//! - Servers are tried in turn under one deadline, with jittered backoff (nodeup cycles
//!   through them for 45 minutes; here the run's deadline). A name that does not
//!   resolve yet, or resolves only to kops's placeholder (203.0.113.123, or
//!   fd00:dead:add:: on IPv6: what kops puts in DNS before dns-controller publishes
//!   the control plane), is "not ready": nothing is sent to it.
//! - Every attempt is signed afresh (the proof is bound to the body and dated).
//! - 409 means the node is registered (and Ready) already: an answer, not an error.
//!   403 (the proof was refused) is retried until the deadline, as nodeup does (a new
//!   instance may not be visible to EC2's API yet), then reported as a refusal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use nodewright_shim::client::{ClientError, StsSigner, host_port, pinned_builder};

use super::protocol::{self, BootstrapRequest, BootstrapResponse};
use crate::error::{Classified, ErrorKind, chain};
use crate::retry::{RetryError, RetryPolicy, Verdict, retry};
use crate::runbook::Topic;

/// kops's placeholder DNS answers (`dns.PlaceholderIP`, `dns.PlaceholderIPv6`).
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
    #[error(
        "{server} refused this instance's identity proof (HTTP 403: {body}): is the instance \
         role one of kops-controller's node roles, and the instance in this cluster's account?"
    )]
    Forbidden { server: String, body: String },
    #[error("{server} answered HTTP {status}: {body}")]
    Status {
        server: String,
        status: u16,
        body: String,
    },
    #[error("signing the identity proof for kops-controller: {0}")]
    Sign(#[from] ClientError),
    #[error("{server}: {detail}")]
    Answer { server: String, detail: String },
    #[error("kops-controller: gave up after {attempts} rounds over its servers in {:.0}s: {last}", elapsed.as_secs_f64())]
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
}

/// Unreachable (exit 4) when kops-controller never answered usefully before the
/// deadline; a refusal of this node's inputs (exit 3) when it refused (403, another
/// 4xx, an answer that does not hold together).
impl Classified for ControllerError {
    fn kind(&self) -> ErrorKind {
        match self.root() {
            Self::NotReady { .. } | Self::Transport { .. } => ErrorKind::Unreachable,
            Self::Status { status, .. } if *status >= 500 || *status == 429 => {
                ErrorKind::Unreachable
            }
            Self::Sign(e) if e.transient() => ErrorKind::Unreachable,
            _ => ErrorKind::InvalidInput,
        }
    }
    fn topic(&self) -> Option<Topic> {
        match self.root() {
            Self::NotReady { .. } => Some(Topic::DnsPlaceholder),
            _ => None,
        }
    }
}

/// What kops-controller answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Bootstrapped(BootstrapResponse),
    /// 409: this node is registered (and Ready) already.
    AlreadyRegistered {
        server: String,
    },
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
            proxies: Vec::new(),
            deadline,
            attempt_timeout: Duration::from_secs(15),
            initial_delay: Duration::from_millis(500),
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
            return Err(ControllerError::Config(
                "no kops-controller servers".to_owned(),
            ));
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
            return Err(ControllerError::Config(
                "the CA bundle holds no certificate".to_owned(),
            ));
        }
        Ok(Self { settings, certs })
    }

    /// Sends one bootstrap request, with retries, and returns the first useful answer.
    /// The rounds, their backoff, the deadline and what `status` shows while it waits are
    /// the agent's one retry loop ([`crate::retry`]); a round tries every server once.
    pub async fn bootstrap(
        &self,
        signer: &StsSigner,
        request: &BootstrapRequest,
    ) -> Result<Answer, ControllerError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| ControllerError::Config(format!("encoding the request: {e}")))?;
        let hash = protocol::body_hash(&body);
        let policy = RetryPolicy {
            deadline: self.settings.deadline,
            initial_delay: self.settings.initial_delay,
            max_delay: self.settings.max_delay,
        };
        let verdict = |e: &ControllerError| {
            if e.transient() {
                Verdict::Retry
            } else {
                Verdict::Fail
            }
        };
        retry("kops-controller", policy, verdict, || {
            self.round(signer, &body, &hash)
        })
        .await
        .map_err(|error| match error {
            RetryError::Permanent(error) => error,
            // Kept as the controller's own error: a 403 until the deadline is still a
            // refusal (exit 3), not an unreachable source.
            RetryError::Deadline {
                last,
                attempts,
                elapsed,
            } => ControllerError::Deadline {
                attempts,
                elapsed,
                last: Box::new(last),
            },
        })
    }

    /// Every server once, in turn: the first answer, a refusal that retrying cannot fix,
    /// or the last transient failure. A placeholder or a dead replica never holds up a
    /// good one for a backoff.
    async fn round(
        &self,
        signer: &StsSigner,
        body: &[u8],
        hash: &str,
    ) -> Result<Answer, ControllerError> {
        let mut last = None;
        for server in &self.settings.servers {
            match self.attempt(server, signer, body, hash).await {
                Err(error) if error.transient() => {
                    tracing::warn!(server, error = %error, "kops-controller attempt failed");
                    last = Some(error);
                }
                done => return done,
            }
        }
        Err(last
            .unwrap_or_else(|| ControllerError::Config("no kops-controller servers".to_owned())))
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
        // The name the certificate must carry, and so the URL's host.
        let name = self
            .settings
            .tls_server_name
            .clone()
            .unwrap_or(host.clone());
        let url = format!("https://{}:{port}/{}", bracketed(&name), protocol::PATH);
        let mut builder = pinned_builder(
            self.certs.clone(),
            self.settings.attempt_timeout,
            &self.settings.proxies,
        );
        if name.parse::<IpAddr>().is_err() && !addresses.is_empty() {
            // Connect to the addresses checked above, never to a fresh lookup's.
            let sockets: Vec<SocketAddr> = addresses
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect();
            builder = builder.resolve_to_addrs(&name, &sockets);
        }
        let http = builder
            .build()
            .map_err(|e| ControllerError::Config(chain(&e)))?;
        let signed = signer.sign_binding(protocol::BINDING_HEADER, hash).await?;
        let response = http
            .post(url)
            .header("authorization", protocol::authorization(&signed.headers))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| ControllerError::Transport {
                server: server.to_owned(),
                detail: chain(&e),
            })?;
        read_answer(server, response).await
    }

    /// The server's addresses: a literal or from DNS; never the placeholder.
    async fn resolve(
        &self,
        server: &str,
        host: &str,
        port: u16,
    ) -> Result<Vec<IpAddr>, ControllerError> {
        let addresses: Vec<IpAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
            vec![ip]
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
        usable(server, host, addresses)
    }
}

/// The addresses that are not kops's placeholder; "not ready" when none is left.
fn usable(
    server: &str,
    host: &str,
    addresses: Vec<IpAddr>,
) -> Result<Vec<IpAddr>, ControllerError> {
    let usable: Vec<IpAddr> = addresses
        .into_iter()
        .filter(|ip| *ip != PLACEHOLDER_IPV4 && *ip != PLACEHOLDER_IPV6)
        .collect();
    if usable.is_empty() {
        return Err(ControllerError::NotReady {
            server: server.to_owned(),
            detail: format!(
                "{host} is kops's placeholder address ({PLACEHOLDER_IPV4} / {PLACEHOLDER_IPV6}): \
                 dns-controller has not published kops-controller yet; nothing was sent to it"
            ),
        });
    }
    Ok(usable)
}

async fn read_answer(server: &str, response: reqwest::Response) -> Result<Answer, ControllerError> {
    let status = response.status().as_u16();
    let too_large = || ControllerError::Answer {
        server: server.to_owned(),
        detail: "the answer is too large".to_owned(),
    };
    if response
        .content_length()
        .is_some_and(|n| n as usize > MAX_RESPONSE_BYTES)
    {
        return Err(too_large());
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ControllerError::Transport {
            server: server.to_owned(),
            detail: chain(&e),
        })?;
    if bytes.len() > MAX_RESPONSE_BYTES {
        return Err(too_large());
    }
    // kops-controller's error bodies are one short line; never print more.
    let first_line = || {
        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .collect::<String>()
    };
    match status {
        200 => serde_json::from_slice(&bytes)
            .map(Answer::Bootstrapped)
            .map_err(|e| ControllerError::Answer {
                server: server.to_owned(),
                detail: format!("the answer does not parse: {e}"),
            }),
        409 => Ok(Answer::AlreadyRegistered {
            server: server.to_owned(),
        }),
        403 => Err(ControllerError::Forbidden {
            server: server.to_owned(),
            body: first_line(),
        }),
        _ => Err(ControllerError::Status {
            server: server.to_owned(),
            status,
            body: first_line(),
        }),
    }
}

fn bracketed(host: &str) -> String {
    if host.parse::<Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
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
        assert_eq!(
            host_port("https://[fd00::1]:3988/"),
            Some(("fd00::1".into(), 3988))
        );
        assert_eq!(
            host_port("https://10.0.0.1/"),
            Some(("10.0.0.1".into(), 443))
        );
        assert_eq!(host_port("https://:1/"), None);
        assert_eq!(bracketed("fd00::1"), "[fd00::1]");
        let error = ControllerClient::new(ControllerSettings::new(
            vec!["http://kops-controller:3988/".into()],
            String::new(),
            Duration::from_secs(1),
        ))
        .unwrap_err();
        assert!(error.to_string().contains("https://"), "{error}");
    }

    #[test]
    fn the_placeholder_is_never_used() {
        let name = "kops-controller.internal.a.example.com";
        let error = usable("s", name, vec![PLACEHOLDER_IPV4]).unwrap_err();
        assert!(
            matches!(error, ControllerError::NotReady { .. }) && error.transient(),
            "{error}"
        );
        assert!(error.to_string().contains("203.0.113.123"), "{error}");
        assert_eq!(error.kind(), ErrorKind::Unreachable);
        assert_eq!(error.topic(), Some(Topic::DnsPlaceholder));
        assert!(usable("s", name, vec![PLACEHOLDER_IPV6]).is_err());
        let real: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(
            usable("s", name, vec![PLACEHOLDER_IPV4, real]).unwrap(),
            [real]
        );
    }

    #[tokio::test]
    async fn a_literal_placeholder_is_skipped_without_a_connection() {
        let (ca, _) =
            nodewright_shim::pki::CertificateAuthority::create("ca", Duration::from_secs(60))
                .unwrap();
        let client = ControllerClient::new(ControllerSettings::new(
            vec!["https://203.0.113.123:3988/".into()],
            ca.cert_pem().to_owned(),
            Duration::from_secs(1),
        ))
        .unwrap();
        let error = client
            .resolve("https://203.0.113.123:3988/", "203.0.113.123", 3988)
            .await
            .unwrap_err();
        assert!(matches!(error, ControllerError::NotReady { .. }), "{error}");
    }

    #[test]
    fn errors_say_refused_or_unreachable() {
        let deadline = |last| ControllerError::Deadline {
            attempts: 3,
            elapsed: Duration::from_secs(1),
            last: Box::new(last),
        };
        let forbidden = deadline(ControllerError::Forbidden {
            server: "https://k:3988/".into(),
            body: "failed to verify token".into(),
        });
        assert_eq!(forbidden.kind(), ErrorKind::InvalidInput);
        let text = forbidden.to_string();
        assert!(
            text.contains("403") && text.contains("https://k:3988/"),
            "{text}"
        );
        let down = deadline(ControllerError::Transport {
            server: "https://k:3988/".into(),
            detail: "connection refused".into(),
        });
        assert_eq!(down.kind(), ErrorKind::Unreachable);
        let busy = deadline(ControllerError::Status {
            server: "s".into(),
            status: 503,
            body: String::new(),
        });
        assert_eq!(busy.kind(), ErrorKind::Unreachable);
        let bad = ControllerError::Status {
            server: "s".into(),
            status: 400,
            body: "unexpected APIVersion".into(),
        };
        assert!(!bad.transient());
        assert_eq!(bad.kind(), ErrorKind::InvalidInput);
    }
}
