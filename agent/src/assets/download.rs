//! One transfer from one URL into a part file of the cache, hashed as it streams.
//!
//! The part file and its running hash outlive a transfer, and a run: after a cut, the
//! next transfer asks for the rest with `Range: bytes=N-` and carries on hashing; a
//! part left by a run that died (killed, out of time, rebooted) is taken over by the
//! next run, which hashes the bytes on disk first and then asks for the rest. The
//! sha256 checked at the end guards every byte, wherever it came from.
//!
//! A part is `tmp/<hex>.part`; its writer holds an exclusive `flock` on it for as long
//! as it writes, so a part whose lock is free was left by a process that is gone (the
//! kernel drops the lock with the process, whatever killed it). Beside it,
//! `tmp/<hex>.part.json` says where its bytes came from (URL and validators), so a
//! resume from the same URL sends `If-Range` and gets the whole file if it changed.
//!
//! When a resume cannot go on, the part starts over from the first byte: a server that
//! ignores the range (200), a range it cannot satisfy (416: the part is longer than
//! the file), a changed file (`If-Range` answered with 200, S3's `If-Match` with 412).

use std::fs::File;
use std::io::{self, Read, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use bytes::Bytes;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

use super::hash::Hasher;
use super::progress::Transfer;
use crate::spec::AssetUrl;

/// Where one URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Http(reqwest::Url),
    S3 { bucket: String, key: String },
    File(PathBuf),
}

impl Source {
    pub fn of(url: &AssetUrl) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url.as_str()).map_err(|e| e.to_string())?;
        match parsed.scheme() {
            "http" | "https" => Ok(Self::Http(parsed)),
            "s3" => {
                let bucket = parsed.host_str().unwrap_or_default().to_owned();
                let key = parsed.path().trim_start_matches('/').to_owned();
                Ok(Self::S3 { bucket, key })
            }
            "file" => Ok(Self::File(PathBuf::from(parsed.path()))),
            other => Err(format!("scheme {other} is not supported")),
        }
    }
}

/// Why a transfer did not finish.
#[derive(Debug)]
pub enum AttemptError {
    /// Worth another try later: 5xx, throttling, no connection.
    Transient(String),
    /// This URL will not serve the asset: 404, 403, too large, not a regular file.
    Permanent(String),
    /// Stopped part-way (a stall, a cut body), or the part had to start over: go on
    /// from where the part is now.
    Cut(String),
    /// Our side failed (disk full, read-only cache): no URL can help.
    Local(io::Error),
    /// The time allowed for one transfer ran out (checked between chunks, never in
    /// the middle of writing one: the part stays consistent).
    Overtime,
}

#[derive(Debug, Clone, Copy)]
pub struct TransferLimits {
    /// No bytes for this long cuts the transfer.
    pub idle: Duration,
    /// The largest asset accepted.
    pub max_bytes: u64,
    /// When this transfer must have finished.
    pub deadline: tokio::time::Instant,
}

impl TransferLimits {
    /// How long to wait for the next answer or bytes: the idle limit, or less if the
    /// deadline is nearer.
    fn wait(&self) -> Duration {
        self.idle.min(
            self.deadline
                .saturating_duration_since(tokio::time::Instant::now()),
        )
    }

    /// The error for a wait that ran out: overtime, or `idle` (no answer, a stall).
    fn waited_too_long(&self, idle: AttemptError) -> AttemptError {
        if tokio::time::Instant::now() >= self.deadline {
            AttemptError::Overtime
        } else {
            idle
        }
    }
}

/// Where the bytes of a part came from: the URL of the last response taken into it,
/// with that response's validators and the size it gave for the whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

impl Origin {
    /// The `If-Range` value for a resume from `url`: a strong ETag, else the
    /// Last-Modified date. None for another URL: its validators say nothing about
    /// these bytes (there the final sha256 is the only guard).
    pub fn if_range_for(&self, url: &str) -> Option<&str> {
        if self.url != url {
            return None;
        }
        match &self.etag {
            Some(etag) if !etag.starts_with("W/") => Some(etag),
            _ => self.last_modified.as_deref(),
        }
    }

