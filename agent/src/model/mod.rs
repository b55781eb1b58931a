//! The model: a pure function from a node spec and the machine's facts to the node's
//! desired state. No I/O happens here, so every component is golden-testable.

mod base;
mod builder;
pub mod control_plane;
mod desired;
mod facts;

pub use builder::{MODULES_FILE, SYSCTL_FILE, StateBuilder, UNIT_DIR, fixed_path, unit_path};
pub use desired::{
    Content, DesiredAssetFile, DesiredDirectory, DesiredFile, DesiredService, DesiredState,
    DesiredSymlink, FileKind, Ownership,
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

/// Renders the node's desired state.
pub fn desired_state(spec: &NodeSpec, facts: &Facts) -> Result<DesiredState, ModelError> {
    let mut out = StateBuilder::default();
    base::render(spec, &mut out)?;
    control_plane::render(spec, facts, &mut out)?;
    out.finish()
}
