//! One transfer from one URL into a part file of the cache, hashed as it streams.
//!
//! The part file and its running hash outlive a transfer: after a cut, the next
//! transfer asks for the rest with `Range: bytes=N-` and carries on hashing, so no byte
//! is read twice. A server that ignores the range answers 200 with the whole body, and
//! the part starts over.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use bytes::Bytes;
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
    /// This URL will not serve the asset: 404, 403, too large.
    Permanent(String),
    /// Stopped part-way (a stall, a cut body): resume it where it stopped.
    Cut(String),
    /// Our side failed (disk full, read-only cache): no URL can help.
    Local(io::Error),
}

#[derive(Debug, Clone, Copy)]
pub struct TransferLimits {
    /// No bytes for this long cuts the transfer.
    pub idle: Duration,
    /// The largest asset accepted.
    pub max_bytes: u64,
}

/// A download in progress: the temp file, the bytes so far and their running hash.
pub struct Part {
    path: PathBuf,
    file: BufWriter<tokio::fs::File>,
    hasher: Hasher,
    len: u64,
}

impl Part {
    pub async fn create(path: PathBuf) -> io::Result<Self> {
        let _ = tokio::fs::remove_file(&path).await;
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await?;
        Ok(Self {
            path,
            file: BufWriter::with_capacity(super::hash::BUFFER, file),
            hasher: Hasher::new(),
            len: 0,
        })
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

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.file.write_all(bytes).await?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Throws away what was received, to start from the first byte again.
    pub async fn reset(&mut self) -> io::Result<()> {
        self.file.flush().await?;
        self.file.get_mut().set_len(0).await?;
        self.file.get_mut().seek(SeekFrom::Start(0)).await?;
        self.hasher = Hasher::new();
        self.len = 0;
        Ok(())
    }

    /// The digest of the bytes so far, after writing them all out and syncing.
    pub async fn finish(&mut self) -> io::Result<String> {
        self.file.flush().await?;
        self.file.get_mut().sync_all().await?;
        Ok(self.hasher.clone().finish())
    }
}

/// Transfers `source` into `part` (from `part.len()` on).
pub async fn transfer(
    source: &Source,
    http: &reqwest::Client,
    aws: Option<&SdkConfig>,
    part: &mut Part,
    limits: TransferLimits,
    progress: &mut Transfer,
) -> Result<(), AttemptError> {
    let mut body = match source {
        Source::Http(url) => open_http(http, url, part, limits).await?,
        Source::S3 { bucket, key } => {
            let Some(config) = aws else {
                return Err(AttemptError::Permanent(
                    "no AWS configuration for s3:// URLs".to_owned(),
                ));
            };
            open_s3(config, bucket, key, part, limits).await?
        }
        Source::File(path) => open_file(path, part).await?,
    };
    let total = body.total;
    progress.set_total(total);
    if let Some(total) = total
        && total > limits.max_bytes
    {
        return Err(AttemptError::Permanent(format!(
            "{total} bytes is more than the {} an asset may have",
            limits.max_bytes
        )));
    }
    loop {
        let chunk = match tokio::time::timeout(limits.idle, body.next()).await {
            Err(_) => {
                return Err(AttemptError::Cut(format!(
                    "no bytes for {}s after {} bytes (stalled)",
                    limits.idle.as_secs_f64(),
                    part.len
                )));
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
        progress.set_position(part.len);
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
    File(tokio::fs::File, Vec<u8>),
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
            Stream::File(file, buffer) => match file.read(buffer).await {
                Ok(0) => None,
                Ok(n) => Some(Ok(Bytes::copy_from_slice(&buffer[..n]))),
                Err(e) => Some(Err(e.to_string())),
            },
        }
    }
}

async fn open_http(
    client: &reqwest::Client,
    url: &reqwest::Url,
    part: &mut Part,
    limits: TransferLimits,
) -> Result<Body, AttemptError> {
    let mut request = client.get(url.clone());
    let offset = part.len;
    if offset > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
    }
    let response = match tokio::time::timeout(limits.idle, request.send()).await {
        Err(_) => {
            return Err(AttemptError::Transient(format!(
                "no answer within {}s",
                limits.idle.as_secs_f64()
            )));
        }
        Ok(Err(e)) => return Err(AttemptError::Transient(crate::error::chain(&e))),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    let length = response.content_length();
    match status.as_u16() {
        206 if offset > 0 => {
            let start = response
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(range_start);
            if start != Some(offset) {
                // Not the range we asked for: start over with the whole file.
                part.reset().await.map_err(AttemptError::Local)?;
                return Err(AttemptError::Cut(format!(
                    "asked for bytes from {offset} but got a different range; starting over"
                )));
            }
            tracing::info!(url = %url, offset, "resuming the download");
            Ok(Body {
                stream: Stream::Http(response),
                total: length.map(|l| l + offset),
            })
        }
        200 => {
            if offset > 0 {
                tracing::info!(url = %url, "the server does not resume (no Range support); starting over");
                part.reset().await.map_err(AttemptError::Local)?;
            }
            Ok(Body {
                stream: Stream::Http(response),
                total: length,
            })
        }
        416 => {
            part.reset().await.map_err(AttemptError::Local)?;
            Err(AttemptError::Cut(
                "range not satisfiable; starting over".to_owned(),
            ))
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

/// The first byte of `Content-Range: bytes START-END/TOTAL`.
fn range_start(value: &str) -> Option<u64> {
    value
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

async fn open_s3(
    config: &SdkConfig,
    bucket: &str,
    key: &str,
    part: &mut Part,
    limits: TransferLimits,
) -> Result<Body, AttemptError> {
    let client = crate::cloud::aws::s3_client(config);
    let offset = part.len;
    let mut request = client.get_object().bucket(bucket).key(key);
    if offset > 0 {
        request = request.range(format!("bytes={offset}-"));
    }
    let response = match tokio::time::timeout(limits.idle, request.send()).await {
        Err(_) => {
            return Err(AttemptError::Transient(format!(
                "no answer within {}s",
                limits.idle.as_secs_f64()
            )));
        }
        Ok(Err(error)) => return Err(classify_s3(error, part).await),
        Ok(Ok(response)) => response,
    };
    let length = response
        .content_length()
        .and_then(|l| u64::try_from(l).ok());
    let total = if offset > 0 {
        let start = response.content_range().and_then(range_start);
        if start != Some(offset) {
            part.reset().await.map_err(AttemptError::Local)?;
            return Err(AttemptError::Cut(
                "S3 did not return the range asked for; starting over".to_owned(),
            ));
        }
        length.map(|l| l + offset)
    } else {
        length
    };
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
                ("InvalidRange", _) | (_, Some(416)) => {
                    if let Err(e) = part.reset().await {
                        return AttemptError::Local(e);
                    }
                    AttemptError::Cut(text)
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

async fn open_file(path: &Path, part: &mut Part) -> Result<Body, AttemptError> {
    let permanent = |e: io::Error| AttemptError::Permanent(format!("{}: {e}", path.display()));
    let mut file = tokio::fs::File::open(path).await.map_err(permanent)?;
    let total = file.metadata().await.map_err(permanent)?.len();
    if part.len > total {
        part.reset().await.map_err(AttemptError::Local)?;
    }
    file.seek(SeekFrom::Start(part.len))
        .await
        .map_err(permanent)?;
    Ok(Body {
        stream: Stream::File(file, vec![0u8; super::hash::BUFFER]),
        total: Some(total),
    })
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
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes */200"), None);
    }
}
