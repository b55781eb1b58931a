//! Safe extraction of a `.tar.gz` asset into a directory of the cache.
//!
//! An archive is data from the network, verified only as a whole: every entry is
//! checked before anything is written. Refused: absolute paths, `..`, symlinks or hard
//! links that point outside, device nodes and fifos, writes through a link, duplicate
//! names, and entries or totals over the size limits. The archive's bytes are hashed as
//! they are read, so extraction re-verifies the cached file in the same pass.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::hash::Hasher;
use flate2::read::GzDecoder;
use tar::EntryType;

use super::cache::{ExtractManifest, MemberRecord};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single member.
    pub max_entry_bytes: u64,
    /// Largest sum of all members.
    pub max_total_bytes: u64,
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entry_bytes: 2 << 30,
            max_total_bytes: 8 << 30,
            max_entries: 100_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("entry {entry:?}: {detail}")]
    Refused { entry: String, detail: String },
    #[error("the archive's sha256 is {actual}, not {expected}")]
    Digest { expected: String, actual: String },
    #[error("reading the archive: {0}")]
    Read(io::Error),
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl ExtractError {
    fn refused(entry: &str, detail: impl Into<String>) -> Self {
        Self::Refused {
            entry: entry.to_owned(),
            detail: detail.into(),
        }
    }
}

/// Counts and hashes the compressed bytes on their way to the decoder.
struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Extracts `archive` (whose sha256 must be `expected`) into `dest`, which must not
/// exist. On error `dest` may hold part of the archive: the caller removes it.
pub fn extract_tar_gz(
    archive: &Path,
    expected: &str,
    dest: &Path,
    limits: Limits,
) -> Result<ExtractManifest, ExtractError> {
    let file = File::open(archive).map_err(ExtractError::Read)?;
    let reader = HashingReader {
        inner: io::BufReader::with_capacity(super::hash::BUFFER, file),
        hasher: Hasher::new(),
    };
    fs::create_dir(dest).map_err(|source| ExtractError::Write {
        path: dest.to_owned(),
        source,
    })?;
    let mut tar = tar::Archive::new(GzDecoder::new(reader));
    let mut members: BTreeMap<String, MemberRecord> = BTreeMap::new();
    let mut total: u64 = 0;
    let entries = tar.entries().map_err(ExtractError::Read)?;
    for (count, entry) in entries.enumerate() {
        let mut entry = entry.map_err(ExtractError::Read)?;
        if count >= limits.max_entries {
            return Err(ExtractError::refused(
                "",
                format!("the archive has more than {} entries", limits.max_entries),
            ));
        }
        let raw = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| ExtractError::refused("?", "the name is not UTF-8"))?;
        let Some(name) = normalize(&raw)? else {
            continue; // the archive's root, "./"
        };
        if members.contains_key(&name) {
            return Err(ExtractError::refused(&raw, "appears twice in the archive"));
        }
        let target = dest.join(&name);
        let kind = entry.header().entry_type();
        if kind != EntryType::Directory {
            make_parents(dest, &name, &raw, &mut members)?;
        }
        let record = match kind {
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                if size > limits.max_entry_bytes {
                    return Err(ExtractError::refused(
                        &raw,
                        format!(
                            "{size} bytes is more than the {} a member may have",
                            limits.max_entry_bytes
                        ),
                    ));
                }
                total = total.saturating_add(size);
                if total > limits.max_total_bytes {
                    return Err(ExtractError::refused(
                        &raw,
                        format!(
                            "the archive holds more than the {} bytes allowed in all",
                            limits.max_total_bytes
                        ),
                    ));
                }
                let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
                let sha256 = write_member(&mut entry, &target, mode, size)?;
                MemberRecord::File { sha256, size, mode }
            }
            EntryType::Directory => {
                make_parents(dest, &name, &raw, &mut members)?;
                make_dir(&target, &raw)?;
                MemberRecord::Directory
            }
            EntryType::Symlink => {
                let link = link_name(&entry, &raw)?;
                if link.starts_with('/') {
                    return Err(ExtractError::refused(
                        &raw,
                        format!("symlink to the absolute path {link}"),
                    ));
                }
                if resolve_link(&name, &link).is_none() {
                    return Err(ExtractError::refused(
                        &raw,
                        format!("symlink to {link} points outside the archive"),
                    ));
                }
                std::os::unix::fs::symlink(&link, &target).map_err(|source| {
                    ExtractError::Write {
                        path: target.clone(),
                        source,
                    }
                })?;
                MemberRecord::Symlink { target: link }
            }
            EntryType::Link => {
                let link = link_name(&entry, &raw)?;
                let Some(source_name) = normalize(&link).ok().flatten() else {
                    return Err(ExtractError::refused(
                        &raw,
                        format!("hard link to {link} points outside the archive"),
                    ));
                };
                let Some(record @ MemberRecord::File { .. }) = members.get(&source_name) else {
                    return Err(ExtractError::refused(
                        &raw,
                        format!("hard link to {link}, which is not an earlier file of the archive"),
                    ));
                };
                let record = record.clone();
                fs::hard_link(dest.join(&source_name), &target).map_err(|source| {
                    ExtractError::Write {
                        path: target.clone(),
                        source,
                    }
                })?;
                record
            }
            EntryType::Char | EntryType::Block => {
                return Err(ExtractError::refused(&raw, "device nodes are not allowed"));
            }
            EntryType::Fifo => {
                return Err(ExtractError::refused(&raw, "fifos are not allowed"));
            }
            other => {
                return Err(ExtractError::refused(
                    &raw,
                    format!("entry type {other:?} is not supported"),
                ));
            }
        };
        members.insert(name, record);
    }
    drop_remaining_and_check(tar, expected)?;
    Ok(ExtractManifest {
        archive_sha256: expected.to_owned(),
        members,
    })
}

