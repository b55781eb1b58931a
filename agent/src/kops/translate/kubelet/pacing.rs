//! How the running kubelet paces itself: image pulls, API and event rates, container
//! logs, timeouts, the node lease, crash-loop back-off and shutdown.

use serde_json::{Value, json};

use super::fields::Fields;
use crate::kops::kubelet_config::KubeletConfigSpec;
use crate::spec::Quantity;

pub(super) fn config(k: &KubeletConfigSpec, t: &mut Fields<'_>) {
    let KubeletConfigSpec {
        serialize_image_pulls,
        max_parallel_image_pulls,
        registry_pull_qps,
        registry_burst,
        kube_api_qps,
        event_qps,
        event_record_qps,
        event_burst,
        container_log_max_size,
        container_log_max_files,
        log_format,
        shutdown_grace_period,
        shutdown_grace_period_critical_pods,
        runtime_request_timeout,
        streaming_connection_idle_timeout,
        node_status_update_frequency,
        node_lease_duration_seconds,
        crash_loop_back_off_max_container_restart_period,
        ..
    } = k;
    if let Some(format) = log_format.as_deref().filter(|f| !f.is_empty()) {
        t.extra.insert("logging".into(), json!({"format": format}));
    }
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
}
