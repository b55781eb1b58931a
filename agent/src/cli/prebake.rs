//! `nodewright prebake --spec URL`: for image builds (Packer). Downloads, verifies and
//! installs everything that does not depend on the instance, and writes the bake
//! manifest that the image's boots verify against. Needs no instance metadata.

use std::path::Path;

use super::exit;
use super::{DeadlineArg, fail};
use crate::prebake::{PrebakeOptions, prebake};
use crate::spec::Sha256Hex;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node spec the image is for: s3://bucket/key or file:///path.
    #[arg(long, value_name = "URL")]
    spec: String,
    /// Refuse the spec unless its sha256 is this.
    #[arg(long, value_name = "HEX", value_parser = super::apply::parse_sha256)]
    sha256: Option<Sha256Hex>,
    /// The region for s3:// URLs.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    #[command(flatten)]
    deadline: DeadlineArg,
}

pub async fn run(root: &Path, args: Args) -> u8 {
    let options = PrebakeOptions {
        root: root.to_owned(),
        url: args.spec,
        sha256: args.sha256,
        region: args.region,
        deadline: args.deadline.duration(),
    };
    match prebake(&options).await {
        Ok(baked) => {
            println!(
                "Baked {} files and {} assets ({} downloaded, {} changes) for {}.",
                baked.manifest.files.len(),
                baked.manifest.assets.len(),
                baked.downloads,
                baked.changes,
                baked.manifest.spec_url
            );
            println!(
                "Bake manifest: {}",
                crate::assets::bake::BakeManifest::path(&crate::host::Host::new(root)).display()
            );
            exit::OK
        }
        Err(error) => fail(&error),
    }
}