    /// The ETag to require (S3 `If-Match`) when resuming from `url`.
    fn etag_for(&self, url: &str) -> Option<&str> {
        (self.url == url).then_some(self.etag.as_deref()).flatten()
    }
}

/// What one asset's download moved, in this run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Bytes received over the network by this run, every attempt and URL counted,
    /// including bytes later thrown away and received again.
    pub transferred: u64,
    /// Bytes a part left by an earlier run held that this run kept (not transferred
    /// again). Zero if that part had to start over.
    pub resumed: u64,
    /// Bytes thrown away to start over from the first byte (a server that ignored the
    /// range, a changed file, wrong bytes), whether this run received them or an
    /// earlier run left them.
    pub discarded: u64,
}

/// A part file claimed by this process, or busy.
pub enum Claim {
    Part(Box<Part>),
    /// Another live process holds the part's lock: it is downloading this asset.
    Busy,
}

/// A download in progress: the locked part file, its bytes so far with their running
/// hash, and where they came from.
pub struct Part {
    path: PathBuf,
    origin_path: PathBuf,
    file: BufWriter<tokio::fs::File>,
    /// Held for the part's life; the kernel releases it if the process dies.
    _lock: Flock<File>,
    hasher: Hasher,
    len: u64,
    origin: Option<Origin>,
    counts: Counts,
}

impl Part {
    /// Claims the part at `path` (`origin_path` beside it): creates it, or takes over
    /// the one a dead run left, hashing its bytes so that the download goes on from
    /// its end. `Busy` if a live process holds it.
    pub async fn claim(path: PathBuf, origin_path: PathBuf) -> io::Result<Claim> {
        let opened = {
            let path = path.clone();
            let origin_path = origin_path.clone();
            tokio::task::spawn_blocking(move || open_locked(&path, &origin_path))
                .await
                .map_err(|e| io::Error::other(e.to_string()))??
        };
        let Some(opened) = opened else {
            return Ok(Claim::Busy);
        };
        Ok(Claim::Part(Box::new(Self {
            path,
            origin_path,
            file: BufWriter::with_capacity(
                super::hash::BUFFER,
                tokio::fs::File::from_std(opened.file),
            ),
            _lock: opened.lock,
            hasher: opened.hasher,
            len: opened.len,
            origin: opened.origin,
            counts: Counts {
                resumed: opened.len,
                ..Counts::default()
            },
        })))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.counts.transferred += bytes.len() as u64;
        self.file.write_all(bytes).await?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Records where the bytes that follow come from (before they are written, so a
    /// run killed in between leaves no part that claims the wrong origin for them).
    async fn set_origin(&mut self, origin: Origin) -> io::Result<()> {
        let json = serde_json::to_vec(&origin).map_err(io::Error::other)?;
        tokio::fs::write(&self.origin_path, json).await?;
        self.origin = Some(origin);
        Ok(())
    }

    /// Throws away what the part holds, to start from the first byte again.
    pub async fn reset(&mut self) -> io::Result<()> {
        self.file.flush().await?;
        self.file.get_mut().set_len(0).await?;
        self.file.get_mut().seek(SeekFrom::Start(0)).await?;
        self.hasher = Hasher::new();
        self.counts.discarded += self.len;
        self.counts.resumed = 0;
        self.len = 0;
        self.origin = None;
        remove_if_there(&self.origin_path).await
    }

    /// The digest of the bytes so far, after writing them all out and syncing.
    pub async fn finish(&mut self) -> io::Result<String> {
        self.file.flush().await?;
        self.file.get_mut().sync_all().await?;
        Ok(self.hasher.clone().finish())
    }

    /// After the part was moved into the cache: its origin record goes too.
    pub async fn committed(self) {
        let _ = remove_if_there(&self.origin_path).await;
    }

    /// Gives the part up: kept for a later run to resume when `keep` and it holds
    /// bytes (written out first), else removed with its origin record. Either way
    /// while the lock is still held.
    pub async fn abandon(mut self, keep: bool) {
        if keep && self.len > 0 && self.file.flush().await.is_ok() {
            return;
        }
        let _ = tokio::fs::remove_file(&self.path).await;
        let _ = remove_if_there(&self.origin_path).await;
    }
}

async fn remove_if_there(path: &Path) -> io::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

struct Opened {
    file: File,
    lock: Flock<File>,
    hasher: Hasher,
    len: u64,
    origin: Option<Origin>,
}

/// Opens (or creates) and locks the part, then hashes what it holds. `None` if a
/// live process holds the lock.
fn open_locked(path: &Path, origin_path: &Path) -> io::Result<Option<Opened>> {
    // Another process may remove the file (its download done) between our open and
    // our lock: then the lock is on a file nobody will see, so open again.
    for _ in 0..10 {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(path)?;
        let lock = match Flock::lock(file.try_clone()?, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, errno)) => return Err(errno.into()),
        };
        let held = file.metadata()?;
        match std::fs::symlink_metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {}
            _ => continue,
        }
        if !held.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut hasher = Hasher::new();
        let mut buffer = vec![0u8; super::hash::BUFFER];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            len += n as u64;
        }
        let origin = if len > 0 {
            std::fs::read(origin_path)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        } else {
            None
        };
        if origin.is_none() {
            let _ = std::fs::remove_file(origin_path);
        }
        return Ok(Some(Opened {
            file,
            lock,
            hasher,
            len,
            origin,
        }));
    }
    Err(io::Error::other(
        "the part file kept being replaced while taking its lock",
    ))
}

