//! The HTTP application: routes, the bootstrap decision, and its bookkeeping.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use super::ec2::{Ec2, Ec2Error, InstanceView};
use super::metrics::Metrics;
use super::specs::SpecCache;
use super::store::{NodeStore, Write};
use super::sts::{RoleSession, Sts, StsError, is_instance_id};
use crate::config::{NodeGroupSettings, NodeNaming, ShimConfig};
use crate::identity::{IdentityError, IdentityToken};
use crate::pki::{CertificateAuthority, CertificateRequest, Profile, Subject, Usage};
use crate::protocol::{
    BOOTSTRAP_PATH, BootstrapRequest, BootstrapResponse, ErrorBody, ErrorCode, HEALTH_PATH,
    IssuedCredentials, METRICS_PATH, NODES_PATH, NodeRecord, NodesResponse, PROTOCOL_VERSION,
    SERVER_TIMING_HEADER, encode_bytes,
};

pub const NODES_GROUP: &str = "system:nodes";

/// Everything a request needs; shared by all connections.
pub struct Shim {
    pub config: ShimConfig,
    pub ca: CertificateAuthority,
    pub sts: Sts,
    pub ec2: Ec2,
    pub store: NodeStore,
    pub specs: SpecCache,
    pub metrics: Metrics,
    limiter: DefaultDirectRateLimiter,
    permits: Semaphore,
}

impl Shim {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: ShimConfig,
        ca: CertificateAuthority,
        sts: Sts,
        ec2: Ec2,
        store: NodeStore,
        specs: SpecCache,
    ) -> Self {
        let rate = std::num::NonZeroU32::new(config.limits.requests_per_second)
            .unwrap_or(std::num::NonZeroU32::MIN);
        let burst =
            std::num::NonZeroU32::new(config.limits.burst).unwrap_or(std::num::NonZeroU32::MIN);
        let permits = Semaphore::new(config.limits.concurrency);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            permits,
            config,
            ca,
            sts,
            ec2,
            store,
            specs,
            metrics: Metrics::new(),
        }
    }
}

pub fn router(shim: Arc<Shim>) -> Router {
    Router::new()
        .route(BOOTSTRAP_PATH, post(bootstrap))
        .route(NODES_PATH, get(nodes))
        .route(HEALTH_PATH, get(|| async { "ok\n" }))
        .route(METRICS_PATH, get(metrics))
        .fallback(|| async { refusal(ErrorCode::NotFound, "no such endpoint".to_owned()) })
        .with_state(shim)
}

/// A refusal: the code decides the status; the message says why, for the node's log.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

fn refusal(code: ErrorCode, message: String) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(ErrorBody { code, message })).into_response();
    if code.retryable() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Where a request's time went.
#[derive(Debug, Default)]
struct Timing {
    /// Waiting for the request body to arrive.
    receive: Duration,
    /// Waiting for a slot among the bootstraps allowed to talk to AWS at once.
    queue: Duration,
    sts: Duration,
    ec2: Duration,
    s3: Duration,
}

impl Timing {
    fn upstream(&self) -> Duration {
        self.sts + self.ec2 + self.s3
    }

    /// Time the shim was not working on the request: upstream calls and waiting.
    fn not_own(&self) -> Duration {
        self.upstream() + self.queue + self.receive
    }

    fn header(&self, total: Duration) -> String {
        let own = total.saturating_sub(self.not_own());
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "shim;dur={:.3}, receive;dur={:.3}, queue;dur={:.3}, sts;dur={:.3}, ec2;dur={:.3}, s3;dur={:.3}, total;dur={:.3}",
            ms(own),
            ms(self.receive),
            ms(self.queue),
            ms(self.sts),
            ms(self.ec2),
            ms(self.s3),
            ms(total)
        )
    }
}

async fn timed<T>(
    metrics: &Metrics,
    service: &str,
    slot: &mut Duration,
    future: impl std::future::Future<Output = T>,
) -> T {
    let began = Instant::now();
    let out = future.await;
    let took = began.elapsed();
    *slot += took;
    metrics.upstream(service, took);
    out
}

