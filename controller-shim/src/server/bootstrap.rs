//! `POST /v1/bootstrap`: the order of the checks is the defence.
//!
//! 1. Free: the source's request rate, the size, the body within its deadline, the proof
//!    parsed strictly (well-formed, fresh, for our STS, signed over this body) and the
//!    request itself. An unauthenticated flood ends here and costs nothing upstream.
//! 2. Only then the global upstream budget is charged, and STS says who signed.
//! 3. The caller must be an instance role session of our account before anything about
//!    groups is looked at; then the group, its roles, the instance in EC2, the spec with
//!    the digest the node pins.
//! 4. Before the instance's record exists, the spec (and, with CSRs, credentials) are
//!    served as the node group's policy says. After it, only the recorded node's client
//!    certificate (in the TLS handshake) gets anything; the same key may ask again for a
//!    short while (an answer lost on the way). What the record in memory settles is
//!    refused right after STS, before EC2 and S3 (`known`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sha2::Digest;

use super::app::{Shim, rfc3339};
use super::checks::{self, NODES_GROUP};
use super::ec2::Ec2Error;
use super::groups::Lookup;
use super::known;
use super::listener::Peer;
use super::metrics::Metrics;
use super::refusal::{self, Refusal, refuse};
use super::specs::SpecError;
use super::store::Write;
use super::sts::StsError;
use crate::groups::{NodeGroup, Rebootstrap, is_sha256_hex};
use crate::identity::{IdentityError, IdentityToken};
use crate::pki::{CertificateRequest, Profile, Subject, Usage};
use crate::protocol::{
    BootstrapRequest, BootstrapResponse, ErrorCode, IssuedCredentials, KUBE_PROXY_USER, NodeRecord,
    PROTOCOL_VERSION, SERVER_TIMING_HEADER, encode_bytes, is_nonce,
};

/// What the log line of a request needs besides the outcome.
#[derive(Debug, Default)]
struct Context {
    peer: Option<std::net::SocketAddr>,
    instance: Option<String>,
    group: Option<String>,
    /// Whether the body has arrived (a deadline before it is the client's, after it ours).
    received: bool,
    timing: Timing,
}

/// Where a request's time went.
#[derive(Debug, Default)]
pub(super) struct Timing {
    /// Waiting for the request body to arrive.
    pub receive: Duration,
    /// Waiting for a slot among the bootstraps allowed to talk to AWS at once.
    pub queue: Duration,
    pub sts: Duration,
    pub ec2: Duration,
    pub s3: Duration,
}

impl Timing {
    fn upstream(&self) -> Duration {
        self.sts + self.ec2 + self.s3
    }

    /// Time the shim was not working on the request: upstream calls and waiting.
    fn not_own(&self) -> Duration {
        self.upstream() + self.queue + self.receive
    }

