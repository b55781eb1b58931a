//! Each group's NodeSpec, built with the agent's own types (so what is rendered is what
//! the agent reads) and serialized to the bytes whose sha256 the boot config pins.
//!
//! Sections are built through the agent's deserializer (`section`), so the defaults
//! nodewright applies stay defined in one place: the agent's spec module.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nodewright::spec::{
    AssetEntry, ClusterSpec, ContainerdSpec, ControlPlaneSpec, DownloadSettings, HostSpec,
    KubeProxySpec, KubeletSpec, NODE_SPEC_KIND, NodeSpec, Role, SystemdSpec, Taint,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::RenderError;
use crate::catalogue::{Arch, Asset, Version};
use crate::file::{Bootstrap, CONTROL_PLANE_GROUP, Cluster, Cni, IpFamily, NodeGroup};

/// The label every node carries with its group's name (not under kubernetes.io, so the
/// kubelet may set it).
pub const GROUP_LABEL: &str = "nodewright.io/node-group";

/// Builds a spec section through the agent's deserializer: the agent's defaults apply
/// and an unknown field is caught.
fn section<T: DeserializeOwned>(what: &str, value: Value) -> Result<T, RenderError> {
    serde_json::from_value(value).map_err(|e| RenderError::Internal(format!("{what}: {e}")))
}

/// The parts of every node's spec: the cluster, the binaries, the runtime, the kubelet.
struct Common<'a> {
    cluster: &'a Cluster,
    version: &'a Version,
    arch: Arch,
}

impl Common<'_> {
    fn cluster_spec(&self, ca_pem: Option<&str>) -> Result<ClusterSpec, RenderError> {
        let cluster = self.cluster;
        let service = cluster.service_cidr();
        let mut api = json!({
            "name": cluster.internal_api_name(),
            "port": cluster.api.port,
        });
        if let Some(public) = &cluster.api.public_name {
            api["publicName"] = json!(public);
        }
        let mut value = json!({
            "name": cluster.name,
            "kubernetesVersion": self.version.kubernetes.to_string(),
            "clusterDomain": cluster.network.cluster_domain,
            "serviceCidr": service.to_string(),
            "podCidr": cluster.pod_cidr().to_string(),
            "dnsIp": dns_ip(&service).to_string(),
            "api": api,
        });
        if let Some(pem) = ca_pem {
            value["caCertificate"] = json!(pem);
        }
        section("cluster", value)
    }

    fn asset(&self, asset: Asset) -> Result<AssetEntry, RenderError> {
        let file = self.version.file(asset, self.arch).ok_or_else(|| {
            RenderError::Internal(format!(
                "the catalogue has no {} for {}",
                asset.name(),
                self.arch.as_str()
            ))
        })?;
        let mut value = json!({
            "name": asset.name(),
            "sha256": file.sha256,
            "urls": [file.url],
        });
        if matches!(asset, Asset::Containerd | Asset::CniPlugins) {
            value["archive"] = json!("tar.gz");
        }
        section(asset.name(), value)
    }

    fn assets(&self) -> Result<Vec<AssetEntry>, RenderError> {
        Asset::ALL
            .into_iter()
            .filter(|a| *a != Asset::CniPlugins || self.cluster.network.cni == Cni::Plugins)
            .map(|a| self.asset(a))
            .collect()
    }

    fn downloads(&self) -> Result<DownloadSettings, RenderError> {
        let assets = &self.cluster.assets;
        section(
            "downloads",
            json!({"mirrors": assets.mirrors, "airgapped": assets.airgapped}),
        )
    }

    fn containerd(&self) -> Result<ContainerdSpec, RenderError> {
        section(
            "containerd",
            json!({
                "version": self.version.containerd,
                "binaries": {"asset": Asset::Containerd.name()},
                "runc": {"asset": Asset::Runc.name()},
                "sandboxImage": self.version.images.pause.image,
                "registryMirrors": self.cluster.assets.registry_mirrors,
            }),
        )
    }

    fn kubelet(
        &self,
        group: &str,
        labels: Value,
        taints: &[Taint],
        config: Value,
    ) -> Result<KubeletSpec, RenderError> {
        let mut all_labels = json!({ GROUP_LABEL: group });
        if let (Some(all), Some(extra)) = (all_labels.as_object_mut(), labels.as_object()) {
            all.extend(extra.clone());
        }
        let node_ip = match self.cluster.network.ip_family {
            IpFamily::Ipv4 => "ipv4",
            IpFamily::Ipv6 => "ipv6",
        };
        section(
            "kubelet",
            json!({
                "binary": {"asset": Asset::Kubelet.name()},
                "nodeIp": node_ip,
                "labels": all_labels,
                "taints": taints,
                "config": config,
                "ecrCredentialProvider": {
                    "binary": {"asset": Asset::EcrCredentialProvider.name()},
                },
            }),
        )
    }

    fn kube_proxy(&self) -> Result<Option<KubeProxySpec>, RenderError> {
        let Some(mode) = self.cluster.network.kube_proxy.proxy_mode() else {
            return Ok(None);
        };
        section(
            "kubeProxy",
            json!({"mode": mode.as_str(), "image": self.version.images.kube_proxy.image}),
        )
        .map(Some)
    }

    fn cni(&self) -> Result<Option<nodewright::spec::CniSpec>, RenderError> {
        match self.cluster.network.cni {
            Cni::BringYourOwn => Ok(None),
            Cni::Plugins => section(
                "cni",
                json!({"plugins": {"asset": Asset::CniPlugins.name()}}),
            )
            .map(Some),
        }
    }

    fn host(&self) -> Result<HostSpec, RenderError> {
        // What the kubelet and kube-proxy call; a no-op where the image has them.
        section(
            "host",
            json!({"packages": ["conntrack", "ethtool", "iptables", "socat"]}),
        )
    }

    fn spec(
        &self,
        role: Role,
        group: &str,
        ca_pem: Option<&str>,
        kubelet: KubeletSpec,
        control_plane: Option<ControlPlaneSpec>,
    ) -> Result<NodeSpec, RenderError> {
        Ok(NodeSpec {
            api_version: nodewright::spec::API_VERSION.to_owned(),
            kind: NODE_SPEC_KIND.to_owned(),
            cluster: self.cluster_spec(ca_pem)?,
            role,
            node_group: Some(section("nodeGroup", json!(group))?),
            sysctls: BTreeMap::new(),
            kernel_modules: Vec::new(),
            directories: Vec::new(),
            files: Vec::new(),
            symlinks: Vec::new(),
            systemd: SystemdSpec::default(),
            host: self.host()?,
            containerd: Some(self.containerd()?),
            cni: self.cni()?,
            kubelet: Some(kubelet),
            kube_proxy: self.kube_proxy()?,
            assets: self.assets()?,
            downloads: self.downloads()?,
            control_plane,
        })
    }
}

