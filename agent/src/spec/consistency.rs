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
        if let Some(bootstrap) = &kubelet.tls_bootstrap {
            self.check_tls_bootstrap(bootstrap, problems);
        }
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

/// PEM certificates: one, or several (a CA bundle during a rotation, as kops keeps
/// them), each the armour and a base64 body, with nothing else around them.
fn check_pem_certificate(pem: &str) -> Result<(), String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut rest = pem.trim();
    if rest.is_empty() {
        return Err(format!("must be PEM certificates ({BEGIN} ... {END})"));
    }
    while !rest.is_empty() {
        let (body, after) = rest
            .strip_prefix(BEGIN)
            .and_then(|r| r.split_once(END))
            .ok_or_else(|| format!("must be PEM certificates ({BEGIN} ... {END})"))?;
        rest = after.trim_start();
        let base64_ok = body
            .chars()
            .filter(|c| !c.is_whitespace())
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
        if !base64_ok || body.trim().is_empty() || body.contains("-----") {
            return Err("holds something other than base64 certificate bodies".to_owned());
        }
    }
    Ok(())
}

/// A kubeadm bootstrap token: `[a-z0-9]{6}.[a-z0-9]{16}`.
fn is_bootstrap_token(text: &str) -> bool {
    let ok = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    text.split_once('.')
        .is_some_and(|(id, secret)| ok(id, 6) && ok(secret, 16))
}

impl NodeSpec {
    /// `kubelet.tlsBootstrap`: the token file is one of the spec's secret files and
    /// holds a bootstrap token; only workers join that way.
    fn check_tls_bootstrap(
        &self,
        bootstrap: &super::kubelet::TlsBootstrap,
        problems: &mut Problems,
    ) {
        const FIELD: &str = "kubelet.tlsBootstrap.tokenFile";
        if self.role != Role::Worker {
            problems.add(
                "kubelet.tlsBootstrap",
                "only workers join by TLS bootstrapping; a control-plane node issues its \
                 kubelet's certificates from controlPlane.pki"
                    .to_owned(),
            );
        }
        if self.kube_proxy.as_ref().is_some_and(|k| k.enabled) {
            problems.add(
                "kubeProxy.enabled",
                "a worker that joins by TLS bootstrapping holds no kube-proxy certificate: \
                 run kube-proxy as the cluster's DaemonSet and set kubeProxy.enabled: false \
                 (or boot the worker through controller-shim, which issues one)"
                    .to_owned(),
            );
        }
        let Some(file) = self.files.iter().find(|f| f.path == bootstrap.token_file) else {
            problems.add(
                FIELD,
                format!(
                    "{} is none of this spec's files: add it to files with secret: true",
                    bootstrap.token_file
                ),
            );
            return;
        };
        if !file.secret {
            problems.add(
                FIELD,
                format!(
                    "{} holds a bootstrap token: mark that file secret: true",
                    bootstrap.token_file
                ),
            );
        }
        if !is_bootstrap_token(file.content.trim()) {
            problems.add(
                FIELD,
                format!(
                    "{} does not hold a bootstrap token (<6 of a-z0-9>.<16 of a-z0-9>, e.g. \
                     from `kubeadm token create`)",
                    bootstrap.token_file
                ),
            );
        }
    }

    /// Why this spec, booted from the state store (not through controller-shim), leaves
    /// the kubelet without credentials; `None` when it has a way in: the control
    /// plane's PKI, TLS bootstrapping, or no kubelet at all. Credentials the node
    /// already holds are the caller's to weigh.
    pub fn kubelet_credentials_problem(&self) -> Option<String> {
        let kubelet = self.kubelet.as_ref()?;
        if kubelet.tls_bootstrap.is_some() {
            return None;
        }
        let pki = self.role == Role::ControlPlane
            && self.control_plane.as_ref().is_some_and(|c| c.pki.is_some());
        if pki {
            return None;
        }
        Some(format!(
            "the kubelet has no way to get its client certificate: nothing issues \
             {} on a {} booted from the state store. Set kubelet.tlsBootstrap (a bootstrap \
             token in a secret file), boot the worker through controller-shim, or (control \
             plane) set controlPlane.pki",
            "/var/lib/kubelet/pki/kubelet-client.crt", self.role
        ))
    }
}
