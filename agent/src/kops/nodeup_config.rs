//! The nodeupconfig: kops's `nodeup.Config` (`pkg/apis/nodeup/config.go`), the document
//! kops keeps per instance group at `<ConfigBase>/igconfig/<role>/<ig>/nodeupconfig.yaml`
//! and kops-controller serves to workers.
//!
//! Its bytes are checked against kube_env's `NodeupConfigHash` before anything reads
//! them. Every field kops can write is typed here, and an unknown one is an error naming
//! it: a newer kops that adds a setting gets a refusal, not a node without it. Fields
//! nodewright always refuses are kept as raw values: only their presence matters.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::KopsError;
use super::kubelet_config::KubeletConfigSpec;

/// Largest nodeupconfig read (kops's are a few KiB; the assets list is the bulk).
pub const MAX_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeupConfig {
    /// By architecture (`amd64`, `arm64`): `sha256@url[,url...]`, with no names.
    #[serde(rename = "Assets")]
    pub assets: BTreeMap<String, Option<Vec<String>>>,
    /// Container images to preload, by architecture.
    #[serde(rename = "images", skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, Option<Vec<Value>>>,
    #[serde(rename = "ClusterName")]
    pub cluster_name: String,
    #[serde(
        rename = "ApiserverAdditionalIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub apiserver_additional_ips: Vec<String>,
    #[serde(rename = "KubernetesVersion")]
    pub kubernetes_version: String,
    /// Extra OS packages.
    #[serde(rename = "packages", skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    #[serde(rename = "configStore", skip_serializing_if = "Option::is_none")]
    pub config_store: Option<Value>,
    #[serde(rename = "EtcdClusterNames", skip_serializing_if = "Vec::is_empty")]
    pub etcd_cluster_names: Vec<String>,
    #[serde(rename = "etcdManifests", skip_serializing_if = "Vec::is_empty")]
    pub etcd_manifests: Vec<String>,
    #[serde(rename = "channelsManifest", skip_serializing_if = "String::is_empty")]
    pub channels_manifest: String,
    /// CA certificates by keyset name (`kubernetes-ca`); workers that ask
    /// kops-controller get the CA from kube_env instead.
    #[serde(rename = "CAs")]
    pub cas: Option<BTreeMap<String, String>>,
    /// The keypair id of each CA the node's certificates are issued by.
    #[serde(rename = "KeypairIDs")]
    pub keypair_ids: Option<BTreeMap<String, String>>,
    #[serde(rename = "DefaultMachineType", skip_serializing_if = "Option::is_none")]
    pub default_machine_type: Option<String>,
    #[serde(rename = "EnableLifecycleHook")]
    pub enable_lifecycle_hook: bool,
    #[serde(rename = "staticManifests", skip_serializing_if = "Vec::is_empty")]
    pub static_manifests: Vec<Value>,
    #[serde(rename = "KubeletConfig")]
    pub kubelet_config: KubeletConfigSpec,
    /// `null` when kube-proxy is off (a CNI replaces it).
    #[serde(rename = "KubeProxy")]
    pub kube_proxy: Option<KubeProxyConfig>,
    #[serde(rename = "Networking")]
    pub networking: Networking,
    #[serde(rename = "InstallCNIAssets")]
    pub install_cni_assets: bool,
    #[serde(rename = "UseCiliumEtcd")]
    pub use_cilium_etcd: bool,
    #[serde(rename = "UsesKubenet")]
    pub uses_kubenet: bool,
    #[serde(rename = "NTPUnmanaged")]
    pub ntp_unmanaged: bool,
    #[serde(
        rename = "ServiceNodePortRange",
        skip_serializing_if = "String::is_empty"
    )]
    pub service_node_port_range: String,
    /// `key = value` lines, with comments and blank lines, as sysctl.d takes them.
    #[serde(rename = "SysctlParameters", skip_serializing_if = "Vec::is_empty")]
    pub sysctl_parameters: Vec<String>,
    /// `automatic` (the default) or `external`.
    #[serde(rename = "UpdatePolicy")]
    pub update_policy: String,
    #[serde(rename = "VolumeMounts", skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<Value>,
    #[serde(rename = "FileAssets", skip_serializing_if = "Vec::is_empty")]
    pub file_assets: Vec<FileAsset>,
    /// The instance group's hooks, then the cluster's; `null` for none.
    #[serde(rename = "Hooks")]
    pub hooks: Vec<Option<Vec<Value>>>,
    #[serde(rename = "containerdConfig", skip_serializing_if = "Option::is_none")]
    pub containerd: Option<ContainerdConfig>,
    #[serde(rename = "APIServerConfig", skip_serializing_if = "Option::is_none")]
    pub api_server_config: Option<Value>,
    #[serde(rename = "ControlPlaneConfig", skip_serializing_if = "Option::is_none")]
    pub control_plane_config: Option<Value>,
    #[serde(rename = "DNSZone", skip_serializing_if = "String::is_empty")]
    pub dns_zone: String,
    #[serde(rename = "NvidiaGPU", skip_serializing_if = "Option::is_none")]
    pub nvidia_gpu: Option<Value>,
    #[serde(rename = "GVisor", skip_serializing_if = "Option::is_none")]
    pub gvisor: Option<Value>,
    #[serde(
        rename = "disableSecurityGroupIngress",
        skip_serializing_if = "Option::is_none"
    )]
    pub disable_security_group_ingress: Option<bool>,
    #[serde(rename = "elbSecurityGroup", skip_serializing_if = "Option::is_none")]
    pub elb_security_group: Option<String>,
    #[serde(
        rename = "nlbSecurityGroupMode",
        skip_serializing_if = "Option::is_none"
    )]
    pub nlb_security_group_mode: Option<String>,
    #[serde(rename = "nodeIPFamilies", skip_serializing_if = "Vec::is_empty")]
    pub node_ip_families: Vec<String>,
    /// Name the node after its private DNS name instead of its instance id.
    #[serde(rename = "useIPBasedNodeNames")]
    pub use_ip_based_node_names: bool,
    #[serde(rename = "warmPoolImages", skip_serializing_if = "Vec::is_empty")]
    pub warm_pool_images: Vec<String>,
    #[serde(rename = "AzureAdminUser", skip_serializing_if = "String::is_empty")]
    pub azure_admin_user: String,
    #[serde(rename = "multizone", skip_serializing_if = "Option::is_none")]
    pub multizone: Option<bool>,
    #[serde(rename = "nodeTags", skip_serializing_if = "Option::is_none")]
    pub node_tags: Option<String>,
    #[serde(rename = "nodeInstancePrefix", skip_serializing_if = "Option::is_none")]
    pub node_instance_prefix: Option<String>,
    #[serde(rename = "Openstack", skip_serializing_if = "Option::is_none")]
    pub openstack: Option<Value>,
    /// `dns: none`: the API's addresses come with kube_env (`APIServerIPs`).
    #[serde(rename = "usesNoneDNS")]
    pub uses_none_dns: bool,
    #[serde(
        rename = "discoveryServiceWithUniverse",
        skip_serializing_if = "Option::is_none"
    )]
    pub discovery_service: Option<Value>,
}

