//! What the control-plane phase remembers, beside the run record:
//! - `etcd-formats.json`: every volume this node formatted (when, as which device), so
//!   a volume that reads blank after being formatted here is refused, not re-formatted;
//! - `control-plane.json`: the last round (boot or watch): members, names, and what it
//!   is waiting for, for `status` and the watch's health endpoint.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::facts::EtcdMember;
use crate::host::Host;
use crate::host::fs as hostfs;

pub const FORMATS_FILE: &str = "etcd-formats.json";
pub const RECORD_FILE: &str = "control-plane.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FormatRecord {
    pub at: String,
    pub instance: String,
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Formats(BTreeMap<String, FormatRecord>);

impl Formats {
    pub fn load(state_dir: &Path) -> Self {
        std::fs::read(state_dir.join(FORMATS_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    pub fn get(&self, volume_id: &str) -> Option<&FormatRecord> {
        self.0.get(volume_id)
    }

    pub fn add(state_dir: &Path, volume_id: &str, record: FormatRecord) -> std::io::Result<()> {
        let mut formats = Self::load(state_dir);
        formats.0.insert(volume_id.to_owned(), record);
        write_json(state_dir, FORMATS_FILE, &formats)
    }
}

/// The last control-plane round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneRecord {
    /// `boot`, `apply` or `watch`.
    pub command: String,
    pub at: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub etcd_members: BTreeMap<String, EtcdMember>,
    /// What the round did or found, line by line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub report: Vec<String>,
    /// Set while the node waits for something it cannot take (e.g. an etcd volume
    /// attached to another instance), with the reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waiting: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ControlPlaneRecord {
    pub fn load(state_dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(state_dir.join(RECORD_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        write_json(state_dir, RECORD_FILE, self)
    }
}

/// Records, while still waiting, what for: `status` shows it during a long wait.
pub fn note_waiting(host: &Host, etcd_cluster: &str, reason: &str) {
    let state_dir = host.state_dir();
    let mut record = ControlPlaneRecord::load(&state_dir).unwrap_or_default();
    record
        .waiting
        .insert(format!("etcd volume {etcd_cluster}"), reason.to_owned());
    record.ok = false;
    record.at = crate::clock::now();
    if let Err(e) = record.save(&state_dir) {
        tracing::warn!(error = %e, "could not record what the node waits for");
    }
}

fn write_json<T: Serialize>(state_dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let mut bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let (uid, gid) = hostfs::current_ids();
    hostfs::write_atomic(&state_dir.join(name), &bytes, 0o600, uid, gid)
}
