//! The run lock: one nodewright run changes a node at a time. `boot`, `apply`,
//! `repair` and `reset` hold it; read-only commands (`plan`, `status`, `verify`,
//! `support-bundle`) do not need it. An flock on `/var/lib/nodewright/lock`: the
//! kernel drops it when its holder dies, even by SIGKILL, so it never goes stale.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

pub const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another nodewright run holds the lock {path}")]
    Held { path: PathBuf },
    #[error("taking the run lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held while it lives.
#[derive(Debug)]
pub struct RunLock {
    _lock: Flock<File>,
}

impl RunLock {
    /// Takes the lock, or fails at once with [`LockError::Held`].
    pub fn try_acquire(state_dir: &Path) -> Result<Self, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source: std::io::Error| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Self { _lock: lock }),
            Err((_, Errno::EWOULDBLOCK)) => Err(LockError::Held { path }),
            Err((_, errno)) => Err(io(std::io::Error::from(errno))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("var/lib/nodewright");
        let first = RunLock::try_acquire(&state_dir).unwrap();
        let err = RunLock::try_acquire(&state_dir).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
        drop(first);
        RunLock::try_acquire(&state_dir).unwrap();
    }
}
