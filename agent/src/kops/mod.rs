//! kops: boots the workers of an unmodified kops cluster from kops's own inputs.
//!
//! - [`userdata`]: recognises kops's user data (the nodeup script, in its three forms)
//!   and takes `kube_env.yaml` out of it, without running it.
//! - [`boot_config`]: `kube_env.yaml`, kops's `nodeup.BootConfig`, read strictly.
//! - [`nodeup_config`]: the nodeupconfig (`nodeup.Config`), checked against kube_env's
//!   `NodeupConfigHash` before it is parsed, every field typed.
//! - [`translate()`]: the pure translation into a [`NodeSpec`](crate::spec::NodeSpec), or
//!   a refusal naming each kops field it cannot honour.
//! - [`source`]: the provider the boot flow asks (kops's user data, or kube_env itself
//!   when run as `nodeup`).

pub mod boot_config;
pub mod controller;
pub mod kubelet_config;
pub mod nodeup_config;
pub mod refusals;
pub mod source;
pub mod translate;
pub mod userdata;

pub use boot_config::KubeEnv;
pub use nodeup_config::NodeupConfig;
pub use refusals::{Note, Refusal};
pub use translate::{Translation, translate};

use crate::error::{Classified, ErrorKind};
use crate::spec::SpecError;

#[derive(Debug, thiserror::Error)]
pub enum KopsError {
    /// The user data is not kops's, or is damaged (truncated, undecodable).
    #[error("{source_name}: {detail}")]
    UserData { source_name: String, detail: String },
    /// kube_env or the nodeupconfig does not parse (the message names the field and line).
    #[error("{0}")]
    Document(SpecError),
    #[error("{source_name}: {detail}")]
    Invalid { source_name: String, detail: String },
    /// kube_env asks for something nodewright does not do (yet): named by its field.
    #[error("{field}: {detail}")]
    Unsupported { field: String, detail: String },
    #[error(
        "{source_name}: its sha256 (base64) is {actual}, but kube_env's NodeupConfigHash is {expected}: \
         refusing it (changed since the launch template was written, or not this instance group's)"
    )]
    HashMismatch {
        source_name: String,
        expected: String,
        actual: String,
    },
    #[error(
        "instance group {instance_group}: nodewright cannot boot it as nodeup would; nothing was written:\n{}",
        list(refusals)
    )]
    Refused {
        instance_group: String,
        refusals: Vec<Refusal>,
    },
    /// The translated spec failed nodewright's own checks.
    #[error("{0}")]
    Spec(SpecError),
    /// A bug: the translation built something that is not a node spec.
    #[error("{0}")]
    Translation(String),
}

fn list(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(|r| format!("  - {r}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Classified for KopsError {
    /// Refused input (exit 3), except a translation that built no valid spec: a bug.
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Translation(_) => ErrorKind::Internal,
            _ => ErrorKind::InvalidInput,
        }
    }
}