/// `kops.NetworkingSpec`, the part `nodeup.NewConfig` copies.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct Networking {
    /// The pod and service networks together; `::/0` on IPv6-only clusters.
    #[serde(rename = "nonMasqueradeCIDR")]
    pub non_masquerade_cidr: String,
    #[serde(rename = "serviceClusterIPRange")]
    pub service_cluster_ip_range: String,
    #[serde(rename = "networkID", skip_serializing_if = "String::is_empty")]
    pub network_id: String,
    #[serde(rename = "amazonVPC", skip_serializing_if = "Option::is_none")]
    pub amazon_vpc: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calico: Option<Calico>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cilium: Option<Cilium>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni: Option<Cni>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flannel: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube_router: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kindnet: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct Calico {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cilium {
    /// `eni` when Cilium allocates pod addresses from ENIs.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ipam: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct Cni {
    pub uses_secondary_ip: bool,
}

/// `kops.KubeProxyConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct KubeProxyConfig {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<i32>,
    #[serde(rename = "clusterCIDR", skip_serializing_if = "Option::is_none")]
    pub cluster_cidr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname_override: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_bind_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_mode: Option<String>,
    #[serde(rename = "ipvsExcludeCIDRs", skip_serializing_if = "Option::is_none")]
    pub ipvs_exclude_cidrs: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipvs_min_sync_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipvs_scheduler: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipvs_sync_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_gates: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conntrack_max_per_core: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conntrack_min: Option<i32>,
}

/// `kops.ContainerdConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct ContainerdConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Dotted paths (quoted segments allowed) to an int, a bool or a string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_additions: Option<BTreeMap<String, IntOrString>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_override: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_mirrors: Option<BTreeMap<String, Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    pub skip_install: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(rename = "nvidiaGPU", skip_serializing_if = "Option::is_none")]
    pub nvidia_gpu: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gvisor: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runc: Option<Runc>,
    #[serde(rename = "selinuxEnabled")]
    pub selinux_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nri: Option<Nri>,
    #[serde(rename = "useECRCredentialsForMirrors")]
    pub use_ecr_credentials_for_mirrors: bool,
    pub install_cri_ctl: bool,
    pub install_nerd_ctl: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_image: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct Nri {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_registration_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_request_timeout: Option<String>,
}

