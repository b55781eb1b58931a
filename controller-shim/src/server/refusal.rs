//! Refusals: the client gets a code, a terse message and a request id; the log line gets
//! the whole reason, the peer address and the instance when known.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::protocol::{ErrorBody, ErrorCode, REQUEST_ID_HEADER};

/// Why a request was refused: the code (what the client sees) and the reason (what the
/// log says; may name roles, groups, keys and instances).
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub reason: String,
}

pub fn refuse(code: ErrorCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

/// A fresh request id: 16 hex digits, enough to find one line among millions.
pub fn request_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// The response for a refusal: status from the code, the code's summary, the request id.
pub fn response(code: ErrorCode, request_id: &str) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        axum::Json(ErrorBody {
            code,
            message: code.summary().to_owned(),
            request_id: request_id.to_owned(),
        }),
    )
        .into_response();
    if code.retryable() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    set_request_id(&mut response, request_id);
    response
}

pub fn set_request_id(response: &mut Response, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
}

/// Lets one event through per `period` and counts the rest: a flood of refusals must not
/// become a flood of log lines (each costs more than the refusal itself).
#[derive(Debug)]
pub struct Sampler {
    period: Duration,
    last: Option<Instant>,
    skipped: u64,
}

impl Sampler {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            skipped: 0,
        }
    }

    /// `Some(events skipped since the last one let through)` when this one may be logged.
    pub fn take(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.period)
        {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

/// A budget of log lines per second for refusals, shared by all requests. Within it every
/// refusal is logged whole; beyond it they are counted, and the count is logged once the
/// budget allows again.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u32,
    window: Mutex<(Instant, u32, u64)>,
}

impl LogBudget {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// `Some(lines suppressed before this one)` when this line may be logged.
    pub fn take(&self) -> Option<u64> {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let (started, used, suppressed) = &mut *window;
        if started.elapsed() >= Duration::from_secs(1) {
            *started = Instant::now();
            *used = 0;
        }
        if *used >= self.per_second {
            *suppressed += 1;
            return None;
        }
        *used += 1;
        Some(std::mem::take(suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_refusals_is_counted_not_logged() {
        let budget = LogBudget::new(3);
        let logged: Vec<Option<u64>> = (0..10).map(|_| budget.take()).collect();
        assert_eq!(logged[..3], [Some(0), Some(0), Some(0)]);
        assert!(logged[3..].iter().all(Option::is_none));
        let mut sampler = Sampler::new(Duration::from_secs(3600));
        assert_eq!(sampler.take(), Some(0));
        assert_eq!(sampler.take(), None);
        assert_eq!(sampler.take(), None);
    }

    #[test]
    fn request_ids_differ() {
        assert_ne!(request_id(), request_id());
        assert_eq!(request_id().len(), 16);
    }
}
