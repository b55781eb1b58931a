//! kube-proxy as a static pod of the kubelet: its KubeProxyConfiguration, kubeconfig
//! and pod manifest. The kubelet restarts a static pod only when its manifest changes,
//! so the manifest carries the digest of the files the pod reads.

use serde_json::{Value, json};

use super::ModelError;
use super::builder::{StateBuilder, fixed_path};
use super::cluster::CA_CERT;
use super::desired::{Content, INPUTS_ANNOTATION, INPUTS_PLACEHOLDER, Ownership};
use super::kubeconfig::Kubeconfig;
use super::kubelet::{MANIFESTS, node_name};
use super::merge::merge_json;
use super::render::to_yaml;
use crate::facts::Facts;
use crate::spec::{NodeSpec, ProxyMode};

const COMPONENT: &str = "kube-proxy";

pub const DIR: &str = "/var/lib/kube-proxy";
pub const CONFIG: &str = "/var/lib/kube-proxy/config.yaml";
pub const KUBECONFIG: &str = "/var/lib/kube-proxy/kubeconfig";
/// kube-proxy's client certificate (CN system:kube-proxy), issued like the kubelet's.
pub const CLIENT_CERT: &str = "/var/lib/kube-proxy/client.crt";
pub const CLIENT_KEY: &str = "/var/lib/kube-proxy/client.key";
pub const MANIFEST_NAME: &str = "kube-proxy.yaml";

/// Modules IPVS mode needs loaded before kube-proxy starts.
const IPVS_MODULES: &[&str] = &["ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack"];

