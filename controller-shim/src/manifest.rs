//! controller-shim as a static pod: what the control-plane model writes to
//! `/etc/kubernetes/manifests/`, so the first control-plane node brings the shim up with
//! the kubelet and nothing else.
//!
//! Pure: settings in, YAML out. The pod mounts exactly the files the shim reads, each
//! read-only and at the same path as on the host (so the configuration's paths hold in
//! both places): its configuration, its serving certificate and key, the cluster CA's
//! certificate and key, and the OS trust bundle for its calls to AWS (a FROM-scratch
//! image has none).

use serde_json::json;

use crate::protocol::{DEFAULT_PORT, HEALTH_PATH};

/// Everything the pod depends on; [`StaticPodSettings::new`] has the conventional paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPodSettings {
    /// The image, from the node spec (e.g. `registry.example.com/controller-shim:0.1.0`).
    pub image: String,
    pub port: u16,
    /// Host paths, mounted read-only at the same paths.
    pub config_file: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub ca_cert: String,
    pub ca_key: String,
    /// The OS CA bundle (Debian/Ubuntu `/etc/ssl/certs/ca-certificates.crt`, Amazon
    /// Linux `/etc/pki/tls/certs/ca-bundle.crt`): trust for STS, EC2 and S3.
    pub trust_bundle: String,
    /// `CONTROLLER_SHIM_LOG` (a tracing filter).
    pub log_level: String,
}

impl StaticPodSettings {
    pub fn new(image: &str) -> Self {
        Self {
            image: image.to_owned(),
            port: DEFAULT_PORT,
            config_file: "/etc/kubernetes/controller-shim/config.yaml".to_owned(),
            serving_cert: "/etc/kubernetes/controller-shim/serving.crt".to_owned(),
            serving_key: "/etc/kubernetes/controller-shim/serving.key".to_owned(),
            ca_cert: "/etc/kubernetes/pki/ca.crt".to_owned(),
            ca_key: "/etc/kubernetes/pki/ca.key".to_owned(),
            trust_bundle: "/etc/ssl/certs/ca-certificates.crt".to_owned(),
            log_level: "info".to_owned(),
        }
    }

    /// The host files the pod mounts, with their volume names.
    pub fn mounts(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("config", self.config_file.as_str()),
            ("serving-cert", self.serving_cert.as_str()),
            ("serving-key", self.serving_key.as_str()),
            ("ca-cert", self.ca_cert.as_str()),
            ("ca-key", self.ca_key.as_str()),
            ("trust-bundle", self.trust_bundle.as_str()),
        ]
    }
}

/// The static pod manifest, as YAML.
pub fn render_static_pod(settings: &StaticPodSettings) -> String {
    let probe = |initial: u32, period: u32, failures: u32| {
        json!({
            "httpGet": {
                "host": "127.0.0.1",
                "path": HEALTH_PATH,
                "port": settings.port,
                "scheme": "HTTPS",
            },
            "initialDelaySeconds": initial,
            "periodSeconds": period,
            "timeoutSeconds": 5,
            "failureThreshold": failures,
        })
    };
    let mounts: Vec<_> = settings
        .mounts()
        .into_iter()
        .map(|(name, path)| json!({"name": name, "mountPath": path, "readOnly": true}))
        .collect();
    let volumes: Vec<_> = settings
        .mounts()
        .into_iter()
        .map(|(name, path)| json!({"name": name, "hostPath": {"path": path, "type": "File"}}))
        .collect();
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "controller-shim",
            "namespace": "kube-system",
            "labels": {"k8s-app": "controller-shim", "tier": "control-plane"},
        },
        "spec": {
            // Workers reach it on the node's address; it answers before cluster DNS exists.
            "hostNetwork": true,
            "dnsPolicy": "Default",
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "controller-shim",
                "image": settings.image,
                "command": ["/controller-shim", "serve", "--config", settings.config_file],
                "env": [
                    {"name": "CONTROLLER_SHIM_LOG", "value": settings.log_level},
                    {"name": "SSL_CERT_FILE", "value": settings.trust_bundle},
                ],
                "ports": [{"name": "https", "containerPort": settings.port, "protocol": "TCP"}],
                "livenessProbe": probe(10, 10, 3),
                "readinessProbe": probe(1, 5, 1),
                "resources": {
                    "requests": {"cpu": "50m", "memory": "64Mi"},
                    "limits": {"memory": "256Mi"},
                },
                // Root only to read the root-owned 0600 keys; nothing else is allowed.
                "securityContext": {
                    "runAsUser": 0,
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        },
    });
    let mut out = String::from(
        "# Rendered by nodewright: controller-shim serves the bootstrap of this cluster's workers.\n",
    );
    out.push_str(&yaml_serde::to_string(&pod).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mounts_exactly_the_files_the_shim_reads() {
        let settings = StaticPodSettings::new("registry.example.com/controller-shim:0.1.0");
        let yaml = render_static_pod(&settings);
        let pod: serde_json::Value = yaml_serde::from_str(&yaml).unwrap();
        let container = &pod["spec"]["containers"][0];
        assert_eq!(
            container["image"],
            "registry.example.com/controller-shim:0.1.0"
        );
        let mounts: Vec<&str> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert_eq!(
            mounts,
            [
                "/etc/kubernetes/controller-shim/config.yaml",
                "/etc/kubernetes/controller-shim/serving.crt",
                "/etc/kubernetes/controller-shim/serving.key",
                "/etc/kubernetes/pki/ca.crt",
                "/etc/kubernetes/pki/ca.key",
                "/etc/ssl/certs/ca-certificates.crt",
            ]
        );
        for volume in pod["spec"]["volumes"].as_array().unwrap() {
            assert_eq!(volume["hostPath"]["type"], "File", "{volume}");
        }
        assert!(
            container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["readOnly"] == true)
        );
        assert_eq!(container["livenessProbe"]["httpGet"]["scheme"], "HTTPS");
        assert_eq!(container["livenessProbe"]["httpGet"]["port"], 3988);
        assert_eq!(pod["spec"]["hostNetwork"], true);
    }
}
