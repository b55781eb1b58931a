//! A fake kops-controller, written from kops's `cmd/kops-controller/pkg/server/server.go`
//! and `pkg/bootstrap/awsbootstrap/verifier.go`, against the AWS emulator with SigV4
//! checks on. It does what kops-controller's `/bootstrap` does on AWS:
//!
//! 1. the proof: `Authorization: x-aws-sts <base64 JSON of signed STS headers>`, whose
//!    `X-Kops-Request-Sha` must be the body's hash and among the signed headers;
//!    replayed to STS (`GetCallerIdentity`), which checks the signature;
//! 2. the caller: this account, an `assumed-role/<node role>/<instance id>` session,
//!    the instance found in EC2, its instance group from the `kops.k8s.io/instancegroup`
//!    tag, its names (instance id first: the node name);
//! 3. 409 for a node whose Node object is Ready (kops asks the API server; here the test
//!    says so with [`KopsController::mark_ready`], as a kubelet that registered would);
//! 4. the nodeupconfig from the state store (`<base>/igconfig/node/<ig>/nodeupconfig.yaml`
//!    in the emulator's S3) when asked;
//! 5. certificates for the node's public keys (`kubelet`, `kubelet-server`,
//!    `kube-proxy`) from a kops-shaped keyset (`kubernetes-ca.crt`, `.key`,
//!    `keypair-ids.yaml`, as kops-controller mounts them), refusing another keypair id.
//!
//! What it leaves out: the Kubernetes API (see 3.), the callback challenge (not used on
//! AWS), node secrets (`dockerconfig`), the "v2" token (nodeup sends "v1").

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use nodewright_shim::client::StsSigner;
use nodewright_shim::identity::StsEndpoint;
use nodewright_shim::pki::{
    CertificateAuthority, KeyAlgorithm, PrivateKey, Profile, PublicKey, Subject, Usage,
};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::moto::{Moto, REGION};
use crate::runtime::{block_on, runtime};
use crate::shim::{Node, assume_role, between, create_role, node_of, set_up_admin};

pub const ACCOUNT: &str = "123456789012";
pub const BUCKET: &str = "kops-state";
pub const NODES_ROLE: &str = "nodes.minimal-aws.example.com";
pub const INSTANCE_GROUP_TAG: &str = "kops.k8s.io/instancegroup";
const STS_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";

/// The cluster the fake serves, its keyset and its AWS account.
pub struct KopsWorld {
    pub moto: Moto,
    pub admin: Credentials,
    pub cluster: String,
    /// The cluster CA (`kubernetes-ca`) that issues the nodes' certificates.
    pub ca: CertificateAuthority,
    /// What kube_env's `CACertificates` holds: the CA and a retired one before it, a
    /// rotation bundle as kops keeps them.
    pub ca_bundle: String,
    /// kops-controller's `keypair-ids.yaml` entry for `kubernetes-ca`.
    pub keypair_id: String,
    pub dir: TempDir,
    pub controller: KopsController,
}

impl KopsWorld {
    /// Moto with signature checks on, the node role, a keyset, and a running controller
    /// for `cluster`.
    pub fn start(cluster: &str) -> Self {
        let moto = Moto::start();
        let admin = set_up_admin(&moto);
        let dir = tempfile::Builder::new()
            .prefix("kops-controller-")
            .tempdir()
            .expect("a temp dir");
        let year = Duration::from_secs(86400 * 365);
        let (retired, _) = CertificateAuthority::create("kubernetes-ca", year).expect("a CA");
        let (ca, ca_key) = CertificateAuthority::create("kubernetes-ca", year).expect("a CA");
        // kops names a keypair by its certificate's serial number (decimal).
        let keypair_id = "6982820025135291416230495506".to_owned();
        write(dir.path(), "kubernetes-ca.crt", ca.cert_pem());
        write(dir.path(), "kubernetes-ca.key", &ca_key.to_pem());
        write(
            dir.path(),
            "keypair-ids.yaml",
            &format!("kubernetes-ca: \"{keypair_id}\"\n"),
        );
        let ca_bundle = format!("{}{}", retired.cert_pem(), ca.cert_pem());
        let world_admin = admin.clone();
        let sdk = admin_sdk(moto.url(), &world_admin);
        let controller = KopsController::start(Settings {
            cluster: cluster.to_owned(),
            keyset_dir: dir.path().to_owned(),
            sts_url: moto.url().to_owned(),
            nodes_roles: vec![NODES_ROLE.to_owned()],
            config_base: format!("s3://{BUCKET}/{cluster}"),
            sdk,
        });
        let world = Self {
            moto,
            admin,
            cluster: cluster.to_owned(),
            ca,
            ca_bundle,
            keypair_id,
            dir,
            controller,
        };
        create_role(world.moto.url(), &world.admin, NODES_ROLE);
        create_role(world.moto.url(), &world.admin, "someone-else");
        world
    }

