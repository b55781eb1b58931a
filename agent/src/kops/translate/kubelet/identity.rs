//! Who the kubelet is and who may talk to it: the settings nodewright makes itself
//! (checked to be nodeup's, not copied), what nodeup replaces (noted), authentication
//! and the serving certificate, and the ECR credential provider.

use serde_json::{Map, Value, json};

use super::fields::Fields;
use crate::kops::kubelet_config::KubeletConfigSpec;
use crate::kops::nodeup_config::ContainerdConfig;
use crate::model::{kubelet as model_kubelet, pki_paths};

/// The registries nodeup's ECR credential provider answers for.
const ECR_IMAGES: &[&str] = &[
    "*.dkr.ecr.*.amazonaws.com",
    "*.dkr.ecr.*.amazonaws.com.cn",
    "*.dkr.ecr-fips.*.amazonaws.com",
    "*.dkr.ecr.us-iso-east-1.c2s.ic.gov",
];

/// What nodewright sets as nodeup does, and what nodeup replaces or drops.
pub(super) fn check(k: &KubeletConfigSpec, t: &mut Fields<'_>) {
    let KubeletConfigSpec {
        cgroup_driver,
        cloud_provider,
        kubeconfig_path,
        pod_manifest_path,
        client_ca_file,
        hostname_override,
        pod_infra_container_image,
        node_labels,
        register_schedulable,
        register_node,
        ..
    } = k;
    // Checked, not copied.
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
}

/// Who may reach the kubelet's API, and the certificate it serves.
pub(super) fn authentication(k: &KubeletConfigSpec, t: &mut Fields<'_>) {
    let KubeletConfigSpec {
        anonymous_auth,
        authentication_token_webhook,
        authentication_token_webhook_cache_ttl,
        authorization_mode,
        enable_debugging_handlers,
        read_only_port,
        ..
    } = k;
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
    t.extra_value(
        "enableDebuggingHandlers",
        enable_debugging_handlers.map(Value::from),
    );
    t.number("readOnlyPort", *read_only_port);
    // The serving certificate kops-controller issues (nodeup's /srv/kubernetes/kubelet-server.*).
    t.extra
        .insert("tlsCertFile".into(), json!(pki_paths::KUBELET_SERVING_CERT));
    t.extra.insert(
        "tlsPrivateKeyFile".into(),
        json!(pki_paths::KUBELET_SERVING_KEY),
    );
}

/// The ECR credential provider's settings, its binary from `asset`: nodeup's registries
/// and, when containerd is told to, its mirrors.
pub(super) fn ecr_credential_provider(asset: &str, containerd: Option<&ContainerdConfig>) -> Value {
    let mut images: Vec<String> = ECR_IMAGES.iter().map(|s| (*s).to_owned()).collect();
    if let Some(c) = containerd.filter(|c| c.use_ecr_credentials_for_mirrors) {
        images.extend(
            c.registry_mirrors
                .iter()
                .flatten()
                .map(|(name, _)| name.clone()),
        );
    }
    json!({"binary": {"asset": asset}, "matchImages": images, "cacheDuration": "12h"})
}

/// Merges `value` (a one-key-deep object) into `map[key]`.
fn merge(map: &mut Map<String, Value>, key: &str, value: Value) {
    let entry = map.entry(key.to_owned()).or_insert_with(|| json!({}));
    crate::model::merge::merge_json(entry, &value);
}
