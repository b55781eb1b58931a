//! controller-shim's node-group definitions (`kind: NodeGroups`), which the shim reads
//! from the state store at run time: adding a group changes this document, never the
//! control plane's spec.

use serde_json::json;

use super::RenderError;
use super::specs::StoreLayout;
use crate::file::{Bootstrap, Cluster};

// TODO(kit): render with controller-shim's own type once it is on main (contract with
// engineer `shim`); this is its agreed shape.
pub fn document(cluster: &Cluster) -> Result<Vec<u8>, RenderError> {
    let layout = StoreLayout::of(cluster);
    let groups: Vec<serde_json::Value> = cluster
        .node_groups
        .iter()
        .filter(|g| g.bootstrap == Bootstrap::ControllerShim)
        .map(|g| {
            json!({
                "name": g.name,
                "roles": [super::role_name(g.name.as_str(), cluster.name.as_str())],
                "specPrefix": layout.group_prefix(g.name.as_str()),
                "nodeName": "privateDnsName",
                "allowRebootstrap": g.allow_rebootstrap,
            })
        })
        .collect();
    let document = json!({
        "apiVersion": "shim.nodewright.io/v1alpha1",
        "kind": "NodeGroups",
        "clusterName": cluster.name,
        "groups": groups,
    });
    let yaml = yaml_serde::to_string(&document)
        .map_err(|e| RenderError::Internal(format!("the node groups: {e}")))?;
    Ok(format!(
        "# controller-shim's node groups of {}, rendered by nodewright-cluster.\n{yaml}",
        cluster.name
    )
    .into_bytes())
}