    pub(super) fn header(&self, total: Duration) -> String {
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

pub async fn bootstrap(State(shim): State<Arc<Shim>>, request: Request) -> Response {
    let started = Instant::now();
    let request_id = refusal::request_id();
    let mut context = Context {
        peer: request.extensions().get::<Peer>().map(|p| p.address),
        ..Context::default()
    };
    let deadline = Duration::from_secs(shim.config.limits.request_timeout_seconds);
    let result = match tokio::time::timeout(deadline, handle(&shim, request, &mut context)).await {
        Ok(result) => result,
        Err(_) if !context.received => Err(refuse(
            ErrorCode::RequestTimeout,
            format!("the request did not arrive within {deadline:?}"),
        )),
        Err(_) => Err(refuse(
            ErrorCode::UpstreamUnavailable,
            format!("not answered within {deadline:?} (upstream calls and queueing)"),
        )),
    };
    let total = started.elapsed();
    let timing = &context.timing;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(refusal) => refusal.code.as_str(),
    };
    shim.metrics.request(
        "bootstrap",
        outcome,
        total,
        timing.upstream() + timing.queue + timing.receive,
    );
    let peer = context
        .peer
        .map(|p| p.to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    let instance = context.instance.as_deref().unwrap_or("-");
    let group = context.group.as_deref().unwrap_or("-");
    let mut response = match result {
        Ok(answer) => {
            tracing::info!(request_id, peer, instance, group, node = %answer.node_name,
                credentials = answer.credentials.is_some(), spec_sha256 = %answer.node_spec_sha256,
                "bootstrap answered");
            let mut response = (StatusCode::OK, axum::Json(answer)).into_response();
            refusal::set_request_id(&mut response, &request_id);
            response
        }
        Err(refused) => {
            if let Some(suppressed) = shim.log_budget.take() {
                if suppressed > 0 {
                    shim.metrics.log_lines_suppressed(suppressed);
                    tracing::warn!(
                        suppressed,
                        "refusals came faster than the log budget; that many were counted, not logged"
                    );
                }
                tracing::warn!(request_id, peer, instance, group, code = %refused.code,
                    reason = %refused.reason, "bootstrap refused");
            }
            refusal::response(refused.code, &request_id)
        }
    };
    if let Ok(value) = HeaderValue::from_str(&timing.header(total)) {
        response.headers_mut().insert(SERVER_TIMING_HEADER, value);
    }
    response
}

async fn handle(
    shim: &Shim,
    request: Request,
    context: &mut Context,
) -> Result<BootstrapResponse, Refusal> {
    let limits = &shim.config.limits;
    // --- 1. What costs nothing upstream.
    if let Some(peer) = context.peer
        && !shim.per_source.allow(peer.ip())
    {
        return Err(refuse(
            ErrorCode::RateLimited,
            format!("source {} is over its request rate", peer.ip()),
        ));
    }
    let (parts, body) = request.into_parts();
    let peer_certificate = parts
        .extensions
        .get::<Peer>()
        .and_then(|p| p.client_certificate.clone());
    if content_length(&parts.headers).is_some_and(|n| n > limits.max_request_bytes) {
        return Err(refuse(
            ErrorCode::TooLarge,
            format!(
                "Content-Length is more than {} bytes",
                limits.max_request_bytes
            ),
        ));
    }
    let receiving = Instant::now();
    let body_deadline = Duration::from_secs(limits.body_timeout_seconds);
    let body = match tokio::time::timeout(
        body_deadline,
        Limited::new(body, limits.max_request_bytes).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(refuse(
                ErrorCode::TooLarge,
                format!("the body is more than {} bytes", limits.max_request_bytes),
            ));
        }
        Ok(Err(e)) => {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!("the body could not be read: {e}"),
            ));
        }
        Err(_) => {
            return Err(refuse(
                ErrorCode::RequestTimeout,
                format!("the body did not arrive within {body_deadline:?} of the headers"),
            ));
        }
    };
    context.received = true;
    context.timing.receive = receiving.elapsed();

    let authorization = single_header(&parts.headers, header::AUTHORIZATION.as_str())?
        .ok_or_else(|| refuse(ErrorCode::MissingIdentity, "no Authorization header"))?;
    let token = IdentityToken::from_header(authorization).map_err(identity_refusal)?;
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
    if !is_sha256_hex(&request.node_spec_sha256) {
        return Err(refuse(
            ErrorCode::BadRequest,
            "nodeSpecSha256 is not 64 lowercase hex digits",
        ));
    }
    if !is_nonce(&request.nonce) {
        return Err(refuse(
            ErrorCode::BadRequest,
            "nonce is not 16 to 64 letters, digits, '-' or '_'",
        ));
    }
    context.group = Some(request.node_group.clone());

    // --- 2. The request's own checks passed: now it may cost something upstream.
    if shim.upstream_budget.check().is_err() {
        return Err(refuse(
            ErrorCode::RateLimited,
            "the global upstream budget (STS, EC2, S3) is spent for now",
        ));
    }
    // Single use: a proof seen before (captured, replayed) gets nothing. Remembered only
    // once the budget is charged, so a flood cannot fill the memory for free.
    let proof_sha256 = token
        .signature()
        .map(|s| hex::encode(sha2::Sha256::digest(s.as_bytes())))
        .unwrap_or_default();
    if !shim.replays.first_use(&proof_sha256) {
        return Err(refuse(
            ErrorCode::IdentityRejected,
            "this identity proof was used before (a replay)",
        ));
    }
    let queued = Instant::now();
    let _permit = shim
        .permits
        .acquire()
        .await
        .map_err(|_| refuse(ErrorCode::Internal, "shutting down"))?;
    context.timing.queue = queued.elapsed();
    let metrics = &shim.metrics;
    let identity = timed(
        metrics,
        "sts",
        &mut context.timing.sts,
        shim.sts.caller_identity(&replay),
    )
    .await
    .map_err(|e| match e {
        StsError::Rejected { .. } => refuse(ErrorCode::IdentityRejected, e.to_string()),
        StsError::Unavailable(_) => refuse(ErrorCode::UpstreamUnavailable, e.to_string()),
    })?;

    // --- 3. Who, which group, which instance, which spec.
    let session = checks::check_session(&shim.config, &identity.arn, &identity.account)?;
    context.instance = Some(session.session.clone());
    // An instance that has bootstrapped, asked for by a holder of its role without a
    // client certificate (a pod): settled from memory, at no EC2 or S3 cost.
    if peer_certificate.is_none()
        && let Some(record) = shim.store.remembered(&session.session)
    {
        let allowed = match shim.groups.lookup(&request.node_group) {
            Lookup::Found(group) => Some(group.rebootstrap == Rebootstrap::Allowed),
            _ => None,
        };
        let window = Duration::from_secs(limits.same_key_retry_seconds);
        known::refuse_from_memory(&request, &record, allowed, window, SystemTime::now())?;
    }
    let group = match shim.groups.get(&request.node_group).await {
        Lookup::Found(group) => group,
        Lookup::Unknown => {
            return Err(refuse(
                ErrorCode::UnknownNodeGroup,
                format!(
                    "node group {:?} is not among those in {}",
                    request.node_group,
                    shim.groups.describe()
                ),
            ));
        }
        Lookup::NotLoaded => {
            return Err(refuse(
                ErrorCode::UpstreamUnavailable,
                format!(
                    "the node groups in {} have not been read yet",
                    shim.groups.describe()
                ),
            ));
        }
    };
    checks::check_role(&group, &session)?;
    let instance = timed(
        metrics,
        "ec2",
        &mut context.timing.ec2,
        shim.ec2.describe(&session.session),
    )
    .await
    .map_err(|e| match e {
        Ec2Error::NotFound(_) => refuse(ErrorCode::InstanceNotFound, e.to_string()),
        Ec2Error::Unavailable(_) => refuse(ErrorCode::UpstreamUnavailable, e.to_string()),
    })?;
    checks::check_instance(&shim.config, &group, &instance)?;
    let node_name = checks::node_name(&group, &instance)?;
    let spec = timed(
        metrics,
        "s3",
        &mut context.timing.s3,
        shim.specs.get(&group.node_specs, &request.node_spec_sha256),
    )
    .await
    .map_err(|e| match e {
        SpecError::NotFound { .. } => refuse(ErrorCode::SpecNotFound, e.to_string()),
        SpecError::Unavailable { .. } => refuse(ErrorCode::UpstreamUnavailable, e.to_string()),
        SpecError::Corrupt { .. } => {
            tracing::error!(error = %e, "a node spec in the store is damaged");
            refuse(ErrorCode::Internal, e.to_string())
        }
    })?;
    let mut answer = BootstrapResponse {
        api_version: PROTOCOL_VERSION.to_owned(),
        instance_id: instance.instance_id.clone(),
        node_name: node_name.clone(),
        node_spec: encode_bytes(&spec.bytes),
        node_spec_sha256: spec.sha256.clone(),
        ca_bundle: shim.ca.cert_pem().to_owned(),
        credentials: None,
    };

    // --- 4. The record decides who gets what.
    let Some(credentials) = &request.credentials else {
        let record = timed(
            metrics,
            "s3",
            &mut context.timing.s3,
            shim.store.get(&instance.instance_id),
        )
        .await
        .map_err(|e| refuse(ErrorCode::UpstreamUnavailable, e.to_string()))?;
        if let Some((record, _)) = record {
            checks::check_owner(peer_certificate.as_deref(), &record)
                .map_err(|reason| refuse(ErrorCode::OwnerProofRequired, reason))?;
        }
        return Ok(answer);
    };
    let parse = |what: &str, pem: &str| {
        CertificateRequest::from_pem(what, pem)
            .map_err(|e| refuse(ErrorCode::BadCsr, e.to_string()))
    };
    let client_csr = parse("the client CSR", &credentials.client_csr)?;
    let serving_csr = parse("the serving CSR", &credentials.serving_csr)?;
    let kube_proxy_csr = match &credentials.kube_proxy_csr {
        Some(pem) => Some(parse("the kube-proxy CSR", pem)?),
        None => None,
    };
    let own_names = [
        node_name.as_str(),
        instance.instance_id.as_str(),
        instance.private_dns_name.as_str(),
    ];
    checks::check_csr("client", &client_csr, &own_names)?;
    checks::check_csr("serving", &serving_csr, &own_names)?;
    if let Some(csr) = &kube_proxy_csr {
        checks::check_kube_proxy_csr(csr, &[&client_csr, &serving_csr])?;
    }
    let certificates = &shim.config.certificates;
    let issue = |csr: &CertificateRequest, subject: Subject, usage: Usage, names| {
        let (dns_names, ips) = names;
        shim.ca
            .issue(
                &csr.public_key,
                &Profile {
                    subject,
                    dns_names,
                    ips,
                    usage,
                    validity: Duration::from_secs(u64::from(certificates.validity_days) * 86400),
                    backdate: Duration::from_secs(u64::from(certificates.backdate_minutes) * 60),
                },
            )
            .map(|issued| issued.pem)
            .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))
    };
    let node_subject = Subject::new(&format!("system:node:{node_name}"), &[NODES_GROUP]);
    let client = issue(
        &client_csr,
        node_subject.clone(),
        Usage::Client,
        (Vec::new(), Vec::new()),
    )?;
    let serving = issue(
        &serving_csr,
        node_subject,
        Usage::Server,
        checks::serving_names(&instance),
    )?;
    let kube_proxy = match &kube_proxy_csr {
        Some(csr) => Some(issue(
            csr,
            Subject::new(KUBE_PROXY_USER, &[]),
            Usage::Client,
            (Vec::new(), Vec::new()),
        )?),
        None => None,
    };

    let now = rfc3339(SystemTime::now());
    let record = NodeRecord {
        instance_id: instance.instance_id.clone(),
        node_name: node_name.clone(),
        node_group: group.name.clone(),
        bootstrapped_at: now.clone(),
        last_bootstrap_at: now,
        bootstraps: 1,
        node_spec_sha256: spec.sha256.clone(),
        client_key_sha256: client_csr.public_key.fingerprint(),
        role_arn: identity.arn.clone(),
        proof_sha256,
    };
    timed(
        metrics,
        "s3",
        &mut context.timing.s3,
        claim(shim, &group, record, peer_certificate.as_deref()),
    )
    .await?;
    metrics.certificates_issued(2 + u64::from(kube_proxy.is_some()));
    answer.credentials = Some(IssuedCredentials {
        client_certificate: client,
        serving_certificate: serving,
        kube_proxy_certificate: kube_proxy,
    });
    Ok(answer)
}

