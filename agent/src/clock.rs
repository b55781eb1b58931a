//! Timestamps as every record writes them.

use std::time::SystemTime;

/// RFC 3339 UTC timestamp with milliseconds, e.g. `2025-01-31T12:00:00.123Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format).unwrap_or_else(|_| "unknown".to_owned())
}

/// [`rfc3339`] of the current time.
pub fn now() -> String {
    rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn milliseconds_in_utc() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(at), "2023-11-14T22:13:20.123Z");
    }
}
