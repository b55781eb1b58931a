//! The worker's side: proves who it is to controller-shim and gets its node spec and
//! kubelet certificates.
//!
//! - Only the CA pinned in the boot config is trusted for the shim's HTTPS (not the OS
//!   store: anyone with a public certificate for the name must not be able to answer).
//! - Servers are tried in turn with jittered backoff under one deadline. A name that
//!   does not resolve yet, or resolves to the placeholder address that cluster tooling
//!   puts in DNS before the control plane publishes itself, means "not ready yet".
//! - Every attempt is signed afresh, so a long wait never sends a stale proof.
//! - A node that holds its kubelet client certificate presents it in the TLS handshake
//!   ([`ClientSettings::identity_pem`]): after the first bootstrap, that is what gets it
//!   its spec.
//! - The fleet view is not the workers' business: [`fleet`] reads it from the shim's
//!   loopback listener, on a control-plane node.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

use crate::identity::{IdentityToken, StsEndpoint};
use crate::pki::{PrivateKey, Subject};
use crate::protocol::{
    BOOTSTRAP_PATH, BootstrapRequest, BootstrapResponse, ErrorBody, ErrorCode, KUBE_PROXY_USER,
    NODES_PATH, NodesResponse, PROTOCOL_VERSION,
};

/// The address cluster tooling (kops's convention) puts in DNS for a name the control
/// plane has not published yet.
pub const PLACEHOLDER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 123));

/// Largest answer read from a shim (a spec and three certificates are a few KiB).
const MAX_RESPONSE_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("controller-shim client settings: {0}")]
    Config(String),
    #[error("{server}: not ready yet: {detail}")]
    NotReady { server: String, detail: String },
    #[error("{server}: {detail}")]
    Transport { server: String, detail: String },
    #[error(
        "{server} refused the request ({status} {code}): {message} (request {request_id} in the shim's log)"
    )]
    Refused {
        server: String,
        status: u16,
        code: ErrorCode,
        message: String,
        request_id: String,
    },
    #[error("{server} answered HTTP {status} without a protocol error: {body}")]
    Unexpected {
        server: String,
        status: u16,
        body: String,
    },
    #[error("the instance role's credentials are not available yet: {0}")]
    Credentials(String),
    #[error("signing the identity proof: {0}")]
    Sign(String),
    #[error("gave up after {attempts} attempts in {:.1}s: {last}", elapsed.as_secs_f64())]
    Deadline {
        attempts: u32,
        elapsed: Duration,
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// Whether another attempt (at this or another server, later) may succeed.
    pub fn transient(&self) -> bool {
        match self {
            Self::NotReady { .. } | Self::Transport { .. } | Self::Credentials(_) => true,
            Self::Refused { code, .. } => code.retryable(),
            Self::Unexpected { status, .. } => *status >= 500 || *status == 429,
            Self::Config(_) | Self::Sign(_) | Self::Deadline { .. } => false,
        }
    }

    /// The last error, when the deadline passed.
    pub fn root(&self) -> &ClientError {
        match self {
            Self::Deadline { last, .. } => last.root(),
            other => other,
        }
    }
}

/// Signs identity proofs with the instance role's credentials.
#[derive(Debug, Clone)]
pub struct StsSigner {
    credentials: SharedCredentialsProvider,
    endpoint: StsEndpoint,
}

impl StsSigner {
    pub fn new(credentials: SharedCredentialsProvider, endpoint: StsEndpoint) -> Self {
        Self {
            credentials,
            endpoint,
        }
    }

