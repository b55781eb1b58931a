//! Extracting a downloaded archive into the cache: complete with its manifest, or absent.

use std::io;
use std::path::PathBuf;
use std::time::Instant;

use super::{Cache, FetchError, Fetcher, Limits, extract};
use crate::model::DesiredAsset;

impl Fetcher {
    /// Extracts a cached archive into the cache (verifying its bytes in the same pass).
    pub(super) async fn extract(&self, asset: &DesiredAsset) -> Result<(), FetchError> {
        let sha = asset.sha256.to_string();
        let cache = self.cache.clone();
        cache
            .ensure_dirs()
            .map_err(Self::local("creating the cache", cache.dir().to_owned()))?;
        let limits = self.settings.extract;
        let name = asset.name.clone();
        let began = Instant::now();
        let result = tokio::task::spawn_blocking(move || extract_into_cache(&cache, &sha, limits))
            .await
            .map_err(|e| FetchError::Asset {
                asset: name.clone(),
                detail: format!("internal error: {e}"),
            })?;
        match result {
            Ok(members) => {
                tracing::info!(asset = %asset.name, members, seconds = format!("{:.2}", began.elapsed().as_secs_f64()), "extracted");
                self.stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extracted += 1;
                Ok(())
            }
            Err(ExtractFailure::Extract(source)) => Err(FetchError::Extract {
                asset: asset.name.clone(),
                source,
            }),
            Err(ExtractFailure::Io(what, path, source)) => {
                Err(FetchError::Local { what, path, source })
            }
        }
    }
}

enum ExtractFailure {
    Extract(extract::ExtractError),
    Io(&'static str, PathBuf, io::Error),
}

/// Extracts into a temp directory, writes the manifest, then renames the whole into
/// place: an extraction is either complete with its manifest or absent.
fn extract_into_cache(cache: &Cache, sha: &str, limits: Limits) -> Result<usize, ExtractFailure> {
    let final_dir = cache.extracted(sha);
    let temp = cache
        .extracted(sha)
        .with_file_name(format!(".{sha}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&temp);
    let result = (|| {
        std::fs::create_dir(&temp).map_err(|e| ExtractFailure::Io("creating", temp.clone(), e))?;
        let manifest = extract::extract_tar_gz(&cache.blob(sha), sha, &temp.join("tree"), limits)
            .map_err(|e| match e {
            extract::ExtractError::Write { path, source } => {
                ExtractFailure::Io("writing", path, source)
            }
            other => ExtractFailure::Extract(other),
        })?;
        let members = manifest.members.len();
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| {
            ExtractFailure::Io("writing", temp.join("manifest.json"), io::Error::other(e))
        })?;
        let manifest_path = temp.join("manifest.json");
        let (uid, gid) = crate::host::fs::current_ids();
        crate::host::fs::write_atomic(&manifest_path, &bytes, 0o644, uid, gid)
            .map_err(|e| ExtractFailure::Io("writing", manifest_path.clone(), e))?;
        let _ = std::fs::remove_dir_all(&final_dir);
        std::fs::rename(&temp, &final_dir)
            .map_err(|e| ExtractFailure::Io("storing", final_dir.clone(), e))?;
        if let Some(parent) = final_dir.parent() {
            let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(members)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    result
}
