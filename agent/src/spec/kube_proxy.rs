//! The `kubeProxy` section: kube-proxy as a static pod, or off (leave the section out,
//! or set `enabled: false`, for CNIs that replace it).

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::Problems;
use super::values::{ImageRef, Quantity};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeProxySpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Default `registry.k8s.io/kube-proxy:v<cluster.kubernetesVersion>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    #[serde(default)]
    pub mode: ProxyMode,
    /// The pod network, for masquerading traffic from outside it; default cluster.podCidr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub cluster_cidr: Option<IpNet>,
    /// conntrack entries per CPU core (kube-proxy's own default is 32768).
    #[serde(default = "default_conntrack")]
    pub conntrack_max_per_core: u32,
    #[serde(default = "default_cpu_request")]
    pub cpu_request: Quantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<Quantity>,
    /// Log verbosity (`--v`).
    #[serde(default = "default_verbosity")]
    pub verbosity: u8,
    /// KubeProxyConfiguration fields merged over the rendered ones: mappings merge key
    /// by key, anything else (lists included) replaces; `null` removes a default.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra_config: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    #[default]
    Iptables,
    Ipvs,
    Nftables,
}

impl ProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Iptables => "iptables",
            Self::Ipvs => "ipvs",
            Self::Nftables => "nftables",
        }
    }
}

fn yes() -> bool {
    true
}
fn default_conntrack() -> u32 {
    131_072
}
fn default_cpu_request() -> Quantity {
    Quantity::try_from("100m").expect("a valid constant")
}
fn default_verbosity() -> u8 {
    2
}

/// KubeProxyConfiguration fields nodewright owns.
pub const OWNED_FIELDS: &[(&str, &str)] = &[
    (
        "apiVersion",
        "nodewright writes kubeproxy.config.k8s.io/v1alpha1",
    ),
    ("kind", "nodewright writes KubeProxyConfiguration"),
    (
        "hostnameOverride",
        "it must be the node name the kubelet registers",
    ),
    (
        "clientConnection",
        "the kubeconfig is the one nodewright writes and mounts",
    ),
];

impl KubeProxySpec {
    pub fn check(&self, problems: &mut Problems) {
        for key in self.extra_config.keys() {
            if let Some((_, why)) = OWNED_FIELDS.iter().find(|(k, _)| k == key) {
                problems.add(
                    &format!("kubeProxy.extraConfig.{key}"),
                    format!("is set by nodewright: {why}"),
                );
            }
        }
        if self.conntrack_max_per_core == 0 {
            problems.add(
                "kubeProxy.conntrackMaxPerCore",
                "0 leaves the kernel's limit, often too low for a node; give a number".to_owned(),
            );
        }
    }
}
