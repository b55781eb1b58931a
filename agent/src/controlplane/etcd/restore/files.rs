//! The restore's work on the member's volume: the backup downloaded beside the data
//! directory while its sha256 is checked, unpacked and checked against etcd's own
//! digest, `etcdctl snapshot restore` into a new directory, and the swap that moves the
//! old data directory aside (never removed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use flate2::write::GzDecoder;

use super::super::layout::BackupName;
use super::super::snapshot::{SnapshotCheck, SnapshotError};
use super::super::store::{BackupStore, StoreError};
use super::{RestoreError, RestoreSettings};
use crate::host::hash::Hasher;

/// Streams the backup's data into `file` unpacked, checking the sha256 of the bytes in
/// the store against `recorded` (first: a changed backup is refused as such, whatever
/// else is wrong with it) and the digest etcd put in the snapshot; the sha256.
pub(super) async fn download(
    store: &BackupStore,
    name: &BackupName,
    file: &Path,
    recorded: Option<&str>,
) -> Result<String, RestoreError> {
    let url = store.object_url(name, super::super::layout::DATA_FILE);
    let (body, _size) = store.open_data(name).await?;
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode_0600()
        .open(file)
        .map_err(|e| disk(file, e.to_string()))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let target = file.to_owned();
    // gunzip, the snapshot check and the disk writes, off the async threads.
    let unpack = tokio::task::spawn_blocking(move || {
        let writer = CheckedFile {
            file: std::io::BufWriter::with_capacity(1 << 20, out),
            check: SnapshotCheck::new(),
        };
        let mut gunzip = GzDecoder::new(writer);
        while let Some(chunk) = rx.blocking_recv() {
            gunzip.write_all(&chunk).map_err(Unpack::Gzip)?;
        }
        let mut writer = gunzip.finish().map_err(Unpack::Gzip)?;
        writer.file.flush().map_err(Unpack::Disk)?;
        writer.file.get_ref().sync_all().map_err(Unpack::Disk)?;
        writer.check.finish().map_err(Unpack::Snapshot)
    });
    let mut hasher = Hasher::new();
    let mut stream = body;
    let mut read_error = None;
    let mut unpacking = true;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                hasher.update(&chunk);
                // When the unpacking stops (bytes that are not gzip), read on: the
                // sha256 of the whole object says whether the backup was changed.
                if unpacking && tx.send(chunk).await.is_err() {
                    unpacking = false;
                }
            }
            Err(e) => {
                read_error = Some(crate::error::chain(&e));
                break;
            }
        }
    }
    drop(tx);
    let unpacked = unpack
        .await
        .map_err(|e| disk(&target, format!("internal error: {e}")))?;
    if let Some(detail) = read_error {
        return Err(RestoreError::Store(StoreError {
            what: "reading",
            url,
            detail,
            kind: super::super::store::StoreErrorKind::Unreachable,
        }));
    }
    let sha256 = hasher.finish();
    if let Some(recorded) = recorded
        && recorded != sha256
    {
        return Err(RestoreError::Digest {
            url,
            found: sha256,
            recorded: recorded.to_owned(),
        });
    }
    match unpacked {
        Ok(_) => Ok(sha256),
        Err(Unpack::Disk(e)) => Err(disk(&target, e.to_string())),
        // Bytes that do not unpack: a changed backup. Say so by digest when we can.
        Err(Unpack::Gzip(e)) => Err(RestoreError::Snapshot {
            url,
            source: SnapshotError::Damaged(format!("not a gzip stream: {e} (sha256 {sha256})")),
        }),
        Err(Unpack::Snapshot(e)) => Err(RestoreError::Snapshot { url, source: e }),
    }
}

enum Unpack {
    Gzip(std::io::Error),
    Disk(std::io::Error),
    Snapshot(SnapshotError),
}

struct CheckedFile {
    file: std::io::BufWriter<std::fs::File>,
    check: SnapshotCheck,
}

impl Write for CheckedFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(bytes)?;
        self.check.update(&bytes[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

/// `<tool> snapshot restore` into `target`, a directory that must not exist yet.
pub(super) async fn run_tool(
    settings: &RestoreSettings,
    snapshot: &Path,
    target: &Path,
    token: &str,
) -> Result<(), RestoreError> {
    let tool = settings.restore_tool.display().to_string();
    let me = settings
        .initial_cluster
        .iter()
        .find(|(name, _)| *name == settings.member)
        .map(|(_, url)| url.clone())
        .ok_or_else(|| RestoreError::Tool {
            tool: tool.clone(),
            detail: format!("member {} is not among the members", settings.member),
        })?;
    let initial_cluster: Vec<String> = settings
        .initial_cluster
        .iter()
        .map(|(name, url)| format!("{name}={url}"))
        .collect();
    let output = tokio::process::Command::new(&settings.restore_tool)
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(snapshot)
        .arg(format!("--name={}", settings.member))
        .arg(format!("--initial-cluster={}", initial_cluster.join(",")))
        .arg(format!("--initial-cluster-token={token}"))
        .arg(format!("--initial-advertise-peer-urls={me}"))
        .arg(format!("--data-dir={}", target.display()))
        .output()
        .await
        .map_err(|e| RestoreError::Tool {
            tool: tool.clone(),
            detail: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(RestoreError::Tool {
            tool,
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    set_mode(target, 0o700)
}

/// Moves `data` aside (if there) and `restored` into its place; where `data` went.
pub(super) fn swap(
    data: &Path,
    restored: &Path,
    stamp: &str,
) -> Result<Option<PathBuf>, RestoreError> {
    let aside = sibling(data, &format!("before-restore-{stamp}"));
    let moved = match std::fs::symlink_metadata(data) {
        Ok(_) => {
            std::fs::rename(data, &aside).map_err(|e| disk(data, format!("moving aside: {e}")))?;
            Some(aside)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(disk(data, e.to_string())),
    };
    if let Err(e) = std::fs::rename(restored, data) {
        // Put the old one back: etcd starts as it was.
        if let Some(aside) = &moved {
            let _ = std::fs::rename(aside, data);
        }
        return Err(disk(data, format!("moving the restored data in: {e}")));
    }
    if let Some(parent) = data.parent()
        && let Ok(dir) = std::fs::File::open(parent)
    {
        let _ = dir.sync_all();
    }
    Ok(moved)
}

/// `<dir>.<suffix>` beside `dir`.
pub(super) fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), RestoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| disk(path, e.to_string()))
}

pub(super) fn disk(path: &Path, detail: String) -> RestoreError {
    RestoreError::Disk {
        path: path.display().to_string(),
        detail,
    }
}

pub(super) fn digest_hex(bytes: &[u8]) -> String {
    let mut hasher = Hasher::new();
    hasher.update(bytes);
    hasher.finish()
}

pub(super) fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// `20250102T031500Z`.
pub(super) fn compact_time(at: SystemTime) -> String {
    super::super::layout::utc_seconds(at).replace(['-', ':'], "")
}

/// Removes the restore's own scratch (the download, a restored directory not swapped
/// in) however the restore ends. Never the data directory or what was moved aside.
pub(super) struct Cleanup(pub(super) Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(path);
            } else {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
