//! controller-shim end to end: the real shim binary against the AWS emulator with real
//! SigV4 checks, a worker booting through it with the real agent binary, and every
//! refusal the protocol promises.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use nodewright::source::shim::{CA_BUNDLE, CLIENT_KEY, CLIENT_PEM, SERVING_KEY, SERVING_PEM};
use nodewright_e2e::agent::Agent;
use nodewright_e2e::imds::FakeImds;
use nodewright_e2e::runtime::block_on;
use nodewright_e2e::shim::{
    ACCOUNT, CLUSTER, NODE_GROUP, NODE_ROLE, Node, ShimWorld, worker_boot_config,
};
use nodewright_shim::identity::IdentityToken;
use nodewright_shim::pki::{KeyAlgorithm, PrivateKey, Subject};
use nodewright_shim::protocol::{
    BootstrapRequest, BootstrapResponse, CredentialRequest, PROTOCOL_VERSION,
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

    // The shim remembers: record and /v1/nodes.
    let record = world.record(&node.instance_id).expect("a record");
    assert_eq!(record["nodeName"], node.private_dns_name.as_str());
    assert_eq!(
        record["nodeSpecSha256"],
        nodewright::spec::digest(&world.spec)
    );
    assert_eq!(record["bootstraps"], 1);
    let nodes = block_on(world.client().nodes()).unwrap();
    assert_eq!(nodes.nodes.len(), 1);
    assert_eq!(nodes.nodes[0].instance_id, node.instance_id);

    // A re-boot holds good credentials: it asks for the spec only and changes nothing.
    let before = std::fs::read(&client).unwrap();
    agent.run(&["boot", "--deadline", "30"]).expect_code(0);
    assert_eq!(std::fs::read(&client).unwrap(), before);
    assert_eq!(world.record(&node.instance_id).unwrap()["bootstraps"], 1);
    let metrics = world.metrics();
    assert!(
        metrics.contains("controller_shim_certificates_issued_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("controller_shim_requests_total{endpoint=\"bootstrap\",outcome=\"ok\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("controller_shim_upstream_duration_seconds_count{service=\"sts\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("controller_shim_upstream_duration_seconds_count{service=\"ec2\"} 2"),
        "{metrics}"
    );
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
fn a_spec_that_does_not_match_user_data_is_refused_and_no_certificate_is_written() {
    let world = ShimWorld::start();
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let mut other = world.spec.clone();
    other.extend_from_slice(b"# not what the shim serves\n");
    let (_imds, agent) = agent_for(&world, &node, &other);
    let run = agent.run(&["boot", "--deadline", "30"]);
    run.expect_code(3);
    assert!(run.stderr.contains("sha256"), "{}", run.stderr);
    for path in [CLIENT_PEM, SERVING_PEM, CA_BUNDLE] {
        assert!(!agent.path(path).exists(), "{path} was written");
    }
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
fn a_burst_beyond_the_rate_limit_is_told_to_come_back() {
    let world = ShimWorld::start_with(&[], "limits:\n  requestsPerSecond: 1\n  burst: 2\n");
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let creds = node.aws_credentials();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (body, _) = own_body(&node);
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
    let request: BootstrapRequest = serde_json::from_slice(&own_body(&fresh).0).unwrap();
    for _ in 0..3 {
        let (body, _) = own_body(&node);
        let auth = sign(&world, &creds, &body, SystemTime::now());
        post(&world, body, &auth);
    }
    let answer = block_on(world.client().bootstrap(&world.signer(&fresh), &request)).unwrap();
    assert!(answer.credentials.is_some());
    assert!(world.metrics().contains("outcome=\"RateLimited\""));
}

/// A request body with fresh keys, asking for `cn` in `groups`.
fn body_for(cn: &str, groups: &[&str]) -> (Vec<u8>, PrivateKey) {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let serving = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let subject = Subject::new(cn, groups);
    let request = BootstrapRequest {
        api_version: PROTOCOL_VERSION.to_owned(),
        node_group: NODE_GROUP.to_owned(),
        credentials: Some(CredentialRequest {
            client_csr: key.certificate_request(&subject, &[], &[]).unwrap(),
            serving_csr: serving.certificate_request(&subject, &[], &[]).unwrap(),
        }),
    };
    (serde_json::to_vec(&request).unwrap(), key)
}

fn own_body(node: &Node) -> (Vec<u8>, PrivateKey) {
    body_for(
        &format!("system:node:{}", node.private_dns_name),
        &["system:nodes"],
    )
}

/// POSTs a bootstrap request; returns the status and the JSON answer.
fn post(world: &ShimWorld, body: Vec<u8>, authorization: &str) -> (u16, serde_json::Value) {
    try_post(world, body, authorization).unwrap()
}

/// Like [`post`], with the transport's error when there is no answer.
fn try_post(
    world: &ShimWorld,
    body: Vec<u8>,
    authorization: &str,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let client = world.https_client();
    block_on(async {
        let response = client
            .post(format!("{}/v1/bootstrap", world.url()))
            .header("authorization", authorization)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        ))
    })
}

/// How many bootstrap requests the shim counted with `outcome` (`ok` or a code).
fn outcomes(world: &ShimWorld, outcome: &str) -> u64 {
    let prefix =
        format!("controller_shim_requests_total{{endpoint=\"bootstrap\",outcome=\"{outcome}\"}} ");
    world
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0)
}

fn sign(world: &ShimWorld, credentials: &Credentials, body: &[u8], at: SystemTime) -> String {
    IdentityToken::sign(credentials, &world.sts_endpoint(), body, at)
        .unwrap()
        .to_header()
}

/// Posts `body` signed by `node` and expects a refusal with `code` and no certificate.
fn expect_refused(
    world: &ShimWorld,
    what: &str,
    status: u16,
    code: &str,
    body: Vec<u8>,
    auth: String,
) {
    let (got, answer) = post(world, body, &auth);
    assert_eq!(got, status, "{what}: {answer}");
    assert_eq!(answer["code"], code, "{what}: {answer}");
    assert!(answer.get("credentials").is_none(), "{what}: {answer}");
    assert!(
        !answer["message"].as_str().unwrap_or("").is_empty(),
        "{what}: {answer}"
    );
}

fn issued(world: &ShimWorld) -> u64 {
    world
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("controller_shim_certificates_issued_total "))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0)
}

