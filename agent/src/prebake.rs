//! `prebake`, for image builds: fetch, verify and install every asset and every file
//! that does not depend on the instance's identity, and write the bake manifest.
//!
//! There is no instance yet, so there are no facts from IMDS. The model is rendered
//! twice, for two made-up instances that differ in everything an instance can differ in
//! (id, account, region, zone, type, addresses, names); what comes out the same both
//! times does not depend on the instance and goes into the image. Services are left
//! alone: the image's first boot starts them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::assets::bake::{BakeManifest, BakedAsset, BakedFile};
use crate::assets::{FetchSettings, Fetcher};
use crate::cloud::NetworkSettings;
use crate::engine::{self, PlanError, State};
use crate::error::{Classified, ErrorKind};
use crate::facts::{Facts, InstanceFacts};
use crate::host::{Host, os};
use crate::model::{self, DesiredState, FileKind, ModelError};
use crate::runbook::Topic;
use crate::source::SourceError;
use crate::source::nodewright::StoreSource;
use crate::spec::Sha256Hex;

#[derive(Debug, Clone)]
pub struct PrebakeOptions {
    pub root: PathBuf,
    pub url: String,
    pub sha256: Option<Sha256Hex>,
    /// The region for s3:// URLs (the image build's).
    pub region: String,
    pub deadline: Duration,
}

#[derive(Debug)]
pub struct Prebaked {
    pub manifest: BakeManifest,
    pub changes: usize,
    pub downloads: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PrebakeError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("building the node's desired state: {0}")]
    Model(#[from] ModelError),
    #[error("planning: {0}")]
    Plan(#[from] PlanError),
    #[error("{} of the changes failed:\n  - {}", failures.len(), failures.join("\n  - "))]
    Apply { failures: Vec<String> },
    #[error("writing {}: {source}", path.display())]
    Manifest {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Classified for PrebakeError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Source(e) => e.kind(),
            Self::Model(e) => e.kind(),
            Self::Plan(_) | Self::Apply { .. } => ErrorKind::ChangeFailed,
            Self::Manifest { .. } => ErrorKind::Internal,
        }
    }
    fn topic(&self) -> Option<Topic> {
        match self {
            Self::Source(e) => e.topic(),
            Self::Model(e) => e.topic(),
            Self::Plan(_) | Self::Apply { .. } => Some(Topic::ApplyFailed),
            Self::Manifest { .. } => None,
        }
    }
}

pub async fn prebake(options: &PrebakeOptions) -> Result<Prebaked, PrebakeError> {
    let host = Host::new(&options.root);
    let network = NetworkSettings::default();
    let host_facts = os::host_facts(host.root());
    let one = Facts {
        instance: made_up_instance(0, &options.region),
        host: host_facts.clone(),
        control_plane: Default::default(),
    };
    let other = Facts {
        instance: made_up_instance(1, "eu-west-3"),
        host: host_facts,
        control_plane: Default::default(),
    };
    let verified = StoreSource::new(options.url.clone(), options.sha256.clone())
        .fetch_spec(&one.instance.region, &network, options.deadline)
        .await?;
    let (spec, spec_sha256) = (verified.spec, verified.sha256);
    let desired = model::desired_state(&spec, &one)?;
    let desired_other = model::desired_state(&spec, &other)?;
    let baked = identity_independent(&desired, &desired_other);

    let fetcher = Arc::new(
        Fetcher::new(
            &host,
            FetchSettings::from(&spec.downloads),
            network,
            Some(options.region.clone()),
        )
        .map_err(SourceError::from)?,
    );
    // Every asset, even one nothing installs yet, verified if already cached.
    let fetches = desired.assets.values().map(|asset| {
        let fetcher = fetcher.clone();
        async move { fetcher.ensure_verified(asset).await }
    });
    let failures: Vec<String> = futures_util::future::join_all(fetches)
        .await
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    if !failures.is_empty() {
        return Err(PrebakeError::Apply { failures });
    }

    let mut state = State::default();
    let plan = engine::plan(&baked, &host, &state).await?;
    let report = engine::apply_with(&plan, &host, &mut state, fetcher.clone()).await;
    let failures = report.failures();
    if !failures.is_empty() {
        return Err(PrebakeError::Apply { failures });
    }

    let manifest = BakeManifest {
        baked_at: crate::clock::now(),
        agent_version: crate::VERSION.to_owned(),
        spec_url: options.url.clone(),
        spec_sha256,
        assets: desired
            .assets
            .values()
            .map(|asset| BakedAsset {
                name: asset.name.clone(),
                sha256: asset.sha256.to_string(),
                archive: asset.archive.to_string(),
                path: format!(
                    "/{}/sha256/{}",
                    crate::assets::cache::CACHE_DIR,
                    asset.sha256
                ),
            })
            .collect(),
        files: baked_files(&baked, &state),
    };
    manifest
        .save(&host)
        .map_err(|source| PrebakeError::Manifest {
            path: BakeManifest::path(&host),
            source,
        })?;
    Ok(Prebaked {
        manifest,
        changes: plan.steps.len(),
        downloads: fetcher.stats().downloads,
    })
}

