//! Opening an `s3://` source: GetObject, ranged with `If-Match` to resume.

use aws_config::SdkConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::http::{ContentRange, parse_content_range};
use super::{AttemptError, Body, Origin, Part, Stream, TransferLimits};

pub(super) async fn open(
    config: &SdkConfig,
    bucket: &str,
    key: &str,
    url: &str,
    part: &mut Part,
    limits: TransferLimits,
) -> Result<Body, AttemptError> {
    let client = crate::cloud::aws::s3_client(config);
    let offset = part.len();
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
