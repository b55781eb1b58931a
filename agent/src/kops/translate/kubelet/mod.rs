//! `KubeletConfig` -> the `kubelet` section, field by field, as nodeup's
//! `nodeup/pkg/model/kubelet.go` turns it into the KubeletConfiguration and flags.
//!
//! - Fields with a KubeletConfiguration counterpart go to `kubelet.config` (typed) or
//!   `kubelet.extraConfig` (nodewright does not type them).
//! - Fields nodewright already sets the way nodeup would are checked to be that value.
//! - Flags the kubelet no longer has (nodeup would pass them and the kubelet would
//!   refuse to start) and settings that need more than the kubelet are refused.
//! - `nodeLabels` are dropped as nodeup drops them: kops-controller labels the node.
//!
//! One module per group of fields; `fields` holds the conversions they share.

mod features;
mod fields;
mod identity;
mod networking;
mod pacing;
mod refused;
mod resources;

use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::Context;
use super::assets::{AssetUse, TranslatedAssets};
use crate::kops::kubelet_config::KubeletConfigSpec;
use crate::kops::nodeup_config::ContainerdConfig;
use crate::kops::refusals::Ledger;
use fields::Fields;

/// What the rest of the translation needs from the kubelet's settings.
#[derive(Debug, Default)]
pub struct KubeletPart {
    pub section: Value,
    pub cluster_dns: Option<IpAddr>,
    pub cluster_domain: Option<String>,
}

pub(super) fn translate(
    k: &KubeletConfigSpec,
    context: &Context<'_>,
    use_ip_based_node_names: bool,
    containerd: Option<&ContainerdConfig>,
    assets: &TranslatedAssets,
    ledger: &mut Ledger,
) -> KubeletPart {
    // In this order: it is the order in which refusals and notes are listed.
    refused::refuse(k, ledger);
    let mut t = Fields::new(ledger);
    identity::check(k, &mut t);
    let dns = networking::config(k, &mut t);
    resources::config(k, &mut t);
    features::config(k, &mut t);
    pacing::config(k, &mut t);
    identity::authentication(k, &mut t);
    resources::volume_stats(k, &mut t);

    let mut section = Map::new();
    if let Some(asset) = assets.name(AssetUse::Kubelet) {
        section.insert("binary".into(), json!({"asset": asset}));
    }
    // kops names nodes after their instance id unless told to use the private DNS name.
    section.insert(
        "nodeName".into(),
        json!(if use_ip_based_node_names {
            "privateDnsName"
        } else {
            "instanceId"
        }),
    );
    if context.ipv6_only {
        // nodeup passes --node-ip=:: (the instance's IPv6 address).
        section.insert("nodeIp".into(), json!("ipv6"));
    }
    let taint_list = t.taints(k.taints.as_deref().unwrap_or_default());
    if !taint_list.is_empty() {
        section.insert("taints".into(), Value::Array(taint_list));
    }
    if let Some(level) = k.log_level {
        match u8::try_from(level) {
            Ok(level) => {
                section.insert("verbosity".into(), json!(level));
            }
            Err(_) => t.ledger.refuse(
                "KubeletConfig.logLevel",
                format!("{level} is not a log verbosity"),
            ),
        }
    }
    if !t.config.is_empty() {
        section.insert(
            "config".into(),
            Value::Object(std::mem::take(&mut t.config)),
        );
    }
    if !t.extra.is_empty() {
        section.insert(
            "extraConfig".into(),
            Value::Object(std::mem::take(&mut t.extra)),
        );
    }
    if let Some(asset) = assets.name(AssetUse::EcrCredentialProvider) {
        section.insert(
            "ecrCredentialProvider".into(),
            identity::ecr_credential_provider(asset, containerd),
        );
    }
    KubeletPart {
        section: Value::Object(section),
        cluster_dns: dns,
        cluster_domain: k.cluster_domain.clone().filter(|d| !d.is_empty()),
    }
}

/// Every kops field, under the module that translates it: a field added to
/// `KubeletConfigSpec` stops this compiling until a module takes it (each module binds
/// its fields by name, so one listed there and left unused is a warning).
const _: fn(&KubeletConfigSpec) = |k| {
    let KubeletConfigSpec {
        // refused
        api_servers: _,
        require_kubeconfig: _,
        allow_privileged: _,
        network_plugin_name: _,
        configure_cbr0: _,
        babysit_daemons: _,
        nvidia_gpus: _,
        reconcile_cidr: _,
        non_masquerade_cidr: _,
        enable_custom_metrics: _,
        network_plugin_mtu: _,
        image_pull_progress_deadline: _,
        experimental_allowed_unsafe_sysctls: _,
        enable_cadvisor_json_endpoints: _,
        experimental_allocatable_ignore_eviction: _,
        bootstrap_kubeconfig: _,
        seccomp_profile_root: _,
        root_dir: _,
        housekeeping_interval: _,
        runtime_cgroups: _,
        kubelet_cgroups: _,
        system_cgroups: _,
        tls_cert_file: _,
        tls_private_key_file: _,
        register_node: _,
        register_schedulable: _,
        // identity
        cgroup_driver: _,
        cloud_provider: _,
        kubeconfig_path: _,
        pod_manifest_path: _,
        client_ca_file: _,
        hostname_override: _,
        pod_infra_container_image: _,
        node_labels: _,
        anonymous_auth: _,
        authentication_token_webhook: _,
        authentication_token_webhook_cache_ttl: _,
        authorization_mode: _,
        enable_debugging_handlers: _,
        read_only_port: _,
        // networking
        cluster_dns: _,
        resolver_config: _,
        hairpin_mode: _,
        pod_cidr: _,
        // resources
        max_pods: _,
        pod_pids_limit: _,
        kube_reserved: _,
        system_reserved: _,
        kube_reserved_cgroup: _,
        system_reserved_cgroup: _,
        enforce_node_allocatable: _,
        eviction_hard: _,
        eviction_soft: _,
        eviction_soft_grace_period: _,
        eviction_minimum_reclaim: _,
        eviction_max_pod_grace_period: _,
        eviction_pressure_transition_period: _,
        image_gc_high_threshold_percent: _,
        image_gc_low_threshold_percent: _,
        image_minimum_gc_age: _,
        image_maximum_gc_age: _,
        cpu_manager_policy: _,
        topology_manager_policy: _,
        fail_swap_on: _,
        cpu_cfs_quota: _,
        cpu_cfs_quota_period: _,
        kernel_memcg_notification: _,
        memory_swap_behavior: _,
        cgroup_root: _,
        volume_plugin_directory: _,
        volume_stats_agg_period: _,
        // features
        feature_gates: _,
        tls_cipher_suites: _,
        tls_min_version: _,
        rotate_certificates: _,
        seccomp_default: _,
        protect_kernel_defaults: _,
        allowed_unsafe_sysctls: _,
        // pacing
        serialize_image_pulls: _,
        max_parallel_image_pulls: _,
        registry_pull_qps: _,
        registry_burst: _,
        kube_api_qps: _,
        event_qps: _,
        event_record_qps: _,
        event_burst: _,
        container_log_max_size: _,
        container_log_max_files: _,
        log_format: _,
        shutdown_grace_period: _,
        shutdown_grace_period_critical_pods: _,
        runtime_request_timeout: _,
        streaming_connection_idle_timeout: _,
        node_status_update_frequency: _,
        node_lease_duration_seconds: _,
        crash_loop_back_off_max_container_restart_period: _,
        // here (the section)
        cluster_domain: _,
        taints: _,
        log_level: _,
    } = k;
};

#[cfg(test)]
mod tests;
