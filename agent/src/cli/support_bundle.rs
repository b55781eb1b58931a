//! `nodewright support-bundle`: status, timeline, the redacted spec, unit states,
//! journal lines, disk and mount state, in one tar.gz.

use std::path::{Path, PathBuf};

use super::exit;
use crate::host::Host;
use crate::ops::bundle;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write it (default: nodewright-support-<node>-<time>.tar.gz here).
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub async fn run(root: &Path, args: Args) -> u8 {
    let host = Host::new(root);
    let output = args
        .output
        .unwrap_or_else(|| PathBuf::from(bundle::default_name(&host)));
    match bundle::create(&host, &output).await {
        Ok(bundle) => {
            println!(
                "Wrote {} ({} files, secrets redacted).",
                bundle.path.display(),
                bundle.files.len()
            );
            for why in &bundle.missing {
                println!("  not collected: {why}");
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("nodewright: {e}");
            exit::INTERNAL
        }
    }
}
