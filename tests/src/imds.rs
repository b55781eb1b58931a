//! A fake EC2 instance metadata service, IMDSv2 as EC2 serves it:
//! - `PUT /latest/api/token` needs `X-aws-ec2-metadata-token-ttl-seconds` (1..=21600) and
//!   answers with a token and the same TTL header; a request carrying
//!   `X-Forwarded-For` is refused, as EC2 refuses tokens through a proxy;
//! - every `GET` needs a live token in `X-aws-ec2-metadata-token` (401 otherwise; an
//!   IMDSv1 request is counted, so tests can assert the agent never makes one);
//! - meta-data, `/latest/user-data` (404 when empty), the instance identity document,
//!   and instance-profile credentials.
//!
//! Faults can be switched on per test: slow answers, N × 500, N × 404, always down.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::netns::NetNs;
use crate::runtime::{Server, serve_listener, serve_on};

/// What one instance looks like.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub instance_id: String,
    pub account_id: String,
    pub region: String,
    pub availability_zone: String,
    pub instance_type: String,
    pub private_ip: Ipv4Addr,
    pub mac: String,
    pub ipv6: Option<String>,
    pub image_id: String,
    /// Instance-profile role and its credentials, served under iam/security-credentials.
    pub role: Option<RoleCredentials>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleCredentials {
    pub role_name: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

impl Instance {
    pub fn example(instance_id: &str) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            account_id: "123456789012".to_owned(),
            region: "us-east-1".to_owned(),
            availability_zone: "us-east-1a".to_owned(),
            instance_type: "m6i.large".to_owned(),
            private_ip: Ipv4Addr::new(10, 0, 1, 23),
            mac: "0e:1f:2a:3b:4c:5d".to_owned(),
            ipv6: None,
            image_id: "ami-0123456789abcdef0".to_owned(),
            role: Some(RoleCredentials {
                role_name: "nodes.prod.example.com".to_owned(),
                access_key_id: "ASIAHARNESSNODE".to_owned(),
                secret_access_key: "harness-node-secret".to_owned(),
                session_token: "harness-node-session".to_owned(),
            }),
        }
    }

    pub fn hostname(&self) -> String {
        format!(
            "ip-{}.ec2.internal",
            self.private_ip.to_string().replace('.', "-")
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Every answer is delayed this long.
    Slow(Duration),
    /// The next N requests (token or data) get 500.
    Errors(u32),
    /// The next N data requests get 404.
    NotFound(u32),
    /// Every request gets 500.
    Down,
}

#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub tokens: u32,
    pub gets: u32,
    /// GETs without a token: IMDSv1.
    pub unauthenticated: u32,
}

struct Inner {
    instance: Instance,
    user_data: Vec<u8>,
    fault: Fault,
    tokens: HashMap<String, Instant>,
    counters: Counters,
}

#[derive(Clone)]
pub struct FakeImds {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    /// Set when the server stops with the last clone (see [`FakeImds::start_in`]).
    _server: Option<Arc<Server>>,
}

impl FakeImds {
    /// Serves on a free loopback port.
    pub fn start(instance: Instance, user_data: &[u8]) -> Self {
        Self::start_on("127.0.0.1:0", instance, user_data)
    }

    pub fn start_on(address: &str, instance: Instance, user_data: &[u8]) -> Self {
        let inner = Self::state(instance, user_data);
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let addr = serve_on(address, router);
        Self {
            addr,
            inner,
            _server: None,
        }
    }

    /// Serves at `addr` inside a network namespace (a booted node's 169.254.169.254:80),
    /// until the last clone is dropped.
    pub fn start_in(
        netns: &NetNs,
        addr: SocketAddr,
        instance: Instance,
        user_data: &[u8],
    ) -> std::io::Result<Self> {
        let inner = Self::state(instance, user_data);
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let server = serve_listener(netns.bind_tcp(addr)?, router);
        Ok(Self {
            addr: server.addr(),
            inner,
            _server: Some(Arc::new(server)),
        })
    }

    fn state(instance: Instance, user_data: &[u8]) -> Arc<Mutex<Inner>> {
        Arc::new(Mutex::new(Inner {
            instance,
            user_data: user_data.to_vec(),
            fault: Fault::None,
            tokens: HashMap::new(),
            counters: Counters::default(),
        }))
    }

