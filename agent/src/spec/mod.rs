//! The documents nodewright reads: the `BootConfig` from user data and the `NodeSpec`
//! from the state store. Parsing is strict: unknown fields, wrong types and invalid
//! values are errors that name the field path and the line.

mod assets;
mod boot;
mod cni;
mod component_checks;
mod components;
mod consistency;
mod containerd;
mod control_plane;
mod entries;
mod etcd_backup;
mod host;
mod kube_proxy;
mod kubelet;
mod locate;
mod location;
mod node;
mod numbers;
mod pki;
mod program;
mod types;
mod validate;
mod values;

use schemars::JsonSchema;

use crate::error::{Classified, ErrorKind};
use crate::runbook::Topic;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use assets::{ArchiveKind, AssetEntry, DownloadSettings, InstallEntry, MirrorEntry};
pub use boot::{BOOT_CONFIG_KIND, BootConfig, ControllerShimSource, NodeSpecSource, ProxySettings};
pub use cni::{CNI_PLUGINS, CniSpec};
pub use components::{
    ApiServerSpec, AuditSpec, ControllerManagerSpec, ControllerShimSpec, EtcdClusterSpec,
    EtcdPorts, EtcdSpec, ExtraArgs, RunMode, SchedulerSpec, ShimNodeGroup, ShimNodeName,
};
pub use containerd::{
    ContainerdSpec, check_extra_config as check_containerd_extra_config,
    config_version as containerd_config_version, describe_toml_error as containerd_toml_error,
};
pub use control_plane::{
    ControlPlaneSpec, DnsMode, DnsSpec, EtcdVolumesSpec, Filesystem, ForceDetach, WatchSpec,
    etcd_peer_name,
};
pub use entries::{
    DirectoryEntry, DropInEntry, FileEntry, SymlinkEntry, SysctlValue, SystemdSpec, UnitEntry,
    UnitState,
};
pub use etcd_backup::{BACKUP_INTERVALS_MINUTES, EtcdBackupSpec};
pub use host::{HostSpec, TimeDaemon, TimeSync};
pub use kube_proxy::{KubeProxySpec, ProxyMode};
pub use kubelet::{
    EcrCredentialProvider, KubeletConfigFields, KubeletSpec, NodeIpFamily, NodeNameSource,
    PROTECTED_KERNEL_DEFAULTS, Taint, TaintEffect,
};
pub use locate::line_of;
pub use location::SpecLocation;
pub use node::{ApiEndpoint, ClusterSpec, NODE_SPEC_KIND, NodeSpec};
pub use numbers::{FileMode, KubernetesVersion};
pub use pki::{PkiKeyAlgorithm, PkiSpec};
pub use program::{Program, ProgramSet};
pub use types::{
    AbsPath, AssetName, AssetUrl, DnsName, DropInName, InvalidValue, MemberPath, ModuleName,
    Principal, Sha256Hex, SysctlKey, UnitName,
};
pub use validate::Problem;
pub use values::{
    ContainerdVersion, GoDuration, ImageRef, LabelKey, LabelValue, MirrorUrl, PackageName,
    Quantity, RegistryHost,
};

/// The one API version this build reads.
pub const API_VERSION: &str = "nodewright.io/v1alpha1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ControlPlane => "control-plane",
            Self::Worker => "worker",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The YAML did not parse into the types: syntax, unknown field, wrong type or value.
    /// yaml_serde's message already carries the field path and the line.
    #[error("{source_name}: {detail}")]
    Parse { source_name: String, detail: String },
    #[error("{source_name} is invalid:\n{}", list(problems))]
    Invalid {
        source_name: String,
        problems: Vec<Problem>,
    },
    #[error(
        "{source_name}: sha256 is {actual} but the boot config requires {expected}; refusing it"
    )]
    DigestMismatch {
        source_name: String,
        expected: String,
        actual: String,
    },
}

