//! Reads documents from the state store: `s3://bucket/key` with the instance's
//! credentials, or `file:///path`.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::cloud::aws::s3_client;
use crate::error::{self, Classified, ErrorKind};
use crate::retry::{RetryError, RetryPolicy, Verdict, retry};
use crate::runbook::Topic;
use crate::spec::SpecLocation;

/// Largest document read from a store; specs are KiB, so this only stops a mistake.
const MAX_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
#[error("reading {location}: {cause}")]
pub struct StoreError {
    pub location: String,
    pub cause: StoreCause,
    /// Whether retrying may help (access still propagating, throttling, 5xx, network).
    pub transient: bool,
    /// The bucket's region when S3 says it lives elsewhere.
    redirect_region: Option<String>,
}

/// What went wrong reading a document.
#[derive(Debug, thiserror::Error)]
pub enum StoreCause {
    /// S3 answered with an error code.
    #[error("{code}{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Service {
        code: String,
        status: Option<u16>,
        message: String,
    },
    /// No answer at all: DNS, connection, timeouts, credentials not yet available.
    #[error("{detail}")]
    Transport {
        detail: String,
        /// A TLS certificate refused for its dates (the clock, or the certificate).
        tls: Option<error::TlsDates>,
    },
    /// A local file could not be read.
    #[error("{0}")]
    File(std::io::Error),
    /// The body broke off.
    #[error("reading the body: {0}")]
    Body(String),
    #[error("{0} bytes is more than the {MAX_BYTES} allowed")]
    TooLarge(u64),
    #[error("object is larger than the {MAX_BYTES} bytes allowed")]
    ObjectTooLarge,
    #[error("no AWS configuration is available for s3:// locations")]
    NoAws,
}

impl StoreError {
    fn new(location: &SpecLocation, cause: StoreCause, transient: bool) -> Self {
        Self {
            location: location.to_string(),
            cause,
            transient,
            redirect_region: None,
        }
    }

