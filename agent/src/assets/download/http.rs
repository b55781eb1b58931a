//! Opening an `http(s)://` source: a GET, a ranged one with `If-Range` to resume.

use super::{AttemptError, Body, Origin, Part, Stream, TransferLimits};

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub(super) async fn open(
    client: &reqwest::Client,
    parsed: &reqwest::Url,
    url: &str,
    part: &mut Part,
    limits: TransferLimits,
) -> Result<Body, AttemptError> {
    let mut request = client.get(parsed.clone());
    let offset = part.len();
    let mut if_range = None;
    if offset > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        if_range = part
            .origin()
            .and_then(|o| o.if_range_for(url))
            .map(str::to_owned);
        if let Some(validator) = &if_range {
            request = request.header(reqwest::header::IF_RANGE, validator.as_str());
        }
    }
    let response = match tokio::time::timeout(limits.wait(), request.send()).await {
        Err(_) => {
            return Err(limits.waited_too_long(AttemptError::Transient(format!(
                "no answer within {}s",
                limits.idle.as_secs_f64()
            ))));
        }
        Ok(Err(e)) => return Err(AttemptError::Transient(crate::error::chain(&e))),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    let length = response.content_length();
    let content_range = header(&response, reqwest::header::CONTENT_RANGE);
    let origin = |total: Option<u64>| Origin {
        url: url.to_owned(),
        etag: header(&response, reqwest::header::ETAG),
        last_modified: header(&response, reqwest::header::LAST_MODIFIED),
        total,
    };
    match status.as_u16() {
        206 if offset > 0 => {
            let range = content_range.as_deref().and_then(parse_content_range);
            let Some(ContentRange::Bytes { start, total }) =
                range.filter(|r| r.start() == Some(offset))
            else {
                // Not the range we asked for: start over with the whole file.
                part.reset().await.map_err(AttemptError::Local)?;
                return Err(AttemptError::Cut(format!(
                    "asked for bytes from {offset} but got {}; starting over",
                    content_range.as_deref().unwrap_or("no Content-Range")
                )));
            };
            let total = total.or(length.map(|l| l + start));
            part.set_origin(origin(total))
                .await
                .map_err(AttemptError::Local)?;
            tracing::info!(url, offset, "resuming the download");
            Ok(Body {
                stream: Stream::Http(response),
                total,
            })
        }
        200 => {
            if offset > 0 {
                let now = origin(length);
                let changed = if_range.as_deref().is_some_and(|sent| {
                    now.etag.as_deref() != Some(sent) && now.last_modified.as_deref() != Some(sent)
                });
                if changed {
                    tracing::info!(
                        url,
                        "the file at this URL changed since the part was started (If-Range); downloading it whole"
                    );
                } else {
                    tracing::info!(
                        url,
                        "the server does not resume (no Range support); starting over"
                    );
                }
                part.reset().await.map_err(AttemptError::Local)?;
            }
            part.set_origin(origin(length))
                .await
                .map_err(AttemptError::Local)?;
            Ok(Body {
                stream: Stream::Http(response),
                total: length,
            })
        }
        416 if offset > 0 => {
            let total = match content_range.as_deref().and_then(parse_content_range) {
                Some(ContentRange::Unsatisfied { total }) => Some(total),
                _ => None,
            };
            if total == Some(offset) {
                // The part already holds the whole file (a run died before storing
                // it): the final hash says whether it is the asset.
                return Ok(Body {
                    stream: Stream::Empty,
                    total,
                });
            }
            part.reset().await.map_err(AttemptError::Local)?;
            Err(AttemptError::Cut(match total {
                Some(total) => format!(
                    "the part ({offset} bytes) is longer than the file at this URL ({total} bytes: HTTP 416); starting over"
                ),
                None => "range not satisfiable (HTTP 416); starting over".to_owned(),
            }))
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

/// A `Content-Range` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ContentRange {
    /// `bytes START-END/TOTAL` (`TOTAL` may be `*`: unknown).
    Bytes { start: u64, total: Option<u64> },
    /// `bytes */TOTAL`, with a 416.
    Unsatisfied { total: u64 },
}

impl ContentRange {
    fn start(&self) -> Option<u64> {
        match self {
            Self::Bytes { start, .. } => Some(*start),
            Self::Unsatisfied { .. } => None,
        }
    }
}

pub(super) fn parse_content_range(value: &str) -> Option<ContentRange> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let total = total.trim();
    if range.trim() == "*" {
        return Some(ContentRange::Unsatisfied {
            total: total.parse().ok()?,
        });
    }
    let start = range.split('-').next()?.trim().parse().ok()?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some(ContentRange::Bytes { start, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some(ContentRange::Bytes {
                start: 100,
                total: Some(200)
            })
        );
        assert_eq!(
            parse_content_range("bytes 100-199/*"),
            Some(ContentRange::Bytes {
                start: 100,
                total: None
            })
        );
        assert_eq!(
            parse_content_range("bytes */200"),
            Some(ContentRange::Unsatisfied { total: 200 })
        );
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