/// Whether a live process holds the lock of the part at `path`.
pub fn is_locked(path: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
    else {
        return false;
    };
    matches!(
        Flock::lock(file, FlockArg::LockExclusiveNonblock),
        Err((_, Errno::EWOULDBLOCK))
    )
}

/// Transfers `source` (named `url`) into `part`, from `part.len()` on.
pub async fn transfer(
    source: &Source,
    url: &str,
    http: &reqwest::Client,
    aws: Option<&SdkConfig>,
    part: &mut Part,
    limits: TransferLimits,
    progress: &mut Transfer,
) -> Result<(), AttemptError> {
    let mut body = match source {
        Source::Http(parsed) => open_http(http, parsed, url, part, limits).await?,
        Source::S3 { bucket, key } => {
            let Some(config) = aws else {
                return Err(AttemptError::Permanent(
                    "no AWS configuration for s3:// URLs".to_owned(),
                ));
            };
            open_s3(config, bucket, key, url, part, limits).await?
        }
        Source::File(path) => open_file(path, url, part).await?,
    };
    let total = body.total;
    progress.set_total(total);
    progress.set_position(part.len(), part.counts().transferred);
    if let Some(total) = total
        && total > limits.max_bytes
    {
        return Err(AttemptError::Permanent(format!(
            "{total} bytes is more than the {} an asset may have",
            limits.max_bytes
        )));
    }
    loop {
        let chunk = match tokio::time::timeout(limits.wait(), body.next()).await {
            Err(_) => {
                return Err(limits.waited_too_long(AttemptError::Cut(format!(
                    "no bytes for {}s after {} bytes (stalled)",
                    limits.idle.as_secs_f64(),
                    part.len
                ))));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(AttemptError::Cut(format!(
                    "the transfer broke off after {} bytes: {e}",
                    part.len
                )));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        if part.len + chunk.len() as u64 > limits.max_bytes {
            return Err(AttemptError::Permanent(format!(
                "more than the {} bytes an asset may have",
                limits.max_bytes
            )));
        }
        part.write(&chunk).await.map_err(AttemptError::Local)?;
        progress.set_position(part.len, part.counts.transferred);
    }
    if let Some(total) = total
        && part.len < total
    {
        return Err(AttemptError::Cut(format!(
            "the body ended after {} of {total} bytes",
            part.len
        )));
    }
    Ok(())
}

enum Stream {
    Http(reqwest::Response),
    S3(aws_sdk_s3::primitives::ByteStream),
    /// A local file, read up to `left` more bytes (its size when opened).
    File {
        file: tokio::fs::File,
        buffer: Vec<u8>,
        left: u64,
    },
    /// Nothing more to send: the part already holds the whole file.
    Empty,
}

struct Body {
    stream: Stream,
    /// The whole asset's size when the server said.
    total: Option<u64>,
}

impl Body {
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        match &mut self.stream {
            Stream::Http(response) => response
                .chunk()
                .await
                .map_err(|e| crate::error::chain(&e))
                .transpose(),
            Stream::S3(stream) => stream
                .next()
                .await
                .map(|r| r.map_err(|e| crate::error::chain(&e))),
            Stream::File { file, buffer, left } => {
                let want = buffer
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                if want == 0 {
                    return None;
                }
                match file.read(&mut buffer[..want]).await {
                    Ok(0) => None,
                    Ok(n) => {
                        *left -= n as u64;
                        Some(Ok(Bytes::copy_from_slice(&buffer[..n])))
                    }
                    Err(e) => Some(Err(e.to_string())),
                }
            }
            Stream::Empty => None,
        }
    }
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn open_http(
    client: &reqwest::Client,
    parsed: &reqwest::Url,
    url: &str,
    part: &mut Part,
    limits: TransferLimits,
) -> Result<Body, AttemptError> {
    let mut request = client.get(parsed.clone());
    let offset = part.len;
    let mut if_range = None;
    if offset > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        if_range = part
            .origin()
            .and_then(|o| o.if_range_for(url))
            .map(str::to_owned);
        if let Some(validator) = &if_range {
            request = request.header(reqwest::header::IF_RANGE, validator.as_str());
        }
    }
    let response = match tokio::time::timeout(limits.wait(), request.send()).await {
        Err(_) => {
            return Err(limits.waited_too_long(AttemptError::Transient(format!(
                "no answer within {}s",
                limits.idle.as_secs_f64()
            ))));
        }
        Ok(Err(e)) => return Err(AttemptError::Transient(crate::error::chain(&e))),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    let length = response.content_length();
    let content_range = header(&response, reqwest::header::CONTENT_RANGE);
    let origin = |total: Option<u64>| Origin {
        url: url.to_owned(),
        etag: header(&response, reqwest::header::ETAG),
        last_modified: header(&response, reqwest::header::LAST_MODIFIED),
        total,
    };
    match status.as_u16() {
        206 if offset > 0 => {
            let range = content_range.as_deref().and_then(parse_content_range);
            let Some(ContentRange::Bytes { start, total }) =
                range.filter(|r| r.start() == Some(offset))
            else {
                // Not the range we asked for: start over with the whole file.
                part.reset().await.map_err(AttemptError::Local)?;
                return Err(AttemptError::Cut(format!(
                    "asked for bytes from {offset} but got {}; starting over",
                    content_range.as_deref().unwrap_or("no Content-Range")
                )));
            };
            let total = total.or(length.map(|l| l + start));
            part.set_origin(origin(total))
                .await
                .map_err(AttemptError::Local)?;
            tracing::info!(url, offset, "resuming the download");
            Ok(Body {
                stream: Stream::Http(response),
                total,
            })
        }
        200 => {
            if offset > 0 {
                let now = origin(length);
                let changed = if_range.as_deref().is_some_and(|sent| {
                    now.etag.as_deref() != Some(sent) && now.last_modified.as_deref() != Some(sent)
                });
                if changed {
                    tracing::info!(
                        url,
                        "the file at this URL changed since the part was started (If-Range); downloading it whole"
                    );
                } else {
                    tracing::info!(
                        url,
                        "the server does not resume (no Range support); starting over"
                    );
                }
                part.reset().await.map_err(AttemptError::Local)?;
            }
            part.set_origin(origin(length))
                .await
                .map_err(AttemptError::Local)?;
            Ok(Body {
                stream: Stream::Http(response),
                total: length,
            })
        }
        416 if offset > 0 => {
            let total = match content_range.as_deref().and_then(parse_content_range) {
                Some(ContentRange::Unsatisfied { total }) => Some(total),
                _ => None,
            };
            if total == Some(offset) {
                // The part already holds the whole file (a run died before storing
                // it): the final hash says whether it is the asset.
                return Ok(Body {
                    stream: Stream::Empty,
                    total,
                });
            }
            part.reset().await.map_err(AttemptError::Local)?;
            Err(AttemptError::Cut(match total {
                Some(total) => format!(
                    "the part ({offset} bytes) is longer than the file at this URL ({total} bytes: HTTP 416); starting over"
                ),
                None => "range not satisfiable (HTTP 416); starting over".to_owned(),
            }))
        }
        code @ (408 | 425 | 429 | 500..=599) => Err(AttemptError::Transient(format!(
            "HTTP {code} {}",
            reason(status)
        ))),
        code => Err(AttemptError::Permanent(format!(
            "HTTP {code} {}",
            reason(status)
        ))),
    }
}

fn reason(status: reqwest::StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("")
}

/// A `Content-Range` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentRange {
    /// `bytes START-END/TOTAL` (`TOTAL` may be `*`: unknown).
    Bytes { start: u64, total: Option<u64> },
    /// `bytes */TOTAL`, with a 416.
    Unsatisfied { total: u64 },
}

impl ContentRange {
    fn start(&self) -> Option<u64> {
        match self {
            Self::Bytes { start, .. } => Some(*start),
            Self::Unsatisfied { .. } => None,
        }
    }
}

fn parse_content_range(value: &str) -> Option<ContentRange> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let total = total.trim();
    if range.trim() == "*" {
        return Some(ContentRange::Unsatisfied {
            total: total.parse().ok()?,
        });
    }
    let start = range.split('-').next()?.trim().parse().ok()?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some(ContentRange::Bytes { start, total })
}

