//! The part file of one download: claimed under a lock, resumed across runs.
//!
//! A part is `tmp/<hex>.part`; its writer holds an exclusive `flock` on it for as long
//! as it writes, so a part whose lock is free was left by a process that is gone (the
//! kernel drops the lock with the process, whatever killed it), and the next run takes
//! it over, hashing the bytes on disk first. Beside it, `tmp/<hex>.part.json` says where
//! its bytes came from (URL and validators), so a resume from the same URL sends
//! `If-Range` and gets the whole file if it changed.

use std::fs::File;
use std::io::{self, Read, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};

use crate::assets::hash::{self, Hasher};

/// Where the bytes of a part came from: the URL of the last response taken into it,
/// with that response's validators and the size it gave for the whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

impl Origin {
    /// The `If-Range` value for a resume from `url`: a strong ETag, else the
    /// Last-Modified date. None for another URL: its validators say nothing about
    /// these bytes (there the final sha256 is the only guard).
    pub fn if_range_for(&self, url: &str) -> Option<&str> {
        if self.url != url {
            return None;
        }
        match &self.etag {
            Some(etag) if !etag.starts_with("W/") => Some(etag),
            _ => self.last_modified.as_deref(),
        }
    }

    /// The ETag to require (S3 `If-Match`) when resuming from `url`.
    pub(super) fn etag_for(&self, url: &str) -> Option<&str> {
        (self.url == url).then_some(self.etag.as_deref()).flatten()
    }
}

/// What one asset's download moved, in this run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Bytes received over the network by this run, every attempt and URL counted,
    /// including bytes later thrown away and received again.
    pub transferred: u64,
    /// Bytes a part left by an earlier run held that this run kept (not transferred
    /// again). Zero if that part had to start over.
    pub resumed: u64,
    /// Bytes thrown away to start over from the first byte (a server that ignored the
    /// range, a changed file, wrong bytes), whether this run received them or an
    /// earlier run left them.
    pub discarded: u64,
}

/// A part file claimed by this process, or busy.
pub enum Claim {
    Part(Box<Part>),
    /// Another live process holds the part's lock: it is downloading this asset.
    Busy,
}

/// A download in progress: the locked part file, its bytes so far with their running
/// hash, and where they came from.
pub struct Part {
    path: PathBuf,
    origin_path: PathBuf,
    file: BufWriter<tokio::fs::File>,
    /// Held for the part's life; the kernel releases it if the process dies.
    _lock: Flock<File>,
    hasher: Hasher,
    len: u64,
    origin: Option<Origin>,
    counts: Counts,
}

impl Part {
    /// Claims the part at `path` (`origin_path` beside it): creates it, or takes over
    /// the one a dead run left, hashing its bytes so that the download goes on from
    /// its end. `Busy` if a live process holds it.
    pub async fn claim(path: PathBuf, origin_path: PathBuf) -> io::Result<Claim> {
        let opened = {
            let path = path.clone();
            let origin_path = origin_path.clone();
            tokio::task::spawn_blocking(move || open_locked(&path, &origin_path))
                .await
                .map_err(|e| io::Error::other(e.to_string()))??
        };
        let Some(opened) = opened else {
            return Ok(Claim::Busy);
        };
        Ok(Claim::Part(Box::new(Self {
            path,
            origin_path,
            file: BufWriter::with_capacity(hash::BUFFER, tokio::fs::File::from_std(opened.file)),
            _lock: opened.lock,
            hasher: opened.hasher,
            len: opened.len,
            origin: opened.origin,
            counts: Counts {
                resumed: opened.len,
                ..Counts::default()
            },
        })))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    pub(super) async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.counts.transferred += bytes.len() as u64;
        self.file.write_all(bytes).await?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Records where the bytes that follow come from (before they are written, so a
    /// run killed in between leaves no part that claims the wrong origin for them).
    pub(super) async fn set_origin(&mut self, origin: Origin) -> io::Result<()> {
        let json = serde_json::to_vec(&origin).map_err(io::Error::other)?;
        tokio::fs::write(&self.origin_path, json).await?;
        self.origin = Some(origin);
        Ok(())
    }

    /// Throws away what the part holds, to start from the first byte again.
    pub async fn reset(&mut self) -> io::Result<()> {
        self.file.flush().await?;
        self.file.get_mut().set_len(0).await?;
        self.file.get_mut().seek(SeekFrom::Start(0)).await?;
        self.hasher = Hasher::new();
        self.counts.discarded += self.len;
        self.counts.resumed = 0;
        self.len = 0;
        self.origin = None;
        remove_if_there(&self.origin_path).await
    }

    /// The digest of the bytes so far, after writing them all out and syncing.
    pub async fn finish(&mut self) -> io::Result<String> {
        self.file.flush().await?;
        self.file.get_mut().sync_all().await?;
        Ok(self.hasher.clone().finish())
    }

    /// After the part was moved into the cache: its origin record goes too.
    pub async fn committed(self) {
        let _ = remove_if_there(&self.origin_path).await;
    }

    /// Gives the part up: kept for a later run to resume when `keep` and it holds
    /// bytes (written out first), else removed with its origin record. Either way
    /// while the lock is still held.
    pub async fn abandon(mut self, keep: bool) {
        if keep && self.len > 0 && self.file.flush().await.is_ok() {
            return;
        }
        let _ = tokio::fs::remove_file(&self.path).await;
        let _ = remove_if_there(&self.origin_path).await;
    }
}

async fn remove_if_there(path: &Path) -> io::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

struct Opened {
    file: File,
    lock: Flock<File>,
    hasher: Hasher,
    len: u64,
    origin: Option<Origin>,
}

/// Opens (or creates) and locks the part, then hashes what it holds. `None` if a
/// live process holds the lock.
fn open_locked(path: &Path, origin_path: &Path) -> io::Result<Option<Opened>> {
    // Another process may remove the file (its download done) between our open and
    // our lock: then the lock is on a file nobody will see, so open again.
    for _ in 0..10 {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(path)?;
        let lock = match Flock::lock(file.try_clone()?, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, errno)) => return Err(errno.into()),
        };
        let held = file.metadata()?;
        match std::fs::symlink_metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {}
            _ => continue,
        }
        if !held.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut hasher = Hasher::new();
        let mut buffer = vec![0u8; hash::BUFFER];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            len += n as u64;
        }
        let origin = if len > 0 {
            std::fs::read(origin_path)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        } else {
            None
        };
        if origin.is_none() {
            let _ = std::fs::remove_file(origin_path);
        }
        return Ok(Some(Opened {
            file,
            lock,
            hasher,
            len,
            origin,
        }));
    }
    Err(io::Error::other(
        "the part file kept being replaced while taking its lock",
    ))
}

