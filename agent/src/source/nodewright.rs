//! nodewright's own inputs: the `BootConfig` in user data, and the node spec it names,
//! in the state store ([`StoreSource`]: `s3://`, `file://`, also what `apply --spec`
//! and `prebake --spec` read) or from controller-shim ([`ShimSource`], workers).

use crate::cloud::{NetworkSettings, aws};
use crate::spec::{BootConfig, ControllerShimSource, Sha256Hex, SpecError, SpecLocation};

use super::{
    BoxFuture, Context, Fetched, Source, SourceError, boot_config_text, shim, spec, store,
};

/// Recognises a boot config (plain, gzip, or its MIME part). Being last in the chain,
/// it claims whatever user data is left, so its error says why that is no boot config.
pub struct Provider;

impl super::Provider for Provider {
    fn name(&self) -> &'static str {
        "nodewright"
    }

    fn recognise(&self, user_data: &[u8]) -> Result<Option<Box<dyn Source>>, SourceError> {
        let text = boot_config_text(user_data)?;
        let boot = BootConfig::parse("user data", &text)?;
        tracing::info!(
            cluster = %boot.cluster_name,
            node_group = %boot.node_group,
            role = %boot.role,
            spec = %boot.node_spec.describe(),
            "read the boot config"
        );
        Ok(Some(match boot.node_spec.controller_shim.clone() {
            Some(shim) => Box::new(ShimSource { boot, shim }),
            None => Box::new(StoreSource {
                url: boot.node_spec.url.clone().unwrap_or_default(),
                sha256: Some(boot.node_spec.sha256.clone()),
                boot: Some(boot),
            }),
        }))
    }
}

/// A spec at a URL: named by a boot config, or on the command line (`apply --spec`,
/// `plan --spec`, `prebake --spec`, the digest optional there).
#[derive(Debug, Clone)]
pub struct StoreSource {
    pub url: String,
    pub sha256: Option<Sha256Hex>,
    /// The boot config that named it: the spec must be for this instance.
    pub boot: Option<BootConfig>,
}

impl StoreSource {
    pub fn new(url: String, sha256: Option<Sha256Hex>) -> Self {
        Self {
            url,
            sha256,
            boot: None,
        }
    }

    /// The verified spec; `region` is for an `s3://` URL.
    pub async fn fetch_spec(
        &self,
        region: &str,
        network: &NetworkSettings,
        deadline: std::time::Duration,
    ) -> Result<spec::VerifiedSpec, SourceError> {
        let location = SpecLocation::parse(&self.url).map_err(|e| SpecError::Parse {
            source_name: "node spec location".to_owned(),
            detail: e.to_string(),
        })?;
        let sdk = match location {
            SpecLocation::S3 { .. } => Some(aws::sdk_config(region, network).await?),
            SpecLocation::File { .. } => None,
        };
        let bytes = store::fetch(&location, sdk.as_ref(), deadline).await?;
        let name = location.to_string();
        Ok(spec::verify(
            &name,
            self.url.clone(),
            bytes,
            self.sha256.as_ref(),
            self.boot.as_ref(),
        )?)
    }
}

impl Source for StoreSource {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn network(&self) -> NetworkSettings {
        network_of(self.boot.as_ref())
    }

    fn fetch<'a>(
        &'a self,
        context: &'a Context<'a>,
    ) -> BoxFuture<'a, Result<Fetched, SourceError>> {
        Box::pin(async move {
            let spec = self
                .fetch_spec(
                    &context.facts.instance.region,
                    context.network,
                    context.deadline,
                )
                .await?;
            Ok(Fetched {
                spec,
                credentials: Vec::new(),
            })
        })
    }
}

/// A worker's spec, and at first boot its kubelet credentials, from controller-shim.
#[derive(Debug, Clone)]
pub struct ShimSource {
    pub boot: BootConfig,
    pub shim: ControllerShimSource,
}

impl Source for ShimSource {
    fn describe(&self) -> String {
        self.boot.node_spec.describe()
    }

    fn network(&self) -> NetworkSettings {
        network_of(Some(&self.boot))
    }

    fn issues_credentials(&self) -> bool {
        true
    }

    fn fetch<'a>(
        &'a self,
        context: &'a Context<'a>,
    ) -> BoxFuture<'a, Result<Fetched, SourceError>> {
        Box::pin(shim::fetch_verified(&self.boot, &self.shim, context))
    }
}

/// The boot config's proxy and CA settings.
fn network_of(boot: Option<&BootConfig>) -> NetworkSettings {
    NetworkSettings {
        proxy: boot.and_then(|b| b.proxy.clone()),
        ca_bundle: boot.and_then(|b| b.ca_bundle.clone()),
    }
}
