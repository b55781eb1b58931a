//! A cluster's controller-shim on loopback, against the AWS emulator with real SigV4
//! checks: the real `controller-shim` binary, the cluster CA, an IAM node role, and EC2
//! instances whose role sessions (AssumeRole with the instance id as session name, as
//! EC2 does for instance profiles) bootstrap through it.
//!
//! Set-up runs while moto accepts unsigned calls (an admin user with an allow-all
//! policy and its access key), then switches moto to checking every signature
//! (`/moto-api/reset-auth`), so a forged proof fails at "STS" for real.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use nodewright_shim::client::{ClientSettings, ShimClient, StsSigner};
use nodewright_shim::identity::StsEndpoint;
use nodewright_shim::pki::{
    CertificateAuthority, KeyAlgorithm, PrivateKey, Profile, Subject, Usage,
};
use nodewright_shim::protocol::{BootstrapRequest, CredentialRequest, PROTOCOL_VERSION};
use tempfile::TempDir;
use tokio_rustls::TlsConnector;

use crate::imds::RoleCredentials;
use crate::moto::{Moto, REGION, free_port};
use crate::runtime::block_on;
use crate::tools::{die_with_parent, kill_group, workspace_bin};

pub const ACCOUNT: &str = "123456789012";
pub const CLUSTER: &str = "prod.example.com";
pub const NODE_GROUP: &str = "nodes-us-east-1a";
pub const NODE_ROLE: &str = "nodes.prod.example.com";
pub const BUCKET: &str = "nodewright-state";
/// The node group's spec prefix: each spec at `<prefix>nodespec/<sha256>.yaml`.
pub const SPEC_PREFIX: &str = "prod.example.com/nodegroups/nodes-us-east-1a/";
/// Where the node-groups document is, when the groups live in the store.
pub const GROUPS_KEY: &str = "prod.example.com/controller-shim/node-groups.yaml";
pub const RECORDS_PREFIX: &str = "prod.example.com/controller-shim/nodes/";
pub const NODE_GROUP_TAG: &str = "nodewright.io/node-group";

/// How to set up a [`ShimWorld`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra lines in the node group's definition (e.g. `rebootstrap: allowed`).
    pub group_lines: Vec<String>,
    /// Extra top-level YAML for the shim's configuration (e.g. a `limits:` block).
    pub top_level: String,
    /// Every AWS call of the shim goes through a counting, fault-injecting front
    /// ([`ShimWorld::front`]); workers sign their proofs for it.
    pub front: bool,
    /// The node groups live in the store ([`GROUPS_KEY`]), not in the configuration.
    pub groups_in_store: bool,
    /// Run the shim with this open-files limit (soft and hard).
    pub open_files: Option<u32>,
}

pub struct ShimWorld {
    pub moto: Moto,
    /// The front the shim reaches AWS through, when `Options::front`.
    pub front: Option<crate::front::AwsFront>,
    pub admin: Credentials,
    pub ca: CertificateAuthority,
    pub dir: TempDir,
    pub port: u16,
    pub admin_port: u16,
    /// The worker spec the group serves (published at its digest).
    pub spec: Vec<u8>,
    options: Options,
    child: Option<Child>,
}

/// An EC2 instance of the emulator and its role session.
#[derive(Debug, Clone)]
pub struct Node {
    pub instance_id: String,
    pub private_ip: std::net::Ipv4Addr,
    pub private_dns_name: String,
    pub credentials: RoleCredentials,
}

impl ShimWorld {
    /// Moto with signature checks on, the node role, the spec in S3, and a running shim.
    pub fn start() -> Self {
        Self::start_with_options(Options::default())
    }

    /// Same, with extra lines in the node group's settings (e.g.
    /// `rebootstrap: allowed`) and extra top-level YAML (e.g. a `limits:` block).
    pub fn start_with(extra_group_lines: &[&str], extra_top_level: &str) -> Self {
        Self::start_with_options(Options {
            group_lines: extra_group_lines.iter().map(|l| (*l).to_owned()).collect(),
            top_level: extra_top_level.to_owned(),
            ..Options::default()
        })
    }

    /// Same, with every AWS call of the shim through a fault-injecting front (`front`).
    pub fn start_with_front() -> Self {
        Self::start_with_options(Options {
            front: true,
            ..Options::default()
        })
    }

