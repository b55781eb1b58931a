//! controller-shim end to end: the real shim binary against the AWS emulator with real
//! SigV4 checks, a worker booting through it with the real agent binary, every refusal
//! the protocol promises, and the attacks of issue 15 (slow bodies, floods, the fleet
//! view, spec replays, forged proof headers, racing bootstraps, chatty refusals) with
//! specs kept by digest and node groups kept in the store.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use nodewright::source::shim::{
    CA_BUNDLE, CLIENT_KEY, CLIENT_PEM, KUBE_PROXY_CERT, KUBE_PROXY_KEY, SERVING_KEY, SERVING_PEM,
};
use nodewright_e2e::agent::Agent;
use nodewright_e2e::imds::FakeImds;
use nodewright_e2e::runtime::{block_on, runtime};
use nodewright_e2e::shim::{
    ACCOUNT, CLUSTER, NODE_GROUP, NODE_ROLE, Node, Options, ShimWorld, read_status, request_body,
    start_request, tls_connector, worker_boot_config,
};
use nodewright_shim::client::kube_proxy_csr;
use nodewright_shim::identity::IdentityToken;
use nodewright_shim::pki::{KeyAlgorithm, PrivateKey, Subject};
use nodewright_shim::protocol::{
    BootstrapRequest, BootstrapResponse, CredentialRequest, ErrorCode, PROTOCOL_VERSION,
};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn openssl(args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn agent_for(world: &ShimWorld, node: &Node, spec: &[u8]) -> (FakeImds, Agent) {
    let user_data = worker_boot_config(&world.url(), world.ca.cert_pem(), spec);
    let imds = FakeImds::start(node.imds_instance(), user_data.as_bytes());
    let agent = Agent::new(&imds.url(), world.moto.url());
    (imds, agent)
}

fn digest(world: &ShimWorld) -> String {
    nodewright::spec::digest(&world.spec)
}

/// A request body from `node` for its own names, pinning the world's spec.
fn own_body(world: &ShimWorld, node: &Node) -> (Vec<u8>, PrivateKey) {
    request_body(
        &digest(world),
        &format!("system:node:{}", node.private_dns_name),
        &["system:nodes"],
    )
}

fn body_for(world: &ShimWorld, cn: &str, groups: &[&str]) -> (Vec<u8>, PrivateKey) {
    request_body(&digest(world), cn, groups)
}

fn request_of(body: &[u8]) -> BootstrapRequest {
    serde_json::from_slice(body).unwrap()
}

/// A spec-only request (no CSRs) pinning the world's spec.
fn spec_only_body(world: &ShimWorld) -> Vec<u8> {
    serde_json::to_vec(&BootstrapRequest {
        api_version: PROTOCOL_VERSION.to_owned(),
        node_group: NODE_GROUP.to_owned(),
        node_spec_sha256: digest(world),
        nonce: nodewright_shim::protocol::nonce(),
        credentials: None,
    })
    .unwrap()
}

/// An answer: status, JSON body and the `x-request-id` header.
struct Answer {
    status: u16,
    json: serde_json::Value,
    request_id: String,
}

fn send(client: &reqwest::Client, world: &ShimWorld, body: Vec<u8>, auth: &str) -> Answer {
    try_send(client, world, body, auth).unwrap()
}

fn try_send(
    client: &reqwest::Client,
    world: &ShimWorld,
    body: Vec<u8>,
    auth: &str,
) -> Result<Answer, reqwest::Error> {
    block_on(async {
        let response = client
            .post(format!("{}/v1/bootstrap", world.url()))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response.bytes().await?;
        Ok(Answer {
            status,
            json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            request_id,
        })
    })
}

/// POSTs a bootstrap request; returns the status and the JSON answer.
fn post(world: &ShimWorld, body: Vec<u8>, authorization: &str) -> (u16, serde_json::Value) {
    let answer = send(&world.https_client(), world, body, authorization);
    (answer.status, answer.json)
}

fn sign(world: &ShimWorld, credentials: &Credentials, body: &[u8], at: SystemTime) -> String {
    IdentityToken::sign(credentials, &world.sts_endpoint(), body, at)
        .unwrap()
        .to_header()
}

/// Posts `body` with `auth` and expects a refusal with `code`, a terse message (the
/// code's summary, naming nothing of the cluster), a request id, and no certificate.
fn expect_refused(
    world: &ShimWorld,
    what: &str,
    status: u16,
    code: &str,
    body: Vec<u8>,
    auth: String,
) -> String {
    let answer = send(&world.https_client(), world, body, &auth);
    let json = &answer.json;
    assert_eq!(answer.status, status, "{what}: {json}");
    assert_eq!(json["code"], code, "{what}: {json}");
    assert!(json.get("credentials").is_none(), "{what}: {json}");
    assert!(json.get("nodeSpec").is_none(), "{what}: {json}");
    let parsed: ErrorCode = serde_json::from_value(json["code"].clone()).unwrap();
    assert_eq!(json["message"], parsed.summary(), "{what}: terse: {json}");
    for secret in [NODE_ROLE, "admin-role", NODE_GROUP, CLUSTER, ACCOUNT] {
        assert!(
            !json.to_string().contains(secret),
            "{what}: the answer names {secret}: {json}"
        );
    }
    assert_eq!(json["requestId"], answer.request_id.as_str(), "{what}");
    assert_eq!(answer.request_id.len(), 16, "{what}: {json}");
    answer.request_id
}

fn issued(world: &ShimWorld) -> u64 {
    world.metric("controller_shim_certificates_issued_total")
}

/// The log line of a request, by its id (the shim writes it as it answers).
fn log_line(world: &ShimWorld, request_id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = world.log().lines().find(|l| l.contains(request_id)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no log line for {request_id}: {}",
            world.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The shim's calls through the front with `action` (S3's have none: it is not a
/// query-protocol service).
fn calls(world: &ShimWorld, action: Option<&str>) -> usize {
    world
        .sts_front()
        .log()
        .iter()
        .filter(|l| l.action.as_deref() == action)
        .count()
}

fn sts_calls(world: &ShimWorld) -> usize {
    calls(world, Some("GetCallerIdentity"))
}

fn ec2_calls(world: &ShimWorld) -> usize {
    calls(world, Some("DescribeInstances"))
}

fn s3_calls(world: &ShimWorld) -> usize {
    calls(world, None)
}

#[test]
fn a_worker_bootstraps_through_the_shim() {
    let world = ShimWorld::start();
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let (_imds, agent) = agent_for(&world, &node, &world.spec);

    let run = agent.run(&["boot", "--deadline", "30"]);
    run.expect_code(0);
    // The spec came through the shim, verified: the example's files are there.
    assert!(
        std::fs::read_to_string(agent.path("/etc/sysctl.d/99-nodewright.conf"))
            .unwrap()
            .contains("net.ipv4.ip_forward = 1")
    );
    let state = agent.state();
    assert_eq!(
        state["lastRun"]["specSha256"],
        nodewright::spec::digest(&world.spec)
    );

    // Keys made on the node, private; certificates from the cluster CA.
    for path in [CLIENT_KEY, SERVING_KEY, CLIENT_PEM, SERVING_PEM] {
        assert_eq!(mode(&agent.path(path)), 0o600, "{path}");
    }
    let ca = agent.path(CA_BUNDLE);
    assert_eq!(std::fs::read_to_string(&ca).unwrap(), world.ca.cert_pem());
    let client = agent.path(CLIENT_PEM);
    let serving = agent.path(SERVING_PEM);
    for cert in [&client, &serving] {
        let (ok, out) = openssl(&[
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            cert.to_str().unwrap(),
        ]);
        assert!(ok && out.contains(": OK"), "{out}");
    }
    let name = format!("system:node:{}", node.private_dns_name);
    let (_, subject) = openssl(&[
        "x509",
        "-noout",
        "-subject",
        "-nameopt",
        "RFC2253",
        "-in",
        client.to_str().unwrap(),
    ]);
    assert_eq!(subject.trim(), format!("subject=CN={name},O=system:nodes"));
    let (_, text) = openssl(&["x509", "-noout", "-text", "-in", client.to_str().unwrap()]);
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    // The serving certificate's names come from EC2.
    let (_, text) = openssl(&["x509", "-noout", "-text", "-in", serving.to_str().unwrap()]);
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(
        text.contains(&format!("DNS:{}", node.private_dns_name)),
        "{text}"
    );
    assert!(
        text.contains(&format!("IP Address:{}", node.private_ip)),
        "{text}"
    );
    // The key in the combined file is the one in the key file, and matches the cert.
    let (_, cert_key) = openssl(&["x509", "-noout", "-pubkey", "-in", client.to_str().unwrap()]);
    let (_, file_key) = openssl(&[
        "pkey",
        "-pubout",
        "-in",
        agent.path(CLIENT_KEY).to_str().unwrap(),
    ]);
    assert_eq!(cert_key, file_key);

    // kube-proxy's pair, where its kubeconfig names it: a key made on the node (private),
    // a certificate for that key, CN=system:kube-proxy, from the cluster CA.
    let kubeconfig =
        std::fs::read_to_string(agent.path(nodewright::model::kube_proxy::KUBECONFIG)).unwrap();
    assert!(
        kubeconfig.contains(&format!("client-certificate: {KUBE_PROXY_CERT}"))
            && kubeconfig.contains(&format!("client-key: {KUBE_PROXY_KEY}")),
        "{kubeconfig}"
    );
    assert_kube_proxy_pair(&agent, &ca);

    // The shim remembers: the record, and the fleet view on its loopback listener.
    let record = world.record(&node.instance_id).expect("a record");
    assert_eq!(record["nodeName"], node.private_dns_name.as_str());
    assert_eq!(
        record["nodeSpecSha256"],
        nodewright::spec::digest(&world.spec)
    );
    assert_eq!(record["bootstraps"], 1);
    let nodes = world.fleet();
    assert_eq!(nodes.nodes.len(), 1);
    assert_eq!(nodes.nodes[0].instance_id, node.instance_id);

    // A re-boot holds good credentials: it presents its client certificate, asks for the
    // spec only and changes nothing.
    let before = std::fs::read(&client).unwrap();
    let proxy_before = std::fs::read(agent.path(KUBE_PROXY_CERT)).unwrap();
    agent.run(&["boot", "--deadline", "30"]).expect_code(0);
    assert_eq!(std::fs::read(&client).unwrap(), before);
    assert_eq!(
        std::fs::read(agent.path(KUBE_PROXY_CERT)).unwrap(),
        proxy_before
    );
    assert_eq!(world.record(&node.instance_id).unwrap()["bootstraps"], 1);
    assert_eq!(issued(&world), 3, "client, serving and kube-proxy");
    assert_eq!(world.outcomes("ok"), 2, "{}", world.metrics());
    let metrics = world.metrics();
    assert!(
        metrics.contains("controller_shim_upstream_duration_seconds_count{service=\"sts\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("controller_shim_upstream_duration_seconds_count{service=\"ec2\"} 2"),
        "{metrics}"
    );

    // A node that runs kube-proxy without its certificate (bootstrapped before the shim
    // issued one, or a run stopped before writing it) asks again at boot, as itself:
    // the same kubelet key, a new kube-proxy key and pair.
    let proxy_key_before = std::fs::read(agent.path(KUBE_PROXY_KEY)).unwrap();
    let client_key_before = std::fs::read(agent.path(CLIENT_KEY)).unwrap();
    std::fs::remove_file(agent.path(KUBE_PROXY_CERT)).unwrap();
    agent.run(&["boot", "--deadline", "30"]).expect_code(0);
    assert_kube_proxy_pair(&agent, &ca);
    assert_ne!(
        std::fs::read(agent.path(KUBE_PROXY_KEY)).unwrap(),
        proxy_key_before
    );
    assert_eq!(
        std::fs::read(agent.path(CLIENT_KEY)).unwrap(),
        client_key_before
    );
    assert_eq!(issued(&world), 6);
    assert_eq!(world.record(&node.instance_id).unwrap()["bootstraps"], 1);
    assert_eq!(world.outcomes("ok"), 3, "{}", world.metrics());
}

/// kube-proxy's key and certificate on the agent's root: 0600 and 0644, and a
/// certificate as [`assert_kube_proxy_certificate`] wants it.
fn assert_kube_proxy_pair(agent: &Agent, ca: &std::path::Path) {
    let cert = agent.path(KUBE_PROXY_CERT);
    let key = agent.path(KUBE_PROXY_KEY);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&cert), 0o644);
    assert_kube_proxy_certificate(&cert, &key, ca);
}

/// kube-proxy's certificate at `cert`: from the CA at `ca`, `CN=system:kube-proxy` and
/// nothing more (no SAN, not a CA), client authentication only, for the key at `key`.
fn assert_kube_proxy_certificate(
    cert: &std::path::Path,
    key: &std::path::Path,
    ca: &std::path::Path,
) {
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(ok && out.contains(": OK"), "{out}");
    let (_, subject) = openssl(&[
        "x509",
        "-noout",
        "-subject",
        "-nameopt",
        "RFC2253",
        "-in",
        cert.to_str().unwrap(),
    ]);
    assert_eq!(subject.trim(), "subject=CN=system:kube-proxy");
    let (_, text) = openssl(&["x509", "-noout", "-text", "-in", cert.to_str().unwrap()]);
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    let (_, cert_key) = openssl(&["x509", "-noout", "-pubkey", "-in", cert.to_str().unwrap()]);
    let (_, file_key) = openssl(&["pkey", "-pubout", "-in", key.to_str().unwrap()]);
    assert!(cert_key.contains("BEGIN PUBLIC KEY"), "{cert_key}");
    assert_eq!(cert_key, file_key);
}

#[test]
fn plan_asks_for_the_spec_only_and_writes_nothing() {
    let world = ShimWorld::start();
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let (_imds, agent) = agent_for(&world, &node, &world.spec);
    let run = agent.run(&["plan", "--deadline", "30"]);
    run.expect_code(0);
    assert!(agent.untouched(), "plan wrote something");
    assert!(
        world.record(&node.instance_id).is_none(),
        "plan registered the node"
    );
}

#[test]
fn a_digest_the_group_never_published_is_refused_and_nothing_is_written() {
    let world = ShimWorld::start();
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let mut other = world.spec.clone();
    other.extend_from_slice(b"# never published\n");
    let (_imds, agent) = agent_for(&world, &node, &other);
    let run = agent.run(&["boot", "--deadline", "30"]);
    run.expect_code(3);
    assert!(run.stderr.contains("SpecNotFound"), "{}", run.stderr);
    assert!(run.stderr.contains("sha256"), "{}", run.stderr);
    for path in [CLIENT_PEM, SERVING_PEM, CA_BUNDLE] {
        assert!(!agent.path(path).exists(), "{path} was written");
    }
    assert!(world.record(&node.instance_id).is_none());
    assert_eq!(issued(&world), 0);
    // The keys were kept for the retry (the same key gets the same answer).
    assert_eq!(mode(&agent.path(CLIENT_KEY)), 0o600);
}

#[test]
fn unready_and_unreachable_shims_are_retried_across_servers_until_the_deadline() {
    let world = ShimWorld::start();
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let closed = nodewright_e2e::moto::free_port();
    // The placeholder address is refused before any connection is made.
    let user_data = worker_boot_config(
        &format!("https://203.0.113.123:3988, https://127.0.0.1:{closed}"),
        world.ca.cert_pem(),
        &world.spec,
    );
    let imds = FakeImds::start(node.imds_instance(), user_data.as_bytes());
    let agent = Agent::new(&imds.url(), world.moto.url());
    let run = agent.run(&["boot", "--deadline", "3"]);
    run.expect_code(4);
    assert!(run.stderr.contains("gave up after"), "{}", run.stderr);
    assert!(run.stderr.contains(&closed.to_string()), "{}", run.stderr);
    assert!(run.stderr.contains("not ready yet"), "{}", run.stderr);
    assert!(
        run.stderr.contains("placeholder 203.0.113.123"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_burst_beyond_the_upstream_budget_is_told_to_come_back() {
    let world = ShimWorld::start_with(&[], "limits:\n  requestsPerSecond: 1\n  burst: 2\n");
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let creds = node.aws_credentials();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (body, _) = own_body(&world, &node);
        let auth = sign(&world, &creds, &body, SystemTime::now());
        let (status, answer) = post(&world, body, &auth);
        if status == 429 {
            assert_eq!(answer["code"], "RateLimited", "{answer}");
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    // The library client waits and retries: it gets through once the bucket refills.
    std::thread::sleep(Duration::from_secs(2));
    let fresh = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let request = request_of(&own_body(&world, &fresh).0);
    for _ in 0..3 {
        let (body, _) = own_body(&world, &node);
        let auth = sign(&world, &creds, &body, SystemTime::now());
        post(&world, body, &auth);
    }
    let answer = block_on(world.client().bootstrap(&world.signer(&fresh), &request)).unwrap();
    assert!(answer.credentials.is_some());
    assert!(world.outcomes("RateLimited") > 0);
}

#[test]
fn every_bad_request_is_refused_tersely_and_nothing_is_issued() {
    let world = ShimWorld::start();
    let now = SystemTime::now();
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let creds = node.aws_credentials();

    // A forged signature: the right key id, the wrong secret. STS (moto) says no.
    let (body, _) = own_body(&world, &node);
    let forged = Credentials::new(
        creds.access_key_id(),
        "not-the-secret",
        creds.session_token().map(str::to_owned),
        None,
        "forged",
    );
    let auth = sign(&world, &forged, &body, now);
    expect_refused(
        &world,
        "forged signature",
        401,
        "IdentityRejected",
        body,
        auth,
    );

    // A proof signed over another body.
    let (body, _) = own_body(&world, &node);
    let (other, _) = own_body(&world, &node);
    let auth = sign(&world, &creds, &other, now);
    expect_refused(
        &world,
        "signature over another body",
        403,
        "BodyMismatch",
        body,
        auth,
    );

    // The body hash header present but not signed.
    let (body, _) = own_body(&world, &node);
    let mut token = IdentityToken::sign(&creds, &world.sts_endpoint(), &body, now).unwrap();
    for (name, value) in token.headers.iter_mut() {
        if name == "authorization" {
            *value = value.replace(";x-nodewright-body-sha256", "");
        }
    }
    expect_refused(
        &world,
        "unsigned body hash",
        403,
        "BodyNotSigned",
        body,
        token.to_header(),
    );

    // A stale date.
    let (body, _) = own_body(&world, &node);
    let auth = sign(&world, &creds, &body, now - Duration::from_secs(900));
    expect_refused(&world, "stale date", 401, "StaleSignature", body, auth);

    // No proof at all; a proof in another scheme.
    let (body, _) = own_body(&world, &node);
    expect_refused(
        &world,
        "no proof",
        401,
        "MissingIdentity",
        body.clone(),
        "Bearer x".into(),
    );

    // Another account's role of the same name.
    let foreign = world.launch_in(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE, "111122223333");
    let (body, _) = own_body(&world, &foreign);
    let auth = sign(&world, &foreign.aws_credentials(), &body, now);
    expect_refused(&world, "another account", 403, "WrongAccount", body, auth);

    // A role that is not a node role.
    let admin = world.launch(Some(CLUSTER), Some(NODE_GROUP), "admin-role");
    let (body, _) = own_body(&world, &admin);
    let auth = sign(&world, &admin.aws_credentials(), &body, now);
    let role_refused = expect_refused(
        &world,
        "role not allowed",
        403,
        "RoleNotAllowed",
        body,
        auth,
    );

    // A role session that is not named after an instance, and one named after an
    // instance EC2 does not know.
    // (EC2 not knowing an instance is worth asking again: it lags behind launches.)
    for (session, status, code) in [
        ("alice", 403, "NotAnInstance"),
        ("i-0123456789abcdef0", 503, "InstanceNotFound"),
    ] {
        let role = world.assume_role(NODE_ROLE, ACCOUNT, session);
        let impostor = Node {
            instance_id: session.to_owned(),
            private_ip: node.private_ip,
            private_dns_name: node.private_dns_name.clone(),
            credentials: role,
        };
        let (body, _) = own_body(&world, &impostor);
        let auth = sign(&world, &impostor.aws_credentials(), &body, now);
        expect_refused(&world, session, status, code, body, auth);
    }

    // An instance of another cluster, of another node group, untagged.
    for (what, cluster, group, code) in [
        (
            "another cluster",
            Some("staging.example.com"),
            Some(NODE_GROUP),
            "WrongCluster",
        ),
        ("untagged", None, None, "WrongCluster"),
        (
            "another node group",
            Some(CLUSTER),
            Some("nodes-us-east-1b"),
            "WrongNodeGroup",
        ),
    ] {
        let stranger = world.launch(cluster, group, NODE_ROLE);
        let (body, _) = own_body(&world, &stranger);
        let auth = sign(&world, &stranger.aws_credentials(), &body, now);
        expect_refused(&world, what, 403, code, body, auth);
        assert!(world.record(&stranger.instance_id).is_none(), "{what}");
    }

    // A terminated instance whose session still works.
    let gone = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    world.terminate(&gone.instance_id);
    let (body, _) = own_body(&world, &gone);
    let auth = sign(&world, &gone.aws_credentials(), &body, now);
    expect_refused(
        &world,
        "terminated instance",
        403,
        "InstanceNotRunning",
        body,
        auth,
    );

    // An oversize body (refused before anything else is looked at, on its
    // Content-Length). The shim answers 413 without reading the body, so it may close
    // the connection while the client is still sending it: the client then sees the
    // connection closed instead of the answer. Either way the shim counted the refusal.
    let big = vec![b' '; 200 << 10];
    let auth = sign(&world, &creds, &big, now);
    match try_send(&world.https_client(), &world, big, &auth) {
        Ok(answer) => {
            assert_eq!(answer.status, 413, "oversize body: {}", answer.json);
            assert_eq!(answer.json["code"], "TooLarge", "{}", answer.json);
        }
        Err(e) => assert!(
            e.is_request() || e.is_body(),
            "oversize body: neither an answer nor a closed connection: {e:?}"
        ),
    }
    assert_eq!(world.outcomes("TooLarge"), 1, "{}", world.metrics());

    // A malformed CSR.
    let request = serde_json::json!({
        "apiVersion": PROTOCOL_VERSION,
        "nodeGroup": NODE_GROUP,
        "nodeSpecSha256": digest(&world),
        "nonce": nodewright_shim::protocol::nonce(),
        "credentials": {"clientCsr": "-----BEGIN CERTIFICATE REQUEST-----\nMIIBnonsense\n-----END CERTIFICATE REQUEST-----\n", "servingCsr": "x"},
    });
    let body = serde_json::to_vec(&request).unwrap();
    let auth = sign(&world, &creds, &body, now);
    expect_refused(&world, "malformed CSR", 400, "BadCsr", body, auth);

    // A request that does not name the spec digest it pins, or names it badly.
    let mut request: serde_json::Value =
        serde_json::from_slice(&own_body(&world, &node).0).unwrap();
    request.as_object_mut().unwrap().remove("nodeSpecSha256");
    let body = serde_json::to_vec(&request).unwrap();
    let auth = sign(&world, &creds, &body, now);
    expect_refused(&world, "no digest", 400, "BadRequest", body, auth);
    request["nodeSpecSha256"] = "../../pki/ca.key".into();
    let body = serde_json::to_vec(&request).unwrap();
    let auth = sign(&world, &creds, &body, now);
    expect_refused(&world, "a path for a digest", 400, "BadRequest", body, auth);

    // A CSR for another node's name; one asking for more groups (two O values, as
    // openssl writes them); one asking for system:masters instead.
    let (body, _) = body_for(
        &world,
        "system:node:ip-10-9-9-9.ec2.internal",
        &["system:nodes"],
    );
    let auth = sign(&world, &creds, &body, now);
    expect_refused(
        &world,
        "another node's name",
        403,
        "CsrNotAllowed",
        body,
        auth,
    );
    let (body, _) = body_for(
        &world,
        &format!("system:node:{}", node.private_dns_name),
        &["system:masters"],
    );
    let auth = sign(&world, &creds, &body, now);
    expect_refused(&world, "another group", 403, "CsrNotAllowed", body, auth);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let csr = dir.path().join("csr.pem");
    let (ok, out) = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
        "-subj",
        &format!(
            "/O=system:nodes/O=system:masters/CN=system:node:{}",
            node.private_dns_name
        ),
    ]);
    assert!(ok, "{out}");
    let csr = std::fs::read_to_string(&csr).unwrap();
    let request = BootstrapRequest {
        api_version: PROTOCOL_VERSION.to_owned(),
        node_group: NODE_GROUP.to_owned(),
        node_spec_sha256: digest(&world),
        nonce: nodewright_shim::protocol::nonce(),
        credentials: Some(CredentialRequest {
            client_csr: csr.clone(),
            serving_csr: csr,
            kube_proxy_csr: None,
        }),
    };
    let body = serde_json::to_vec(&request).unwrap();
    let auth = sign(&world, &creds, &body, now);
    expect_refused(&world, "extra groups", 403, "CsrNotAllowed", body, auth);

    // A kube-proxy CSR that asks for more than kube-proxy.
    let mut request = request_of(&own_body(&world, &node).0);
    let proxy_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    request.credentials.as_mut().unwrap().kube_proxy_csr = Some(
        proxy_key
            .certificate_request(
                &Subject::new("system:kube-proxy", &["system:masters"]),
                &[],
                &[],
            )
            .unwrap(),
    );
    let body = serde_json::to_vec(&request).unwrap();
    let auth = sign(&world, &creds, &body, now);
    expect_refused(
        &world,
        "kube-proxy asking for a group",
        403,
        "CsrNotAllowed",
        body,
        auth,
    );

    // A node group the shim does not serve: told only after the caller proved it is an
    // instance of this account (a stranger cannot probe for group names).
    let mut request: serde_json::Value =
        serde_json::from_slice(&own_body(&world, &node).0).unwrap();
    request["nodeGroup"] = "gpu-nodes".into();
    let body = serde_json::to_vec(&request).unwrap();
    let auth = sign(&world, &creds, &body, now);
    expect_refused(
        &world,
        "unknown node group",
        403,
        "UnknownNodeGroup",
        body.clone(),
        auth,
    );
    let auth = sign(&world, &forged, &body, now);
    expect_refused(
        &world,
        "unknown node group, forged proof",
        401,
        "IdentityRejected",
        body,
        auth,
    );

    assert_eq!(issued(&world), 0, "a refused request issued certificates");
    assert!(
        world.record(&node.instance_id).is_none(),
        "a refused request left a record"
    );

    // The log line of a refusal has what the answer leaves out: the peer, the instance,
    // the whole reason.
    let line = log_line(&world, &role_refused);
    for expected in [
        "127.0.0.1:",
        &admin.instance_id,
        "RoleNotAllowed",
        "admin-role",
        NODE_ROLE,
    ] {
        assert!(line.contains(expected), "{expected} in {line}");
    }

    // After all that, the node itself still bootstraps; then a second bootstrap with a
    // new key is refused, and the same key again (a lost answer) is answered again.
    let (body, key) = own_body(&world, &node);
    let auth = sign(&world, &creds, &body, now);
    let (status, answer) = post(&world, body.clone(), &auth);
    assert_eq!(status, 200, "{answer}");
    let answer: BootstrapResponse = serde_json::from_value(answer).unwrap();
    assert_eq!(answer.node_name, node.private_dns_name);
    assert_eq!(answer.node_spec_bytes().unwrap(), world.spec);
    let first = world.record(&node.instance_id).unwrap();
    assert_eq!(first["clientKeySha256"], key.public_key().fingerprint());

    let (body, _) = own_body(&world, &node);
    let auth = sign(&world, &creds, &body, SystemTime::now());
    expect_refused(
        &world,
        "second bootstrap",
        409,
        "AlreadyBootstrapped",
        body,
        auth,
    );
    assert_eq!(world.record(&node.instance_id).unwrap(), first);
    assert_eq!(issued(&world), 2);

    let body = body_for_key(&world, &node, &key);
    let auth = sign(&world, &creds, &body, SystemTime::now());
    let (status, answer) = post(&world, body, &auth);
    assert_eq!(status, 200, "the same key again: {answer}");
    assert_eq!(world.record(&node.instance_id).unwrap(), first);
}

fn body_for_key(world: &ShimWorld, node: &Node, key: &PrivateKey) -> Vec<u8> {
    let subject = Subject::new(
        &format!("system:node:{}", node.private_dns_name),
        &["system:nodes"],
    );
    let serving = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let request = BootstrapRequest {
        api_version: PROTOCOL_VERSION.to_owned(),
        node_group: NODE_GROUP.to_owned(),
        node_spec_sha256: digest(world),
        nonce: nodewright_shim::protocol::nonce(),
        credentials: Some(CredentialRequest {
            client_csr: key.certificate_request(&subject, &[], &[]).unwrap(),
            serving_csr: serving.certificate_request(&subject, &[], &[]).unwrap(),
            kube_proxy_csr: None,
        }),
    };
    serde_json::to_vec(&request).unwrap()
}

#[test]
fn kube_proxy_gets_its_own_client_certificate() {
    let world = ShimWorld::start();
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let proxy_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let mut request = request_of(&own_body(&world, &node).0);
    request.credentials.as_mut().unwrap().kube_proxy_csr =
        Some(kube_proxy_csr(&proxy_key).unwrap());
    let answer = block_on(world.client().bootstrap(&world.signer(&node), &request)).unwrap();
    let cert = answer
        .credentials
        .unwrap()
        .kube_proxy_certificate
        .expect("a kube-proxy certificate");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kube-proxy.crt");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&path, &cert).unwrap();
    std::fs::write(&ca, &answer.ca_bundle).unwrap();
    // For the key made on the node.
    let key = dir.path().join("kube-proxy.key");
    std::fs::write(&key, proxy_key.to_pem()).unwrap();
    assert_kube_proxy_certificate(&path, &key, &ca);
    assert_eq!(issued(&world), 3);
}

#[test]
fn a_restarted_shim_remembers_which_nodes_bootstrapped() {
    let mut world = ShimWorld::start();
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let signer = world.signer(&node);
    let client = world.client();
    let request = request_of(&own_body(&world, &node).0);
    block_on(client.bootstrap(&signer, &request)).unwrap();

    world.stop_shim();
    world.start_shim();

    let request = request_of(&own_body(&world, &node).0);
    let err = block_on(client.bootstrap(&signer, &request)).unwrap_err();
    assert!(err.to_string().contains("AlreadyBootstrapped"), "{err}");
    let nodes = world.fleet();
    assert_eq!(nodes.nodes.len(), 1);
    assert_eq!(nodes.nodes[0].instance_id, node.instance_id);
    assert_eq!(nodes.nodes[0].node_group, NODE_GROUP);
    assert_eq!(
        nodes.nodes[0].role_arn,
        format!(
            "arn:aws:sts::{ACCOUNT}:assumed-role/{NODE_ROLE}/{}",
            node.instance_id
        )
    );
}

#[test]
fn re_bootstrap_when_the_node_group_allows_it() {
    let world = ShimWorld::start_with(&["rebootstrap: allowed"], "");
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let signer = world.signer(&node);
    let client = world.client();
    for round in 1..=2 {
        let (body, key) = own_body(&world, &node);
        let answer = block_on(client.bootstrap(&signer, &request_of(&body))).unwrap();
        assert!(answer.credentials.is_some());
        let record = world.record(&node.instance_id).unwrap();
        assert_eq!(record["bootstraps"], round);
        assert_eq!(record["clientKeySha256"], key.public_key().fingerprint());
    }
}

#[test]
fn a_fleet_booting_at_once_shares_describe_instances_calls() {
    let world = ShimWorld::start();
    let nodes = world.launch_many(40);
    let client = world.client();
    let results = block_on(async {
        let mut tasks = Vec::new();
        for node in &nodes {
            let (client, signer) = (client.clone(), world.signer(node));
            let request = request_of(&own_body(&world, node).0);
            tasks.push(tokio::spawn(async move {
                client.bootstrap(&signer, &request).await
            }));
        }
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    });
    for (node, result) in nodes.iter().zip(&results) {
        let answer = result.as_ref().unwrap();
        assert_eq!(answer.instance_id, node.instance_id);
        assert_eq!(answer.node_name, node.private_dns_name);
    }
    let calls = world.metric("controller_shim_ec2_describe_calls_total");
    eprintln!("{calls} DescribeInstances calls for 40 nodes");
    assert!(
        (1..40).contains(&calls),
        "{calls} DescribeInstances calls for 40 nodes"
    );
    assert_eq!(world.fleet().nodes.len(), 40);
}

#[test]
fn sts_trouble_is_a_503_that_the_client_rides_out() {
    let world = ShimWorld::start_with_front();
    let front = world.sts_front();
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let is_identity =
        |seen: &nodewright_e2e::front::Seen| seen.action().as_deref() == Some("GetCallerIdentity");
    let throttled = nodewright_e2e::front::Canned {
        status: 400,
        headers: vec![("content-type".into(), "text/xml".into())],
        body: "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>".into(),
    };
    // Throttled, then down, then fine: each refusal is a 503 that nothing was issued for.
    front.fail(Some(1), is_identity, throttled);
    front.fail(
        Some(1),
        is_identity,
        nodewright_e2e::front::Canned::s3_error(503, "ServiceUnavailable", "down"),
    );
    let creds = node.aws_credentials();
    for _ in 0..2 {
        let (body, _) = own_body(&world, &node);
        let auth = sign(&world, &creds, &body, SystemTime::now());
        let (status, answer) = post(&world, body, &auth);
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["code"], "UpstreamUnavailable", "{answer}");
    }
    assert!(world.record(&node.instance_id).is_none());
    // The library client retries through two more failures and gets in.
    front.fail(
        Some(2),
        is_identity,
        nodewright_e2e::front::Canned::s3_error(500, "InternalFailure", "oops"),
    );
    let request = request_of(&own_body(&world, &node).0);
    let answer = block_on(world.client().bootstrap(&world.signer(&node), &request)).unwrap();
    assert!(answer.credentials.is_some());
    let identity_calls: Vec<u16> = front
        .log()
        .iter()
        .filter(|l| l.action.as_deref() == Some("GetCallerIdentity"))
        .map(|l| l.status)
        .collect();
    assert_eq!(identity_calls, [400, 503, 500, 500, 200]);
}

#[test]
fn a_spec_naming_another_cluster_ca_is_refused_with_the_certificates() {
    let world = ShimWorld::start();
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    // The example's own CA, not the one the shim signs with, published under its digest.
    let spec = nodewright_e2e::example("controller-shim/worker-nodespec.yaml");
    world.publish_spec(&spec);
    let (_imds, agent) = agent_for(&world, &node, &spec);
    let run = agent.run(&["boot", "--deadline", "30"]);
    run.expect_code(3);
    assert!(
        run.stderr.contains("cluster.caCertificate differs"),
        "{}",
        run.stderr
    );
    for path in [CLIENT_PEM, SERVING_PEM, CA_BUNDLE] {
        assert!(!agent.path(path).exists(), "{path} was written");
    }
}

// ---------------------------------------------------------------------------------------
// Issue 15: the red team's findings, one test each, and specs and groups over time.

/// Loopback source addresses other than the nodes' 127.0.0.1: each is its own source to
/// the shim.
fn sources(first: u8, count: u8) -> Vec<IpAddr> {
    (first..first + count)
        .map(|i| IpAddr::from([127, 0, 0, i]))
        .collect()
}

/// Each node's own bootstrap, freshly signed, one at a time with `pause` after each:
/// the statuses they got.
fn bootstrap_each(world: &ShimWorld, nodes: &[Node], pause: Duration) -> Vec<u16> {
    let client = world.https_client();
    nodes
        .iter()
        .map(|node| {
            let (body, _) = own_body(world, node);
            let auth = sign(world, &node.aws_credentials(), &body, SystemTime::now());
            let status = send(&client, world, body, &auth).status;
            std::thread::sleep(pause);
            status
        })
        .collect()
}

#[test]
fn bodies_that_never_arrive_get_408_and_do_not_starve_a_node() {
    // The red team's set-up: 128 open files, 118 requests whose body never finishes
    // (some send half of it, some none), from several sources.
    let world = ShimWorld::start_with_options(Options {
        top_level: "limits:\n  bodyTimeoutSeconds: 2\n  handshakeTimeoutSeconds: 2\n".into(),
        open_files: Some(128),
        ..Options::default()
    });
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let connector = tls_connector(world.ca.cert_pem(), None);
    let port = world.port;
    let slow_sources = sources(2, 8);
    let stalled = runtime().spawn(async move {
        let mut tasks = Vec::new();
        for i in 0..118usize {
            let (connector, source) = (connector.clone(), slow_sources[i % 8]);
            tasks.push(tokio::spawn(async move {
                let sent: &[u8] = if i % 2 == 0 { b"{\"apiVersion\":" } else { b"" };
                let began = Instant::now();
                let mut stream = start_request(&connector, source, port, 1000, sent)
                    .await
                    .ok()?;
                let status =
                    tokio::time::timeout(Duration::from_secs(60), read_status(&mut stream))
                        .await
                        .ok()
                        .flatten();
                Some((status, began.elapsed()))
            }));
        }
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.ok().flatten());
        }
        out
    });
    // While they hang, a real node bootstraps (its own deadline: 30 s, as the agent's).
    std::thread::sleep(Duration::from_millis(500));
    let began = Instant::now();
    let request = request_of(&own_body(&world, &node).0);
    let answer = block_on(world.client().bootstrap(&world.signer(&node), &request));
    assert!(
        answer.is_ok(),
        "the node during the slow bodies: {answer:?}"
    );
    eprintln!(
        "a node bootstrapped in {:?} among 118 stalled requests",
        began.elapsed()
    );

    // Every stalled request was answered 408 and closed; none was counted as too large.
    let results = block_on(stalled).unwrap();
    let answered: Vec<_> = results.iter().flatten().collect();
    assert_eq!(answered.len(), 118, "{results:?}");
    for (status, took) in &answered {
        assert_eq!(*status, Some(408), "{results:?}");
        assert!(*took < Duration::from_secs(30), "answered after {took:?}");
    }
    assert_eq!(world.outcomes("RequestTimeout"), 118, "{}", world.metrics());
    assert_eq!(world.outcomes("TooLarge"), 0, "{}", world.metrics());
    let log = world.log();
    assert!(!log.contains("Too many open files"), "{log}");
}

/// How a slowloris client stalls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slow {
    /// Connects and never starts TLS.
    Silent,
    /// Finishes TLS, then sends its headers a byte at a time, never ending them.
    Headers,
    /// Sends complete headers, then its body a byte at a time, never finishing it.
    Body,
}

