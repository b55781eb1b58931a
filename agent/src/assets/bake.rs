//! The bake manifest: what `nodewright prebake` put into a machine image (files and
//! assets, with their sha256), at `/var/lib/nodewright/bake.json`. At boot the engine
//! checks the baked files against it (`engine::baked`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::host::fs as hostfs;

pub const BAKE_FILE: &str = "bake.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BakeManifest {
    pub baked_at: String,
    pub agent_version: String,
    pub spec_url: String,
    pub spec_sha256: String,
    /// Every asset the spec names, now in the image's cache.
    pub assets: Vec<BakedAsset>,
    /// Every file written, with its digest.
    pub files: Vec<BakedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BakedAsset {
    pub name: String,
    pub sha256: String,
    pub archive: String,
    /// Where it sits in the cache.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BakedFile {
    pub path: String,
    pub sha256: String,
    pub mode: u32,
    /// For a file from an asset: `sha256:<asset>` or `sha256:<archive>#<member>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl BakeManifest {
    pub fn path(host: &Host) -> PathBuf {
        host.state_dir().join(BAKE_FILE)
    }

    pub fn load(host: &Host) -> Option<Self> {
        let bytes = std::fs::read(Self::path(host)).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(manifest) => Some(manifest),
            Err(error) => {
                tracing::warn!(%error, "the bake manifest is unreadable; ignoring it");
                None
            }
        }
    }

    pub fn save(&self, host: &Host) -> std::io::Result<()> {
        let path = Self::path(host);
        std::fs::create_dir_all(host.state_dir())?;
        let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        let (uid, gid) = hostfs::current_ids();
        hostfs::write_atomic(&path, &bytes, 0o644, uid, gid)
    }
}
