//! The `kubelet` section.
//!
//! The KubeletConfiguration is built in three layers: nodewright's defaults, then the
//! typed fields of `config` (checked as the spec is read), then `extraConfig`, a raw
//! mapping merged over both for fields nodewright does not type.

use std::collections::BTreeMap;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::program::Program;
use super::types::AbsPath;
use super::validate::Problems;
use super::values::{GoDuration, LabelKey, LabelValue, Quantity};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletSpec {
    /// The kubelet binary (default path /usr/local/bin/kubelet).
    #[serde(default)]
    pub binary: Program,
    /// The node's name in the cluster.
    #[serde(default)]
    pub node_name: NodeNameSource,
    /// Which of the instance's addresses the node reports.
    #[serde(default)]
    pub node_ip: NodeIpFamily,
    /// Labels the kubelet registers the node with. Labels under kubernetes.io and
    /// k8s.io are limited to the ones a kubelet may set (see NodeRestriction).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<LabelKey, LabelValue>,
    /// Taints the node registers with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Log verbosity (the kubelet's `--v`).
    #[serde(default = "default_verbosity")]
    pub verbosity: u8,
    /// Typed KubeletConfiguration fields, merged over nodewright's defaults.
    #[serde(default)]
    pub config: KubeletConfigFields,
    /// Any other KubeletConfiguration fields, merged over the result: mappings merge
    /// key by key, anything else (lists included) replaces; `null` removes a default.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra_config: serde_json::Map<String, serde_json::Value>,
    /// Pull images from ECR with the instance role (the ecr-credential-provider plugin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecr_credential_provider: Option<EcrCredentialProvider>,
    /// Join by Kubernetes TLS bootstrapping: the kubelet asks the API server for its
    /// client certificate with a bootstrap token, writes its own kubeconfig and rotates
    /// the certificate. The way in for workers booted from the state store (controller-
    /// shim issues a worker's certificates otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_bootstrap: Option<TlsBootstrap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsBootstrap {
    /// The file holding the bootstrap token (`<id>.<secret>`, kubeadm's format): one of
    /// this spec's `files`, with `secret: true` and mode 0600. The bootstrap kubeconfig
    /// names it (`tokenFile`), so the token is written in one place only.
    pub token_file: AbsPath,
}

