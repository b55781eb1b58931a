//! The wire protocol between a worker and controller-shim, version `shim.nodewright.io/v1`.
//!
//! `POST /v1/bootstrap` carries a JSON [`BootstrapRequest`] and, in the `Authorization`
//! header, the worker's identity proof ([`crate::identity::IdentityToken`]): an STS
//! `GetCallerIdentity` request signed by the instance role, whose signed headers include
//! the sha256 of this JSON body. A node that has bootstrapped also presents its kubelet
//! client certificate in the TLS handshake: after the first bootstrap, that is what gets
//! it its spec. The answer is a [`BootstrapResponse`], or an [`ErrorBody`] with a
//! 4xx/5xx status whose [`ErrorCode`] says whether to retry. `docs/controller-shim.md`
//! describes the protocol and what each check keeps out.

use serde::{Deserialize, Serialize};

/// The protocol version both sides speak; a request with another one is refused.
pub const PROTOCOL_VERSION: &str = "shim.nodewright.io/v1";
pub const BOOTSTRAP_PATH: &str = "/v1/bootstrap";
pub const NODES_PATH: &str = "/v1/nodes";
pub const HEALTH_PATH: &str = "/healthz";
pub const METRICS_PATH: &str = "/metrics";
/// The default port (kops-controller's, which plays the same part in kops).
pub const DEFAULT_PORT: u16 = 3988;
/// The default port of the operators' listener (loopback only): fleet view and metrics.
pub const DEFAULT_ADMIN_PORT: u16 = 3989;
/// The response header that names a request in the shim's log.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The user kube-proxy's client certificate is for.
pub const KUBE_PROXY_USER: &str = "system:kube-proxy";
/// The scheme of the `Authorization` header that carries the identity proof.
pub const AUTH_SCHEME: &str = "NodewrightSTS";
/// The STS request header that binds the signature to the bootstrap request's body.
pub const BODY_HASH_HEADER: &str = "x-nodewright-body-sha256";
/// The one STS request a proof may carry; the shim replays this body, never another.
pub const STS_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
/// The response header with the shim's own time and its upstream calls' (milliseconds).
pub const SERVER_TIMING_HEADER: &str = "server-timing";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BootstrapRequest {
    pub api_version: String,
    /// The node group the boot config names; the instance's EC2 tags must agree.
    pub node_group: String,
    /// The sha256 (lowercase hex) of the node spec the boot config pins: the shim serves
    /// exactly the group's spec with this digest, however many were published since.
    pub node_spec_sha256: String,
    /// Random, fresh for every attempt (the client library sets it): SigV4 signatures
    /// are deterministic, so without it a retry in the same second would carry the
    /// same proof as the attempt before, and be refused as a replay.
    pub nonce: String,
    /// CSRs for the node's keys, generated on the node. Without them the shim only
    /// answers with the node spec (a re-boot, or `plan`), and records nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialRequest {
    /// PEM CSR for the kubelet's client key: `CN=system:node:<name>`, `O=system:nodes`.
    pub client_csr: String,
    /// PEM CSR for the kubelet's serving key; its subject and SANs are ignored (the
    /// shim takes the SANs from EC2).
    pub serving_csr: String,
    /// PEM CSR for kube-proxy's own client key: `CN=system:kube-proxy`, nothing else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_proxy_csr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BootstrapResponse {
    pub api_version: String,
    pub instance_id: String,
    /// The Kubernetes node name the certificates are for.
    pub node_name: String,
    /// The node spec's bytes, base64: verbatim, so the worker checks them against the
    /// sha256 in its user data.
    pub node_spec: String,
    pub node_spec_sha256: String,
    /// PEM: the CA(s) that sign the cluster's certificates (the kubelet trusts these).
    pub ca_bundle: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<IssuedCredentials>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IssuedCredentials {
    pub client_certificate: String,
    pub serving_certificate: String,
    /// `CN=system:kube-proxy`, client authentication only; when its CSR was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_proxy_certificate: Option<String>,
}

/// A fresh nonce: 128 random bits, hex.
pub fn nonce() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Whether `nonce` is one the shim takes: 16 to 64 letters, digits, `-` or `_`.
pub fn is_nonce(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl BootstrapResponse {
    /// The node spec's bytes.
    pub fn node_spec_bytes(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&self.node_spec)
            .map_err(|e| format!("nodeSpec is not base64: {e}"))
    }
}

pub fn encode_bytes(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Why a request was refused. The status and whether a retry can help follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The body is not a bootstrap request of this protocol version.
    BadRequest,
    /// No identity proof, or one that does not parse.
    MissingIdentity,
    /// The signed headers do not cover the body hash, or it does not match the body.
    BodyNotSigned,
    BodyMismatch,
    /// The signature's date is too far from now.
    StaleSignature,
    /// STS refused the signed request (forged or wrong signature, bad credentials).
    IdentityRejected,
    /// The identity is not an instance role of this cluster's account and partition.
    WrongAccount,
    RoleNotAllowed,
    NotAnInstance,
    UnknownNodeGroup,
    /// EC2 does not know the instance (yet: DescribeInstances is eventually consistent,
    /// so a seconds-old instance may be missing; the worker retries until its deadline).
    InstanceNotFound,
    /// The instance is stopping, stopped or terminated (its role credentials outlive it).
    InstanceNotRunning,
    /// The instance's tags put it in another cluster or node group.
    WrongCluster,
    WrongNodeGroup,
    /// The node has bootstrapped before (with another key) and re-bootstrap is off.
    AlreadyBootstrapped,
    /// A CSR that does not parse or whose signature does not verify.
    BadCsr,
    /// A CSR that asks for another node's name, or groups other than system:nodes.
    CsrNotAllowed,
    /// The group has no spec with the digest the request names.
    SpecNotFound,
    /// The instance has bootstrapped: only its kubelet's client certificate (presented in
    /// the TLS handshake) gets its spec.
    OwnerProofRequired,
    TooLarge,
    /// The request's body (or the whole request) did not arrive in time.
    RequestTimeout,
    RateLimited,
    /// STS, EC2 or the state store failed or throttled; retry later.
    UpstreamUnavailable,
    NotFound,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest | Self::BadCsr => 400,
            Self::MissingIdentity | Self::IdentityRejected | Self::StaleSignature => 401,
            Self::BodyNotSigned
            | Self::BodyMismatch
            | Self::WrongAccount
            | Self::RoleNotAllowed
            | Self::NotAnInstance
            | Self::UnknownNodeGroup
            | Self::InstanceNotRunning
            | Self::WrongCluster
            | Self::WrongNodeGroup
            | Self::CsrNotAllowed
            | Self::OwnerProofRequired => 403,
            Self::NotFound | Self::SpecNotFound => 404,
            Self::RequestTimeout => 408,
            Self::AlreadyBootstrapped => 409,
            Self::TooLarge => 413,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::UpstreamUnavailable | Self::InstanceNotFound => 503,
        }
    }

    /// Whether the worker should try again (later, or at another server).
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::UpstreamUnavailable
                | Self::Internal
                | Self::StaleSignature
                | Self::InstanceNotFound
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BadRequest",
            Self::MissingIdentity => "MissingIdentity",
            Self::BodyNotSigned => "BodyNotSigned",
            Self::BodyMismatch => "BodyMismatch",
            Self::StaleSignature => "StaleSignature",
            Self::IdentityRejected => "IdentityRejected",
            Self::WrongAccount => "WrongAccount",
            Self::RoleNotAllowed => "RoleNotAllowed",
            Self::NotAnInstance => "NotAnInstance",
            Self::UnknownNodeGroup => "UnknownNodeGroup",
            Self::InstanceNotFound => "InstanceNotFound",
            Self::InstanceNotRunning => "InstanceNotRunning",
            Self::WrongCluster => "WrongCluster",
            Self::WrongNodeGroup => "WrongNodeGroup",
            Self::AlreadyBootstrapped => "AlreadyBootstrapped",
            Self::BadCsr => "BadCsr",
            Self::CsrNotAllowed => "CsrNotAllowed",
            Self::SpecNotFound => "SpecNotFound",
            Self::OwnerProofRequired => "OwnerProofRequired",
            Self::TooLarge => "TooLarge",
            Self::RequestTimeout => "RequestTimeout",
            Self::RateLimited => "RateLimited",
            Self::UpstreamUnavailable => "UpstreamUnavailable",
            Self::NotFound => "NotFound",
            Self::Internal => "Internal",
        }
    }
}

