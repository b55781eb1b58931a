//! The control plane's PKI, end to end through the agent binary against emulated S3:
//! the node reads the CAs from the state store, issues its certificates, keeps them on
//! a re-run, re-issues exactly what must be, restarts exactly what uses it, and refuses
//! a bad CA before writing anything.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nodewright::model::pki_paths as paths;
use nodewright_e2e::agent::{json_of, restarted};
use nodewright_e2e::pki::{TestPki, put};
use nodewright_e2e::specs;
use nodewright_e2e::world::World;
use nodewright_shim::pki::{CertificateInfo, PrivateKey, Profile, Subject, Usage};
use serde_json::Value;

const STORE: &str = "s3://nodewright-state/prod.example.com/pki/";
const SPEC_BUCKET: &str = "nodewright-state";
const APISERVER_USER: &str = "apiserver-cert-user.service";
const ETCD_CLIENT_USER: &str = "etcd-client-user.service";

/// Two services that list certificates as inputs, standing in for what the static
/// pods and units of the control plane will be.
const USERS: &str = r#"
files:
  - path: /usr/local/bin/kubelet
    mode: "0755"
    content: |
      #!/bin/sh
      exec /bin/sleep infinity
systemd:
  units:
    - name: apiserver-cert-user.service
      content: |
        [Service]
        ExecStart=/bin/sleep infinity
      restartOn:
        - /etc/kubernetes/pki/apiserver.crt
        - /etc/kubernetes/pki/apiserver.key
    - name: etcd-client-user.service
      content: |
        [Service]
        ExecStart=/bin/sleep infinity
      restartOn:
        - /etc/kubernetes/pki/etcd/client.crt
"#;

fn spec(extra: &str) -> Vec<u8> {
    let with_users = String::from_utf8(specs::extend_example("control-plane", USERS)).unwrap();
    if extra.is_empty() {
        return with_users.into_bytes();
    }
    let dir = tempfile::tempdir().unwrap();
    // extend_example reads an example by name: merge the second layer by hand.
    let mut base: yaml_serde::Value = yaml_serde::from_str(&with_users).unwrap();
    let extra: yaml_serde::Value = yaml_serde::from_str(extra).unwrap();
    merge(&mut base, extra);
    drop(dir);
    yaml_serde::to_string(&base).unwrap().into_bytes()
}

fn merge(base: &mut yaml_serde::Value, extra: yaml_serde::Value) {
    match (base, extra) {
        (yaml_serde::Value::Mapping(base), yaml_serde::Value::Mapping(extra)) => {
            for (k, v) in extra {
                match base.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, extra) => *base = extra,
    }
}

fn booted(spec: &[u8]) -> World {
    let world = specs::world("control-plane", spec);
    let boot = world.agent.run(&["boot", "--deadline", "20"]);
    boot.expect_code(0);
    world
}

fn written(steps: &Value) -> Vec<String> {
    steps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "write-file")
        .map(|s| s["path"].as_str().unwrap().to_owned())
        .collect()
}

/// What each issued certificate must be: path, CA file, subject, usage.
struct Expect {
    cert: String,
    key: String,
    ca: &'static str,
    subject: Subject,
    usage: Usage,
}