/// Reads what the tar reader left (padding, the gzip trailer) so the hash covers every
/// byte, then compares it.
fn drop_remaining_and_check(
    tar: tar::Archive<GzDecoder<HashingReader<io::BufReader<File>>>>,
    expected: &str,
) -> Result<(), ExtractError> {
    let mut decoder = tar.into_inner();
    io::copy(&mut decoder, &mut io::sink()).map_err(ExtractError::Read)?;
    let mut reader = decoder.into_inner();
    io::copy(&mut reader, &mut io::sink()).map_err(ExtractError::Read)?;
    let actual = reader.hasher.finish();
    if actual != expected {
        return Err(ExtractError::Digest {
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>, raw: &str) -> Result<String, ExtractError> {
    let link = entry
        .link_name_bytes()
        .ok_or_else(|| ExtractError::refused(raw, "a link without a target"))?;
    String::from_utf8(link.into_owned())
        .map_err(|_| ExtractError::refused(raw, "the link target is not UTF-8"))
}

/// The entry's name made relative and clean: `./a//b/` becomes `a/b`. `None` for the
/// archive root itself. Absolute names and `..` are refused.
pub fn normalize(raw: &str) -> Result<Option<String>, ExtractError> {
    if raw.starts_with('/') {
        return Err(ExtractError::refused(raw, "absolute paths are not allowed"));
    }
    if raw.contains('\0') {
        return Err(ExtractError::refused(raw, "the name contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(ExtractError::refused(raw, "`..` is not allowed in a name"));
            }
            other => parts.push(other),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Where a symlink at `name` pointing to the relative `target` lands, as a name in the
/// archive; `None` if it climbs out of the archive.
pub fn resolve_link(name: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// Creates the missing parent directories of `name` under `dest`. A parent that exists
/// must be a directory this archive made: never write through a symlink.
fn make_parents(
    dest: &Path,
    name: &str,
    raw: &str,
    members: &mut BTreeMap<String, MemberRecord>,
) -> Result<(), ExtractError> {
    let parts: Vec<&str> = name.split('/').collect();
    for depth in 1..parts.len() {
        let parent = parts[..depth].join("/");
        match members.get(&parent) {
            Some(MemberRecord::Directory) => {}
            Some(_) => {
                return Err(ExtractError::refused(
                    raw,
                    format!(
                        "its parent {parent} is not a directory (writing through a link is not allowed)"
                    ),
                ));
            }
            None => {
                make_dir(&dest.join(&parent), raw)?;
                members.insert(parent, MemberRecord::Directory);
            }
        }
    }
    Ok(())
}

fn make_dir(path: &Path, raw: &str) -> Result<(), ExtractError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(ExtractError::refused(
            raw,
            "a directory over a non-directory",
        )),
        Err(_) => fs::create_dir(path).map_err(|source| ExtractError::Write {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes one member, never more than its header said, and returns its sha256.
fn write_member(
    entry: &mut impl Read,
    target: &Path,
    mode: u32,
    size: u64,
) -> Result<String, ExtractError> {
    let write_error = |source| ExtractError::Write {
        path: target.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(target)
        .map_err(write_error)?;
    let mut hasher = Hasher::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut written: u64 = 0;
    loop {
        let n = entry.read(&mut buffer).map_err(ExtractError::Read)?;
        if n == 0 {
            break;
        }
        written += n as u64;
        if written > size {
            return Err(ExtractError::refused(
                &target.display().to_string(),
                "more bytes than its header says",
            ));
        }
        hasher.update(&buffer[..n]);
        file.write_all(&buffer[..n]).map_err(write_error)?;
    }
    file.sync_all().map_err(write_error)?;
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_or_refused() {
        assert_eq!(normalize("./bin/x").unwrap().as_deref(), Some("bin/x"));
        assert_eq!(normalize("a//b/").unwrap().as_deref(), Some("a/b"));
        assert_eq!(normalize("./").unwrap(), None);
        assert!(normalize("/etc/passwd").is_err());
        assert!(normalize("a/../../x").is_err());
    }

    #[test]
    fn links_resolve_inside_only() {
        assert_eq!(resolve_link("bin/x", "y").as_deref(), Some("bin/y"));
        assert_eq!(resolve_link("bin/x", "../lib/y").as_deref(), Some("lib/y"));
        assert_eq!(resolve_link("bin/x", "../../y"), None);
        assert_eq!(resolve_link("x", "../y"), None);
        assert_eq!(resolve_link("x", "/etc/shadow"), None);
    }
}
