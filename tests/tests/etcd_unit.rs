//! etcd as a systemd service (`controlPlane.etcd.mode: systemd`), for real: the agent's
//! engine installs Debian's etcd binary as an asset from the harness mirror (checked by
//! its sha256) and writes the unit; the unit's own ExecStart line (read back from the
//! rendered file, with the node's paths under the test root) starts a real etcd, which
//! answers `etcdctl endpoint health` over TLS with the etcd client certificate and
//! refuses a client without one.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nodewright::engine::{self, State};
use nodewright::host::Host;
use nodewright::model::{EtcdMember, Facts, desired_state, etcd, pki_paths as pki};
use nodewright::spec::NodeSpec;
use nodewright_e2e::assetkit::sha256;
use nodewright_e2e::mirror::Mirror;
use nodewright_shim::pki::{
    CertificateAuthority, KeyAlgorithm, PrivateKey, Profile, Subject, Usage,
};

const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes the etcd CA and the certificates the PKI step would issue, at the contract's
/// paths under `root`.
fn issue_certificates(root: &Path) {
    let (ca, ca_key) =
        CertificateAuthority::create("etcd-ca", Duration::from_secs(86_400)).unwrap();
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(at(pki::ETCD_CA_CERT).parent().unwrap()).unwrap();
    std::fs::write(at(pki::ETCD_CA_CERT), ca.cert_pem()).unwrap();
    drop(ca_key);
    let loopback = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    for (cert, key, cn, usage, ips) in [
        (
            pki::etcd_server_cert("main"),
            pki::etcd_server_key("main"),
            "etcd-a",
            Usage::ClientAndServer,
            loopback.clone(),
        ),
        (
            pki::etcd_peer_cert("main"),
            pki::etcd_peer_key("main"),
            "etcd-a",
            Usage::ClientAndServer,
            loopback.clone(),
        ),
        (
            pki::ETCD_CLIENT_CERT.to_owned(),
            pki::ETCD_CLIENT_KEY.to_owned(),
            "etcd-client",
            Usage::Client,
            vec![],
        ),
    ] {
        let private = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let issued = ca
            .issue(
                &private.public_key(),
                &Profile {
                    subject: Subject::new(cn, &[]),
                    dns_names: vec!["localhost".to_owned()],
                    ips,
                    usage,
                    validity: Duration::from_secs(86_400),
                    backdate: Duration::from_secs(60),
                },
            )
            .unwrap();
        std::fs::write(at(&cert), issued.pem).unwrap();
        std::fs::write(at(&key), private.to_pem()).unwrap();
    }
}

/// The command of the unit's ExecStart= (continuation lines joined).
fn exec_start(unit: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    line.split_whitespace().map(str::to_owned).collect()
}