    /// Credentials from the SDK's default chain (on EC2: the instance role through
    /// IMDS); STS at `AWS_ENDPOINT_URL_STS`, the configured endpoint, or regional.
    pub fn from_sdk_config(config: &SdkConfig) -> Result<Self, ClientError> {
        let credentials = config
            .credentials_provider()
            .ok_or_else(|| ClientError::Config("no AWS credentials provider".to_owned()))?;
        let region = config
            .region()
            .ok_or_else(|| ClientError::Config("no AWS region".to_owned()))?
            .to_string();
        let url = std::env::var("AWS_ENDPOINT_URL_STS")
            .ok()
            .or_else(|| config.endpoint_url().map(str::to_owned));
        let endpoint = match url {
            Some(url) => StsEndpoint { url, region },
            None => StsEndpoint::regional(&region),
        };
        Ok(Self::new(credentials, endpoint))
    }

    pub fn endpoint(&self) -> &StsEndpoint {
        &self.endpoint
    }

    pub async fn sign(&self, body: &[u8]) -> Result<IdentityToken, ClientError> {
        let credentials = self.credentials().await?;
        IdentityToken::sign(&credentials, &self.endpoint, body, SystemTime::now())
            .map_err(|e| ClientError::Sign(e.to_string()))
    }

    /// Signs with another protocol's binding header instead of this one's body hash
    /// (kops-controller's `x-kops-request-sha`): one signer for every STS proof.
    pub async fn sign_binding(
        &self,
        header: &str,
        value: &str,
    ) -> Result<IdentityToken, ClientError> {
        let credentials = self.credentials().await?;
        IdentityToken::sign_binding(
            &credentials,
            &self.endpoint,
            header,
            value,
            SystemTime::now(),
        )
        .map_err(|e| ClientError::Sign(e.to_string()))
    }

    async fn credentials(&self) -> Result<aws_credential_types::Credentials, ClientError> {
        self.credentials
            .provide_credentials()
            .await
            .map_err(|e| ClientError::Credentials(error_chain(&e)))
    }
}