/// What two renders for different instances agree on: directories, files, symlinks and
/// asset files, and every asset. No services, sysctls or modules are acted on; unit
/// files are written as plain files (systemd loads them at the first boot).
pub fn identity_independent(one: &DesiredState, other: &DesiredState) -> DesiredState {
    let mut out = DesiredState {
        assets: one.assets.clone(),
        ..DesiredState::default()
    };
    out.directories = one
        .directories
        .iter()
        .filter(|d| other.directories.contains(d))
        .cloned()
        .collect();
    out.files = one
        .files
        .iter()
        // A static pod manifest is written with its inputs' digest, at boot. A secret
        // (a bootstrap token, a key) never goes into an image that others may launch.
        .filter(|f| {
            other.files.contains(f) && one.static_pod(f.path.as_str()).is_none() && !f.secret
        })
        .cloned()
        .map(|mut f| {
            f.kind = FileKind::Plain;
            f
        })
        .collect();
    out.symlinks = one
        .symlinks
        .iter()
        .filter(|l| other.symlinks.contains(l))
        .cloned()
        .collect();
    out.asset_files = one
        .asset_files
        .iter()
        .filter(|f| {
            other.asset_files.contains(f)
                && one.assets.get(&f.asset).map(|a| &a.sha256)
                    == other.assets.get(&f.asset).map(|a| &a.sha256)
        })
        .cloned()
        .collect();
    out
}

fn baked_files(baked: &DesiredState, state: &State) -> Vec<BakedFile> {
    let paths: BTreeMap<&str, ()> = baked
        .files
        .iter()
        .map(|f| (f.path.as_str(), ()))
        .chain(baked.asset_files.iter().map(|f| (f.path.as_str(), ())))
        .collect();
    paths
        .keys()
        .filter_map(|path| {
            let record = state.files.get(*path)?;
            Some(BakedFile {
                path: (*path).to_owned(),
                sha256: record.digest.clone(),
                mode: record.mode,
                source: record.source.as_ref().map(ToString::to_string),
            })
        })
        .collect()
}

/// An instance that does not exist, differing from the other made-up one everywhere.
fn made_up_instance(n: u8, region: &str) -> InstanceFacts {
    let digit = char::from(b'0' + n);
    InstanceFacts {
        instance_id: format!("i-{}", digit.to_string().repeat(17)),
        account_id: digit.to_string().repeat(12),
        region: region.to_owned(),
        availability_zone: format!("{region}{}", if n == 0 { 'a' } else { 'b' }),
        instance_type: if n == 0 { "m6i.large" } else { "c7g.xlarge" }.to_owned(),
        private_ipv4: Ipv4Addr::new(10, n, 1, 10 + n),
        ipv6: None,
        hostname: format!("ip-10-{n}-1-{}.prebake.internal", 10 + n),
        mac: format!("0e:00:00:00:00:0{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Ownership, StateBuilder};
    use crate::spec::AbsPath;

    #[test]
    fn only_what_both_renders_share_is_baked() {
        let render = |id: &str| {
            let mut out = StateBuilder::default();
            let path = |p: &str| AbsPath::try_from(p).unwrap();
            out.file("t", path("/etc/shared"), "same", Ownership::root(0o644))
                .unwrap();
            out.file(
                "t",
                path("/etc/identity"),
                format!("instance {id}"),
                Ownership::root(0o644),
            )
            .unwrap();
            out.finish().unwrap()
        };
        let baked = identity_independent(&render("a"), &render("b"));
        let paths: Vec<&str> = baked.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["/etc/shared"]);
    }

    #[test]
    fn made_up_instances_differ() {
        let a = made_up_instance(0, "us-east-1");
        let b = made_up_instance(1, "eu-west-3");
        assert_ne!(a.instance_id, b.instance_id);
        assert_ne!(a.private_ipv4, b.private_ipv4);
        assert_ne!(a.hostname, b.hostname);
        assert_eq!(a.instance_id.len(), "i-0a1b2c3d4e5f60718".len());
    }
}
