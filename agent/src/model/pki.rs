//! The certificates a control-plane node issues for itself from the cluster's CAs:
//! which files, signed by which CA, for which subject, names and usages. Pure: the
//! engine's issuing step reads what is on disk and decides what to (re-)issue.

use std::net::{IpAddr, Ipv4Addr};

use nodewright_shim::pki::{KeyAlgorithm, Subject, Usage};

use super::ModelError;
use super::builder::fixed_path;
use super::kubelet;
use super::pki_paths as paths;
use crate::facts::Facts;
use crate::spec::{AbsPath, NodeSpec, PkiKeyAlgorithm, PkiSpec, Role, etcd_peer_name};

/// The CA that signs a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signer {
    /// `ca.crt`: the cluster CA (API server, kubelets, components, admin).
    Cluster,
    /// `front-proxy-ca.crt`: the aggregation layer's client CA.
    FrontProxy,
    /// `etcd-ca.crt`: etcd servers, peers and their clients.
    Etcd,
}

impl Signer {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cluster => "cluster CA",
            Self::FrontProxy => "front-proxy CA",
            Self::Etcd => "etcd CA",
        }
    }
}

/// One certificate (and its key) the node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCertificate {
    pub cert_path: AbsPath,
    pub key_path: AbsPath,
    pub signer: Signer,
    pub subject: Subject,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub usage: Usage,
    pub validity_days: u32,
    pub backdate_minutes: u32,
    pub key_algorithm: KeyAlgorithm,
    /// Mode of the certificate file (root-owned); keys are always 0600.
    pub cert_mode: u32,
}

pub const KEY_MODE: u32 = 0o600;
pub const CERT_MODE: u32 = 0o644;

/// The PKI section of a control-plane node's spec; `None` elsewhere (workers never
/// read a CA key).
pub fn pki_spec(spec: &NodeSpec) -> Option<&PkiSpec> {
    if spec.role != Role::ControlPlane {
        return None;
    }
    spec.control_plane.as_ref()?.pki.as_ref()
}

