//! What the kubelet gives pods and keeps for the system: pod counts, reservations and
//! their cgroups, eviction, image garbage collection, CPU and memory management.

use serde_json::{Value, json};

use super::fields::Fields;
use crate::kops::kubelet_config::KubeletConfigSpec;

pub(super) fn config(k: &KubeletConfigSpec, t: &mut Fields<'_>) {
    let KubeletConfigSpec {
        max_pods,
        pod_pids_limit,
        kube_reserved,
        system_reserved,
        kube_reserved_cgroup,
        system_reserved_cgroup,
        enforce_node_allocatable,
        eviction_hard,
        eviction_soft,
        eviction_soft_grace_period,
        eviction_minimum_reclaim,
        eviction_max_pod_grace_period,
        eviction_pressure_transition_period,
        image_gc_high_threshold_percent,
        image_gc_low_threshold_percent,
        image_minimum_gc_age,
        image_maximum_gc_age,
        cpu_manager_policy,
        topology_manager_policy,
        fail_swap_on,
        cpu_cfs_quota,
        cpu_cfs_quota_period,
        kernel_memcg_notification,
        memory_swap_behavior,
        cgroup_root,
        volume_plugin_directory,
        ..
    } = k;
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
    t.string("cpuManagerPolicy", cpu_manager_policy.as_deref());
    t.string("topologyManagerPolicy", topology_manager_policy.as_deref());
    t.boolean("failSwapOn", *fail_swap_on);
    t.extra_value("cpuCFSQuota", cpu_cfs_quota.map(Value::from));
    t.extra_value(
        "cpuCFSQuotaPeriod",
        cpu_cfs_quota_period.clone().map(Value::from),
    );
    t.extra_value(
        "kernelMemcgNotification",
        kernel_memcg_notification.map(Value::from),
    );
    if let Some(behavior) = memory_swap_behavior.as_deref().filter(|b| !b.is_empty()) {
        t.extra
            .insert("memorySwap".into(), json!({"swapBehavior": behavior}));
    }
    t.extra_string("cgroupRoot", cgroup_root.as_deref());
    t.extra_string("volumePluginDir", volume_plugin_directory.as_deref());
}

/// How often volume usage is measured.
pub(super) fn volume_stats(k: &KubeletConfigSpec, t: &mut Fields<'_>) {
    if let Some(period) = &k.volume_stats_agg_period {
        let period = t.nonzero_duration("volumeStatsAggPeriod", period);
        t.extra_value("volumeStatsAggPeriod", period.map(Value::from));
    }
}