impl ErrorCode {
    /// What a client is told: enough to act on, nothing about the cluster (which roles
    /// are allowed, which groups exist). The shim's log line has the whole reason.
    pub fn summary(self) -> &'static str {
        match self {
            Self::BadRequest => "the request is not a bootstrap request of this protocol",
            Self::MissingIdentity => "the identity proof is missing or malformed",
            Self::BodyNotSigned => "the identity proof does not sign the body hash",
            Self::BodyMismatch => "the identity proof was signed over another body",
            Self::StaleSignature => "the identity proof's date is too far from the shim's clock",
            Self::IdentityRejected => "the identity proof was rejected",
            Self::WrongAccount
            | Self::RoleNotAllowed
            | Self::NotAnInstance
            | Self::UnknownNodeGroup
            | Self::WrongCluster
            | Self::WrongNodeGroup => "this identity may not bootstrap into this node group",
            Self::InstanceNotFound => "EC2 does not know the instance yet; retry",
            Self::InstanceNotRunning => "the instance is not running",
            Self::AlreadyBootstrapped => {
                "this instance has bootstrapped with another key; re-bootstrap is not allowed"
            }
            Self::BadCsr => "a certificate request does not parse or verify",
            Self::CsrNotAllowed => "a certificate request asks for what this node may not have",
            Self::SpecNotFound => "the node group has no spec with that sha256",
            Self::OwnerProofRequired => {
                "this instance has bootstrapped; present its kubelet client certificate"
            }
            Self::TooLarge => "the request is too large",
            Self::RequestTimeout => "the request did not arrive in time",
            Self::RateLimited => "too many requests; retry shortly",
            Self::UpstreamUnavailable => "a service the shim depends on is unavailable; retry",
            Self::NotFound => "no such endpoint",
            Self::Internal => "internal error; retry",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// [`ErrorCode::summary`]: terse on purpose.
    pub message: String,
    /// Names the request in the shim's log, where the whole reason is.
    #[serde(default)]
    pub request_id: String,
}

/// `GET /v1/nodes`: the nodes that bootstrapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodesResponse {
    pub api_version: String,
    /// RFC 3339, UTC: when the shim last brought its view up to date from the store.
    #[serde(default)]
    pub refreshed_at: String,
    pub nodes: Vec<NodeRecord>,
}

