//! The booted HA control plane: a fleet (booted nodes, the emulator with its fidelity
//! layer, the VPC resolver) with what three control-plane nodes of prod.example.com need
//! to come up as on EC2:
//!
//! - three etcd volumes of etcd cluster `main` in the emulator (tagged `a/a,b,c`,
//!   `b/a,b,c`, `c/a,b,c`), each backed by a loop device. When the emulator reports a
//!   volume attached to an instance, its loop device appears in that node as
//!   `/dev/nvme<k>n1` with its EBS by-id link; when the instance is terminated or the
//!   volume detached, it disappears (the fidelity layer's events);
//! - the Route53 hosted zone of the cluster's internal names;
//! - a test PKI in the state store (`s3://nodewright-state/prod.example.com/pki/`);
//! - the asset mirror serving the kubelet stand-in and Debian's etcd (with their real
//!   sha256), and the node spec `tests/fixtures/booted-control-plane/nodespec.yaml`
//!   naming them, published in the state store with user data that names it.
//!
//! Nodes are launched with the control plane's instance tags; `etcdctl` runs inside a
//! node (copied onto its disk: the image has none) with the etcd client certificate the
//! agent issued there.
//!
//! The control plane runs controller-shim (this build's binary, from the mirror) for the
//! workers of `nodes-us-east-1a`: [`HaControlPlane::launch_worker`] runs an instance with
//! that group's tags and a real role session of `nodes.prod.example.com` (AssumeRole in
//! the emulator, session name = instance id, as EC2 does), whose user data names only
//! the shim. That role has no S3 access: the front answers AccessDenied to any S3
//! request signed with a worker's session, as IAM would, and counts them.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::create_etcd_volume;
use crate::disks::{LoopDisk, by_id_name};
use crate::fidelity::{Event, Fidelity};
use crate::fleet::{Fleet, boot_config};
use crate::front::{Canned, Seen};
use crate::imds::RoleCredentials;
use crate::moto::sdk_config_for;
use crate::node::{DeviceBay, Node};
use crate::pki::{Publish, TestPki};
use crate::runtime::block_on;
use crate::shim::{between, signed_query};
use crate::worker::AssetMirror;

pub const CLUSTER: &str = "prod.example.com";
pub const ZONE: &str = "us-east-1a";
pub const STATE_BUCKET: &str = "nodewright-state";
pub const SPEC_KEY: &str = "prod.example.com/nodegroups/control-plane-us-east-1a/nodespec.yaml";
pub const PKI_STORE: &str = "s3://nodewright-state/prod.example.com/pki/";
/// Where the mirror serves etcd.
pub const ETCD_PATH: &str = "/etcd/v3.4.23/linux-amd64/etcd";
/// The machine's etcd (Debian's etcd-server), served to nodes as an asset.
const MACHINE_ETCD: &str = "/usr/bin/etcd";
/// The machine's etcdctl (Debian's etcd-client), copied onto nodes for the tests.
const MACHINE_ETCDCTL: &str = "/usr/bin/etcdctl";
/// Where the mirror serves controller-shim.
pub const SHIM_PATH: &str = "/controller-shim/v0.1.0/linux-amd64/controller-shim";
/// controller-shim's port (the spec's default).
pub const SHIM_PORT: u16 = 3988;
/// The workers' node group, its IAM role and its spec in the state store.
pub const WORKER_GROUP: &str = "nodes-us-east-1a";
pub const WORKER_ROLE: &str = "nodes.prod.example.com";
/// The workers' spec prefix: each spec at `<prefix>nodespec/<sha256>.yaml`.
pub const WORKER_SPEC_PREFIX: &str = "prod.example.com/nodegroups/nodes-us-east-1a/";
/// The node groups controller-shim serves, which it reads from the store as it runs.
pub const NODE_GROUPS_KEY: &str = "prod.example.com/controller-shim/node-groups.yaml";
/// The control plane's IAM role (its IMDS credentials are accepted as they are: the
/// emulator does not check signatures here).
pub const CONTROL_PLANE_ROLE: &str = "control-plane.prod.example.com";
/// The members of etcd cluster `main`, one per volume.
pub const MEMBERS: [&str; 3] = ["a", "b", "c"];
/// etcd `main`'s client port (kops's).
pub const ETCD_CLIENT_PORT: u16 = 4001;

/// Which loop device backs which volume, and where each volume is attached.
#[derive(Default)]
struct Registry {
    /// Instance id → the node's device slots.
    bays: BTreeMap<String, DeviceBay>,
    /// Volume id → its loop device.
    disks: BTreeMap<String, std::path::PathBuf>,
    /// Volume id → (instance, device name in the node).
    attached: BTreeMap<String, (String, String)>,
}

