//! A real etcd cluster on loopback (Debian's etcd 3.4): `n` members with TLS on every
//! listener and client certificates required, as the agent's unit runs them (the same
//! flags, with a port per member since all share 127.0.0.1). Members can be stopped,
//! started and wiped; keys are written in bulk through etcd's JSON gateway.
//!
//! Used by the backup and restore tests and the backup benchmark.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nodewright::controlplane::etcd::client::{ClientTls, EtcdClient};
use nodewright::controlplane::etcd::restore::MemberService;
use nodewright::engine::applied::AppliedSpec;
use nodewright::engine::{RunRecord, RunResult, State};
use nodewright_shim::pki::{
    CertificateAuthority, KeyAlgorithm, PrivateKey, Profile, Subject, Usage,
};

use futures_util::StreamExt;

use crate::agent::Agent;
use crate::moto::free_ports;
use crate::runtime::block_on;

pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCDCTL: &str = "/usr/bin/etcdctl";
/// The member names, as the volumes name them.
pub const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

/// Whether Debian's etcd is installed (scripts/setup.sh installs it).
pub fn installed() -> bool {
    let present = Path::new(ETCD).exists() && Path::new(ETCDCTL).exists();
    assert!(
        present || std::env::var_os("NODEWRIGHT_REQUIRE_ALL").is_none(),
        "etcd is required here (NODEWRIGHT_REQUIRE_ALL) but missing: run scripts/setup.sh"
    );
    if !present {
        eprintln!(
            "skipped: etcd is missing (scripts/setup.sh installs etcd-server and etcd-client)"
        );
    }
    present
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// Where the member's volume would be mounted; the data directory is `data` in it.
    pub volume: PathBuf,
    process: Mutex<Option<Child>>,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.peer_port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.volume.join("data")
    }
}

pub struct EtcdCluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    pub token: String,
}

