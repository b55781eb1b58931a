//! The CNI plugin binaries: from the plugins archive, only the plugins (not its LICENSE
//! or README), into /opt/cni/bin where containerd's CRI plugin looks for them.

use super::ModelError;
use super::builder::StateBuilder;
use super::desired::Ownership;
use crate::spec::NodeSpec;

const COMPONENT: &str = "cni";

pub const DEFAULT_DIR: &str = "/opt/cni/bin";
/// Where the network add-on (Calico, Cilium, the VPC CNI...) writes its config.
pub const CONF_DIR: &str = "/etc/cni/net.d";

pub fn render(spec: &NodeSpec, out: &mut StateBuilder) -> Result<(), ModelError> {
    let Some(cni) = &spec.cni else {
        return Ok(());
    };
    let Some(asset) = &cni.plugins.asset else {
        // The image has them.
        return Ok(());
    };
    let dir = cni.plugins.directory_or(DEFAULT_DIR);
    for name in &cni.install {
        let path = dir.join(name).map_err(|source| ModelError::Field {
            at: "cni.install",
            source,
        })?;
        out.asset_file(
            COMPONENT,
            path,
            asset.as_str(),
            Some(name),
            Ownership::root(0o755),
        )?;
    }
    Ok(())
}
