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
mod error;
pub mod extract;
pub mod install;
mod mirrors;
pub mod progress;
mod unpack;

/// File hashing lives with the host (it reads files); assets use it for every byte.
pub use crate::host::hash;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use tokio::sync::{OnceCell, Semaphore};

pub use cache::{Cache, ExtractManifest, MemberRecord};
pub use error::{FetchError, describe_io};
pub use extract::Limits;
use progress::Progress;

use crate::cloud::NetworkSettings;
use crate::host::Host;
use crate::model::DesiredAsset;
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
}