/// The `dnsIp`: the tenth address of the service network (kops's and kubeadm's choice).
pub fn dns_ip(service: &ipnet::IpNet) -> IpAddr {
    match service.network() {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) + 10).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) + 10).into()),
    }
}

/// Where the control plane's objects live in the store.
pub struct StoreLayout {
    pub bucket: String,
    pub prefix: String,
}

impl StoreLayout {
    pub fn of(cluster: &Cluster) -> Self {
        let (bucket, prefix) = cluster.store();
        Self { bucket, prefix }
    }
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{}{key}", self.bucket, self.prefix)
    }
    pub fn pki(&self) -> String {
        self.url("pki/")
    }
    /// A group's prefix: its specs are `<prefix>nodespec/<sha256>.yaml`.
    pub fn group_prefix(&self, group: &str) -> String {
        self.url(&format!("nodegroups/{group}/"))
    }
    pub fn group_prefix_key(&self, group: &str) -> String {
        format!("{}nodegroups/{group}/", self.prefix)
    }
    pub fn spec_url(&self, group: &str, sha256: &str) -> String {
        format!("{}nodespec/{sha256}.yaml", self.group_prefix(group))
    }
    pub fn shim_records_key(&self) -> String {
        format!("{}controller-shim/nodes/", self.prefix)
    }
    pub fn node_groups_key(&self) -> String {
        format!("{}controller-shim/node-groups.yaml", self.prefix)
    }
}