fn expected() -> Vec<Expect> {
    let e = |cert: &str, key: &str, ca, cn: &str, o: &[&str], usage| Expect {
        cert: cert.to_owned(),
        key: key.to_owned(),
        ca,
        subject: Subject::new(cn, o),
        usage,
    };
    let node = "system:node:i-0a1b2c3d4e5f60718";
    vec![
        e(
            paths::APISERVER_CERT,
            paths::APISERVER_KEY,
            paths::CA_CERT,
            "kube-apiserver",
            &[],
            Usage::Server,
        ),
        e(
            paths::APISERVER_KUBELET_CLIENT_CERT,
            paths::APISERVER_KUBELET_CLIENT_KEY,
            paths::CA_CERT,
            "kube-apiserver-kubelet-client",
            &["system:masters"],
            Usage::Client,
        ),
        e(
            paths::APISERVER_ETCD_CLIENT_CERT,
            paths::APISERVER_ETCD_CLIENT_KEY,
            paths::ETCD_CA_CERT,
            "kube-apiserver-etcd-client",
            &[],
            Usage::Client,
        ),
        e(
            paths::FRONT_PROXY_CLIENT_CERT,
            paths::FRONT_PROXY_CLIENT_KEY,
            paths::FRONT_PROXY_CA_CERT,
            "front-proxy-client",
            &[],
            Usage::Client,
        ),
        e(
            "/var/lib/kubelet/pki/kubelet-client.crt",
            "/var/lib/kubelet/pki/kubelet-client.key",
            paths::CA_CERT,
            node,
            &["system:nodes"],
            Usage::Client,
        ),
        e(
            paths::KUBELET_SERVING_CERT,
            paths::KUBELET_SERVING_KEY,
            paths::CA_CERT,
            node,
            &["system:nodes"],
            Usage::Server,
        ),
        e(
            paths::CONTROLLER_MANAGER_CLIENT_CERT,
            paths::CONTROLLER_MANAGER_CLIENT_KEY,
            paths::CA_CERT,
            "system:kube-controller-manager",
            &[],
            Usage::Client,
        ),
        e(
            paths::CONTROLLER_MANAGER_SERVING_CERT,
            paths::CONTROLLER_MANAGER_SERVING_KEY,
            paths::CA_CERT,
            "kube-controller-manager",
            &[],
            Usage::Server,
        ),
        e(
            paths::SCHEDULER_CLIENT_CERT,
            paths::SCHEDULER_CLIENT_KEY,
            paths::CA_CERT,
            "system:kube-scheduler",
            &[],
            Usage::Client,
        ),
        e(
            paths::SCHEDULER_SERVING_CERT,
            paths::SCHEDULER_SERVING_KEY,
            paths::CA_CERT,
            "kube-scheduler",
            &[],
            Usage::Server,
        ),
        e(
            paths::ADMIN_CLIENT_CERT,
            paths::ADMIN_CLIENT_KEY,
            paths::CA_CERT,
            "kubernetes-admin",
            &["system:masters"],
            Usage::Client,
        ),
        e(
            paths::ETCD_CLIENT_CERT,
            paths::ETCD_CLIENT_KEY,
            paths::ETCD_CA_CERT,
            "etcd-client",
            &[],
            Usage::Client,
        ),
        e(
            paths::SHIM_SERVING_CERT,
            paths::SHIM_SERVING_KEY,
            paths::CA_CERT,
            "controller-shim",
            &[],
            Usage::Server,
        ),
    ]
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn read(world: &World, path: &str) -> String {
    std::fs::read_to_string(world.agent.path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The base64 lines of every private key the node holds or the store has: none may
/// leak anywhere.
fn secret_lines(world: &World) -> Vec<String> {
    let mut texts: Vec<String> = expected().iter().map(|e| read(world, &e.key)).collect();
    let pki = world.pki.as_ref().unwrap();
    texts.extend([
        pki.cluster.key_pem.clone(),
        pki.front_proxy.key_pem.clone(),
        pki.etcd.key_pem.clone(),
        pki.sa_key.clone(),
    ]);
    let mut lines: Vec<String> = texts
        .iter()
        .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .collect();
    let secret = pki
        .encryption_config
        .lines()
        .find_map(|l| l.trim().strip_prefix("secret: "))
        .unwrap()
        .to_owned();
    lines.push(secret);
    lines
}

fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} holds key material {secret}"
        );
    }
}