async fn bootstrap(State(shim): State<Arc<Shim>>, request: Request) -> Response {
    let started = Instant::now();
    let mut timing = Timing::default();
    let result = handle_bootstrap(&shim, request, &mut timing).await;
    let total = started.elapsed();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(refusal) => refusal.code.as_str(),
    };
    shim.metrics.request(
        "bootstrap",
        outcome,
        total,
        timing.upstream() + timing.queue,
    );
    let mut response = match result {
        Ok(answer) => (StatusCode::OK, axum::Json(answer)).into_response(),
        Err(r) => {
            tracing::warn!(code = %r.code, reason = %r.message, "bootstrap refused");
            refusal(r.code, r.message)
        }
    };
    if let Ok(value) = HeaderValue::from_str(&timing.header(total)) {
        response.headers_mut().insert(SERVER_TIMING_HEADER, value);
    }
    response
}

async fn handle_bootstrap(
    shim: &Shim,
    request: Request,
    timing: &mut Timing,
) -> Result<BootstrapResponse, Refusal> {
    let limits = &shim.config.limits;
    if shim.limiter.check().is_err() {
        return Err(refuse(
            ErrorCode::RateLimited,
            "too many bootstrap requests; retry shortly",
        ));
    }
    let (parts, body) = request.into_parts();
    let too_large = || {
        refuse(
            ErrorCode::TooLarge,
            format!(
                "the request is larger than {} bytes",
                limits.max_request_bytes
            ),
        )
    };
    if content_length(&parts.headers).is_some_and(|n| n > limits.max_request_bytes) {
        return Err(too_large());
    }
    // Receiving the body is the network's and the client's time, not the shim's.
    let receiving = Instant::now();
    let body = axum::body::to_bytes(body, limits.max_request_bytes)
        .await
        .map_err(|_| too_large())?;
    timing.receive = receiving.elapsed();

    // What can be checked without asking anyone comes first.
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refuse(ErrorCode::MissingIdentity, "no Authorization header"))
        .and_then(|v| IdentityToken::from_header(v).map_err(identity_refusal))?;
    let replay = token
        .check(
            &body,
            shim.sts.endpoint(),
            SystemTime::now(),
            Duration::from_secs(limits.max_clock_skew_seconds),
        )
        .map_err(identity_refusal)?;
    let request: BootstrapRequest = serde_json::from_slice(&body).map_err(|e| {
        refuse(
            ErrorCode::BadRequest,
            format!("the body is not a bootstrap request: {e}"),
        )
    })?;
    if request.api_version != PROTOCOL_VERSION {
        return Err(refuse(
            ErrorCode::BadRequest,
            format!(
                "protocol version {:?} is not {PROTOCOL_VERSION}",
                request.api_version
            ),
        ));
    }
    let group = shim.config.node_group(&request.node_group).ok_or_else(|| {
        refuse(
            ErrorCode::UnknownNodeGroup,
            format!("node group {:?} is not served here", request.node_group),
        )
    })?;
    let csrs = match &request.credentials {
        Some(credentials) => Some((
            CertificateRequest::from_pem("the client CSR", &credentials.client_csr)
                .map_err(|e| refuse(ErrorCode::BadCsr, e.to_string()))?,
            CertificateRequest::from_pem("the serving CSR", &credentials.serving_csr)
                .map_err(|e| refuse(ErrorCode::BadCsr, e.to_string()))?,
        )),
        None => None,
    };

    // Bound the upstream calls in flight; waiting here is queueing, not work.
    let queued = Instant::now();
    let _permit = shim
        .permits
        .acquire()
        .await
        .map_err(|_| refuse(ErrorCode::Internal, "shutting down"))?;
    timing.queue = queued.elapsed();

    let identity = timed(
        &shim.metrics,
        "sts",
        &mut timing.sts,
        shim.sts.caller_identity(&replay),
    )
    .await
    .map_err(|e| match e {
        StsError::Rejected { .. } => refuse(ErrorCode::IdentityRejected, e.to_string()),
        StsError::Unavailable(_) => refuse(ErrorCode::UpstreamUnavailable, e.to_string()),
    })?;
    let session = check_session(&shim.config, group, &identity.arn, &identity.account)?;
    let instance = timed(
        &shim.metrics,
        "ec2",
        &mut timing.ec2,
        shim.ec2.describe(&session.session),
    )
    .await
    .map_err(|e| match e {
        Ec2Error::NotFound(_) => refuse(ErrorCode::InstanceNotFound, e.to_string()),
        Ec2Error::Unavailable(_) => refuse(ErrorCode::UpstreamUnavailable, e.to_string()),
    })?;
    check_instance(&shim.config, group, &instance)?;
    let node_name = node_name(group, &instance)?;
    let spec = timed(
        &shim.metrics,
        "s3",
        &mut timing.s3,
        shim.specs.get(&group.node_spec),
    )
    .await
    .map_err(|e| refuse(ErrorCode::UpstreamUnavailable, e.to_string()))?;

    let mut answer = BootstrapResponse {
        api_version: PROTOCOL_VERSION.to_owned(),
        instance_id: instance.instance_id.clone(),
        node_name: node_name.clone(),
        node_spec: encode_bytes(&spec.bytes),
        node_spec_sha256: spec.sha256.clone(),
        ca_bundle: shim.ca.cert_pem().to_owned(),
        credentials: None,
    };
    let Some((client_csr, serving_csr)) = csrs else {
        tracing::info!(instance = %instance.instance_id, node = %node_name, "served the node spec");
        return Ok(answer);
    };
    let own_names = [
        node_name.as_str(),
        instance.instance_id.as_str(),
        instance.private_dns_name.as_str(),
    ];
    check_csr("client", &client_csr, &own_names)?;
    check_csr("serving", &serving_csr, &own_names)?;
    let certificates = &shim.config.certificates;
    let validity = Duration::from_secs(u64::from(certificates.validity_days) * 86400);
    let backdate = Duration::from_secs(u64::from(certificates.backdate_minutes) * 60);
    let subject = Subject::new(&format!("system:node:{node_name}"), &[NODES_GROUP]);
    let client = shim
        .ca
        .issue(
            &client_csr.public_key,
            &Profile {
                subject: subject.clone(),
                dns_names: Vec::new(),
                ips: Vec::new(),
                usage: Usage::Client,
                validity,
                backdate,
            },
        )
        .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
    let (dns_names, ips) = serving_names(&instance);
    let serving = shim
        .ca
        .issue(
            &serving_csr.public_key,
            &Profile {
                subject,
                dns_names,
                ips,
                usage: Usage::Server,
                validity,
                backdate,
            },
        )
        .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;

    let now = rfc3339(SystemTime::now());
    let record = NodeRecord {
        instance_id: instance.instance_id.clone(),
        node_name: node_name.clone(),
        node_group: group.name.clone(),
        bootstrapped_at: now.clone(),
        last_bootstrap_at: now.clone(),
        bootstraps: 1,
        node_spec_sha256: spec.sha256.clone(),
        client_key_sha256: client_csr.public_key.fingerprint(),
        role_arn: identity.arn.clone(),
    };
    timed(
        &shim.metrics,
        "s3",
        &mut timing.s3,
        claim(shim, group, record),
    )
    .await?;
    shim.metrics.certificates_issued(2);
    tracing::info!(instance = %instance.instance_id, node = %node_name, group = %group.name,
        spec_sha256 = %spec.sha256, "bootstrapped a node");
    answer.credentials = Some(IssuedCredentials {
        client_certificate: client.pem,
        serving_certificate: serving.pem,
    });
    Ok(answer)
}