/// The control plane's spec. It names no worker group: adding one changes only the
/// node-groups document controller-shim reads from the store.
pub fn control_plane(cluster: &Cluster, version: &Version) -> Result<NodeSpec, RenderError> {
    let common = Common {
        cluster,
        version,
        arch: cluster.image.architecture,
    };
    let layout = StoreLayout::of(cluster);
    // A cluster without worker groups runs its workloads on the control plane.
    let taints: Vec<Taint> = if cluster.node_groups.is_empty() {
        Vec::new()
    } else {
        vec![section(
            "taint",
            json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}),
        )?]
    };
    let kubelet = common.kubelet(CONTROL_PLANE_GROUP, json!({}), &taints, json!({}))?;
    let etcd_clusters: Vec<&str> = cluster
        .control_plane
        .etcd
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    let dns = match &cluster.dns.private_zone_id {
        Some(zone) => json!({
            "mode": "route53",
            "hostedZoneId": zone,
            "internalApiName": cluster.internal_api_name(),
        }),
        None => json!({"mode": "hosts", "internalApiName": cluster.internal_api_name()}),
    };
    let images = &version.images;
    let etcd_members: BTreeMap<&str, Value> = etcd_clusters
        .iter()
        .map(|name| (*name, json!({})))
        .collect();
    let control_plane = section(
        "controlPlane",
        json!({
            "etcdVolumes": {"clusters": etcd_clusters},
            "dns": dns,
            "etcd": {"image": images.etcd.image, "clusters": etcd_members},
            "apiServer": {
                "image": images.kube_apiserver.image,
                "securePort": cluster.api.port,
                "encryptionConfig": true,
            },
            "controllerManager": {"image": images.kube_controller_manager.image},
            "scheduler": {"image": images.kube_scheduler.image},
            "pki": {"store": layout.pki()},
        }),
    )?;
    let mut control_plane: ControlPlaneSpec = control_plane;
    control_plane.controller_shim = controller_shim(cluster, &layout)?;
    common.spec(
        Role::ControlPlane,
        CONTROL_PLANE_GROUP,
        None,
        kubelet,
        Some(control_plane),
    )
}

/// controller-shim's section of the control plane's spec, when a group bootstraps
/// through it. The groups themselves are not listed: the shim reads them from the store
/// (`groups::document`), so adding a group does not roll the control plane.
fn controller_shim(
    cluster: &Cluster,
    layout: &StoreLayout,
) -> Result<Option<nodewright::spec::ControllerShimSpec>, RenderError> {
    let any = cluster
        .node_groups
        .iter()
        .any(|g| g.bootstrap == Bootstrap::ControllerShim);
    if !any {
        return Ok(None);
    }
    section(
        "controllerShim",
        json!({
            "image": cluster.control_plane.controller_shim_image,
            "stateBucket": layout.bucket,
        }),
    )
    .map(Some)
}

/// A worker group's spec.
pub fn worker(
    cluster: &Cluster,
    version: &Version,
    group: &NodeGroup,
    ca_pem: &str,
) -> Result<NodeSpec, RenderError> {
    let image = group.image.as_ref().unwrap_or(&cluster.image);
    let common = Common {
        cluster,
        version,
        arch: image.architecture,
    };
    let config = serde_json::to_value(&group.kubelet)
        .map_err(|e| RenderError::Internal(format!("kubelet config: {e}")))?;
    let labels = serde_json::to_value(&group.labels)
        .map_err(|e| RenderError::Internal(format!("labels: {e}")))?;
    let kubelet = common.kubelet(group.name.as_str(), labels, &group.taints, config)?;
    common.spec(
        Role::Worker,
        group.name.as_str(),
        Some(ca_pem),
        kubelet,
        None,
    )
}

/// The spec's bytes: a header saying where it came from, then the YAML.
pub fn to_bytes(spec: &NodeSpec, group: &str) -> Result<Vec<u8>, RenderError> {
    let yaml = yaml_serde::to_string(spec)
        .map_err(|e| RenderError::Internal(format!("serializing the spec of {group}: {e}")))?;
    Ok(format!(
        "# Node spec of group {group} of {}, rendered by nodewright-cluster from the Cluster\n\
         # file. Do not edit: its sha256 is pinned by the group's boot config.\n{yaml}",
        spec.cluster.name
    )
    .into_bytes())
}
