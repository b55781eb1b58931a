//! The shim's configuration file (`ShimConfig`), rendered by the control-plane model.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub const CONFIG_API_VERSION: &str = "shim.nodewright.io/v1alpha1";
pub const CONFIG_KIND: &str = "ShimConfig";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ShimConfig {
    pub api_version: String,
    pub kind: String,
    /// The cluster whose nodes this shim bootstraps; instances must carry the tag
    /// `kubernetes.io/cluster/<clusterName>` (owned or shared).
    pub cluster_name: String,
    /// `address:port` to listen on (HTTPS only).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The shim's own serving certificate and key (issued by the control plane).
    pub tls: KeyPairFiles,
    /// The CA that signs kubelet certificates; its certificate is the CA bundle nodes get.
    pub ca: KeyPairFiles,
    pub aws: AwsSettings,
    /// Where bootstrap records live (S3, with conditional writes).
    pub state: StateSettings,
    pub node_groups: Vec<NodeGroupSettings>,
    /// The EC2 tag whose value names an instance's node group.
    #[serde(default = "default_node_group_tag")]
    pub node_group_tag: String,
    #[serde(default)]
    pub certificates: CertificateSettings,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyPairFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsSettings {
    pub region: String,
    /// The account the cluster's node roles live in.
    pub account_id: String,
    #[serde(default = "default_partition")]
    pub partition: String,
    /// STS endpoint proofs are replayed to; default: the regional endpoint
    /// (`AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL` override it, as for every AWS tool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StateSettings {
    pub bucket: String,
    /// Key prefix of the records, e.g. `prod.example.com/controller-shim/nodes/`.
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeGroupSettings {
    pub name: String,
    /// `s3://bucket/key` or `file:///path` of the group's node spec, served verbatim.
    pub node_spec: String,
    /// IAM role names (not ARNs) whose instance sessions may bootstrap into this group.
    pub roles: Vec<String>,
    #[serde(default)]
    pub node_name: NodeNaming,
    /// Whether a node that already bootstrapped may get new credentials for a new key.
    #[serde(default)]
    pub allow_rebootstrap: bool,
}

/// How a node's Kubernetes name is derived from EC2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeNaming {
    /// The private DNS name (`ip-10-0-1-23.ec2.internal` or `i-0123….ec2.internal`).
    #[default]
    PrivateDnsName,
    InstanceId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CertificateSettings {
    /// Validity of the kubelet certificates; the kubelet rotates them itself after.
    #[serde(default = "default_validity_days")]
    pub validity_days: u32,
    /// NotBefore is backdated this much, for nodes whose clock is behind.
    #[serde(default = "default_backdate_minutes")]
    pub backdate_minutes: u32,
}

impl Default for CertificateSettings {
    fn default() -> Self {
        Self {
            validity_days: default_validity_days(),
            backdate_minutes: default_backdate_minutes(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Sustained bootstrap requests per second over all clients; beyond it, 429.
    #[serde(default = "default_rate")]
    pub requests_per_second: u32,
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Bootstrap requests handled at once (upstream calls in flight); more wait.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How far a proof's signature date may be from the shim's clock.
    #[serde(default = "default_skew")]
    pub max_clock_skew_seconds: u64,
    /// How long a node spec read from its source is served before it is read again.
    #[serde(default = "default_spec_ttl")]
    pub spec_cache_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: default_max_request_bytes(),
            requests_per_second: default_rate(),
            burst: default_burst(),
            concurrency: default_concurrency(),
            max_clock_skew_seconds: default_skew(),
            spec_cache_seconds: default_spec_ttl(),
        }
    }
}

fn default_listen() -> String {
    format!("0.0.0.0:{}", crate::protocol::DEFAULT_PORT)
}
fn default_node_group_tag() -> String {
    "nodewright.io/node-group".to_owned()
}
fn default_partition() -> String {
    "aws".to_owned()
}
fn default_validity_days() -> u32 {
    365
}
fn default_backdate_minutes() -> u32 {
    60
}
fn default_max_request_bytes() -> usize {
    64 << 10
}
fn default_rate() -> u32 {
    200
}
fn default_burst() -> u32 {
    1000
}
fn default_concurrency() -> usize {
    256
}
fn default_skew() -> u64 {
    300
}
fn default_spec_ttl() -> u64 {
    10
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Parse { path: String, detail: String },
    #[error("{path} is invalid:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: String, problems: Vec<String> },
}

impl ShimConfig {
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        Self::parse(&name, &text)
    }

    pub fn parse(name: &str, text: &str) -> Result<Self, ConfigError> {
        let config: Self = yaml_serde::from_str(text).map_err(|e| ConfigError::Parse {
            path: name.to_owned(),
            detail: e.to_string(),
        })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: name.to_owned(),
                problems,
            })
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.api_version != CONFIG_API_VERSION {
            out.push(format!("apiVersion must be {CONFIG_API_VERSION}"));
        }
        if self.kind != CONFIG_KIND {
            out.push(format!("kind must be {CONFIG_KIND}"));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            out.push(format!("listen: {:?} is not address:port", self.listen));
        }
        if self.aws.account_id.len() != 12
            || !self.aws.account_id.bytes().all(|b| b.is_ascii_digit())
        {
            out.push(format!(
                "aws.accountId: {:?} is not a 12-digit account id",
                self.aws.account_id
            ));
        }
        if self.node_groups.is_empty() {
            out.push("nodeGroups: at least one node group is needed".to_owned());
        }
        let mut names = BTreeSet::new();
        for (i, group) in self.node_groups.iter().enumerate() {
            if !names.insert(group.name.as_str()) {
                out.push(format!(
                    "nodeGroups[{i}].name: {} appears twice",
                    group.name
                ));
            }
            if group.roles.is_empty() {
                out.push(format!(
                    "nodeGroups[{i}].roles: at least one role is needed"
                ));
            }
            for role in &group.roles {
                if role.starts_with("arn:") || role.contains('/') {
                    out.push(format!(
                        "nodeGroups[{i}].roles: {role:?} must be a role name, not an ARN or path"
                    ));
                }
            }
            if !(group.node_spec.starts_with("s3://") || group.node_spec.starts_with("file:///")) {
                out.push(format!(
                    "nodeGroups[{i}].nodeSpec: {:?} must be s3://bucket/key or file:///path",
                    group.node_spec
                ));
            }
        }
        if self.state.bucket.is_empty() {
            out.push("state.bucket is empty".to_owned());
        }
        if self.certificates.validity_days == 0 {
            out.push("certificates.validityDays must be at least 1".to_owned());
        }
        if self.limits.requests_per_second == 0
            || self.limits.burst == 0
            || self.limits.concurrency == 0
        {
            out.push(
                "limits: requestsPerSecond, burst and concurrency must be positive".to_owned(),
            );
        }
        out
    }

    pub fn node_group(&self, name: &str) -> Option<&NodeGroupSettings> {
        self.node_groups.iter().find(|g| g.name == name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub const EXAMPLE: &str = "\
apiVersion: shim.nodewright.io/v1alpha1
kind: ShimConfig
clusterName: prod.example.com
tls:
  certFile: /etc/kubernetes/controller-shim/serving.crt
  keyFile: /etc/kubernetes/controller-shim/serving.key
ca:
  certFile: /etc/kubernetes/pki/ca.crt
  keyFile: /etc/kubernetes/pki/ca.key
aws:
  region: us-east-1
  accountId: \"123456789012\"
state:
  bucket: nodewright-state
  prefix: prod.example.com/controller-shim/nodes/
nodeGroups:
  - name: nodes-us-east-1a
    nodeSpec: s3://nodewright-state/prod.example.com/nodegroups/nodes-us-east-1a/nodespec.yaml
    roles: [nodes.prod.example.com]
";

    #[test]
    fn parses_with_defaults() {
        let config = ShimConfig::parse("c", EXAMPLE).unwrap();
        assert_eq!(config.listen, "0.0.0.0:3988");
        assert_eq!(config.aws.partition, "aws");
        assert_eq!(config.node_groups[0].node_name, NodeNaming::PrivateDnsName);
        assert!(!config.node_groups[0].allow_rebootstrap);
        assert_eq!(config.limits.max_request_bytes, 65536);
    }

    #[test]
    fn names_every_problem() {
        let text = EXAMPLE.replace("\"123456789012\"", "\"12345\"").replace(
            "[nodes.prod.example.com]",
            "[\"arn:aws:iam::123456789012:role/x\"]",
        );
        let err = ShimConfig::parse("shim.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("aws.accountId"), "{err}");
        assert!(err.contains("nodeGroups[0].roles"), "{err}");
        assert!(err.contains("shim.yaml"), "{err}");
        let err = ShimConfig::parse("c", &format!("{EXAMPLE}bogus: 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