impl EtcdCluster {
    /// `n` members, started and healthy.
    pub fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        issue_certificates(dir.path());
        let mut ports = free_ports(2 * n).into_iter();
        let members = NAMES[..n]
            .iter()
            .map(|name| {
                let volume = dir.path().join(format!("mnt/etcd-main-{name}"));
                std::fs::create_dir_all(&volume).expect("the member's volume");
                Member {
                    name: (*name).to_owned(),
                    client_port: ports.next().expect("a client port"),
                    peer_port: ports.next().expect("a peer port"),
                    volume,
                    process: Mutex::new(None),
                }
            })
            .collect();
        let cluster = Self {
            dir,
            members,
            token: "etcd-cluster-main-prod.example.com".to_owned(),
        };
        for i in 0..n {
            cluster.start_member(i);
        }
        cluster.wait_healthy();
        cluster
    }

    pub fn tls(&self) -> ClientTls {
        ClientTls::read(
            &self.path("ca.crt"),
            &self.path("client.crt"),
            &self.path("client.key"),
        )
        .expect("the client TLS material")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("pki").join(name)
    }

    pub fn client(&self, i: usize) -> EtcdClient {
        EtcdClient::new(
            &self.members[i].client_url(),
            &self.tls(),
            Duration::from_secs(5),
        )
        .expect("an etcd client")
    }

    pub fn clients(&self) -> Vec<EtcdClient> {
        (0..self.members.len()).map(|i| self.client(i)).collect()
    }

    /// Every member's `name=peer URL`, for `--initial-cluster`.
    pub fn initial_cluster(&self) -> Vec<(String, String)> {
        self.members
            .iter()
            .map(|m| (m.name.clone(), m.peer_url()))
            .collect()
    }

    /// Starts member `i` with the agent's flags (`initial-cluster-state new`: ignored
    /// once the data directory holds a member, as on a node).
    pub fn start_member(&self, i: usize) {
        let member = &self.members[i];
        let mut process = member.process.lock().expect("member lock");
        if process.is_some() {
            return;
        }
        let initial: Vec<String> = self
            .initial_cluster()
            .iter()
            .map(|(n, u)| format!("{n}={u}"))
            .collect();
        let pki = |name: &str| self.path(name).display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("etcd-{}.log", member.name)))
            .expect("a log file");
        let mut command = Command::new(ETCD);
        command
            .arg(format!("--name={}", member.name))
            .arg(format!("--data-dir={}", member.data_dir().display()))
            .arg(format!("--listen-client-urls={}", member.client_url()))
            .arg(format!("--advertise-client-urls={}", member.client_url()))
            .arg(format!("--listen-peer-urls={}", member.peer_url()))
            .arg(format!(
                "--initial-advertise-peer-urls={}",
                member.peer_url()
            ))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg("--initial-cluster-state=new")
            .arg(format!("--initial-cluster-token={}", self.token))
            .arg("--client-cert-auth=true")
            .arg(format!("--trusted-ca-file={}", pki("ca.crt")))
            .arg(format!("--cert-file={}", pki("server.crt")))
            .arg(format!("--key-file={}", pki("server.key")))
            .arg("--peer-client-cert-auth=true")
            .arg(format!("--peer-trusted-ca-file={}", pki("ca.crt")))
            .arg(format!("--peer-cert-file={}", pki("server.crt")))
            .arg(format!("--peer-key-file={}", pki("server.key")))
            .arg("--log-level=warn")
            // Quick elections on loopback; the defaults are for real networks.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .stdout(Stdio::null())
            .stderr(log);
        crate::tools::die_with_parent(&mut command);
        *process = Some(command.spawn().expect("etcd starts"));
    }

    /// Stops member `i` as systemd would (SIGTERM, then wait).
    pub fn stop_member(&self, i: usize) {
        let mut process = self.members[i].process.lock().expect("member lock");
        if let Some(mut child) = process.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            crate::tools::kill_group(&mut child);
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i]
            .process
            .lock()
            .expect("member lock")
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Member `i`'s volume replaced by a blank one: its data directory is gone.
    pub fn wipe_member(&self, i: usize) {
        assert!(!self.is_running(i), "wipe a stopped member only");
        let volume = &self.members[i].volume;
        std::fs::remove_dir_all(volume).expect("wiping the volume");
        std::fs::create_dir_all(volume).expect("a blank volume");
    }

    /// Waits until every running member reports healthy through a linearizable read.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..self.members.len() {
            if !self.is_running(i) {
                continue;
            }
            let client = self.client(i);
            loop {
                match block_on(client.count_keys()) {
                    Ok(_) => break,
                    Err(e) => {
                        assert!(
                            Instant::now() < deadline,
                            "etcd member {} never became healthy: {e}\n{}",
                            self.members[i].name,
                            self.log(i)
                        );
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("etcd-{}.log", self.members[i].name)),
        )
        .unwrap_or_default()
    }

    /// The index of the member etcd calls its leader.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for i in 0..self.members.len() {
                if self.is_running(i)
                    && let Ok(status) = block_on(self.client(i).status())
                    && status.is_leader()
                {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no leader");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `etcdctl ARGS` against member `i`, with the client certificate.
    pub fn etcdctl(&self, i: usize, args: &[&str]) -> Output {
        Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.members[i].client_url()))
            .arg(format!("--cacert={}", self.path("ca.crt").display()))
            .arg(format!("--cert={}", self.path("client.crt").display()))
            .arg(format!("--key={}", self.path("client.key").display()))
            .arg("--dial-timeout=3s")
            .arg("--command-timeout=10s")
            .args(args)
            .output()
            .expect("etcdctl runs")
    }

    /// A key's value through member `i` (a linearizable read).
    pub fn get(&self, i: usize, key: &str) -> Option<String> {
        let output = self.etcdctl(i, &["get", key, "--print-value-only"]);
        assert!(
            output.status.success(),
            "etcdctl get through {}: {}",
            self.members[i].name,
            String::from_utf8_lossy(&output.stderr)
        );
        let value = String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned();
        (!value.is_empty()).then_some(value)
    }

    /// Writes `count` keys `<prefix><n>` with `value_size`-byte values (random letters
    /// and digits: they compress by a quarter at most) through member `i`'s gateway,
    /// 100 per transaction.
    pub fn put_keys(&self, i: usize, prefix: &str, count: usize, value_size: usize) {
        let client = self.http();
        let url = format!("{}/v3/kv/txn", self.members[i].client_url());
        block_on(async {
            let mut batches = Vec::new();
            for start in (0..count).step_by(100) {
                let ops: Vec<serde_json::Value> = (start..(start + 100).min(count))
                    .map(|n| {
                        let value: String =
                            (0..value_size).map(|_| fastrand::alphanumeric()).collect();
                        serde_json::json!({"request_put": {
                            "key": b64(format!("{prefix}{n}").as_bytes()),
                            "value": b64(value.as_bytes()),
                        }})
                    })
                    .collect();
                batches.push(serde_json::json!({ "success": ops }).to_string());
            }
            let mut pending = futures_util::stream::iter(batches.into_iter().map(|body| {
                let client = client.clone();
                let url = url.clone();
                async move {
                    let answer = client.post(&url).body(body).send().await.expect("a txn");
                    assert!(answer.status().is_success(), "txn: {}", answer.status());
                }
            }))
            .buffer_unordered(8);
            while pending.next().await.is_some() {}
        });
    }

    fn http(&self) -> reqwest::Client {
        let tls = self.tls();
        let mut identity = tls.cert_pem.clone();
        identity.push(b'\n');
        identity.extend_from_slice(&tls.key_pem);
        reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&tls.ca_pem).expect("the CA"))
            .identity(reqwest::Identity::from_pem(&identity).expect("the identity"))
            .http1_only()
            .no_proxy()
            .build()
            .expect("an HTTP client")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if let Some(mut child) = self.members[i]
                .process
                .lock()
                .ok()
                .and_then(|mut p| p.take())
            {
                crate::tools::kill_group(&mut child);
            }
        }
    }
}