/// How to reach the shims.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// `https://host:port` of each server; tried in turn.
    pub servers: Vec<String>,
    /// PEM: the only CA trusted for the servers' certificates.
    pub ca_pem: String,
    /// PEM: the node's kubelet client certificate and its key (the kubelet's
    /// `kubelet-client-current.pem`), presented in the TLS handshake. A node that has
    /// bootstrapped gets its spec only with it.
    pub identity_pem: Option<String>,
    /// Proxies to use (empty: connect directly).
    pub proxies: Vec<reqwest::Proxy>,
    /// Give up once this much time has passed.
    pub deadline: Duration,
    /// One attempt's limit (connect, request, answer).
    pub attempt_timeout: Duration,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl ClientSettings {
    pub fn new(servers: Vec<String>, ca_pem: String, deadline: Duration) -> Self {
        Self {
            servers,
            ca_pem,
            identity_pem: None,
            proxies: Vec::new(),
            deadline,
            attempt_timeout: Duration::from_secs(30),
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ShimClient {
    http: reqwest::Client,
    settings: ClientSettings,
}

impl ShimClient {
    pub fn new(settings: ClientSettings) -> Result<Self, ClientError> {
        if settings.servers.is_empty() {
            return Err(ClientError::Config("no controller-shim servers".to_owned()));
        }
        for server in &settings.servers {
            if !server.starts_with("https://") {
                return Err(ClientError::Config(format!(
                    "server {server:?} must be an https:// URL"
                )));
            }
        }
        let certs = reqwest::Certificate::from_pem_bundle(settings.ca_pem.as_bytes())
            .map_err(|e| ClientError::Config(format!("the pinned CA is not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(ClientError::Config(
                "the pinned CA holds no certificate".to_owned(),
            ));
        }
        let mut builder = pinned_builder(certs, settings.attempt_timeout, &settings.proxies);
        if let Some(pem) = &settings.identity_pem {
            let identity = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| {
                ClientError::Config(format!(
                    "the client certificate and key: {}",
                    error_chain(&e)
                ))
            })?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(error_chain(&e)))?;
        Ok(Self { http, settings })
    }

    /// Bootstraps: proves the identity, sends the request, returns the shim's answer.
    pub async fn bootstrap(
        &self,
        signer: &StsSigner,
        request: &BootstrapRequest,
    ) -> Result<BootstrapResponse, ClientError> {
        self.with_retries("bootstrap", |server| {
            // A fresh nonce, so every attempt is its own proof (never taken for a replay).
            let mut request = request.clone();
            request.nonce = crate::protocol::nonce();
            async move {
                let body = serde_json::to_vec(&request)
                    .map_err(|e| ClientError::Config(format!("encoding the request: {e}")))?;
                self.wait_until_resolvable(&server).await?;
                let token = signer.sign(&body).await?;
                let response = self
                    .http
                    .post(format!("{}{BOOTSTRAP_PATH}", server.trim_end_matches('/')))
                    .header("authorization", token.to_header())
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| transport(&server, &e))?;
                let answer: BootstrapResponse = read_answer(&server, response).await?;
                if answer.api_version != PROTOCOL_VERSION {
                    return Err(ClientError::Unexpected {
                        server,
                        status: 200,
                        body: format!("protocol version {:?}", answer.api_version),
                    });
                }
                Ok(answer)
            }
        })
        .await
    }

    async fn with_retries<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, ClientError>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let started = Instant::now();
        let servers = &self.settings.servers;
        // Start at a random server so a fleet spreads over the replicas.
        let offset = fastrand::usize(..servers.len());
        let mut attempts = 0u32;
        loop {
            let server = servers[(offset + attempts as usize) % servers.len()].clone();
            attempts += 1;
            let error = match attempt(server.clone()).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if !error.transient() {
                return Err(error);
            }
            let delay = backoff(&self.settings, attempts);
            let elapsed = started.elapsed();
            if elapsed + delay >= self.settings.deadline {
                return Err(ClientError::Deadline {
                    attempts,
                    elapsed,
                    last: Box::new(error),
                });
            }
            tracing::warn!(what, server, attempt = attempts, error = %error,
                retry_in_ms = delay.as_millis() as u64, "controller-shim attempt failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Refuses (as "not ready") a name that does not resolve or resolves to the
    /// placeholder address; connects to nothing.
    async fn wait_until_resolvable(&self, server: &str) -> Result<(), ClientError> {
        let Some((host, port)) = host_port(server) else {
            return Err(ClientError::Config(format!(
                "server {server:?} has no host"
            )));
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return check_not_placeholder(server, &[ip]);
        }
        if !self.settings.proxies.is_empty() {
            return Ok(()); // the proxy resolves the name
        }
        let addresses: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| ClientError::NotReady {
                server: server.to_owned(),
                detail: format!("{host} does not resolve: {e}"),
            })?
            .map(|a| a.ip())
            .collect();
        check_not_placeholder(server, &addresses)
    }
}

/// The CSR kube-proxy's own key asks with: `CN=system:kube-proxy`, nothing else. Put it
/// in [`crate::protocol::CredentialRequest::kube_proxy_csr`]; the certificate comes back
/// in [`crate::protocol::IssuedCredentials::kube_proxy_certificate`].
pub fn kube_proxy_csr(key: &PrivateKey) -> Result<String, ClientError> {
    key.certificate_request(&Subject::new(KUBE_PROXY_USER, &[]), &[], &[])
        .map_err(|e| ClientError::Sign(format!("kube-proxy's CSR: {e}")))
}

/// The fleet's bootstrap records (`GET /v1/nodes`) from a shim's loopback listener
/// (`http://127.0.0.1:3989` on a control-plane node).
pub async fn fleet(admin_url: &str, timeout: Duration) -> Result<NodesResponse, ClientError> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .map_err(|e| ClientError::Config(error_chain(&e)))?;
    let response = http
        .get(format!("{}{NODES_PATH}", admin_url.trim_end_matches('/')))
        .send()
        .await
        .map_err(|e| transport(admin_url, &e))?;
    read_answer(admin_url, response).await
}

fn check_not_placeholder(server: &str, addresses: &[IpAddr]) -> Result<(), ClientError> {
    if addresses.contains(&PLACEHOLDER_IP) {
        return Err(ClientError::NotReady {
            server: server.to_owned(),
            detail: format!(
                "the name still points at the placeholder {PLACEHOLDER_IP} (the control plane has not published it)"
            ),
        });
    }
    Ok(())
}

/// An HTTPS client that trusts only `certs` (never the OS store), with one attempt's
/// limits, through `proxies` (none: directly).
pub fn pinned_builder(
    certs: Vec<reqwest::Certificate>,
    attempt_timeout: Duration,
    proxies: &[reqwest::Proxy],
) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(certs)
        .timeout(attempt_timeout)
        .connect_timeout(attempt_timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("nodewright/", env!("CARGO_PKG_VERSION")));
    if proxies.is_empty() {
        builder = builder.no_proxy();
    }
    for proxy in proxies {
        builder = builder.proxy(proxy.clone());
    }
    builder
}

