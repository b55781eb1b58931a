//! Errors of EC2 and Route53 calls, and the one retry policy they share.

use std::future::Future;
use std::time::Duration;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::timeout::TimeoutConfig;

use crate::error::{Classified, ErrorKind, TlsDates};
use crate::retry::{RetryError, RetryPolicy, Verdict, retry};
use crate::runbook::Topic;

/// Error codes that mean "slow down" or "try again": AWS's throttling codes (Route53
/// answers `Throttling` and `PriorRequestNotComplete`, EC2 `RequestLimitExceeded`) and
/// its transient server errors.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "PriorRequestNotComplete",
    "TooManyRequestsException",
    "RequestThrottled",
    "SlowDown",
    "EC2ThrottledException",
    "ServiceUnavailable",
    "Unavailable",
    "InternalError",
    "InternalFailure",
];

#[derive(Debug, Clone, thiserror::Error)]
pub enum CloudError {
    /// AWS answered with an error code.
    #[error("{operation}: {code}: {message}")]
    Service {
        operation: &'static str,
        code: String,
        message: String,
        status: Option<u16>,
    },
    /// No usable answer: connection refused, timeout, unreadable response.
    #[error("{operation}: {detail}")]
    Transport {
        operation: &'static str,
        detail: String,
        /// A TLS certificate refused for its dates.
        tls: Option<TlsDates>,
    },
    /// An answer that makes no sense (a paging loop, a missing field).
    #[error("{operation}: {detail}")]
    Protocol {
        operation: &'static str,
        detail: String,
    },
    /// Retried until the deadline.
    #[error("{operation}: gave up after {attempts} attempts in {seconds:.1}s: {last}")]
    Deadline {
        operation: &'static str,
        attempts: u32,
        seconds: f64,
        last: Box<CloudError>,
    },
}

impl CloudError {
    /// AWS's error code, e.g. `VolumeInUse` (for a deadline error, the last one's).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Service { code, .. } => Some(code),
            Self::Deadline { last, .. } => last.code(),
            Self::Transport { .. } | Self::Protocol { .. } => None,
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            Self::Service { code, status, .. } => {
                TRANSIENT_CODES.contains(&code.as_str()) || status.is_some_and(|s| s >= 500)
            }
            Self::Transport { .. } => true,
            Self::Protocol { .. } | Self::Deadline { .. } => false,
        }
    }

    fn verdict(&self) -> Verdict {
        if self.is_transient() {
            Verdict::Retry
        } else {
            Verdict::Fail
        }
    }

    pub fn from_sdk<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = error.raw_response().map(|r| r.status().as_u16());
        match &error {
            SdkError::ServiceError(service) => {
                let inner = service.err();
                Self::Service {
                    operation,
                    code: inner.code().unwrap_or("Unknown").to_owned(),
                    message: inner.message().unwrap_or("").to_owned(),
                    status,
                }
            }
            _ => Self::Transport {
                operation,
                detail: DisplayErrorContext(&error).to_string(),
                tls: TlsDates::find(&error),
            },
        }
    }
}

/// A refusal by AWS is the input's fault (a volume that cannot be attached, a zone
/// that is not ours); transport failures and deadlines mean AWS did not answer.
impl Classified for CloudError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Service { .. } | Self::Protocol { .. } => ErrorKind::ChangeFailed,
            Self::Transport { .. } | Self::Deadline { .. } => ErrorKind::Unreachable,
        }
    }

    fn topic(&self) -> Option<Topic> {
        match self {
            Self::Service { code, .. } => match code.as_str() {
                // EC2 says RequestExpired, S3 and Route53 RequestTimeTooSkewed.
                "RequestTimeTooSkewed" | "RequestExpired" => Some(Topic::ClockSkew),
                _ => None,
            },
            Self::Transport { tls, .. } => tls.map(TlsDates::topic),
            Self::Deadline { last, .. } => last.topic(),
            Self::Protocol { .. } => None,
        }
    }
}

/// Timeouts of one attempt: a hung connection must not hold a boot or a watch round.
pub fn call_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .build()
}

/// Runs one SDK call with the shared retry policy.
pub async fn call<T, E, F, Fut>(
    operation: &'static str,
    policy: RetryPolicy,
    mut op: F,
) -> Result<T, CloudError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
{
    let outcome = retry(operation, policy, CloudError::verdict, || {
        let attempt = op();
        async move {
            attempt
                .await
                .map_err(|e| CloudError::from_sdk(operation, e))
        }
    })
    .await;
    outcome.map_err(|e| match e {
        RetryError::Permanent(e) => e,
        RetryError::Deadline {
            last,
            attempts,
            elapsed,
        } => CloudError::Deadline {
            operation,
            attempts,
            seconds: elapsed.as_secs_f64(),
            last: Box::new(last),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(code: &str, status: u16) -> CloudError {
        CloudError::Service {
            operation: "Test",
            code: code.to_owned(),
            message: String::new(),
            status: Some(status),
        }
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        assert!(service("Throttling", 400).is_transient());
        assert!(service("PriorRequestNotComplete", 400).is_transient());
        assert!(service("RequestLimitExceeded", 503).is_transient());
        assert!(service("Whatever", 500).is_transient());
        assert!(!service("VolumeInUse", 400).is_transient());
        assert!(!service("InvalidChangeBatch", 400).is_transient());
        assert!(!service("AccessDenied", 403).is_transient());
    }

    #[test]
    fn clock_skew_and_certificate_dates_point_at_the_runbook() {
        assert_eq!(
            service("RequestExpired", 400).topic(),
            Some(Topic::ClockSkew)
        );
        assert_eq!(service("VolumeInUse", 400).topic(), None);
        let tls = CloudError::Transport {
            operation: "Test",
            detail: "invalid peer certificate: NotValidYet".to_owned(),
            tls: Some(TlsDates::NotYetValid),
        };
        assert_eq!(tls.kind(), ErrorKind::Unreachable);
        assert_eq!(tls.topic(), Some(Topic::ClockSkew));
    }
}
