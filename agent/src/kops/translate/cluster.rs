//! The `cluster` section: name, version, networks, the DNS service, the API endpoint
//! and the CA, from kube_env and the nodeupconfig.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use super::Context;
use super::kubelet::KubeletPart;
use crate::kops::nodeup_config::KubeProxyConfig;
use crate::kops::refusals::Ledger;
use crate::spec::{DnsName, KubernetesVersion};

/// The keyset kops names the cluster CA.
pub const CLUSTER_CA: &str = "kubernetes-ca";

pub(super) fn translate(
    context: &Context<'_>,
    kubernetes_version: &str,
    cas: Option<&BTreeMap<String, String>>,
    keypair_ids: Option<&BTreeMap<String, String>>,
    kubelet: &KubeletPart,
    kube_proxy: Option<&KubeProxyConfig>,
    ledger: &mut Ledger,
) -> Value {
    let env = context.env;
    let networking = &context.config.networking;
    let mut cluster = Map::new();
    if let Some(name) = ledger.value("ClusterName", DnsName::try_from(env.cluster_name.as_str())) {
        cluster.insert("name".into(), json!(name));
    }
    if let Some(version) = ledger.value(
        "KubernetesVersion",
        KubernetesVersion::try_from(kubernetes_version.to_owned()),
    ) {
        cluster.insert("kubernetesVersion".into(), json!(version));
    }
    if let Some(domain) = &kubelet.cluster_domain {
        cluster.insert("clusterDomain".into(), json!(domain));
    }
    let service = ledger.value(
        "Networking.serviceClusterIPRange",
        networking
            .service_cluster_ip_range
            .parse::<IpNet>()
            .map_err(|e| format!("{:?}: {e}", networking.service_cluster_ip_range)),
    );
    if let Some(service) = service {
        cluster.insert("serviceCidr".into(), json!(service.to_string()));
        // The DNS service's address: kubelet's clusterDNS when it is one of the service
        // network (kube-dns/CoreDNS), else (NodeLocal DNSCache) kops's default, the
        // network's tenth address; the kubelet then gets clusterDNS itself.
        let dns_ip = match kubelet.cluster_dns {
            Some(ip) if service.contains(&ip) => Some(ip),
            _ => nth_address(&service, 10),
        };
        if let Some(ip) = dns_ip {
            cluster.insert("dnsIp".into(), json!(ip.to_string()));
        }
    }
    // kops's pod network, where nodeup has it: kube-proxy's clusterCIDR. IPv6-only
    // clusters and CNIs that replace kube-proxy have none, and need none.
    if let Some(cidr) = kube_proxy.and_then(|p| p.cluster_cidr.as_deref()) {
        let pod = ledger.value(
            "KubeProxy.clusterCIDR",
            cidr.parse::<IpNet>().map_err(|e| format!("{cidr:?}: {e}")),
        );
        if let Some(pod) = pod {
            cluster.insert("podCidr".into(), json!(pod.to_string()));
        }
    }
    let mut api = Map::new();
    api.insert(
        "name".into(),
        json!(format!("api.internal.{}", env.cluster_name)),
    );
    let mut ips = Vec::new();
    for (i, ip) in env.api_server_ips.iter().enumerate() {
        if let Some(ip) = ledger.value(
            &format!("APIServerIPs[{i}]"),
            ip.parse::<IpAddr>().map_err(|e| format!("{ip:?}: {e}")),
        ) {
            ips.push(ip.to_string());
        }
    }
    if !ips.is_empty() {
        api.insert("loadBalancerIps".into(), json!(ips));
    }
    cluster.insert("api".into(), Value::Object(api));
    if let Some(ca) = cluster_ca(env, cas, ledger) {
        cluster.insert("caCertificate".into(), json!(ca));
    }
    for (name, _) in cas.into_iter().flatten() {
        if name != CLUSTER_CA {
            ledger.refuse(
                format!("CAs.{name}"),
                "a CA for a component nodewright does not configure",
            );
        }
    }
    match keypair_ids.and_then(|ids| ids.get(CLUSTER_CA)) {
        Some(_) => {}
        None => ledger.refuse(
            "KeypairIDs",
            format!("has no {CLUSTER_CA}: kops-controller issues the node's certificates only for the CA's keypair id"),
        ),
    }
    Value::Object(cluster)
}

/// The cluster CA bundle: from kube_env when the node asks kops-controller (nodeup
/// replaces the nodeupconfig's with it), else the nodeupconfig's `CAs.kubernetes-ca`.
fn cluster_ca(
    env: &crate::kops::KubeEnv,
    cas: Option<&BTreeMap<String, String>>,
    ledger: &mut Ledger,
) -> Option<String> {
    if let Some(server) = &env.config_server {
        return Some(server.ca_certificates.trim().to_owned() + "\n");
    }
    match cas.and_then(|c| c.get(CLUSTER_CA)) {
        Some(pem) => Some(pem.trim().to_owned() + "\n"),
        None => {
            ledger.refuse(
                "CAs",
                format!("has no {CLUSTER_CA}, and kube_env no ConfigServer.CACertificates: the node would not trust the API server"),
            );
            None
        }
    }
}

/// The `n`th address of a network (kops puts the DNS service at the tenth).
fn nth_address(network: &IpNet, n: u8) -> Option<IpAddr> {
    match network {
        IpNet::V4(net) => {
            let base = u32::from(net.network());
            Some(IpAddr::V4(base.checked_add(u32::from(n))?.into()))
        }
        IpNet::V6(net) => {
            let base = u128::from(net.network());
            Some(IpAddr::V6(base.checked_add(u128::from(n))?.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenth_address() {
        let v4: IpNet = "100.64.0.0/13".parse().unwrap();
        assert_eq!(nth_address(&v4, 10), Some("100.64.0.10".parse().unwrap()));
        let v6: IpNet = "fd00:5e4f:ce::/108".parse().unwrap();
        assert_eq!(
            nth_address(&v6, 10),
            Some("fd00:5e4f:ce::a".parse().unwrap())
        );
    }
}