pub struct HaControlPlane {
    pub fleet: Fleet,
    pub mirror: AssetMirror,
    pub fidelity: Fidelity,
    pub pki: TestPki,
    pub zone_id: String,
    /// Volume id → member name, in member order.
    pub volumes: Vec<(String, String)>,
    /// The node spec every control-plane node boots from, and its user data.
    pub spec: Vec<u8>,
    pub user_data: Vec<u8>,
    /// The workers' node spec, which controller-shim serves.
    pub worker_spec: Vec<u8>,
    /// Access keys of the workers' role sessions, and how many S3 requests were signed
    /// with one (each refused).
    worker_keys: Arc<Mutex<BTreeSet<String>>>,
    worker_s3_requests: Arc<AtomicU32>,
    registry: Arc<Mutex<Registry>>,
    // Last: the loop devices go after the nodes that use them.
    _disks: Vec<LoopDisk>,
}

impl HaControlPlane {
    /// Everything but the nodes, or `None` where booted nodes cannot run.
    pub fn start() -> Option<Self> {
        let (fleet, mirror) = crate::worker::fleet()?;
        for tool in [MACHINE_ETCD, MACHINE_ETCDCTL] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: scripts/setup.sh installs etcd-server and etcd-client"
            );
        }
        let etcd = std::fs::read(MACHINE_ETCD).expect("reading the machine's etcd");
        let etcd_sha256 = crate::assetkit::sha256(&etcd);
        mirror.mirror.put(ETCD_PATH, etcd);
        let shim_binary = crate::tools::workspace_bin("controller-shim");
        let shim = std::fs::read(&shim_binary)
            .unwrap_or_else(|e| panic!("reading {}: {e}", shim_binary.display()));
        let shim_sha256 = crate::assetkit::sha256(&shim);
        mirror.mirror.put(SHIM_PATH, shim);
        let fidelity = Fidelity::install(&fleet.front);
        let config = sdk_config_for(fleet.moto.url());
        let route53 = aws_sdk_route53::Client::new(&config);
        let zone_id = crate::cluster::create_hosted_zone(&route53, CLUSTER, "booted-control-plane");

        let pki = crate::pki::generate();
        pki.publish(PKI_STORE, Some(&fleet.moto));

        let registry: Arc<Mutex<Registry>> = Arc::default();
        let mut disks = Vec::new();
        let mut volumes = Vec::new();
        for member in MEMBERS {
            let disk = LoopDisk::new(256);
            let id = create_etcd_volume(&fleet.ec2, ZONE, CLUSTER, "main", member, "a,b,c");
            registry
                .lock()
                .expect("registry")
                .disks
                .insert(id.clone(), disk.device().to_owned());
            volumes.push((id, member.to_owned()));
            disks.push(disk);
        }
        let listener = registry.clone();
        fidelity.on_event(move |event| on_volume_event(&listener, event));

        let spec = control_plane_spec(&mirror, &zone_id, &etcd_sha256, &shim_sha256);
        let worker_spec =
            crate::shim::with_cluster_ca(&mirror.worker_spec(), &pki.cluster.cert_pem);
        fleet
            .moto
            .put_object(STATE_BUCKET, &worker_spec_key(&worker_spec), &worker_spec);
        // The workers' group, in the store (the control plane's spec does not list it).
        let groups =
            nodewright_shim::groups::NodeGroups::new(vec![nodewright_shim::groups::NodeGroup {
                name: WORKER_GROUP.to_owned(),
                roles: vec![WORKER_ROLE.to_owned()],
                node_specs: format!("s3://{STATE_BUCKET}/{WORKER_SPEC_PREFIX}"),
                node_name: nodewright_shim::groups::NodeNaming::default(),
                rebootstrap: nodewright_shim::groups::Rebootstrap::default(),
            }]);
        fleet
            .moto
            .put_object(STATE_BUCKET, NODE_GROUPS_KEY, groups.to_yaml().as_bytes());
        for role in [WORKER_ROLE, CONTROL_PLANE_ROLE] {
            create_role(fleet.moto.url(), role);
        }
        let worker_keys: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let worker_s3_requests = Arc::new(AtomicU32::new(0));
        let (keys, count) = (worker_keys.clone(), worker_s3_requests.clone());
        fleet.front.hook(move |seen| {
            let key = access_key(seen)?;
            if seen.service().as_deref() != Some("s3") || !keys.lock().ok()?.contains(&key) {
                return None;
            }
            count.fetch_add(1, Ordering::SeqCst);
            Some(Canned::s3_error(
                403,
                "AccessDenied",
                &format!("{WORKER_ROLE} is not authorized to perform this S3 action"),
            ))
        });
        fleet.moto.put_object(STATE_BUCKET, SPEC_KEY, &spec);
        let user_data = boot_config(
            CLUSTER,
            "control-plane-us-east-1a",
            "control-plane",
            &format!("s3://{STATE_BUCKET}/{SPEC_KEY}"),
            &spec,
        );
        Some(Self {
            fleet,
            mirror,
            fidelity,
            pki,
            zone_id,
            volumes,
            spec,
            user_data,
            worker_spec,
            worker_keys,
            worker_s3_requests,
            registry,
            _disks: disks,
        })
    }

    /// Launches a control-plane node (it boots and claims a volume on its own).
    pub fn launch(&mut self) -> Node {
        let tags = [
            (format!("kubernetes.io/cluster/{CLUSTER}"), "owned"),
            ("k8s.io/role/control-plane".to_owned(), "1"),
            (
                "kops.k8s.io/instancegroup".to_owned(),
                "control-plane-us-east-1a",
            ),
        ];
        let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let mut instance = self.fleet.next_instance_tagged(&tags);
        if let Some(role) = instance.role.as_mut() {
            role.role_name = CONTROL_PLANE_ROLE.to_owned();
        }
        let launch = crate::node::Launch {
            instance: instance.clone(),
            user_data: self.user_data.clone(),
            environment: self.fleet.environment(),
        };
        // The node's slots are known before it boots, so an attachment is never missed.
        let bay = DeviceBay::default();
        self.registry
            .lock()
            .expect("registry")
            .bays
            .insert(instance.instance_id.clone(), bay.clone());
        let node = self.fleet.launch_with_bay(launch, bay);
        copy_etcdctl(&node);
        node
    }

    /// Launches a worker of `nodes-us-east-1a` whose user data names only
    /// controller-shim (at the API name, on every control-plane node), pinning the
    /// cluster CA, with a role session that has no S3 access.
    pub fn launch_worker(&mut self) -> Node {
        let tags = [
            (format!("kubernetes.io/cluster/{CLUSTER}"), "owned"),
            ("nodewright.io/node-group".to_owned(), WORKER_GROUP),
        ];
        let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let mut instance = self.fleet.next_instance_tagged(&tags);
        let session = assume_role(self.fleet.moto.url(), WORKER_ROLE, &instance.instance_id);
        self.worker_keys
            .lock()
            .expect("worker keys")
            .insert(session.access_key_id.clone());
        instance.role = Some(session);
        let user_data = crate::shim::worker_boot_config(
            &format!("https://api.internal.{CLUSTER}:{SHIM_PORT}"),
            &self.pki.cluster.cert_pem,
            &self.worker_spec,
        );
        let launch = crate::node::Launch {
            instance,
            user_data: user_data.into_bytes(),
            environment: self.fleet.environment(),
        };
        self.fleet.launch_with(launch)
    }

    /// Reads the workers' spec from the state store through the front with `session`'s
    /// credentials, as a node would; the error, or "read".
    pub fn read_spec_as(&self, session: &RoleCredentials) -> String {
        let credentials = aws_credential_types::Credentials::new(
            &session.access_key_id,
            &session.secret_access_key,
            Some(session.session_token.clone()),
            None,
            "instance-role",
        );
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(crate::moto::REGION))
            .endpoint_url(self.fleet.front.url())
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
            )
            .build();
        let s3 = crate::moto::s3_client(&config);
        match block_on(
            s3.get_object()
                .bucket(STATE_BUCKET)
                .key(worker_spec_key(&self.worker_spec))
                .send(),
        ) {
            Ok(_) => "read".to_owned(),
            Err(e) => format!("{:?}", e.into_service_error()),
        }
    }

    /// How many S3 requests were signed with a worker's role session (all refused).
    pub fn worker_s3_requests(&self) -> u32 {
        self.worker_s3_requests.load(Ordering::SeqCst)
    }

    /// controller-shim's bootstrap record of an instance, if it wrote one.
    pub fn shim_record(&self, instance_id: &str) -> Option<serde_json::Value> {
        let s3 = self.fleet.moto.s3();
        block_on(async {
            let object = s3
                .get_object()
                .bucket(STATE_BUCKET)
                .key(format!(
                    "{CLUSTER}/controller-shim/nodes/{instance_id}.json"
                ))
                .send()
                .await
                .ok()?;
            let bytes = object.body.collect().await.ok()?.into_bytes();
            serde_json::from_slice(&bytes).ok()
        })
    }

    /// Terminates `node` as EC2 does (powered off, then its volumes detach).
    pub fn terminate(&mut self, node: Node) {
        let id = node.instance().instance_id;
        self.fleet.terminate(node);
        self.registry.lock().expect("registry").bays.remove(&id);
    }

    /// Every etcd volume lost (issue 19): each old one, detached, is deleted in the
    /// emulator and a blank one with the same member's tags and a fresh loop device
    /// takes its place, as an operator would create them for the new instances.
    pub fn replace_volumes_with_blank_ones(&mut self) {
        let mut replaced = Vec::new();
        for (old, member) in std::mem::take(&mut self.volumes) {
            assert_eq!(
                self.fidelity.attached_to(&old),
                None,
                "{old} is still attached"
            );
            block_on(self.fleet.ec2.delete_volume().volume_id(&old).send())
                .unwrap_or_else(|e| panic!("DeleteVolume {old}: {e:?}"));
            // Room for a restore beside the new cluster's data directory: etcd
            // preallocates 64 MB WAL files, and the old directory is kept.
            let disk = LoopDisk::new(1024);
            let id = create_etcd_volume(&self.fleet.ec2, ZONE, CLUSTER, "main", &member, "a,b,c");
            let mut registry = self.registry.lock().expect("registry");
            registry.disks.remove(&old);
            registry.disks.insert(id.clone(), disk.device().to_owned());
            drop(registry);
            self._disks.push(disk);
            replaced.push((id, member));
        }
        self.volumes = replaced;
    }

    /// The volume attached to `instance`, as EC2 (the fidelity layer) says.
    pub fn volume_of(&self, instance: &str) -> Option<(String, String)> {
        self.volumes
            .iter()
            .find(|(id, _)| self.fidelity.attached_to(id).as_deref() == Some(instance))
            .cloned()
    }

    /// The loop device backing a volume.
    pub fn volume_device(&self, volume: &str) -> std::path::PathBuf {
        self.registry.lock().expect("registry").disks[volume].clone()
    }

    /// Route53's A records named `name` in the cluster's zone: (set identifier, values).
    pub fn records(&self, name: &str) -> Vec<(Option<String>, Vec<String>)> {
        let route53 = aws_sdk_route53::Client::new(&sdk_config_for(self.fleet.moto.url()));
        crate::cluster::a_records(&route53, &self.zone_id, name)
    }
}

