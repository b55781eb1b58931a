//! Retries with jittered exponential backoff under an overall deadline.
//!
//! Every remote call at boot goes through here (IMDS, S3, the asset mirrors): a fresh
//! instance's network, role and DNS can take seconds to work, so transient failures are
//! retried until the deadline, and permanent ones fail at once with their cause.
//! While it retries, it reports what it is waiting for ([`crate::report`]: the live run
//! record shows it in `status`), with the runbook section the error names.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Classified, ErrorKind};
use crate::report;
use crate::runbook::Topic;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Give up once this much time has passed since the first attempt.
    pub deadline: Duration,
    /// Delay before the second attempt; doubled after each failure.
    pub initial_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl RetryPolicy {
    pub const fn with_deadline(deadline: Duration) -> Self {
        Self {
            deadline,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }

    /// The delay before attempt `attempt + 1` (1-based), with "equal jitter": half the
    /// exponential delay plus a random part, so that many nodes do not retry in step.
    pub fn delay(&self, attempt: u32) -> Duration {
        nodewright_shim::support::backoff(self.initial_delay, self.max_delay, attempt)
    }
}

/// What to do with a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Retry,
    Fail,
}

#[derive(Debug, thiserror::Error)]
pub enum RetryError<E: Display> {
    /// A failure that retrying cannot fix.
    #[error("{0}")]
    Permanent(E),
    #[error("gave up after {attempts} attempts in {:.1}s: {last}", elapsed.as_secs_f64())]
    Deadline {
        last: E,
        attempts: u32,
        elapsed: Duration,
    },
}

/// Giving up at the deadline means the source did not answer in time; a permanent
/// failure is whatever the error itself says.
impl<E: Display + Classified> Classified for RetryError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Permanent(e) => e.kind(),
            Self::Deadline { .. } => ErrorKind::Unreachable,
        }
    }
    fn topic(&self) -> Option<Topic> {
        match self {
            Self::Permanent(e) | Self::Deadline { last: e, .. } => e.topic(),
        }
    }
}

impl<E: Display> RetryError<E> {
    pub fn into_inner(self) -> E {
        match self {
            Self::Permanent(e) | Self::Deadline { last: e, .. } => e,
        }
    }
    pub fn is_deadline(&self) -> bool {
        matches!(self, Self::Deadline { .. })
    }
}

/// Runs `op` until it succeeds, `classify` says a failure is permanent, or the next
/// attempt would start after the deadline. `what` names the operation in the logs.
pub async fn retry<T, E, F, Fut>(
    what: &str,
    policy: RetryPolicy,
    classify: impl Fn(&E) -> Verdict,
    mut op: F,
) -> Result<T, RetryError<E>>
where
    E: Display + Classified,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let error = match op().await {
            Ok(value) => {
                if attempt > 1 {
                    tracing::info!(what, attempt, "succeeded after retrying");
                    report::done_waiting(what);
                }
                return Ok(value);
            }
            Err(error) => error,
        };
        if classify(&error) == Verdict::Fail {
            report::done_waiting(what);
            return Err(RetryError::Permanent(error));
        }
        // The last attempt is made at the deadline, not a backoff step before it.
        let elapsed = started.elapsed();
        let Some(remaining) = policy
            .deadline
            .checked_sub(elapsed)
            .filter(|r| !r.is_zero())
        else {
            return Err(RetryError::Deadline {
                last: error,
                attempts: attempt,
                elapsed,
            });
        };
        let delay = policy.delay(attempt).min(remaining);
        tracing::warn!(
            what,
            attempt,
            error = %error,
            retry_in_ms = delay.as_millis() as u64,
            "attempt failed; retrying"
        );
        report::waiting(&report::Wait {
            subject: what,
            reason: &error.to_string(),
            attempts: attempt,
            gives_up_at: Some(gives_up_at(policy.deadline, started)),
            topic: error.topic(),
        });
        tokio::time::sleep(delay).await;
    }
}

/// The wall-clock time at which a retry loop that began at `started` gives up.
fn gives_up_at(deadline: Duration, started: Instant) -> std::time::SystemTime {
    std::time::SystemTime::now() + deadline.saturating_sub(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A failure that classifies itself, as every error retried here does.
    #[derive(Debug, PartialEq)]
    struct Oops(String);

    impl Display for Oops {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl Classified for Oops {
        fn kind(&self) -> ErrorKind {
            ErrorKind::InvalidInput
        }
        fn topic(&self) -> Option<Topic> {
            Some(Topic::ClockSkew)
        }
    }

    fn quick(deadline_ms: u64) -> RetryPolicy {
        RetryPolicy {
            deadline: Duration::from_millis(deadline_ms),
            initial_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(8),
        }
    }

    #[tokio::test]
    async fn retries_until_success() {
        let calls = Cell::new(0);
        let result = retry(
            "t",
            quick(5_000),
            |_: &Oops| Verdict::Retry,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 4 {
                        Err(Oops(format!("fail {n}")))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), 4);
    }

    #[tokio::test]
    async fn permanent_errors_stop_at_once() {
        let calls = Cell::new(0);
        let result: Result<(), _> = retry(
            "t",
            quick(5_000),
            |_: &Oops| Verdict::Fail,
            || {
                calls.set(calls.get() + 1);
                async { Err(Oops("denied".to_owned())) }
            },
        )
        .await;
        assert!(matches!(result, Err(RetryError::Permanent(ref e)) if e.0 == "denied"));
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline_with_the_last_error() {
        let result: Result<(), _> = retry(
            "t",
            quick(50),
            |_: &Oops| Verdict::Retry,
            || async { Err(Oops("still down".to_owned())) },
        )
        .await;
        let err = result.unwrap_err();
        assert!(err.is_deadline());
        // Giving up is "unreachable", whatever the last error was; its topic stays.
        assert_eq!(err.kind(), ErrorKind::Unreachable);
        assert_eq!(err.topic(), Some(Topic::ClockSkew));
        // It keeps trying until the deadline itself.
        assert!(
            matches!(err, RetryError::Deadline { elapsed, .. } if elapsed >= Duration::from_millis(50))
        );
        let text = err.to_string();
        assert!(
            text.contains("still down") && text.contains("gave up after"),
            "{text}"
        );
    }

    #[test]
    fn delays_grow_and_stay_capped() {
        let policy = RetryPolicy {
            deadline: Duration::from_secs(60),
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for attempt in 1..30 {
            let d = policy.delay(attempt);
            assert!(d <= Duration::from_secs(1), "{attempt}: {d:?}");
        }
        let first = policy.delay(1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        assert!(policy.delay(5) >= Duration::from_millis(500));
    }
}