pub fn render(spec: &NodeSpec, facts: &Facts, out: &mut StateBuilder) -> Result<(), ModelError> {
    let Some(proxy) = spec.kube_proxy.as_ref().filter(|p| p.enabled) else {
        return Ok(());
    };
    let (Some(kubelet), Some(api)) = (&spec.kubelet, &spec.cluster.api) else {
        return Err(ModelError::Spec(
            "kube-proxy needs the kubelet and cluster.api".to_owned(),
        ));
    };
    if proxy.mode == ProxyMode::Ipvs {
        for module in IPVS_MODULES {
            out.module(module);
        }
    }
    let node = node_name(kubelet, facts);
    let mut config = json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": KUBECONFIG},
        "conntrack": {"maxPerCore": proxy.conntrack_max_per_core},
        "hostnameOverride": node,
        "mode": proxy.mode.as_str(),
    });
    // Without a pod network (the CNI manages pod addresses) kube-proxy masquerades by
    // its own rules, as on kops's IPv6 clusters.
    if let Some(cidr) = proxy.cluster_cidr.or(spec.cluster.pod_cidr) {
        config["clusterCIDR"] = json!(cidr.to_string());
    }
    merge_json(&mut config, &Value::Object(proxy.extra_config.clone()));
    let config = Content::new(to_yaml(config));

    let server = api.server_url();
    let kubeconfig = Content::new(
        Kubeconfig {
            user: "kube-proxy",
            server: &server,
            ca_file: CA_CERT,
            client_certificate: CLIENT_CERT,
            client_key: CLIENT_KEY,
        }
        .render(),
    );

    let image = proxy.image.as_ref().map_or_else(
        || {
            format!(
                "registry.k8s.io/kube-proxy:v{}",
                spec.cluster.kubernetes_version
            )
        },
        |i| i.to_string(),
    );
    let mut requests = json!({"cpu": proxy.cpu_request.as_str()});
    if let Some(memory) = &proxy.memory_request {
        requests["memory"] = json!(memory.as_str());
    }
    let manifest = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "kube-proxy",
            "namespace": "kube-system",
            "labels": {"k8s-app": "kube-proxy", "tier": "node"},
            "annotations": {(INPUTS_ANNOTATION): INPUTS_PLACEHOLDER},
        },
        "spec": {
            "hostNetwork": true,
            "priorityClassName": "system-node-critical",
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "kube-proxy",
                "image": image,
                "command": [
                    "/usr/local/bin/kube-proxy",
                    format!("--config={CONFIG}"),
                    format!("--v={}", proxy.verbosity),
                ],
                "resources": {"requests": requests},
                "securityContext": {"privileged": true},
                "volumeMounts": [
                    {"name": "kube-proxy", "mountPath": DIR, "readOnly": true},
                    // Only the CA certificate: on a control-plane node its directory
                    // also holds keys.
                    {"name": "ca", "mountPath": CA_CERT, "readOnly": true},
                    {"name": "lib-modules", "mountPath": "/lib/modules", "readOnly": true},
                    {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                ],
            }],
            "volumes": [
                {"name": "kube-proxy", "hostPath": {"path": DIR, "type": "Directory"}},
                {"name": "ca", "hostPath": {"path": CA_CERT, "type": "File"}},
                {"name": "lib-modules", "hostPath": {"path": "/lib/modules", "type": "Directory"}},
                {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
            ],
        },
    });

    out.directory(COMPONENT, fixed_path(DIR), Ownership::root(0o700))?;
    out.add_file(
        COMPONENT,
        fixed_path(CONFIG),
        config,
        Ownership::root(0o644),
        super::FileKind::Plain,
        false,
    )?;
    out.add_file(
        COMPONENT,
        fixed_path(KUBECONFIG),
        kubeconfig,
        Ownership::root(0o600),
        super::FileKind::Plain,
        false,
    )?;
    let manifest_path = fixed_path(MANIFESTS).join(MANIFEST_NAME)?;
    // The pod reads these; the engine puts the digest of their bytes as written into
    // the manifest, so a change to any of them (the CA too, wherever it comes from:
    // the spec, controller-shim or the control plane's PKI) recreates the pod.
    let inputs = [CONFIG, KUBECONFIG, CA_CERT].map(fixed_path).to_vec();
    out.static_pod(COMPONENT, manifest_path, to_yaml(manifest), inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{desired_state, test_spec};

    fn manifest(kube_proxy: &str, facts: &Facts) -> String {
        let spec = test_spec(&format!(
            "containerd:\n  version: 1.7.27\nkubelet: {{}}\nkubeProxy:\n{kube_proxy}"
        ));
        let desired = desired_state(&spec, facts).unwrap();
        let file = desired
            .file("/etc/kubernetes/manifests/kube-proxy.yaml")
            .unwrap();
        String::from_utf8(file.content.bytes().to_vec()).unwrap()
    }

    #[test]
    fn the_engine_digests_what_the_pod_reads() {
        let facts = Facts::example();
        let spec = test_spec("containerd:\n  version: 1.7.27\nkubelet: {}\nkubeProxy: {}\n");
        let desired = desired_state(&spec, &facts).unwrap();
        let pod = desired
            .static_pod("/etc/kubernetes/manifests/kube-proxy.yaml")
            .unwrap();
        let inputs: Vec<&str> = pod.inputs.iter().map(|p| p.as_str()).collect();
        assert_eq!(inputs, [CONFIG, KUBECONFIG, CA_CERT]);
        let text = manifest("  mode: iptables\n", &facts);
        assert!(
            text.contains(&format!("{INPUTS_ANNOTATION}: {INPUTS_PLACEHOLDER}")),
            "{text}"
        );
    }

    #[test]
    fn off_means_no_pod_and_ipvs_loads_its_modules() {
        let spec = test_spec(
            "containerd:\n  version: 1.7.27\nkubelet: {}\nkubeProxy:\n  enabled: false\n",
        );
        let desired = desired_state(&spec, &Facts::example()).unwrap();
        assert!(
            desired
                .file("/etc/kubernetes/manifests/kube-proxy.yaml")
                .is_none()
        );
        assert!(desired.file(KUBECONFIG).is_none());
        let spec =
            test_spec("containerd:\n  version: 1.7.27\nkubelet: {}\nkubeProxy:\n  mode: ipvs\n");
        let desired = desired_state(&spec, &Facts::example()).unwrap();
        assert!(desired.modules.iter().any(|m| m == "ip_vs_rr"));
    }
}
