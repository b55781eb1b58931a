//! Files under the root: reading their state, and writing them atomically.
//!
//! A write goes to `.<name>.nwtmp` in the same directory, is fsynced, renamed over the
//! target, and the directory is fsynced, so a crash leaves either the old file or the
//! new one, never a mix. The temp name is fixed per target, so a later write (or
//! [`remove_stale_temp`]) removes what a killed run left behind.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What is at a path, without following a final symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    Missing,
    File(FileStat),
    Directory {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: PathBuf,
    },
    /// A socket, device or fifo: never something we manage.
    Other,
}

/// A regular file's metadata; enough to tell whether it changed since we hashed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub inode: u64,
}

pub fn inspect(path: &Path) -> io::Result<Existing> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Missing),
        Err(e) => return Err(e),
    };
    let file_type = meta.file_type();
    Ok(if file_type.is_file() {
        Existing::File(FileStat {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            inode: meta.ino(),
        })
    } else if file_type.is_dir() {
        Existing::Directory {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        }
    } else if file_type.is_symlink() {
        Existing::Symlink {
            target: fs::read_link(path)?,
        }
    } else {
        Existing::Other
    })
}

/// sha256 of a file's bytes, streamed.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    super::hash::file(path)
}

pub fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.nwtmp"))
}

/// The effective uid and gid of this process.
pub fn current_ids() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

/// Writes `bytes` to `target` atomically with the given mode and owner.
pub fn write_atomic(target: &Path, bytes: &[u8], mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    let temp = temp_path(target);
    let result = (|| {
        let _ = fs::remove_file(&temp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        // Owner first: chown clears setuid bits, and the mode must be final.
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        file.set_permissions(Permissions::from_mode(mode))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, target)?;
        sync_parent(target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Replaces whatever is at `path` with a symlink to `target`, atomically.
pub fn symlink_atomic(path: &Path, target: &Path) -> io::Result<()> {
    let temp = temp_path(path);
    let _ = fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_parent(path)
}

pub fn create_dir(path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
        Err(e) => return Err(e),
    }
    set_owner_and_mode(path, mode, uid, gid)?;
    sync_parent(path)
}

pub fn set_owner_and_mode(path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    fs::set_permissions(path, Permissions::from_mode(mode))
}

/// Removes the temp file a killed write may have left beside `target`.
pub fn remove_stale_temp(target: &Path) -> io::Result<bool> {
    match fs::remove_file(temp_path(target)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

/// A file's bytes, or `None` when nothing is there.
pub fn read_if_present(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("config.yaml");
        fs::write(temp_path(&target), b"half a fi").unwrap();
        write_atomic(&target, b"new content\n", 0o640, nix_uid(), nix_gid()).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new content\n");
        assert!(!temp_path(&target).exists());
        let Existing::File(stat) = inspect(&target).unwrap() else {
            panic!("not a file")
        };
        assert_eq!(stat.mode, 0o640);
        assert_eq!(stat.size, 12);
        assert_eq!(
            sha256_file(&target).unwrap(),
            crate::spec::digest(b"new content\n")
        );
    }

    #[test]
    fn inspect_kinds() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            inspect(&dir.path().join("none")).unwrap(),
            Existing::Missing
        );
        assert!(matches!(
            inspect(dir.path()).unwrap(),
            Existing::Directory { .. }
        ));
        let link = dir.path().join("link");
        symlink_atomic(&link, Path::new("/usr/bin/true")).unwrap();
        assert_eq!(
            inspect(&link).unwrap(),
            Existing::Symlink {
                target: "/usr/bin/true".into()
            }
        );
    }

    fn nix_uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }
    fn nix_gid() -> u32 {
        nix::unistd::getgid().as_raw()
    }
}