/// Every certificate a control-plane node with `controlPlane.pki` issues, in a fixed
/// order. Empty for any other node.
pub fn desired_certificates(
    spec: &NodeSpec,
    facts: &Facts,
) -> Result<Vec<DesiredCertificate>, ModelError> {
    let Some(pki) = pki_spec(spec) else {
        return Ok(Vec::new());
    };
    let cluster = &spec.cluster;
    let node_ip = IpAddr::V4(facts.instance.private_ipv4);
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let algorithm = match pki.key_algorithm {
        PkiKeyAlgorithm::EcdsaP256 => KeyAlgorithm::EcdsaP256,
        PkiKeyAlgorithm::Rsa2048 => KeyAlgorithm::Rsa2048,
    };
    let cert = |cert: &str, key: &str, signer, subject: Subject, usage| DesiredCertificate {
        cert_path: fixed_path(cert),
        key_path: fixed_path(key),
        signer,
        subject,
        dns_names: Vec::new(),
        ips: Vec::new(),
        usage,
        validity_days: pki.validity_days,
        backdate_minutes: pki.backdate_minutes,
        key_algorithm: algorithm,
        cert_mode: CERT_MODE,
    };
    let with_names = |mut c: DesiredCertificate, dns: Vec<String>, ips: Vec<IpAddr>| {
        c.dns_names = dedup(dns);
        c.ips = dedup(ips);
        c
    };
    let local_dns = || vec!["localhost".to_owned()];

    // The API names and load-balancer addresses: in the API server's and the shim's
    // serving certificates.
    let mut api_dns = Vec::new();
    let mut api_ips = Vec::new();
    if let Some(api) = &cluster.api {
        api_dns.push(api.name.to_string());
        api_dns.extend(api.public_name.as_ref().map(ToString::to_string));
        api_ips.extend(api.load_balancer_ips.iter().copied());
    }
    if let Some(dns) = spec.control_plane.as_ref().and_then(|c| c.dns.as_ref()) {
        api_dns.push(dns.api_name(&cluster.name));
        api_ips.extend(dns.load_balancer_ips.iter().copied());
    }

    let mut out = Vec::new();
    let first_service_ip = first_ip(&cluster.service_cidr).ok_or_else(|| {
        ModelError::Spec(format!(
            "cluster.serviceCidr {} has no first address for the API service",
            cluster.service_cidr
        ))
    })?;
    let mut apiserver_dns = vec![
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        format!("kubernetes.default.svc.{}", cluster.cluster_domain),
    ];
    apiserver_dns.extend(api_dns.iter().cloned());
    apiserver_dns.extend(local_dns());
    let mut apiserver_ips = vec![first_service_ip];
    apiserver_ips.extend(api_ips.iter().copied());
    apiserver_ips.extend([loopback, node_ip]);
    out.push(with_names(
        cert(
            paths::APISERVER_CERT,
            paths::APISERVER_KEY,
            Signer::Cluster,
            Subject::new("kube-apiserver", &[]),
            Usage::Server,
        ),
        apiserver_dns,
        apiserver_ips,
    ));
    out.push(cert(
        paths::APISERVER_KUBELET_CLIENT_CERT,
        paths::APISERVER_KUBELET_CLIENT_KEY,
        Signer::Cluster,
        Subject::new("kube-apiserver-kubelet-client", &["system:masters"]),
        Usage::Client,
    ));
    out.push(cert(
        paths::APISERVER_ETCD_CLIENT_CERT,
        paths::APISERVER_ETCD_CLIENT_KEY,
        Signer::Etcd,
        Subject::new("kube-apiserver-etcd-client", &[]),
        Usage::Client,
    ));
    out.push(cert(
        paths::FRONT_PROXY_CLIENT_CERT,
        paths::FRONT_PROXY_CLIENT_KEY,
        Signer::FrontProxy,
        Subject::new("front-proxy-client", &[]),
        Usage::Client,
    ));
    if let Some(kubelet_spec) = &spec.kubelet {
        let name = kubelet::node_name(kubelet_spec, facts);
        let subject = Subject::new(&format!("system:node:{name}"), &["system:nodes"]);
        out.push(cert(
            kubelet::CLIENT_CERT,
            kubelet::CLIENT_KEY,
            Signer::Cluster,
            subject.clone(),
            Usage::Client,
        ));
        let mut dns = vec![facts.instance.hostname.clone()];
        if name != facts.instance.hostname {
            dns.push(name.clone());
        }
        let ips = kubelet::node_ips(kubelet_spec, facts)?;
        out.push(with_names(
            cert(
                paths::KUBELET_SERVING_CERT,
                paths::KUBELET_SERVING_KEY,
                Signer::Cluster,
                subject,
                Usage::Server,
            ),
            dns,
            ips,
        ));
    }
    if spec.kube_proxy.as_ref().is_some_and(|p| p.enabled) {
        out.push(cert(
            super::kube_proxy::CLIENT_CERT,
            super::kube_proxy::CLIENT_KEY,
            Signer::Cluster,
            Subject::new("system:kube-proxy", &[]),
            Usage::Client,
        ));
    }
    for (component, client_cert, client_key, serving_cert, serving_key) in [
        (
            "kube-controller-manager",
            paths::CONTROLLER_MANAGER_CLIENT_CERT,
            paths::CONTROLLER_MANAGER_CLIENT_KEY,
            paths::CONTROLLER_MANAGER_SERVING_CERT,
            paths::CONTROLLER_MANAGER_SERVING_KEY,
        ),
        (
            "kube-scheduler",
            paths::SCHEDULER_CLIENT_CERT,
            paths::SCHEDULER_CLIENT_KEY,
            paths::SCHEDULER_SERVING_CERT,
            paths::SCHEDULER_SERVING_KEY,
        ),
    ] {
        out.push(cert(
            client_cert,
            client_key,
            Signer::Cluster,
            Subject::new(&format!("system:{component}"), &[]),
            Usage::Client,
        ));
        // They serve /healthz and /metrics on the node's loopback.
        out.push(with_names(
            cert(
                serving_cert,
                serving_key,
                Signer::Cluster,
                Subject::new(component, &[]),
                Usage::Server,
            ),
            local_dns(),
            vec![loopback],
        ));
    }
    out.push(cert(
        paths::ADMIN_CLIENT_CERT,
        paths::ADMIN_CLIENT_KEY,
        Signer::Cluster,
        Subject::new("kubernetes-admin", &["system:masters"]),
        Usage::Client,
    ));

    let etcd_domain = spec
        .control_plane
        .as_ref()
        .and_then(|c| c.dns.as_ref())
        .map(|d| d.etcd_domain(&cluster.name))
        .unwrap_or_else(|| format!("internal.{}", cluster.name));
    for (etcd_cluster, member) in &facts.control_plane.etcd_members {
        let peer_name = member
            .peer_names
            .get(&member.member)
            .cloned()
            .unwrap_or_else(|| etcd_peer_name(etcd_cluster, &member.member, &etcd_domain));
        let dns = vec![peer_name.clone(), "localhost".to_owned()];
        let ips = vec![node_ip, loopback];
        let server_cert = paths::etcd_server_cert(etcd_cluster);
        let server_key = paths::etcd_server_key(etcd_cluster);
        let peer_cert = paths::etcd_peer_cert(etcd_cluster);
        let peer_key = paths::etcd_peer_key(etcd_cluster);
        out.push(with_names(
            cert(
                &server_cert,
                &server_key,
                Signer::Etcd,
                Subject::new(&peer_name, &[]),
                Usage::ClientAndServer,
            ),
            dns.clone(),
            ips.clone(),
        ));
        // Peers dial each other with this one: it is client and server.
        out.push(with_names(
            cert(
                &peer_cert,
                &peer_key,
                Signer::Etcd,
                Subject::new(&peer_name, &[]),
                Usage::ClientAndServer,
            ),
            dns,
            ips,
        ));
    }
    out.push(cert(
        paths::ETCD_CLIENT_CERT,
        paths::ETCD_CLIENT_KEY,
        Signer::Etcd,
        Subject::new("etcd-client", &[]),
        Usage::Client,
    ));

    let mut shim_dns = api_dns;
    shim_dns.push(facts.instance.hostname.clone());
    shim_dns.extend(local_dns());
    let mut shim_ips = api_ips;
    shim_ips.extend([node_ip, loopback]);
    out.push(with_names(
        cert(
            paths::SHIM_SERVING_CERT,
            paths::SHIM_SERVING_KEY,
            Signer::Cluster,
            Subject::new("controller-shim", &[]),
            Usage::Server,
        ),
        shim_dns,
        shim_ips,
    ));
    Ok(out)
}

