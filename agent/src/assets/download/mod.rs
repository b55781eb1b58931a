//! One transfer from one URL into a part file of the cache, hashed as it streams.
//!
//! The part file and its running hash outlive a transfer, and a run ([`part`]): after
//! a cut, the next transfer asks for the rest with `Range: bytes=N-` and carries on
//! hashing. The sha256 checked at the end guards every byte, wherever it came from.
//! Each kind of source opens its body in its own module ([`http`], [`s3`], [`file`]);
//! this one streams that body into the part, within the limits.
//!
//! When a resume cannot go on, the part starts over from the first byte: a server that
//! ignores the range (200), a range it cannot satisfy (416: the part is longer than
//! the file), a changed file (`If-Range` answered with 200, S3's `If-Match` with 412).

mod file;
mod http;
mod part;
mod s3;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use aws_config::SdkConfig;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::progress::Transfer;
use crate::spec::AssetUrl;

pub use part::{Claim, Counts, Origin, Part, is_locked};

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
        Source::Http(parsed) => http::open(http, parsed, url, part, limits).await?,
        Source::S3 { bucket, key } => {
            let Some(config) = aws else {
                return Err(AttemptError::Permanent(
                    "no AWS configuration for s3:// URLs".to_owned(),
                ));
            };
            s3::open(config, bucket, key, url, part, limits).await?
        }
        Source::File(path) => file::open(path, url, part).await?,
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
                    part.len()
                ))));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(AttemptError::Cut(format!(
                    "the transfer broke off after {} bytes: {e}",
                    part.len()
                )));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        if part.len() + chunk.len() as u64 > limits.max_bytes {
            return Err(AttemptError::Permanent(format!(
                "more than the {} bytes an asset may have",
                limits.max_bytes
            )));
        }
        part.write(&chunk).await.map_err(AttemptError::Local)?;
        progress.set_position(part.len(), part.counts().transferred);
    }
    if let Some(total) = total
        && part.len() < total
    {
        return Err(AttemptError::Cut(format!(
            "the body ended after {} of {total} bytes",
            part.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
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
    }
}
