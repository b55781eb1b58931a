//! The last applied node spec, kept on the node with the facts it was rendered for, so
//! that `repair` re-renders the same desired state without the network (IMDS, S3 and
//! controller-shim may be what is broken) and `status` knows the node's services.
//!
//! One file, `/var/lib/nodewright/applied-spec.json`, mode 0600 (the spec may hold
//! secrets), written atomically before apply begins and only when it changed, so a
//! no-op run writes nothing. Its digest is checked on every read.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::fs;
use crate::model::Facts;
use crate::spec::{self, NodeSpec};

pub const FILE: &str = "applied-spec.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedSpec {
    pub spec_url: String,
    pub spec_sha256: String,
    pub saved_at: String,
    pub agent_version: String,
    pub facts: Facts,
    /// The spec's exact text (specs are UTF-8; its sha256 is `spec_sha256`).
    pub spec: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AppliedError {
    #[error(
        "no applied spec is kept at {path}: run `nodewright boot` (or `apply --spec`) once with the network"
    )]
    Missing { path: PathBuf },
    #[error("reading the applied spec {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error(
        "the applied spec kept at {path} is damaged (its sha256 is {actual}, recorded {expected}); run `nodewright boot` to fetch it again"
    )]
    Corrupt {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("the applied spec kept at {path} no longer parses: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("keeping the applied spec at {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl AppliedSpec {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE)
    }

    /// Reads the kept spec and checks its digest.
    pub fn load(state_dir: &Path) -> Result<Self, AppliedError> {
        let path = Self::path(state_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AppliedError::Missing { path });
            }
            Err(e) => {
                return Err(AppliedError::Read {
                    path,
                    detail: e.to_string(),
                });
            }
        };
        let kept: Self = serde_json::from_slice(&bytes).map_err(|e| AppliedError::Read {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let actual = spec::digest(kept.spec.as_bytes());
        if actual != kept.spec_sha256 {
            return Err(AppliedError::Corrupt {
                path,
                expected: kept.spec_sha256,
                actual,
            });
        }
        Ok(kept)
    }

    /// The kept spec, parsed as strictly as when it was fetched.
    pub fn node_spec(&self, state_dir: &Path) -> Result<NodeSpec, AppliedError> {
        NodeSpec::parse(&self.spec_url, &self.spec).map_err(|e| AppliedError::Parse {
            path: Self::path(state_dir),
            detail: e.to_string(),
        })
    }

    /// Keeps `self` unless the same spec and facts are kept already. Returns whether it
    /// wrote.
    pub fn save_if_changed(&self, state_dir: &Path) -> Result<bool, AppliedError> {
        let path = Self::path(state_dir);
        if let Ok(kept) = Self::load(state_dir)
            && kept.spec_url == self.spec_url
            && kept.spec_sha256 == self.spec_sha256
            && kept.facts == self.facts
        {
            return Ok(false);
        }
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(state_dir)?;
            let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
            let (uid, gid) = fs::current_ids();
            fs::write_atomic(&path, &bytes, 0o600, uid, gid)
        };
        write().map_err(|source| AppliedError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(true)
    }

    /// Removes the kept spec (`reset`): it may hold secrets.
    pub fn remove(state_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(Self::path(state_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn example() -> AppliedSpec {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/worker/nodespec.yaml"
        ))
        .unwrap();
        AppliedSpec {
            spec_url: "s3://b/k".to_owned(),
            spec_sha256: spec::digest(text.as_bytes()),
            saved_at: "2026-01-01T00:00:00.000Z".to_owned(),
            agent_version: crate::VERSION.to_owned(),
            facts: Facts::example(),
            spec: text,
        }
    }

    #[test]
    fn kept_once_private_and_checked_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("var/lib/nodewright");
        let kept = example();
        assert!(kept.save_if_changed(&state_dir).unwrap());
        let path = AppliedSpec::path(&state_dir);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The same spec again (later time): nothing is written.
        let mut again = kept.clone();
        again.saved_at = "2026-02-02T00:00:00.000Z".to_owned();
        assert!(!again.save_if_changed(&state_dir).unwrap());
        let loaded = AppliedSpec::load(&state_dir).unwrap();
        assert_eq!(loaded, kept);
        assert_eq!(
            loaded.node_spec(&state_dir).unwrap().role,
            crate::spec::Role::Worker
        );

        // Damage is detected, named, and repaired by the next save.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("SystemMaxUse=1G", "SystemMaxUse=9G");
        std::fs::write(&path, text).unwrap();
        let err = AppliedSpec::load(&state_dir).unwrap_err().to_string();
        assert!(
            err.contains("damaged") && err.contains("nodewright boot"),
            "{err}"
        );
        assert!(kept.save_if_changed(&state_dir).unwrap());
        assert!(AppliedSpec::load(&state_dir).is_ok());

        AppliedSpec::remove(&state_dir).unwrap();
        let err = AppliedSpec::load(&state_dir).unwrap_err().to_string();
        assert!(err.contains("no applied spec"), "{err}");
    }
}