/// The node's absolute paths in a command, moved under `root`.
fn under_root(root: &Path, command: &[String]) -> Vec<String> {
    command
        .iter()
        .map(|arg| {
            let rooted = |p: &str| root.join(p.trim_start_matches('/')).display().to_string();
            if arg.starts_with('/') {
                rooted(arg)
            } else if let Some((flag, value)) = arg.split_once('=')
                && value.starts_with('/')
            {
                format!("{flag}={}", rooted(value))
            } else {
                arg.clone()
            }
        })
        .collect()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn etcdctl(endpoint: &str, tls: &[(&str, PathBuf)]) -> std::process::Output {
    let mut command = Command::new(ETCDCTL);
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=2s")
        .arg("--command-timeout=3s");
    for (flag, path) in tls {
        command.arg(format!("--{flag}={}", path.display()));
    }
    command.args(["endpoint", "health"]).output().unwrap()
}

#[test]
fn etcd_from_the_rendered_unit_serves_tls_clients_and_refuses_others() {
    if !Path::new(ETCD).exists() || !Path::new(ETCDCTL).exists() {
        panic!("etcd is missing: run scripts/setup.sh (it installs etcd-server and etcd-client)");
    }
    let binary = std::fs::read(ETCD).unwrap();
    let mirror = Mirror::start();
    mirror.put("/etcd/v3.4.23/etcd", binary.clone());
    let (client, peer, metrics) = (free_port(), free_port(), free_port());
    let text = format!(
        "apiVersion: nodewright.io/v1alpha1
kind: NodeSpec
cluster:
  name: test.example.com
  kubernetesVersion: 1.33.4
  serviceCidr: 100.64.0.0/13
  podCidr: 100.96.0.0/11
  dnsIp: 100.64.0.10
role: control-plane
assets:
  - name: etcd
    sha256: {sha}
    urls: [{url}]
    install:
      - path: /usr/local/bin/etcd
controlPlane:
  etcdVolumes:
    clusters: [main]
  etcd:
    mode: systemd
    asset: etcd
    clusters:
      main:
        clientPort: {client}
        peerPort: {peer}
        metricsPort: {metrics}
        extraArgs:
          log-level: warn
",
        sha = sha256(&binary),
        url = mirror.url("/etcd/v3.4.23/etcd"),
    );
    let spec = NodeSpec::parse("etcd-systemd", &text).unwrap();
    let mut facts = Facts::example();
    facts.control_plane.etcd_members.insert(
        "main".to_owned(),
        EtcdMember {
            member: "a".to_owned(),
            members: vec!["a".to_owned()],
            // The peers on loopback: this is a one-member cluster on this machine.
            peer_names: [("a".to_owned(), "127.0.0.1".to_owned())].into(),
            volume_id: "vol-0123456789abcdef0".to_owned(),
            device: "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0"
                .to_owned(),
            mount_path: "/mnt/etcd-main-a".try_into().unwrap(),
            filesystem: "ext4".to_owned(),
            planned: false,
        },
    );
    let desired = desired_state(&spec, &facts).unwrap();

    // The agent's engine installs the binary from the mirror and writes the unit.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    issue_certificates(root);
    let host = Host::new(root);
    let mut state = State::default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let plan = engine::plan(&desired, &host, &state).await.unwrap();
        let report = engine::apply(&plan, &host, &mut state).await;
        assert!(report.failures().is_empty(), "{:?}", report.failures());
    });
    let installed = root.join("usr/local/bin/etcd");
    assert_eq!(sha256(&std::fs::read(&installed).unwrap()), sha256(&binary));
    assert!(
        mirror
            .hits_for("/etcd/v3.4.23/etcd")
            .iter()
            .any(|h| h.status == 200)
    );

    let unit = std::fs::read_to_string(
        root.join("etc/systemd/system")
            .join(etcd::unit_name("main")),
    )
    .unwrap();
    let command = under_root(root, &exec_start(&unit));
    assert_eq!(command[0], installed.display().to_string());
    let log = std::fs::File::create(root.join("etcd.log")).unwrap();
    let started = Instant::now();
    let _etcd = Running(
        Command::new(&command[0])
            .args(&command[1..])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let endpoint = format!("https://127.0.0.1:{client}");
    let with_cert = [
        ("cacert", at(pki::ETCD_CA_CERT)),
        ("cert", at(pki::ETCD_CLIENT_CERT)),
        ("key", at(pki::ETCD_CLIENT_KEY)),
    ];
    let healthy = loop {
        let output = etcdctl(&endpoint, &with_cert);
        if output.status.success() {
            break String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "etcd did not become healthy: {}\netcd log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(root.join("etcd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(healthy.contains("is healthy"), "{healthy}");
    eprintln!("etcd healthy after {:?}", started.elapsed());

    // The data went where the unit says: on the member's volume mount.
    assert!(root.join("mnt/etcd-main-a/data/member").is_dir());

    // Without a client certificate: refused (client-cert-auth).
    let refused = etcdctl(&endpoint, &[("cacert", at(pki::ETCD_CA_CERT))]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("is unhealthy"), "{said}");

    // The probes' plain-HTTP health endpoint, on loopback only.
    let health = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{metrics}/health")])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&health.stdout);
    assert!(body.contains("\"health\":\"true\""), "{body}");
}