#[test]
fn a_control_plane_issues_every_certificate_from_the_store_and_keeps_them_on_a_re_run() {
    let world = specs::world("control-plane", &spec(""));
    let boot = world.agent.run(&["boot", "--deadline", "20"]);
    boot.expect_code(0);

    // Store files: CA certificates public, keys and the encryption config private.
    let pki = world.pki.clone().unwrap();
    assert_eq!(read(&world, paths::CA_CERT), pki.cluster.cert_pem);
    assert_eq!(read(&world, paths::CA_KEY), pki.cluster.key_pem);
    assert_eq!(read(&world, paths::ETCD_CA_CERT), pki.etcd.cert_pem);
    assert_eq!(
        read(&world, paths::FRONT_PROXY_CA_CERT),
        pki.front_proxy.cert_pem
    );
    for (path, want) in [
        (paths::CA_CERT, 0o644),
        (paths::CA_KEY, 0o600),
        (paths::FRONT_PROXY_CA_CERT, 0o644),
        (paths::ETCD_CA_CERT, 0o644),
        (paths::SA_KEY, 0o600),
        (paths::SA_PUB, 0o644),
        (paths::ENCRYPTION_CONFIG, 0o600),
    ] {
        assert_eq!(mode(&world.agent.path(path)), want, "{path}");
    }
    // The etcd and front-proxy CA keys stay in the store.
    assert!(!world.agent.path("/etc/kubernetes/pki/etcd/ca.key").exists());
    assert!(
        !world
            .agent
            .path("/etc/kubernetes/pki/front-proxy-ca.key")
            .exists()
    );

    for want in expected() {
        let cert_file = world.agent.path(&want.cert);
        let ca_file = world.agent.path(want.ca);
        assert_eq!(mode(&cert_file), 0o644, "{}", want.cert);
        assert_eq!(mode(&world.agent.path(&want.key)), 0o600, "{}", want.key);
        let purpose = match want.usage {
            Usage::Client => "sslclient",
            _ => "sslserver",
        };
        let (ok, out) = openssl(&[
            "verify",
            "-CAfile",
            ca_file.to_str().unwrap(),
            "-purpose",
            purpose,
            cert_file.to_str().unwrap(),
        ]);
        assert!(ok && out.contains(": OK"), "{}: {out}", want.cert);
        // The wrong purpose is refused: usages are exactly what they should be.
        let other = if purpose == "sslclient" {
            "sslserver"
        } else {
            "sslclient"
        };
        let (ok, out) = openssl(&[
            "verify",
            "-CAfile",
            ca_file.to_str().unwrap(),
            "-purpose",
            other,
            cert_file.to_str().unwrap(),
        ]);
        assert!(!ok, "{} also verifies as {other}: {out}", want.cert);

        let info = CertificateInfo::from_pem(&want.cert, &read(&world, &want.cert)).unwrap();
        assert_eq!(info.subject, want.subject, "{}", want.cert);
        assert!(!info.is_ca);
        assert_eq!(
            (info.client_auth, info.server_auth),
            (want.usage == Usage::Client, want.usage == Usage::Server),
            "{}",
            want.cert
        );
        let key = PrivateKey::from_pem(&want.key, &read(&world, &want.key)).unwrap();
        assert_eq!(key.public_key(), info.public_key, "{}", want.cert);
        let backdated = time::OffsetDateTime::now_utc() - info.not_before;
        assert!(
            backdated >= time::Duration::minutes(59),
            "{}: {backdated}",
            want.cert
        );
        let valid = info.not_after - info.not_before;
        assert_eq!(valid.whole_days(), 365, "{}", want.cert);
        let (_, text) = openssl(&[
            "x509",
            "-noout",
            "-text",
            "-in",
            cert_file.to_str().unwrap(),
        ]);
        assert!(
            text.contains("Digital Signature, Key Encipherment"),
            "{}: {text}",
            want.cert
        );
        assert!(text.contains("CA:FALSE"), "{}: {text}", want.cert);
        assert!(
            text.contains("prime256v1"),
            "{}: ECDSA P-256 by default",
            want.cert
        );
    }

    // The API server's names, field by field.
    let api = CertificateInfo::from_pem("apiserver", &read(&world, paths::APISERVER_CERT)).unwrap();
    assert_eq!(
        api.dns_names,
        [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "api.internal.prod.example.com",
            "api.prod.example.com",
            "localhost"
        ]
    );
    let ips: Vec<String> = api.ips.iter().map(ToString::to_string).collect();
    assert_eq!(ips, ["100.64.0.1", "127.0.0.1", "10.0.1.23"]);
    let kubelet =
        CertificateInfo::from_pem("kubelet", &read(&world, paths::KUBELET_SERVING_CERT)).unwrap();
    assert_eq!(
        kubelet.dns_names,
        ["ip-10-0-1-23.ec2.internal", "i-0a1b2c3d4e5f60718"]
    );
    let (_, text) = openssl(&[
        "x509",
        "-noout",
        "-text",
        "-in",
        world.agent.path(paths::APISERVER_CERT).to_str().unwrap(),
    ]);
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("IP Address:100.64.0.1"), "{text}");

    // A re-run issues nothing and changes nothing.
    let before: BTreeMap<String, String> = expected()
        .iter()
        .flat_map(|e| [e.cert.clone(), e.key.clone()])
        .map(|p| (p.clone(), read(&world, &p)))
        .collect();
    let plan = world.agent.run(&["plan", "--deadline", "20"]);
    plan.expect_code(0);
    assert!(plan.stdout.contains("No changes"), "{}", plan.stdout);
    world
        .agent
        .run(&["boot", "--deadline", "20"])
        .expect_code(0);
    for (path, bytes) in &before {
        assert_eq!(&read(&world, path), bytes, "{path} changed on a re-run");
    }
    world.agent.run(&["verify"]).expect_code(0);

    // No key material in logs, plan output, the state or the support bundle.
    let secrets = secret_lines(&world);
    assert_no_secret(
        "boot output",
        &format!("{}{}", boot.stdout, boot.stderr),
        &secrets,
    );
    assert_no_secret(
        "plan output",
        &format!("{}{}", plan.stdout, plan.stderr),
        &secrets,
    );
    assert_no_secret(
        "state.json",
        &read(&world, "/var/lib/nodewright/state.json"),
        &secrets,
    );
    let bundle = world.agent.root().join("bundle.tar.gz");
    world
        .agent
        .run(&["support-bundle", "--output", bundle.to_str().unwrap()])
        .expect_code(0);
    let listing = Command::new("tar")
        .args(["-xzOf", bundle.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!listing.stdout.is_empty());
    assert_no_secret(
        "support bundle",
        &String::from_utf8_lossy(&listing.stdout),
        &secrets,
    );
}

