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
mod desired;
pub mod etcd;
mod facts;
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

pub use builder::{MODULES_FILE, SYSCTL_FILE, StateBuilder, UNIT_DIR, fixed_path, unit_path};
pub use desired::{
    Content, DesiredAsset, DesiredAssetFile, DesiredBlock, DesiredDirectory, DesiredFile,
    DesiredPackages, DesiredService, DesiredState, DesiredStaticPod, DesiredSymlink, FileKind,
    INPUTS_ANNOTATION, INPUTS_PLACEHOLDER, Ownership, PackageManager, ProtectedPath, inputs_digest,
};
pub use facts::{ControlPlaneFacts, EtcdMember, Facts, HostFacts, InstanceFacts};

use crate::spec::NodeSpec;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{what} is declared by both {first} and {second}")]
    Conflict {
        what: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("rendering: {0}")]
    Render(String),
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
    let mut state = out.finish()?;
    state.certificates = pki::desired_certificates(spec, facts)?;
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