    pub fn start_with_options(options: Options) -> Self {
        let moto = Moto::start();
        let front = options
            .front
            .then(|| crate::front::AwsFront::start(moto.url()));
        let admin = set_up_admin(&moto);
        let dir = tempfile::Builder::new()
            .prefix("controller-shim-")
            .tempdir()
            .expect("a temp dir");
        let (ca, ca_key) =
            CertificateAuthority::create("kubernetes-ca", Duration::from_secs(86400 * 365))
                .expect("a CA");
        write(dir.path(), "ca.crt", ca.cert_pem());
        write(dir.path(), "ca.key", &ca_key.to_pem());
        let serving_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("a key");
        let serving = ca
            .issue(
                &serving_key.public_key(),
                &Profile {
                    subject: Subject::new("controller-shim", &[]),
                    dns_names: vec!["localhost".into()],
                    ips: vec!["127.0.0.1".parse().expect("an IP")],
                    usage: Usage::Server,
                    validity: Duration::from_secs(86400),
                    backdate: Duration::from_secs(60),
                },
            )
            .expect("a serving certificate");
        write(dir.path(), "serving.crt", &serving.pem);
        write(dir.path(), "serving.key", &serving_key.to_pem());
        // The worker example, with this cluster's CA (the shim refuses a spec naming
        // another).
        let spec = with_cluster_ca(
            &crate::example("controller-shim/worker-nodespec.yaml"),
            ca.cert_pem(),
        );
        let mut world = Self {
            moto,
            front,
            admin,
            ca,
            dir,
            port: free_port(),
            admin_port: free_port(),
            spec,
            options,
            child: None,
        };
        world.write_config();
        world.create_role(NODE_ROLE);
        world.create_role("admin-role");
        world.publish_spec(&world.spec.clone());
        if world.options.groups_in_store {
            world.publish_groups(&world.groups_document(&[]));
        }
        world.start_shim();
        world
    }

    /// The group definition this world's shim serves (with `Options::group_lines`),
    /// plus `more` groups, as the YAML list items of `nodeGroups`.
    pub fn group_items(&self, more: &[(&str, &str)]) -> String {
        let mut items = format!(
            "  - name: {NODE_GROUP}\n    nodeSpecs: s3://{BUCKET}/{SPEC_PREFIX}\n    roles: [{NODE_ROLE}]\n"
        );
        for line in &self.options.group_lines {
            items.push_str(&format!("    {line}\n"));
        }
        for (name, role) in more {
            items.push_str(&format!(
                "  - name: {name}\n    nodeSpecs: s3://{BUCKET}/prod.example.com/nodegroups/{name}/\n    roles: [{role}]\n"
            ));
        }
        items
    }

    /// A NodeGroups document with this world's group and `more`.
    pub fn groups_document(&self, more: &[(&str, &str)]) -> String {
        format!(
            "apiVersion: shim.nodewright.io/v1alpha1\nkind: NodeGroups\nnodeGroups:\n{}",
            self.group_items(more)
        )
    }

    /// Writes the node-groups document into the store.
    pub fn publish_groups(&self, text: &str) {
        self.put_object(BUCKET, GROUPS_KEY, text.as_bytes());
    }

    fn write_config(&self) {
        let (port, admin_port) = (self.port, self.admin_port);
        let sts_url = self.aws_url();
        let groups = if self.options.groups_in_store {
            format!("nodeGroups: s3://{BUCKET}/{GROUPS_KEY}\n")
        } else {
            format!("nodeGroups:\n{}", self.group_items(&[]))
        };
        let config = format!(
            "apiVersion: shim.nodewright.io/v1alpha1
kind: ShimConfig
clusterName: {CLUSTER}
listen: 127.0.0.1:{port}
adminListen: 127.0.0.1:{admin_port}
tls:
  certFile: {d}/serving.crt
  keyFile: {d}/serving.key
ca:
  certFile: {d}/ca.crt
  keyFile: {d}/ca.key
aws:
  region: {REGION}
  accountId: \"{ACCOUNT}\"
  stsEndpoint: {sts_url}
state:
  bucket: {BUCKET}
  prefix: {RECORDS_PREFIX}
{groups}{top}",
            d = self.dir.path().display(),
            top = self.options.top_level,
        );
        write(self.dir.path(), "config.yaml", &config);
    }

    /// Where the shim reaches AWS: the front, or moto itself.
    fn aws_url(&self) -> String {
        self.front
            .as_ref()
            .map(|f| f.url())
            .unwrap_or_else(|| self.moto.url().to_owned())
    }

