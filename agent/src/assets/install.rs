//! Installs a file out of the cache: copied to a temp file beside the target while its
//! bytes are hashed, checked against the digest it must have, then given its owner and
//! mode, fsynced and renamed into place. The bytes that land are the bytes verified,
//! whatever happened to the cache entry since it was downloaded.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::hash::Hasher;
use crate::host::fs::{sync_parent, temp_path};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The cache entry's bytes are not what they must be: discard it and fetch again.
    #[error("{source_path} has sha256 {actual}, not {expected}")]
    Corrupt {
        source_path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {path}: {}", super::describe_io(source))]
    Write { path: PathBuf, source: io::Error },
}

/// Copies `source` to `target` atomically if its sha256 is `expected`.
pub fn install_file(
    source: &Path,
    target: &Path,
    expected: &str,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), InstallError> {
    let temp = temp_path(target);
    let result = copy_verified(source, &temp, target, expected, mode, uid, gid);
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn copy_verified(
    source: &Path,
    temp: &Path,
    target: &Path,
    expected: &str,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), InstallError> {
    let read_error = |e| InstallError::Read {
        path: source.to_owned(),
        source: e,
    };
    let write_error = |e| InstallError::Write {
        path: temp.to_owned(),
        source: e,
    };
    let mut input = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(source)
        .map_err(read_error)?;
    let _ = fs::remove_file(temp);
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(write_error)?;
    let mut hasher = Hasher::new();
    let mut buffer = vec![0u8; super::hash::BUFFER];
    loop {
        let n = input.read(&mut buffer).map_err(read_error)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        output.write_all(&buffer[..n]).map_err(write_error)?;
    }
    let actual = hasher.finish();
    if actual != expected {
        return Err(InstallError::Corrupt {
            source_path: source.to_owned(),
            expected: expected.to_owned(),
            actual,
        });
    }
    // Owner first: chown clears setuid bits, and the mode must be final.
    std::os::unix::fs::fchown(&output, Some(uid), Some(gid)).map_err(write_error)?;
    output
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(write_error)?;
    output.sync_all().map_err(write_error)?;
    drop(output);
    fs::rename(temp, target).map_err(|e| InstallError::Write {
        path: target.to_owned(),
        source: e,
    })?;
    sync_parent(target).map_err(|e| InstallError::Write {
        path: target.to_owned(),
        source: e,
    })
}
