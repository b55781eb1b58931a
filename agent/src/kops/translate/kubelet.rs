//! `KubeletConfig` -> the `kubelet` section, field by field, as nodeup's
//! `nodeup/pkg/model/kubelet.go` turns it into the KubeletConfiguration and flags.
//!
//! - Fields with a KubeletConfiguration counterpart go to `kubelet.config` (typed) or
//!   `kubelet.extraConfig` (nodewright does not type them).
//! - Fields nodewright already sets the way nodeup would are checked to be that value.
//! - Flags the kubelet no longer has (nodeup would pass them and the kubelet would
//!   refuse to start) and settings that need more than the kubelet are refused.
//! - `nodeLabels` are dropped as nodeup drops them: kops-controller labels the node.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::Context;
use super::assets::{AssetUse, TranslatedAssets};
use crate::kops::kubelet_config::KubeletConfigSpec;
use crate::kops::nodeup_config::ContainerdConfig;
use crate::kops::refusals::Ledger;
use crate::model::{kubelet as model_kubelet, pki_paths};
use crate::spec::{GoDuration, LabelKey, LabelValue, Quantity};

/// What the rest of the translation needs from the kubelet's settings.
#[derive(Debug, Default)]
pub struct KubeletPart {
    pub section: Value,
    pub cluster_dns: Option<IpAddr>,
    pub cluster_domain: Option<String>,
}

/// The registries nodeup's ECR credential provider answers for.
const ECR_IMAGES: &[&str] = &[
    "*.dkr.ecr.*.amazonaws.com",
    "*.dkr.ecr.*.amazonaws.com.cn",
    "*.dkr.ecr-fips.*.amazonaws.com",
    "*.dkr.ecr.us-iso-east-1.c2s.ic.gov",
];

/// A flag nodeup passes for this field, which kubelets of the versions kops supports
/// refuse (they were removed).
fn removed_flag(flag: &str) -> String {
    format!("nodeup passes --{flag}, a flag the kubelet no longer has (it would not start)")
}

