//! The node spec's checks of the components' sections, alone and against each other
//! (what one field alone cannot say).

use std::collections::BTreeSet;

use super::kubelet::PROTECTED_KERNEL_DEFAULTS;
use super::validate::Problems;
use super::{NodeSpec, Role};

impl NodeSpec {
    /// Checks of the node components' sections, alone and against each other.
    pub(super) fn check_components(&self, problems: &mut Problems) {
        let cluster = &self.cluster;
        self.host.check(problems);
        if let Some(containerd) = &self.containerd {
            containerd.check(problems);
        }
        if let Some(cni) = &self.cni {
            cni.check(problems);
        }
        if let Some(pem) = &cluster.ca_certificate
            && let Err(message) = check_pem_certificate(pem)
        {
            problems.add("cluster.caCertificate", message);
        }
        if let Some(api) = &cluster.api {
            let mut seen = BTreeSet::new();
            for (i, ip) in api.load_balancer_ips.iter().enumerate() {
                if !seen.insert(ip) {
                    problems.add(
                        &format!("cluster.api.loadBalancerIps[{i}]"),
                        format!("{ip} is listed twice"),
                    );
                }
            }
        }
        let kube_proxy = self.kube_proxy.as_ref().filter(|k| k.enabled);
        if let Some(kube_proxy) = &self.kube_proxy {
            kube_proxy.check(problems);
        }
        if kube_proxy.is_some() && self.kubelet.is_none() {
            problems.add(
                "kubeProxy",
                "kube-proxy runs as a static pod of the kubelet: add a kubelet section".to_owned(),
            );
        }
        let Some(kubelet) = &self.kubelet else {
            return;
        };
        kubelet.check(problems);
        if self.containerd.is_none() {
            problems.add(
                "kubelet",
                "the kubelet needs a container runtime: add a containerd section".to_owned(),
            );
        }
        if cluster.api.is_none() {
            problems.add(
                "cluster",
                "the kubelet needs cluster.api (the API server's name) to reach the cluster"
                    .to_owned(),
            );
        }
        // A control-plane node with controlPlane.pki writes ca.crt from the store.
        let pki_ca = self.role == Role::ControlPlane
            && self.control_plane.as_ref().is_some_and(|c| c.pki.is_some());
        if cluster.ca_certificate.is_none() && !pki_ca {
            problems.add(
                "cluster",
                "the kubelet needs cluster.caCertificate (or, on control-plane nodes, \
                 controlPlane.pki) to trust the API server"
                    .to_owned(),
            );
        }
        if kubelet.protects_kernel_defaults() {
            for (key, wanted) in PROTECTED_KERNEL_DEFAULTS {
                let set = self
                    .sysctls
                    .iter()
                    .find(|(k, _)| k.as_str() == *key)
                    .map(|(k, v)| (k, v.render()));
                match set {
                    Some((k, value)) if value.trim() != *wanted => problems.add(
                        &format!("sysctls[{:?}]", k.as_str()),
                        format!(
                            "the kubelet (protectKernelDefaults) refuses to start unless {key} = {wanted}"
                        ),
                    ),
                    None if !self.host.default_sysctls => problems.add(
                        "host.defaultSysctls",
                        format!(
                            "the kubelet (protectKernelDefaults) refuses to start unless {key} = {wanted}: set it in sysctls or keep the default sysctls"
                        ),
                    ),
                    _ => {}
                }
            }
        }
    }
}

/// A PEM certificate: the armour, and a base64 body.
fn check_pem_certificate(pem: &str) -> Result<(), String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = pem.trim();
    let body = text
        .strip_prefix(BEGIN)
        .and_then(|rest| rest.strip_suffix(END))
        .ok_or_else(|| format!("must be one PEM certificate ({BEGIN} ... {END})"))?;
    let base64_ok = body
        .chars()
        .filter(|c| !c.is_whitespace())
        .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
    if !base64_ok || body.trim().is_empty() || body.contains("-----") {
        return Err("holds something other than one base64 certificate body".to_owned());
    }
    Ok(())
}