/// `scheme://host[:port]/...` -> host and port (443 by default); `None` without a host.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split("://").nth(1)?;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6.split_once(']')?;
        let port = tail
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(443);
        return Some((host.to_owned(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (authority, 443),
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

fn backoff(settings: &ClientSettings, attempt: u32) -> Duration {
    crate::support::backoff(settings.initial_delay, settings.max_delay, attempt)
}

fn transport(server: &str, error: &reqwest::Error) -> ClientError {
    ClientError::Transport {
        server: server.to_owned(),
        detail: error_chain(error),
    }
}

async fn read_answer<T: serde::de::DeserializeOwned>(
    server: &str,
    response: reqwest::Response,
) -> Result<T, ClientError> {
    let status = response.status().as_u16();
    if response
        .content_length()
        .is_some_and(|n| n as usize > MAX_RESPONSE_BYTES)
    {
        return Err(ClientError::Unexpected {
            server: server.to_owned(),
            status,
            body: "the answer is too large".to_owned(),
        });
    }
    let bytes = response.bytes().await.map_err(|e| transport(server, &e))?;
    if status == 200 {
        return serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            server: server.to_owned(),
            status,
            body: format!("the answer does not parse: {e}"),
        });
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(error) => Err(ClientError::Refused {
            server: server.to_owned(),
            status,
            code: error.code,
            message: error.message,
            request_id: error.request_id,
        }),
        Err(_) => Err(ClientError::Unexpected {
            server: server.to_owned(),
            status,
            body: String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
        }),
    }
}

/// An error and its causes on one line (one formatter for both crates).
pub use crate::support::error_chain;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hosts_and_ports() {
        assert_eq!(
            host_port("https://shim.internal:3988"),
            Some(("shim.internal".into(), 3988))
        );
        assert_eq!(host_port("https://[::1]:4000/"), Some(("::1".into(), 4000)));
        assert_eq!(host_port("https://a.b"), Some(("a.b".into(), 443)));
    }

    #[test]
    fn the_placeholder_is_not_ready() {
        let err = check_not_placeholder("https://x", &[PLACEHOLDER_IP]).unwrap_err();
        assert!(err.transient() && matches!(err, ClientError::NotReady { .. }));
        check_not_placeholder("https://x", &["10.0.0.1".parse().unwrap()]).unwrap();
    }

    #[test]
    fn servers_must_be_https_with_a_ca() {
        let ca = crate::pki::CertificateAuthority::create("ca", Duration::from_secs(60))
            .unwrap()
            .0;
        let ok = ClientSettings::new(
            vec!["https://a:3988".into()],
            ca.cert_pem().to_owned(),
            Duration::from_secs(1),
        );
        ShimClient::new(ok.clone()).unwrap();
        let mut plain = ok.clone();
        plain.servers = vec!["http://a:3988".into()];
        assert!(ShimClient::new(plain).is_err());
        let mut no_ca = ok;
        no_ca.ca_pem = "nothing".into();
        assert!(ShimClient::new(no_ca).is_err());
    }
}