pub(super) fn translate(
    k: &KubeletConfigSpec,
    context: &Context<'_>,
    use_ip_based_node_names: bool,
    containerd: Option<&ContainerdConfig>,
    assets: &TranslatedAssets,
    ledger: &mut Ledger,
) -> KubeletPart {
    let KubeletConfigSpec {
        api_servers,
        anonymous_auth,
        authorization_mode,
        bootstrap_kubeconfig,
        client_ca_file,
        tls_cert_file,
        tls_private_key_file,
        tls_cipher_suites,
        tls_min_version,
        kubeconfig_path,
        require_kubeconfig,
        log_format,
        log_level,
        pod_manifest_path,
        hostname_override,
        pod_infra_container_image,
        seccomp_default,
        seccomp_profile_root,
        allow_privileged,
        enable_debugging_handlers,
        register_node,
        node_status_update_frequency,
        cluster_domain,
        cluster_dns,
        network_plugin_name,
        cloud_provider,
        kubelet_cgroups,
        runtime_cgroups,
        read_only_port,
        system_cgroups,
        cgroup_root,
        configure_cbr0,
        hairpin_mode,
        babysit_daemons,
        max_pods,
        nvidia_gpus,
        pod_cidr,
        resolver_config,
        reconcile_cidr,
        register_schedulable,
        serialize_image_pulls,
        node_labels,
        non_masquerade_cidr,
        enable_custom_metrics,
        network_plugin_mtu,
        image_minimum_gc_age,
        image_maximum_gc_age,
        max_parallel_image_pulls,
        image_gc_high_threshold_percent,
        image_gc_low_threshold_percent,
        image_pull_progress_deadline,
        eviction_hard,
        eviction_soft,
        eviction_soft_grace_period,
        eviction_pressure_transition_period,
        eviction_max_pod_grace_period,
        eviction_minimum_reclaim,
        volume_plugin_directory,
        taints,
        feature_gates,
        kernel_memcg_notification,
        kube_reserved,
        kube_reserved_cgroup,
        system_reserved,
        system_reserved_cgroup,
        enforce_node_allocatable,
        runtime_request_timeout,
        volume_stats_agg_period,
        fail_swap_on,
        experimental_allowed_unsafe_sysctls,
        allowed_unsafe_sysctls,
        streaming_connection_idle_timeout,
        root_dir,
        authentication_token_webhook,
        authentication_token_webhook_cache_ttl,
        cpu_cfs_quota,
        cpu_cfs_quota_period,
        cpu_manager_policy,
        registry_pull_qps,
        registry_burst,
        topology_manager_policy,
        rotate_certificates,
        protect_kernel_defaults,
        cgroup_driver,
        housekeeping_interval,
        event_qps,
        event_burst,
        container_log_max_size,
        container_log_max_files,
        enable_cadvisor_json_endpoints,
        pod_pids_limit,
        experimental_allocatable_ignore_eviction,
        shutdown_grace_period,
        shutdown_grace_period_critical_pods,
        memory_swap_behavior,
        crash_loop_back_off_max_container_restart_period,
        kube_api_qps,
        event_record_qps,
        node_lease_duration_seconds,
    } = k;
    let mut t = Fields {
        ledger,
        config: Map::new(),
        extra: Map::new(),
    };

    // Flags the kubelet no longer has: nodeup would pass them and the kubelet would not start.
    for (set, field, flag) in [
        (api_servers.is_some(), "apiServers", "api-servers"),
        (
            require_kubeconfig.is_some(),
            "requireKubeconfig",
            "require-kubeconfig",
        ),
        (
            allow_privileged.is_some(),
            "allowPrivileged",
            "allow-privileged",
        ),
        (
            network_plugin_name.is_some(),
            "networkPluginName",
            "network-plugin",
        ),
        (configure_cbr0.is_some(), "configureCbr0", "configure-cbr0"),
        (
            babysit_daemons.is_some(),
            "babysitDaemons",
            "babysit-daemons",
        ),
        (
            nvidia_gpus.is_some_and(|n| n != 0),
            "nvidiaGPUs",
            "experimental-nvidia-gpus",
        ),
        (reconcile_cidr.is_some(), "reconcileCIDR", "reconcile-cidr"),
        (
            non_masquerade_cidr.is_some(),
            "nonMasqueradeCIDR",
            "non-masquerade-cidr",
        ),
        (
            enable_custom_metrics.is_some(),
            "enableCustomMetrics",
            "enable-custom-metrics",
        ),
        (
            network_plugin_mtu.is_some(),
            "networkPluginMTU",
            "network-plugin-mtu",
        ),
        (
            image_pull_progress_deadline.is_some(),
            "imagePullProgressDeadline",
            "image-pull-progress-deadline",
        ),
        (
            experimental_allowed_unsafe_sysctls.is_some(),
            "experimentalAllowedUnsafeSysctls",
            "experimental-allowed-unsafe-sysctls",
        ),
        (
            enable_cadvisor_json_endpoints.is_some(),
            "enableCadvisorJsonEndpoints",
            "enable-cadvisor-json-endpoints",
        ),
        (
            experimental_allocatable_ignore_eviction.is_some(),
            "experimentalAllocatableIgnoreEviction",
            "experimental-allocatable-ignore-eviction",
        ),
    ] {
        if set {
            t.ledger
                .refuse(format!("KubeletConfig.{field}"), removed_flag(flag));
        }
    }
    // Flag-only settings that need more than the kubelet's config.
    let flag_only = [
        (
            bootstrap_kubeconfig.is_some(),
            "bootstrapKubeconfig",
            "kops-controller issues the kubelet's certificate; a bootstrap kubeconfig is not written",
        ),
        (
            seccomp_profile_root.is_some(),
            "seccompProfileRoot",
            "a flag-only setting (--seccomp-profile-root) the translated spec cannot pass",
        ),
        (
            root_dir.is_some(),
            "rootDir",
            "the kubelet's root directory is /var/lib/kubelet, which nodewright's files live under",
        ),
        (
            housekeeping_interval.is_some(),
            "housekeepingInterval",
            "a flag-only setting (--housekeeping-interval) the translated spec cannot pass",
        ),
        (
            runtime_cgroups.is_some(),
            "runtimeCgroups",
            "nodeup also moves containerd into that slice; nodewright's containerd unit has no Slice=",
        ),
        (
            kubelet_cgroups.is_some(),
            "kubeletCgroups",
            "nodeup also creates the slice and puts the kubelet unit in it",
        ),
        (
            system_cgroups.is_some(),
            "systemCgroups",
            "nodeup also creates the slice for it",
        ),
        (
            tls_cert_file.is_some(),
            "tlsCertFile",
            "nodeup sets it to the certificate kops-controller issues; so does the translation",
        ),
        (
            tls_private_key_file.is_some(),
            "tlsPrivateKeyFile",
            "nodeup sets it to the key made for kops-controller's certificate; so does the translation",
        ),
    ];
    for (set, field, why) in flag_only {
        if set {
            t.ledger.refuse(format!("KubeletConfig.{field}"), why);
        }
    }
    if register_node == &Some(false) {
        t.ledger.refuse(
            "KubeletConfig.registerNode",
            "false: a node that does not register cannot be bootstrapped by kops-controller",
        );
    }
    if register_schedulable == &Some(false) {
        t.ledger.refuse(
            "KubeletConfig.registerSchedulable",
            "false: --register-schedulable is gone from the kubelet; taint the instance group instead",
        );
    }

    // What nodewright sets as nodeup does: checked, not copied.
    t.must_be(
        "KubeletConfig.cgroupDriver",
        cgroup_driver.as_deref(),
        "systemd",
        "containerd's runc uses the systemd cgroup driver",
    );
    t.must_be(
        "KubeletConfig.cloudProvider",
        cloud_provider.as_deref(),
        "external",
        "the AWS cloud controller manager initialises nodes",
    );
    t.must_be(
        "KubeletConfig.kubeconfigPath",
        kubeconfig_path.as_deref(),
        model_kubelet::KUBECONFIG,
        "it is where the kubelet's kubeconfig is written",
    );
    t.must_be(
        "KubeletConfig.podManifestPath",
        pod_manifest_path.as_deref(),
        model_kubelet::MANIFESTS,
        "static pods (kube-proxy) are written there",
    );
    if let Some(path) = client_ca_file {
        t.ledger.note(
            "KubeletConfig.clientCAFile",
            format!("{path}: nodeup replaces it with the cluster CA's path"),
        );
    }
    if let Some(name) = hostname_override {
        t.ledger.note(
            "KubeletConfig.hostnameOverride",
            format!("{name}: nodeup replaces it with the node name"),
        );
    }
    if let Some(image) = pod_infra_container_image {
        t.ledger.note(
            "KubeletConfig.podInfraContainerImage",
            format!("{image}: nodeup does not pass it (containerd's sandboxImage is used)"),
        );
    }
    if let Some(labels) = node_labels.as_ref().filter(|l| !l.is_empty()) {
        t.ledger.note(
            "KubeletConfig.nodeLabels",
            format!(
                "{}: dropped, as nodeup drops them; kops-controller labels the node",
                labels.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    if register_schedulable == &Some(true) {
        t.ledger.note(
            "KubeletConfig.registerSchedulable",
            "true is the kubelet's default (the flag is gone)",
        );
    }
    if register_node == &Some(true) {
        t.ledger.note(
            "KubeletConfig.registerNode",
            "true is the kubelet's default",
        );
    }

    // The KubeletConfiguration, typed where nodewright types it.
    let dns = cluster_dns.as_ref().and_then(|d| {
        t.ledger.value(
            "KubeletConfig.clusterDNS",
            d.parse::<IpAddr>().map_err(|e| format!("{d:?}: {e}")),
        )
    });
    if let Some(dns) = dns {
        t.config
            .insert("clusterDNS".into(), json!([dns.to_string()]));
    }
    t.number("maxPods", *max_pods);
    t.number("podPidsLimit", *pod_pids_limit);
    t.reserved("kubeReserved", kube_reserved.as_ref());
    t.reserved("systemReserved", system_reserved.as_ref());
    t.string("kubeReservedCgroup", kube_reserved_cgroup.as_deref());
    t.string("systemReservedCgroup", system_reserved_cgroup.as_deref());
    if let Some(list) = enforce_node_allocatable
        .as_deref()
        .filter(|l| !l.is_empty())
    {
        t.config.insert(
            "enforceNodeAllocatable".into(),
            json!(list.split(',').map(str::trim).collect::<Vec<_>>()),
        );
    }
    t.signals("evictionHard", eviction_hard.as_deref(), '<');
    t.signals("evictionSoft", eviction_soft.as_deref(), '<');
    t.signals(
        "evictionSoftGracePeriod",
        eviction_soft_grace_period.as_deref(),
        '=',
    );
    t.signals(
        "evictionMinimumReclaim",
        eviction_minimum_reclaim.as_deref(),
        '=',
    );
    if let Some(seconds) = eviction_max_pod_grace_period.filter(|s| *s != 0) {
        t.config
            .insert("evictionMaxPodGracePeriod".into(), json!(seconds));
    }
    t.duration(
        "evictionPressureTransitionPeriod",
        eviction_pressure_transition_period.as_deref(),
        false,
    );
    t.number(
        "imageGCHighThresholdPercent",
        *image_gc_high_threshold_percent,
    );
    t.number(
        "imageGCLowThresholdPercent",
        *image_gc_low_threshold_percent,
    );
    t.duration("imageMinimumGCAge", image_minimum_gc_age.as_deref(), true);
    t.duration("imageMaximumGCAge", image_maximum_gc_age.as_deref(), false);
    t.feature_gates(feature_gates.as_ref());
    t.string("cpuManagerPolicy", cpu_manager_policy.as_deref());
    t.string("topologyManagerPolicy", topology_manager_policy.as_deref());
    t.boolean("serializeImagePulls", *serialize_image_pulls);
    t.number("maxParallelImagePulls", *max_parallel_image_pulls);
    t.number("registryPullQPS", *registry_pull_qps);
    t.nonzero("registryBurst", *registry_burst);
    t.number("kubeAPIQPS", *kube_api_qps);
    // nodeup lets the legacy eventQPS win over eventRecordQPS.
    t.number("eventRecordQPS", event_qps.or(*event_record_qps));
    t.nonzero("eventBurst", *event_burst);
    if let Some(size) = container_log_max_size {
        t.checked("containerLogMaxSize", Quantity::try_from(size.as_str()));
    }
    t.number("containerLogMaxFiles", *container_log_max_files);
    t.duration(
        "shutdownGracePeriod",
        shutdown_grace_period.as_deref(),
        false,
    );
    t.duration(
        "shutdownGracePeriodCriticalPods",
        shutdown_grace_period_critical_pods.as_deref(),
        false,
    );
    t.boolean("protectKernelDefaults", *protect_kernel_defaults);
    if let Some(sysctls) = allowed_unsafe_sysctls.as_ref().filter(|s| !s.is_empty()) {
        t.config
            .insert("allowedUnsafeSysctls".into(), json!(sysctls));
    }
    t.string("resolvConf", resolver_config.as_deref());
    // nodeup's default when unset: 15 minutes (kept from kops's old env file).
    t.duration(
        "runtimeRequestTimeout",
        Some(runtime_request_timeout.as_deref().unwrap_or("15m0s")),
        true,
    );
    t.duration(
        "streamingConnectionIdleTimeout",
        streaming_connection_idle_timeout.as_deref(),
        true,
    );
    t.duration(
        "nodeStatusUpdateFrequency",
        node_status_update_frequency.as_deref(),
        false,
    );
    if let Some(suites) = tls_cipher_suites.as_ref().filter(|s| !s.is_empty()) {
        t.config.insert("tlsCipherSuites".into(), json!(suites));
    }
    t.string("tlsMinVersion", tls_min_version.as_deref());
    t.number("readOnlyPort", *read_only_port);
    t.boolean("failSwapOn", *fail_swap_on);
    t.boolean("seccompDefault", *seccomp_default);

    // KubeletConfiguration fields nodewright does not type.
    if let Some(enabled) = anonymous_auth {
        t.extra.insert(
            "authentication".into(),
            json!({"anonymous": {"enabled": enabled}}),
        );
    }
    if let Some(enabled) = authentication_token_webhook {
        merge(
            &mut t.extra,
            "authentication",
            json!({"webhook": {"enabled": enabled}}),
        );
    }
    if let Some(ttl) = authentication_token_webhook_cache_ttl
        && let Some(ttl) = t.nonzero_duration("authenticationTokenWebhookCacheTTL", ttl)
    {
        merge(
            &mut t.extra,
            "authentication",
            json!({"webhook": {"cacheTTL": ttl}}),
        );
    }
    if let Some(mode) = authorization_mode.as_deref().filter(|m| !m.is_empty()) {
        t.extra
            .insert("authorization".into(), json!({"mode": mode}));
    }
    if let Some(format) = log_format.as_deref().filter(|f| !f.is_empty()) {
        t.extra.insert("logging".into(), json!({"format": format}));
    }
    t.extra_value(
        "enableDebuggingHandlers",
        enable_debugging_handlers.map(Value::from),
    );
    t.extra_value(
        "hairpinMode",
        hairpin_mode
            .clone()
            .filter(|m| !m.is_empty())
            .map(Value::from),
    );
    t.extra_value(
        "podCIDR",
        pod_cidr.clone().filter(|c| !c.is_empty()).map(Value::from),
    );
    if let Some(period) = volume_stats_agg_period {
        let period = t.nonzero_duration("volumeStatsAggPeriod", period);
        t.extra_value("volumeStatsAggPeriod", period.map(Value::from));
    }
    t.extra_value("cpuCFSQuota", cpu_cfs_quota.map(Value::from));
    t.extra_value(
        "cpuCFSQuotaPeriod",
        cpu_cfs_quota_period.clone().map(Value::from),
    );
    t.extra_value("rotateCertificates", rotate_certificates.map(Value::from));
    t.extra_value(
        "kernelMemcgNotification",
        kernel_memcg_notification.map(Value::from),
    );
    if let Some(behavior) = memory_swap_behavior.as_deref().filter(|b| !b.is_empty()) {
        t.extra
            .insert("memorySwap".into(), json!({"swapBehavior": behavior}));
    }
    if let Some(period) = crash_loop_back_off_max_container_restart_period {
        t.extra.insert(
            "crashLoopBackOff".into(),
            json!({"maxContainerRestartPeriod": period}),
        );
    }
    t.extra_value(
        "nodeLeaseDurationSeconds",
        node_lease_duration_seconds.map(Value::from),
    );
    t.extra_value(
        "cgroupRoot",
        cgroup_root
            .clone()
            .filter(|c| !c.is_empty())
            .map(Value::from),
    );
    t.extra_value(
        "volumePluginDir",
        volume_plugin_directory
            .clone()
            .filter(|d| !d.is_empty())
            .map(Value::from),
    );
    // The serving certificate kops-controller issues (nodeup's /srv/kubernetes/kubelet-server.*).
    t.extra
        .insert("tlsCertFile".into(), json!(pki_paths::KUBELET_SERVING_CERT));
    t.extra.insert(
        "tlsPrivateKeyFile".into(),
        json!(pki_paths::KUBELET_SERVING_KEY),
    );

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
    let taint_list = t.taints(taints.as_deref().unwrap_or_default());
    if !taint_list.is_empty() {
        section.insert("taints".into(), Value::Array(taint_list));
    }
    if let Some(level) = log_level {
        match u8::try_from(*level) {
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
        let mut images: Vec<String> = ECR_IMAGES.iter().map(|s| (*s).to_owned()).collect();
        if let Some(c) = containerd.filter(|c| c.use_ecr_credentials_for_mirrors) {
            images.extend(
                c.registry_mirrors
                    .iter()
                    .flatten()
                    .map(|(name, _)| name.clone()),
            );
        }
        section.insert(
            "ecrCredentialProvider".into(),
            json!({"binary": {"asset": asset}, "matchImages": images, "cacheDuration": "12h"}),
        );
    }
    KubeletPart {
        section: Value::Object(section),
        cluster_dns: dns,
        cluster_domain: cluster_domain.clone().filter(|d| !d.is_empty()),
    }
}

/// The KubeletConfiguration being built, with the ledger for what does not fit.
struct Fields<'l> {
    ledger: &'l mut Ledger,
    config: Map<String, Value>,
    extra: Map<String, Value>,
}

impl Fields<'_> {
    fn must_be(&mut self, field: &str, value: Option<&str>, wanted: &str, why: &str) {
        match value {
            None => {}
            Some(v) if v == wanted => {}
            Some(v) => self
                .ledger
                .refuse(field, format!("{v:?}: nodewright sets {wanted:?} ({why})")),
        }
    }

    fn number<T: Into<Value>>(&mut self, name: &str, value: Option<T>) {
        if let Some(value) = value {
            self.config.insert(name.into(), value.into());
        }
    }

    /// A count the kubelet reads 0 as "unset" for: 0 cannot be carried in its config.
    fn nonzero(&mut self, name: &str, value: Option<i32>) {
        match value {
            Some(0) => self.ledger.refuse(
                format!("KubeletConfig.{name}"),
                "0: nodeup passes it as a flag, but in the KubeletConfiguration the kubelet reads 0 as its default",
            ),
            Some(v) => {
                self.config.insert(name.into(), json!(v));
            }
            None => {}
        }
    }

    fn boolean(&mut self, name: &str, value: Option<bool>) {
        if let Some(value) = value {
            self.config.insert(name.into(), json!(value));
        }
    }

    fn string(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            self.config.insert(name.into(), json!(value));
        }
    }

    fn checked<T: serde::Serialize, E: std::fmt::Display>(
        &mut self,
        name: &str,
        value: Result<T, E>,
    ) {
        if let Some(value) = self.ledger.value(&format!("KubeletConfig.{name}"), value) {
            self.config.insert(name.into(), json!(value));
        }
    }

    /// A duration; `zero_is_lost` for fields whose 0 the kubelet reads as its default.
    fn duration(&mut self, name: &str, value: Option<&str>, zero_is_lost: bool) {
        let Some(value) = value else { return };
        let field = format!("KubeletConfig.{name}");
        if zero_is_lost && is_zero(value) {
            self.ledger.refuse(field, "0: nodeup passes it as a flag, but in the KubeletConfiguration the kubelet reads 0 as its default");
            return;
        }
        if let Some(d) = self.ledger.value(&field, GoDuration::try_from(value)) {
            self.config.insert(name.into(), json!(d));
        }
    }

    fn nonzero_duration(&mut self, name: &str, value: &str) -> Option<String> {
        let field = format!("KubeletConfig.{name}");
        if is_zero(value) {
            self.ledger.refuse(field, "0: nodeup passes it as a flag, but in the KubeletConfiguration the kubelet reads 0 as its default");
            return None;
        }
        self.ledger
            .value(&field, GoDuration::try_from(value))
            .map(|d| d.to_string())
    }

    fn extra_value(&mut self, name: &str, value: Option<Value>) {
        if let Some(value) = value {
            self.extra.insert(name.into(), value);
        }
    }

    fn reserved(&mut self, name: &str, value: Option<&BTreeMap<String, String>>) {
        if let Some(map) = value.filter(|m| !m.is_empty()) {
            self.config.insert(name.into(), json!(map));
        }
    }

    /// kops's `memory.available<100Mi,nodefs.available<10%` (or `=` for grace periods
    /// and reclaims) as a map.
    fn signals(&mut self, name: &str, value: Option<&str>, separator: char) {
        let Some(list) = value.filter(|l| !l.trim().is_empty()) else {
            return;
        };
        let mut map = Map::new();
        for pair in list.split(',') {
            match pair.split_once(separator) {
                Some((signal, threshold)) => {
                    map.insert(signal.trim().to_owned(), json!(threshold.trim()));
                }
                None => {
                    self.ledger.refuse(
                        format!("KubeletConfig.{name}"),
                        format!("{pair:?} is not signal{separator}value"),
                    );
                    return;
                }
            }
        }
        self.config.insert(name.into(), Value::Object(map));
    }

    fn feature_gates(&mut self, gates: Option<&BTreeMap<String, String>>) {
        let Some(gates) = gates.filter(|g| !g.is_empty()) else {
            return;
        };
        let mut map = Map::new();
        for (name, raw) in gates {
            // Go's strconv.ParseBool, as nodeup reads them.
            let value = match raw.as_str() {
                "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
                "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
                other => {
                    self.ledger.refuse(
                        format!("KubeletConfig.featureGates.{name}"),
                        format!("{other:?} is not true or false"),
                    );
                    continue;
                }
            };
            map.insert(name.clone(), json!(value));
        }
        self.config
            .insert("featureGates".into(), Value::Object(map));
    }

    /// kops's `key=value:Effect` or `key:Effect`.
    fn taints(&mut self, taints: &[String]) -> Vec<Value> {
        let mut out = Vec::new();
        for (i, taint) in taints.iter().enumerate() {
            let field = format!("KubeletConfig.taints[{i}]");
            let Some((rest, effect)) = taint.rsplit_once(':') else {
                self.ledger
                    .refuse(field, format!("{taint:?} is not key[=value]:Effect"));
                continue;
            };
            if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                self.ledger
                    .refuse(field, format!("{effect:?} is not a taint effect"));
                continue;
            }
            let (key, value) = match rest.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (rest, None),
            };
            let Some(key) = self.ledger.value(&field, LabelKey::try_from(key)) else {
                continue;
            };
            let mut entry = json!({"key": key, "effect": effect});
            if let Some(value) = value {
                let Some(value) = self.ledger.value(&field, LabelValue::try_from(value)) else {
                    continue;
                };
                entry["value"] = json!(value);
            }
            out.push(entry);
        }
        out
    }
}

fn is_zero(duration: &str) -> bool {
    duration
        .chars()
        .all(|c| c == '0' || c == '.' || c.is_ascii_alphabetic() || c == 'µ')
}

/// Merges `value` (a one-key-deep object) into `map[key]`.
fn merge(map: &mut Map<String, Value>, key: &str, value: Value) {
    let entry = map.entry(key.to_owned()).or_insert_with(|| json!({}));
    crate::model::merge::merge_json(entry, &value);
}

#[cfg(test)]
mod tests;
