//! `kube_env.yaml`: kops's `nodeup.BootConfig`, the small document the user data script
//! writes before it runs nodeup.
//!
//! nodeup reads it leniently (Go's JSON decoder ignores unknown and miscased keys); we
//! read it strictly, so a field this version does not know is an error that names it,
//! never a setting quietly left out.

use serde::{Deserialize, Serialize};

use super::KopsError;

/// `nodeup.BootConfig` (kops `pkg/apis/nodeup/config.go`), field names as kops writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeEnv {
    /// `aws`, `gce`, ... Only `aws` is translated.
    #[serde(rename = "CloudProvider")]
    pub cloud_provider: String,
    /// The state store (`s3://bucket/cluster`): the node reads its nodeupconfig there.
    #[serde(
        rename = "ConfigBase",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub config_base: Option<String>,
    /// kops-controller: the node asks it for its nodeupconfig and certificates.
    #[serde(
        rename = "ConfigServer",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub config_server: Option<ConfigServer>,
    /// With `dns: none`: the API load balancer's addresses, pinned in /etc/hosts for
    /// `api.internal.<cluster>` and `kops-controller.internal.<cluster>`.
    #[serde(
        rename = "APIServerIPs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub api_server_ips: Vec<String>,
    #[serde(rename = "ClusterName", default)]
    pub cluster_name: String,
    #[serde(rename = "InstanceGroupName", default)]
    pub instance_group_name: String,
    /// `Node`, `ControlPlane` (`Master`), `APIServer`, `Bastion`.
    #[serde(rename = "InstanceGroupRole", default)]
    pub instance_group_role: String,
    /// base64 (standard, padded) of the sha256 of the nodeupconfig's bytes.
    #[serde(rename = "NodeupConfigHash", default)]
    pub nodeup_config_hash: String,
    /// API server nodes only: where etcd is.
    #[serde(rename = "EtcdIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub etcd_ips: Vec<String>,
}

/// `nodeup.ConfigServerOptions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigServer {
    /// `https://kops-controller.internal.<cluster>:3988/`, tried in turn.
    #[serde(default)]
    pub servers: Vec<String>,
    /// The name to verify the servers' certificates for, when not the URL's host.
    #[serde(
        rename = "tlsServerName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub tls_server_name: String,
    /// PEM: the cluster CA, several certificates during a rotation. Trusted for
    /// kops-controller and, as `kubernetes-ca`, for the API server.
    #[serde(rename = "CACertificates", default)]
    pub ca_certificates: String,
}

/// The roles of a kops instance group, as kube_env spells them.
pub const ROLE_NODE: &str = "Node";

impl KubeEnv {
    /// Parses `kube_env.yaml` strictly; `source` names it in errors.
    pub fn parse(source: &str, text: &str) -> Result<Self, KopsError> {
        let env: Self = crate::spec::parse_yaml(source, text).map_err(KopsError::Document)?;
        let mut missing = Vec::new();
        for (field, value) in [
            ("ClusterName", &env.cluster_name),
            ("InstanceGroupName", &env.instance_group_name),
            ("InstanceGroupRole", &env.instance_group_role),
            ("NodeupConfigHash", &env.nodeup_config_hash),
        ] {
            if value.trim().is_empty() {
                missing.push(field);
            }
        }
        match (&env.config_base, &env.config_server) {
            (None, None) => missing.push("ConfigBase or ConfigServer"),
            (_, Some(server)) if server.servers.is_empty() => missing.push("ConfigServer.servers"),
            (_, Some(server))
                if !server
                    .ca_certificates
                    .contains("-----BEGIN CERTIFICATE-----") =>
            {
                missing.push("ConfigServer.CACertificates")
            }
            _ => {}
        }
        if !missing.is_empty() {
            return Err(KopsError::Invalid {
                source_name: source.to_owned(),
                detail: format!(
                    "kube_env lacks {} (nodeup needs them to find the node's configuration)",
                    missing.join(", ")
                ),
            });
        }
        Ok(env)
    }

    /// Where the nodeupconfig is read, for messages: kops-controller or the state store.
    pub fn describe_source(&self) -> String {
        match (&self.config_server, &self.config_base) {
            (Some(server), _) => format!("kops-controller {}", server.servers.join(", ")),
            (None, Some(base)) => format!(
                "{}/{}",
                base.trim_end_matches('/'),
                self.nodeup_config_key()
            ),
            (None, None) => "(nowhere)".to_owned(),
        }
    }

    /// `igconfig/<role>/<ig>/nodeupconfig.yaml`, below ConfigBase (nodeup's layout; the
    /// role is lower-cased: `node`, `control-plane`).
    pub fn nodeup_config_key(&self) -> String {
        let role = match self.instance_group_role.as_str() {
            "ControlPlane" | "Master" => "control-plane".to_owned(),
            other => other.to_ascii_lowercase(),
        };
        format!(
            "igconfig/{role}/{}/nodeupconfig.yaml",
            self.instance_group_name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str = "CloudProvider: aws
ClusterName: minimal.example.com
ConfigServer:
  CACertificates: |
    -----BEGIN CERTIFICATE-----
    MIIB
    -----END CERTIFICATE-----
  servers:
  - https://kops-controller.internal.minimal.example.com:3988/
InstanceGroupName: nodes
InstanceGroupRole: Node
NodeupConfigHash: oJXYdjC/tVl6EVHGd/0fZ8K0d9Bh0yWCpComcMlAFWE=
";

    #[test]
    fn reads_what_kops_writes() {
        let env = KubeEnv::parse("kube_env.yaml", ENV).unwrap();
        assert_eq!(env.cloud_provider, "aws");
        assert_eq!(env.instance_group_role, ROLE_NODE);
        let server = env.config_server.as_ref().unwrap();
        assert_eq!(server.servers.len(), 1);
        assert!(
            env.describe_source()
                .starts_with("kops-controller https://")
        );
        assert_eq!(
            env.nodeup_config_key(),
            "igconfig/node/nodes/nodeupconfig.yaml"
        );
    }

    #[test]
    fn an_unknown_field_is_named_with_its_line() {
        let text = ENV.replace(
            "InstanceGroupName: nodes\n",
            "InstanceGroupName: nodes\nWarmPool: true\n",
        );
        let err = KubeEnv::parse("kube_env.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kube_env.yaml") && err.contains("WarmPool"),
            "{err}"
        );
        assert!(err.contains("line 11"), "{err}");
        // Case matters (nodeup would accept `clustername`; a typo is not a setting).
        let text = ENV.replace("ClusterName:", "Clustername:");
        let err = KubeEnv::parse("kube_env.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Clustername"), "{err}");
    }

    #[test]
    fn missing_fields_are_listed() {
        let text = ENV.replace(
            "NodeupConfigHash: oJXYdjC/tVl6EVHGd/0fZ8K0d9Bh0yWCpComcMlAFWE=\n",
            "",
        );
        let err = KubeEnv::parse("kube_env.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("NodeupConfigHash"), "{err}");
        let err = KubeEnv::parse("k", "CloudProvider: aws\n")
            .unwrap_err()
            .to_string();
        for field in [
            "ClusterName",
            "InstanceGroupName",
            "ConfigBase or ConfigServer",
        ] {
            assert!(err.contains(field), "{err}");
        }
    }
}
