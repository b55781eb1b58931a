//! What nodewright remembers between runs, in `/var/lib/nodewright/state.json`.
//!
//! - the last run: when, how it ended, the spec's digest, and its timeline;
//! - every file it manages with its digest and the stat it had when hashed, so a no-op
//!   run need not re-read unchanged files (`verify` always re-reads);
//! - for each trigger (a service, the sysctls, the modules, systemd's unit set), the
//!   digests of the inputs it last acted on: a service restarts when these differ, even
//!   if the run that wrote the new files was killed before it could restart it;
//! - the directories nodewright created (so `reset` can remove them when empty), and the
//!   protected paths (etcd data) that `repair`, `reset` and removals never touch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::keys::{AppliedKey, AssetSource, RecordKind};
use super::timeline::TimelineEntry;
use crate::host::fs::{self, FileStat};

pub const STATE_VERSION: u32 = 1;
pub const STATE_FILE: &str = "state.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunRecord>,
    /// Managed paths, keyed by node path.
    #[serde(default)]
    pub files: BTreeMap<String, FileRecord>,
    /// Trigger key (`service:kubelet.service`, `sysctls`, `modules`, `daemon-reload`)
    /// to the inputs it last acted on.
    #[serde(default)]
    pub applied: BTreeMap<AppliedKey, AppliedRecord>,
    /// The assets the last spec named (name to sha256): `cache prune` keeps these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub assets: BTreeMap<String, String>,
    /// Directories nodewright created (explicit or as parents), by node path.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub created_directories: BTreeSet<String>,
    /// Paths holding data nodewright must never delete (etcd data), with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub protected: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRecord {
    /// `file`, `directory`, `symlink` or `block`.
    pub kind: RecordKind,
    /// Content digest for files; the target for symlinks; empty for directories.
    pub digest: String,
    pub mode: u32,
    /// Owner and group ids it was given (absent in records older than these fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
    /// The stat the file had when `digest` was computed (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<StatRecord>,
    /// For a file installed from an asset: `sha256:<asset>`, or
    /// `sha256:<archive>#<member>` for a member of an archive.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_source"
    )]
    pub source: Option<AssetSource>,
}

/// A source that does not parse is dropped, not the whole state: the file it belongs
/// to is then installed again, as one whose source is unknown.
fn lenient_source<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<AssetSource>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    Ok(text.as_deref().and_then(AssetSource::parse))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatRecord {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub inode: u64,
}

impl FileRecord {
    /// A regular file with the digest of its bytes, the owner and mode it is to have,
    /// and the stat the digest was taken at; not secret, not from an asset.
    pub fn file(digest: String, perms: super::plan::Perms, stat: &FileStat) -> Self {
        Self {
            kind: RecordKind::File,
            digest,
            mode: perms.mode,
            uid: Some(perms.uid),
            gid: Some(perms.gid),
            secret: false,
            stat: Some(StatRecord::of(stat)),
            source: None,
        }
    }
}

impl StatRecord {
    pub fn of(stat: &FileStat) -> Self {
        Self {
            size: stat.size,
            mtime_ns: stat.mtime_ns,
            ctime_ns: stat.ctime_ns,
            inode: stat.inode,
        }
    }

    /// Whether the file can be assumed unchanged since it was hashed. Any write or
    /// chmod moves ctime, which no one can set back by hand.
    pub fn matches(&self, stat: &FileStat) -> bool {
        *self == Self::of(stat)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedRecord {
    /// Input path to digest.
    pub inputs: BTreeMap<String, String>,
    pub at: String,
    /// `done`, or `skipped: <reason>`.
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub command: String,
    pub started_at: String,
    pub finished_at: String,
    pub result: RunResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_sha256: Option<String>,
    pub agent_version: String,
    /// How many changes the run planned.
    pub changes: usize,
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunResult {
    Converged,
    Failed,
    /// `reset` took off what nodewright had installed.
    Reset,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("writing state {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading state {path}: {detail}")]
    Read { path: PathBuf, detail: String },
}

impl State {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    /// Reads the state; a missing file is a fresh node.
    pub fn load(state_dir: &Path) -> Result<Self, StateError> {
        let path = Self::path(state_dir);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(StateError::Read {
                    path,
                    detail: e.to_string(),
                });
            }
        };
        serde_json::from_slice(&text).map_err(|e| StateError::Read {
            path,
            detail: e.to_string(),
        })
    }