/// Records the bootstrap; refuses a second one with another key unless allowed.
async fn claim(shim: &Shim, group: &NodeGroupSettings, record: NodeRecord) -> Result<(), Refusal> {
    let unavailable =
        |e: super::store::StoreError| refuse(ErrorCode::UpstreamUnavailable, e.to_string());
    // A create that loses a race reads the winner; one more round settles it.
    for _ in 0..3 {
        if shim.store.create(&record).await.map_err(unavailable)? == Write::Done {
            return Ok(());
        }
        let Some((existing, etag)) = shim
            .store
            .get(&record.instance_id)
            .await
            .map_err(unavailable)?
        else {
            continue; // deleted in between: create again
        };
        if existing.client_key_sha256 == record.client_key_sha256 {
            // The same key again: the node retried after losing our answer.
            return Ok(());
        }
        if !group.allow_rebootstrap {
            return Err(refuse(
                ErrorCode::AlreadyBootstrapped,
                format!(
                    "instance {} bootstrapped at {} with another key; node group {} does not allow re-bootstrap",
                    existing.instance_id, existing.bootstrapped_at, group.name
                ),
            ));
        }
        let replacement = NodeRecord {
            bootstrapped_at: existing.bootstrapped_at.clone(),
            bootstraps: existing.bootstraps.saturating_add(1),
            ..record.clone()
        };
        if shim
            .store
            .replace(&replacement, &etag)
            .await
            .map_err(unavailable)?
            == Write::Done
        {
            tracing::warn!(instance = %record.instance_id, "re-bootstrapped a node with a new key");
            return Ok(());
        }
    }
    Err(refuse(
        ErrorCode::UpstreamUnavailable,
        "the bootstrap record kept changing under us; retry",
    ))
}

