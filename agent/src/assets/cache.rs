//! The content-addressed cache under `/var/cache/nodewright`:
//!
//! ```text
//! sha256/<hex>                      a downloaded asset, named by its digest
//! extracted/<hex>/tree/...          an archive asset, extracted once
//! extracted/<hex>/manifest.json     its members with their digests (written last)
//! tmp/<hex>.part                    a download in progress, or left by a run that died
//! tmp/<hex>.part.json               where that part's bytes came from (URL, validators)
//! ```
//!
//! A part's writer holds an exclusive `flock` on it: a part whose lock is free belongs
//! to no live process and is resumed by the next download of that digest (see
//! `download`). Parts nobody resumed are removed after [`STALE_PART_AGE`] or by
//! `cache prune` once their asset is no longer wanted.
//!
//! A name is never trusted: whatever is read out of the cache is hashed on the way out
//! (see `install`), and a mismatch discards the entry.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::hash;
use crate::host::Host;

/// The cache directory, relative to the root.
pub const CACHE_DIR: &str = "var/cache/nodewright";

/// A part left by a dead run is kept this long for a later run to resume (a part of
/// an asset still wanted is kept by `cache prune` whatever its age).
pub const STALE_PART_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// What an extracted archive holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractManifest {
    pub archive_sha256: String,
    pub members: BTreeMap<String, MemberRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum MemberRecord {
    File {
        sha256: String,
        size: u64,
        mode: u32,
    },
    Directory,
    Symlink {
        target: String,
    },
}

