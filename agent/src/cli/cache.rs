//! `nodewright cache list|verify|prune`: the download cache under
//! /var/cache/nodewright.

use std::collections::BTreeSet;
use std::path::Path;

use super::DeadlineArg;
use super::exit;
use crate::assets::Cache;
use crate::assets::bake::BakeManifest;
use crate::assets::cache::CacheEntry;
use crate::engine::State;
use crate::host::Host;
use crate::spec::Sha256Hex;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List the cached assets and extractions.
    List,
    /// Hash every cached asset and report those whose bytes do not match their name.
    Verify {
        /// Remove damaged entries (they would be downloaded again when needed).
        #[arg(long)]
        remove_damaged: bool,
        /// How many files to hash at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
    },
    /// Remove entries that neither the last applied spec nor the bake manifest (nor
    /// --spec) references, and leftovers of interrupted downloads.
    Prune {
        /// Also keep what this node spec references.
        #[arg(long, value_name = "URL")]
        spec: Option<String>,
        #[arg(long, value_name = "HEX", requires = "spec", value_parser = super::apply::parse_sha256)]
        sha256: Option<Sha256Hex>,
        /// Show what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        deadline: DeadlineArg,
    },
}

pub async fn run(root: &Path, args: Args) -> u8 {
    let host = Host::new(root);
    let cache = Cache::new(&host);
    match args.command {
        Command::List => {
            for entry in cache.entries() {
                match entry {
                    CacheEntry::Blob { sha256, size } => println!("sha256/{sha256}  {size} bytes"),
                    CacheEntry::Extracted { sha256 } => println!("extracted/{sha256}"),
                    CacheEntry::Temp { path } | CacheEntry::Unknown { path } => {
                        println!("{}  (leftover)", path.display())
                    }
                }
            }
            exit::OK
        }
        Command::Verify {
            remove_damaged,
            parallel,
        } => {
            let began = std::time::Instant::now();
            let total = cache
                .entries()
                .iter()
                .filter(|e| matches!(e, CacheEntry::Blob { .. }))
                .count();
            let damaged = cache.verify_all(parallel);
            for (sha, why) in &damaged {
                eprintln!("damaged: sha256/{sha}: {why}");
                if remove_damaged {
                    cache.discard(sha);
                }
            }
            println!(
                "Verified {total} cached assets in {:.2}s: {} damaged{}.",
                began.elapsed().as_secs_f64(),
                damaged.len(),
                if remove_damaged && !damaged.is_empty() {
                    " (removed)"
                } else {
                    ""
                }
            );
            if damaged.is_empty() {
                exit::OK
            } else {
                exit::APPLY_FAILED
            }
        }
        Command::Prune {
            spec,
            sha256,
            dry_run,
            deadline,
        } => {
            let mut keep: BTreeSet<String> = BTreeSet::new();
            match State::load(&host.state_dir()) {
                Ok(state) => keep.extend(state.assets.into_values()),
                Err(e) => {
                    eprintln!("nodewright: {e}");
                    return exit::INTERNAL;
                }
            }
            if let Some(manifest) = BakeManifest::load(&host) {
                keep.extend(manifest.assets.into_iter().map(|a| a.sha256));
            }
            if let Some(url) = spec {
                match referenced_by(&url, sha256.as_ref(), deadline.duration()).await {
                    Ok(digests) => keep.extend(digests),
                    Err(e) => return super::fail(&e),
                }
            }
            if dry_run {
                for entry in cache.prunable(&keep) {
                    println!("would remove {entry:?}");
                }
                return exit::OK;
            }
            match cache.prune(&keep) {
                Ok(report) => {
                    for removed in &report.removed {
                        println!("removed {removed}");
                    }
                    println!(
                        "Pruned {} entries ({:.1} MiB); kept {}.",
                        report.removed.len(),
                        report.freed_bytes as f64 / (1024.0 * 1024.0),
                        report.kept
                    );
                    exit::OK
                }
                Err(e) => {
                    eprintln!("nodewright: pruning {}: {e}", cache.dir().display());
                    exit::APPLY_FAILED
                }
            }
        }
    }
}

/// The asset digests a spec references.
async fn referenced_by(
    url: &str,
    sha256: Option<&Sha256Hex>,
    deadline: std::time::Duration,
) -> Result<Vec<String>, crate::source::SourceError> {
    // No instance here: the region of the example facts for an s3:// URL.
    let region = crate::facts::Facts::example().instance.region;
    let verified = crate::source::nodewright::StoreSource::new(url.to_owned(), sha256.cloned())
        .fetch_spec(&region, &crate::cloud::NetworkSettings::default(), deadline)
        .await?;
    Ok(verified
        .spec
        .assets
        .iter()
        .map(|a| a.sha256.to_string())
        .collect())
}