#[test]
fn every_bad_request_is_refused_and_nothing_is_issued() {
    let world = ShimWorld::start();
    let now = SystemTime::now();
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let creds = node.aws_credentials();

    // A forged signature: the right key id, the wrong secret. STS (moto) says no.
    let (body, _) = own_body(&node);
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
    let (body, _) = own_body(&node);
    let (other, _) = own_body(&node);
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
    let (body, _) = own_body(&node);
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
    let (body, _) = own_body(&node);
    let auth = sign(&world, &creds, &body, now - Duration::from_secs(900));
    expect_refused(&world, "stale date", 401, "StaleSignature", body, auth);

    // No proof at all; a proof in another scheme.
    let (body, _) = own_body(&node);
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
    let (body, _) = own_body(&foreign);
    let auth = sign(&world, &foreign.aws_credentials(), &body, now);
    expect_refused(&world, "another account", 403, "WrongAccount", body, auth);

    // A role that is not a node role.
    let admin = world.launch(Some(CLUSTER), Some(NODE_GROUP), "admin-role");
    let (body, _) = own_body(&admin);
    let auth = sign(&world, &admin.aws_credentials(), &body, now);
    expect_refused(
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
        let (body, _) = own_body(&impostor);
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
        let (body, _) = own_body(&stranger);
        let auth = sign(&world, &stranger.aws_credentials(), &body, now);
        expect_refused(&world, what, 403, code, body, auth);
        assert!(world.record(&stranger.instance_id).is_none(), "{what}");
    }

    // A terminated instance whose session still works.
    let gone = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    world.terminate(&gone.instance_id);
    let (body, _) = own_body(&gone);
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
    match try_post(&world, big, &auth) {
        Ok((status, answer)) => {
            assert_eq!(status, 413, "oversize body: {answer}");
            assert_eq!(answer["code"], "TooLarge", "oversize body: {answer}");
        }
        Err(e) => assert!(
            e.is_request() || e.is_body(),
            "oversize body: neither an answer nor a closed connection: {e:?}"
        ),
    }
    assert_eq!(outcomes(&world, "TooLarge"), 1, "{}", world.metrics());

    // A malformed CSR.
    let request = serde_json::json!({
        "apiVersion": PROTOCOL_VERSION,
        "nodeGroup": NODE_GROUP,
        "credentials": {"clientCsr": "-----BEGIN CERTIFICATE REQUEST-----\nMIIBnonsense\n-----END CERTIFICATE REQUEST-----\n", "servingCsr": "x"},
    });
    let body = serde_json::to_vec(&request).unwrap();
    let auth = sign(&world, &creds, &body, now);
    expect_refused(&world, "malformed CSR", 400, "BadCsr", body, auth);

    // A CSR for another node's name; one asking for more groups (two O values, as
    // openssl writes them); one asking for system:masters instead.
    let (body, _) = body_for("system:node:ip-10-9-9-9.ec2.internal", &["system:nodes"]);
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
        credentials: Some(CredentialRequest {
            client_csr: csr.clone(),
            serving_csr: csr,
        }),
    };
    let body = serde_json::to_vec(&request).unwrap();
    let auth = sign(&world, &creds, &body, now);
    expect_refused(&world, "extra groups", 403, "CsrNotAllowed", body, auth);

    // A node group the shim does not serve.
    let mut request: serde_json::Value = serde_json::from_slice(&own_body(&node).0).unwrap();
    request["nodeGroup"] = "gpu-nodes".into();
    let body = serde_json::to_vec(&request).unwrap();
    let auth = sign(&world, &creds, &body, now);
    expect_refused(
        &world,
        "unknown node group",
        403,
        "UnknownNodeGroup",
        body,
        auth,
    );

    assert_eq!(issued(&world), 0, "a refused request issued certificates");
    assert!(
        world.record(&node.instance_id).is_none(),
        "a refused request left a record"
    );

    // After all that, the node itself still bootstraps; then a second bootstrap with a
    // new key is refused, and the same key again (a lost answer) is answered again.
    let (body, key) = own_body(&node);
    let auth = sign(&world, &creds, &body, now);
    let (status, answer) = post(&world, body.clone(), &auth);
    assert_eq!(status, 200, "{answer}");
    let answer: BootstrapResponse = serde_json::from_value(answer).unwrap();
    assert_eq!(answer.node_name, node.private_dns_name);
    assert_eq!(answer.node_spec_bytes().unwrap(), world.spec);
    let first = world.record(&node.instance_id).unwrap();
    assert_eq!(first["clientKeySha256"], key.public_key().fingerprint());

    let (body, _) = own_body(&node);
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

    let body = body_for_key(&node, &key);
    let auth = sign(&world, &creds, &body, SystemTime::now());
    let (status, answer) = post(&world, body, &auth);
    assert_eq!(status, 200, "the same key again: {answer}");
    assert_eq!(world.record(&node.instance_id).unwrap(), first);
}

