//! Downloading one asset through its URLs: rounds over the mirrors with backoff, each
//! URL resumed after cuts while it makes progress, the bytes checked against the sha256.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::download::{self, AttemptError, Claim, Part, Source, TransferLimits};
use super::{Cache, FetchError, Fetcher, progress};
use crate::model::DesiredAsset;
use crate::retry::RetryPolicy;

impl Fetcher {
    /// Downloads the asset into the cache, trying every URL in rounds. A part a dead
    /// run left is resumed; a part this run cannot finish is kept for the next run if
    /// it holds bytes (the network failed, the deadline came), removed if the failure
    /// is ours (a full disk must get its space back).
    pub(super) async fn download(&self, asset: &DesiredAsset) -> Result<(), FetchError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| FetchError::Asset {
                asset: asset.name.clone(),
                detail: "the download pool is closed".to_owned(),
            })?;
        self.cache.ensure_dirs().map_err(Self::local(
            "creating the cache",
            self.cache.dir().to_owned(),
        ))?;
        self.cache.remove_leftovers();
        let Some(mut part) = self.claim_part(asset).await? else {
            // Another process finished it while we waited.
            return Ok(());
        };
        let began = Instant::now();
        let mut transfer = self.progress.start(&asset.name, part.len());
        if !part.is_empty() {
            tracing::info!(
                asset = %asset.name,
                bytes = part.len(),
                "taking over the part an earlier run left ({:.1} MiB); the rest is downloaded and the whole is checked against its sha256",
                progress::mib(part.len())
            );
        }
        let result = self.rounds(asset, &mut part, &mut transfer).await;
        let counts = part.counts();
        {
            let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            stats.bytes += counts.transferred;
            stats.discarded_bytes += counts.discarded;
            if result.is_ok() {
                stats.downloads += 1;
                stats.resumed_bytes += counts.resumed;
            }
        }
        match result {
            Ok(()) => {
                let part_path = part.path().to_owned();
                self.cache
                    .commit(&part_path, asset.sha256.as_str())
                    .map_err(Self::local("storing the download", part_path.clone()))?;
                let size = part.len();
                part.committed().await;
                transfer.finish("downloaded", size, counts, began.elapsed());
                Ok(())
            }
            Err(e) => {
                let ours = matches!(e, FetchError::Local { .. });
                transfer.abandon();
                part.abandon(!ours).await;
                Err(e)
            }
        }
    }

    /// Claims the asset's part file; while another live process holds it (it is
    /// downloading the same asset), waits for it, up to the retry deadline. `None` if
    /// the asset is in the cache by then.
    async fn claim_part(&self, asset: &DesiredAsset) -> Result<Option<Part>, FetchError> {
        let sha = asset.sha256.as_str();
        let path = self.cache.part(sha);
        let began = Instant::now();
        let mut said = false;
        loop {
            let claim = Part::claim(path.clone(), self.cache.part_origin(sha))
                .await
                .map_err(Self::local("opening the download file", path.clone()))?;
            match claim {
                Claim::Part(part) if self.cache.has_blob(sha) => {
                    part.abandon(false).await;
                    return Ok(None);
                }
                Claim::Part(part) => return Ok(Some(*part)),
                Claim::Busy if began.elapsed() >= self.settings.retry_for => {
                    return Err(FetchError::Asset {
                        asset: asset.name.clone(),
                        detail: format!(
                            "another process has been downloading it into {} for {}s",
                            path.display(),
                            began.elapsed().as_secs()
                        ),
                    });
                }
                Claim::Busy => {
                    if !said {
                        said = true;
                        tracing::info!(asset = %asset.name, path = %path.display(), "another process is downloading this asset; waiting for it");
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    async fn rounds(
        &self,
        asset: &DesiredAsset,
        part: &mut Part,
        transfer: &mut progress::Transfer,
    ) -> Result<(), FetchError> {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(500),
            ..RetryPolicy::with_deadline(self.settings.retry_for)
        };
        let started = Instant::now();
        let sources: Vec<(String, Result<Source, String>)> = asset
            .urls
            .iter()
            .map(|url| (url.to_string(), Source::of(url)))
            .collect();
        let mut failures: Vec<Option<String>> = vec![None; sources.len()];
        let mut dead = vec![false; sources.len()];
        let mut round = 0u32;
        loop {
            round += 1;
            for (index, (url, source)) in sources.iter().enumerate() {
                if dead[index] {
                    continue;
                }
                let source = match source {
                    Ok(source) => source,
                    Err(e) => {
                        failures[index] = Some(e.clone());
                        dead[index] = true;
                        continue;
                    }
                };
                match self.try_url(asset, url, source, part, transfer).await {
                    Ok(()) => return Ok(()),
                    Err(UrlFailure::Local(e)) => return Err(e),
                    Err(UrlFailure::Dead(why)) => {
                        tracing::warn!(asset = %asset.name, url, error = %why, "this URL cannot serve the asset");
                        failures[index] = Some(why);
                        dead[index] = true;
                    }
                    Err(UrlFailure::Retry(why)) => {
                        tracing::warn!(asset = %asset.name, url, error = %why, "download failed; trying the next URL");
                        failures[index] = Some(why);
                    }
                }
            }
            let all_failed = || FetchError::AllFailed {
                asset: asset.name.clone(),
                sha256: asset.sha256.to_string(),
                failures: sources
                    .iter()
                    .zip(&failures)
                    .map(|((url, _), f)| (url.clone(), f.clone().unwrap_or_default()))
                    .collect(),
                rounds: round,
                elapsed: started.elapsed(),
            };
            if dead.iter().all(|d| *d) {
                return Err(all_failed());
            }
            let delay = policy.delay(round);
            if started.elapsed() + delay >= policy.deadline {
                return Err(all_failed());
            }
            tracing::warn!(
                asset = %asset.name,
                round,
                retry_in_ms = delay.as_millis() as u64,
                "every URL failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One URL: transfer, resuming after cuts as long as they make progress.
    async fn try_url(
        &self,
        asset: &DesiredAsset,
        url: &str,
        source: &Source,
        part: &mut Part,
        transfer: &mut progress::Transfer,
    ) -> Result<(), UrlFailure> {
        let aws = match source {
            Source::S3 { .. } => self.aws().await,
            _ => None,
        };
        let local = |e: io::Error| {
            UrlFailure::Local(FetchError::Local {
                what: "writing the download",
                path: part_path_of(&self.cache, asset),
                source: e,
            })
        };
        let mut resumes = 0;
        loop {
            let began_at = part.len();
            transfer.attempt(url, began_at);
            let limits = TransferLimits {
                idle: self.settings.idle_timeout,
                max_bytes: self.settings.max_bytes,
                deadline: tokio::time::Instant::now() + self.settings.max_transfer,
            };
            let outcome =
                download::transfer(source, url, &self.http, aws, part, limits, transfer).await;
            let error = match outcome {
                Ok(()) => {
                    let actual = part.finish().await.map_err(local)?;
                    if actual == asset.sha256.as_str() {
                        return Ok(());
                    }
                    part.reset().await.map_err(local)?;
                    let why = format!("sha256 mismatch: got {actual}; discarded the bytes");
                    if began_at > 0 && resumes < self.settings.max_resumes {
                        // The first part came from elsewhere (an earlier attempt, an
                        // earlier run, another URL): give this URL a clean try.
                        tracing::warn!(asset = %asset.name, url, error = %why, "the resumed download is not the asset; downloading it whole");
                        resumes += 1;
                        continue;
                    }
                    return Err(UrlFailure::Dead(why));
                }
                Err(error) => error,
            };
            match error {
                AttemptError::Overtime => {
                    return Err(UrlFailure::Retry(format!(
                        "took longer than the {}s allowed for one transfer",
                        self.settings.max_transfer.as_secs()
                    )));
                }
                AttemptError::Local(e) => return Err(local(e)),
                AttemptError::Permanent(why) => return Err(UrlFailure::Dead(why)),
                AttemptError::Transient(why) => return Err(UrlFailure::Retry(why)),
                AttemptError::Cut(why) => {
                    let progressed = part.len() > began_at || (began_at > 0 && part.is_empty());
                    if progressed && resumes < self.settings.max_resumes {
                        resumes += 1;
                        tracing::warn!(asset = %asset.name, url, error = %why, offset = part.len(), "transfer cut; resuming");
                        continue;
                    }
                    return Err(UrlFailure::Retry(why));
                }
            }
        }
    }
}

enum UrlFailure {
    /// Try this URL again next round.
    Retry(String),
    /// Never again this fetch.
    Dead(String),
    /// Stop the whole fetch.
    Local(FetchError),
}

fn part_path_of(cache: &Cache, asset: &DesiredAsset) -> PathBuf {
    cache.part(asset.sha256.as_str())
}