#[test]
fn an_expiring_or_damaged_certificate_is_re_issued_and_restarts_only_its_users() {
    let world = booted(&spec(""));
    let agent = &world.agent;
    let pki = world.pki.clone().unwrap();
    let untouched: BTreeMap<String, String> = expected()
        .iter()
        .filter(|e| e.cert != paths::APISERVER_CERT)
        .map(|e| (e.cert.clone(), read(&world, &e.cert)))
        .collect();

    // Forge an API server certificate 10 days from its end, for the same key.
    let key = PrivateKey::from_pem("key", &read(&world, paths::APISERVER_KEY)).unwrap();
    let info = CertificateInfo::from_pem("api", &read(&world, paths::APISERVER_CERT)).unwrap();
    let forged = pki
        .cluster
        .authority()
        .issue(
            &key.public_key(),
            &Profile {
                subject: info.subject.clone(),
                dns_names: info.dns_names.clone(),
                ips: info.ips.clone(),
                usage: Usage::Server,
                validity: Duration::from_secs(10 * 86400),
                backdate: Duration::from_secs(3600),
            },
        )
        .unwrap();
    std::fs::write(agent.path(paths::APISERVER_CERT), &forged.pem).unwrap();
    let plan = agent.run(&["plan", "--deadline", "20"]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(&format!(
            "issue {}: expires in 9 days (renewed within 30)",
            paths::APISERVER_CERT
        )),
        "{}",
        plan.stdout
    );
    let plan = json_of(
        agent
            .run(&["plan", "--json", "--deadline", "20"])
            .expect_code(0),
    );
    assert_eq!(written(&plan["steps"]), [paths::APISERVER_CERT]);
    assert_eq!(restarted(&plan["steps"]), [APISERVER_USER]);
    agent.run(&["boot", "--deadline", "20"]).expect_code(0);
    let renewed = CertificateInfo::from_pem("api", &read(&world, paths::APISERVER_CERT)).unwrap();
    assert!((renewed.not_after - time::OffsetDateTime::now_utc()).whole_days() >= 364);
    assert_eq!(renewed.public_key, key.public_key(), "the good key is kept");
    // verify accepts the legitimately re-issued certificate.
    agent.run(&["verify"]).expect_code(0);

    // Damaged: verify names it, repair re-issues it and restarts its user only.
    std::fs::write(agent.path(paths::APISERVER_CERT), "garbage\n").unwrap();
    let verify = agent.run(&["verify"]);
    verify.expect_code(7);
    assert!(
        verify.stdout.contains(paths::APISERVER_CERT),
        "{}",
        verify.stdout
    );
    let repair = json_of(agent.run(&["repair", "--json"]).expect_code(0));
    assert_eq!(restarted(&repair["steps"]), [APISERVER_USER]);
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        agent.path(paths::CA_CERT).to_str().unwrap(),
        agent.path(paths::APISERVER_CERT).to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    agent.run(&["verify"]).expect_code(0);
    for (path, bytes) in &untouched {
        assert_eq!(&read(&world, path), bytes, "{path} was re-issued too");
    }
}

