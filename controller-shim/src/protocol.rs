//! The wire protocol between a worker and controller-shim, version `shim.nodewright.io/v1`.
//!
//! `POST /v1/bootstrap` carries a JSON [`BootstrapRequest`] and, in the `Authorization`
//! header, the worker's identity proof ([`crate::identity::IdentityToken`]): an STS
//! `GetCallerIdentity` request signed by the instance role, whose signed headers include
//! the sha256 of this JSON body. The answer is a [`BootstrapResponse`], or an
//! [`ErrorBody`] with a 4xx/5xx status whose [`ErrorCode`] says whether to retry.

use serde::{Deserialize, Serialize};

/// The protocol version both sides speak; a request with another one is refused.
pub const PROTOCOL_VERSION: &str = "shim.nodewright.io/v1";
pub const BOOTSTRAP_PATH: &str = "/v1/bootstrap";
pub const NODES_PATH: &str = "/v1/nodes";
pub const HEALTH_PATH: &str = "/healthz";
pub const METRICS_PATH: &str = "/metrics";
/// The default port (kops-controller's, which plays the same part in kops).
pub const DEFAULT_PORT: u16 = 3988;
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
    /// CSRs for the kubelet's keys, generated on the node. Without them the shim only
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
    TooLarge,
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
            | Self::CsrNotAllowed => 403,
            Self::NotFound => 404,
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
            Self::TooLarge => "TooLarge",
            Self::RateLimited => "RateLimited",
            Self::UpstreamUnavailable => "UpstreamUnavailable",
            Self::NotFound => "NotFound",
            Self::Internal => "Internal",
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
    pub message: String,
}

/// `GET /v1/nodes`: the nodes that bootstrapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodesResponse {
    pub api_version: String,
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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests_are_strict() {
        let text = r#"{"apiVersion":"shim.nodewright.io/v1","nodeGroup":"a","extra":1}"#;
        assert!(serde_json::from_str::<BootstrapRequest>(text).is_err());
        let text = r#"{"apiVersion":"shim.nodewright.io/v1","nodeGroup":"a"}"#;
        let request: BootstrapRequest = serde_json::from_str(text).unwrap();
        assert!(request.credentials.is_none());
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
        ] {
            assert!((400..500).contains(&code.status()), "{code}");
        }
    }
}