    /// The STS front (kept for the tests that inject STS faults).
    pub fn sts_front(&self) -> &crate::front::AwsFront {
        self.front
            .as_ref()
            .expect("the world was started with a front")
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// Publishes a spec of the node group under its digest (never replacing another);
    /// returns the digest.
    pub fn publish_spec(&self, spec: &[u8]) -> String {
        let digest = nodewright::spec::digest(spec);
        self.put_object(BUCKET, &spec_key(&digest), spec);
        digest
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// The SDK configuration of the harness's own (admin) calls.
    pub fn sdk(&self) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.moto.url())
            .credentials_provider(SharedCredentialsProvider::new(self.admin.clone()))
            .build()
    }

    pub fn start_shim(&mut self) {
        assert!(self.child.is_none(), "the shim is already running");
        let log = self.dir.path().join("shim.log");
        // NODEWRIGHT_SHIM_CPUS pins the shim to those CPUs (the benchmark gives it a core
        // of its own, as it has on a control-plane node apart from AWS and the workers).
        // Options::open_files runs it under that open-files limit (prlimit).
        let mut wrapper: Vec<String> = Vec::new();
        if let Ok(cpus) = std::env::var("NODEWRIGHT_SHIM_CPUS") {
            wrapper.extend(["taskset".to_owned(), "-c".to_owned(), cpus]);
        }
        if let Some(limit) = self.options.open_files {
            wrapper.extend(["prlimit".to_owned(), format!("--nofile={limit}:{limit}")]);
        }
        let shim = workspace_bin("controller-shim");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&shim);
                c
            }
            None => Command::new(&shim),
        };
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", self.aws_url())
            .env("AWS_ACCESS_KEY_ID", self.admin.access_key_id())
            .env("AWS_SECRET_ACCESS_KEY", self.admin.secret_access_key())
            .env("AWS_REGION", REGION)
            .env("CONTROLLER_SHIM_LOG", "info")
            .args(["serve", "--config"])
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            );
        die_with_parent(&mut command);
        self.child = Some(command.spawn().expect("controller-shim starts"));
        let client = self.https_client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = block_on(async {
                let admin = crate::runtime::control_client()
                    .get(format!("{}/healthz", self.admin_url()))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                admin
                    && client
                        .get(format!("{}/healthz", self.url()))
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
            });
            if ok {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("controller-shim exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "controller-shim did not answer: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop_shim(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("shim.log")).unwrap_or_default()
    }

    /// A reqwest client trusting only the cluster CA.
    pub fn https_client(&self) -> reqwest::Client {
        self.https_client_builder().build().expect("a client")
    }

    /// The builder of [`Self::https_client`], to add a source address or an identity.
    pub fn https_client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only(
                reqwest::Certificate::from_pem_bundle(self.ca.cert_pem().as_bytes())
                    .expect("the CA parses"),
            )
            .timeout(Duration::from_secs(20))
    }

    /// The library client, as the agent builds it.
    pub fn client(&self) -> ShimClient {
        let mut settings = ClientSettings::new(
            vec![self.url()],
            self.ca.cert_pem().to_owned(),
            Duration::from_secs(20),
        );
        settings.initial_delay = Duration::from_millis(50);
        ShimClient::new(settings).expect("a client")
    }

    /// Where the shim replays proofs (and so what workers sign for).
    pub fn sts_endpoint(&self) -> StsEndpoint {
        StsEndpoint {
            url: self.aws_url(),
            region: REGION.to_owned(),
        }
    }

    /// A signer with a node's role credentials.
    pub fn signer(&self, node: &Node) -> StsSigner {
        StsSigner::new(
            SharedCredentialsProvider::new(node.aws_credentials()),
            self.sts_endpoint(),
        )
    }

    /// Creates an IAM role that EC2 (and the harness's admin, standing in for EC2) may
    /// assume, with allow-all.
    pub fn create_role(&self, name: &str) {
        create_role(self.moto.url(), &self.admin, name);
    }

    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        crate::moto::put_object(&crate::moto::s3_client(&self.sdk()), bucket, key, body);
    }

    /// The bootstrap record of an instance, if the shim wrote one.
    pub fn record(&self, instance_id: &str) -> Option<serde_json::Value> {
        let s3 = crate::moto::s3_client(&self.sdk());
        block_on(async {
            let object = s3
                .get_object()
                .bucket(BUCKET)
                .key(format!("{RECORDS_PREFIX}{instance_id}.json"))
                .send()
                .await
                .ok()?;
            let bytes = object.body.collect().await.ok()?.into_bytes();
            serde_json::from_slice(&bytes).ok()
        })
    }

    /// Launches a running instance with the cluster's tags (`cluster`/`group` override
    /// them; `None` leaves a tag off) and a role session for it under `role`.
    pub fn launch(&self, cluster: Option<&str>, group: Option<&str>, role: &str) -> Node {
        self.launch_in(cluster, group, role, ACCOUNT)
    }

    /// Launches `count` running instances of the node group in one call, each with its
    /// role session.
    pub fn launch_many(&self, count: i32) -> Vec<Node> {
        let ec2 = aws_sdk_ec2::Client::new(&self.sdk());
        let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
        let tags = aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
            .tags(tag(&format!("kubernetes.io/cluster/{CLUSTER}"), "owned"))
            .tags(tag(NODE_GROUP_TAG, NODE_GROUP))
            .build();
        let output = block_on(async {
            ec2.run_instances()
                .image_id("ami-12c6146b")
                .instance_type(aws_sdk_ec2::types::InstanceType::M6iLarge)
                .min_count(count)
                .max_count(count)
                .tag_specifications(tags)
                .send()
                .await
                .unwrap_or_else(|e| panic!("RunInstances: {e:?}"))
        });
        output
            .instances()
            .iter()
            .map(|instance| {
                let session = instance.instance_id().expect("an id");
                node_of(instance, self.assume_role(NODE_ROLE, ACCOUNT, session))
            })
            .collect()
    }

    pub fn launch_in(
        &self,
        cluster: Option<&str>,
        group: Option<&str>,
        role: &str,
        account: &str,
    ) -> Node {
        let ec2 = aws_sdk_ec2::Client::new(&self.sdk());
        let mut tags = aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("Name")
                    .value("harness")
                    .build(),
            );
        if let Some(cluster) = cluster {
            tags = tags.tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key(format!("kubernetes.io/cluster/{cluster}"))
                    .value("owned")
                    .build(),
            );
        }
        if let Some(group) = group {
            tags = tags.tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key(NODE_GROUP_TAG)
                    .value(group)
                    .build(),
            );
        }
        let instance = block_on(async {
            ec2.run_instances()
                .image_id("ami-12c6146b")
                .instance_type(aws_sdk_ec2::types::InstanceType::M6iLarge)
                .min_count(1)
                .max_count(1)
                .tag_specifications(tags.build())
                .send()
                .await
                .unwrap_or_else(|e| panic!("RunInstances: {e:?}"))
        });
        let instance = &instance.instances()[0];
        let session = instance.instance_id().expect("an id");
        node_of(instance, self.assume_role(role, account, session))
    }

    /// AssumeRole with the instance id as the session name: what EC2 does for an
    /// instance profile.
    pub fn assume_role(&self, role: &str, account: &str, session: &str) -> RoleCredentials {
        assume_role(self.moto.url(), &self.admin, role, account, session)
    }

    pub fn terminate(&self, instance_id: &str) {
        let ec2 = aws_sdk_ec2::Client::new(&self.sdk());
        block_on(async {
            ec2.terminate_instances()
                .instance_ids(instance_id)
                .send()
                .await
                .unwrap_or_else(|e| panic!("TerminateInstances: {e:?}"))
        });
    }

    /// A signed query-protocol call (IAM, STS) with the admin's credentials.
    pub fn query(&self, service: &str, params: &[(&str, &str)]) -> String {
        signed_query(self.moto.url(), service, params, Some(&self.admin))
    }

    /// The shim's metrics text (from its loopback listener).
    pub fn metrics(&self) -> String {
        let client = crate::runtime::control_client();
        block_on(async {
            client
                .get(format!("{}/metrics", self.admin_url()))
                .send()
                .await
                .expect("metrics answer")
                .text()
                .await
                .expect("metrics text")
        })
    }

    /// A counter or gauge from the metrics (0 when absent), by its whole series name,
    /// e.g. `controller_shim_requests_total{endpoint="bootstrap",outcome="ok"}`.
    pub fn metric(&self, series: &str) -> u64 {
        let prefix = format!("{series} ");
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|n| n.trim().parse::<f64>().expect("a number") as u64)
            .unwrap_or(0)
    }

    /// How many bootstrap requests the shim counted with `outcome` (`ok` or a code).
    pub fn outcomes(&self, outcome: &str) -> u64 {
        self.metric(&format!(
            "controller_shim_requests_total{{endpoint=\"bootstrap\",outcome=\"{outcome}\"}}"
        ))
    }

    /// The fleet view, from the loopback listener (a shim that has not read the store
    /// since it started answers 503 until it has).
    pub fn fleet(&self) -> nodewright_shim::protocol::NodesResponse {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match block_on(nodewright_shim::client::fleet(
                &self.admin_url(),
                Duration::from_secs(10),
            )) {
                Ok(nodes) => return nodes,
                Err(e) if e.transient() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("the fleet view: {e}"),
            }
        }
    }
}