fn body_for_key(node: &Node, key: &PrivateKey) -> Vec<u8> {
    let subject = Subject::new(
        &format!("system:node:{}", node.private_dns_name),
        &["system:nodes"],
    );
    let serving = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let request = BootstrapRequest {
        api_version: PROTOCOL_VERSION.to_owned(),
        node_group: NODE_GROUP.to_owned(),
        credentials: Some(CredentialRequest {
            client_csr: key.certificate_request(&subject, &[], &[]).unwrap(),
            serving_csr: serving.certificate_request(&subject, &[], &[]).unwrap(),
        }),
    };
    serde_json::to_vec(&request).unwrap()
}

#[test]
fn a_restarted_shim_remembers_which_nodes_bootstrapped() {
    let mut world = ShimWorld::start();
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let signer = world.signer(&node);
    let client = world.client();
    let (body, _) = own_body(&node);
    let request: BootstrapRequest = serde_json::from_slice(&body).unwrap();
    block_on(client.bootstrap(&signer, &request)).unwrap();

    world.stop_shim();
    world.start_shim();

    let (body, _) = own_body(&node);
    let request: BootstrapRequest = serde_json::from_slice(&body).unwrap();
    let err = block_on(client.bootstrap(&signer, &request)).unwrap_err();
    assert!(err.to_string().contains("AlreadyBootstrapped"), "{err}");
    let nodes = block_on(client.nodes()).unwrap();
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
    let world = ShimWorld::start_with(&["allowRebootstrap: true"], "");
    let node = world.launch(Some(CLUSTER), Some(NODE_GROUP), NODE_ROLE);
    let signer = world.signer(&node);
    let client = world.client();
    for round in 1..=2 {
        let (body, key) = own_body(&node);
        let request: BootstrapRequest = serde_json::from_slice(&body).unwrap();
        let answer = block_on(client.bootstrap(&signer, &request)).unwrap();
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
            let request: BootstrapRequest = serde_json::from_slice(&own_body(node).0).unwrap();
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
    let metrics = world.metrics();
    let calls: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("controller_shim_ec2_describe_calls_total "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("{calls} DescribeInstances calls for 40 nodes");
    assert!(
        (1..40).contains(&calls),
        "{calls} DescribeInstances calls for 40 nodes"
    );
    assert_eq!(block_on(client.nodes()).unwrap().nodes.len(), 40);
}

#[test]
fn sts_trouble_is_a_503_that_the_client_rides_out() {
    let world = ShimWorld::start_with_sts_front();
    let front = world.sts_front.as_ref().unwrap();
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
        let (body, _) = own_body(&node);
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
    let request: BootstrapRequest = serde_json::from_slice(&own_body(&node).0).unwrap();
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
    // The example's own CA, not the one the shim signs with. The shim serves the spec
    // it holds, so publish this one in its place.
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