    pub fn sdk(&self) -> SdkConfig {
        admin_sdk(self.moto.url(), &self.admin)
    }

    /// Stores an instance group's nodeupconfig where kops keeps it.
    pub fn put_nodeup_config(&self, ig: &str, bytes: &[u8]) {
        let s3 = crate::moto::s3_client(&self.sdk());
        let key = format!("{}/igconfig/node/{ig}/nodeupconfig.yaml", self.cluster);
        block_on(async {
            let _ = s3.create_bucket().bucket(BUCKET).send().await;
            s3.put_object()
                .bucket(BUCKET)
                .key(&key)
                .body(bytes.to_vec().into())
                .send()
                .await
                .unwrap_or_else(|e| panic!("putting s3://{BUCKET}/{key}: {e:?}"));
        });
    }

    /// Launches an instance of instance group `ig` and its session under `role` (EC2's
    /// instance profile: AssumeRole with the instance id as session name).
    pub fn launch(&self, ig: &str, role: &str) -> Node {
        let ec2 = aws_sdk_ec2::Client::new(&self.sdk());
        let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
        let tags = aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
            .tags(tag(
                &format!("kubernetes.io/cluster/{}", self.cluster),
                "owned",
            ))
            .tags(tag(INSTANCE_GROUP_TAG, ig))
            .build();
        let output = block_on(async {
            ec2.run_instances()
                .image_id("ami-12c6146b")
                .instance_type(aws_sdk_ec2::types::InstanceType::M6iLarge)
                .min_count(1)
                .max_count(1)
                .tag_specifications(tags)
                .send()
                .await
                .unwrap_or_else(|e| panic!("RunInstances: {e:?}"))
        });
        let instance = &output.instances()[0];
        let session = instance.instance_id().expect("an id");
        node_of(
            instance,
            assume_role(self.moto.url(), &self.admin, role, ACCOUNT, session),
        )
    }

    /// A signer with a node's role credentials, for STS where the controller replays.
    pub fn signer(&self, node: &Node) -> StsSigner {
        StsSigner::new(
            SharedCredentialsProvider::new(node.aws_credentials()),
            StsEndpoint {
                url: self.moto.url().to_owned(),
                region: REGION.to_owned(),
            },
        )
    }

    /// `https://kops-controller.internal.<cluster>:<port>/`, as kube_env lists it.
    pub fn server_url(&self) -> String {
        format!(
            "https://{}:{}/",
            self.controller_name(),
            self.controller.address.port()
        )
    }

    /// `https://127.0.0.1:<port>/`: the fake on loopback (its certificate names both).
    pub fn loopback_url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.controller.address.port())
    }

    pub fn controller_name(&self) -> String {
        format!("kops-controller.internal.{}", self.cluster)
    }
}

fn admin_sdk(url: &str, admin: &Credentials) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(url)
        .credentials_provider(SharedCredentialsProvider::new(admin.clone()))
        .build()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("writing the keyset");
}

/// What kops-controller is configured with (its `config.Options`, the AWS part).
pub struct Settings {
    pub cluster: String,
    /// `kubernetes-ca.crt`, `kubernetes-ca.key`, `keypair-ids.yaml`.
    pub keyset_dir: std::path::PathBuf,
    pub sts_url: String,
    pub nodes_roles: Vec<String>,
    /// `s3://bucket/cluster`.
    pub config_base: String,
    pub sdk: SdkConfig,
}

struct Shared {
    settings: Settings,
    ca: CertificateAuthority,
    keypair_ids: BTreeMap<String, String>,
    http: reqwest::Client,
    /// Node names whose Node object is Ready.
    ready: Mutex<BTreeSet<String>>,
    /// Node names issued a kubelet certificate.
    issued: Mutex<BTreeSet<String>>,
    requests: AtomicUsize,
    /// When set, every request is answered with this status (503 for "down for
    /// maintenance", or a 403 to test the client's report).
    forced: Mutex<Option<u16>>,
    /// Why each refused request was refused, for tests to read.
    refusals: Mutex<Vec<String>>,
}