impl Drop for ShimWorld {
    fn drop(&mut self) {
        self.stop_shim();
    }
}

impl Node {
    pub fn aws_credentials(&self) -> Credentials {
        Credentials::new(
            &self.credentials.access_key_id,
            &self.credentials.secret_access_key,
            Some(self.credentials.session_token.clone()),
            None,
            "instance-role",
        )
    }

    /// What the fake IMDS serves for this instance.
    pub fn imds_instance(&self) -> crate::imds::Instance {
        let mut instance = crate::imds::Instance::example(&self.instance_id);
        instance.private_ip = self.private_ip;
        instance.role = Some(self.credentials.clone());
        instance
    }
}

/// The key of a spec of the node group, by digest.
pub fn spec_key(digest: &str) -> String {
    format!("{SPEC_PREFIX}nodespec/{digest}.yaml")
}

const ALLOW_ALL: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

/// Creates the admin user while moto accepts anything, then turns signature checks on.
pub fn set_up_admin(moto: &Moto) -> Credentials {
    let url = moto.url();
    let iam = |params: &[(&str, &str)]| signed_query(url, "iam", params, None);
    iam(&[
        ("Action", "CreateUser"),
        ("UserName", "admin"),
        ("Version", "2010-05-08"),
    ]);
    iam(&[
        ("Action", "PutUserPolicy"),
        ("UserName", "admin"),
        ("PolicyName", "all"),
        ("PolicyDocument", ALLOW_ALL),
        ("Version", "2010-05-08"),
    ]);
    let xml = iam(&[
        ("Action", "CreateAccessKey"),
        ("UserName", "admin"),
        ("Version", "2010-05-08"),
    ]);
    let admin = Credentials::new(
        between(&xml, "AccessKeyId"),
        between(&xml, "SecretAccessKey"),
        None,
        None,
        "admin",
    );
    let client = crate::runtime::control_client();
    block_on(async {
        client
            .post(format!("{url}/moto-api/reset-auth"))
            .body("0")
            .send()
            .await
    })
    .expect("moto turns signature checks on");
    admin
}