#[test]
fn a_new_load_balancer_ip_re_issues_only_the_certificates_that_name_it() {
    let world = booted(&spec(""));
    let agent = &world.agent;
    let before: BTreeMap<String, String> = expected()
        .iter()
        .flat_map(|e| [e.cert.clone(), e.key.clone()])
        .map(|p| (p.clone(), read(&world, &p)))
        .collect();
    let changed = spec("cluster:\n  api:\n    loadBalancerIps: [10.0.1.7]\n");
    world
        .moto
        .put_object(SPEC_BUCKET, "prod.example.com/changed.yaml", &changed);
    let url = format!("s3://{SPEC_BUCKET}/prod.example.com/changed.yaml");
    let plan = json_of(
        agent
            .run(&["plan", "--json", "--spec", &url, "--deadline", "20"])
            .expect_code(0),
    );
    let reasons: Vec<String> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s["path"], s["reason"]))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(paths::APISERVER_CERT) && r.contains("SANs changed (+10.0.1.7)")),
        "{reasons:#?}"
    );
    // The API server's and controller-shim's serving certificates carry the
    // load-balancer addresses; nothing else changes, and only their users restart.
    let sans_changed = [paths::APISERVER_CERT, paths::SHIM_SERVING_CERT];
    let mut issued: Vec<String> = written(&plan["steps"])
        .into_iter()
        .filter(|p| p.ends_with(".crt") || p.ends_with(".key"))
        .collect();
    issued.sort();
    let mut wanted: Vec<String> = sans_changed.iter().map(|p| (*p).to_owned()).collect();
    wanted.sort();
    assert_eq!(issued, wanted);
    assert_eq!(restarted(&plan["steps"]), [APISERVER_USER]);
    agent
        .run(&["apply", "--spec", &url, "--deadline", "20"])
        .expect_code(0);
    for path in sans_changed {
        let info = CertificateInfo::from_pem(path, &read(&world, path)).unwrap();
        assert!(info.ips.contains(&"10.0.1.7".parse().unwrap()), "{path}");
        assert_ne!(read(&world, path), before[path], "{path}");
    }
    for (path, bytes) in &before {
        if !sans_changed.contains(&path.as_str()) {
            assert_eq!(&read(&world, path), bytes, "{path} changed");
        }
    }
    let plan = agent.run(&["plan", "--spec", &url, "--deadline", "20"]);
    assert!(plan.stdout.contains("No changes"), "{}", plan.stdout);
}

