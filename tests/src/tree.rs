//! Snapshots of a directory tree: every entry's kind, mode, owner, content digest and
//! mtime, to prove a command changed nothing, or to find partial files.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i128,
    /// sha256 for files, target for symlinks, empty for directories.
    pub content: String,
}

pub type Snapshot = BTreeMap<PathBuf, Entry>;

pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let relative = path.strip_prefix(root).unwrap_or(&path).to_owned();
        let file_type = meta.file_type();
        let (kind, content) = if file_type.is_symlink() {
            (
                "symlink",
                std::fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default(),
            )
        } else if file_type.is_dir() {
            ("dir", String::new())
        } else if file_type.is_file() {
            let bytes = std::fs::read(&path).unwrap_or_default();
            ("file", hex::encode(Sha256::digest(&bytes)))
        } else {
            ("other", String::new())
        };
        out.insert(
            relative,
            Entry {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
                content,
            },
        );
        if file_type.is_dir() {
            walk(root, &path, out);
        }
    }
}

/// Temp files a killed write would leave (`.<name>.nwtmp`).
pub fn partial_files(root: &Path) -> Vec<PathBuf> {
    snapshot(root)
        .into_keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".nwtmp"))
        })
        .collect()
}
