//! Reads documents from the state store: `s3://bucket/key` with the instance's
//! credentials, or `file:///path`.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::cloud::aws::s3_client;
use crate::retry::{RetryError, RetryPolicy, Verdict, retry};
use crate::spec::SpecLocation;

/// Largest document read from a store; specs are KiB, so this only stops a mistake.
const MAX_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
#[error("reading {location}: {detail}")]
pub struct StoreError {
    pub location: String,
    pub detail: String,
    /// Whether retrying may help (access still propagating, throttling, 5xx, network).
    pub transient: bool,
    /// The bucket's region when S3 says it lives elsewhere.
    redirect_region: Option<String>,
}

impl StoreError {
    fn new(location: &SpecLocation, detail: String, transient: bool) -> Self {
        Self {
            location: location.to_string(),
            detail,
            transient,
            redirect_region: None,
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
                    "no AWS configuration is available for s3:// locations".to_owned(),
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
        .map_err(|e| StoreError::new(location, e.to_string(), false))?;
    if meta.len() > MAX_BYTES {
        return Err(StoreError::new(
            location,
            format!("{} bytes is more than the {MAX_BYTES} allowed", meta.len()),
            false,
        ));
    }
    tokio::fs::read(path)
        .await
        .map_err(|e| StoreError::new(location, e.to_string(), false))
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
        return Err(StoreError::new(
            location,
            format!("object is larger than the {MAX_BYTES} bytes allowed"),
            false,
        ));
    }
    let body = response
        .body
        .collect()
        .await
        .map_err(|e| StoreError::new(location, format!("reading the body: {e}"), true))?;
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
    let (detail, transient) = match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown");
            let message = service.err().message().unwrap_or("");
            let transient = TRANSIENT_CODES.contains(&code) || status.is_some_and(|s| s >= 500);
            let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
            (format!("{code}{status}: {message}"), transient)
        }
        // No response at all: DNS, connection, timeouts, or credentials not yet
        // available from the instance role. All worth retrying at boot.
        other => (error_chain(other), true),
    };
    StoreError {
        location: location.to_string(),
        detail,
        transient,
        redirect_region: redirect_region.filter(|_| matches!(status, Some(301 | 307 | 400))),
    }
}

/// An error and its causes on one line; the SDK's top-level messages alone are vague.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