impl ExtractManifest {
    /// The regular file a member names, following symlinks inside the archive.
    pub fn resolve<'a>(&'a self, member: &'a str) -> Result<(String, &'a str), String> {
        let mut name = member.to_owned();
        for _ in 0..16 {
            match self.members.get(&name) {
                Some(MemberRecord::File { sha256, .. }) => return Ok((name, sha256)),
                Some(MemberRecord::Symlink { target }) => {
                    name = super::extract::resolve_link(&name, target)
                        .ok_or_else(|| format!("member {member} links outside the archive"))?;
                }
                Some(MemberRecord::Directory) => {
                    return Err(format!("member {member} is a directory, not a file"));
                }
                None => {
                    let files: Vec<&str> = self
                        .members
                        .iter()
                        .filter(|(_, r)| matches!(r, MemberRecord::File { .. }))
                        .map(|(n, _)| n.as_str())
                        .take(12)
                        .collect();
                    return Err(format!(
                        "the archive has no member {member} (it has: {}{})",
                        files.join(", "),
                        if self.members.len() > files.len() {
                            ", …"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        Err(format!("member {member}: too many links"))
    }
}

/// One entry of the cache, for listing, verifying and pruning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEntry {
    Blob { sha256: String, size: u64 },
    Extracted { sha256: String },
    Temp { path: PathBuf },
    Unknown { path: PathBuf },
}

#[derive(Debug, Default)]
pub struct PruneReport {
    pub removed: Vec<String>,
    pub kept: usize,
    pub freed_bytes: u64,
}

impl Cache {
    pub fn new(host: &Host) -> Self {
        Self::at(host.root().join(CACHE_DIR))
    }

    pub fn at(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blob(&self, sha256: &str) -> PathBuf {
        self.dir.join("sha256").join(sha256)
    }

    pub fn temp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// The download file for `sha256` (whoever holds its lock writes it).
    pub fn part(&self, sha256: &str) -> PathBuf {
        self.temp_dir().join(format!("{sha256}.part"))
    }

    /// Where the bytes of [`Self::part`] came from.
    pub fn part_origin(&self, sha256: &str) -> PathBuf {
        self.temp_dir().join(format!("{sha256}.part.json"))
    }

    pub fn extracted(&self, sha256: &str) -> PathBuf {
        self.dir.join("extracted").join(sha256)
    }

    pub fn tree(&self, sha256: &str) -> PathBuf {
        self.extracted(sha256).join("tree")
    }

    pub fn has_blob(&self, sha256: &str) -> bool {
        self.blob(sha256).is_file()
    }

    /// The manifest of an extracted archive; `None` when it is not (fully) extracted.
    pub fn manifest(&self, sha256: &str) -> Option<ExtractManifest> {
        let text = fs::read(self.extracted(sha256).join("manifest.json")).ok()?;
        let manifest: ExtractManifest = serde_json::from_slice(&text).ok()?;
        (manifest.archive_sha256 == sha256).then_some(manifest)
    }

    /// Creates the cache's directories (root-only writable).
    pub fn ensure_dirs(&self) -> io::Result<()> {
        for sub in ["sha256", "extracted", "tmp"] {
            fs::create_dir_all(self.dir.join(sub))?;
        }
        Ok(())
    }

    /// Moves a verified download into place.
    pub fn commit(&self, part: &Path, sha256: &str) -> io::Result<PathBuf> {
        let blob = self.blob(sha256);
        fs::rename(part, &blob)?;
        fs::File::open(self.dir.join("sha256"))?.sync_all()?;
        Ok(blob)
    }

    /// Removes an asset's blob and extraction (after a failed verification).
    pub fn discard(&self, sha256: &str) {
        let _ = fs::remove_file(self.blob(sha256));
        let _ = fs::remove_dir_all(self.extracted(sha256));
    }

    /// Removes what dead runs left in `tmp/` that no download will take over: parts
    /// unlocked and untouched for [`STALE_PART_AGE`], origin records without their
    /// part, and anything else that is not a live process's (older agents named parts
    /// `<hex>.<pid>.part`). Parts of recent dead runs stay, to be resumed.
    pub fn remove_leftovers(&self) {
        let Ok(entries) = fs::read_dir(self.temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let remove = match TempName::of(&name) {
                TempName::Part(_) => {
                    let old = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_PART_AGE);
                    old && !super::download::is_locked(&path)
                }
                TempName::Origin(sha) => !self.part(sha).exists(),
                TempName::Other => !is_live_legacy_part(&name),
            };
            if remove {
                let _ = remove_any(&path);
            }
        }
    }

    pub fn entries(&self) -> Vec<CacheEntry> {
        let mut out = Vec::new();
        let list = |sub: &str| -> Vec<fs::DirEntry> {
            fs::read_dir(self.dir.join(sub))
                .map(|entries| entries.flatten().collect())
                .unwrap_or_default()
        };
        for entry in list("sha256") {
            let name = entry.file_name().to_string_lossy().into_owned();
            match entry.metadata() {
                Ok(meta) if meta.is_file() && is_hex_digest(&name) => out.push(CacheEntry::Blob {
                    sha256: name,
                    size: meta.len(),
                }),
                _ => out.push(CacheEntry::Unknown { path: entry.path() }),
            }
        }
        for entry in list("extracted") {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_hex_digest(&name) && self.manifest(&name).is_some() {
                out.push(CacheEntry::Extracted { sha256: name });
            } else {
                // A half-done extraction or something that is not ours.
                out.push(CacheEntry::Unknown { path: entry.path() });
            }
        }
        for entry in list("tmp") {
            out.push(CacheEntry::Temp { path: entry.path() });
        }
        out
    }

    /// What [`Self::prune`] removes: every entry whose digest is not in `keep`, and
    /// every leftover but the parts that stay (see [`Self::keep_temp`]).
    pub fn prunable(&self, keep: &BTreeSet<String>) -> Vec<CacheEntry> {
        self.entries()
            .into_iter()
            .filter(|entry| match entry {
                CacheEntry::Blob { sha256, .. } | CacheEntry::Extracted { sha256 } => {
                    !keep.contains(sha256)
                }
                CacheEntry::Temp { path } => !self.keep_temp(path, keep),
                CacheEntry::Unknown { .. } => true,
            })
            .collect()
    }

    /// Removes every entry whose digest is not in `keep`, and every leftover.
    pub fn prune(&self, keep: &BTreeSet<String>) -> io::Result<PruneReport> {
        let mut report = PruneReport::default();
        let prunable = self.prunable(keep);
        report.kept = self
            .entries()
            .iter()
            .filter(|e| matches!(e, CacheEntry::Blob { .. } | CacheEntry::Extracted { .. }))
            .count()
            - prunable
                .iter()
                .filter(|e| matches!(e, CacheEntry::Blob { .. } | CacheEntry::Extracted { .. }))
                .count();
        for entry in prunable {
            let (path, label) = match &entry {
                CacheEntry::Blob { sha256, .. } => (self.blob(sha256), format!("sha256/{sha256}")),
                CacheEntry::Extracted { sha256 } => {
                    (self.extracted(sha256), format!("extracted/{sha256}"))
                }
                CacheEntry::Temp { path } | CacheEntry::Unknown { path } => {
                    let label = path
                        .strip_prefix(&self.dir)
                        .unwrap_or(path)
                        .display()
                        .to_string();
                    (path.clone(), label)
                }
            };
            report.freed_bytes += disk_usage(&path);
            remove_any(&path)?;
            report.removed.push(label);
        }
        Ok(report)
    }

    /// Whether a temp entry stays through a prune: a part a live process writes, or a
    /// dead run's part (and its origin record) of an asset still wanted, to be resumed.
    fn keep_temp(&self, path: &Path, keep: &BTreeSet<String>) -> bool {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match TempName::of(&name) {
            TempName::Part(sha) => keep.contains(sha) || super::download::is_locked(path),
            TempName::Origin(sha) => {
                keep.contains(sha) || super::download::is_locked(&self.part(sha))
            }
            TempName::Other => is_live_legacy_part(&name),
        }
    }

    /// Hashes every blob (in parallel, `parallel` at a time) and returns those whose
    /// bytes do not match their name.
    pub fn verify_all(&self, parallel: usize) -> Vec<(String, String)> {
        let blobs: Vec<String> = self
            .entries()
            .into_iter()
            .filter_map(|e| match e {
                CacheEntry::Blob { sha256, .. } => Some(sha256),
                _ => None,
            })
            .collect();
        let paths: Vec<PathBuf> = blobs.iter().map(|sha| self.blob(sha)).collect();
        hash::files_parallel(&paths, parallel)
            .into_iter()
            .zip(blobs)
            .filter_map(|(result, sha)| match result {
                Ok(actual) if actual == sha => None,
                Ok(actual) => Some((sha, format!("holds bytes with sha256 {actual}"))),
                Err(e) => Some((sha, e.to_string())),
            })
            .collect()
    }
}

fn is_hex_digest(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What a name in `tmp/` is.
enum TempName<'a> {
    /// `<hex>.part`
    Part(&'a str),
    /// `<hex>.part.json`
    Origin(&'a str),
    Other,
}

impl<'a> TempName<'a> {
    fn of(name: &'a str) -> Self {
        if let Some(sha) = name.strip_suffix(".part.json")
            && is_hex_digest(sha)
        {
            return Self::Origin(sha);
        }
        match name.strip_suffix(".part") {
            Some(sha) if is_hex_digest(sha) => Self::Part(sha),
            _ => Self::Other,
        }
    }
}

/// Whether a temp file is an older agent's part of a running process
/// (`<hex>.<pid>.part`).
fn is_live_legacy_part(name: &str) -> bool {
    name.strip_suffix(".part")
        .and_then(|rest| rest.rsplit('.').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| {
            pid != std::process::id() && Path::new("/proc").join(pid.to_string()).exists()
        })
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| disk_usage(&e.path())).sum())
        .unwrap_or(0)
}