/// What the shim remembers of a node; one record per instance, kept in the state store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub instance_id: String,
    pub node_name: String,
    pub node_group: String,
    /// RFC 3339, UTC: the first bootstrap.
    pub bootstrapped_at: String,
    /// RFC 3339, UTC: the latest (re-)bootstrap.
    pub last_bootstrap_at: String,
    pub bootstraps: u32,
    pub node_spec_sha256: String,
    /// sha256 of the kubelet client key's SubjectPublicKeyInfo: a retry with the same key
    /// (an answer lost on the way) is answered again; another key is a second bootstrap.
    pub client_key_sha256: String,
    pub role_arn: String,
    /// sha256 of the signature of the identity proof that wrote the record: the request
    /// that bootstrapped a node, replayed to any replica, gets nothing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proof_sha256: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests_are_strict() {
        let text = r#"{"apiVersion":"shim.nodewright.io/v1","nodeGroup":"a","nodeSpecSha256":"x","nonce":"n","extra":1}"#;
        assert!(serde_json::from_str::<BootstrapRequest>(text).is_err());
        let text = r#"{"apiVersion":"shim.nodewright.io/v1","nodeGroup":"a","nodeSpecSha256":"x","nonce":"n"}"#;
        let request: BootstrapRequest = serde_json::from_str(text).unwrap();
        assert!(request.credentials.is_none());
        // A request that does not name the digest it pins is not one of this protocol.
        let text = r#"{"apiVersion":"shim.nodewright.io/v1","nodeGroup":"a","nonce":"n"}"#;
        assert!(serde_json::from_str::<BootstrapRequest>(text).is_err());
        assert!(is_nonce(&nonce()) && nonce() != nonce());
        assert!(
            !is_nonce("short") && !is_nonce(&"x".repeat(65)) && !is_nonce("0123456789abcdef\n")
        );
    }

    #[test]
    fn only_transient_refusals_are_retried() {
        assert!(ErrorCode::UpstreamUnavailable.retryable());
        assert!(ErrorCode::RateLimited.retryable());
        assert!(ErrorCode::InstanceNotFound.retryable());
        assert!(!ErrorCode::InstanceNotRunning.retryable());
        assert!(!ErrorCode::AlreadyBootstrapped.retryable());
        assert!(!ErrorCode::IdentityRejected.retryable());
        for code in [
            ErrorCode::BadCsr,
            ErrorCode::WrongCluster,
            ErrorCode::TooLarge,
            ErrorCode::SpecNotFound,
            ErrorCode::RequestTimeout,
            ErrorCode::OwnerProofRequired,
        ] {
            assert!((400..500).contains(&code.status()), "{code}");
            assert!(!code.retryable(), "{code}");
        }
        // Nothing an unauthorised identity is told tells groups or roles apart.
        assert_eq!(
            ErrorCode::UnknownNodeGroup.summary(),
            ErrorCode::RoleNotAllowed.summary()
        );
    }
}
