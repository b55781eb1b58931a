//! The bake manifest: what `nodewright prebake` put into a machine image (files and
//! assets, with their sha256), at `/var/lib/nodewright/bake.json`.
//!
//! At boot the baked files are hashed in parallel before planning: a file whose bytes
//! match is recorded as verified (so the plan leaves it alone and nothing is
//! downloaded), one that does not is planned like any drifted file. Reading them all at
//! once also pulls a freshly restored EBS volume's blocks in parallel.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::plan::Perms;
use crate::engine::state::{FileRecord, State};
use crate::host::Host;
use crate::host::fs::{self as hostfs, Existing};

pub const BAKE_FILE: &str = "bake.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BakeManifest {
    pub baked_at: String,
    pub agent_version: String,
    pub spec_url: String,
    pub spec_sha256: String,
    /// Every asset the spec names, now in the image's cache.
    pub assets: Vec<BakedAsset>,
    /// Every file written, with its digest.
    pub files: Vec<BakedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BakedAsset {
    pub name: String,
    pub sha256: String,
    pub archive: String,
    /// Where it sits in the cache.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BakedFile {
    pub path: String,
    pub sha256: String,
    pub mode: u32,
    /// For a file from an asset: `sha256:<asset>` or `sha256:<archive>#<member>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl BakeManifest {
    pub fn path(host: &Host) -> PathBuf {
        host.state_dir().join(BAKE_FILE)
    }

    pub fn load(host: &Host) -> Option<Self> {
        let bytes = std::fs::read(Self::path(host)).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(manifest) => Some(manifest),
            Err(error) => {
                tracing::warn!(%error, "the bake manifest is unreadable; ignoring it");
                None
            }
        }
    }

    pub fn save(&self, host: &Host) -> std::io::Result<()> {
        let path = Self::path(host);
        std::fs::create_dir_all(host.state_dir())?;
        let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        let (uid, gid) = hostfs::current_ids();
        hostfs::write_atomic(&path, &bytes, 0o644, uid, gid)
    }
}

#[derive(Debug, Default)]
pub struct BakeCheck {
    pub verified: usize,
    /// Baked files whose bytes are not what was baked (or that are gone).
    pub mismatched: Vec<String>,
    pub elapsed: Duration,
}

/// Hashes, `parallel` at a time, every baked file that is still `wanted` and that the
/// state has no record of yet, and records those that match. Runs once per image:
/// afterwards the records exist.
pub fn verify_baked(
    host: &Host,
    state: &mut State,
    wanted: &BTreeSet<&str>,
    parallel: usize,
) -> Option<BakeCheck> {
    let manifest = BakeManifest::load(host)?;
    let began = Instant::now();
    let pending: Vec<&BakedFile> = manifest
        .files
        .iter()
        .filter(|f| wanted.contains(f.path.as_str()) && !state.files.contains_key(&f.path))
        .collect();
    if pending.is_empty() {
        return None;
    }
    let paths: Vec<PathBuf> = pending
        .iter()
        .map(|f| host.root().join(f.path.trim_start_matches('/')))
        .collect();
    let digests = super::hash::files_parallel(&paths, parallel);
    let mut check = BakeCheck::default();
    for ((file, path), digest) in pending.iter().zip(&paths).zip(digests) {
        match (digest, stat_of(path)) {
            (Ok(digest), Some(stat)) if digest == file.sha256 => {
                state.files.insert(
                    file.path.clone(),
                    FileRecord {
                        source: file.source.clone(),
                        ..FileRecord::file(digest, Perms::of(&stat), &stat)
                    },
                );
                check.verified += 1;
            }
            _ => check.mismatched.push(file.path.clone()),
        }
    }
    check.elapsed = began.elapsed();
    tracing::info!(
        verified = check.verified,
        mismatched = check.mismatched.len(),
        seconds = format!("{:.2}", check.elapsed.as_secs_f64()),
        "verified the files baked into the image"
    );
    for path in &check.mismatched {
        tracing::warn!(
            path,
            "a baked file differs from the bake manifest; it will be replaced"
        );
    }
    Some(check)
}

fn stat_of(path: &Path) -> Option<hostfs::FileStat> {
    match hostfs::inspect(path).ok()? {
        Existing::File(stat) => Some(stat),
        _ => None,
    }
}