/// Kubernetes' `intstr.IntOrString`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

/// `kops.FileAssetSpec` (already filtered to the instance group's role by kops).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct FileAsset {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub path: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    pub content: String,
    #[serde(rename = "isBase64")]
    pub is_base64: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mode: String,
}

/// kube_env's `NodeupConfigHash` of these bytes: base64 of their sha256.
pub fn config_hash(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

impl NodeupConfig {
    /// Checks the bytes against `expected_hash` (kube_env's `NodeupConfigHash`), then
    /// parses them strictly. Nothing is read from bytes whose hash does not match.
    pub fn parse_checked(
        source: &str,
        bytes: &[u8],
        expected_hash: &str,
    ) -> Result<Self, KopsError> {
        if bytes.len() > MAX_BYTES {
            return Err(KopsError::Invalid {
                source_name: source.to_owned(),
                detail: format!(
                    "{} bytes is more than the {MAX_BYTES} a nodeupconfig may have",
                    bytes.len()
                ),
            });
        }
        let actual = config_hash(bytes);
        if actual != expected_hash.trim() {
            return Err(KopsError::HashMismatch {
                source_name: source.to_owned(),
                expected: expected_hash.trim().to_owned(),
                actual,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| KopsError::Invalid {
            source_name: source.to_owned(),
            detail: format!("not UTF-8 text (byte {})", e.valid_up_to()),
        })?;
        crate::spec::parse_yaml(source, text).map_err(KopsError::Document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "Assets:
  amd64:
  - 5c0d28cea2a3a5c91861dda088a29d56c1b027e184dae1d792686f0710750076@https://dl.k8s.io/release/v1.34.0/bin/linux/amd64/kubelet
  arm64: null
CAs: {}
ClusterName: minimal.example.com
Hooks:
- null
- null
KeypairIDs:
  kubernetes-ca: \"6982820025135291416230495506\"
KubeProxy: null
KubeletConfig:
  logLevel: 2
  nodeLabels:
    node-role.kubernetes.io/node: \"\"
KubernetesVersion: 1.34.0
Networking:
  cilium: {}
  nonMasqueradeCIDR: 100.64.0.0/10
  serviceClusterIPRange: 100.64.0.0/13
UpdatePolicy: automatic
containerdConfig:
  configAdditions:
    a.b: 1
    c: \"x\"
  version: 2.3.4
usesNoneDNS: false
";

    #[test]
    fn parses_after_the_hash_matches() {
        let hash = config_hash(CONFIG.as_bytes());
        let config =
            NodeupConfig::parse_checked("nodeupconfig.yaml", CONFIG.as_bytes(), &hash).unwrap();
        assert_eq!(config.cluster_name, "minimal.example.com");
        assert!(config.kube_proxy.is_none());
        assert_eq!(config.hooks, vec![None, None]);
        assert_eq!(config.networking.cilium, Some(Cilium::default()));
        assert_eq!(config.kubelet_config.log_level, Some(2));
        let additions = config.containerd.unwrap().config_additions.unwrap();
        assert_eq!(additions["a.b"], IntOrString::Int(1));
        assert_eq!(additions["c"], IntOrString::String("x".to_owned()));
    }

    #[test]
    fn a_tampered_config_is_refused_before_it_is_read() {
        let hash = config_hash(CONFIG.as_bytes());
        // Not even YAML: the hash is checked first.
        let err =
            NodeupConfig::parse_checked("nodeupconfig.yaml", b"\x00\xff{{", &hash).unwrap_err();
        assert!(matches!(err, KopsError::HashMismatch { .. }), "{err}");
        let tampered = CONFIG.replace("logLevel: 2", "logLevel: 9");
        let err = NodeupConfig::parse_checked("nodeupconfig.yaml", tampered.as_bytes(), &hash)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nodeupconfig.yaml") && err.contains(&hash),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_field_is_named() {
        for (from, to, field) in [
            (
                "usesNoneDNS: false\n",
                "usesNoneDNS: false\nNewSetting: 1\n",
                "NewSetting",
            ),
            (
                "  logLevel: 2\n",
                "  logLevel: 2\n  logLevl: 3\n",
                "KubeletConfig.logLevl",
            ),
            (
                "  cilium: {}\n",
                "  cilium: {}\n  kopeio: {}\n",
                "Networking.kopeio",
            ),
        ] {
            let text = CONFIG.replace(from, to);
            let err = NodeupConfig::parse_checked(
                "n.yaml",
                text.as_bytes(),
                &config_hash(text.as_bytes()),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