/// One member of an [`EtcdCluster`] as the restore's service: stop and start its process.
pub struct ProcessMember<'a> {
    pub cluster: &'a EtcdCluster,
    pub index: usize,
}

impl MemberService for ProcessMember<'_> {
    async fn stop(&self) -> Result<(), String> {
        self.cluster.stop_member(self.index);
        Ok(())
    }
    async fn start(&self) -> Result<(), String> {
        self.cluster.start_member(self.index);
        Ok(())
    }
}

fn b64(bytes: &[u8]) -> String {
    aws_smithy_types::base64::encode(bytes)
}

/// The etcd CA, one server/peer certificate for 127.0.0.1 shared by the members, and
/// the node's client certificate, under `<dir>/pki/`.
fn issue_certificates(dir: &Path) {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).expect("the pki dir");
    let (ca, _key) =
        CertificateAuthority::create("etcd-ca", Duration::from_secs(86_400)).expect("a CA");
    std::fs::write(pki.join("ca.crt"), ca.cert_pem()).expect("ca.crt");
    for (name, cn, usage, ips) in [
        (
            "server",
            "etcd-main",
            Usage::ClientAndServer,
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ),
        ("client", "etcd-client", Usage::Client, vec![]),
    ] {
        let private = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("a key");
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
            .expect("a certificate");
        std::fs::write(pki.join(format!("{name}.crt")), issued.pem).expect("a cert");
        std::fs::write(pki.join(format!("{name}.key")), private.to_pem()).expect("a key");
    }
}

/// A control-plane node as `nodewright etcd backup|restore` see it: a root whose kept
/// spec (the last run's, with its facts) names member `a` of etcd cluster `main` at
/// `etcd`'s first member, backing up to `store` every `interval_minutes` through the
/// AWS endpoint `aws_url`; its
/// volume at `/mnt/etcd-main-a` (a link to the member's volume), the etcd client
/// certificate where the PKI step writes it, etcdctl where the etcd asset installs it.
/// The backup store the spec case names.
const CASE_STORE: &str = "s3://nodewright-state/prod.example.com/backups/etcd/main/";