/// The first usable address of a CIDR: the `kubernetes` service's ClusterIP.
fn first_ip(cidr: &ipnet::IpNet) -> Option<IpAddr> {
    cidr.hosts().next()
}

/// Keeps the first of each value, in order.
fn dedup<T: PartialEq>(values: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(values.len());
    for value in values {
        if !out.contains(&value) {
            out.push(value);
        }
    }
    out
}

/// One line per certificate, for golden tests and `plan`-style listings (no secrets:
/// there are none here).
pub fn describe(cert: &DesiredCertificate) -> String {
    let usage = match cert.usage {
        Usage::Client => "client",
        Usage::Server => "server",
        Usage::ClientAndServer => "client+server",
    };
    let mut line = format!(
        "{} (key {}, {:o}) by {}: {} [{usage}]",
        cert.cert_path,
        cert.key_path,
        cert.cert_mode,
        cert.signer.as_str(),
        cert.subject,
    );
    if !cert.dns_names.is_empty() || !cert.ips.is_empty() {
        let names: Vec<String> = cert
            .dns_names
            .iter()
            .map(|d| format!("DNS:{d}"))
            .chain(cert.ips.iter().map(|ip| format!("IP:{ip}")))
            .collect();
        line.push_str(&format!(" SANs {}", names.join(",")));
    }
    line.push_str(&format!(
        " {} days, backdated {} min, {}",
        cert.validity_days, cert.backdate_minutes, cert.key_algorithm
    ));
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{test_spec, test_spec_for};

    #[test]
    fn workers_issue_nothing_and_hold_no_ca_key() {
        let spec = test_spec("");
        assert!(pki_spec(&spec).is_none());
        assert!(
            desired_certificates(&spec, &Facts::example())
                .unwrap()
                .is_empty()
        );
        let state = crate::model::desired_state(&spec, &Facts::example()).unwrap();
        assert!(state.file(paths::CA_KEY).is_none());
    }

    #[test]
    fn the_api_server_names_follow_the_spec() {
        let spec = test_spec_for(
            "control-plane",
            "controlPlane:\n  pki:\n    store: s3://state/pki/\n    keyAlgorithm: rsa2048\n",
        );
        let certs = desired_certificates(&spec, &Facts::example()).unwrap();
        let api = &certs[0];
        assert_eq!(api.cert_path.as_str(), paths::APISERVER_CERT);
        assert_eq!(api.key_algorithm, KeyAlgorithm::Rsa2048);
        assert!(api.ips.contains(&"100.64.0.1".parse().unwrap()));
        assert!(api.ips.contains(&"10.0.1.23".parse().unwrap()));
        assert!(api.dns_names.contains(&"api.test.example.com".to_owned()));
        assert!(
            api.dns_names
                .contains(&"kubernetes.default.svc.cluster.local".to_owned())
        );
        // No kubelet section: no kubelet certificates; no etcd member: no etcd server.
        assert!(
            !certs
                .iter()
                .any(|c| c.cert_path.as_str() == kubelet::CLIENT_CERT)
        );
        assert!(
            !certs
                .iter()
                .any(|c| c.cert_path.as_str().contains("-server.crt"))
        );
    }
}
