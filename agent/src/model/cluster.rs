//! What every node of the cluster shares: the cluster CA certificate, and the API
//! name pinned in /etc/hosts when the spec gives the load balancer's addresses.

use super::ModelError;
use super::builder::{StateBuilder, fixed_path};
use super::desired::Ownership;
use crate::spec::NodeSpec;

const COMPONENT: &str = "cluster";

/// The cluster CA certificate; kubeconfigs and the kubelet's client-CA point here.
pub const CA_CERT: &str = "/etc/kubernetes/pki/ca.crt";
pub const HOSTS_FILE: &str = "/etc/hosts";

pub fn render(spec: &NodeSpec, out: &mut StateBuilder) -> Result<(), ModelError> {
    let cluster = &spec.cluster;
    if let Some(pem) = &cluster.ca_certificate {
        let mut text = pem.trim().to_owned();
        text.push('\n');
        out.file(COMPONENT, fixed_path(CA_CERT), text, Ownership::root(0o644))?;
    }
    if let Some(api) = &cluster.api
        && !api.load_balancer_ips.is_empty()
    {
        let lines: String = api
            .load_balancer_ips
            .iter()
            .map(|ip| format!("{ip}\t{}\n", api.name))
            .collect();
        out.file_block(COMPONENT, fixed_path(HOSTS_FILE), "api", lines)?;
    }
    Ok(())
}