async fn open_s3(
    config: &SdkConfig,
    bucket: &str,
    key: &str,
    url: &str,
    part: &mut Part,
    limits: TransferLimits,
) -> Result<Body, AttemptError> {
    let client = crate::cloud::aws::s3_client(config);
    let offset = part.len;
    let mut request = client.get_object().bucket(bucket).key(key);
    if offset > 0 {
        request = request.range(format!("bytes={offset}-"));
        // S3 has no If-Range: If-Match fails the request (412) if the object changed.
        if let Some(etag) = part.origin().and_then(|o| o.etag_for(url)) {
            request = request.if_match(etag);
        }
    }
    let response = match tokio::time::timeout(limits.wait(), request.send()).await {
        Err(_) => {
            return Err(limits.waited_too_long(AttemptError::Transient(format!(
                "no answer within {}s",
                limits.idle.as_secs_f64()
            ))));
        }
        Ok(Err(error)) => return Err(classify_s3(error, part).await),
        Ok(Ok(response)) => response,
    };
    let length = response
        .content_length()
        .and_then(|l| u64::try_from(l).ok());
    let total = if offset > 0 {
        match response.content_range().and_then(parse_content_range) {
            Some(ContentRange::Bytes { start, total }) if start == offset => {
                total.or(length.map(|l| l + offset))
            }
            _ => {
                part.reset().await.map_err(AttemptError::Local)?;
                return Err(AttemptError::Cut(
                    "S3 did not return the range asked for; starting over".to_owned(),
                ));
            }
        }
    } else {
        length
    };
    let origin = Origin {
        url: url.to_owned(),
        etag: response.e_tag().map(str::to_owned),
        last_modified: None,
        total,
    };
    part.set_origin(origin).await.map_err(AttemptError::Local)?;
    Ok(Body {
        stream: Stream::S3(response.body),
        total,
    })
}

