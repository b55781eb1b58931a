//! Small helpers the agent and controller-shim share (the agent links this library):
//! an error with its causes on one line, and the jittered backoff both retry loops use.

use std::time::Duration;

/// An error and its causes on one line, each cause once: the top-level messages of the
/// AWS SDK and of HTTP clients alone are vague ("dispatch failure", "error sending
/// request"), the cause says what happened.
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

/// Exponential backoff with "equal jitter": the delay before attempt `attempt + 1`
/// (1-based) is half of `initial * 2^(attempt-1)` (capped at `max`) plus a random part
/// of the other half, so that many nodes retrying one server do not retry in step.
pub fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(max);
    let half = capped / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1
                .as_deref()
                .map(|l| l as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn causes_join_once_each() {
        let error = Layer(
            "dispatch failure",
            Some(Box::new(Layer(
                "io error",
                Some(Box::new(Layer("connection refused", None))),
            ))),
        );
        assert_eq!(
            error_chain(&error),
            "dispatch failure: io error: connection refused"
        );
        let repeated = Layer(
            "reading x: timed out",
            Some(Box::new(Layer("timed out", None))),
        );
        assert_eq!(error_chain(&repeated), "reading x: timed out");
    }

    #[test]
    fn delays_grow_and_stay_capped() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 1..40 {
            assert!(backoff(initial, max, attempt) <= max, "{attempt}");
        }
        let first = backoff(initial, max, 1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        assert!(backoff(initial, max, 5) >= Duration::from_millis(500));
    }
}