    /// Like `load`, but a corrupt file is set aside and treated as a fresh node: the
    /// state is a record and a cache, and the safe reading of "unknown" is "redo".
    pub fn load_or_reset(state_dir: &Path) -> Self {
        match Self::load(state_dir) {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(%error, "state unreadable; starting from a fresh record");
                let path = Self::path(state_dir);
                let _ = std::fs::rename(&path, path.with_extension("json.corrupt"));
                Self::default()
            }
        }
    }

    pub fn save(&mut self, state_dir: &Path) -> Result<(), StateError> {
        self.version = STATE_VERSION;
        let path = Self::path(state_dir);
        let write = |p: &Path| -> std::io::Result<()> {
            std::fs::create_dir_all(state_dir)?;
            let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
            let (uid, gid) = fs::current_ids();
            fs::write_atomic(p, &bytes, 0o600, uid, gid)
        };
        write(&path).map_err(|source| StateError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AbsPath, UnitName};

    /// A worker's state.json as the agent before typed keys wrote it, with a secret
    /// file, two files from assets, the assets and a protected path added by hand.
    const WRITTEN_BEFORE: &str = include_str!("../../tests/fixtures/state/state-v1.json");

    #[test]
    fn a_state_written_by_an_earlier_agent_is_read_typed_and_written_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(State::path(dir.path()), WRITTEN_BEFORE).unwrap();
        let mut state = State::load(dir.path()).unwrap();

        let unit = |name: &str| UnitName::try_from(name).unwrap();
        for key in [
            AppliedKey::Service(unit("kubelet.service")),
            AppliedKey::Enable(unit("node-problem-check.timer")),
            AppliedKey::StaticPod(
                AbsPath::try_from("/etc/kubernetes/manifests/kube-proxy.yaml").unwrap(),
            ),
            AppliedKey::DaemonReload,
            AppliedKey::Modules,
            AppliedKey::Sysctls,
            AppliedKey::Packages,
            AppliedKey::SwapOff,
        ] {
            assert!(state.applied.contains_key(&key), "{key}");
        }
        assert!(
            !state
                .applied
                .keys()
                .any(|k| matches!(k, AppliedKey::Other(_)))
        );
        let kind = |path: &str| state.files[path].kind.clone();
        assert_eq!(kind("/etc/hosts#api"), RecordKind::Block);
        assert_eq!(kind("/etc/cni/net.d"), RecordKind::Directory);
        assert_eq!(kind("/etc/systemd/system/swap.target"), RecordKind::Symlink);
        assert_eq!(kind("/etc/containerd/config.toml"), RecordKind::File);
        let source = state.files["/var/lib/kube-proxy/kubeconfig"]
            .source
            .clone()
            .unwrap();
        assert_eq!(
            source.member.as_deref(),
            Some("kubernetes/node/bin/kube-proxy")
        );
        assert!(state.files["/var/lib/kubelet/credential-provider.yaml"].secret);

        state.save(dir.path()).unwrap();
        let written = std::fs::read_to_string(State::path(dir.path())).unwrap();
        assert!(
            written == WRITTEN_BEFORE,
            "state.json is written differently"
        );
    }

    #[test]
    fn a_source_that_does_not_parse_drops_only_itself() {
        let text = WRITTEN_BEFORE.replace("\"source\": \"sha256:aaaa", "\"source\": \"md5:aaaa");
        let state: State = serde_json::from_str(&text).unwrap();
        assert_eq!(state.files["/var/lib/kubelet/kubeconfig"].source, None);
        assert!(
            state.files["/var/lib/kube-proxy/kubeconfig"]
                .source
                .is_some()
        );
    }
}
