//! kops's `KubeletConfigSpec` (`pkg/apis/kops/componentconfig.go`) as the nodeupconfig
//! carries it: every field kops has, so that none can pass unread. nodeup turns some
//! into the KubeletConfiguration file and the rest into command-line flags;
//! [`super::translate::kubelet`] decides, field by field, what nodewright does with each.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeletConfigSpec {
    #[serde(rename = "apiServers", skip_serializing_if = "Option::is_none")]
    pub api_servers: Option<String>,
    #[serde(rename = "anonymousAuth", skip_serializing_if = "Option::is_none")]
    pub anonymous_auth: Option<bool>,
    #[serde(rename = "authorizationMode", skip_serializing_if = "Option::is_none")]
    pub authorization_mode: Option<String>,
    #[serde(
        rename = "bootstrapKubeconfig",
        skip_serializing_if = "Option::is_none"
    )]
    pub bootstrap_kubeconfig: Option<String>,
    #[serde(rename = "clientCAFile", skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
    #[serde(rename = "tlsCertFile", skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<String>,
    #[serde(rename = "tlsPrivateKeyFile", skip_serializing_if = "Option::is_none")]
    pub tls_private_key_file: Option<String>,
    #[serde(rename = "tlsCipherSuites", skip_serializing_if = "Option::is_none")]
    pub tls_cipher_suites: Option<Vec<String>>,
    #[serde(rename = "tlsMinVersion", skip_serializing_if = "Option::is_none")]
    pub tls_min_version: Option<String>,
    #[serde(rename = "kubeconfigPath", skip_serializing_if = "Option::is_none")]
    pub kubeconfig_path: Option<String>,
    #[serde(rename = "requireKubeconfig", skip_serializing_if = "Option::is_none")]
    pub require_kubeconfig: Option<bool>,
    #[serde(rename = "logFormat", skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    #[serde(rename = "logLevel", skip_serializing_if = "Option::is_none")]
    pub log_level: Option<i32>,
    #[serde(rename = "podManifestPath", skip_serializing_if = "Option::is_none")]
    pub pod_manifest_path: Option<String>,
    #[serde(rename = "hostnameOverride", skip_serializing_if = "Option::is_none")]
    pub hostname_override: Option<String>,
    #[serde(
        rename = "podInfraContainerImage",
        skip_serializing_if = "Option::is_none"
    )]
    pub pod_infra_container_image: Option<String>,
    #[serde(rename = "seccompDefault", skip_serializing_if = "Option::is_none")]
    pub seccomp_default: Option<bool>,
    #[serde(rename = "seccompProfileRoot", skip_serializing_if = "Option::is_none")]
    pub seccomp_profile_root: Option<String>,
    #[serde(rename = "allowPrivileged", skip_serializing_if = "Option::is_none")]
    pub allow_privileged: Option<bool>,
    #[serde(
        rename = "enableDebuggingHandlers",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_debugging_handlers: Option<bool>,
    #[serde(rename = "registerNode", skip_serializing_if = "Option::is_none")]
    pub register_node: Option<bool>,
    #[serde(
        rename = "nodeStatusUpdateFrequency",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_status_update_frequency: Option<String>,
    #[serde(rename = "clusterDomain", skip_serializing_if = "Option::is_none")]
    pub cluster_domain: Option<String>,
    #[serde(rename = "clusterDNS", skip_serializing_if = "Option::is_none")]
    pub cluster_dns: Option<String>,
    #[serde(rename = "networkPluginName", skip_serializing_if = "Option::is_none")]
    pub network_plugin_name: Option<String>,
    #[serde(rename = "cloudProvider", skip_serializing_if = "Option::is_none")]
    pub cloud_provider: Option<String>,
    #[serde(rename = "kubeletCgroups", skip_serializing_if = "Option::is_none")]
    pub kubelet_cgroups: Option<String>,
    #[serde(rename = "runtimeCgroups", skip_serializing_if = "Option::is_none")]
    pub runtime_cgroups: Option<String>,
    #[serde(rename = "readOnlyPort", skip_serializing_if = "Option::is_none")]
    pub read_only_port: Option<i32>,
    #[serde(rename = "systemCgroups", skip_serializing_if = "Option::is_none")]
    pub system_cgroups: Option<String>,
    #[serde(rename = "cgroupRoot", skip_serializing_if = "Option::is_none")]
    pub cgroup_root: Option<String>,
    #[serde(rename = "configureCbr0", skip_serializing_if = "Option::is_none")]
    pub configure_cbr0: Option<bool>,
    #[serde(rename = "hairpinMode", skip_serializing_if = "Option::is_none")]
    pub hairpin_mode: Option<String>,
    #[serde(rename = "babysitDaemons", skip_serializing_if = "Option::is_none")]
    pub babysit_daemons: Option<bool>,
    #[serde(rename = "maxPods", skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<i32>,
    #[serde(rename = "nvidiaGPUs", skip_serializing_if = "Option::is_none")]
    pub nvidia_gpus: Option<i32>,
    #[serde(rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    #[serde(rename = "resolvConf", skip_serializing_if = "Option::is_none")]
    pub resolver_config: Option<String>,
    #[serde(rename = "reconcileCIDR", skip_serializing_if = "Option::is_none")]
    pub reconcile_cidr: Option<bool>,
    #[serde(
        rename = "registerSchedulable",
        skip_serializing_if = "Option::is_none"
    )]
    pub register_schedulable: Option<bool>,
    #[serde(
        rename = "serializeImagePulls",
        skip_serializing_if = "Option::is_none"
    )]
    pub serialize_image_pulls: Option<bool>,
    #[serde(rename = "nodeLabels", skip_serializing_if = "Option::is_none")]
    pub node_labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "nonMasqueradeCIDR", skip_serializing_if = "Option::is_none")]
    pub non_masquerade_cidr: Option<String>,
    #[serde(
        rename = "enableCustomMetrics",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_custom_metrics: Option<bool>,
    #[serde(rename = "networkPluginMTU", skip_serializing_if = "Option::is_none")]
    pub network_plugin_mtu: Option<i32>,
    #[serde(rename = "imageMinimumGCAge", skip_serializing_if = "Option::is_none")]
    pub image_minimum_gc_age: Option<String>,
    #[serde(rename = "imageMaximumGCAge", skip_serializing_if = "Option::is_none")]
    pub image_maximum_gc_age: Option<String>,
    #[serde(
        rename = "maxParallelImagePulls",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_parallel_image_pulls: Option<i32>,
    #[serde(
        rename = "imageGCHighThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_gc_high_threshold_percent: Option<i32>,
    #[serde(
        rename = "imageGCLowThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_gc_low_threshold_percent: Option<i32>,
    #[serde(
        rename = "imagePullProgressDeadline",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_pull_progress_deadline: Option<String>,
    #[serde(rename = "evictionHard", skip_serializing_if = "Option::is_none")]
    pub eviction_hard: Option<String>,
    #[serde(rename = "evictionSoft", skip_serializing_if = "Option::is_none")]
    pub eviction_soft: Option<String>,
    #[serde(
        rename = "evictionSoftGracePeriod",
        skip_serializing_if = "Option::is_none"
    )]
    pub eviction_soft_grace_period: Option<String>,
    #[serde(
        rename = "evictionPressureTransitionPeriod",
        skip_serializing_if = "Option::is_none"
    )]
    pub eviction_pressure_transition_period: Option<String>,
    #[serde(
        rename = "evictionMaxPodGracePeriod",
        skip_serializing_if = "Option::is_none"
    )]
    pub eviction_max_pod_grace_period: Option<i32>,
    #[serde(
        rename = "evictionMinimumReclaim",
        skip_serializing_if = "Option::is_none"
    )]
    pub eviction_minimum_reclaim: Option<String>,
    #[serde(
        rename = "volumePluginDirectory",
        skip_serializing_if = "Option::is_none"
    )]
    pub volume_plugin_directory: Option<String>,
    #[serde(rename = "taints", skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<String>>,
    #[serde(rename = "featureGates", skip_serializing_if = "Option::is_none")]
    pub feature_gates: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "kernelMemcgNotification",
        skip_serializing_if = "Option::is_none"
    )]
    pub kernel_memcg_notification: Option<bool>,
    #[serde(rename = "kubeReserved", skip_serializing_if = "Option::is_none")]
    pub kube_reserved: Option<BTreeMap<String, String>>,
    #[serde(rename = "kubeReservedCgroup", skip_serializing_if = "Option::is_none")]
    pub kube_reserved_cgroup: Option<String>,
    #[serde(rename = "systemReserved", skip_serializing_if = "Option::is_none")]
    pub system_reserved: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "systemReservedCgroup",
        skip_serializing_if = "Option::is_none"
    )]
    pub system_reserved_cgroup: Option<String>,
    #[serde(
        rename = "enforceNodeAllocatable",
        skip_serializing_if = "Option::is_none"
    )]
    pub enforce_node_allocatable: Option<String>,
    #[serde(
        rename = "runtimeRequestTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub runtime_request_timeout: Option<String>,
    #[serde(
        rename = "volumeStatsAggPeriod",
        skip_serializing_if = "Option::is_none"
    )]
    pub volume_stats_agg_period: Option<String>,
    #[serde(rename = "failSwapOn", skip_serializing_if = "Option::is_none")]
    pub fail_swap_on: Option<bool>,
    #[serde(
        rename = "experimentalAllowedUnsafeSysctls",
        skip_serializing_if = "Option::is_none"
    )]
    pub experimental_allowed_unsafe_sysctls: Option<Vec<String>>,
    #[serde(
        rename = "allowedUnsafeSysctls",
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed_unsafe_sysctls: Option<Vec<String>>,
    #[serde(
        rename = "streamingConnectionIdleTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub streaming_connection_idle_timeout: Option<String>,
    #[serde(rename = "rootDir", skip_serializing_if = "Option::is_none")]
    pub root_dir: Option<String>,
    #[serde(
        rename = "authenticationTokenWebhook",
        skip_serializing_if = "Option::is_none"
    )]
    pub authentication_token_webhook: Option<bool>,
    #[serde(
        rename = "authenticationTokenWebhookCacheTTL",
        skip_serializing_if = "Option::is_none"
    )]
    pub authentication_token_webhook_cache_ttl: Option<String>,
    #[serde(rename = "cpuCFSQuota", skip_serializing_if = "Option::is_none")]
    pub cpu_cfs_quota: Option<bool>,
    #[serde(rename = "cpuCFSQuotaPeriod", skip_serializing_if = "Option::is_none")]
    pub cpu_cfs_quota_period: Option<String>,
    #[serde(rename = "cpuManagerPolicy", skip_serializing_if = "Option::is_none")]
    pub cpu_manager_policy: Option<String>,
    #[serde(rename = "registryPullQPS", skip_serializing_if = "Option::is_none")]
    pub registry_pull_qps: Option<i32>,
    #[serde(rename = "registryBurst", skip_serializing_if = "Option::is_none")]
    pub registry_burst: Option<i32>,
    #[serde(
        rename = "topologyManagerPolicy",
        skip_serializing_if = "Option::is_none"
    )]
    pub topology_manager_policy: Option<String>,
    #[serde(rename = "rotateCertificates", skip_serializing_if = "Option::is_none")]
    pub rotate_certificates: Option<bool>,
    #[serde(
        rename = "protectKernelDefaults",
        skip_serializing_if = "Option::is_none"
    )]
    pub protect_kernel_defaults: Option<bool>,
    #[serde(rename = "cgroupDriver", skip_serializing_if = "Option::is_none")]
    pub cgroup_driver: Option<String>,
    #[serde(
        rename = "housekeepingInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub housekeeping_interval: Option<String>,
    #[serde(rename = "eventQPS", skip_serializing_if = "Option::is_none")]
    pub event_qps: Option<i32>,
    #[serde(rename = "eventBurst", skip_serializing_if = "Option::is_none")]
    pub event_burst: Option<i32>,
    #[serde(
        rename = "containerLogMaxSize",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_log_max_size: Option<String>,
    #[serde(
        rename = "containerLogMaxFiles",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_log_max_files: Option<i32>,
    #[serde(
        rename = "enableCadvisorJsonEndpoints",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_cadvisor_json_endpoints: Option<bool>,
    #[serde(rename = "podPidsLimit", skip_serializing_if = "Option::is_none")]
    pub pod_pids_limit: Option<i64>,
    #[serde(
        rename = "experimentalAllocatableIgnoreEviction",
        skip_serializing_if = "Option::is_none"
    )]
    pub experimental_allocatable_ignore_eviction: Option<bool>,
    #[serde(
        rename = "shutdownGracePeriod",
        skip_serializing_if = "Option::is_none"
    )]
    pub shutdown_grace_period: Option<String>,
    #[serde(
        rename = "shutdownGracePeriodCriticalPods",
        skip_serializing_if = "Option::is_none"
    )]
    pub shutdown_grace_period_critical_pods: Option<String>,
    #[serde(rename = "memorySwapBehavior", skip_serializing_if = "Option::is_none")]
    pub memory_swap_behavior: Option<String>,
    #[serde(
        rename = "crashLoopBackOffMaxContainerRestartPeriod",
        skip_serializing_if = "Option::is_none"
    )]
    pub crash_loop_back_off_max_container_restart_period: Option<String>,
    #[serde(rename = "kubeAPIQPS", skip_serializing_if = "Option::is_none")]
    pub kube_api_qps: Option<i32>,
    #[serde(rename = "eventRecordQPS", skip_serializing_if = "Option::is_none")]
    pub event_record_qps: Option<i32>,
    #[serde(
        rename = "nodeLeaseDurationSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_lease_duration_seconds: Option<i32>,
}
