//! Kubelet fields nodewright refuses: flags the kubelet no longer has, and flag-only
//! settings that need more than the kubelet's config.

use crate::kops::kubelet_config::KubeletConfigSpec;
use crate::kops::refusals::Ledger;

/// A flag nodeup passes for this field, which kubelets of the versions kops supports
/// refuse (they were removed).
fn removed_flag(flag: &str) -> String {
    format!("nodeup passes --{flag}, a flag the kubelet no longer has (it would not start)")
}

pub(super) fn refuse(k: &KubeletConfigSpec, ledger: &mut Ledger) {
    let KubeletConfigSpec {
        api_servers,
        require_kubeconfig,
        allow_privileged,
        network_plugin_name,
        configure_cbr0,
        babysit_daemons,
        nvidia_gpus,
        reconcile_cidr,
        non_masquerade_cidr,
        enable_custom_metrics,
        network_plugin_mtu,
        image_pull_progress_deadline,
        experimental_allowed_unsafe_sysctls,
        enable_cadvisor_json_endpoints,
        experimental_allocatable_ignore_eviction,
        bootstrap_kubeconfig,
        seccomp_profile_root,
        root_dir,
        housekeeping_interval,
        runtime_cgroups,
        kubelet_cgroups,
        system_cgroups,
        tls_cert_file,
        tls_private_key_file,
        register_node,
        register_schedulable,
        ..
    } = k;
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
            ledger.refuse(format!("KubeletConfig.{field}"), removed_flag(flag));
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
            ledger.refuse(format!("KubeletConfig.{field}"), why);
        }
    }
    if register_node == &Some(false) {
        ledger.refuse(
            "KubeletConfig.registerNode",
            "false: a node that does not register cannot be bootstrapped by kops-controller",
        );
    }
    if register_schedulable == &Some(false) {
        ledger.refuse(
            "KubeletConfig.registerSchedulable",
            "false: --register-schedulable is gone from the kubelet; taint the instance group instead",
        );
    }
}