fn default_verbosity() -> u8 {
    2
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NodeNameSource {
    /// The EC2 private DNS name, e.g. `ip-10-0-1-23.ec2.internal` (EKS's default).
    #[default]
    PrivateDnsName,
    /// The instance id, e.g. `i-0a1b2c3d4e5f60718` (resource-based naming).
    InstanceId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NodeIpFamily {
    /// The private IPv4 address.
    #[default]
    Ipv4,
    /// The IPv6 address (IPv6-only clusters).
    Ipv6,
    /// Both, IPv4 first.
    DualStack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Taint {
    pub key: LabelKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<LabelValue>,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EcrCredentialProvider {
    /// The plugin binary (default /usr/local/libexec/kubelet-credential-providers/ecr-credential-provider).
    /// The kubelet runs it by file name from its directory, which should hold only plugins.
    #[serde(default)]
    pub binary: Program,
    /// Image patterns the plugin answers for (default: every ECR registry, FIPS and
    /// China partitions included).
    #[serde(default = "default_ecr_images")]
    pub match_images: Vec<String>,
    /// How long the kubelet caches credentials when the plugin does not say.
    #[serde(default = "default_ecr_cache")]
    pub cache_duration: GoDuration,
}

fn default_ecr_images() -> Vec<String> {
    [
        "*.dkr.ecr.*.amazonaws.com",
        "*.dkr.ecr.*.amazonaws.com.cn",
        "*.dkr.ecr-fips.*.amazonaws.com",
        "*.dkr.ecr.*.c2s.ic.gov",
        "*.dkr.ecr.*.sc2s.sgov.gov",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn default_ecr_cache() -> GoDuration {
    GoDuration::try_from("12h").expect("a valid constant")
}

/// KubeletConfiguration (kubelet.config.k8s.io/v1beta1) fields with their types. The
/// names are the KubeletConfiguration's own.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletConfigFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods_per_core: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_pids_limit: Option<i64>,
    /// The cluster DNS servers; default the cluster's dnsIp (set this for NodeLocal DNSCache).
    #[serde(rename = "clusterDNS", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<String>>")]
    pub cluster_dns: Option<Vec<IpAddr>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube_reserved: Option<BTreeMap<ReservedResource, Quantity>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_reserved: Option<BTreeMap<ReservedResource, Quantity>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube_reserved_cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_reserved_cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforce_node_allocatable: Option<Vec<NodeAllocatableEnforcement>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_hard: Option<BTreeMap<EvictionSignal, EvictionThreshold>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_soft: Option<BTreeMap<EvictionSignal, EvictionThreshold>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_soft_grace_period: Option<BTreeMap<EvictionSignal, GoDuration>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_minimum_reclaim: Option<BTreeMap<EvictionSignal, EvictionThreshold>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_max_pod_grace_period: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_pressure_transition_period: Option<GoDuration>,
    #[serde(
        rename = "imageGCHighThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_gc_high_threshold_percent: Option<u8>,
    #[serde(
        rename = "imageGCLowThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_gc_low_threshold_percent: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_minimum_gc_age: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_maximum_gc_age: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_gates: Option<BTreeMap<String, bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_manager_policy: Option<CpuManagerPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_manager_policy_options: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_manager_reconcile_period: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_manager_policy: Option<MemoryManagerPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology_manager_policy: Option<TopologyManagerPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology_manager_scope: Option<TopologyManagerScope>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serialize_image_pulls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel_image_pulls: Option<u32>,
    #[serde(rename = "registryPullQPS", skip_serializing_if = "Option::is_none")]
    pub registry_pull_qps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_burst: Option<u32>,
    #[serde(rename = "kubeAPIQPS", skip_serializing_if = "Option::is_none")]
    pub kube_api_qps: Option<u32>,
    #[serde(rename = "kubeAPIBurst", skip_serializing_if = "Option::is_none")]
    pub kube_api_burst: Option<u32>,
    #[serde(rename = "eventRecordQPS", skip_serializing_if = "Option::is_none")]
    pub event_record_qps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_burst: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_log_max_size: Option<Quantity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_log_max_files: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_period: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_period_critical_pods: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protect_kernel_defaults: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_unsafe_sysctls: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<AbsPath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_request_timeout: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streaming_connection_idle_timeout: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_status_update_frequency: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_status_report_frequency: Option<GoDuration>,
    #[serde(rename = "serverTLSBootstrap", skip_serializing_if = "Option::is_none")]
    pub server_tls_bootstrap: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cipher_suites: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_min_version: Option<TlsVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_swap_on: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp_default: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_storage_capacity_isolation: Option<bool>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ReservedResource {
    Cpu,
    Memory,
    EphemeralStorage,
    Pid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NodeAllocatableEnforcement {
    Pods,
    SystemReserved,
    KubeReserved,
    SystemReservedCompressible,
    KubeReservedCompressible,
    None,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum EvictionSignal {
    #[serde(rename = "memory.available")]
    MemoryAvailable,
    #[serde(rename = "nodefs.available")]
    NodefsAvailable,
    #[serde(rename = "nodefs.inodesFree")]
    NodefsInodesFree,
    #[serde(rename = "imagefs.available")]
    ImagefsAvailable,
    #[serde(rename = "imagefs.inodesFree")]
    ImagefsInodesFree,
    #[serde(rename = "containerfs.available")]
    ContainerfsAvailable,
    #[serde(rename = "containerfs.inodesFree")]
    ContainerfsInodesFree,
    #[serde(rename = "pid.available")]
    PidAvailable,
}

super::types::checked_string!(
    /// An eviction threshold: a quantity (`100Mi`) or a percentage (`10%`).
    EvictionThreshold,
    check_threshold,
    "A quantity such as 100Mi or a percentage such as 10%"
);

fn check_threshold(value: &str) -> Result<(), String> {
    let percentage = value.strip_suffix('%').is_some_and(|n| {
        n.parse::<f64>()
            .is_ok_and(|p| (0.0..=100.0).contains(&p) && !n.starts_with('.'))
    });
    if percentage || Quantity::try_from(value).is_ok() {
        Ok(())
    } else {
        Err(format!(
            "eviction threshold {value:?} must be a quantity (100Mi) or a percentage (10%)"
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CpuManagerPolicy {
    None,
    Static,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MemoryManagerPolicy {
    None,
    Static,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyManagerPolicy {
    None,
    BestEffort,
    Restricted,
    SingleNumaNode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyManagerScope {
    Container,
    Pod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsVersion {
    VersionTLS12,
    VersionTLS13,
}

/// KubeletConfiguration fields nodewright owns: the other components depend on them.
pub const OWNED_FIELDS: &[(&str, &str)] = &[
    (
        "apiVersion",
        "nodewright writes kubelet.config.k8s.io/v1beta1",
    ),
    ("kind", "nodewright writes KubeletConfiguration"),
    (
        "cgroupDriver",
        "containerd's runc is configured for the systemd cgroup driver",
    ),
    (
        "containerRuntimeEndpoint",
        "it must be the socket of the containerd nodewright configures",
    ),
    (
        "staticPodPath",
        "nodewright writes static pods (kube-proxy) to /etc/kubernetes/manifests",
    ),
    (
        "providerID",
        "it is aws:///<zone>/<instance-id>, from the instance's identity",
    ),
    (
        "registerWithTaints",
        "set kubelet.taints, which nodewright checks",
    ),
];

/// Labels a kubelet may set on its own node under kubernetes.io and k8s.io (the
/// NodeRestriction admission plugin refuses others, and the kubelet refuses to start).
const ALLOWED_SYSTEM_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.kubernetes.io/zone",
    "failure-domain.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
];
const ALLOWED_SYSTEM_PREFIXES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

fn is_system_prefix(prefix: &str) -> bool {
    ["kubernetes.io", "k8s.io"]
        .iter()
        .any(|d| prefix == *d || prefix.ends_with(&format!(".{d}")))
}

impl KubeletSpec {
    pub fn check(&self, problems: &mut Problems) {
        self.binary.check("kubelet.binary", problems);
        if let Some(ecr) = &self.ecr_credential_provider {
            ecr.binary
                .check("kubelet.ecrCredentialProvider.binary", problems);
            if ecr.match_images.is_empty() {
                problems.add(
                    "kubelet.ecrCredentialProvider.matchImages",
                    "lists no image patterns".to_owned(),
                );
            }
        }
        for key in self.labels.keys() {
            let Some((prefix, _)) = key.as_str().split_once('/') else {
                continue;
            };
            let allowed = ALLOWED_SYSTEM_LABELS.contains(&key.as_str())
                || ALLOWED_SYSTEM_PREFIXES
                    .iter()
                    .any(|p| prefix == *p || prefix.ends_with(&format!(".{p}")));
            if is_system_prefix(prefix) && !allowed {
                problems.add(
                    &format!("kubelet.labels[{:?}]", key.as_str()),
                    format!(
                        "a kubelet may not set {key} on its own node (NodeRestriction); use a label outside kubernetes.io and k8s.io, or one under node.kubernetes.io/"
                    ),
                );
            }
        }
        let config = &self.config;
        if let (Some(high), Some(low)) = (
            config.image_gc_high_threshold_percent,
            config.image_gc_low_threshold_percent,
        ) && low >= high
        {
            problems.add(
                "kubelet.config.imageGCLowThresholdPercent",
                format!("{low} must be below imageGCHighThresholdPercent ({high})"),
            );
        }
        for (field, value) in [
            (
                "imageGCHighThresholdPercent",
                config.image_gc_high_threshold_percent,
            ),
            (
                "imageGCLowThresholdPercent",
                config.image_gc_low_threshold_percent,
            ),
        ] {
            if value.is_some_and(|v| v > 100) {
                problems.add(
                    &format!("kubelet.config.{field}"),
                    "a percentage must be 0 to 100".to_owned(),
                );
            }
        }
        if config.serialize_image_pulls == Some(true)
            && config.max_parallel_image_pulls.is_some_and(|n| n > 1)
        {
            problems.add(
                "kubelet.config.maxParallelImagePulls",
                "must be 1 or unset when serializeImagePulls is true (the kubelet refuses it)"
                    .to_owned(),
            );
        }
        if config.cpu_manager_policy == Some(CpuManagerPolicy::Static) {
            let reserves_cpu = |reserved: &Option<BTreeMap<ReservedResource, Quantity>>| {
                reserved.as_ref().is_some_and(|r| {
                    r.get(&ReservedResource::Cpu)
                        .is_some_and(|q| !q.as_str().trim_start_matches(['0', '.', 'm']).is_empty())
                })
            };
            if !reserves_cpu(&config.kube_reserved)
                && !reserves_cpu(&config.system_reserved)
                && !self.extra_config.contains_key("reservedSystemCPUs")
            {
                problems.add(
                    "kubelet.config.cpuManagerPolicy",
                    "the static CPU manager needs CPU reserved (kubeReserved.cpu, systemReserved.cpu or reservedSystemCPUs); the kubelet refuses to start without".to_owned(),
                );
            }
        }
        if let Some(dns) = &config.cluster_dns
            && dns.is_empty()
        {
            problems.add(
                "kubelet.config.clusterDNS",
                "lists no servers; leave it out for the cluster's dnsIp".to_owned(),
            );
        }
        for (key, value) in &self.extra_config {
            let at = format!("kubelet.extraConfig.{key}");
            if let Some((_, why)) = OWNED_FIELDS.iter().find(|(k, _)| k == key) {
                problems.add(&at, format!("is set by nodewright: {why}"));
                continue;
            }
            // A field nodewright types must have its type here too. Nulls remove keys
            // (of ours) and are not values, so they are not checked.
            if value.is_null() {
                continue;
            }
            let mut single = serde_json::Map::new();
            single.insert(key.clone(), without_nulls(value));
            if let Err(e) =
                serde_json::from_value::<KubeletConfigFields>(serde_json::Value::Object(single))
            {
                let message = e.to_string();
                if !message.starts_with("unknown field") {
                    problems.add(&at, message);
                }
            }
        }
    }

    /// Whether the kubelet will refuse to start unless the kernel defaults it checks
    /// are set (`protectKernelDefaults`, on by default here as in kops).
    pub fn protects_kernel_defaults(&self) -> bool {
        let extra = self
            .extra_config
            .get("protectKernelDefaults")
            .and_then(serde_json::Value::as_bool);
        extra
            .or(self.config.protect_kernel_defaults)
            .unwrap_or(true)
    }
}

fn without_nulls(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The sysctls the kubelet checks when `protectKernelDefaults` is on.
pub const PROTECTED_KERNEL_DEFAULTS: &[(&str, &str)] = &[
    ("vm.overcommit_memory", "1"),
    ("vm.panic_on_oom", "0"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
    ("kernel.keys.root_maxkeys", "1000000"),
    ("kernel.keys.root_maxbytes", "25000000"),
];
