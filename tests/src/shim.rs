//! A cluster's controller-shim on loopback, against the AWS emulator with real SigV4
//! checks: the real `controller-shim` binary, the cluster CA, an IAM node role, and EC2
//! instances whose role sessions (AssumeRole with the instance id as session name, as
//! EC2 does for instance profiles) bootstrap through it.
//!
//! Set-up runs while moto accepts unsigned calls (an admin user with an allow-all
//! policy and its access key), then switches moto to checking every signature
//! (`/moto-api/reset-auth`), so a forged proof fails at "STS" for real.

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
use tempfile::TempDir;

use crate::imds::RoleCredentials;
use crate::moto::{Moto, REGION, free_port};
use crate::runtime::block_on;
use crate::tools::{die_with_parent, kill_group, workspace_bin};

pub const ACCOUNT: &str = "123456789012";
pub const CLUSTER: &str = "prod.example.com";
pub const NODE_GROUP: &str = "nodes-us-east-1a";
pub const NODE_ROLE: &str = "nodes.prod.example.com";
pub const BUCKET: &str = "nodewright-state";
pub const SPEC_KEY: &str = "prod.example.com/nodegroups/nodes-us-east-1a/nodespec.yaml";
pub const RECORDS_PREFIX: &str = "prod.example.com/controller-shim/nodes/";
pub const NODE_GROUP_TAG: &str = "nodewright.io/node-group";

pub struct ShimWorld {
    pub moto: Moto,
    /// The fault-injecting front the shim reaches STS through, when asked for.
    pub sts_front: Option<crate::front::AwsFront>,
    pub admin: Credentials,
    pub ca: CertificateAuthority,
    pub dir: TempDir,
    pub port: u16,
    pub spec: Vec<u8>,
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
        Self::start_with(&[], "")
    }

    /// Same, with extra lines in the node group's settings (e.g.
    /// `allowRebootstrap: true`) and extra top-level YAML (e.g. a `limits:` block).
    pub fn start_with(extra_group_lines: &[&str], extra_top_level: &str) -> Self {
        Self::start_full(extra_group_lines, extra_top_level, false)
    }

    /// Same, with STS reached through a fault-injecting front (`sts_front`).
    pub fn start_with_sts_front() -> Self {
        Self::start_full(&[], "", true)
    }

    fn start_full(extra_group_lines: &[&str], extra_top_level: &str, front: bool) -> Self {
        let moto = Moto::start();
        let sts_front = front.then(|| crate::front::AwsFront::start(moto.url()));
        let sts_url = sts_front
            .as_ref()
            .map(|f| f.url())
            .unwrap_or_else(|| moto.url().to_owned());
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
        let spec = with_cluster_ca(&crate::example("worker/nodespec.yaml"), ca.cert_pem());
        let port = free_port();
        let mut group_lines = String::new();
        for line in extra_group_lines {
            group_lines.push_str(&format!("    {line}\n"));
        }
        let config = format!(
            "apiVersion: shim.nodewright.io/v1alpha1
kind: ShimConfig
clusterName: {CLUSTER}
listen: 127.0.0.1:{port}
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
nodeGroups:
  - name: {NODE_GROUP}
    nodeSpec: s3://{BUCKET}/{SPEC_KEY}
    roles: [{NODE_ROLE}]
{group_lines}{extra_top_level}",
            d = dir.path().display(),
        );
        write(dir.path(), "config.yaml", &config);
        let mut world = Self {
            moto,
            sts_front,
            admin,
            ca,
            dir,
            port,
            spec,
            child: None,
        };
        world.create_role(NODE_ROLE);
        world.create_role("admin-role");
        world.put_object(BUCKET, SPEC_KEY, &world.spec.clone());
        world.start_shim();
        world
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Replaces the node group's spec in the state store (what the shim serves).
    pub fn publish_spec(&self, spec: &[u8]) {
        self.put_object(BUCKET, SPEC_KEY, spec);
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
        let mut command = match std::env::var("NODEWRIGHT_SHIM_CPUS") {
            Ok(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpus]).arg(workspace_bin("controller-shim"));
                c
            }
            Err(_) => Command::new(workspace_bin("controller-shim")),
        };
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", self.moto.url())
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
                client
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
        reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only(
                reqwest::Certificate::from_pem_bundle(self.ca.cert_pem().as_bytes())
                    .expect("the CA parses"),
            )
            .timeout(Duration::from_secs(20))
            .build()
            .expect("a client")
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
            url: self
                .sts_front
                .as_ref()
                .map(|f| f.url())
                .unwrap_or_else(|| self.moto.url().to_owned()),
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
        let trust = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"Service":"ec2.amazonaws.com","AWS":"arn:aws:iam::{ACCOUNT}:user/admin"}},"Action":"sts:AssumeRole"}}]}}"#
        );
        self.query(
            "iam",
            &[
                ("Action", "CreateRole"),
                ("RoleName", name),
                ("AssumeRolePolicyDocument", &trust),
                ("Version", "2010-05-08"),
            ],
        );
        self.query(
            "iam",
            &[
                ("Action", "PutRolePolicy"),
                ("RoleName", name),
                ("PolicyName", "all"),
                ("PolicyDocument", ALLOW_ALL),
                ("Version", "2010-05-08"),
            ],
        );
    }

    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        let s3 = crate::moto::s3_client(&self.sdk());
        block_on(async {
            let _ = s3.create_bucket().bucket(bucket).send().await;
            s3.put_object()
                .bucket(bucket)
                .key(key)
                .body(body.to_vec().into())
                .send()
                .await
                .unwrap_or_else(|e| panic!("putting s3://{bucket}/{key}: {e:?}"));
        });
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
                let instance_id = instance.instance_id().expect("an id").to_owned();
                Node {
                    credentials: self.assume_role(NODE_ROLE, ACCOUNT, &instance_id),
                    private_ip: instance
                        .private_ip_address()
                        .expect("a private IP")
                        .parse()
                        .expect("an IPv4"),
                    private_dns_name: instance.private_dns_name().unwrap_or("").to_owned(),
                    instance_id,
                }
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
        let instance_id = instance.instance_id().expect("an id").to_owned();
        let private_ip = instance
            .private_ip_address()
            .expect("a private IP")
            .parse()
            .expect("an IPv4");
        let private_dns_name = instance.private_dns_name().unwrap_or("").to_owned();
        let credentials = self.assume_role(role, account, &instance_id);
        Node {
            instance_id,
            private_ip,
            private_dns_name,
            credentials,
        }
    }

    /// AssumeRole with the instance id as the session name: what EC2 does for an
    /// instance profile.
    pub fn assume_role(&self, role: &str, account: &str, session: &str) -> RoleCredentials {
        let arn = format!("arn:aws:iam::{account}:role/{role}");
        let xml = self.query(
            "sts",
            &[
                ("Action", "AssumeRole"),
                ("RoleArn", &arn),
                ("RoleSessionName", session),
                ("Version", "2011-06-15"),
            ],
        );
        RoleCredentials {
            role_name: role.to_owned(),
            access_key_id: between(&xml, "AccessKeyId"),
            secret_access_key: between(&xml, "SecretAccessKey"),
            session_token: between(&xml, "SessionToken"),
        }
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

    /// The shim's metrics text.
    pub fn metrics(&self) -> String {
        let client = self.https_client();
        block_on(async {
            client
                .get(format!("{}/metrics", self.url()))
                .send()
                .await
                .expect("metrics answer")
                .text()
                .await
                .expect("metrics text")
        })
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