fn identity_refusal(error: IdentityError) -> Refusal {
    let code = match &error {
        IdentityError::Sign(_) | IdentityError::Malformed(_) => ErrorCode::MissingIdentity,
        IdentityError::BodyNotSigned => ErrorCode::BodyNotSigned,
        IdentityError::BodyMismatch { .. } => ErrorCode::BodyMismatch,
        IdentityError::Stale { .. } => ErrorCode::StaleSignature,
        IdentityError::WrongTarget { .. } => ErrorCode::IdentityRejected,
    };
    refuse(code, error.to_string())
}

fn check_session(
    config: &ShimConfig,
    group: &NodeGroupSettings,
    arn: &str,
    account: &str,
) -> Result<RoleSession, Refusal> {
    let session = RoleSession::parse(arn).ok_or_else(|| {
        refuse(
            ErrorCode::NotAnInstance,
            format!("{arn} is not an assumed-role session (an instance role's identity)"),
        )
    })?;
    if session.partition != config.aws.partition
        || session.account != config.aws.account_id
        || account != config.aws.account_id
    {
        return Err(refuse(
            ErrorCode::WrongAccount,
            format!(
                "{arn} is not in account {} of partition {}",
                config.aws.account_id, config.aws.partition
            ),
        ));
    }
    if !group.roles.contains(&session.role) {
        return Err(refuse(
            ErrorCode::RoleNotAllowed,
            format!(
                "role {} may not bootstrap into node group {} (allowed: {})",
                session.role,
                group.name,
                group.roles.join(", ")
            ),
        ));
    }
    if !is_instance_id(&session.session) {
        return Err(refuse(
            ErrorCode::NotAnInstance,
            format!("session {:?} is not an EC2 instance id", session.session),
        ));
    }
    Ok(session)
}

fn check_instance(
    config: &ShimConfig,
    group: &NodeGroupSettings,
    instance: &InstanceView,
) -> Result<(), Refusal> {
    // EC2 may still say `pending` for an instance that is already running code: its
    // state lags by seconds, so that is "ask again", not a refusal.
    if instance.state == "pending" {
        return Err(refuse(
            ErrorCode::UpstreamUnavailable,
            format!(
                "EC2 still reports instance {} as pending; ask again",
                instance.instance_id
            ),
        ));
    }
    if instance.state != "running" {
        return Err(refuse(
            ErrorCode::InstanceNotRunning,
            format!("instance {} is {}", instance.instance_id, instance.state),
        ));
    }
    let cluster_tag = format!("kubernetes.io/cluster/{}", config.cluster_name);
    match instance.tags.get(&cluster_tag).map(String::as_str) {
        Some("owned" | "shared") => {}
        _ => {
            return Err(refuse(
                ErrorCode::WrongCluster,
                format!(
                    "instance {} has no tag {cluster_tag}=owned: it is not in cluster {}",
                    instance.instance_id, config.cluster_name
                ),
            ));
        }
    }
    let tagged = instance.tags.get(&config.node_group_tag);
    if tagged != Some(&group.name) {
        return Err(refuse(
            ErrorCode::WrongNodeGroup,
            format!(
                "instance {} is tagged {}={} but asks for node group {}",
                instance.instance_id,
                config.node_group_tag,
                tagged.map(String::as_str).unwrap_or("(none)"),
                group.name
            ),
        ));
    }
    Ok(())
}