/// POSTs a query-protocol form, signed with `credentials` (or with throwaway ones while
/// moto does not check); panics unless it answers 200.
/// Creates an IAM role that EC2 (and the harness's admin, standing in for EC2) may
/// assume, with allow-all.
pub fn create_role(moto: &str, admin: &Credentials, name: &str) {
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"Service":"ec2.amazonaws.com","AWS":"arn:aws:iam::{ACCOUNT}:user/admin"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    for params in [
        vec![
            ("Action", "CreateRole"),
            ("RoleName", name),
            ("AssumeRolePolicyDocument", trust.as_str()),
            ("Version", "2010-05-08"),
        ],
        vec![
            ("Action", "PutRolePolicy"),
            ("RoleName", name),
            ("PolicyName", "all"),
            ("PolicyDocument", ALLOW_ALL),
            ("Version", "2010-05-08"),
        ],
    ] {
        signed_query(moto, "iam", &params, Some(admin));
    }
}

/// AssumeRole with the instance id as the session name: what EC2 does for an instance
/// profile.
pub fn assume_role(
    moto: &str,
    admin: &Credentials,
    role: &str,
    account: &str,
    session: &str,
) -> RoleCredentials {
    let arn = format!("arn:aws:iam::{account}:role/{role}");
    let xml = signed_query(
        moto,
        "sts",
        &[
            ("Action", "AssumeRole"),
            ("RoleArn", &arn),
            ("RoleSessionName", session),
            ("Version", "2011-06-15"),
        ],
        Some(admin),
    );
    RoleCredentials {
        role_name: role.to_owned(),
        access_key_id: between(&xml, "AccessKeyId"),
        secret_access_key: between(&xml, "SecretAccessKey"),
        session_token: between(&xml, "SessionToken"),
    }
}