pub fn node_with_kept_spec(
    etcd: &EtcdCluster,
    aws_url: &str,
    store: &str,
    interval_minutes: u32,
) -> Agent {
    let member = &etcd.members[0];
    let mut agent = Agent::new("http://127.0.0.1:9", aws_url);
    for (key, value) in [
        ("AWS_ACCESS_KEY_ID", "AKIAHARNESS"),
        ("AWS_SECRET_ACCESS_KEY", "harness-secret"),
    ] {
        agent.set_env(key, value);
    }
    let pki = agent.path("/etc/kubernetes/pki/etcd");
    std::fs::create_dir_all(&pki).expect("setting up the node's root");
    for (from, to) in [
        ("ca.crt", "ca.crt"),
        ("client.crt", "client.crt"),
        ("client.key", "client.key"),
    ] {
        std::fs::copy(etcd.path(from), pki.join(to)).expect("setting up the node's root");
    }
    let bin = agent.path("/usr/local/bin");
    std::fs::create_dir_all(&bin).expect("setting up the node's root");
    std::os::unix::fs::symlink(ETCDCTL, bin.join("etcdctl")).expect("setting up the node's root");
    std::fs::create_dir_all(agent.path("/mnt")).expect("setting up the node's root");
    std::os::unix::fs::symlink(&member.volume, agent.path("/mnt/etcd-main-a"))
        .expect("setting up the node's root");

    let case = crate::workspace().join("agent/tests/cases/control-plane-etcd-systemd.yaml");
    let text = std::fs::read_to_string(case).expect("setting up the node's root");
    let ports = "clientPort: 4001\n        peerPort: 2380";
    assert!(
        text.contains(ports) && text.contains(CASE_STORE),
        "the case changed"
    );
    let text = text
        .replace(
            ports,
            &format!(
                "clientPort: {}\n        peerPort: {}",
                member.client_port, member.peer_port
            ),
        )
        .replace(
            &format!("store: {CASE_STORE}"),
            &format!("store: {store}\n          intervalMinutes: {interval_minutes}"),
        );
    let mut facts = nodewright::model::Facts::example();
    facts.control_plane.etcd_members.insert(
        "main".to_owned(),
        nodewright::model::EtcdMember {
            member: "a".to_owned(),
            members: vec!["a".to_owned()],
            peer_names: [("a".to_owned(), "127.0.0.1".to_owned())].into(),
            volume_id: "vol-0aaaa1111bbbb2222".to_owned(),
            device: "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0aaaa1111bbbb2222"
                .to_owned(),
            mount_path: "/mnt/etcd-main-a"
                .try_into()
                .expect("setting up the node's root"),
            filesystem: "ext4".to_owned(),
            planned: false,
        },
    );
    let state_dir = agent.path("/var/lib/nodewright");
    AppliedSpec {
        spec_url: "s3://nodewright-state/prod.example.com/nodes/control-plane.yaml".to_owned(),
        spec_sha256: nodewright::spec::digest(text.as_bytes()),
        saved_at: nodewright::clock::now(),
        agent_version: nodewright::VERSION.to_owned(),
        facts,
        spec: text,
    }
    .save_if_changed(&state_dir)
    .expect("setting up the node's root");
    // A converged boot on record, as `status` expects of a node nodewright set up.
    let now = nodewright::clock::now();
    State {
        last_run: Some(RunRecord {
            command: "boot".to_owned(),
            started_at: now.clone(),
            finished_at: now,
            result: RunResult::Converged,
            error: None,
            spec_url: None,
            spec_sha256: None,
            agent_version: nodewright::VERSION.to_owned(),
            changes: 0,
            timeline: Vec::new(),
        }),
        ..State::default()
    }
    .save(&state_dir)
    .expect("setting up the node's root");
    agent
}
