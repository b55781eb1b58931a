//! The shim's configuration file (`ShimConfig`), rendered by the control-plane model.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::groups::NodeGroup;

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
    /// `address:port` workers reach (HTTPS only): `/v1/bootstrap` and `/healthz`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `address:port` of the operators' listener (plain HTTP, a loopback address only):
    /// the fleet view `/v1/nodes`, `/metrics` and `/healthz`.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// The shim's own serving certificate and key (issued by the control plane).
    pub tls: KeyPairFiles,
    /// The CA that signs kubelet certificates; its certificate is the CA bundle nodes get,
    /// and the CA a bootstrapped node's client certificate must chain to.
    pub ca: KeyPairFiles,
    pub aws: AwsSettings,
    /// Where bootstrap records live (S3, with conditional writes).
    pub state: StateSettings,
    /// The node groups: a list, or the URL (`s3://…` or `file:///…`) of a
    /// [`crate::groups::NodeGroups`] document the shim re-reads while it runs.
    pub node_groups: NodeGroupsSource,
    /// The EC2 tag whose value names an instance's node group.
    #[serde(default = "default_node_group_tag")]
    pub node_group_tag: String,
    #[serde(default)]
    pub certificates: CertificateSettings,
    #[serde(default)]
    pub limits: Limits,
}

/// Where the node groups are defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeGroupsSource {
    /// In this file (changing them means changing the file, i.e. the control plane).
    Inline(Vec<NodeGroup>),
    /// In a document in the state store, re-read at run time.
    Store(String),
}