/// `etcdctl ARGS` inside `node`, against its own member with the etcd client
/// certificate the agent issued on it (`--endpoints` in `args` overrides).
pub fn etcdctl(node: &Node, args: &[&str]) -> Output {
    use nodewright::model::pki_paths as pki;
    let endpoint = format!("--endpoints=https://127.0.0.1:{ETCD_CLIENT_PORT}");
    let mut full = vec![
        "etcdctl",
        "--dial-timeout=3s",
        "--command-timeout=10s",
        &endpoint,
        "--cacert",
        pki::ETCD_CA_CERT,
        "--cert",
        pki::ETCD_CLIENT_CERT,
        "--key",
        pki::ETCD_CLIENT_KEY,
    ];
    full.extend_from_slice(args);
    let mut command = vec!["/usr/bin/env", "ETCDCTL_API=3"];
    command.extend(full);
    node.exec(&command)
}

/// Waits for the boot run to succeed; then the watch service runs (its start was queued
/// behind the boot run) with the node's site settings: its first round is done.
pub fn wait_converged(node: &Node) {
    node.wait_for_unit_within(
        "nodewright.service",
        "active after a successful run",
        Duration::from_secs(180),
        |s| s.active_state == "active" && s.result == "success",
    );
    node.wait_for_unit_within(
        "nodewright-watch.service",
        "running after its first round",
        Duration::from_secs(60),
        |s| s.active_state == "active" && s.sub_state == "running",
    );
}