fn node_name(group: &NodeGroupSettings, instance: &InstanceView) -> Result<String, Refusal> {
    match group.node_name {
        NodeNaming::InstanceId => Ok(instance.instance_id.clone()),
        NodeNaming::PrivateDnsName if !instance.private_dns_name.is_empty() => {
            Ok(instance.private_dns_name.clone())
        }
        NodeNaming::PrivateDnsName => Err(refuse(
            ErrorCode::Internal,
            format!(
                "instance {} has no private DNS name (enable DNS hostnames in its VPC, or name nodes by instance id)",
                instance.instance_id
            ),
        )),
    }
}

/// A node may only ask for itself: `CN=system:node:<one of its own names>`, in no group
/// but system:nodes, with no other subject attributes. What it asks for is not what it
/// gets: the certificate's subject and SANs come from EC2.
fn check_csr(kind: &str, csr: &CertificateRequest, own_names: &[&str]) -> Result<(), Refusal> {
    let cn = csr.common_name().ok_or_else(|| {
        refuse(
            ErrorCode::CsrNotAllowed,
            format!("the {kind} CSR must have exactly one common name"),
        )
    })?;
    let asked = cn.strip_prefix("system:node:").unwrap_or("");
    if !own_names.iter().any(|n| !n.is_empty() && *n == asked) {
        return Err(refuse(
            ErrorCode::CsrNotAllowed,
            format!(
                "the {kind} CSR asks for {cn:?}, which is not this node (system:node:{})",
                own_names[0]
            ),
        ));
    }
    if let Some(group) = csr.organizations.iter().find(|o| *o != NODES_GROUP) {
        return Err(refuse(
            ErrorCode::CsrNotAllowed,
            format!("the {kind} CSR asks for group {group:?}; a node may only be in {NODES_GROUP}"),
        ));
    }
    if let Some(other) = csr.other_attributes.iter().find(|a| !a.starts_with("SAN ")) {
        return Err(refuse(
            ErrorCode::CsrNotAllowed,
            format!("the {kind} CSR's subject has {other}, which a node may not ask for"),
        ));
    }
    Ok(())
}

/// The serving certificate's names: from EC2 only.
fn serving_names(instance: &InstanceView) -> (Vec<String>, Vec<IpAddr>) {
    let dns = if instance.private_dns_name.is_empty() {
        Vec::new()
    } else {
        vec![instance.private_dns_name.clone()]
    };
    (dns, instance.ips.clone())
}

