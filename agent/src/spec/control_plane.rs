//! `controlPlane`: the etcd volumes a control-plane node claims and mounts, and how the
//! control plane's names (the internal API name, the etcd peers) are published.

use std::collections::BTreeSet;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::component_checks::{Components, check_binary_asset};
use super::components::{
    ApiServerSpec, ControllerManagerSpec, ControllerShimSpec, EtcdSpec, RunMode, SchedulerSpec,
};
use super::pki::PkiSpec;
use super::types::{AbsPath, DnsName};
use super::validate::Problems;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlaneSpec {
    /// The etcd EBS volumes this node claims: whichever volume it gets decides which
    /// etcd member it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_volumes: Option<EtcdVolumesSpec>,
    /// How the internal API name and the etcd peer names are published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsSpec>,
    /// The long-running `nodewright watch` service.
    #[serde(default)]
    pub watch: WatchSpec,
    /// etcd: one member per etcd cluster, its identity from the volume this node holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_manager: Option<ControllerManagerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<SchedulerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_shim: Option<ControllerShimSpec>,
    /// The cluster's CAs in the state store, from which this node issues its own
    /// certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pki: Option<PkiSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdVolumesSpec {
    /// The etcd clusters this node runs a member of, e.g. `[main, events]`. A volume
    /// belongs to cluster `main` when it carries the tag `k8s.io/etcd/main`.
    pub clusters: Vec<DnsName>,
    /// Volumes are mounted at `<mountRoot>/etcd-<cluster>-<member>`.
    #[serde(default = "default_mount_root")]
    pub mount_root: AbsPath,
    /// The filesystem made on a blank volume (never on one that holds anything).
    #[serde(default)]
    pub filesystem: Filesystem,
    /// Whether a volume still attached to a stopped or terminated instance may be
    /// force-detached and taken over.
    #[serde(default)]
    pub force_detach: ForceDetach,
    /// How long to keep trying to claim and attach a volume before the run fails.
    #[serde(default = "default_attach_deadline")]
    pub attach_deadline_seconds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Filesystem {
    #[default]
    Ext4,
}

impl Filesystem {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ext4 => "ext4",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ForceDetach {
    /// Never: a volume attached elsewhere is reported and waited for.
    #[default]
    Never,
    /// When EC2 says the instance holding it is stopped or terminated.
    StoppedOrTerminated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DnsSpec {
    pub mode: DnsMode,
    /// The Route53 hosted zone of the internal names (`route53` mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted_zone_id: Option<String>,
    /// The API name the cluster's nodes use; default `api.internal.<cluster>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_api_name: Option<DnsName>,
    /// The domain of the etcd peer names (`etcd-a.<domain>`, `etcd-events-a.<domain>`);
    /// default `internal.<cluster>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_domain: Option<DnsName>,
    /// TTL of the published records, in seconds.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// The API load balancer's addresses (`none` mode): the API name resolves to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub load_balancer_ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DnsMode {
    /// One Route53 record per instance (multivalue answer, SetIdentifier = instance id).
    Route53,
    /// A fenced block in /etc/hosts from EC2 discovery; no DNS at all.
    Hosts,
    /// No published names: the API name is the load balancer's addresses (in
    /// /etc/hosts), etcd peers come from EC2 discovery.
    None,
}

impl std::fmt::Display for DnsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Route53 => "route53",
            Self::Hosts => "hosts",
            Self::None => "none",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WatchSpec {
    /// Seconds between two rounds of `nodewright watch`.
    #[serde(default = "default_interval")]
    pub interval_seconds: u32,
}

impl Default for WatchSpec {
    fn default() -> Self {
        Self {
            interval_seconds: default_interval(),
        }
    }
}

fn default_mount_root() -> AbsPath {
    AbsPath::try_from("/mnt").expect("a valid constant")
}
fn default_attach_deadline() -> u32 {
    600
}
fn default_ttl() -> u32 {
    60
}
fn default_interval() -> u32 {
    60
}

impl DnsSpec {
    /// The internal API name for cluster `cluster`.
    pub fn api_name(&self, cluster: &DnsName) -> String {
        self.internal_api_name
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| format!("api.internal.{cluster}"))
    }

    pub fn etcd_domain(&self, cluster: &DnsName) -> String {
        self.etcd_domain
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| format!("internal.{cluster}"))
    }
}

/// The DNS name of etcd member `member` of etcd cluster `etcd_cluster`, as kops names
/// them: `etcd-a.<domain>` for `main`, `etcd-<cluster>-a.<domain>` for the others.
pub fn etcd_peer_name(etcd_cluster: &str, member: &str, domain: &str) -> String {
    if etcd_cluster == "main" {
        format!("etcd-{member}.{domain}")
    } else {
        format!("etcd-{etcd_cluster}-{member}.{domain}")
    }
}

impl ControlPlaneSpec {
    /// The components' checks that need the spec's assets.
    pub(super) fn check_assets(
        &self,
        assets: &[super::assets::AssetEntry],
        problems: &mut Problems,
    ) {
        if let Some(etcd) = &self.etcd
            && etcd.mode == RunMode::Systemd
            && let Some(asset) = &etcd.asset
        {
            check_binary_asset("controlPlane.etcd", asset, &etcd.binary, assets, problems);
        }
        if let Some(shim) = &self.controller_shim
            && shim.mode == RunMode::Systemd
            && let Some(asset) = &shim.asset
        {
            check_binary_asset(
                "controlPlane.controllerShim",
                asset,
                &shim.binary,
                assets,
                problems,
            );
        }
    }

    pub(super) fn check(&self, problems: &mut Problems) {
        Components {
            etcd: self.etcd.as_ref(),
            api_server: self.api_server.as_ref(),
            controller_manager: self.controller_manager.as_ref(),
            scheduler: self.scheduler.as_ref(),
            controller_shim: self.controller_shim.as_ref(),
            volume_clusters: self
                .etcd_volumes
                .as_ref()
                .map(|v| v.clusters.iter().map(DnsName::as_str).collect()),
        }
        .check(problems);
        if let Some(volumes) = &self.etcd_volumes {
            let at = "controlPlane.etcdVolumes";
            if volumes.clusters.is_empty() {
                problems.add(
                    &format!("{at}.clusters"),
                    "list at least one etcd cluster (e.g. main)".to_owned(),
                );
            }
            let mut seen = BTreeSet::new();
            for (i, cluster) in volumes.clusters.iter().enumerate() {
                if !seen.insert(cluster.as_str()) {
                    problems.add(
                        &format!("{at}.clusters[{i}]"),
                        format!("etcd cluster {cluster} is listed twice"),
                    );
                }
                if cluster.as_str().contains('.') {
                    problems.add(
                        &format!("{at}.clusters[{i}]"),
                        format!("etcd cluster name {cluster} must be one label (no dots)"),
                    );
                }
            }
            if volumes.mount_root.as_str() == "/" {
                problems.add(
                    &format!("{at}.mountRoot"),
                    "must be a directory below /, e.g. /mnt".to_owned(),
                );
            }
            if !(10..=86_400).contains(&volumes.attach_deadline_seconds) {
                problems.add(
                    &format!("{at}.attachDeadlineSeconds"),
                    format!(
                        "{} is out of range (10 to 86400 seconds)",
                        volumes.attach_deadline_seconds
                    ),
                );
            }
        }
        if let Some(dns) = &self.dns {
            let at = "controlPlane.dns";
            match dns.mode {
                DnsMode::Route53 => match &dns.hosted_zone_id {
                    None => problems.add(
                        &format!("{at}.hostedZoneId"),
                        "route53 mode needs the hosted zone id".to_owned(),
                    ),
                    Some(zone) => {
                        let id = zone.trim_start_matches("/hostedzone/");
                        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
                            problems.add(
                                &format!("{at}.hostedZoneId"),
                                format!("{zone:?} is not a hosted zone id such as Z0123456789ABC"),
                            );
                        }
                    }
                },
                DnsMode::None if dns.load_balancer_ips.is_empty() => problems.add(
                    &format!("{at}.loadBalancerIps"),
                    "none mode needs the API load balancer's addresses".to_owned(),
                ),
                DnsMode::Hosts | DnsMode::None => {}
            }
            if dns.mode != DnsMode::None && !dns.load_balancer_ips.is_empty() {
                problems.add(
                    &format!("{at}.loadBalancerIps"),
                    format!("only used in none mode, not in {} mode", dns.mode),
                );
            }
            if !(1..=86_400).contains(&dns.ttl) {
                problems.add(
                    &format!("{at}.ttl"),
                    format!("{} is out of range (1 to 86400 seconds)", dns.ttl),
                );
            }
            if dns.mode == DnsMode::Hosts && self.etcd_volumes.is_none() {
                problems.add(
                    &format!("{at}.mode"),
                    "hosts mode discovers peers from the etcd volumes: set controlPlane.etcdVolumes"
                        .to_owned(),
                );
            }
        }
        if let Some(pki) = &self.pki {
            pki.check(problems);
        }
        if !(5..=86_400).contains(&self.watch.interval_seconds) {
            problems.add(
                "controlPlane.watch.intervalSeconds",
                format!(
                    "{} is out of range (5 to 86400 seconds)",
                    self.watch.interval_seconds
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_names_follow_kops() {
        assert_eq!(
            etcd_peer_name("main", "a", "internal.prod.example.com"),
            "etcd-a.internal.prod.example.com"
        );
        assert_eq!(
            etcd_peer_name("events", "b", "internal.prod.example.com"),
            "etcd-events-b.internal.prod.example.com"
        );
    }
}