/// `etcdctl ARGS` on `node`, retried until it succeeds (the cluster may still be
/// electing a leader or a member reconnecting); its stdout.
pub fn etcdctl_ok(node: &Node, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = etcdctl(node, args);
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout).trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "etcdctl {args:?} on {} kept failing: {}\n{}\n--- etcd journal\n{}",
            node.name(),
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr),
            node.journal_text("etcd-main.service")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every member's health, seen from `node` (`endpoint health --cluster`): the client URL
/// of each member with whether it is healthy, once all three answer healthy.
pub fn wait_cluster_healthy(node: &Node) -> BTreeMap<String, bool> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = etcdctl(
            node,
            &["endpoint", "health", "--cluster", "--write-out=json"],
        );
        let health: BTreeMap<String, bool> =
            serde_json::from_slice::<Vec<serde_json::Value>>(&output.stdout)
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    (
                        e["endpoint"].as_str().unwrap_or_default().to_owned(),
                        e["health"].as_bool().unwrap_or(false),
                    )
                })
                .collect();
        if health.len() == 3 && health.values().all(|h| *h) {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "etcd on {} never saw three healthy members: {health:?}\n{}",
            node.name(),
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The peer name of member `member` of etcd cluster `main` (kops's names).
pub fn peer_name(member: &str) -> String {
    format!("etcd-{member}.internal.{CLUSTER}")
}

/// The access key a request is signed with (SigV4 `Credential=`).
fn access_key(seen: &Seen) -> Option<String> {
    let auth = seen.headers.get("authorization")?.to_str().ok()?;
    let credential = auth.split("Credential=").nth(1)?;
    credential.split('/').next().map(str::to_owned)
}

/// An IAM role that EC2 may assume for instances.
fn create_role(moto: &str, name: &str) {
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    signed_query(
        moto,
        "iam",
        &[
            ("Action", "CreateRole"),
            ("RoleName", name),
            ("AssumeRolePolicyDocument", trust),
            ("Version", "2010-05-08"),
        ],
        None,
    );
}

/// A role session as EC2 makes one for an instance profile: AssumeRole with the
/// instance id as the session name.
fn assume_role(moto: &str, role: &str, instance_id: &str) -> RoleCredentials {
    let arn = format!("arn:aws:iam::{}:role/{role}", crate::shim::ACCOUNT);
    let xml = signed_query(
        moto,
        "sts",
        &[
            ("Action", "AssumeRole"),
            ("RoleArn", &arn),
            ("RoleSessionName", instance_id),
            ("Version", "2011-06-15"),
        ],
        None,
    );
    RoleCredentials {
        role_name: role.to_owned(),
        access_key_id: between(&xml, "AccessKeyId"),
        secret_access_key: between(&xml, "SecretAccessKey"),
        session_token: between(&xml, "SessionToken"),
    }
}

fn copy_etcdctl(node: &Node) {
    let target = node.path("/usr/local/bin/etcdctl");
    std::fs::create_dir_all(target.parent().expect("a parent")).expect("/usr/local/bin");
    std::fs::copy(MACHINE_ETCDCTL, &target).expect("copying etcdctl onto the node");
}

/// The emulator attached or detached a volume: present its loop device in the node, or
/// take it away.
fn on_volume_event(registry: &Mutex<Registry>, event: &Event) {
    let mut registry = registry.lock().expect("registry");
    match event {
        Event::Attached { instance, volume } => {
            let (Some(bay), Some(disk)) = (
                registry.bays.get(instance).cloned(),
                registry.disks.get(volume).cloned(),
            ) else {
                return;
            };
            let name = format!("nvme{}n1", bay.names().len() + 1);
            let link = format!("/dev/disk/by-id/{}", by_id_name(volume));
            bay.attach(&disk, &name, &[&link]);
            registry
                .attached
                .insert(volume.clone(), (instance.clone(), name));
        }
        Event::Detached { instance, volume } => {
            if let Some((holder, name)) = registry.attached.remove(volume)
                && &holder == instance
                && let Some(bay) = registry.bays.get(instance)
            {
                bay.detach(&name);
            }
        }
    }
}

/// The booted control plane's spec: the fixture with the hosted zone, the mirror's URLs
/// and the binaries' digests filled in.
fn control_plane_spec(
    mirror: &AssetMirror,
    zone_id: &str,
    etcd_sha256: &str,
    shim_sha256: &str,
) -> Vec<u8> {
    let path = crate::workspace().join("tests/fixtures/booted-control-plane/nodespec.yaml");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .replace("@ZONE_ID@", zone_id)
        .replace("@KUBELET_URL@", &mirror.kubelet_url())
        .replace("@KUBELET_SHA256@", &mirror.kubelet_sha256)
        .replace(
            "@ETCD_URL@",
            &format!("http://{}{ETCD_PATH}", crate::worker::MIRROR_ADDR),
        )
        .replace("@ETCD_SHA256@", etcd_sha256)
        .replace(
            "@SHIM_URL@",
            &format!("http://{}{SHIM_PATH}", crate::worker::MIRROR_ADDR),
        )
        .replace("@SHIM_SHA256@", shim_sha256)
        .into_bytes()
}

/// Where the workers' spec is kept: under its digest.
pub fn worker_spec_key(spec: &[u8]) -> String {
    format!(
        "{WORKER_SPEC_PREFIX}nodespec/{}.yaml",
        nodewright::spec::digest(spec)
    )
}
