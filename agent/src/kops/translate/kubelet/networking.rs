//! The kubelet's networking: the cluster DNS server and resolver, hairpin mode and the
//! pod CIDR.

use std::net::IpAddr;

use serde_json::json;

use super::fields::Fields;
use crate::kops::kubelet_config::KubeletConfigSpec;

/// Returns the cluster DNS server (the cluster section needs it too).
pub(super) fn config(k: &KubeletConfigSpec, t: &mut Fields<'_>) -> Option<IpAddr> {
    let KubeletConfigSpec {
        cluster_dns,
        resolver_config,
        hairpin_mode,
        pod_cidr,
        ..
    } = k;
    let dns = cluster_dns.as_ref().and_then(|d| {
        t.ledger.value(
            "KubeletConfig.clusterDNS",
            d.parse::<IpAddr>().map_err(|e| format!("{d:?}: {e}")),
        )
    });
    if let Some(dns) = dns {
        t.config
            .insert("clusterDNS".into(), json!([dns.to_string()]));
    }
    t.string("resolvConf", resolver_config.as_deref());
    t.extra_string("hairpinMode", hairpin_mode.as_deref());
    t.extra_string("podCIDR", pod_cidr.as_deref());
    dns
}