    /// S3's error code, if it answered with one.
    pub fn code(&self) -> Option<&str> {
        match &self.cause {
            StoreCause::Service { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A permanent answer is a refused input (a missing object, access denied for good),
/// except a server error; running out of time is "unreachable" (see `RetryError`).
impl Classified for StoreError {
    fn kind(&self) -> ErrorKind {
        match &self.cause {
            StoreCause::Service {
                status: Some(500..),
                ..
            } => ErrorKind::Unreachable,
            _ => ErrorKind::InvalidInput,
        }
    }

    fn topic(&self) -> Option<Topic> {
        let s3 = self.location.starts_with("s3://");
        match &self.cause {
            StoreCause::Service { code, .. } => match code.as_str() {
                "RequestTimeTooSkewed" | "RequestExpired" => Some(Topic::ClockSkew),
                "AccessDenied" | "Forbidden" | "InvalidAccessKeyId" if s3 => {
                    Some(Topic::S3AccessDenied)
                }
                _ => Some(Topic::StateStoreUnreachable),
            },
            StoreCause::Transport {
                tls: Some(dates), ..
            } => Some(dates.topic()),
            _ => Some(Topic::StateStoreUnreachable),
        }
    }
}

/// Fetches the bytes at `location`, retrying transient failures until `deadline`.
/// `aws` is needed for `s3://` locations only.
pub async fn fetch(
    location: &SpecLocation,
    aws: Option<&SdkConfig>,
    deadline: Duration,
) -> Result<Vec<u8>, RetryError<StoreError>> {
    let policy = RetryPolicy::with_deadline(deadline);
    let what = location.to_string();
    match location {
        SpecLocation::File { path } => {
            retry(
                &what,
                policy,
                |_| Verdict::Fail,
                || read_file(location, path),
            )
            .await
        }
        SpecLocation::S3 { bucket, key } => {
            let Some(config) = aws else {
                return Err(RetryError::Permanent(StoreError::new(
                    location,
                    StoreCause::NoAws,
                    false,
                )));
            };
            let mut client = s3_client(config);
            let mut moved = false;
            loop {
                let outcome = retry(
                    &what,
                    policy,
                    |e: &StoreError| {
                        if e.transient && e.redirect_region.is_none() {
                            Verdict::Retry
                        } else {
                            Verdict::Fail
                        }
                    },
                    || get_object(&client, location, bucket, key),
                )
                .await;
                match outcome {
                    Err(RetryError::Permanent(StoreError {
                        redirect_region: Some(region),
                        ..
                    })) if !moved => {
                        tracing::info!(
                            bucket,
                            region,
                            "bucket lives in another region; following it"
                        );
                        let regional = config
                            .to_builder()
                            .region(aws_config::Region::new(region))
                            .build();
                        client = s3_client(&regional);
                        moved = true;
                    }
                    other => return other,
                }
            }
        }
    }
}

async fn read_file(location: &SpecLocation, path: &str) -> Result<Vec<u8>, StoreError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| StoreError::new(location, StoreCause::File(e), false))?;
    if meta.len() > MAX_BYTES {
        return Err(StoreError::new(
            location,
            StoreCause::TooLarge(meta.len()),
            false,
        ));
    }
    tokio::fs::read(path)
        .await
        .map_err(|e| StoreError::new(location, StoreCause::File(e), false))
}

async fn get_object(
    client: &aws_sdk_s3::Client,
    location: &SpecLocation,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, StoreError> {
    let response = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| classify_s3(location, e))?;
    if response.content_length().unwrap_or(0) as u64 > MAX_BYTES {
        return Err(StoreError::new(location, StoreCause::ObjectTooLarge, false));
    }
    let body = response
        .body
        .collect()
        .await
        .map_err(|e| StoreError::new(location, StoreCause::Body(e.to_string()), true))?;
    Ok(body.into_bytes().to_vec())
}

/// S3 error codes that a retry can fix: a fresh instance's role or a just-written
/// bucket policy can take seconds to be honoured, and S3 throttles and fails briefly.
const TRANSIENT_CODES: &[&str] = &[
    "AccessDenied",
    "InvalidAccessKeyId",
    "ExpiredToken",
    "TokenRefreshRequired",
    "RequestTimeout",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "InternalError",
    "ServiceUnavailable",
];

fn classify_s3<E>(
    location: &SpecLocation,
    error: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let redirect_region = error
        .raw_response()
        .and_then(|r| r.headers().get("x-amz-bucket-region"))
        .map(str::to_owned);
    let status = error.raw_response().map(|r| r.status().as_u16());
    let (cause, transient) = match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown");
            let message = service.err().message().unwrap_or("");
            let transient = TRANSIENT_CODES.contains(&code) || status.is_some_and(|s| s >= 500);
            (
                StoreCause::Service {
                    code: code.to_owned(),
                    status,
                    message: message.to_owned(),
                },
                transient,
            )
        }
        // No response at all: DNS, connection, timeouts, or credentials not yet
        // available from the instance role. All worth retrying at boot.
        other => (
            StoreCause::Transport {
                detail: error::chain(other),
                tls: error::TlsDates::find(other),
            },
            true,
        ),
    };
    StoreError {
        location: location.to_string(),
        cause,
        transient,
        redirect_region: redirect_region.filter(|_| matches!(status, Some(301 | 307 | 400))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_error(code: &str, status: u16) -> StoreError {
        let location = SpecLocation::parse("s3://bucket/spec.yaml").unwrap();
        StoreError::new(
            &location,
            StoreCause::Service {
                code: code.to_owned(),
                status: Some(status),
                message: "m".to_owned(),
            },
            false,
        )
    }

    #[test]
    fn errors_carry_their_class_and_runbook_topic() {
        let denied = s3_error("AccessDenied", 403);
        assert_eq!(
            denied.to_string(),
            "reading s3://bucket/spec.yaml: AccessDenied (HTTP 403): m"
        );
        assert_eq!(denied.kind(), ErrorKind::InvalidInput);
        assert_eq!(denied.topic(), Some(Topic::S3AccessDenied));
        let skewed = s3_error("RequestTimeTooSkewed", 403);
        assert_eq!(skewed.topic(), Some(Topic::ClockSkew));
        let down = s3_error("ServiceUnavailable", 503);
        assert_eq!(down.kind(), ErrorKind::Unreachable);
        assert_eq!(down.topic(), Some(Topic::StateStoreUnreachable));
        let file = SpecLocation::parse("file:///spec.yaml").unwrap();
        let missing = StoreError::new(
            &file,
            StoreCause::File(std::io::Error::from(std::io::ErrorKind::NotFound)),
            false,
        );
        assert_eq!(missing.kind(), ErrorKind::InvalidInput);
        // Running out of time is "unreachable", whatever the last error was.
        let deadline = RetryError::Deadline {
            last: denied,
            attempts: 3,
            elapsed: std::time::Duration::from_secs(1),
        };
        assert_eq!(deadline.kind(), ErrorKind::Unreachable);
        assert_eq!(deadline.topic(), Some(Topic::S3AccessDenied));
    }
}