#[test]
fn rsa_2048_when_the_spec_asks() {
    let world = booted(&spec("controlPlane:\n  pki:\n    keyAlgorithm: rsa2048\n"));
    for want in expected() {
        let (ok, text) = openssl(&[
            "x509",
            "-noout",
            "-text",
            "-in",
            world.agent.path(&want.cert).to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        assert!(
            text.contains("rsaEncryption") && text.contains("(2048 bit)"),
            "{}: {text}",
            want.cert
        );
    }
    // Switching back to ECDSA re-issues every key.
    let ecdsa = spec("");
    world
        .moto
        .put_object(SPEC_BUCKET, "prod.example.com/ecdsa.yaml", &ecdsa);
    let url = format!("s3://{SPEC_BUCKET}/prod.example.com/ecdsa.yaml");
    let plan = world
        .agent
        .run(&["plan", "--spec", &url, "--deadline", "20"]);
    plan.expect_code(0);
    assert!(
        plan.stdout
            .contains("key algorithm changed (rsa-2048 → ecdsa-p256)"),
        "{}",
        plan.stdout
    );
    // Every user of a certificate restarts.
    let plan = json_of(
        world
            .agent
            .run(&["plan", "--json", "--spec", &url, "--deadline", "20"])
            .expect_code(0),
    );
    let units = restarted(&plan["steps"]);
    for unit in [APISERVER_USER, ETCD_CLIENT_USER, "kubelet.service"] {
        assert!(units.iter().any(|u| u == unit), "{unit}: {units:?}");
    }
}

#[test]
fn a_bad_ca_in_the_store_is_refused_before_anything_is_written() {
    let other = TestPki::generate();
    let leaf_key = PrivateKey::generate(nodewright_shim::pki::KeyAlgorithm::EcdsaP256).unwrap();
    let leaf = other
        .cluster
        .authority()
        .issue(
            &leaf_key.public_key(),
            &Profile {
                subject: Subject::new("not-a-ca", &[]),
                dns_names: vec![],
                ips: vec![],
                usage: Usage::Client,
                validity: Duration::from_secs(86400 * 30),
                backdate: Duration::ZERO,
            },
        )
        .unwrap();
    let cases: [(&str, &str, String, String, &str); 4] = [
        (
            "corrupt",
            "ca.crt",
            "not a certificate\n".into(),
            String::new(),
            "ca.crt: not a PEM certificate",
        ),
        (
            "not PEM of a cert",
            "ca.crt",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            String::new(),
            "ca.crt: not a PEM certificate",
        ),
        (
            "foreign key",
            "ca.key",
            other.cluster.key_pem.clone(),
            String::new(),
            "ca.key: does not match the CA certificate",
        ),
        (
            "not a CA",
            "ca.crt",
            leaf.pem.clone(),
            leaf_key.to_pem(),
            "ca.crt: is not a CA certificate",
        ),
    ];
    for (name, object, content, key, says) in cases {
        let spec = spec("");
        let world = specs::world("control-plane", &spec);
        put(STORE, object, content.as_bytes(), Some(&world.moto));
        if !key.is_empty() {
            put(STORE, "ca.key", key.as_bytes(), Some(&world.moto));
        }
        let boot = world.agent.run(&["boot", "--deadline", "5"]);
        boot.expect_code(3);
        assert!(
            boot.stderr.contains(&format!("{STORE}{says}")),
            "{name}: {}",
            boot.stderr
        );
        assert!(world.agent.untouched(), "{name}: something was written");
        assert_no_secret(
            name,
            &boot.stderr,
            &[other.cluster.key_pem.lines().nth(1).unwrap().to_owned()],
        );
    }

    // Missing: a file:// store without ca.crt.
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/", dir.path().display());
    let spec = spec(&format!("controlPlane:\n  pki:\n    store: {store}\n"));
    // The world publishes a PKI there; take its CA certificate away.
    let world = specs::world("control-plane", &spec);
    nodewright_e2e::pki::remove(&store, "ca.crt");
    let boot = world.agent.run(&["boot", "--deadline", "5"]);
    boot.expect_code(3);
    assert!(
        boot.stderr.contains(&format!("{store}ca.crt")),
        "{}",
        boot.stderr
    );
    assert!(world.agent.untouched(), "something was written");
}
