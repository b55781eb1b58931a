//! The facts phase: the instance's facts from the instance metadata service (or as
//! given), and the host's own from its OS.

use std::path::Path;

use super::SourceError;
use crate::cloud::Metadata;
use crate::facts::{Facts, InstanceFacts};
use crate::host::os;

/// Facts for the instance: `given` when the caller has them, else from IMDS.
pub async fn gather(
    metadata: &Metadata,
    root: &Path,
    given: Option<&InstanceFacts>,
) -> Result<Facts, SourceError> {
    let instance = match given {
        Some(instance) => instance.clone(),
        None => metadata.instance_facts().await?,
    };
    let facts = Facts {
        instance,
        host: os::host_facts(root),
        control_plane: Default::default(),
    };
    tracing::info!(
        instance_id = %facts.instance.instance_id,
        availability_zone = %facts.instance.availability_zone,
        private_ipv4 = %facts.instance.private_ipv4,
        "gathered instance facts"
    );
    Ok(facts)
}
