//! The HTTP applications: what workers reach (`/v1/bootstrap`, `/healthz`) and what
//! operators reach on the loopback listener (`/v1/nodes`, `/metrics`, `/healthz`), and the
//! state they share.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use super::ec2::Ec2;
use super::groups::GroupRegistry;
use super::metrics::Metrics;
use super::refusal::{self, LogBudget};
use super::replay::ReplayCache;
use super::sources::RequestRates;
use super::specs::SpecStore;
use super::store::NodeStore;
use super::sts::Sts;
use crate::config::ShimConfig;
use crate::pki::CertificateAuthority;
use crate::protocol::{
    BOOTSTRAP_PATH, ErrorCode, HEALTH_PATH, METRICS_PATH, NODES_PATH, NodesResponse,
    PROTOCOL_VERSION,
};

/// Proofs remembered against replay (~100 bytes each); the global upstream budget lets
/// at most its rate times the proof lifetime through.
const MAX_REMEMBERED_PROOFS: usize = 200_000;

/// Refusals logged whole per second; beyond, counted (see [`LogBudget`]).
const REFUSAL_LOG_LINES_PER_SECOND: u32 = 50;

/// Everything a request needs; shared by all connections.
pub struct Shim {
    pub config: ShimConfig,
    pub ca: CertificateAuthority,
    pub sts: Sts,
    pub ec2: Ec2,
    pub store: NodeStore,
    pub specs: SpecStore,
    pub groups: Arc<GroupRegistry>,
    pub metrics: Arc<Metrics>,
    /// The global upstream budget: charged only after a request's own checks passed.
    pub(super) upstream_budget: DefaultDirectRateLimiter,
    pub(super) per_source: RequestRates,
    pub(super) permits: Semaphore,
    pub(super) log_budget: LogBudget,
    pub(super) replays: ReplayCache,
}

/// What [`Shim::new`] is built from.
pub struct Parts {
    pub config: ShimConfig,
    pub ca: CertificateAuthority,
    pub sts: Sts,
    pub ec2: Ec2,
    pub s3: aws_sdk_s3::Client,
}

impl Shim {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            config,
            ca,
            sts,
            ec2,
            s3,
        } = parts;
        let limits = &config.limits;
        let rate = NonZeroU32::new(limits.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.burst).unwrap_or(NonZeroU32::MIN);
        let metrics = Arc::new(Metrics::new());
        let groups = Arc::new(GroupRegistry::new(
            &config.node_groups,
            s3.clone(),
            metrics.clone(),
            Duration::from_secs(limits.node_groups_min_reread_seconds),
        ));
        Self {
            upstream_budget: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            per_source: RequestRates::new(
                limits.per_source_requests_per_second,
                limits.per_source_burst,
            ),
            permits: Semaphore::new(limits.concurrency),
            log_budget: LogBudget::new(REFUSAL_LOG_LINES_PER_SECOND),
            // A proof passes the date check within the skew either side of its date.
            replays: ReplayCache::new(
                Duration::from_secs(2 * limits.max_clock_skew_seconds + 60),
                MAX_REMEMBERED_PROOFS,
            ),
            store: NodeStore::new(s3.clone(), &config.state.bucket, &config.state.prefix),
            specs: SpecStore::new(s3),
            groups,
            metrics,
            config,
            ca,
            sts,
            ec2,
        }
    }

    /// The upkeep that runs beside the listeners: re-reading node groups kept in the
    /// store, refreshing the fleet view, forgetting idle sources. Dropping the handles
    /// stops nothing; abort them.
    pub fn start_upkeep(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let limits = &self.config.limits;
        let mut tasks = Vec::new();
        tasks.extend(
            self.groups
                .watch(Duration::from_secs(limits.node_groups_refresh_seconds)),
        );
        let shim = self.clone();
        let every = Duration::from_secs(limits.fleet_refresh_seconds);
        tasks.push(tokio::spawn(async move {
            loop {
                let began = Instant::now();
                match shim.store.refresh().await {
                    Ok(read) => tracing::debug!(read, "fleet view refreshed"),
                    Err(e) => tracing::warn!(error = %e, "the fleet view could not be refreshed"),
                }
                shim.metrics.upstream("s3", began.elapsed());
                tokio::time::sleep(every).await;
            }
        }));
        let shim = self.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                shim.per_source.forget_idle();
            }
        }));
        tasks
    }
}

/// What workers reach.
pub fn router(shim: Arc<Shim>) -> Router {
    Router::new()
        .route(BOOTSTRAP_PATH, post(super::bootstrap::bootstrap))
        .route(HEALTH_PATH, get(|| async { "ok\n" }))
        .fallback(not_found)
        .with_state(shim)
}

/// What operators reach, on the loopback listener.
pub fn admin_router(shim: Arc<Shim>) -> Router {
    Router::new()
        .route(NODES_PATH, get(nodes))
        .route(METRICS_PATH, get(metrics))
        .route(HEALTH_PATH, get(|| async { "ok\n" }))
        .fallback(not_found)
        .with_state(shim)
}

async fn not_found() -> Response {
    refusal::response(ErrorCode::NotFound, &refusal::request_id())
}

/// The fleet view, from memory: no S3 call, whatever the fleet's size.
async fn nodes(State(shim): State<Arc<Shim>>) -> Response {
    let started = Instant::now();
    let (nodes, refreshed_at) = shim.store.fleet();
    let Some(refreshed_at) = refreshed_at else {
        // Not read from the store yet: an empty list would be a lie.
        shim.metrics.request(
            "nodes",
            ErrorCode::UpstreamUnavailable.as_str(),
            started.elapsed(),
            Duration::ZERO,
        );
        return refusal::response(ErrorCode::UpstreamUnavailable, &refusal::request_id());
    };
    let answer = NodesResponse {
        api_version: PROTOCOL_VERSION.to_owned(),
        refreshed_at: rfc3339(refreshed_at),
        nodes,
    };
    shim.metrics
        .request("nodes", "ok", started.elapsed(), Duration::ZERO);
    axum::Json(answer).into_response()
}

async fn metrics(State(shim): State<Arc<Shim>>) -> Response {
    shim.metrics.ec2_calls(shim.ec2.calls());
    let mut response = Response::new(Body::from(shim.metrics.render()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

pub fn rfc3339(time: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
