//! Why a fetch failed, worded for the person reading the log.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::extract;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "downloading {asset} (sha256 {}…): every URL failed ({rounds} rounds in {:.1}s):\n{}",
        &sha256[..12],
        elapsed.as_secs_f64(),
        list(failures)
    )]
    AllFailed {
        asset: String,
        sha256: String,
        /// Each URL, in order, with its last failure.
        failures: Vec<(String, String)>,
        rounds: u32,
        elapsed: Duration,
    },
    #[error("{what} {}: {}", path.display(), describe_io(source))]
    Local {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("extracting {asset}: {source}; nothing was installed from it")]
    Extract {
        asset: String,
        source: extract::ExtractError,
    },
    #[error("asset {asset}: {detail}")]
    Asset { asset: String, detail: String },
}

fn list(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(url, failure)| format!("    - {url}: {failure}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An I/O error with what it means for the cache spelled out.
pub fn describe_io(error: &io::Error) -> String {
    let hint = match error.raw_os_error().map(nix::errno::Errno::from_raw) {
        Some(nix::errno::Errno::ENOSPC) => "; the disk is full",
        Some(nix::errno::Errno::EDQUOT) => "; the disk quota is used up",
        Some(nix::errno::Errno::EROFS) => "; the file system is read-only",
        Some(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => {
            "; nodewright needs to run as root"
        }
        _ => "",
    };
    format!("{error}{hint}")
}