async fn classify_s3<E>(
    error: SdkError<E, aws_smithy_runtime_api::http::Response>,
    part: &mut Part,
) -> AttemptError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown").to_owned();
            let message = service.err().message().unwrap_or("").to_owned();
            let text = match status {
                Some(s) => format!("{code} (HTTP {s}): {message}"),
                None => format!("{code}: {message}"),
            };
            match (code.as_str(), status) {
                // The part is longer than the object, or the object changed.
                ("InvalidRange" | "PreconditionFailed", _) | (_, Some(412 | 416)) => {
                    if let Err(e) = part.reset().await {
                        return AttemptError::Local(e);
                    }
                    AttemptError::Cut(format!("{text}; starting over"))
                }
                // A fresh instance's role can take seconds to be honoured.
                ("AccessDenied" | "SlowDown" | "InternalError" | "ServiceUnavailable", _)
                | (_, Some(500..=599)) => AttemptError::Transient(text),
                _ => AttemptError::Permanent(text),
            }
        }
        other => AttemptError::Transient(crate::error::chain(other)),
    }
}

/// A local file: only a regular file, and no further than the size it had when
/// opened (a device such as /dev/zero would never end; a growing file is cut there).
async fn open_file(path: &Path, url: &str, part: &mut Part) -> Result<Body, AttemptError> {
    let permanent = |e: io::Error| AttemptError::Permanent(format!("{}: {e}", path.display()));
    // Non-blocking: opening a FIFO must not wait for a writer (it is refused below).
    let mut file = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
        .await
        .map_err(permanent)?;
    let meta = file.metadata().await.map_err(permanent)?;
    if !meta.is_file() {
        return Err(AttemptError::Permanent(format!(
            "{} is not a regular file ({}); only regular files are read as assets",
            path.display(),
            kind(&meta.file_type())
        )));
    }
    let total = meta.len();
    if part.len > total {
        part.reset().await.map_err(AttemptError::Local)?;
    }
    file.seek(SeekFrom::Start(part.len))
        .await
        .map_err(permanent)?;
    let origin = Origin {
        url: url.to_owned(),
        total: Some(total),
        ..Origin::default()
    };
    part.set_origin(origin).await.map_err(AttemptError::Local)?;
    Ok(Body {
        stream: Stream::File {
            file,
            buffer: vec![0u8; super::hash::BUFFER],
            left: total - part.len,
        },
        total: Some(total),
    })
}

