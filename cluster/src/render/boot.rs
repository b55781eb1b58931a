//! Each group's boot config (the launch template's user data), pinning its spec by
//! digest: the content-addressed key for nodes that read the store, or the digest alone
//! for workers that ask controller-shim (which serves exactly that spec).

use nodewright::spec::{
    BOOT_CONFIG_KIND, BootConfig, ControllerShimSource, InvalidValue, NodeSpecSource, Role,
};
use nodewright_shim::protocol::DEFAULT_PORT as SHIM_PORT;

use super::RenderError;
use super::specs::StoreLayout;
use crate::file::{Bootstrap, Cluster};

/// How a group's nodes find their spec.
pub enum Source<'a> {
    /// `s3://.../nodegroups/<group>/nodespec/<sha256>.yaml`.
    Store,
    /// controller-shim at the internal API name, trusting only the cluster CA.
    Shim { ca_pem: &'a str },
}

impl<'a> Source<'a> {
    pub fn for_bootstrap(bootstrap: Bootstrap, ca_pem: &'a str) -> Self {
        match bootstrap {
            Bootstrap::ControllerShim => Self::Shim { ca_pem },
            Bootstrap::StateStore => Self::Store,
        }
    }
}

pub fn boot_config(
    cluster: &Cluster,
    group: &str,
    role: Role,
    spec_sha256: &str,
    source: &Source,
) -> Result<BootConfig, RenderError> {
    let layout = StoreLayout::of(cluster);
    let sha256 = spec_sha256
        .try_into()
        .map_err(|e: InvalidValue| RenderError::Internal(e.0))?;
    let node_spec = match source {
        Source::Store => NodeSpecSource {
            url: Some(layout.spec_url(group, spec_sha256)),
            controller_shim: None,
            sha256,
        },
        Source::Shim { ca_pem } => NodeSpecSource {
            url: None,
            controller_shim: Some(ControllerShimSource {
                servers: vec![format!(
                    "https://{}:{SHIM_PORT}",
                    cluster.internal_api_name()
                )],
                ca: (*ca_pem).to_owned(),
            }),
            sha256,
        },
    };
    let name = |n: &str| {
        n.try_into()
            .map_err(|e: InvalidValue| RenderError::Internal(format!("{n}: {}", e.0)))
    };
    Ok(BootConfig {
        api_version: nodewright::spec::API_VERSION.to_owned(),
        kind: BOOT_CONFIG_KIND.to_owned(),
        cluster_name: cluster.name.clone(),
        node_group: name(group)?,
        role,
        node_spec,
        proxy: None,
        ca_bundle: None,
    })
}

pub fn to_bytes(config: &BootConfig) -> Result<Vec<u8>, RenderError> {
    let yaml = yaml_serde::to_string(config).map_err(|e| {
        RenderError::Internal(format!(
            "serializing the boot config of {}: {e}",
            config.node_group
        ))
    })?;
    Ok(format!(
        "# nodewright boot config (EC2 user data) of group {} of {}.\n{yaml}",
        config.node_group, config.cluster_name
    )
    .into_bytes())
}