/// The running fake: HTTPS on loopback, with a serving certificate from the cluster CA
/// for `kops-controller.internal.<cluster>`.
pub struct KopsController {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl KopsController {
    pub fn start(settings: Settings) -> Self {
        let read = |name: &str| {
            std::fs::read_to_string(settings.keyset_dir.join(name))
                .unwrap_or_else(|e| panic!("reading the keyset's {name}: {e}"))
        };
        let ca = CertificateAuthority::from_pem(
            "kubernetes-ca",
            &read("kubernetes-ca.crt"),
            &read("kubernetes-ca.key"),
        )
        .expect("the keyset's CA");
        let keypair_ids: BTreeMap<String, String> =
            yaml_serde::from_str(&read("keypair-ids.yaml")).expect("keypair-ids.yaml");
        let serving_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("a key");
        let serving = ca
            .issue(
                &serving_key.public_key(),
                &Profile {
                    subject: Subject::new("kops-controller", &[]),
                    dns_names: vec![format!("kops-controller.internal.{}", settings.cluster)],
                    ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
                    usage: Usage::Server,
                    validity: Duration::from_secs(86400),
                    backdate: Duration::from_secs(60),
                },
            )
            .expect("a serving certificate");
        let shared = Arc::new(Shared {
            settings,
            ca,
            keypair_ids,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a client"),
            ready: Mutex::new(BTreeSet::new()),
            issued: Mutex::new(BTreeSet::new()),
            requests: AtomicUsize::new(0),
            forced: Mutex::new(None),
            refusals: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/bootstrap", post(bootstrap))
            .with_state(shared.clone());
        let listener = block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("a port");
        let address = listener.local_addr().expect("an address");
        let acceptor = tls_acceptor(&serving.pem, &serving_key.to_pem());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime().spawn(serve(listener, acceptor, router, stopped));
        Self {
            address,
            shared,
            stop: Some(stop),
        }
    }

    /// Stops answering (connections are refused from now on).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The nodes issued a kubelet certificate so far.
    pub fn issued(&self) -> BTreeSet<String> {
        self.shared.issued.lock().expect("a lock").clone()
    }

    /// The node registered and turned Ready: from now on it gets 409.
    pub fn mark_ready(&self, node_name: &str) {
        self.shared
            .ready
            .lock()
            .expect("a lock")
            .insert(node_name.to_owned());
    }

    pub fn refusals(&self) -> Vec<String> {
        self.shared.refusals.lock().expect("a lock").clone()
    }

    /// Answers every request with `status` from now on (`None`: serve again).
    pub fn force(&self, status: Option<u16>) {
        *self.shared.forced.lock().expect("a lock") = status;
    }
}

impl Drop for KopsController {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tls_acceptor(cert_pem: &str, key_pem: &str) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("the serving certificate");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("the serving key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("a TLS config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
            _ = &mut stopped => return,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
            else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

/// `nodeup.BootstrapRequest`, as kops-controller decodes it.
#[derive(Debug, serde::Deserialize)]
struct BootstrapRequest {
    #[serde(rename = "apiVersion")]
    api_version: String,
    #[serde(default)]
    certs: Option<BTreeMap<String, String>>,
    #[serde(rename = "keypairIDs", default)]
    keypair_ids: Option<BTreeMap<String, String>>,
    #[serde(rename = "includeNodeConfig", default)]
    include_node_config: bool,
}

/// Who the proof says the caller is (kops's `bootstrap.VerifyResult`).
struct Identity {
    node_name: String,
    instance_group: String,
    dns_names: Vec<String>,
    ips: Vec<IpAddr>,
}

enum Refusal {
    /// 403 "failed to verify token" (the detail is logged, never sent: kops's rule).
    Token(String),
    Internal(String),
}

async fn bootstrap(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let forced = *shared.forced.lock().expect("a lock");
    if let Some(status) = forced {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (status, "forced by the test").into_response();
    }
    let refuse = |why: String, status: StatusCode, text: &'static str| {
        shared.refusals.lock().expect("a lock").push(why);
        (status, text).into_response()
    };
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let identity = match verify(&shared, token, &body).await {
        Ok(identity) => identity,
        Err(Refusal::Token(why)) => {
            return refuse(why, StatusCode::FORBIDDEN, "failed to verify token");
        }
        Err(Refusal::Internal(why)) => {
            return refuse(why, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    // Once a node is Ready, no further bootstrap: a pod holding the node's role must
    // not get its credentials again.
    if shared
        .ready
        .lock()
        .expect("a lock")
        .contains(&identity.node_name)
    {
        return refuse(
            format!("{}: registered already", identity.node_name),
            StatusCode::CONFLICT,
            "node already registered",
        );
    }
    let request: BootstrapRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return refuse(
                format!("decode: {e}"),
                StatusCode::BAD_REQUEST,
                "failed to decode",
            );
        }
    };
    if request.api_version != "bootstrap.kops.k8s.io/v1alpha1" {
        return refuse(
            "apiVersion".into(),
            StatusCode::BAD_REQUEST,
            "unexpected APIVersion",
        );
    }
    let mut response = serde_json::json!({"Certs": {}});
    if request.include_node_config {
        match node_config(&shared, &identity).await {
            Ok(text) => response["nodeConfig"] = serde_json::json!({"nodeupConfig": text}),
            Err(why) => return refuse(why, StatusCode::BAD_REQUEST, "failed to build node config"),
        }
    }
    let keypair_ids = request.keypair_ids.unwrap_or_default();
    let certs = request.certs.unwrap_or_default();
    for (name, key) in &certs {
        match issue(&shared, name, key, &identity, &keypair_ids) {
            Ok(pem) => response["Certs"][name] = serde_json::json!(pem),
            Err(why) => {
                return refuse(
                    format!("{name}: {why}"),
                    StatusCode::BAD_REQUEST,
                    "failed to issue",
                );
            }
        }
    }
    if certs.contains_key("kubelet") {
        shared
            .issued
            .lock()
            .expect("a lock")
            .insert(identity.node_name.clone());
    }
    (StatusCode::OK, axum::Json(response)).into_response()
}

/// verifier.go's `verifyTokenV1` and `verifyCallerIdentity`.
async fn verify(shared: &Shared, token: &str, body: &[u8]) -> Result<Identity, Refusal> {
    let bad = |why: &str| Refusal::Token(why.to_owned());
    let encoded = token
        .strip_prefix("x-aws-sts ")
        .ok_or_else(|| bad("not an x-aws-sts token"))?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| bad("token is not base64"))?;
    let decoded: BTreeMap<String, Vec<String>> =
        serde_json::from_slice(&json).map_err(|_| bad("token is not a header map"))?;
    let header = |name: &str| decoded.get(name).and_then(|v| v.first()).cloned();
    let sha = base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(body));
    if header("X-Kops-Request-Sha") != Some(sha) {
        return Err(bad("incorrect SHA"));
    }
    let authorization = header("Authorization").unwrap_or_default();
    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| bad("incorrect authorization algorithm"))?;
    let signed_headers = fields
        .split(", ")
        .find_map(|f| f.strip_prefix("SignedHeaders="))
        .unwrap_or_default();
    if !signed_headers.split(';').any(|h| h == "x-kops-request-sha") {
        return Err(bad("unexpected signed headers value"));
    }
    // Replay the signed request to STS; STS checks the signature.
    let mut request = shared
        .http
        .post(format!(
            "{}/",
            shared.settings.sts_url.trim_end_matches('/')
        ))
        .body(STS_BODY);
    for (name, values) in &decoded {
        for value in values {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    let response = request
        .send()
        .await
        .map_err(|e| Refusal::Internal(format!("sending STS request: {e}")))?;
    let status = response.status();
    let xml = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(Refusal::Token(format!(
            "received status code {status} from STS: {xml}"
        )));
    }
    let account = between(&xml, "Account");
    let arn = between(&xml, "Arn");
    if account != ACCOUNT {
        return Err(Refusal::Token(format!("incorrect account {account}")));
    }
    let parts: Vec<&str> = arn.split(':').collect();
    if parts.len() != 6 || parts[0] != "arn" || !matches!(parts[2], "iam" | "sts") {
        return Err(Refusal::Token(format!("arn {arn:?} is malformed")));
    }
    let resource: Vec<&str> = parts[5].split('/').collect();
    if resource.len() < 3 || resource[0] != "assumed-role" {
        return Err(Refusal::Token(format!("arn {arn:?} has unrecognized type")));
    }
    if !shared.settings.nodes_roles.iter().any(|r| r == resource[1]) {
        return Err(Refusal::Token(format!(
            "arn {arn:?} does not contain acceptable node role"
        )));
    }
    let instance_id = resource[2];
    let ec2 = aws_sdk_ec2::Client::new(&shared.settings.sdk);
    let instances = ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(|e| Refusal::Token(format!("describing instance for arn {arn:?}: {e:?}")))?;
    let instance = instances
        .reservations()
        .first()
        .and_then(|r| r.instances().first())
        .ok_or_else(|| Refusal::Token(format!("missing instance id: {instance_id}")))?;
    let mut dns_names = vec![instance_id.to_owned()];
    dns_names.extend(
        instance
            .private_dns_name()
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
    );
    let ips: Vec<IpAddr> = instance
        .private_ip_address()
        .and_then(|ip| ip.parse().ok())
        .into_iter()
        .collect();
    let instance_group = instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(INSTANCE_GROUP_TAG))
        .and_then(|t| t.value())
        .unwrap_or_default()
        .to_owned();
    Ok(Identity {
        node_name: instance_id.to_owned(),
        instance_group,
        dns_names,
        ips,
    })
}

/// node_config.go: the instance group's nodeupconfig from the state store.
async fn node_config(shared: &Shared, identity: &Identity) -> Result<String, String> {
    if identity.instance_group.is_empty()
        || !identity
            .instance_group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(format!(
            "did not find owner for node {}",
            identity.node_name
        ));
    }
    let base = shared.settings.config_base.trim_start_matches("s3://");
    let (bucket, prefix) = base.split_once('/').unwrap_or((base, ""));
    let key = format!(
        "{prefix}/igconfig/node/{}/nodeupconfig.yaml",
        identity.instance_group
    );
    let s3 = crate::moto::s3_client(&shared.settings.sdk);
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .map_err(|e| format!("error loading NodeupConfig s3://{bucket}/{key}: {e:?}"))?;
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .into_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
}

/// server.go's `issueCert`.
fn issue(
    shared: &Shared,
    name: &str,
    key: &str,
    identity: &Identity,
    keypair_ids: &BTreeMap<String, String>,
) -> Result<String, String> {
    let (label, der) = pem_block(key).ok_or("decoding pem public key")?;
    if label != "RSA PUBLIC KEY" {
        return Err(format!("unexpected key type {label:?}"));
    }
    let public = PublicKey::from_spki_der("the public key", &der)
        .map_err(|e| format!("parsing key: {e}"))?;
    let (subject, usage, dns_names, ips) = match name {
        "kubelet" => (
            Subject::new(
                &format!("system:node:{}", identity.node_name),
                &["system:nodes"],
            ),
            Usage::Client,
            vec![],
            vec![],
        ),
        "kubelet-server" => (
            Subject::new(&identity.node_name, &[]),
            Usage::Server,
            identity.dns_names.clone(),
            identity.ips.clone(),
        ),
        "kube-proxy" => (
            Subject::new("system:kube-proxy", &[]),
            Usage::Client,
            vec![],
            vec![],
        ),
        _ => return Err("key name not enabled".to_owned()),
    };
    // Added to the protocol in kOps 1.22: the node says which CA keypair it expects.
    if !keypair_ids.is_empty() {
        let theirs = keypair_ids
            .get("kubernetes-ca")
            .cloned()
            .unwrap_or_default();
        let ours = shared
            .keypair_ids
            .get("kubernetes-ca")
            .cloned()
            .unwrap_or_default();
        if theirs != ours {
            return Err(format!(
                "request's keypair ID {theirs:?} for kubernetes-ca didn't match server's {ours:?}"
            ));
        }
    }
    shared
        .ca
        .issue(
            &public,
            &Profile {
                subject,
                dns_names,
                ips,
                usage,
                validity: Duration::from_secs(455 * 86400),
                backdate: Duration::from_secs(3600),
            },
        )
        .map(|issued| issued.pem)
        .map_err(|e| format!("issuing certificate: {e}"))
}

/// The first PEM block: its label and DER.
fn pem_block(pem: &str) -> Option<(String, Vec<u8>)> {
    let start = pem.find("-----BEGIN ")?;
    let rest = &pem[start + 11..];
    let (label, rest) = rest.split_once("-----")?;
    let end = rest.find("-----END ")?;
    let body: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    Some((label.to_owned(), der))
}
