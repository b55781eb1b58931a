//! `BootConfig`: the small document EC2 user data carries.
//!
//! It says which cluster and node group the instance belongs to, its role, where its
//! node spec lives and the sha256 the spec's bytes must have. Everything else about the
//! node is in the node spec, so user data stays small and holds no secrets.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{DnsName, Sha256Hex};
use super::{Role, parse_yaml, validate::Problems};
use crate::spec::SpecError;

pub const BOOT_CONFIG_KIND: &str = "BootConfig";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BootConfig {
    /// Always `nodewright.io/v1alpha1`.
    pub api_version: String,
    /// Always `BootConfig`.
    pub kind: String,
    /// The cluster this instance joins, e.g. `prod.example.com`.
    pub cluster_name: DnsName,
    /// The node group (instance group) the instance was launched from.
    pub node_group: DnsName,
    pub role: Role,
    /// Where the node spec is and the digest its bytes must have.
    pub node_spec: NodeSpecSource,
    /// Proxy for every outbound call except IMDS. Applied before the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySettings>,
    /// Extra PEM certificates trusted for HTTPS downloads, beside the OS store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

/// Where the node spec comes from: a URL (control-plane nodes, and workers in clusters
/// without controller-shim) or controller-shim (workers), never both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSpecSource {
    /// `s3://bucket/key` or `file:///absolute/path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Ask controller-shim, which proves the instance's identity and also issues the
    /// kubelet's certificates (workers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_shim: Option<ControllerShimSource>,
    /// sha256 of the node spec's bytes, lowercase hex. A spec with any other digest is refused.
    pub sha256: Sha256Hex,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControllerShimSource {
    /// `https://host:port` of each controller-shim server, tried in turn.
    pub servers: Vec<String>,
    /// PEM: the only CA trusted for the servers' certificates.
    pub ca: String,
}

impl NodeSpecSource {
    /// What to show for the source in logs and records.
    pub fn describe(&self) -> String {
        match (&self.url, &self.controller_shim) {
            (Some(url), _) => url.clone(),
            (None, Some(shim)) => format!("controller-shim {}", shim.servers.join(", ")),
            (None, None) => "(none)".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxySettings {
    /// Proxy URL for plain HTTP, e.g. `http://proxy.internal:3128`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Proxy URL for HTTPS (used with CONNECT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<String>,
    /// Hosts, domains (`.example.com`) and CIDRs that bypass the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_proxy: Vec<String>,
}

impl BootConfig {
    /// Parses and checks a boot config. `source` names the document in errors.
    pub fn parse(source: &str, text: &str) -> Result<Self, SpecError> {
        let config: BootConfig = parse_yaml(source, text)?;
        let mut problems = Problems::new(source, text);
        problems.check_header("", &config.api_version, &config.kind, BOOT_CONFIG_KIND);
        match (&config.node_spec.url, &config.node_spec.controller_shim) {
            (Some(url), None) => {
                if let Err(message) = super::location::SpecLocation::parse(url) {
                    problems.add("nodeSpec.url", message.to_string());
                }
            }
            (None, Some(shim)) => {
                if config.role != Role::Worker {
                    problems.add(
                        "nodeSpec.controllerShim",
                        "only workers bootstrap through controller-shim (the control plane runs it)"
                            .to_owned(),
                    );
                }
                if shim.servers.is_empty() {
                    problems.add(
                        "nodeSpec.controllerShim.servers",
                        "at least one server is needed".to_owned(),
                    );
                }
                for server in &shim.servers {
                    if !server.starts_with("https://") {
                        problems.add(
                            "nodeSpec.controllerShim.servers",
                            format!("{server:?} must be an https:// URL"),
                        );
                    }
                }
                if !shim.ca.contains("-----BEGIN CERTIFICATE-----") {
                    problems.add(
                        "nodeSpec.controllerShim.ca",
                        "must hold PEM certificates".to_owned(),
                    );
                }
            }
            (Some(_), Some(_)) => problems.add(
                "nodeSpec",
                "give either url or controllerShim, not both".to_owned(),
            ),
            (None, None) => problems.add("nodeSpec", "needs url or controllerShim".to_owned()),
        }
        if let Some(proxy) = &config.proxy {
            for (field, url) in [("http", &proxy.http), ("https", &proxy.https)] {
                if let Some(url) = url
                    && !(url.starts_with("http://") || url.starts_with("https://"))
                {
                    problems.add(
                        &format!("proxy.{field}"),
                        format!("proxy URL {url:?} must start with http:// or https://"),
                    );
                }
            }
        }
        if let Some(bundle) = &config.ca_bundle
            && !bundle.contains("-----BEGIN CERTIFICATE-----")
        {
            problems.add("caBundle", "must hold PEM certificates".to_owned());
        }
        problems.finish()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
apiVersion: nodewright.io/v1alpha1
kind: BootConfig
clusterName: prod.example.com
nodeGroup: nodes-us-east-1a
role: worker
nodeSpec:
  url: s3://state/prod.example.com/nodespec.yaml
  sha256: 0000000000000000000000000000000000000000000000000000000000000000
proxy:
  https: http://proxy.internal:3128
  noProxy: [.internal]
";

    #[test]
    fn parses_a_boot_config() {
        let config = BootConfig::parse("user data", GOOD).unwrap();
        assert_eq!(config.role, Role::Worker);
        assert_eq!(config.node_group.as_str(), "nodes-us-east-1a");
        assert_eq!(config.proxy.unwrap().no_proxy, [".internal"]);
    }

    #[test]
    fn rejects_unknown_fields_with_path_and_line() {
        let text = GOOD.replace("  sha256:", "  sha265:");
        let err = BootConfig::parse("user data", &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nodeSpec"), "{err}");
        assert!(err.contains("sha265"), "{err}");
        assert!(err.contains("line 8"), "{err}");
    }

    #[test]
    fn rejects_a_bad_url_scheme() {
        let text = GOOD.replace("s3://state", "ftp://state");
        let err = BootConfig::parse("user data", &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nodeSpec.url"), "{err}");
        assert!(err.contains("line 7"), "{err}");
    }

    const SHIM: &str = "\
apiVersion: nodewright.io/v1alpha1
kind: BootConfig
clusterName: prod.example.com
nodeGroup: nodes-us-east-1a
role: worker
nodeSpec:
  controllerShim:
    servers: [https://api.internal.prod.example.com:3988]
    ca: |
      -----BEGIN CERTIFICATE-----
      MIIB
      -----END CERTIFICATE-----
  sha256: 0000000000000000000000000000000000000000000000000000000000000000
";

    #[test]
    fn parses_a_controller_shim_source() {
        let config = BootConfig::parse("user data", SHIM).unwrap();
        let shim = config.node_spec.controller_shim.unwrap();
        assert_eq!(shim.servers, ["https://api.internal.prod.example.com:3988"]);
        assert!(config.node_spec.url.is_none());
    }

    #[test]
    fn controller_shim_sources_are_checked() {
        let control_plane = SHIM.replace("role: worker", "role: control-plane");
        let err = BootConfig::parse("user data", &control_plane)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nodeSpec.controllerShim"), "{err}");
        let plain = SHIM.replace("https://api", "http://api");
        let err = BootConfig::parse("user data", &plain)
            .unwrap_err()
            .to_string();
        assert!(err.contains("https://"), "{err}");
        let both = SHIM.replace("  sha256:", "  url: s3://state/spec.yaml\n  sha256:");
        let err = BootConfig::parse("user data", &both)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
        let neither = GOOD.replace("  url: s3://state/prod.example.com/nodespec.yaml\n", "");
        let err = BootConfig::parse("user data", &neither)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs url or controllerShim"), "{err}");
    }

    #[test]
    fn rejects_a_bad_kind() {
        let text = GOOD.replace("kind: BootConfig", "kind: NodeSpec");
        let err = BootConfig::parse("user data", &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kind"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }
}