fn kind(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_ranges() {
        let url = |s: &str| AssetUrl::try_from(s).unwrap();
        assert_eq!(
            Source::of(&url("s3://bucket/a/b")).unwrap(),
            Source::S3 {
                bucket: "bucket".into(),
                key: "a/b".into()
            }
        );
        assert_eq!(
            Source::of(&url("file:///opt/x")).unwrap(),
            Source::File("/opt/x".into())
        );
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some(ContentRange::Bytes {
                start: 100,
                total: Some(200)
            })
        );
        assert_eq!(
            parse_content_range("bytes 100-199/*"),
            Some(ContentRange::Bytes {
                start: 100,
                total: None
            })
        );
        assert_eq!(
            parse_content_range("bytes */200"),
            Some(ContentRange::Unsatisfied { total: 200 })
        );
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn if_range_only_for_the_same_url_and_never_a_weak_etag() {
        let origin = Origin {
            url: "http://a/x".into(),
            etag: Some("\"v1\"".into()),
            last_modified: Some("Tue, 01 Jul 2025 00:00:00 GMT".into()),
            total: Some(10),
        };
        assert_eq!(origin.if_range_for("http://a/x"), Some("\"v1\""));
        assert_eq!(origin.if_range_for("http://b/x"), None);
        let weak = Origin {
            etag: Some("W/\"v1\"".into()),
            ..origin.clone()
        };
        assert_eq!(
            weak.if_range_for("http://a/x"),
            Some("Tue, 01 Jul 2025 00:00:00 GMT")
        );
        let neither = Origin {
            etag: None,
            last_modified: None,
            ..origin
        };
        assert_eq!(neither.if_range_for("http://a/x"), None);
    }

    fn paths(dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join("x.part"), dir.join("x.part.json"))
    }

    async fn claim(dir: &Path) -> Claim {
        let (path, origin) = paths(dir);
        Part::claim(path, origin).await.unwrap()
    }

    #[tokio::test]
    async fn a_dead_runs_part_is_taken_over_hashed_and_a_live_one_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let (path, origin_path) = paths(dir.path());
        // What a killed run left: bytes and where they came from.
        std::fs::write(&path, b"hello ").unwrap();
        let origin = Origin {
            url: "http://m/a".into(),
            etag: Some("\"e\"".into()),
            ..Origin::default()
        };
        std::fs::write(&origin_path, serde_json::to_vec(&origin).unwrap()).unwrap();
        let Claim::Part(mut part) = claim(dir.path()).await else {
            panic!("a part nobody holds is claimed");
        };
        assert_eq!(part.len(), 6);
        assert_eq!(part.origin(), Some(&origin));
        assert_eq!(part.counts().resumed, 6);
        // While this process holds it, nobody else can (another open, as another
        // process would).
        assert!(matches!(claim(dir.path()).await, Claim::Busy));
        assert!(is_locked(&path));
        part.write(b"world").await.unwrap();
        assert_eq!(
            part.finish().await.unwrap(),
            crate::spec::digest(b"hello world")
        );
        assert_eq!(
            part.counts(),
            Counts {
                transferred: 5,
                resumed: 6,
                discarded: 0
            }
        );
        part.reset().await.unwrap();
        assert_eq!(
            part.counts(),
            Counts {
                transferred: 5,
                resumed: 0,
                discarded: 11
            }
        );
        assert!(!origin_path.exists(), "a reset part has no origin");
        part.write(b"abc").await.unwrap();
        part.abandon(true).await;
        // Kept for the next run, unlocked.
        assert!(!is_locked(&path));
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        let Claim::Part(part) = claim(dir.path()).await else {
            panic!("claimed again");
        };
        assert_eq!(part.len(), 3);
        assert_eq!(part.origin(), None, "no origin record, none assumed");
        part.abandon(false).await;
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_file_source_is_read_no_further_than_its_size_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("asset");
        std::fs::write(&source, vec![7u8; 1000]).unwrap();
        let Claim::Part(mut part) = claim(dir.path()).await else {
            panic!("claimed");
        };
        let mut body = open_file(&source, "file:///asset", &mut part)
            .await
            .unwrap();
        // The file grows after it was opened: the growth is not read.
        let mut append = std::fs::OpenOptions::new()
            .append(true)
            .open(&source)
            .unwrap();
        std::io::Write::write_all(&mut append, &[9u8; 5000]).unwrap();
        let mut read = Vec::new();
        while let Some(chunk) = body.next().await {
            read.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(read, vec![7u8; 1000]);
        assert_eq!(body.total, Some(1000));
    }

    #[tokio::test]
    async fn a_device_or_a_fifo_is_refused_as_a_file_source() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let Claim::Part(mut part) = claim(dir.path()).await else {
            panic!("claimed");
        };
        for (path, kind) in [
            (Path::new("/dev/zero"), "a character device"),
            (fifo.as_path(), "a FIFO"),
            (dir.path(), "a directory"),
        ] {
            match open_file(path, "file://x", &mut part).await {
                Err(AttemptError::Permanent(why)) => {
                    assert!(
                        why.contains("is not a regular file") && why.contains(kind),
                        "{why}"
                    )
                }
                Err(other) => panic!("{other:?}"),
                Ok(_) => panic!("{} was opened", path.display()),
            }
        }
    }
}
