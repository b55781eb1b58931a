//! Assets: verified downloads into a content-addressed cache, safe extraction, and
//! installation out of the cache.
//!
//! A fetch tries every URL in order (mirrors first), streams into a part file while
//! hashing, resumes a cut transfer with `Range`, and after a round in which every URL
//! failed waits (jittered backoff) and tries again, until the retry deadline. Bytes with
//! the wrong sha256 are thrown away and the next URL is tried. The error after the last
//! round lists every URL with its own failure.
//!
//! A part outlives the run that wrote it: a run killed mid-download (or out of time, or
//! failed on every URL) leaves it, and the next run that needs the asset takes it over
//! and downloads only the rest (see `download`). An archive is downloaded and extracted
//! in two steps of the plan, so that a refused archive is reported as a failed
//! extraction, not a failed download.

pub mod bake;
pub mod cache;
pub mod download;
pub mod extract;
pub mod install;
pub mod progress;

/// File hashing lives with the host (it reads files); assets use it for every byte.
pub use crate::host::hash;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use tokio::sync::{OnceCell, Semaphore};

pub use cache::{Cache, ExtractManifest, MemberRecord};
use download::{AttemptError, Claim, Part, Source, TransferLimits};
pub use extract::Limits;
use progress::Progress;

use crate::cloud::NetworkSettings;
use crate::host::Host;
use crate::model::DesiredAsset;
use crate::retry::RetryPolicy;
use crate::spec::DownloadSettings;

/// How downloads behave; from the spec's `downloads` settings.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub idle_timeout: Duration,
    pub max_transfer: Duration,
    /// Rounds over the URLs are retried until this much time has passed.
    pub retry_for: Duration,
    pub parallel: usize,
    pub max_bytes: u64,
    pub extract: Limits,
    /// Resumes of one URL in a row before moving on to the next.
    pub max_resumes: u32,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self::from(&DownloadSettings::default())
    }
}

impl From<&DownloadSettings> for FetchSettings {
    fn from(spec: &DownloadSettings) -> Self {
        Self {
            idle_timeout: Duration::from_secs(spec.idle_timeout_seconds.into()),
            max_transfer: Duration::from_secs(spec.max_seconds.into()),
            retry_for: Duration::from_secs(spec.retry_seconds.into()),
            parallel: spec.parallel.max(1).into(),
            max_bytes: 4 << 30,
            extract: Limits::default(),
            max_resumes: 10,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "downloading {asset} (sha256 {}…): every URL failed ({rounds} rounds in {:.1}s):\n{}",
        &sha256[..12],
        elapsed.as_secs_f64(),
        list(failures)
    )]
    AllFailed {
        asset: String,
        sha256: String,
        /// Each URL, in order, with its last failure.
        failures: Vec<(String, String)>,
        rounds: u32,
        elapsed: Duration,
    },
    #[error("{what} {}: {}", path.display(), describe_io(source))]
    Local {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("extracting {asset}: {source}; nothing was installed from it")]
    Extract {
        asset: String,
        source: extract::ExtractError,
    },
    #[error("asset {asset}: {detail}")]
    Asset { asset: String, detail: String },
}

