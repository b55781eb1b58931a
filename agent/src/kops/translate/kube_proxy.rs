//! `KubeProxy` -> the `kubeProxy` section, as nodeup's `nodeup/pkg/model/kube_proxy.go`
//! runs kube-proxy: a static pod with the flags kops's config gives.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::kops::nodeup_config::KubeProxyConfig;
use crate::kops::refusals::Ledger;
use crate::spec::{GoDuration, ImageRef, Quantity};

/// kube-proxy's own default, which kops nodes run with when kops does not set one.
const KUBE_PROXY_CONNTRACK_DEFAULT: i32 = 32_768;

pub(super) fn translate(config: Option<&KubeProxyConfig>, ledger: &mut Ledger) -> Value {
    // kops leaves KubeProxy out (null) when a CNI replaces kube-proxy.
    let Some(config) = config else {
        return json!({"enabled": false});
    };
    let KubeProxyConfig {
        image,
        cpu_request,
        cpu_limit,
        memory_request,
        memory_limit,
        log_level,
        // Read by the cluster section: it is the pod network.
        cluster_cidr: _,
        hostname_override,
        bind_address,
        master,
        metrics_bind_address,
        enabled,
        proxy_mode,
        ipvs_exclude_cidrs,
        ipvs_min_sync_period,
        ipvs_scheduler,
        ipvs_sync_period,
        feature_gates,
        conntrack_max_per_core,
        conntrack_min,
    } = config;
    let mut section = Map::new();
    if enabled == &Some(false) {
        return json!({"enabled": false});
    }
    if !image.is_empty()
        && let Some(image) = ledger.value("KubeProxy.image", ImageRef::try_from(image.as_str()))
    {
        section.insert("image".into(), json!(image));
    }
    if let Some(mode) = proxy_mode.as_deref().filter(|m| !m.is_empty()) {
        match mode {
            "iptables" | "ipvs" | "nftables" => {
                section.insert("mode".into(), json!(mode));
            }
            other => ledger.refuse(
                "KubeProxy.proxyMode",
                format!("{other:?}: kube-proxy runs iptables, ipvs or nftables"),
            ),
        }
    }
    section.insert(
        "conntrackMaxPerCore".into(),
        json!(conntrack_max_per_core.unwrap_or(KUBE_PROXY_CONNTRACK_DEFAULT)),
    );
    if conntrack_max_per_core == &Some(0) {
        ledger.refuse(
            "KubeProxy.conntrackMaxPerCore",
            "0 leaves the kernel's limit; nodewright wants a number",
        );
    }
    for (field, key, value) in [
        ("cpuRequest", "cpuRequest", cpu_request),
        ("memoryRequest", "memoryRequest", memory_request),
    ] {
        if let Some(value) = value
            && let Some(q) = ledger.value(
                &format!("KubeProxy.{field}"),
                Quantity::try_from(value.as_str()),
            )
        {
            section.insert(key.into(), json!(q));
        }
    }
    for (field, value) in [("cpuLimit", cpu_limit), ("memoryLimit", memory_limit)] {
        ledger.refuse_if(
            value.is_some(),
            &format!("KubeProxy.{field}"),
            "nodewright's kube-proxy pod sets requests only (a limit throttles the node's service routing)",
        );
    }
    ledger.refuse_if(
        master.is_some(),
        "KubeProxy.master",
        "kube-proxy reaches the API server through the kubeconfig nodewright writes",
    );
    if let Some(name) = hostname_override {
        ledger.note(
            "KubeProxy.hostnameOverride",
            format!("{name}: nodeup replaces it with the node name"),
        );
    }
    if let Some(level) = log_level {
        match u8::try_from(*level) {
            Ok(level) => {
                section.insert("verbosity".into(), json!(level));
            }
            Err(_) => ledger.refuse(
                "KubeProxy.logLevel",
                format!("{level} is not a log verbosity"),
            ),
        }
    }
    let mut extra = Map::new();
    if let Some(address) = bind_address.as_deref().filter(|a| !a.is_empty()) {
        if address == "@aws" {
            ledger.note(
                "KubeProxy.bindAddress",
                "@aws: kube-proxy binds to all addresses, the instance's private address among them",
            );
        } else {
            extra.insert("bindAddress".into(), json!(address));
        }
    }
    if let Some(address) = metrics_bind_address {
        extra.insert("metricsBindAddress".into(), json!(address));
    }
    let mut ipvs = Map::new();
    if let Some(cidrs) = ipvs_exclude_cidrs {
        ipvs.insert("excludeCIDRs".into(), json!(cidrs));
    }
    for (field, key, value) in [
        ("ipvsMinSyncPeriod", "minSyncPeriod", ipvs_min_sync_period),
        ("ipvsSyncPeriod", "syncPeriod", ipvs_sync_period),
    ] {
        if let Some(value) = value
            && let Some(d) = ledger.value(
                &format!("KubeProxy.{field}"),
                GoDuration::try_from(value.as_str()),
            )
        {
            ipvs.insert(key.into(), json!(d));
        }
    }
    if let Some(scheduler) = ipvs_scheduler {
        ipvs.insert("scheduler".into(), json!(scheduler));
    }
    if !ipvs.is_empty() {
        extra.insert("ipvs".into(), Value::Object(ipvs));
    }
    if let Some(gates) = feature_gates.as_ref().filter(|g| !g.is_empty()) {
        extra.insert("featureGates".into(), gates_of(gates, ledger));
    }
    if let Some(min) = conntrack_min {
        extra.insert("conntrack".into(), json!({"min": min}));
    }
    if !extra.is_empty() {
        section.insert("extraConfig".into(), Value::Object(extra));
    }
    Value::Object(section)
}

fn gates_of(gates: &BTreeMap<String, String>, ledger: &mut Ledger) -> Value {
    let mut out = Map::new();
    for (name, raw) in gates {
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "t" => {
                out.insert(name.clone(), json!(true));
            }
            "false" | "0" | "f" => {
                out.insert(name.clone(), json!(false));
            }
            _ => ledger.refuse(
                format!("KubeProxy.featureGates.{name}"),
                format!("{raw:?} is not true or false"),
            ),
        }
    }
    Value::Object(out)
}
