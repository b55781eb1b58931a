//! controller-shim's node groups: the `NodeGroups` document the shim re-reads from the
//! state store (`<cluster>/controller-shim/node-groups.yaml`) while it runs, rendered
//! with the shim's own types. Adding a group changes this document, never the control
//! plane's spec: the control plane does not roll.

use nodewright_shim::groups::{NodeGroup, NodeGroups, NodeNaming, Rebootstrap};

use super::RenderError;
use super::specs::StoreLayout;
use crate::file::{Bootstrap, Cluster};

/// The groups that bootstrap through controller-shim.
pub fn node_groups(cluster: &Cluster) -> NodeGroups {
    let layout = StoreLayout::of(cluster);
    NodeGroups::new(
        cluster
            .node_groups
            .iter()
            .filter(|g| g.bootstrap == Bootstrap::ControllerShim)
            .map(|g| NodeGroup {
                name: g.name.to_string(),
                roles: vec![super::role_name(g.name.as_str(), cluster.name.as_str())],
                node_specs: layout.group_prefix(g.name.as_str()),
                node_name: NodeNaming::PrivateDnsName,
                rebootstrap: if g.allow_rebootstrap {
                    Rebootstrap::Allowed
                } else {
                    Rebootstrap::Never
                },
            })
            .collect(),
    )
}

/// The document's bytes; checked with the shim's own parser before it is written.
pub fn document(cluster: &Cluster) -> Result<Vec<u8>, RenderError> {
    let yaml = yaml_serde::to_string(&node_groups(cluster))
        .map_err(|e| RenderError::Internal(format!("the node groups: {e}")))?;
    let text = format!(
        "# controller-shim's node groups of {}, rendered by nodewright-cluster.\n{yaml}",
        cluster.name
    );
    let url = StoreLayout::of(cluster).url("controller-shim/node-groups.yaml");
    nodewright_shim::groups::NodeGroups::parse(&url, &text).map_err(|e| {
        RenderError::Internal(format!("controller-shim refuses the node groups: {e}"))
    })?;
    Ok(text.into_bytes())
}
