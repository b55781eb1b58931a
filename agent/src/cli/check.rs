//! `nodewright check --spec URL`: a node spec checked on any machine, in milliseconds:
//! the strict parse and every validation (and, with `--boot-config`, the boot config
//! and their match). No facts, no IMDS, nothing written; `s3://` needs `--region`.

use std::path::{Path, PathBuf};

use super::{exit, fail};
use crate::cloud::{NetworkSettings, aws};
use crate::source::{SourceError, store};
use crate::spec::{self, BootConfig, Sha256Hex, SpecLocation};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node spec: file:///path, a plain path, or s3://bucket/key (with --region).
    #[arg(long, value_name = "URL")]
    spec: String,
    /// Refuse the spec unless its sha256 is this.
    #[arg(long, value_name = "HEX", value_parser = super::apply::parse_sha256)]
    sha256: Option<Sha256Hex>,
    /// Also check this boot config (user data) and that the spec is the one it names
    /// for its node: cluster, role, digest.
    #[arg(long, value_name = "FILE")]
    boot_config: Option<PathBuf>,
    /// The region of an s3:// spec's bucket (the only network a check may use).
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
}

pub async fn run(args: Args) -> u8 {
    match check(&args).await {
        Ok(summary) => {
            println!("{summary}");
            exit::OK
        }
        Err(error) => fail(&error),
    }
}

async fn check(args: &Args) -> Result<String, SourceError> {
    let url = as_url(&args.spec);
    let boot = match &args.boot_config {
        Some(path) => Some(read_boot_config(path).await?),
        None => None,
    };
    let location = SpecLocation::parse(&url).map_err(|e| spec::SpecError::Parse {
        source_name: "--spec".to_owned(),
        detail: e.to_string(),
    })?;
    let sdk = match (&location, &args.region) {
        (SpecLocation::File { .. }, _) => None,
        (SpecLocation::S3 { .. }, Some(region)) => {
            Some(aws::sdk_config(region, &NetworkSettings::default()).await?)
        }
        (SpecLocation::S3 { .. }, None) => {
            return Err(SourceError::new(
                crate::source::facts::FactsError::Missing {
                    missing: vec!["region of the s3:// spec (--region)"],
                },
            ));
        }
    };
    // A file is read once; only S3 is retried, for a short while.
    let bytes = store::fetch(&location, sdk.as_ref(), std::time::Duration::from_secs(20)).await?;
    let name = location.to_string();
    let expected = args
        .sha256
        .clone()
        .or_else(|| boot.as_ref().map(|b| b.node_spec.sha256.clone()));
    let verified =
        crate::source::spec::verify(&name, url, bytes, expected.as_ref(), boot.as_ref())?;
    let node = &verified.spec;
    let mut notes = String::new();
    match &boot {
        // Booted from the state store, a fresh node must have a way in.
        Some(boot) => crate::source::credentials::check_way_in(
            &name,
            node,
            boot.node_spec.controller_shim.is_some(),
            &[],
        )?,
        None => {
            if let Some(reason) = node.kubelet_credentials_problem() {
                notes = format!(
                    "\nnote: booted from the state store (not through controller-shim), this \
                     spec would be refused: {reason}"
                );
            }
        }
    }
    Ok(format!(
        "{name}: a valid node spec (cluster {}, role {}, Kubernetes {}){}; sha256 {}",
        node.cluster.name,
        node.role,
        node.cluster.kubernetes_version,
        if boot.is_some() {
            ", matching the boot config"
        } else {
            ""
        },
        verified.sha256
    ) + &notes)
}

/// A plain path becomes a `file://` URL (made absolute); a URL is left as it is.
fn as_url(spec: &str) -> String {
    if spec.contains("://") {
        return spec.to_owned();
    }
    let path = Path::new(spec);
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    format!("file://{}", absolute.display())
}

async fn read_boot_config(path: &Path) -> Result<BootConfig, SourceError> {
    // With a file, user data never asks the metadata service.
    let metadata = crate::cloud::Metadata::new(std::time::Duration::ZERO);
    let bytes = crate::source::user_data(Some(path), &metadata).await?;
    let text = crate::source::boot_config_text(&bytes)?;
    Ok(BootConfig::parse(&path.display().to_string(), &text)?)
}