/// Writes `bytes` one at a time, a few a second, until the shim answers or closes the
/// connection; returns the status it answered with, if any.
async fn dribble<S>(stream: &mut S, bytes: impl Iterator<Item = u8>) -> Option<u16>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    for byte in bytes {
        if stream.write_all(&[byte]).await.is_err() || stream.flush().await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(250), stream.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// One slowloris client from `source`: how it stalled, what it got, and after how long
/// the shim was done with it (at most a minute: then the test fails).
async fn slow_client(
    how: Slow,
    connector: tokio_rustls::TlsConnector,
    source: IpAddr,
    port: u16,
) -> (Slow, Option<u16>, Duration) {
    use tokio::io::AsyncReadExt;
    let began = Instant::now();
    let stalled = async {
        let Ok(mut tcp) = nodewright_e2e::shim::connect_from(source, port).await else {
            return None;
        };
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        match how {
            Slow::Silent => {
                let _ = tcp.read(&mut [0u8; 64]).await;
                None
            }
            Slow::Headers => {
                let mut tls = connector.connect(name, tcp).await.ok()?;
                let head = b"POST /v1/bootstrap HTTP/1.1\r\nhost: localhost\r\nx-slow: ";
                dribble(
                    &mut tls,
                    head.iter().copied().chain(std::iter::repeat(b'a')),
                )
                .await
            }
            Slow::Body => {
                drop(tcp);
                let mut tls = start_request(&connector, source, port, 1000, b"{")
                    .await
                    .ok()?;
                dribble(&mut tls, std::iter::repeat(b' ')).await
            }
        }
    };
    let status = tokio::time::timeout(Duration::from_secs(60), stalled)
        .await
        .unwrap_or(Some(0));
    (how, status, began.elapsed())
}

#[test]
fn slowloris_clients_are_dropped_at_their_deadlines_and_a_node_gets_in() {
    // Handshake and headers within 2 s, the body within 2 s of the headers. 96 slow
    // clients from 8 sources: silent ones, header dribblers and body dribblers, each
    // sending a byte every 250 ms so no read ever idles long.
    let world = ShimWorld::start_with_options(Options {
        top_level: "limits:\n  handshakeTimeoutSeconds: 2\n  bodyTimeoutSeconds: 2\n".into(),
        ..Options::default()
    });
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let connector = tls_connector(world.ca.cert_pem(), None);
    let port = world.port;
    let slow_sources = sources(2, 8);
    let kinds = [Slow::Silent, Slow::Headers, Slow::Body];
    let clients = runtime().spawn(async move {
        let tasks: Vec<_> = (0..96usize)
            .map(|i| {
                let how = kinds[i % 3];
                tokio::spawn(slow_client(
                    how,
                    connector.clone(),
                    slow_sources[i % 8],
                    port,
                ))
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    });
    // While they are held, the shim counts them open, and a node bootstraps.
    std::thread::sleep(Duration::from_millis(1000));
    let held = world.metric("controller_shim_connections_open");
    let began = Instant::now();
    let request = request_of(&own_body(&world, &node).0);
    block_on(world.client().bootstrap(&world.signer(&node), &request))
        .expect("the node among the slow clients");
    let node_took = began.elapsed();

    let results = block_on(clients).unwrap();
    let longest = results.iter().map(|(_, _, took)| *took).max().unwrap();
    eprintln!(
        "{held} connections open 1 s in; the node bootstrapped in {node_took:?}; \
         the last slow client was dropped after {longest:?}"
    );
    assert!(held >= 64, "the slow clients were held: {held}");
    for (how, status, took) in &results {
        // Deadline 2 s; the rest is a loaded machine's slack.
        assert!(
            *took < Duration::from_secs(15),
            "{how:?}: dropped after {took:?}"
        );
        match how {
            Slow::Body => assert_eq!(*status, Some(408), "{how:?}: {results:?}"),
            Slow::Silent | Slow::Headers => {
                assert!(matches!(status, None | Some(408)), "{how:?}: {results:?}")
            }
        }
    }
    assert_eq!(world.outcomes("RequestTimeout"), 32, "{}", world.metrics());
    assert_eq!(
        world.metric("controller_shim_connections_refused_total{reason=\"tls_handshake_timeout\"}"),
        32
    );
    // All of them closed: what is left open is this scrape and the node's idle
    // keep-alive connection.
    let open = world.metric("controller_shim_connections_open");
    assert!(open <= 2, "{open} connections still open");
}

#[test]
fn a_source_over_its_share_of_connections_is_closed_before_the_handshake() {
    let world = ShimWorld::start_with_options(Options {
        top_level: "limits:\n  perSourceConnections: 4\n  bodyTimeoutSeconds: 5\n".into(),
        ..Options::default()
    });
    let connector = tls_connector(world.ca.cert_pem(), None);
    let port = world.port;
    let hog = IpAddr::from([127, 0, 0, 7]);
    let outcomes = block_on(async {
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..10 {
            match start_request(&connector, hog, port, 100, b"").await {
                Ok(stream) => held.push(stream),
                Err(_) => refused += 1,
            }
        }
        (held.len(), refused)
    });
    assert_eq!(outcomes, (4, 6));
    assert_eq!(
        world.metric("controller_shim_connections_refused_total{reason=\"per_source\"}"),
        6
    );
    // Another source is not affected.
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let request = request_of(&own_body(&world, &node).0);
    block_on(world.client().bootstrap(&world.signer(&node), &request)).unwrap();
}

#[test]
fn a_credential_less_flood_costs_nothing_upstream_and_genuine_bootstraps_get_in() {
    // A small global upstream budget: had the flood been charged to it (as before), the
    // nodes would be told 429.
    let world = ShimWorld::start_with_options(Options {
        top_level: "limits:\n  requestsPerSecond: 2\n  burst: 8\n".into(),
        front: true,
        ..Options::default()
    });
    let nodes: Vec<Node> = (0..8)
        .map(|_| world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE))
        .collect();
    let before = sts_calls(&world);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = runtime().spawn(nodewright_e2e::shim::flood(
        format!("{}/v1/bootstrap", world.url()),
        world.ca.cert_pem().to_owned(),
        sources(2, 4),
        8,
        stop.clone(),
    ));
    std::thread::sleep(Duration::from_secs(1));
    // Genuine bootstraps interleaved with the flood, one at a time, each counted.
    let statuses = bootstrap_each(&world, &nodes, Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let flood = block_on(flood).unwrap();
    eprintln!("flood: {flood:?}; genuine: {statuses:?}");
    assert_eq!(statuses, [200; 8], "genuine bootstraps during the flood");
    assert!(flood.requests > 500, "the flood was a flood: {flood:?}");
    // The flood was refused by the free checks: no proof (401) or over its source's rate
    // (429); it reached STS not once.
    let refused: u64 = flood
        .statuses
        .iter()
        .filter(|(s, _)| [401, 429].contains(s))
        .map(|(_, n)| n)
        .sum();
    assert!(refused * 100 >= flood.requests * 99, "{flood:?}");
    assert!(flood.statuses.contains_key(&429), "{flood:?}");
    assert_eq!(sts_calls(&world) - before, 8, "only the nodes reached STS");
}

#[test]
fn a_flood_with_a_node_s_role_after_its_claim_costs_no_ec2_or_s3_and_starves_no_node() {
    // A pod holding the first node's instance role, on its own address, floods with
    // valid proofs (signed afresh, so none is a replay): spec-only requests and
    // bootstraps with keys of its own. Its source's limit caps what reaches STS; the
    // global budget has room for the other nodes.
    let (rate, burst) = (4, 8);
    let world = ShimWorld::start_with_options(Options {
        top_level: format!(
            "limits:\n  requestsPerSecond: 20\n  burst: 40\n  perSourceRequestsPerSecond: {rate}\n  perSourceBurst: {burst}\n"
        ),
        front: true,
        ..Options::default()
    });
    let claimed = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let request = request_of(&own_body(&world, &claimed).0);
    block_on(world.client().bootstrap(&world.signer(&claimed), &request)).unwrap();
    let others: Vec<Node> = (0..3)
        .map(|_| world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE))
        .collect();

    let (sts_before, ec2_before, s3_before) =
        (sts_calls(&world), ec2_calls(&world), s3_calls(&world));
    let role = claimed.aws_credentials();
    let (endpoint, digest, cn) = (
        world.sts_endpoint(),
        digest(&world),
        format!("system:node:{}", claimed.private_dns_name),
    );
    let turn = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pod: nodewright_e2e::shim::FloodRequest = Arc::new(move || {
        let body = if turn.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
            serde_json::to_vec(&BootstrapRequest {
                api_version: PROTOCOL_VERSION.to_owned(),
                node_group: NODE_GROUP.to_owned(),
                node_spec_sha256: digest.clone(),
                nonce: nodewright_shim::protocol::nonce(),
                credentials: None,
            })
            .unwrap()
        } else {
            request_body(&digest, &cn, &["system:nodes"]).0
        };
        let proof = IdentityToken::sign(&role, &endpoint, &body, SystemTime::now()).unwrap();
        (body, Some(proof.to_header()))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let flood = runtime().spawn(nodewright_e2e::shim::flood_with(
        format!("{}/v1/bootstrap", world.url()),
        world.ca.cert_pem().to_owned(),
        sources(2, 1),
        8,
        stop.clone(),
        pod,
    ));
    // The flood alone: what it costs upstream is STS's word on who signed, nothing else.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ec2_calls(&world), ec2_before, "EC2 calls for the flood");
    assert_eq!(s3_calls(&world), s3_before, "S3 calls for the flood");
    // The other nodes bootstrap in the middle of it, one at a time, each counted.
    let statuses = bootstrap_each(&world, &others, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let flood = block_on(flood).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let genuine = others.len();
    eprintln!("flood over {seconds:.1}s: {flood:?}; genuine: {statuses:?}");
    assert_eq!(
        statuses,
        vec![200; genuine],
        "the other nodes during the flood"
    );
    assert_eq!(world.record(&claimed.instance_id).unwrap()["bootstraps"], 1);

    // Every flood request was refused: over its source's rate (429), or identified and
    // refused as not the node (403 spec-only, 409 with another key). Both of the last
    // happened: the proofs were valid and reached STS.
    assert!(flood.requests > 100, "the flood was a flood: {flood:?}");
    let statuses_seen: Vec<u16> = flood.statuses.keys().copied().collect();
    assert_eq!(statuses_seen, [403, 409, 429], "{flood:?}");
    // The source's limit, not the global budget, capped what reached STS.
    let sts_flood = sts_calls(&world) - sts_before - genuine;
    let allowed = burst as f64 + rate as f64 * seconds;
    assert!(
        sts_flood as f64 <= allowed + 1.0,
        "{sts_flood} flood requests reached STS; the source may send {allowed:.0}"
    );
    assert_eq!(
        sts_flood as u64,
        flood.statuses[&403] + flood.statuses[&409],
        "every identified request was one STS call"
    );
    // The other nodes' bootstraps are the only EC2 calls since the flood began.
    assert_eq!(ec2_calls(&world) - ec2_before, genuine);
}

#[test]
fn the_fleet_view_is_not_public_and_costs_no_s3_reads() {
    let world = ShimWorld::start_with_front();
    let nodes = world.launch_many(5);
    for node in &nodes {
        let request = request_of(&own_body(&world, node).0);
        block_on(world.client().bootstrap(&world.signer(node), &request)).unwrap();
    }
    // On the workers' listener, without and with a node's client certificate: nothing.
    let client = world.https_client();
    for path in ["/v1/nodes", "/metrics"] {
        let (status, text) = block_on(async {
            let response = client
                .get(format!("{}{path}", world.url()))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        });
        assert_eq!(status, 404, "{path}: {text}");
        for node in &nodes {
            assert!(!text.contains(&node.instance_id), "{path}: {text}");
        }
        assert!(!text.contains("controller_shim_"), "{path}: {text}");
    }
    // On the loopback listener: the whole fleet, from memory.
    assert_eq!(world.fleet().nodes.len(), 5);
    let s3_before = s3_calls(&world);
    for _ in 0..50 {
        assert_eq!(world.fleet().nodes.len(), 5);
    }
    assert_eq!(
        s3_calls(&world) - s3_before,
        0,
        "S3 calls for 50 fleet views"
    );
    // The metrics name no node.
    let metrics = world.metrics();
    for node in &nodes {
        assert!(!metrics.contains(&node.instance_id), "{metrics}");
        assert!(!metrics.contains(&node.private_dns_name), "{metrics}");
    }
    // The listener is on loopback only: the configuration refuses anything else.
    let config = std::fs::read_to_string(world.config_path())
        .unwrap()
        .replace(
            &format!("adminListen: 127.0.0.1:{}", world.admin_port),
            "adminListen: 0.0.0.0:3989",
        );
    let err = nodewright_shim::config::ShimConfig::parse("config", &config).unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[test]
fn after_bootstrap_only_the_node_s_certificate_gets_its_spec() {
    let world = ShimWorld::start_with(&[], "limits:\n  sameKeyRetrySeconds: 2\n");
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let creds = node.aws_credentials();

    // Before the node bootstraps, a spec-only request is answered (plan, as before).
    let body = spec_only_body(&world);
    let auth = sign(&world, &creds, &body, SystemTime::now());
    assert_eq!(post(&world, body, &auth).0, 200);

    // The node bootstraps.
    let (first_body, key) = own_body(&world, &node);
    let first_auth = sign(&world, &creds, &first_body, SystemTime::now());
    let (status, answer) = post(&world, first_body.clone(), &first_auth);
    assert_eq!(status, 200, "{answer}");
    let answer: BootstrapResponse = serde_json::from_value(answer).unwrap();
    let certificate = answer.credentials.unwrap().client_certificate;

    // A pod holding the instance role asks for the spec: nothing, however often.
    for _ in 0..3 {
        let body = spec_only_body(&world);
        let auth = sign(&world, &creds, &body, SystemTime::now());
        expect_refused(
            &world,
            "spec-only with the role alone",
            403,
            "OwnerProofRequired",
            body,
            auth,
        );
    }
    // The node's own request, replayed: nothing (the proof is used, and the record knows
    // the request that wrote it).
    let replayed = expect_refused(
        &world,
        "the bootstrap request replayed",
        401,
        "IdentityRejected",
        first_body.clone(),
        first_auth.clone(),
    );
    assert!(log_line(&world, &replayed).contains("replay"));

    // A client certificate from the cluster CA for another node: nothing.
    let other_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let other = nodewright_e2e::shim::issue_client(
        &world.ca,
        &other_key,
        "system:node:ip-10-9-9-9.ec2.internal",
        &["system:nodes"],
    );
    let with_identity = |cert: &str, key: &PrivateKey| {
        world
            .https_client_builder()
            .identity(
                reqwest::Identity::from_pem(format!("{cert}{}", key.to_pem()).as_bytes()).unwrap(),
            )
            .build()
            .unwrap()
    };
    let body = spec_only_body(&world);
    let auth = sign(&world, &creds, &body, SystemTime::now());
    let answer = send(&with_identity(&other, &other_key), &world, body, &auth);
    assert_eq!(answer.status, 403, "{}", answer.json);
    assert_eq!(answer.json["code"], "OwnerProofRequired");

    // The node, with its certificate in the TLS handshake: its spec.
    let body = spec_only_body(&world);
    let auth = sign(&world, &creds, &body, SystemTime::now());
    let answer = send(&with_identity(&certificate, &key), &world, body, &auth);
    assert_eq!(answer.status, 200, "{}", answer.json);
    let spec: BootstrapResponse = serde_json::from_value(answer.json).unwrap();
    assert_eq!(spec.node_spec_bytes().unwrap(), world.spec);

    // The same key without the certificate after the retry window: nothing either.
    std::thread::sleep(Duration::from_secs(3));
    let body = body_for_key(&world, &node, &key);
    let auth = sign(&world, &creds, &body, SystemTime::now());
    expect_refused(
        &world,
        "the same key after the window",
        409,
        "AlreadyBootstrapped",
        body,
        auth,
    );
    assert_eq!(issued(&world), 2);
}

#[test]
fn control_characters_and_repeated_headers_in_a_proof_are_401_never_503() {
    let world = ShimWorld::start_with_front();
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let creds = node.aws_credentials();
    let before = sts_calls(&world);
    let now = SystemTime::now();
    type Edit = Box<dyn Fn(&mut Vec<(String, String)>)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "CRLF in a forwarded header",
            Box::new(|h: &mut Vec<(String, String)>| {
                for (k, v) in h.iter_mut() {
                    if k == "x-amz-security-token" {
                        v.push_str("\r\nx-amz-target: evil");
                    }
                }
            }),
        ),
        (
            "NUL in a header",
            Box::new(|h: &mut Vec<(String, String)>| {
                for (k, v) in h.iter_mut() {
                    if k == "x-amz-date" {
                        v.push('\0');
                    }
                }
            }),
        ),
        (
            "a signed header twice",
            Box::new(|h: &mut Vec<(String, String)>| {
                let date = h.iter().find(|(k, _)| k == "x-amz-date").unwrap().1.clone();
                h.push(("x-amz-date".into(), date));
            }),
        ),
        (
            "an unknown signed header",
            Box::new(|h: &mut Vec<(String, String)>| {
                h.push(("x-amz-target".into(), "Evil".into()));
                for (k, v) in h.iter_mut() {
                    if k == "authorization" {
                        *v = v.replace(
                            ";x-nodewright-body-sha256",
                            ";x-amz-target;x-nodewright-body-sha256",
                        );
                    }
                }
            }),
        ),
        (
            "a header outside the proof",
            Box::new(|h: &mut Vec<(String, String)>| {
                h.push(("x-forwarded-for".into(), "10.0.0.1".into()));
            }),
        ),
    ];
    for (what, edit) in cases {
        let (body, _) = own_body(&world, &node);
        let mut token = IdentityToken::sign(&creds, &world.sts_endpoint(), &body, now).unwrap();
        edit(&mut token.headers);
        let id = expect_refused(
            &world,
            what,
            401,
            "MissingIdentity",
            body,
            token.to_header(),
        );
        assert!(log_line(&world, &id).contains("127.0.0.1:"), "{what}");
    }
    // Two Authorization headers on the request itself.
    let (body, _) = own_body(&world, &node);
    let auth = sign(&world, &creds, &body, now);
    let answer = block_on(async {
        let response = world
            .https_client()
            .post(format!("{}/v1/bootstrap", world.url()))
            .header("authorization", &auth)
            .header("authorization", &auth)
            .body(body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            serde_json::from_slice::<serde_json::Value>(&response.bytes().await.unwrap()).unwrap(),
        )
    });
    assert_eq!(answer.0, 401, "{}", answer.1);
    assert_eq!(answer.1["code"], "MissingIdentity");
    assert_eq!(world.outcomes("UpstreamUnavailable"), 0);
    assert_eq!(sts_calls(&world), before, "a malformed proof reached STS");
}

#[test]
fn racing_first_bootstraps_of_one_instance_get_one_200_and_no_false_503() {
    let world = ShimWorld::start();
    for round in 0..4 {
        let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
        let creds = node.aws_credentials();
        // Eight at once, each with its own key, as eight racing copies of the agent.
        let requests: Vec<(Vec<u8>, String)> = (0..8)
            .map(|_| {
                let (body, _) = own_body(&world, &node);
                let auth = sign(&world, &creds, &body, SystemTime::now());
                (body, auth)
            })
            .collect();
        let url = format!("{}/v1/bootstrap", world.url());
        let client = world.https_client();
        let statuses = block_on(async {
            let tasks: Vec<_> = requests
                .into_iter()
                .map(|(body, auth)| {
                    let (client, url) = (client.clone(), url.clone());
                    tokio::spawn(async move {
                        let response = client
                            .post(url)
                            .header("authorization", auth)
                            .body(body)
                            .send()
                            .await
                            .unwrap();
                        response.status().as_u16()
                    })
                })
                .collect();
            let mut out = Vec::new();
            for task in tasks {
                out.push(task.await.unwrap());
            }
            out.sort();
            out
        });
        assert_eq!(
            statuses,
            [200, 409, 409, 409, 409, 409, 409, 409],
            "round {round}"
        );
    }
    assert_eq!(world.outcomes("InstanceNotFound"), 0);
    assert_eq!(world.outcomes("UpstreamUnavailable"), 0);
}

#[test]
fn an_old_node_reboots_into_its_own_spec_after_the_group_s_changed() {
    let world = ShimWorld::start();
    let old = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let (_imds, old_agent) = agent_for(&world, &old, &world.spec);
    old_agent.run(&["boot", "--deadline", "30"]).expect_code(0);
    let old_digest = digest(&world);

    // The group's spec changes: published beside the old one, under its own digest.
    let mut new_spec = world.spec.clone();
    new_spec.extend_from_slice(b"# the group's next spec\n");
    let new_digest = world.publish_spec(&new_spec);
    assert_ne!(new_digest, old_digest);

    // The old node reboots, still pinning its own: it gets exactly that one.
    old_agent.run(&["boot", "--deadline", "30"]).expect_code(0);
    assert_eq!(
        old_agent.state()["lastRun"]["specSha256"],
        old_digest.as_str()
    );
    assert_eq!(
        world.record(&old.instance_id).unwrap()["nodeSpecSha256"],
        old_digest.as_str()
    );

    // A node launched from the new template gets the new one.
    let new = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let (_imds, new_agent) = agent_for(&world, &new, &new_spec);
    new_agent.run(&["boot", "--deadline", "30"]).expect_code(0);
    assert_eq!(
        new_agent.state()["lastRun"]["specSha256"],
        new_digest.as_str()
    );
    assert_eq!(
        world.record(&new.instance_id).unwrap()["nodeSpecSha256"],
        new_digest.as_str()
    );
}

#[test]
fn a_group_added_to_the_store_is_served_without_touching_the_shim_s_configuration() {
    let world = ShimWorld::start_with_options(Options {
        groups_in_store: true,
        top_level: "limits:\n  nodeGroupsMinRereadSeconds: 1\n".into(),
        ..Options::default()
    });
    let config_before = std::fs::read(world.config_path()).unwrap();
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let request = request_of(&own_body(&world, &node).0);
    block_on(world.client().bootstrap(&world.signer(&node), &request)).unwrap();

    // A new group, its role and its spec; a node of it is refused until the group is in
    // the store.
    world.create_role("gpu.prod.example.com");
    let gpu = world.launch(Some(CLUSTER), Some("gpu"), "gpu.prod.example.com");
    let gpu_spec = world.spec.clone();
    let gpu_digest = nodewright::spec::digest(&gpu_spec);
    world.put_object(
        nodewright_e2e::shim::BUCKET,
        &format!("prod.example.com/nodegroups/gpu/nodespec/{gpu_digest}.yaml"),
        &gpu_spec,
    );
    let gpu_request = |world: &ShimWorld| {
        let mut request = request_of(&own_body(world, &gpu).0);
        request.node_group = "gpu".to_owned();
        request
    };
    let refused = block_on(
        world
            .client()
            .bootstrap(&world.signer(&gpu), &gpu_request(&world)),
    )
    .unwrap_err();
    assert!(
        refused.to_string().contains("UnknownNodeGroup"),
        "{refused}"
    );

    // A broken document first: refused, the last good copy kept, counted and logged.
    world.publish_groups(&format!(
        "{}    bogus: true\n",
        world.groups_document(&[("gpu", "gpu.prod.example.com")])
    ));
    std::thread::sleep(Duration::from_millis(1100));
    let refused = block_on(
        world
            .client()
            .bootstrap(&world.signer(&gpu), &gpu_request(&world)),
    )
    .unwrap_err();
    assert!(
        refused.to_string().contains("UnknownNodeGroup"),
        "{refused}"
    );
    assert!(
        world.metric("controller_shim_node_groups_errors_total{reason=\"invalid\"}") >= 1,
        "{}",
        world.metrics()
    );
    assert!(world.log().contains("bogus"), "{}", world.log());
    let other = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let request = request_of(&own_body(&world, &other).0);
    block_on(world.client().bootstrap(&world.signer(&other), &request))
        .expect("the last good groups still serve");

    // Then the good one: the gpu node gets in, from the same running shim.
    world.publish_groups(&world.groups_document(&[("gpu", "gpu.prod.example.com")]));
    std::thread::sleep(Duration::from_millis(1100));
    let answer = block_on(
        world
            .client()
            .bootstrap(&world.signer(&gpu), &gpu_request(&world)),
    )
    .unwrap();
    assert_eq!(answer.instance_id, gpu.instance_id);
    assert_eq!(world.record(&gpu.instance_id).unwrap()["nodeGroup"], "gpu");
    assert_eq!(std::fs::read(world.config_path()).unwrap(), config_before);
    assert_eq!(world.metric("controller_shim_node_groups"), 2);
}
