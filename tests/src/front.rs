//! A proxy in front of the AWS emulator that adds what moto lacks: injected failures
//! (S3 AccessDenied while a role propagates, throttling, 5xx) and, through hooks,
//! behaviour moto does not model. Every request is logged for assertions.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::runtime::serve;

/// A request as the front saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    /// The AWS query-protocol action (EC2, STS): from the form body or the query.
    pub fn action(&self) -> Option<String> {
        let from = |text: &str| {
            text.split('&')
                .find_map(|pair| pair.strip_prefix("Action="))
                .map(str::to_owned)
        };
        from(&String::from_utf8_lossy(&self.body)).or_else(|| from(&self.query))
    }

    /// A form parameter of a query-protocol request.
    pub fn param(&self, name: &str) -> Option<String> {
        let body = String::from_utf8_lossy(&self.body).into_owned();
        body.split('&')
            .chain(self.query.split('&'))
            .find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k == name).then(|| percent_decode(v))
            })
    }

    /// The service the SigV4 credential scope names (s3, ec2, route53, sts).
    pub fn service(&self) -> Option<String> {
        let auth = self.headers.get("authorization")?.to_str().ok()?;
        let scope = auth.split("Credential=").nth(1)?.split(',').next()?;
        scope.split('/').nth(3).map(str::to_owned)
    }
}

fn percent_decode(value: &str) -> String {
    let bytes = value.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A canned answer.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Canned {
    /// An S3-style XML error.
    pub fn s3_error(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/xml".into())],
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>HARNESS</RequestId></Error>"
            ),
        }
    }

    /// An EC2-style (query protocol) XML error.
    pub fn ec2_error(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/xml".into())],
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>HARNESS</RequestID></Response>"
            ),
        }
    }
}

impl Canned {
    /// A Route53-style (REST-XML) error, e.g. `Throttling` or `PriorRequestNotComplete`.
    pub fn route53_error(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/xml".into())],
            body: format!(
                "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>HARNESS</RequestId></ErrorResponse>"
            ),
        }
    }
}

type Matcher = Arc<dyn Fn(&Seen) -> bool + Send + Sync>;
/// A rewrite sees each answer that came from upstream (status and body) and may
/// replace its body: how the harness adds behaviour moto lacks to moto's answers.
pub type Rewrite = Arc<dyn Fn(&Seen, u16, &str) -> Option<String> + Send + Sync>;
/// A hook may answer a request itself (Some) or let it through to moto (None).
pub type Hook = Arc<dyn Fn(&Seen) -> Option<Canned> + Send + Sync>;

struct Rule {
    matcher: Matcher,
    remaining: Option<u32>,
    answer: Answer,
}

enum Answer {
    Canned(Canned),
    Delay(Duration),
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub method: Method,
    pub path: String,
    pub action: Option<String>,
    pub status: u16,
}

struct Inner {
    upstream: String,
    rules: Vec<Rule>,
    hooks: Vec<Hook>,
    rewrites: Vec<Rewrite>,
    log: Vec<Logged>,
}

#[derive(Clone)]
pub struct AwsFront {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl AwsFront {
    pub fn start(upstream: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            upstream: upstream.trim_end_matches('/').to_owned(),
            rules: Vec::new(),
            hooks: Vec::new(),
            rewrites: Vec::new(),
            log: Vec::new(),
        }));
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let addr = serve(router);
        Self { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the next `times` requests that match with `canned` (forever if None).
    pub fn fail(
        &self,
        times: Option<u32>,
        matcher: impl Fn(&Seen) -> bool + Send + Sync + 'static,
        canned: Canned,
    ) {
        self.lock().rules.push(Rule {
            matcher: Arc::new(matcher),
            remaining: times,
            answer: Answer::Canned(canned),
        });
    }

    /// Delays matching requests before passing them on.
    pub fn delay(&self, matcher: impl Fn(&Seen) -> bool + Send + Sync + 'static, delay: Duration) {
        self.lock().rules.push(Rule {
            matcher: Arc::new(matcher),
            remaining: None,
            answer: Answer::Delay(delay),
        });
    }

    pub fn hook(&self, hook: impl Fn(&Seen) -> Option<Canned> + Send + Sync + 'static) {
        self.lock().hooks.push(Arc::new(hook));
    }

    pub fn rewrite(
        &self,
        rewrite: impl Fn(&Seen, u16, &str) -> Option<String> + Send + Sync + 'static,
    ) {
        self.lock().rewrites.push(Arc::new(rewrite));
    }

    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.rules.clear();
        inner.hooks.clear();
        inner.rewrites.clear();
    }

    pub fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("front lock")
    }
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts.headers.clone(),
        body,
    };
    let (upstream, decision, rewrites) = {
        let mut inner = inner.lock().expect("front lock");
        let upstream = inner.upstream.clone();
        let rewrites = inner.rewrites.clone();
        let mut decision = None;
        let mut delay = None;
        for rule in inner.rules.iter_mut() {
            if rule.remaining == Some(0) || !(rule.matcher)(&seen) {
                continue;
            }
            match &rule.answer {
                Answer::Delay(d) => delay = Some(*d),
                Answer::Canned(canned) => {
                    if let Some(n) = rule.remaining.as_mut() {
                        *n -= 1;
                    }
                    decision = Some(canned.clone());
                    break;
                }
            }
        }
        if decision.is_none() {
            decision = inner.hooks.iter().find_map(|hook| hook(&seen));
        }
        (upstream, (decision, delay), rewrites)
    };
    let (canned, delay) = decision;
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let response = match canned {
        Some(canned) => canned_response(canned),
        None => forward(&upstream, &seen, &rewrites).await,
    };
    inner.lock().expect("front lock").log.push(Logged {
        method: seen.method.clone(),
        path: seen.path.clone(),
        action: seen.action(),
        status: response.status().as_u16(),
    });
    response
}

fn canned_response(canned: Canned) -> Response {
    let mut response = (
        StatusCode::from_u16(canned.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        canned.body,
    )
        .into_response();
    for (name, value) in canned.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

async fn forward(upstream: &str, seen: &Seen, rewrites: &[Rewrite]) -> Response {
    let client = crate::runtime::control_client();
    let query = if seen.query.is_empty() {
        String::new()
    } else {
        format!("?{}", seen.query)
    };
    let mut request = client.request(
        seen.method.clone(),
        format!("{upstream}{}{query}", seen.path),
    );
    for (name, value) in &seen.headers {
        if name != "content-length" && name != "transfer-encoding" {
            request = request.header(name, value);
        }
    }
    match request.body(seen.body.clone()).send().await {
        Ok(upstream_response) => {
            let status = upstream_response.status();
            let headers = upstream_response.headers().clone();
            let mut bytes = upstream_response.bytes().await.unwrap_or_default();
            for rewrite in rewrites {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                if let Some(new) = rewrite(seen, status.as_u16(), &text) {
                    bytes = Bytes::from(new);
                }
            }
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            for (name, value) in &headers {
                if name != "transfer-encoding" && name != "content-length" {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("front: upstream failed: {e}"),
        )
            .into_response(),
    }
}
