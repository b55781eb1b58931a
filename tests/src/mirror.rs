//! An asset mirror on loopback that misbehaves on request, per path: answer a status
//! N times (503, 404...), stall after K bytes, cut the connection after K bytes, serve
//! wrong bytes, redirect, support `Range` or not, and cap the rate per connection.
//! Each file has validators (an `ETag` that changes whenever the file is put again,
//! and optionally a `Last-Modified`), and `If-Range` is honoured like a real server:
//! a range is served only if the validator sent still matches, else the whole file.
//! Every request is logged (path, Range and If-Range asked, status, bytes meant and
//! bytes actually sent) for assertions.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::runtime::serve;

/// A one-time misbehaviour, consumed by the request it hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and no body.
    Status(u16),
    /// Send this many bytes of the body, then nothing more (the connection stays open).
    StallAfter(u64),
    /// Send this many bytes of the body, then cut the connection.
    CloseAfter(u64),
    /// Serve other bytes of the same length.
    WrongBytes,
}

#[derive(Debug, Clone)]
struct Served {
    body: Bytes,
    faults: VecDeque<Fault>,
    /// A fault served on every request, after the one-time ones.
    always: Option<Fault>,
    range: bool,
    /// Bytes per second per connection.
    rate: Option<u64>,
    redirect: Option<String>,
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Served {
    fn new(body: Bytes, version: u64) -> Self {
        Self {
            body,
            faults: VecDeque::new(),
            always: None,
            range: true,
            rate: None,
            redirect: None,
            etag: Some(format!("\"v{version}\"")),
            last_modified: None,
        }
    }

    /// Whether an `If-Range` value names the file as it is now.
    fn current(&self, validator: &str) -> bool {
        self.etag.as_deref() == Some(validator) || self.last_modified.as_deref() == Some(validator)
    }
}

/// One request as the mirror saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub status: u16,
    /// Bytes the mirror meant to send (less if a fault cut it).
    pub bytes: u64,
    /// Body bytes handed to the connection for this request so far.
    pub sent: u64,
}

#[derive(Default)]
struct Inner {
    files: HashMap<String, Served>,
    log: Vec<(Hit, Arc<AtomicU64>)>,
    offline: bool,
    /// Puts so far: each put gets a new ETag.
    versions: u64,
}

#[derive(Clone)]
pub struct Mirror {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    sent: Arc<AtomicU64>,
}

impl Mirror {
    pub fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let sent = Arc::new(AtomicU64::new(0));
        let router = Router::new()
            .fallback(handle)
            .with_state((inner.clone(), sent.clone()));
        let addr = serve(router);
        Self { addr, inner, sent }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Serves `body` at `path`, replacing what was there (faults and settings too),
    /// with a new ETag.
    pub fn put(&self, path: &str, body: impl Into<Bytes>) {
        let mut inner = self.lock();
        inner.versions += 1;
        let served = Served::new(body.into(), inner.versions);
        inner.files.insert(path.to_owned(), served);
    }

    /// The validators `path` is served with (`None`: that header is not sent).
    pub fn set_validators(&self, path: &str, etag: Option<&str>, last_modified: Option<&str>) {
        self.with(path, |s| {
            s.etag = etag.map(str::to_owned);
            s.last_modified = last_modified.map(str::to_owned);
        });
    }

    /// The next `times` requests for `path` meet `fault`.
    pub fn fault(&self, path: &str, fault: Fault, times: usize) {
        self.with(path, |s| s.faults.extend(std::iter::repeat_n(fault, times)));
    }

    /// Every request for `path` meets `fault`.
    pub fn always(&self, path: &str, fault: Fault) {
        self.with(path, |s| s.always = Some(fault));
    }

    pub fn set_range(&self, path: &str, supported: bool) {
        self.with(path, |s| s.range = supported);
    }

    pub fn set_rate(&self, path: &str, bytes_per_second: Option<u64>) {
        self.with(path, |s| s.rate = bytes_per_second);
    }

    /// Every file at this rate per connection.
    pub fn set_rate_all(&self, bytes_per_second: Option<u64>) {
        for served in self.lock().files.values_mut() {
            served.rate = bytes_per_second;
        }
    }

    /// Answers `path` with a 302 to `location`.
    pub fn redirect(&self, path: &str, location: &str) {
        let mut inner = self.lock();
        let served = inner
            .files
            .entry(path.to_owned())
            .or_insert_with(|| Served::new(Bytes::new(), 0));
        served.redirect = Some(location.to_owned());
    }

    /// Off: every request is answered 503 (and still logged).
    pub fn set_offline(&self, offline: bool) {
        self.lock().offline = offline;
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.lock()
            .log
            .iter()
            .map(|(hit, sent)| Hit {
                sent: sent.load(Ordering::Relaxed),
                ..hit.clone()
            })
            .collect()
    }