/// Whether a live process holds the lock of the part at `path`.
pub fn is_locked(path: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
    else {
        return false;
    };
    matches!(
        Flock::lock(file, FlockArg::LockExclusiveNonblock),
        Err((_, Errno::EWOULDBLOCK))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_range_only_for_the_same_url_and_never_a_weak_etag() {
        let origin = Origin {
            url: "http://a/x".into(),
            etag: Some("\"v1\"".into()),
            last_modified: Some("Tue, 01 Jul 2025 00:00:00 GMT".into()),
            total: Some(10),
        };
        assert_eq!(origin.if_range_for("http://a/x"), Some("\"v1\""));
        assert_eq!(origin.if_range_for("http://b/x"), None);
        let weak = Origin {
            etag: Some("W/\"v1\"".into()),
            ..origin.clone()
        };
        assert_eq!(
            weak.if_range_for("http://a/x"),
            Some("Tue, 01 Jul 2025 00:00:00 GMT")
        );
        let neither = Origin {
            etag: None,
            last_modified: None,
            ..origin
        };
        assert_eq!(neither.if_range_for("http://a/x"), None);
    }

    fn paths(dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join("x.part"), dir.join("x.part.json"))
    }

    async fn claim(dir: &Path) -> Claim {
        let (path, origin) = paths(dir);
        Part::claim(path, origin).await.unwrap()
    }

    #[tokio::test]
    async fn a_dead_runs_part_is_taken_over_hashed_and_a_live_one_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let (path, origin_path) = paths(dir.path());
        // What a killed run left: bytes and where they came from.
        std::fs::write(&path, b"hello ").unwrap();
        let origin = Origin {
            url: "http://m/a".into(),
            etag: Some("\"e\"".into()),
            ..Origin::default()
        };
        std::fs::write(&origin_path, serde_json::to_vec(&origin).unwrap()).unwrap();
        let Claim::Part(mut part) = claim(dir.path()).await else {
            panic!("a part nobody holds is claimed");
        };
        assert_eq!(part.len(), 6);
        assert_eq!(part.origin(), Some(&origin));
        assert_eq!(part.counts().resumed, 6);
        // While this process holds it, nobody else can (another open, as another
        // process would).
        assert!(matches!(claim(dir.path()).await, Claim::Busy));
        assert!(is_locked(&path));
        part.write(b"world").await.unwrap();
        assert_eq!(
            part.finish().await.unwrap(),
            crate::spec::digest(b"hello world")
        );
        assert_eq!(
            part.counts(),
            Counts {
                transferred: 5,
                resumed: 6,
                discarded: 0
            }
        );
        part.reset().await.unwrap();
        assert_eq!(
            part.counts(),
            Counts {
                transferred: 5,
                resumed: 0,
                discarded: 11
            }
        );
        assert!(!origin_path.exists(), "a reset part has no origin");
        part.write(b"abc").await.unwrap();
        part.abandon(true).await;
        // Kept for the next run, unlocked.
        assert!(!is_locked(&path));
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        let Claim::Part(part) = claim(dir.path()).await else {
            panic!("claimed again");
        };
        assert_eq!(part.len(), 3);
        assert_eq!(part.origin(), None, "no origin record, none assumed");
        part.abandon(false).await;
        assert!(!path.exists());
    }
}