/// A launched instance as a node, with the role session EC2 would give it.
pub fn node_of(instance: &aws_sdk_ec2::types::Instance, credentials: RoleCredentials) -> Node {
    Node {
        credentials,
        private_ip: instance
            .private_ip_address()
            .expect("a private IP")
            .parse()
            .expect("an IPv4"),
        private_dns_name: instance.private_dns_name().unwrap_or("").to_owned(),
        instance_id: instance.instance_id().expect("an id").to_owned(),
    }
}

pub fn signed_query(
    url: &str,
    service: &str,
    params: &[(&str, &str)],
    credentials: Option<&Credentials>,
) -> String {
    let body: String = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let fallback = Credentials::new("AKIAHARNESS", "harness-secret", None, None, "harness");
    let credentials = credentials.unwrap_or(&fallback);
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let headers = vec![
        ("host".to_owned(), host),
        (
            "content-type".to_owned(),
            "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
        ),
    ];
    let identity = credentials.clone().into();
    let params_v4 = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let target = format!("{}/", url.trim_end_matches('/'));
    let signable = SignableRequest::new(
        "POST",
        target.as_str(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body.as_bytes()),
    )
    .expect("a signable request");
    let (instructions, _) = sign(signable, &params_v4).expect("signed").into_parts();
    let client = crate::runtime::control_client();
    let mut request = client.post(&target).body(body.clone());
    for (k, v) in &headers {
        if k != "host" {
            request = request.header(k, v);
        }
    }
    for (k, v) in instructions.headers() {
        request = request.header(k, v);
    }
    let (status, text) = block_on(async {
        let response = request.send().await.expect("moto answers");
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    });
    assert!(
        status.is_success(),
        "{service} {params:?}: {status}: {text}"
    );
    text
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text of the first `<tag>` in a small XML answer.
pub fn between(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split(&open)
        .nth(1)
        .and_then(|rest| rest.split(&close).next())
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        .to_owned()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("writing {name}: {e}"));
}

/// A worker boot config that asks the shim at `url`, pinning `ca_pem`.
pub fn worker_boot_config(url: &str, ca_pem: &str, spec: &[u8]) -> String {
    let mut ca = String::new();
    for line in ca_pem.lines() {
        ca.push_str(&format!("      {line}\n"));
    }
    format!(
        "apiVersion: nodewright.io/v1alpha1
kind: BootConfig
clusterName: {CLUSTER}
nodeGroup: {NODE_GROUP}
role: worker
nodeSpec:
  controllerShim:
    servers: [{url}]
    ca: |
{ca}  sha256: {}
",
        nodewright::spec::digest(spec)
    )
}

/// `spec` with its `cluster.caCertificate` block replaced by `pem`.
pub fn with_cluster_ca(spec: &[u8], pem: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(spec);
    let mut out = String::new();
    let mut skipping = false;
    for line in text.split_inclusive('\n') {
        if skipping {
            if line.starts_with("    ") {
                continue;
            }
            skipping = false;
        }
        out.push_str(line);
        if line.trim_end() == "  caCertificate: |" {
            skipping = true;
            for pem_line in pem.trim().lines() {
                out.push_str(&format!("    {pem_line}\n"));
            }
        }
    }
    out.into_bytes()
}

/// A bootstrap request body for `node`, pinning `digest`, with fresh keys asking for
/// `cn` in `groups`; returns the body and the client key.
pub fn request_body(digest: &str, cn: &str, groups: &[&str]) -> (Vec<u8>, PrivateKey) {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("a key");
    let serving = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("a key");
    let subject = Subject::new(cn, groups);
    let request = BootstrapRequest {
        api_version: PROTOCOL_VERSION.to_owned(),
        node_group: NODE_GROUP.to_owned(),
        node_spec_sha256: digest.to_owned(),
        nonce: nodewright_shim::protocol::nonce(),
        credentials: Some(CredentialRequest {
            client_csr: key.certificate_request(&subject, &[], &[]).expect("a CSR"),
            serving_csr: serving
                .certificate_request(&subject, &[], &[])
                .expect("a CSR"),
            kube_proxy_csr: None,
        }),
    };
    (serde_json::to_vec(&request).expect("JSON"), key)
}