    pub fn instance(&self) -> Instance {
        self.lock().instance.clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_fault(&self, fault: Fault) {
        self.lock().fault = fault;
    }

    pub fn set_user_data(&self, user_data: &[u8]) {
        self.lock().user_data = user_data.to_vec();
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("imds lock")
    }
}

const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let (delay, response) = {
        let mut inner = inner.lock().expect("imds lock");
        let delay = match inner.fault {
            Fault::Slow(d) => Some(d),
            _ => None,
        };
        (delay, answer(&mut inner, &method, &path, &headers))
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    response
}

fn answer(inner: &mut Inner, method: &Method, path: &str, headers: &HeaderMap) -> Response {
    match inner.fault {
        Fault::Down => return (StatusCode::INTERNAL_SERVER_ERROR, "fault: down").into_response(),
        Fault::Errors(n) if n > 0 => {
            inner.fault = if n == 1 {
                Fault::None
            } else {
                Fault::Errors(n - 1)
            };
            return (StatusCode::INTERNAL_SERVER_ERROR, "fault: error").into_response();
        }
        _ => {}
    }
    if *method == Method::PUT && path == "/latest/api/token" {
        return issue_token(inner, headers);
    }
    if *method != Method::GET {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    inner.counters.gets += 1;
    let token = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    let valid = token
        .and_then(|t| inner.tokens.get(t))
        .is_some_and(|expiry| *expiry > Instant::now());
    if !valid {
        if token.is_none() {
            inner.counters.unauthenticated += 1;
        }
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if let Fault::NotFound(n) = inner.fault
        && n > 0
    {
        inner.fault = if n == 1 {
            Fault::None
        } else {
            Fault::NotFound(n - 1)
        };
        return StatusCode::NOT_FOUND.into_response();
    }
    match lookup(inner, path) {
        Some(body) => (StatusCode::OK, body).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn issue_token(inner: &mut Inner, headers: &HeaderMap) -> Response {
    if headers.contains_key("x-forwarded-for") {
        return StatusCode::FORBIDDEN.into_response();
    }
    let ttl = headers
        .get(TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(ttl) = ttl.filter(|t| (1..=21600).contains(t)) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    inner.counters.tokens += 1;
    let token = format!(
        "harness-token-{}-{}",
        inner.counters.tokens,
        fastrand_token()
    );
    inner
        .tokens
        .insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
    (StatusCode::OK, [(TTL_HEADER, ttl.to_string())], token).into_response()
}

fn fastrand_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id().into());
    hasher.finish()
}

fn lookup(inner: &Inner, path: &str) -> Option<Bytes> {
    let i = &inner.instance;
    let text = |s: String| Some(Bytes::from(s));
    let macs = format!("/latest/meta-data/network/interfaces/macs/{}/", i.mac);
    match path {
        "/latest/user-data" | "/latest/user-data/" => {
            (!inner.user_data.is_empty()).then(|| Bytes::from(inner.user_data.clone()))
        }
        "/latest/dynamic/instance-identity/document" => text(
            serde_json::to_string_pretty(&serde_json::json!({
                "accountId": i.account_id,
                "architecture": "x86_64",
                "availabilityZone": i.availability_zone,
                "imageId": i.image_id,
                "instanceId": i.instance_id,
                "instanceType": i.instance_type,
                "pendingTime": "2026-12-01T00:00:00Z",
                "privateIp": i.private_ip.to_string(),
                "region": i.region,
                "version": "2017-09-30",
            }))
            .ok()?,
        ),
        "/latest/meta-data/instance-id" => text(i.instance_id.clone()),
        "/latest/meta-data/instance-type" => text(i.instance_type.clone()),
        "/latest/meta-data/ami-id" => text(i.image_id.clone()),
        "/latest/meta-data/local-ipv4" => text(i.private_ip.to_string()),
        "/latest/meta-data/local-hostname" | "/latest/meta-data/hostname" => text(i.hostname()),
        "/latest/meta-data/mac" => text(i.mac.clone()),
        "/latest/meta-data/placement/region" => text(i.region.clone()),
        "/latest/meta-data/placement/availability-zone" => text(i.availability_zone.clone()),
        p if p.starts_with(&macs) && p.ends_with("/ipv6s") => i.ipv6.clone().map(Bytes::from),
        "/latest/meta-data/iam/security-credentials"
        | "/latest/meta-data/iam/security-credentials/" => {
            i.role.as_ref().map(|r| Bytes::from(r.role_name.clone()))
        }
        p if p.starts_with("/latest/meta-data/iam/security-credentials/") => {
            let role = i.role.as_ref()?;
            let name = p.trim_start_matches("/latest/meta-data/iam/security-credentials/");
            (name.trim_end_matches('/') == role.role_name).then(|| {
                Bytes::from(
                    serde_json::json!({
                        "Code": "Success",
                        "LastUpdated": "2026-12-01T00:00:00Z",
                        "Type": "AWS-HMAC",
                        "AccessKeyId": role.access_key_id,
                        "SecretAccessKey": role.secret_access_key,
                        "Token": role.session_token,
                        "Expiration": "2099-01-01T00:00:00Z",
                    })
                    .to_string(),
                )
            })
        }
        _ => None,
    }
}