async fn nodes(State(shim): State<Arc<Shim>>) -> Response {
    let started = Instant::now();
    let mut upstream = Duration::ZERO;
    let result = timed(&shim.metrics, "s3", &mut upstream, shim.store.list()).await;
    let (outcome, response) = match result {
        Ok(nodes) => (
            "ok",
            axum::Json(NodesResponse {
                api_version: PROTOCOL_VERSION.to_owned(),
                nodes,
            })
            .into_response(),
        ),
        Err(e) => (
            ErrorCode::UpstreamUnavailable.as_str(),
            refusal(ErrorCode::UpstreamUnavailable, e.to_string()),
        ),
    };
    shim.metrics
        .request("nodes", outcome, started.elapsed(), upstream);
    response
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

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

pub fn rfc3339(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pki::{KeyAlgorithm, PrivateKey};

    fn csr(subject: Subject) -> CertificateRequest {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let pem = key.certificate_request(&subject, &[], &[]).unwrap();
        CertificateRequest::from_pem("csr", &pem).unwrap()
    }

    #[test]
    fn a_node_may_ask_only_for_itself() {
        let own = [
            "ip-10-0-1-23.ec2.internal",
            "i-0a1b2c3d4e5f60718",
            "ip-10-0-1-23.ec2.internal",
        ];
        for name in ["ip-10-0-1-23.ec2.internal", "i-0a1b2c3d4e5f60718"] {
            check_csr(
                "client",
                &csr(Subject::new(&format!("system:node:{name}"), &[NODES_GROUP])),
                &own,
            )
            .unwrap();
        }
        check_csr(
            "client",
            &csr(Subject::new("system:node:i-0a1b2c3d4e5f60718", &[])),
            &own,
        )
        .unwrap();
        for bad in [
            Subject::new("system:node:ip-10-0-9-9.ec2.internal", &[NODES_GROUP]),
            Subject::new("system:node:", &[NODES_GROUP]),
            Subject::new("admin", &[NODES_GROUP]),
            Subject::new("system:node:i-0a1b2c3d4e5f60718", &["system:masters"]),
        ] {
            let err = check_csr("client", &csr(bad.clone()), &own).unwrap_err();
            assert_eq!(err.code, ErrorCode::CsrNotAllowed, "{bad}");
        }
    }

    #[test]
    fn sessions_must_be_instance_roles_of_this_account() {
        let config = ShimConfig::parse("c", crate::config::tests::EXAMPLE).unwrap();
        let group = &config.node_groups[0];
        let ok =
            "arn:aws:sts::123456789012:assumed-role/nodes.prod.example.com/i-0a1b2c3d4e5f60718";
        assert_eq!(
            check_session(&config, group, ok, "123456789012")
                .unwrap()
                .session,
            "i-0a1b2c3d4e5f60718"
        );
        let cases = [
            (
                "arn:aws:sts::210987654321:assumed-role/nodes.prod.example.com/i-0a1b2c3d4e5f60718",
                "210987654321",
                ErrorCode::WrongAccount,
            ),
            (
                "arn:aws-cn:sts::123456789012:assumed-role/nodes.prod.example.com/i-0a1b2c3d4e5f60718",
                "123456789012",
                ErrorCode::WrongAccount,
            ),
            (
                "arn:aws:sts::123456789012:assumed-role/admin/i-0a1b2c3d4e5f60718",
                "123456789012",
                ErrorCode::RoleNotAllowed,
            ),
            (
                "arn:aws:sts::123456789012:assumed-role/nodes.prod.example.com/alice",
                "123456789012",
                ErrorCode::NotAnInstance,
            ),
            (
                "arn:aws:iam::123456789012:user/alice",
                "123456789012",
                ErrorCode::NotAnInstance,
            ),
        ];
        for (arn, account, code) in cases {
            assert_eq!(
                check_session(&config, group, arn, account)
                    .unwrap_err()
                    .code,
                code,
                "{arn}"
            );
        }
    }

    #[test]
    fn only_a_pending_instance_is_asked_to_come_back() {
        let config = ShimConfig::parse("c", crate::config::tests::EXAMPLE).unwrap();
        let group = &config.node_groups[0];
        let instance = |state: &str| InstanceView {
            instance_id: "i-0a1b2c3d4e5f60718".to_owned(),
            state: state.to_owned(),
            tags: [
                ("kubernetes.io/cluster/prod.example.com", "owned"),
                (config.node_group_tag.as_str(), group.name.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            private_dns_name: "ip-10-0-1-23.ec2.internal".to_owned(),
            ips: vec!["10.0.1.23".parse().unwrap()],
        };
        check_instance(&config, group, &instance("running")).unwrap();
        let pending = check_instance(&config, group, &instance("pending")).unwrap_err();
        assert_eq!(pending.code, ErrorCode::UpstreamUnavailable);
        assert!(pending.code.retryable(), "{}", pending.message);
        for state in ["stopping", "stopped", "shutting-down", "terminated"] {
            let refused = check_instance(&config, group, &instance(state)).unwrap_err();
            assert_eq!(refused.code, ErrorCode::InstanceNotRunning, "{state}");
            assert!(!refused.code.retryable(), "{state}");
        }
    }

    #[test]
    fn server_timing_separates_own_time() {
        let timing = Timing {
            receive: Duration::from_millis(3),
            queue: Duration::from_millis(1),
            sts: Duration::from_millis(10),
            ec2: Duration::from_millis(5),
            s3: Duration::ZERO,
        };
        let header = timing.header(Duration::from_millis(21));
        assert!(
            header
                .starts_with("shim;dur=2.000, receive;dur=3.000, queue;dur=1.000, sts;dur=10.000"),
            "{header}"
        );
    }
}
