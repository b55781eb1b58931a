//! What is known about the machine a node spec is rendered for: the instance (from
//! IMDS, or given), the host's OS, and what the control-plane phase decided. Plain data,
//! below the model, the host and the cloud layers, which all read it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::spec::AbsPath;

/// Facts from the instance metadata service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceFacts {
    pub instance_id: String,
    pub account_id: String,
    pub region: String,
    pub availability_zone: String,
    pub instance_type: String,
    pub private_ipv4: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    /// The private DNS name, e.g. `ip-10-0-1-23.ec2.internal`.
    pub hostname: String,
    pub mac: String,
}

/// Facts read from the host itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostFacts {
    /// Kubernetes' name for the CPU architecture: `amd64` or `arm64`.
    pub arch: String,
    /// `ID` from os-release, e.g. `debian`, `ubuntu`, `amzn`.
    pub distro: String,
    /// `VERSION_ID` from os-release, e.g. `12`.
    pub distro_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Facts {
    pub instance: InstanceFacts,
    pub host: HostFacts,
    /// Control-plane nodes: what the etcd volumes phase found or did.
    #[serde(default, skip_serializing_if = "ControlPlaneFacts::is_empty")]
    pub control_plane: ControlPlaneFacts,
}

/// What the control-plane phase (between facts and model) learned: which etcd member
/// this node is, decided by the volume it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneFacts {
    /// By etcd cluster name (`main`, `events`).
    #[serde(default)]
    pub etcd_members: BTreeMap<String, EtcdMember>,
}

impl ControlPlaneFacts {
    pub fn is_empty(&self) -> bool {
        self.etcd_members.is_empty()
    }
}

/// This node's member of one etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdMember {
    /// The member's name, from the volume's tag (`a`).
    pub member: String,
    /// All members of the etcd cluster, from the same tag (`a`, `b`, `c`).
    pub members: Vec<String>,
    /// Every member's peer DNS name (`etcd-a.internal.<cluster>`).
    pub peer_names: BTreeMap<String, String>,
    pub volume_id: String,
    /// The device by a stable path (`/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol…`).
    pub device: String,
    /// Where the volume is mounted: the member's data lives below it.
    pub mount_path: AbsPath,
    pub filesystem: String,
    /// Only in `plan`: the volume is not attached or mounted yet, this is what a run
    /// would claim.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub planned: bool,
}

impl Facts {
    /// Facts for tests and golden files: a fixed, realistic instance.
    pub fn example() -> Self {
        Self {
            instance: InstanceFacts {
                instance_id: "i-0a1b2c3d4e5f60718".to_owned(),
                account_id: "123456789012".to_owned(),
                region: "us-east-1".to_owned(),
                availability_zone: "us-east-1a".to_owned(),
                instance_type: "m6i.large".to_owned(),
                private_ipv4: Ipv4Addr::new(10, 0, 1, 23),
                ipv6: None,
                hostname: "ip-10-0-1-23.ec2.internal".to_owned(),
                mac: "0e:1f:2a:3b:4c:5d".to_owned(),
            },
            host: HostFacts {
                arch: "amd64".to_owned(),
                distro: "debian".to_owned(),
                distro_version: "12".to_owned(),
            },
            control_plane: ControlPlaneFacts::default(),
        }
    }
}

/// The OS package manager of the node's distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Apt,
    Dnf,
}

impl PackageManager {
    /// The manager of a distribution (`ID` and `VERSION_ID` from os-release), if
    /// nodewright knows it. Releases that only have yum (Amazon Linux 2, the RHEL
    /// family before 8) are not supported.
    pub fn for_distro(distro: &str, version: &str) -> Option<Self> {
        let major: Option<u32> = version.split('.').next().and_then(|m| m.parse().ok());
        match distro {
            "debian" | "ubuntu" => Some(Self::Apt),
            "amzn" if major.is_some_and(|m| m >= 2022) => Some(Self::Dnf),
            "rhel" | "centos" | "rocky" | "almalinux" | "ol" if major.is_some_and(|m| m >= 8) => {
                Some(Self::Dnf)
            }
            "fedora" => Some(Self::Dnf),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apt => "apt",
            Self::Dnf => "dnf",
        }
    }
}