/// A TLS client of the shim that trusts the cluster CA and, with `identity`, presents a
/// client certificate (`(certificate PEM, key PEM)`).
pub fn tls_connector(ca_pem: &str, identity: Option<(&str, &str)>) -> TlsConnector {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("a CA")).expect("a root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("certificates"),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("a key"),
            )
            .expect("a client identity"),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(std::sync::Arc::new(config))
}

/// A TCP connection to `port` on loopback from `source` (any 127.0.0.0/8 address: each
/// is its own source to the shim).
pub async fn connect_from(source: IpAddr, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket
        .connect(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port))
        .await
}

/// Sends a request's head (and `body`, maybe less than `content_length`) over TLS from
/// `source`, and returns the open stream: a client that never finishes its body.
pub async fn start_request(
    connector: &TlsConnector,
    source: IpAddr,
    port: u16,
    content_length: usize,
    body: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio::io::AsyncWriteExt;
    let tcp = connect_from(source, port).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    let mut tls = connector.connect(name, tcp).await?;
    let head = format!(
        "POST /v1/bootstrap HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {content_length}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(body).await?;
    tls.flush().await?;
    Ok(tls)
}

/// Reads an HTTP/1.1 answer's status line from `stream` (None: closed without one).
pub async fn read_status<S>(stream: &mut S) -> Option<u16>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// What a flood got.
#[derive(Debug, Default, Clone)]
pub struct FloodCount {
    pub requests: u64,
    /// By status (0: no answer: a refused or reset connection).
    pub statuses: BTreeMap<u16, u64>,
}

/// What a flood sends, made afresh for each request (a signed proof is single use):
/// the body and the Authorization header, if any.
pub type FloodRequest = std::sync::Arc<dyn Fn() -> (Vec<u8>, Option<String>) + Send + Sync>;

/// Credential-less bootstrap requests as fast as `per_source` keep-alive clients per
/// source address can send them, until `stop` is set. Returns what they got.
pub async fn flood(
    url: String,
    ca_pem: String,
    sources: Vec<IpAddr>,
    per_source: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> FloodCount {
    // A well-formed request without a proof: what anyone can send.
    let body = br#"{"apiVersion":"shim.nodewright.io/v1","nodeGroup":"nodes-us-east-1a","nodeSpecSha256":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
    let request: FloodRequest = std::sync::Arc::new(|| (body.to_vec(), None));
    flood_with(url, ca_pem, sources, per_source, stop, request).await
}

/// Bootstrap requests made by `request`, as fast as `per_source` keep-alive clients per
/// source address can send them, until `stop` is set. Returns what they got.
pub async fn flood_with(
    url: String,
    ca_pem: String,
    sources: Vec<IpAddr>,
    per_source: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    request: FloodRequest,
) -> FloodCount {
    let mut tasks = Vec::new();
    for source in sources {
        let client = reqwest::Client::builder()
            .no_proxy()
            .local_address(source)
            .tls_certs_only(
                reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).expect("the CA"),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a client");
        for _ in 0..per_source {
            let (client, url, stop, request) =
                (client.clone(), url.clone(), stop.clone(), request.clone());
            tasks.push(tokio::spawn(async move {
                let mut count = FloodCount::default();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (body, authorization) = request();
                    let mut post = client.post(&url).body(body);
                    if let Some(authorization) = authorization {
                        post = post.header("authorization", authorization);
                    }
                    let status = match post.send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let _ = response.bytes().await;
                            status
                        }
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            0
                        }
                    };
                    count.requests += 1;
                    *count.statuses.entry(status).or_default() += 1;
                }
                count
            }));
        }
    }
    let mut total = FloodCount::default();
    for task in tasks {
        if let Ok(count) = task.await {
            total.requests += count.requests;
            for (status, n) in count.statuses {
                *total.statuses.entry(status).or_default() += n;
            }
        }
    }
    total
}

/// A client certificate from `ca` for `key`, as the cluster CA issues (or the kubelet
/// rotates) them.
pub fn issue_client(
    ca: &CertificateAuthority,
    key: &PrivateKey,
    common_name: &str,
    groups: &[&str],
) -> String {
    ca.issue(
        &key.public_key(),
        &Profile {
            subject: Subject::new(common_name, groups),
            dns_names: Vec::new(),
            ips: Vec::new(),
            usage: Usage::Client,
            validity: Duration::from_secs(3600),
            backdate: Duration::from_secs(60),
        },
    )
    .expect("a client certificate")
    .pem
}
