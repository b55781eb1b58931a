//! The `Cluster` file (`apiVersion: nodewright.io/v1alpha1`, `kind: Cluster`): one small
//! document from which everything nodes read is rendered. Parsed strictly with the
//! agent's machinery: an unknown field, a wrong type or a bad value is an error naming
//! its path and line, and the checks that span fields (zones in the region, CIDRs that
//! overlap, an odd number of control-plane nodes) name theirs too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ipnet::IpNet;
use nodewright::spec::{
    DnsName, ImageRef, KubeletConfigFields, LabelKey, LabelValue, MirrorEntry, MirrorUrl, Problems,
    ProxyMode, RegistryHost, SpecError, Taint,
};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::catalogue::{Arch, Catalogue};

pub const CLUSTER_KIND: &str = "Cluster";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cluster {
    /// Always `nodewright.io/v1alpha1`.
    pub api_version: String,
    /// Always `Cluster`.
    pub kind: String,
    /// The cluster's name, a DNS name such as `prod.example.com`. Its AWS resources are
    /// tagged `kubernetes.io/cluster/<name>=owned`.
    pub name: DnsName,
    /// The AWS region, e.g. `us-east-1`.
    pub region: String,
    /// The availability zones the cluster uses, in the region, e.g. `[us-east-1a, us-east-1b]`.
    pub zones: Vec<String>,
    /// The state store, an S3 bucket created beforehand: `s3://<bucket>`. The cluster's
    /// objects (its PKI, node specs, controller-shim's records) live under `<name>/` in
    /// it, as kops lays out its state store, so one bucket holds many clusters.
    pub state_store: String,
    /// A Kubernetes minor version of the catalogue (`"1.34"`, quoted) or one of its
    /// exact releases (`1.34.4`).
    #[serde(deserialize_with = "version_text")]
    #[schemars(with = "String")]
    pub kubernetes_version: String,
    pub network: Network,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
    #[serde(default)]
    pub api: Api,
    pub control_plane: ControlPlane,
    /// Worker node groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_groups: Vec<NodeGroup>,
    /// The machine image every node boots (with nodewright baked in).
    pub image: Image,
    /// Where nodes download their binaries and pull their images from.
    #[serde(default, skip_serializing_if = "Assets::is_default")]
    pub assets: Assets,
    /// Extra tags on every AWS resource the stack creates (cost allocation, ownership).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    /// The VPC the nodes run in, created beforehand: `vpc-...`.
    pub vpc_id: String,
    /// The VPC's IPv4 CIDR: the API load balancer's default allowed sources, and no
    /// service or pod network may overlap it.
    #[schemars(with = "String")]
    pub vpc_cidr: IpNet,
    /// The VPC's IPv6 CIDR (needed with `ipFamily: ipv6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub vpc_ipv6_cidr: Option<IpNet>,
    /// The private subnet of each zone the nodes run in: zone to `subnet-...`.
    pub subnets: BTreeMap<String, String>,
    /// The public subnet of each zone, for an internet-facing API load balancer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub public_subnets: BTreeMap<String, String>,
    /// The family of node, pod and service addresses.
    #[serde(default)]
    pub ip_family: IpFamily,
    /// The service network; default `100.64.0.0/13` (IPv4) or `fd00:5e4f:ce::/108` (IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub service_cidr: Option<IpNet>,
    /// The pod network; default `100.96.0.0/11` (IPv4) or `fd00:10:96::/48` (IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub pod_cidr: Option<IpNet>,
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: DnsName,
    /// `plugins`: nodes install the CNI plugin binaries (loopback, bridge, portmap, ...)
    /// that most network add-ons call; `bringYourOwn`: the add-on installs its own.
    #[serde(default)]
    pub cni: Cni,
    /// kube-proxy's mode, or `none` for a network add-on that replaces it.
    #[serde(default)]
    pub kube_proxy: KubeProxyMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum IpFamily {
    #[default]
    Ipv4,
    Ipv6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Cni {
    #[default]
    Plugins,
    BringYourOwn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum KubeProxyMode {
    #[default]
    Iptables,
    Ipvs,
    Nftables,
    None,
}

impl KubeProxyMode {
    pub fn proxy_mode(self) -> Option<ProxyMode> {
        match self {
            Self::Iptables => Some(ProxyMode::Iptables),
            Self::Ipvs => Some(ProxyMode::Ipvs),
            Self::Nftables => Some(ProxyMode::Nftables),
            Self::None => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Dns {
    /// A private hosted zone, created beforehand and associated with the VPC, in which
    /// control-plane nodes publish the internal API name and the etcd peer names, one
    /// record per instance. Without it the stack creates a private zone
    /// `internal.<name>` holding the internal API name as an alias of the load
    /// balancer, and control-plane nodes find their etcd peers from EC2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_zone_id: Option<String>,
    /// A public hosted zone in which the stack publishes `api.publicName` (an alias of
    /// an internet-facing load balancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_zone_id: Option<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Api {
    /// The API name nodes use; default `api.internal.<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_name: Option<DnsName>,
    /// The name clients outside the cluster use, e.g. `api.prod.example.com`; it is in
    /// the API server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_name: Option<DnsName>,
    /// The API server's port, on the nodes and on the load balancer: 443 (as kops) or
    /// 6443 (as kubeadm).
    #[serde(default = "default_api_port")]
    pub port: u16,
    #[serde(default)]
    pub load_balancer: LoadBalancer,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            internal_name: None,
            public_name: None,
            port: default_api_port(),
            load_balancer: LoadBalancer::default(),
        }
    }
}

/// The network load balancer in front of the API servers (and controller-shim).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancer {
    #[serde(default)]
    pub scheme: LoadBalancerScheme,
    /// Who may connect to it; default the VPC's CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub allowed_cidrs: Vec<IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancerScheme {
    #[default]
    Internal,
    InternetFacing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlane {
    /// How many control-plane nodes (and etcd members): 1, 3 or 5.
    pub count: u8,
    pub instance_type: String,
    /// The zones they run in, one after the other; default the cluster's zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    /// The etcd clusters, each with one EBS volume per member.
    #[serde(default = "default_etcd_clusters")]
    pub etcd: Vec<EtcdCluster>,
    /// The root volume, GiB.
    #[serde(default = "default_root_volume")]
    pub root_volume_size: u32,
    /// controller-shim's image (it runs on every control-plane node and bootstraps the
    /// workers).
    #[serde(default = "default_shim_image")]
    pub controller_shim_image: ImageRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdCluster {
    /// `main` (the API server's data) or `events`.
    pub name: String,
    /// The size of each member's volume, GiB.
    #[serde(default = "default_etcd_volume_size")]
    pub volume_size: u32,
    #[serde(default)]
    pub volume_type: VolumeType,
    /// Provisioned IOPS (gp3, io1, io2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_iops: Option<u32>,
    /// Provisioned throughput, MiB/s (gp3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_throughput: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    #[default]
    Gp3,
    Gp2,
    Io1,
    Io2,
}

impl VolumeType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gp3 => "gp3",
            Self::Gp2 => "gp2",
            Self::Io1 => "io1",
            Self::Io2 => "io2",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeGroup {
    /// The group's name, one DNS label such as `nodes`; its IAM role is `<name>.<cluster>`.
    pub name: DnsName,
    /// The zones it runs in (one Auto Scaling group each); default the cluster's zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    pub instance_type: String,
    /// Nodes at least and at most, over all its zones (shared out zone by zone).
    pub min: u32,
    pub max: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<LabelKey, LabelValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// KubeletConfiguration fields over nodewright's defaults.
    #[serde(default)]
    pub kubelet: KubeletConfigFields,
    /// How its nodes get their spec and kubelet certificate.
    #[serde(default)]
    pub bootstrap: Bootstrap,
    /// Whether a node that already bootstrapped may bootstrap again with a new key
    /// (controller-shim's re-bootstrap policy).
    #[serde(default)]
    pub allow_rebootstrap: bool,
    /// Another image for this group (e.g. arm64 or GPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// The root volume, GiB.
    #[serde(default = "default_root_volume")]
    pub root_volume_size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Bootstrap {
    /// controller-shim proves the instance's identity and answers with the spec and a
    /// kubelet certificate: the nodes' role reads nothing in the state store.
    #[default]
    ControllerShim,
    /// The nodes read their spec from the state store (their role may read it) and
    /// need another way to get kubelet credentials; for clusters without the shim.
    StateStore,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Image {
    /// An AMI id, `ami-...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami: Option<String>,
    /// An SSM parameter holding the AMI id, resolved at each launch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssm_parameter: Option<String>,
    #[serde(default)]
    pub architecture: Arch,
    /// The image's root device, which the launch template sizes (`/dev/xvda` on
    /// Debian and Amazon Linux, `/dev/sda1` on Ubuntu).
    #[serde(default = "default_root_device")]
    pub root_device_name: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Assets {
    /// URL prefixes served by mirrors, tried before the upstream URLs of the catalogue
    /// (`https://`, `s3://`: the nodes' roles may read an `s3://` mirror).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorEntry>,
    /// Nodes only ever download from the mirrors.
    #[serde(default)]
    pub airgapped: bool,
    /// Container registry mirrors, per registry (`*` for all).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registry_mirrors: BTreeMap<RegistryHost, Vec<MirrorUrl>>,
}

impl Assets {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_cluster_domain() -> DnsName {
    DnsName::try_from("cluster.local").expect("a valid constant")
}
fn default_api_port() -> u16 {
    443
}
fn default_root_device() -> String {
    "/dev/xvda".to_owned()
}
fn default_root_volume() -> u32 {
    64
}
fn default_etcd_volume_size() -> u32 {
    20
}
fn default_shim_image() -> ImageRef {
    ImageRef::try_from(format!(
        "ghcr.io/nodewright/controller-shim:{}",
        env!("CARGO_PKG_VERSION")
    ))
    .expect("a valid constant")
}
fn default_etcd_clusters() -> Vec<EtcdCluster> {
    ["main", "events"]
        .into_iter()
        .map(|name| EtcdCluster {
            name: name.to_owned(),
            volume_size: default_etcd_volume_size(),
            volume_type: VolumeType::default(),
            volume_iops: None,
            volume_throughput: None,
        })
        .collect()
}

/// A version written as text. YAML reads an unquoted `1.34` as the number 1.34 (and
/// `1.30` as 1.3), so a number is refused with the fix.
fn version_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a version such as \"1.34\" or 1.34.4")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Err(E::custom(format!(
                "{v} was read as a number: quote the version, e.g. \"1.34\""
            )))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            self.visit_f64(v as f64)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            self.visit_f64(v as f64)
        }
    }
    deserializer.deserialize_any(Text)
}

/// Group names the kit uses itself.
pub const CONTROL_PLANE_GROUP: &str = "control-plane";

impl Cluster {
    /// Parses and checks a Cluster file against `catalogue`. `source` names it in errors.
    pub fn parse(source: &str, text: &str, catalogue: &Catalogue) -> Result<Self, SpecError> {
        let cluster: Cluster = nodewright::spec::parse_yaml(source, text)?;
        let mut problems = Problems::new(source, text);
        cluster.check(catalogue, &mut problems);
        problems.finish()?;
        Ok(cluster)
    }

    /// The zones of the control-plane nodes, one per node, in order.
    pub fn control_plane_zones(&self) -> Vec<String> {
        let zones = self.control_plane.zones.as_ref().unwrap_or(&self.zones);
        (0..usize::from(self.control_plane.count))
            .map(|i| zones[i % zones.len()].clone())
            .collect()
    }

    pub fn group_zones<'a>(&'a self, group: &'a NodeGroup) -> &'a [String] {
        group.zones.as_deref().unwrap_or(&self.zones)
    }

    pub fn service_cidr(&self) -> IpNet {
        self.network
            .service_cidr
            .unwrap_or_else(|| match self.network.ip_family {
                IpFamily::Ipv4 => net("100.64.0.0/13"),
                IpFamily::Ipv6 => net("fd00:5e4f:ce::/108"),
            })
    }

    pub fn pod_cidr(&self) -> IpNet {
        self.network
            .pod_cidr
            .unwrap_or_else(|| match self.network.ip_family {
                IpFamily::Ipv4 => net("100.96.0.0/11"),
                IpFamily::Ipv6 => net("fd00:10:96::/48"),
            })
    }

    pub fn internal_api_name(&self) -> String {
        self.api
            .internal_name
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| format!("api.internal.{}", self.name))
    }

    /// The state store's bucket and this cluster's key prefix in it (`<name>/`).
    pub fn store(&self) -> (String, String) {
        let bucket = store_bucket(&self.state_store).unwrap_or_default();
        (bucket, format!("{}/", self.name))
    }

    fn check(&self, catalogue: &Catalogue, problems: &mut Problems) {
        problems.check_header("", &self.api_version, &self.kind, CLUSTER_KIND);
        if self.name.as_str().split('.').count() < 2 {
            problems.add(
                "name",
                format!(
                    "{} must be a DNS name with a domain, e.g. prod.example.com (its names live under it)",
                    self.name
                ),
            );
        }
        if !valid_region(&self.region) {
            problems.add(
                "region",
                format!("{:?} is not an AWS region such as us-east-1", self.region),
            );
        }
        self.check_zones(problems);
        if let Err(message) = store_bucket(&self.state_store) {
            problems.add("stateStore", message);
        }
        if catalogue.find(&self.kubernetes_version).is_none() {
            problems.add(
                "kubernetesVersion",
                format!(
                    "{} is not in the versions catalogue; known: {} (a minor such as \"1.34\" picks its release)",
                    self.kubernetes_version,
                    catalogue.known().join(", ")
                ),
            );
        }
        self.check_network(problems);
        self.check_dns_and_api(problems);
        self.check_control_plane(problems);
        self.check_node_groups(problems);
        check_image("image", &self.image, problems);
        for (key, value) in &self.tags {
            if key.is_empty() || key.len() > 128 || key.starts_with("aws:") || value.len() > 256 {
                problems.add(
                    &format!("tags[{key:?}]"),
                    "a tag key is 1-128 characters, not starting with aws:, and its value at most 256"
                        .to_owned(),
                );
            }
        }
    }

    fn check_zones(&self, problems: &mut Problems) {
        if self.zones.is_empty() {
            problems.add("zones", "list at least one zone".to_owned());
        }
        let mut seen = BTreeSet::new();
        for (i, zone) in self.zones.iter().enumerate() {
            if !seen.insert(zone) {
                problems.add(&format!("zones[{i}]"), format!("{zone} is listed twice"));
            }
            if !zone_in_region(zone, &self.region) {
                problems.add(
                    &format!("zones[{i}]"),
                    format!(
                        "{zone} is not a zone of region {} (e.g. {}a)",
                        self.region, self.region
                    ),
                );
            }
        }
    }

    /// Zones a section lists must be the cluster's.
    fn check_subset(&self, at: &str, zones: &[String], problems: &mut Problems) {
        if zones.is_empty() {
            problems.add(at, "list at least one zone".to_owned());
        }
        for (i, zone) in zones.iter().enumerate() {
            if !self.zones.contains(zone) {
                problems.add(
                    &format!("{at}[{i}]"),
                    format!(
                        "{zone} is not one of the cluster's zones ({})",
                        self.zones.join(", ")
                    ),
                );
            }
        }
    }

    fn check_network(&self, problems: &mut Problems) {
        let network = &self.network;
        if !valid_id(&network.vpc_id, "vpc-") {
            problems.add(
                "network.vpcId",
                format!("{:?} is not a VPC id (vpc-...)", network.vpc_id),
            );
        }
        if !network.vpc_cidr.addr().is_ipv4() {
            problems.add(
                "network.vpcCidr",
                format!("{} is not an IPv4 CIDR", network.vpc_cidr),
            );
        }
        for zone in &self.zones {
            if !network.subnets.contains_key(zone) {
                problems.add(
                    "network.subnets",
                    format!("zone {zone} has no subnet: give its private subnet id"),
                );
            }
        }
        for (field, subnets) in [
            ("subnets", &network.subnets),
            ("publicSubnets", &network.public_subnets),
        ] {
            for (zone, subnet) in subnets {
                let at = format!("network.{field}[{zone:?}]");
                if !self.zones.contains(zone) {
                    problems.add(&at, format!("{zone} is not one of the cluster's zones"));
                }
                if !valid_id(subnet, "subnet-") {
                    problems.add(&at, format!("{subnet:?} is not a subnet id (subnet-...)"));
                }
            }
        }
        let (service, pod) = (self.service_cidr(), self.pod_cidr());
        let family_ok = |n: &IpNet| match network.ip_family {
            IpFamily::Ipv4 => n.addr().is_ipv4(),
            IpFamily::Ipv6 => n.addr().is_ipv6(),
        };
        for (field, cidr) in [("serviceCidr", service), ("podCidr", pod)] {
            if !family_ok(&cidr) {
                problems.add(
                    &format!("network.{field}"),
                    format!(
                        "{cidr} is not an {} network (ipFamily)",
                        if network.ip_family == IpFamily::Ipv4 {
                            "IPv4"
                        } else {
                            "IPv6"
                        }
                    ),
                );
            }
        }
        if overlaps(&service, &pod) {
            problems.add(
                "network.podCidr",
                format!("{pod} overlaps serviceCidr {service}"),
            );
        }
        let mut vpc = vec![network.vpc_cidr];
        vpc.extend(network.vpc_ipv6_cidr);
        for cidr in &vpc {
            for (field, other) in [("serviceCidr", service), ("podCidr", pod)] {
                if overlaps(cidr, &other) {
                    problems.add(
                        &format!("network.{field}"),
                        format!("{other} overlaps the VPC's {cidr}"),
                    );
                }
            }
        }
        if let Some(v6) = network.vpc_ipv6_cidr
            && !v6.addr().is_ipv6()
        {
            problems.add("network.vpcIpv6Cidr", format!("{v6} is not an IPv6 CIDR"));
        }
        if network.ip_family == IpFamily::Ipv6 && network.vpc_ipv6_cidr.is_none() {
            problems.add(
                "network.vpcIpv6Cidr",
                "ipFamily ipv6 needs the VPC's IPv6 CIDR".to_owned(),
            );
        }
        // The kubelet's node CIDR masks: /24 (IPv4) and /64 (IPv6) out of the pod network.
        let node_mask = if pod.addr().is_ipv4() { 24 } else { 64 };
        if pod.prefix_len() >= node_mask || node_mask - pod.prefix_len() > 16 {
            problems.add(
                "network.podCidr",
                format!(
                    "{pod} must hold /{node_mask} node networks, at most 2^16 of them (kube-controller-manager)"
                ),
            );
        }
    }

    fn check_dns_and_api(&self, problems: &mut Problems) {
        for (field, id) in [
            ("privateZoneId", &self.dns.private_zone_id),
            ("publicZoneId", &self.dns.public_zone_id),
        ] {
            if let Some(id) = id
                && (id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()))
            {
                problems.add(
                    &format!("dns.{field}"),
                    format!("{id:?} is not a hosted zone id such as Z0123456789ABCDEFGHIJ"),
                );
            }
        }
        if self.dns.public_zone_id.is_some() && self.api.public_name.is_none() {
            problems.add(
                "dns.publicZoneId",
                "publishes api.publicName: set it too".to_owned(),
            );
        }
        if self.api.port == 0 {
            problems.add("api.port", "0 is not a port".to_owned());
        }
        if [3988, 10250, 2380, 2381, 4001, 4002].contains(&self.api.port) {
            problems.add(
                "api.port",
                format!("{} is taken by another component", self.api.port),
            );
        }
        let lb = &self.api.load_balancer;
        if lb.scheme == LoadBalancerScheme::InternetFacing {
            for zone in self.control_plane_zones_set() {
                if !self.network.public_subnets.contains_key(&zone) {
                    problems.add(
                        "network.publicSubnets",
                        format!(
                            "an internet-facing API load balancer needs a public subnet in {zone}"
                        ),
                    );
                }
            }
        }
    }

    fn control_plane_zones_set(&self) -> BTreeSet<String> {
        self.control_plane
            .zones
            .as_ref()
            .unwrap_or(&self.zones)
            .iter()
            .cloned()
            .collect()
    }

    fn check_control_plane(&self, problems: &mut Problems) {
        let cp = &self.control_plane;
        if ![1, 3, 5].contains(&cp.count) {
            let why = if cp.count.is_multiple_of(2) && cp.count > 0 {
                "an even number of etcd members tolerates no more failures than one fewer, and splits evenly: use an odd number"
            } else {
                "etcd needs a quorum"
            };
            problems.add(
                "controlPlane.count",
                format!("{} control-plane nodes: use 1, 3 or 5 ({why})", cp.count),
            );
        }
        if let Some(zones) = &cp.zones {
            self.check_subset("controlPlane.zones", zones, problems);
        }
        check_instance_type("controlPlane.instanceType", &cp.instance_type, problems);
        if cp.root_volume_size < 8 {
            problems.add(
                "controlPlane.rootVolumeSize",
                format!("{} GiB is too small (8 or more)", cp.root_volume_size),
            );
        }
        let mut names = BTreeSet::new();
        if !cp.etcd.iter().any(|e| e.name == "main") {
            problems.add(
                "controlPlane.etcd",
                "etcd cluster main (the API server's data) is required".to_owned(),
            );
        }
        for (i, etcd) in cp.etcd.iter().enumerate() {
            let at = format!("controlPlane.etcd[{i}]");
            if !["main", "events"].contains(&etcd.name.as_str()) {
                problems.add(
                    &format!("{at}.name"),
                    format!("{:?}: the etcd clusters are main and events", etcd.name),
                );
            }
            if !names.insert(etcd.name.as_str()) {
                problems.add(
                    &format!("{at}.name"),
                    format!("{} is listed twice", etcd.name),
                );
            }
            if !(1..=16_384).contains(&etcd.volume_size) {
                problems.add(
                    &format!("{at}.volumeSize"),
                    format!("{} GiB is out of range (1 to 16384)", etcd.volume_size),
                );
            }
            if etcd.volume_iops.is_some() && etcd.volume_type == VolumeType::Gp2 {
                problems.add(
                    &format!("{at}.volumeIops"),
                    "gp2 volumes have no provisioned IOPS".to_owned(),
                );
            }
            if matches!(etcd.volume_type, VolumeType::Io1 | VolumeType::Io2)
                && etcd.volume_iops.is_none()
            {
                problems.add(
                    &format!("{at}.volumeIops"),
                    format!("{} volumes need volumeIops", etcd.volume_type.as_str()),
                );
            }
            if etcd.volume_throughput.is_some() && etcd.volume_type != VolumeType::Gp3 {
                problems.add(
                    &format!("{at}.volumeThroughput"),
                    "only gp3 volumes have provisioned throughput".to_owned(),
                );
            }
        }
    }

    fn check_node_groups(&self, problems: &mut Problems) {
        let mut names = BTreeSet::new();
        for (i, group) in self.node_groups.iter().enumerate() {
            let at = format!("nodeGroups[{i}]");
            let name = group.name.as_str();
            if name.contains('.') || name == CONTROL_PLANE_GROUP {
                problems.add(
                    &format!("{at}.name"),
                    format!("{name:?} must be one DNS label other than {CONTROL_PLANE_GROUP}"),
                );
            }
            if !names.insert(name) {
                problems.add(&format!("{at}.name"), format!("{name} is listed twice"));
            }
            // IAM role names are at most 64 characters.
            let role = crate::render::role_name(name, self.name.as_str());
            if role.len() > 64 {
                problems.add(
                    &format!("{at}.name"),
                    format!("its IAM role name {role} is longer than IAM's 64 characters"),
                );
            }
            if let Some(zones) = &group.zones {
                self.check_subset(&format!("{at}.zones"), zones, problems);
            }
            check_instance_type(
                &format!("{at}.instanceType"),
                &group.instance_type,
                problems,
            );
            if group.min > group.max {
                problems.add(
                    &format!("{at}.min"),
                    format!("{} is more than max {}", group.min, group.max),
                );
            }
            if group.max == 0 {
                problems.add(&format!("{at}.max"), "must be at least 1".to_owned());
            }
            if group.root_volume_size < 8 {
                problems.add(
                    &format!("{at}.rootVolumeSize"),
                    format!("{} GiB is too small (8 or more)", group.root_volume_size),
                );
            }
            if let Some(image) = &group.image {
                check_image(&format!("{at}.image"), image, problems);
            }
        }
        if self.control_plane_role().len() > 64 {
            problems.add(
                "name",
                "the control plane's IAM role name would be longer than IAM's 64 characters"
                    .to_owned(),
            );
        }
    }

    pub fn control_plane_role(&self) -> String {
        crate::render::role_name(CONTROL_PLANE_GROUP, self.name.as_str())
    }
}

fn check_image(at: &str, image: &Image, problems: &mut Problems) {
    match (&image.ami, &image.ssm_parameter) {
        (Some(ami), None) => {
            if !valid_id(ami, "ami-") {
                problems.add(
                    &format!("{at}.ami"),
                    format!("{ami:?} is not an AMI id (ami-...)"),
                );
            }
        }
        (None, Some(parameter)) => {
            let valid = parameter.starts_with('/')
                && parameter.len() <= 2048
                && parameter
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c));
            if !valid {
                problems.add(
                    &format!("{at}.ssmParameter"),
                    format!("{parameter:?} is not an SSM parameter name such as /company/ami/node"),
                );
            }
        }
        _ => problems.add(at, "give either ami or ssmParameter".to_owned()),
    }
    let device = image.root_device_name.as_str();
    let device_ok = device.strip_prefix("/dev/").is_some_and(|d| {
        !d.is_empty()
            && d.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    });
    if !device_ok {
        problems.add(
            &format!("{at}.rootDeviceName"),
            format!("{device:?} is not a device name such as /dev/xvda"),
        );
    }
}

fn check_instance_type(at: &str, value: &str, problems: &mut Problems) {
    let valid = value.split_once('.').is_some_and(|(family, size)| {
        !family.is_empty()
            && !size.is_empty()
            && family
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && size
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    });
    if !valid {
        problems.add(
            at,
            format!("{value:?} is not an instance type such as m7i.large"),
        );
    }
}

/// The bucket of a Cluster file's `stateStore` (`s3://<bucket>`, a trailing `/` allowed).
pub fn store_bucket(store: &str) -> Result<String, String> {
    let (bucket, prefix) = split_store(store)?;
    if !prefix.is_empty() {
        return Err(format!(
            "{store:?}: give the bucket alone (s3://<bucket>); the cluster's objects go under <name>/ in it"
        ));
    }
    Ok(bucket)
}

/// `s3://bucket/prefix/` into the bucket and the key prefix.
pub fn split_store(store: &str) -> Result<(String, String), String> {
    let rest = store
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{store:?} must be s3://<bucket>/<prefix>/"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !bucket_ok {
        return Err(format!("{bucket:?} is not an S3 bucket name"));
    }
    if !prefix.is_empty() && !prefix.ends_with('/') {
        return Err(format!("{store:?} is a prefix and must end with '/'"));
    }
    if prefix.contains("//") || prefix.starts_with('/') {
        return Err(format!("{store:?} has an empty path segment"));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

fn valid_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

/// `us-east-1a` is a zone of `us-east-1`; so is a local zone such as `us-east-1-bos-1a`.
fn zone_in_region(zone: &str, region: &str) -> bool {
    zone.strip_prefix(region).is_some_and(|rest| {
        !rest.is_empty()
            && rest.chars().last().is_some_and(|c| c.is_ascii_lowercase())
            && rest
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && (rest.len() == 1 || rest.starts_with('-'))
    })
}

fn valid_id(value: &str, prefix: &str) -> bool {
    value.strip_prefix(prefix).is_some_and(|hex| {
        (8..=17).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn net(text: &str) -> IpNet {
    text.parse().expect("a valid constant")
}

/// The JSON Schema of the Cluster file.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(Cluster).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_and_zones() {
        assert!(valid_region("us-east-1"));
        assert!(valid_region("us-gov-west-1"));
        assert!(valid_region("ap-southeast-2"));
        assert!(!valid_region("us-east"));
        assert!(!valid_region("US-east-1"));
        assert!(zone_in_region("us-east-1a", "us-east-1"));
        assert!(zone_in_region("us-east-1-bos-1a", "us-east-1"));
        assert!(!zone_in_region("us-west-2a", "us-east-1"));
        assert!(!zone_in_region("us-east-1", "us-east-1"));
        assert!(!zone_in_region("us-east-12a", "us-east-1"));
    }

    #[test]
    fn stores() {
        assert_eq!(store_bucket("s3://state").unwrap(), "state");
        assert_eq!(store_bucket("s3://state/").unwrap(), "state");
        assert!(store_bucket("s3://state/team/").is_err());
        assert_eq!(
            split_store("s3://state/prod.example.com/").unwrap(),
            ("state".to_owned(), "prod.example.com/".to_owned())
        );
        assert_eq!(
            split_store("s3://state").unwrap(),
            ("state".to_owned(), String::new())
        );
        assert!(split_store("s3://state/prod").is_err());
        assert!(split_store("https://state/prod/").is_err());
        assert!(split_store("s3://St/prod/").is_err());
        assert!(split_store("s3://state//prod/").is_err());
    }
}