    pub fn hits_for(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }

    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    /// Body bytes actually handed to connections so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn with(&self, path: &str, change: impl FnOnce(&mut Served)) {
        let mut inner = self.lock();
        let served = inner
            .files
            .get_mut(path)
            .unwrap_or_else(|| panic!("the mirror serves no {path}"));
        change(served);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("mirror lock")
    }
}

type Shared = (Arc<Mutex<Inner>>, Arc<AtomicU64>);

async fn handle(State((inner, sent)): State<Shared>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let header_of = |name: header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let range = header_of(header::RANGE);
    let if_range = header_of(header::IF_RANGE);
    let (served, fault, offline) = {
        let mut inner = inner.lock().expect("mirror lock");
        let offline = inner.offline;
        let found = inner.files.get_mut(&path).map(|s| {
            let fault = s.faults.pop_front().or_else(|| s.always.clone());
            (s.clone(), fault)
        });
        match found {
            Some((served, fault)) => (Some(served), fault, offline),
            None => (None, None, offline),
        }
    };
    let log = |status: u16, bytes: u64| {
        let counter = Arc::new(AtomicU64::new(0));
        inner.lock().expect("mirror lock").log.push((
            Hit {
                path: path.clone(),
                range: range.clone(),
                if_range: if_range.clone(),
                status,
                bytes,
                sent: 0,
            },
            counter.clone(),
        ));
        counter
    };
    if offline {
        log(503, 0);
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let Some(served) = served else {
        log(404, 0);
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(location) = &served.redirect {
        log(302, 0);
        return (StatusCode::FOUND, [(header::LOCATION, location.clone())]).into_response();
    }
    if let Some(Fault::Status(code)) = fault {
        log(code, 0);
        return StatusCode::from_u16(code)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response();
    }
    let total = served.body.len() as u64;
    let mut body = served.body.clone();
    if fault == Some(Fault::WrongBytes) {
        body = body.iter().map(|b| b ^ 0x5a).collect::<Vec<u8>>().into();
    }
    // If-Range: the range only if the file is still the one the client has a part of.
    let honoured = served.range && if_range.as_deref().is_none_or(|v| served.current(v));
    let start = match (&range, honoured) {
        (Some(value), true) => match parse_range(value, total) {
            Some(start) => Some(start),
            None => {
                log(416, 0);
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{total}"))],
                )
                    .into_response();
            }
        },
        _ => None,
    };
    let from = start.unwrap_or(0);
    let slice = body.slice(from as usize..);
    let length = slice.len() as u64;
    let status = if start.is_some() { 206 } else { 200 };
    let counter = log(status, length);
    let (limit, then) = match fault {
        Some(Fault::StallAfter(k)) => (k.min(length), End::Stall),
        Some(Fault::CloseAfter(k)) => (k.min(length), End::Cut),
        _ => (length, End::Done),
    };
    let stream = body_stream(slice, limit, then, served.rate, [sent, counter]);
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if served.range {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    for (name, value) in [
        (header::ETAG, &served.etag),
        (header::LAST_MODIFIED, &served.last_modified),
    ] {
        if let Some(value) = value {
            headers.insert(name, HeaderValue::from_str(value).expect("a valid header"));
        }
    }
    if start.is_some() {
        let value = format!("bytes {from}-{}/{total}", total.saturating_sub(1));
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).expect("a valid header"),
        );
    }
    response
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Done,
    Stall,
    Cut,
}

/// `bytes=N-` or `bytes=N-M` (served to the end either way); `None` if unsatisfiable.
fn parse_range(value: &str, total: u64) -> Option<u64> {
    let start: u64 = value
        .strip_prefix("bytes=")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()?;
    (start < total).then_some(start)
}

const CHUNK: usize = 64 * 1024;

/// The body in chunks, at `rate` bytes/s if set; after `limit` bytes, the end: done, a
/// stall (no more bytes, ever) or a cut (an error, which drops the connection).
fn body_stream(
    body: Bytes,
    limit: u64,
    then: End,
    rate: Option<u64>,
    counters: [Arc<AtomicU64>; 2],
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let started = tokio::time::Instant::now();
    futures_util::stream::unfold(0u64, move |offset| {
        let body = body.clone();
        let counters = counters.clone();
        async move {
            if offset == u64::MAX {
                return None;
            }
            if offset >= limit {
                return match then {
                    End::Done => None,
                    End::Stall => {
                        // Hold the connection open without a byte until the client leaves.
                        std::future::pending::<()>().await;
                        None
                    }
                    End::Cut => Some((
                        Err(std::io::Error::other("the mirror cut the connection")),
                        u64::MAX,
                    )),
                };
            }
            let end = (offset + CHUNK as u64).min(limit);
            if let Some(rate) = rate {
                // Pace so that byte `end` goes out no sooner than end / rate seconds.
                let due = started + Duration::from_secs_f64(end as f64 / rate as f64);
                tokio::time::sleep_until(due).await;
            }
            for counter in &counters {
                counter.fetch_add(end - offset, Ordering::Relaxed);
            }
            Some((Ok(body.slice(offset as usize..end as usize)), end))
        }
    })
}