impl Serialize for NodeGroupsSource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Inline(groups) => groups.serialize(serializer),
            Self::Store(url) => url.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for NodeGroupsSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NodeGroupsSource;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of node groups, or the URL of a NodeGroups document")
            }
            fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<Self::Value, E> {
                Ok(NodeGroupsSource::Store(url.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::<NodeGroup>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(NodeGroupsSource::Inline)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
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
pub struct CertificateSettings {
    /// Validity of the kubelet and kube-proxy certificates; the kubelet rotates its own.
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

/// Deadlines and limits. The per-source limits come first and cost nothing upstream;
/// the global upstream budget is charged only once a request's proof passed the checks
/// the shim makes alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// The global upstream budget: bootstrap requests per second that may call STS, EC2
    /// and S3; beyond it, 429.
    #[serde(default = "default_rate")]
    pub requests_per_second: u32,
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Bootstrap requests talking to AWS at once; more wait (within the request deadline).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Requests per second from one source address (an IPv6 source counts by its /64).
    #[serde(default = "default_per_source_rate")]
    pub per_source_requests_per_second: u32,
    #[serde(default = "default_per_source_burst")]
    pub per_source_burst: u32,
    /// Connections open at once from one source address.
    #[serde(default = "default_per_source_connections")]
    pub per_source_connections: usize,
    /// Connections open at once in all; also kept below the open-files limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A TLS handshake, and a request's headers, must arrive within this.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_seconds: u64,
    /// A request's body must arrive within this of its headers (else 408).
    #[serde(default = "default_body_timeout")]
    pub body_timeout_seconds: u64,
    /// A request is answered within this of its headers, upstream calls and queueing
    /// included: 408 if its body was still arriving, else 503 (retry).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    /// A connection is closed (after its request in flight) once this old.
    #[serde(default = "default_connection_age")]
    pub connection_max_age_seconds: u64,
    /// How far a proof's signature date may be from the shim's clock.
    #[serde(default = "default_skew")]
    pub max_clock_skew_seconds: u64,
    /// How long after a bootstrap the same key may ask again without its certificate
    /// (the node lost the answer); after it, only the certificate gets the node anything.
    #[serde(default = "default_retry_window")]
    pub same_key_retry_seconds: u64,
    /// How often node groups kept in the store are re-read.
    #[serde(default = "default_groups_refresh")]
    pub node_groups_refresh_seconds: u64,
    /// A request naming an unknown group re-reads them at most this often.
    #[serde(default = "default_groups_reread")]
    pub node_groups_min_reread_seconds: u64,
    /// How often the fleet view's cache is brought up to date from the store (records
    /// other replicas wrote).
    #[serde(default = "default_fleet_refresh")]
    pub fleet_refresh_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: default_max_request_bytes(),
            requests_per_second: default_rate(),
            burst: default_burst(),
            concurrency: default_concurrency(),
            per_source_requests_per_second: default_per_source_rate(),
            per_source_burst: default_per_source_burst(),
            per_source_connections: default_per_source_connections(),
            max_connections: default_max_connections(),
            handshake_timeout_seconds: default_handshake_timeout(),
            body_timeout_seconds: default_body_timeout(),
            request_timeout_seconds: default_request_timeout(),
            connection_max_age_seconds: default_connection_age(),
            max_clock_skew_seconds: default_skew(),
            same_key_retry_seconds: default_retry_window(),
            node_groups_refresh_seconds: default_groups_refresh(),
            node_groups_min_reread_seconds: default_groups_reread(),
            fleet_refresh_seconds: default_fleet_refresh(),
        }
    }
}

fn default_listen() -> String {
    format!("0.0.0.0:{}", crate::protocol::DEFAULT_PORT)
}
fn default_admin_listen() -> String {
    format!("127.0.0.1:{}", crate::protocol::DEFAULT_ADMIN_PORT)
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
// A node asks once per boot; a proxy or NAT in front of many nodes is what needs room.
fn default_per_source_rate() -> u32 {
    20
}
fn default_per_source_burst() -> u32 {
    50
}
fn default_per_source_connections() -> usize {
    64
}
fn default_max_connections() -> usize {
    8192
}
fn default_handshake_timeout() -> u64 {
    5
}
fn default_body_timeout() -> u64 {
    5
}
fn default_request_timeout() -> u64 {
    30
}
fn default_connection_age() -> u64 {
    60
}
fn default_skew() -> u64 {
    300
}
fn default_retry_window() -> u64 {
    300
}
fn default_groups_refresh() -> u64 {
    30
}
fn default_groups_reread() -> u64 {
    5
}
fn default_fleet_refresh() -> u64 {
    60
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
        let config: Self = crate::groups::parse_yaml(text).map_err(|detail| {
            // The form groups had before specs were kept by digest: say what replaced it.
            let detail = if detail.contains("unknown field `nodeSpec`") {
                format!(
                    "{detail} (nodeSpec, one spec replaced in place, became nodeSpecs: the prefix under which each spec is kept by digest, <prefix>nodespec/<sha256>.yaml)"
                )
            } else {
                detail
            };
            ConfigError::Parse {
                path: name.to_owned(),
                detail,
            }
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
        if self.listen.parse::<SocketAddr>().is_err() {
            out.push(format!("listen: {:?} is not address:port", self.listen));
        }
        match self.admin_listen.parse::<SocketAddr>() {
            Ok(address) if address.ip().is_loopback() => {}
            Ok(_) => out.push(format!(
                "adminListen: {:?} must be a loopback address: the fleet view names every node",
                self.admin_listen
            )),
            Err(_) => out.push(format!(
                "adminListen: {:?} is not address:port",
                self.admin_listen
            )),
        }
        if self.aws.account_id.len() != 12
            || !self.aws.account_id.bytes().all(|b| b.is_ascii_digit())
        {
            out.push(format!(
                "aws.accountId: {:?} is not a 12-digit account id",
                self.aws.account_id
            ));
        }
        match &self.node_groups {
            NodeGroupsSource::Inline(groups) => {
                if groups.is_empty() {
                    out.push(
                        "nodeGroups: list at least one node group, or give the URL of a NodeGroups document"
                            .to_owned(),
                    );
                }
                crate::groups::check_groups("nodeGroups", groups, &mut out);
            }
            NodeGroupsSource::Store(url) => {
                let ok = url
                    .strip_prefix("s3://")
                    .and_then(|rest| rest.split_once('/'))
                    .is_some_and(|(bucket, key)| !bucket.is_empty() && !key.is_empty())
                    || url.starts_with("file:///");
                if !ok || url.ends_with('/') {
                    out.push(format!(
                        "nodeGroups: {url:?} must be s3://bucket/key or file:///path of a NodeGroups document"
                    ));
                }
            }
        }
        if self.state.bucket.is_empty() {
            out.push("state.bucket is empty".to_owned());
        }
        if self.certificates.validity_days == 0 {
            out.push("certificates.validityDays must be at least 1".to_owned());
        }
        let limits = &self.limits;
        for (name, value) in [
            ("requestsPerSecond", u64::from(limits.requests_per_second)),
            ("burst", u64::from(limits.burst)),
            ("concurrency", limits.concurrency as u64),
            (
                "perSourceRequestsPerSecond",
                u64::from(limits.per_source_requests_per_second),
            ),
            ("perSourceBurst", u64::from(limits.per_source_burst)),
            ("perSourceConnections", limits.per_source_connections as u64),
            ("maxConnections", limits.max_connections as u64),
            ("handshakeTimeoutSeconds", limits.handshake_timeout_seconds),
            ("bodyTimeoutSeconds", limits.body_timeout_seconds),
            ("requestTimeoutSeconds", limits.request_timeout_seconds),
            ("connectionMaxAgeSeconds", limits.connection_max_age_seconds),
            (
                "nodeGroupsRefreshSeconds",
                limits.node_groups_refresh_seconds,
            ),
            ("fleetRefreshSeconds", limits.fleet_refresh_seconds),
        ] {
            if value == 0 {
                out.push(format!("limits.{name} must be positive"));
            }
        }
        if limits.body_timeout_seconds > limits.request_timeout_seconds {
            out.push(
                "limits.bodyTimeoutSeconds must not be longer than requestTimeoutSeconds"
                    .to_owned(),
            );
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::groups::{NodeNaming, Rebootstrap};

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
    nodeSpecs: s3://nodewright-state/prod.example.com/nodegroups/nodes-us-east-1a/
    roles: [nodes.prod.example.com]
";

    pub fn inline_groups(config: &ShimConfig) -> &[NodeGroup] {
        match &config.node_groups {
            NodeGroupsSource::Inline(groups) => groups,
            NodeGroupsSource::Store(url) => panic!("groups in the store at {url}"),
        }
    }

    #[test]
    fn parses_with_defaults() {
        let config = ShimConfig::parse("c", EXAMPLE).unwrap();
        assert_eq!(config.listen, "0.0.0.0:3988");
        assert_eq!(config.admin_listen, "127.0.0.1:3989");
        assert_eq!(config.aws.partition, "aws");
        let group = &inline_groups(&config)[0];
        assert_eq!(group.node_name, NodeNaming::PrivateDnsName);
        assert_eq!(group.rebootstrap, Rebootstrap::Never);
        assert_eq!(config.limits.max_request_bytes, 65536);
        assert_eq!(config.limits.body_timeout_seconds, 5);
    }

    #[test]
    fn groups_may_live_in_the_store() {
        let text = EXAMPLE.split("nodeGroups:").next().unwrap().to_owned()
            + "nodeGroups: s3://nodewright-state/prod.example.com/controller-shim/node-groups.yaml\n";
        let config = ShimConfig::parse("c", &text).unwrap();
        assert_eq!(
            config.node_groups,
            NodeGroupsSource::Store(
                "s3://nodewright-state/prod.example.com/controller-shim/node-groups.yaml".into()
            )
        );
        // And it is written back the same way.
        let again = ShimConfig::parse("again", &yaml_serde::to_string(&config).unwrap()).unwrap();
        assert_eq!(again, config);
        let bad = text.replace("s3://nodewright-state/", "https://example.com/");
        let err = ShimConfig::parse("c", &bad).unwrap_err().to_string();
        assert!(err.contains("nodeGroups: \"https://"), "{err}");
    }

    #[test]
    fn names_every_problem() {
        let text = EXAMPLE
            .replace("\"123456789012\"", "\"12345\"")
            .replace(
                "[nodes.prod.example.com]",
                "[\"arn:aws:iam::123456789012:role/x\"]",
            )
            .replace("clusterName:", "adminListen: 0.0.0.0:3989\nclusterName:");
        let err = ShimConfig::parse("shim.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("aws.accountId"), "{err}");
        assert!(err.contains("nodeGroups[0].roles"), "{err}");
        assert!(err.contains("adminListen"), "{err}");
        assert!(err.contains("shim.yaml"), "{err}");
        let err = ShimConfig::parse("c", &format!("{EXAMPLE}bogus: 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        // An inline group's own unknown field is named with its place.
        let err = ShimConfig::parse("c", &EXAMPLE.replace("    roles:", "    rolez:"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nodeGroups[0]") && err.contains("rolez"),
            "{err}"
        );
    }

    #[test]
    fn the_old_single_spec_url_says_what_replaced_it() {
        let text = EXAMPLE.replace(
            "nodeSpecs: s3://nodewright-state/prod.example.com/nodegroups/nodes-us-east-1a/",
            "nodeSpec: s3://nodewright-state/prod.example.com/nodegroups/nodes-us-east-1a/nodespec.yaml",
        );
        let err = ShimConfig::parse("c", &text).unwrap_err().to_string();
        assert!(err.contains("nodeSpecs"), "{err}");
        assert!(err.contains("<prefix>nodespec/<sha256>.yaml"), "{err}");
    }
}
