//! The model: a pure function from a node spec and the machine's facts to the node's
//! desired state. No I/O happens here, so every component is golden-testable.

mod assets;
mod base;
mod builder;
pub mod cluster;
pub mod cni;
pub mod containerd;
pub mod control_plane;
pub mod controller_shim;
pub mod credentials;
mod desired;
pub mod etcd;
pub mod host;
pub mod kube_control_plane;
pub mod kube_proxy;
pub mod kubeconfig;
pub mod kubelet;
pub mod merge;
pub mod pki;
pub mod pki_paths;
pub mod pod;
pub mod render;

/// The facts the model renders from (re-exported: they live below the model).
pub use crate::facts::{
    ControlPlaneFacts, EtcdMember, Facts, HostFacts, InstanceFacts, PackageManager,
};
pub use builder::{MODULES_FILE, SYSCTL_FILE, StateBuilder, UNIT_DIR, fixed_path, unit_path};
pub use credentials::{CredentialFile, Origin};
pub use desired::{
    Content, DesiredAsset, DesiredAssetFile, DesiredBlock, DesiredDirectory, DesiredFile,
    DesiredPackages, DesiredService, DesiredState, DesiredStaticPod, DesiredSymlink, FileKind,
    INPUTS_ANNOTATION, INPUTS_PLACEHOLDER, Ownership, ProtectedPath, inputs_digest,
};

use crate::error::{Classified, ErrorKind};
use crate::runbook::Topic;
use crate::spec::{InvalidValue, NodeSpec};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{what} is declared by both {first} and {second}")]
    Conflict {
        what: String,
        first: &'static str,
        second: &'static str,
    },
    /// A path or name the model builds is not valid.
    #[error("rendering: {0}")]
    Value(#[from] InvalidValue),
    /// The same, for a path built from a field of the spec.
    #[error("rendering: {at}: {source}")]
    Field {
        at: &'static str,
        #[source]
        source: InvalidValue,
    },
    /// The spec asks for something the model cannot render: a section it needs is
    /// missing, an overlay does not merge.
    #[error("rendering: {0}")]
    Spec(String),
    /// The node cannot have what the spec asks (no IPv6 address, a distribution
    /// without a known package manager).
    #[error("rendering: {0}")]
    Node(String),
    /// A rendered document could not be written out.
    #[error("rendering: {what}: {detail}")]
    Encode { what: &'static str, detail: String },
    #[error("{path} is issued by {by}, so the spec must not declare it")]
    Credential { path: String, by: String },
}

/// A spec the model cannot render is refused input.
impl Classified for ModelError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
    fn topic(&self) -> Option<Topic> {
        Some(Topic::InvalidSpec)
    }
}

/// Renders the node's desired state. Services are listed in start order: the
/// container runtime before the kubelet, the spec's own units last.
pub fn desired_state(spec: &NodeSpec, facts: &Facts) -> Result<DesiredState, ModelError> {
    let mut out = StateBuilder::default();
    host::render(spec, facts, &mut out)?;
    cluster::render(spec, &mut out)?;
    containerd::render(spec, &mut out)?;
    cni::render(spec, &mut out)?;
    kubelet::render(spec, facts, &mut out)?;
    kube_proxy::render(spec, facts, &mut out)?;
    base::render(spec, &mut out)?;
    assets::render(spec, &mut out)?;
    control_plane::render(spec, facts, &mut out)?;
    etcd::render(spec, facts, &mut out)?;
    kube_control_plane::render(spec, facts, &mut out)?;
    controller_shim::render(spec, facts, &mut out)?;
    out.finish()
}

/// The desired state with the node's credentials (issued, fetched or kept) among its
/// files: what the engine makes true.
pub fn render(
    spec: &NodeSpec,
    facts: &Facts,
    credentials: Vec<CredentialFile>,
) -> Result<DesiredState, ModelError> {
    let mut state = desired_state(spec, facts)?;
    credentials::add(&mut state, credentials)?;
    Ok(state)
}

/// A minimal valid worker spec plus `extra` top-level sections, for unit tests.
#[cfg(test)]
pub(crate) fn test_spec(extra: &str) -> NodeSpec {
    test_spec_for("worker", extra)
}

/// [`test_spec`] for another role (e.g. `control-plane`).
#[cfg(test)]
pub(crate) fn test_spec_for(role: &str, extra: &str) -> NodeSpec {
    let text = format!(
        "apiVersion: nodewright.io/v1alpha1
kind: NodeSpec
cluster:
  name: test.example.com
  kubernetesVersion: 1.33.4
  serviceCidr: 100.64.0.0/13
  podCidr: 100.96.0.0/11
  dnsIp: 100.64.0.10
  api:
    name: api.test.example.com
  caCertificate: |
    -----BEGIN CERTIFICATE-----
    MIIBhDCCASugAwIBAgIUYMwUB9SQWyoFWwG39APCieOHKKQwCgYIKoZIzj0EAwIw
    -----END CERTIFICATE-----
role: {role}
{extra}"
    );
    NodeSpec::parse("test", &text).unwrap_or_else(|e| panic!("{e}"))
}