/// A spec that does not parse, validate or match its digest is refused input.
impl Classified for SpecError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
    fn topic(&self) -> Option<Topic> {
        match self {
            Self::DigestMismatch { .. } => Some(Topic::SpecHashMismatch),
            Self::Parse { .. } | Self::Invalid { .. } => Some(Topic::InvalidSpec),
        }
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Largest document we parse; a spec is a few KiB, and this bounds a hostile one.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;

pub(crate) fn parse_yaml<T: DeserializeOwned>(source: &str, text: &str) -> Result<T, SpecError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(SpecError::Parse {
            source_name: source.to_owned(),
            detail: format!(
                "{} bytes is more than the {MAX_DOCUMENT_BYTES} a document may have",
                text.len()
            ),
        });
    }
    if text.trim().is_empty() {
        return Err(SpecError::Parse {
            source_name: source.to_owned(),
            detail: "the document is empty".to_owned(),
        });
    }
    let deserializer = yaml_serde::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| SpecError::Parse {
        source_name: source.to_owned(),
        detail: describe_parse_error(text, &e),
    })
}

/// "<field path>: <what is wrong> at line N". yaml_serde knows the line of the
/// enclosing mapping and a partial path; serde_path_to_error knows the whole path, from
/// which the field's own line is found.
fn describe_parse_error(
    text: &str,
    error: &serde_path_to_error::Error<yaml_serde::Error>,
) -> String {
    let inner = error.inner();
    let mut message = inner.to_string();
    // Drop yaml_serde's own "<path>: " prefix and " at line L column C" suffix.
    if let Some(location) = inner.location() {
        let suffix = format!(" at line {} column {}", location.line(), location.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
    }
    let path = error.path().to_string();
    let path = if path == "." { String::new() } else { path };
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.contains(' ')
        && (path.starts_with(prefix) || prefix == ".")
    {
        message = rest.to_owned();
    }
    let line = locate::line_of(text, &path)
        .filter(|_| !path.is_empty())
        .or_else(|| inner.location().map(|l| l.line()));
    let mut out = if path.is_empty() {
        message
    } else {
        format!("{path}: {message}")
    };
    if let Some(line) = line {
        out.push_str(&format!(" at line {line}"));
    }
    out
}

/// sha256 of a document's bytes, lowercase hex.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// Refuses `bytes` unless their sha256 is `expected`.
pub fn verify_digest(source: &str, bytes: &[u8], expected: &Sha256Hex) -> Result<(), SpecError> {
    let actual = digest(bytes);
    if actual == expected.as_str() {
        Ok(())
    } else {
        Err(SpecError::DigestMismatch {
            source_name: source.to_owned(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Checks that a node spec belongs to the instance its boot config describes.
pub fn check_spec_matches_boot(
    source: &str,
    text: &str,
    spec: &NodeSpec,
    boot: &BootConfig,
) -> Result<(), SpecError> {
    let mut problems = validate::Problems::new(source, text);
    if spec.cluster.name != boot.cluster_name {
        problems.add(
            "cluster.name",
            format!(
                "the spec is for cluster {} but this instance belongs to {}",
                spec.cluster.name, boot.cluster_name
            ),
        );
    }
    if spec.role != boot.role {
        problems.add(
            "role",
            format!(
                "the spec is for role {} but this instance's boot config says {}",
                spec.role, boot.role
            ),
        );
    }
    if let Some(group) = &spec.node_group
        && *group != boot.node_group
    {
        problems.add(
            "nodeGroup",
            format!(
                "the spec is for node group {group} but this instance is in {}",
                boot.node_group
            ),
        );
    }
    problems.finish()
}

/// The JSON Schema of the node spec (or of the boot config).
pub fn json_schema(boot_config: bool) -> serde_json::Value {
    let schema = if boot_config {
        schemars::schema_for!(BootConfig)
    } else {
        schemars::schema_for!(NodeSpec)
    };
    schema.to_value()
}