/// Records the bootstrap, or decides whether an instance that has a record may have
/// credentials again:
/// - its own client certificate (a renewal by the node itself): yes, with any key;
/// - the recorded key, within the retry window (the node lost our answer): yes;
/// - otherwise only if the group allows re-bootstrap.
async fn claim(
    shim: &Shim,
    group: &NodeGroup,
    record: NodeRecord,
    peer_certificate: Option<&[u8]>,
) -> Result<(), Refusal> {
    let unavailable =
        |e: super::store::StoreError| refuse(ErrorCode::UpstreamUnavailable, e.to_string());
    let retry_window = Duration::from_secs(shim.config.limits.same_key_retry_seconds);
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
        let owner = checks::check_owner(peer_certificate, &existing).is_ok();
        let same_key = existing.client_key_sha256 == record.client_key_sha256;
        // The request that wrote the record, replayed (to this or another replica), is
        // not the node asking again: the node signs every attempt afresh.
        let replayed =
            !existing.proof_sha256.is_empty() && existing.proof_sha256 == record.proof_sha256;
        if same_key
            && !replayed
            && (owner
                || checks::within(&existing.last_bootstrap_at, retry_window, SystemTime::now()))
        {
            return Ok(());
        }
        if !owner && group.rebootstrap != Rebootstrap::Allowed {
            let why = if replayed {
                "the request that bootstrapped it is replayed".to_owned()
            } else if same_key {
                format!("the same key asks again after the {retry_window:?} retry window")
            } else {
                "another key asks".to_owned()
            };
            return Err(refuse(
                ErrorCode::AlreadyBootstrapped,
                format!(
                    "instance {} bootstrapped at {} as {}; {why}, without its client certificate, and node group {} does not allow re-bootstrap",
                    existing.instance_id, existing.bootstrapped_at, existing.node_name, group.name
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
            tracing::warn!(instance = %record.instance_id, renewal = owner,
                "re-bootstrapped a node with a new key");
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

/// A header that must appear at most once, as visible ASCII.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Refusal> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(refuse(
            ErrorCode::MissingIdentity,
            format!("the {name} header appears more than once"),
        ));
    }
    first.to_str().map(Some).map_err(|_| {
        refuse(
            ErrorCode::MissingIdentity,
            format!("the {name} header is not visible ASCII"),
        )
    })
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_repeated_authorization_header_is_a_malformed_proof() {
        let mut headers = HeaderMap::new();
        assert!(single_header(&headers, "authorization").unwrap().is_none());
        headers.append("authorization", HeaderValue::from_static("NodewrightSTS a"));
        assert_eq!(
            single_header(&headers, "authorization").unwrap(),
            Some("NodewrightSTS a")
        );
        headers.append("authorization", HeaderValue::from_static("NodewrightSTS b"));
        let refused = single_header(&headers, "authorization").unwrap_err();
        assert_eq!(refused.code, ErrorCode::MissingIdentity);
        assert_eq!(refused.code.status(), 401);
    }
}