fn list(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(url, failure)| format!("    - {url}: {failure}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An I/O error with what it means for the cache spelled out.
pub fn describe_io(error: &io::Error) -> String {
    let hint = match error.raw_os_error().map(nix::errno::Errno::from_raw) {
        Some(nix::errno::Errno::ENOSPC) => "; the disk is full",
        Some(nix::errno::Errno::EDQUOT) => "; the disk quota is used up",
        Some(nix::errno::Errno::EROFS) => "; the file system is read-only",
        Some(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => {
            "; nodewright needs to run as root"
        }
        _ => "",
    };
    format!("{error}{hint}")
}

/// What is downloaded this run, for the summary and the tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct FetchStats {
    /// Assets downloaded into the cache.
    pub downloads: usize,
    /// Bytes received over the network, every attempt and URL counted: bytes thrown
    /// away and received again count each time, resumed bytes do not.
    pub bytes: u64,
    /// Bytes taken over from parts that earlier runs left, not transferred again.
    pub resumed_bytes: u64,
    /// Bytes thrown away to start a download over (a server that ignored the range,
    /// a changed file, wrong bytes), received by this run or left by an earlier one.
    pub discarded_bytes: u64,
    /// Archives extracted into the cache.
    pub extracted: usize,
}

/// Downloads assets into the cache and hands out their verified paths.
pub struct Fetcher {
    cache: Cache,
    settings: FetchSettings,
    http: reqwest::Client,
    network: NetworkSettings,
    region: Option<String>,
    aws: OnceCell<SdkConfig>,
    permits: Semaphore,
    /// One fetch per digest at a time in this process.
    locks: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    progress: Progress,
    stats: std::sync::Mutex<FetchStats>,
    /// Digests repaired this run.
    repaired: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Fetcher {
    pub fn new(
        host: &Host,
        settings: FetchSettings,
        network: NetworkSettings,
        region: Option<String>,
    ) -> Result<Self, crate::cloud::http::NetworkError> {
        let http = network
            .reqwest_builder()?
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("nodewright/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| crate::cloud::http::NetworkError::CaBundle(e.to_string()))?;
        Ok(Self {
            cache: Cache::new(host),
            permits: Semaphore::new(settings.parallel.max(1)),
            settings,
            http,
            network,
            region,
            aws: OnceCell::new(),
            locks: Default::default(),
            progress: Progress::detect(),
            stats: Default::default(),
            repaired: Default::default(),
        })
    }

    /// A fetcher with the default settings and no proxy (for `apply` without context).
    pub fn plain(host: &Host) -> Self {
        Self::new(
            host,
            FetchSettings::default(),
            NetworkSettings::default(),
            None,
        )
        .expect("the default network settings are valid")
    }

    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn stats(&self) -> FetchStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_for(&self, sha256: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(sha256.to_owned()).or_default().clone()
    }

    /// Makes the asset usable from the cache: downloaded, and extracted if an archive.
    /// A cached file is not re-read here; what is installed from it is verified.
    pub async fn ensure(&self, asset: &DesiredAsset) -> Result<(), FetchError> {
        let lock = self.lock_for(asset.sha256.as_str());
        let _guard = lock.lock().await;
        self.ensure_locked(asset).await
    }

    /// Puts the asset's bytes in the cache (the plan's `download` step). For an
    /// archive that is the archive only: extracting it is the `extract` step
    /// ([`Self::ensure`]), so that a refused archive is reported as what failed.
    pub async fn ensure_downloaded(&self, asset: &DesiredAsset) -> Result<(), FetchError> {
        let lock = self.lock_for(asset.sha256.as_str());
        let _guard = lock.lock().await;
        let sha = asset.sha256.as_str();
        let extracted = !asset.archive.is_plain() && self.cache.manifest(sha).is_some();
        if extracted || self.cache.has_blob(sha) {
            return Ok(());
        }
        self.download(asset).await
    }

    /// Like [`Self::ensure`], but a cached file is hashed first and discarded if wrong
    /// (image builds, and after an install found a bad cache entry).
    pub async fn ensure_verified(&self, asset: &DesiredAsset) -> Result<(), FetchError> {
        let lock = self.lock_for(asset.sha256.as_str());
        let _guard = lock.lock().await;
        let sha = asset.sha256.as_str();
        let blob = self.cache.blob(sha);
        if blob.is_file() {
            let path = blob.clone();
            let actual = tokio::task::spawn_blocking(move || hash::file(&path))
                .await
                .map_err(|e| io::Error::other(e.to_string()))
                .and_then(|r| r);
            if actual.as_deref().ok() != Some(sha) {
                tracing::warn!(asset = %asset.name, path = %blob.display(), "cached copy is damaged; discarding it");
                self.cache.discard(sha);
            }
        }
        self.ensure_locked(asset).await
    }

    /// After an install found the cached bytes damaged or missing: a plain asset is
    /// downloaded again; an archive is extracted again from its cached copy (whose hash
    /// the extraction checks, downloading it again if that is damaged too).
    ///
    /// Once per asset and run: installs from the same archive that find the same damage
    /// at once must not tear down each other's fresh extraction.
    pub async fn repair(&self, asset: &DesiredAsset) -> Result<(), FetchError> {
        let lock = self.lock_for(asset.sha256.as_str());
        let _guard = lock.lock().await;
        let sha = asset.sha256.as_str();
        let first = self
            .repaired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sha.to_owned());
        if !first {
            return self.ensure_locked(asset).await;
        }
        if asset.archive.is_plain() {
            self.cache.discard(sha);
        } else {
            let _ = std::fs::remove_dir_all(self.cache.extracted(sha));
        }
        self.ensure_locked(asset).await
    }

    async fn ensure_locked(&self, asset: &DesiredAsset) -> Result<(), FetchError> {
        let sha = asset.sha256.as_str();
        if asset.archive.is_plain() {
            if !self.cache.has_blob(sha) {
                self.download(asset).await?;
            }
            return Ok(());
        }
        if self.cache.manifest(sha).is_some() {
            return Ok(());
        }
        if self.cache.has_blob(sha) {
            match self.extract(asset).await {
                Err(FetchError::Extract {
                    source: extract::ExtractError::Digest { .. },
                    ..
                }) => {
                    tracing::warn!(asset = %asset.name, "cached archive is damaged; downloading it again");
                    self.cache.discard(sha);
                }
                other => return other,
            }
        }
        self.download(asset).await?;
        self.extract(asset).await
    }

    /// Where the verified bytes of `member` (or of the asset itself) are, with the
    /// digest they must have.
    pub fn source_of(
        &self,
        asset: &DesiredAsset,
        member: Option<&str>,
    ) -> Result<(PathBuf, String), FetchError> {
        let sha = asset.sha256.as_str();
        match member {
            None => Ok((self.cache.blob(sha), sha.to_owned())),
            Some(member) => {
                let manifest = self.cache.manifest(sha).ok_or_else(|| FetchError::Asset {
                    asset: asset.name.clone(),
                    detail: "the archive is not extracted in the cache".to_owned(),
                })?;
                let (name, digest) =
                    manifest
                        .resolve(member)
                        .map_err(|detail| FetchError::Asset {
                            asset: asset.name.clone(),
                            detail,
                        })?;
                Ok((self.cache.tree(sha).join(name), digest.to_owned()))
            }
        }
    }

    fn local(what: &'static str, path: PathBuf) -> impl FnOnce(io::Error) -> FetchError {
        move |source| FetchError::Local { what, path, source }
    }

    async fn aws(&self) -> Option<&SdkConfig> {
        let region = self
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_owned());
        self.aws
            .get_or_try_init(|| crate::cloud::aws::sdk_config(&region, &self.network))
            .await
            .ok()
    }

    /// Downloads the asset into the cache, trying every URL in rounds. A part a dead
    /// run left is resumed; a part this run cannot finish is kept for the next run if
    /// it holds bytes (the network failed, the deadline came), removed if the failure
    /// is ours (a full disk must get its space back).
    async fn download(&self, asset: &DesiredAsset) -> Result<(), FetchError> {
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

    /// Extracts a cached archive into the cache (verifying its bytes in the same pass).
    async fn extract(&self, asset: &DesiredAsset) -> Result<(), FetchError> {
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
