//! kops-controller's bootstrap protocol (`pkg/apis/nodeup/bootstrap.go`): one JSON POST
//! to `/bootstrap`, authenticated by the `Authorization` header (see `token`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "bootstrap.kops.k8s.io/v1alpha1";
pub const PATH: &str = "/bootstrap";
/// kops-controller's port (kops `wellknownports.KopsControllerPort`).
pub const PORT: u16 = 3988;

/// The certificates a worker asks for, and the keyset each is issued from.
pub const CERTIFICATES: &[&str] = &["kubelet", "kubelet-server", "kube-proxy"];

/// `nodeup.BootstrapRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapRequest {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Certificate name -> the node's public key, PEM labelled `RSA PUBLIC KEY` (kops's
    /// label for any PKIX key).
    pub certs: BTreeMap<String, String>,
    /// CA keyset name -> the keypair id the node expects its certificates from.
    #[serde(rename = "keypairIDs")]
    pub keypair_ids: BTreeMap<String, String>,
    #[serde(rename = "includeNodeConfig")]
    pub include_node_config: bool,
}

/// `nodeup.BootstrapResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BootstrapResponse {
    #[serde(rename = "Certs", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub certs: BTreeMap<String, String>,
    #[serde(
        rename = "nodeConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub node_config: Option<NodeConfig>,
}

/// `nodeup.NodeConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeConfig {
    /// The nodeupconfig's bytes (its hash is kube_env's NodeupConfigHash).
    #[serde(rename = "nodeupConfig", default)]
    pub nodeup_config: String,
    /// Secrets by name (`dockerconfig`), base64 in JSON as Go writes `[]byte`.
    #[serde(rename = "nodeSecrets", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_secrets: BTreeMap<String, String>,
}
