//! Workers' node spec and kubelet credentials from controller-shim.
//!
//! A worker that has no kubelet client certificate yet (or one about to expire)
//! generates its keys here, on the node, keeps them (0600) before asking, and sends only
//! CSRs: a retry after a lost answer reuses the same keys, which the shim recognises.
//! A worker that already holds good credentials (every re-boot) asks for the spec only,
//! presenting its client certificate in the TLS handshake: once a node has bootstrapped,
//! the shim answers only the holder of its certificate. Every request names the spec
//! digest the boot config pins; the shim serves exactly that spec.
//! `plan` always asks for the spec only and writes nothing. What the shim issues is
//! written by the engine, like any desired file, once the spec is verified.
//!
//! kube-proxy gets its own pair the same way: a key made on the node for every request
//! that asks for credentials, its CSR (`CN=system:kube-proxy`) sent with the kubelet's,
//! and the key with the certificate written where kube-proxy's kubeconfig names them
//! (when the spec runs kube-proxy). kube-proxy does not rotate its certificate: a node
//! whose kube-proxy kubeconfig is there but whose pair is missing, not for its key or
//! about to end asks for credentials again at boot (as its own kubelet, so the shim
//! answers without the group allowing re-bootstrap).
//!
//! Paths follow the kubelet's own conventions, so its certificate rotation takes over:
//! `kubelet-client-current.pem` / `kubelet-server-current.pem` hold certificate and key
//! together, as the kubelet writes them when it rotates. The certificates are also
//! written alone beside their keys (`kubelet-client.crt` + `.key`): the pair the
//! kubelet's kubeconfig names, as on control-plane nodes, whose PKI issues the same files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::SdkConfig;
use nodewright_shim::client::{ClientError, ClientSettings, ShimClient, StsSigner, kube_proxy_csr};
use nodewright_shim::pki::{CertificateInfo, KeyAlgorithm, PrivateKey, Subject, verify_issued_by};
use nodewright_shim::protocol::{BootstrapRequest, CredentialRequest, PROTOCOL_VERSION};

use super::{Context, Fetched, SourceError, spec};
use crate::cloud::aws;
use crate::error::{Classified, ErrorKind};
use crate::host::fs;
use crate::model::{CredentialFile, Origin};
use crate::runbook::Topic;
use crate::spec::{BootConfig, ControllerShimSource, NodeSpec, SpecError};

/// The kubelet's client key, generated on the node; never sent anywhere.
pub const CLIENT_KEY: &str = crate::model::kubelet::CLIENT_KEY;
/// The kubelet's client certificate alone (the kubeconfig names it with CLIENT_KEY).
pub const CLIENT_CERT: &str = crate::model::kubelet::CLIENT_CERT;
/// The kubelet's serving key, and its certificate alone.
pub const SERVING_KEY: &str = crate::model::pki_paths::KUBELET_SERVING_KEY;
pub const SERVING_CERT: &str = crate::model::pki_paths::KUBELET_SERVING_CERT;
/// Client certificate and key, for the kubelet's kubeconfig (`client-certificate` and
/// `client-key` both point here).
pub const CLIENT_PEM: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";
/// Serving certificate and key (`tlsCertFile` and `tlsPrivateKeyFile`).
pub const SERVING_PEM: &str = "/var/lib/kubelet/pki/kubelet-server-current.pem";
/// The cluster CA bundle from the shim (the kubelet's `clientCAFile`, the kubeconfig's CA).
pub const CA_BUNDLE: &str = "/etc/kubernetes/pki/ca.crt";
/// kube-proxy's key (made on the node) and certificate: the pair its kubeconfig names.
pub const KUBE_PROXY_KEY: &str = crate::model::kube_proxy::CLIENT_KEY;
pub const KUBE_PROXY_CERT: &str = crate::model::kube_proxy::CLIENT_CERT;
/// Written by the model only when the spec runs kube-proxy: on the node, it says the
/// last converged spec wanted kube-proxy's pair.
const KUBE_PROXY_KUBECONFIG: &str = crate::model::kube_proxy::KUBECONFIG;

/// A client certificate closer than this to its end is replaced at boot.
const RENEW_WITHIN: Duration = Duration::from_secs(86400);

#[derive(Debug, thiserror::Error)]
pub enum ShimSourceError {
    #[error("controller-shim: {0}")]
    Client(#[from] ClientError),
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
    #[error("controller-shim answered with {0}")]
    Answer(String),
}

/// The deadline passed: the shim did not answer (unreachable); anything else it said
/// is a refusal of this node's inputs.
impl Classified for ShimSourceError {
    fn kind(&self) -> ErrorKind {
        if self.is_unreachable() {
            ErrorKind::Unreachable
        } else {
            ErrorKind::InvalidInput
        }
    }
    fn topic(&self) -> Option<Topic> {
        Some(Topic::ControllerShim)
    }
}

impl ShimSourceError {
    /// The deadline passed on transient failures (the shim never answered usefully).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Client(ClientError::Deadline { .. }))
    }
}

/// What the shim answered.
#[derive(Debug)]
pub struct ShimAnswer {
    pub spec: Vec<u8>,
    pub node_name: String,
    pub instance_id: String,
    /// New credentials to install, after the spec is verified.
    pub credentials: Option<NewCredentials>,
}

#[derive(Debug)]
pub struct NewCredentials {
    pub ca_bundle: String,
    /// Certificate then key, PEM.
    pub client_pem: String,
    pub serving_pem: String,
    /// The certificates alone, beside their keys ([`CLIENT_KEY`], [`SERVING_KEY`]): the
    /// pairs the kubelet's kubeconfig and config name, as on control-plane nodes.
    pub client_cert: String,
    pub serving_cert: String,
    /// kube-proxy's client certificate (`CN=system:kube-proxy`), checked to be for
    /// [`Self::kube_proxy_key`] and from the CA bundle.
    pub kube_proxy_cert: String,
    /// kube-proxy's key, PEM: made on the node for this request, never sent.
    pub kube_proxy_key: String,
}

impl NewCredentials {
    /// The files to write. The CA bundle only when the spec does not carry the cluster
    /// CA itself (then the model writes the spec's, which must be the same).
    pub fn files(&self, spec: &NodeSpec) -> Vec<CredentialFile> {
        self.files_from(spec, "controller-shim")
    }

    /// The same files, issued by `issuer` (kops-controller issues the same set).
    pub fn files_from(&self, spec: &NodeSpec, issuer: &str) -> Vec<CredentialFile> {
        let issued = || Origin::Issued {
            by: issuer.to_owned(),
        };
        let why = || Some(format!("issued by {issuer}"));
        let mut files = Vec::new();
        if spec.cluster.ca_certificate.is_none() {
            files.push(CredentialFile::new(
                CA_BUNDLE,
                self.ca_bundle.clone(),
                0o644,
                false,
                None,
                issued(),
            ));
        }
        files.extend([
            CredentialFile::new(
                SERVING_PEM,
                self.serving_pem.clone(),
                0o600,
                true,
                why(),
                issued(),
            ),
            CredentialFile::new(
                CLIENT_PEM,
                self.client_pem.clone(),
                0o600,
                true,
                why(),
                issued(),
            ),
            // The kubeconfig's pair: this certificate with the key kept at CLIENT_KEY.
            CredentialFile::new(
                CLIENT_CERT,
                self.client_cert.clone(),
                0o644,
                false,
                why(),
                issued(),
            ),
            CredentialFile::new(
                SERVING_CERT,
                self.serving_cert.clone(),
                0o644,
                false,
                why(),
                issued(),
            ),
        ]);
        // Asked for before the spec was known; written only where kube-proxy runs.
        if runs_kube_proxy(spec) {
            files.extend([
                CredentialFile::new(
                    KUBE_PROXY_KEY,
                    self.kube_proxy_key.clone(),
                    0o600,
                    true,
                    why(),
                    issued(),
                ),
                CredentialFile::new(
                    KUBE_PROXY_CERT,
                    self.kube_proxy_cert.clone(),
                    0o644,
                    false,
                    why(),
                    issued(),
                ),
            ]);
        }
        files
    }
}

/// Whether the spec runs kube-proxy (and so wants its client certificate).
pub fn runs_kube_proxy(spec: &NodeSpec) -> bool {
    spec.kube_proxy.as_ref().is_some_and(|p| p.enabled)
}

/// The spec phase of a worker: asks the shim, then checks the spec's bytes against the
/// boot config's digest before anything the shim sent is used.
pub async fn fetch_verified(
    boot: &BootConfig,
    source: &ControllerShimSource,
    context: &Context<'_>,
) -> Result<Fetched, SourceError> {
    let sdk = aws::sdk_config(&context.facts.instance.region, context.network).await?;
    let answer = fetch(Fetch {
        root: context.root,
        boot,
        source,
        hostname: &context.facts.instance.hostname,
        sdk: &sdk,
        proxies: context.network.reqwest_proxies()?,
        deadline: context.deadline,
        bootstrap: context.credentials,
    })
    .await?;
    let name = format!("the node spec from {}", boot.node_spec.describe());
    let verified = spec::verify(
        &name,
        boot.node_spec.describe(),
        answer.spec,
        Some(&boot.node_spec.sha256),
        Some(boot),
    )?;
    // The spec names the cluster CA; the shim signs with its own: they must agree, or
    // the kubelet would trust one CA and hold a certificate from another.
    if let (Some(spec_ca), Some(credentials)) =
        (&verified.spec.cluster.ca_certificate, &answer.credentials)
        && !same_certificates(spec_ca, &credentials.ca_bundle)
    {
        return Err(SpecError::Parse {
            source_name: name,
            detail: "cluster.caCertificate differs from the CA controller-shim issued the \
                     kubelet certificates with; refusing both"
                .to_owned(),
        }
        .into());
    }
    let credentials = answer
        .credentials
        .map(|c| c.files(&verified.spec))
        .unwrap_or_default();
    Ok(Fetched {
        spec: verified,
        credentials,
    })
}

/// What [`fetch`] needs.
pub struct Fetch<'a> {
    pub root: &'a Path,
    pub boot: &'a BootConfig,
    pub source: &'a ControllerShimSource,
    /// The private DNS name from IMDS: the name the CSRs ask for.
    pub hostname: &'a str,
    pub sdk: &'a SdkConfig,
    pub proxies: Vec<reqwest::Proxy>,
    pub deadline: Duration,
    /// Whether to ask for credentials when the node holds no good ones. Credentials are
    /// the kubelet's client and serving certificates and kube-proxy's client certificate
    /// (the spec, which says whether kube-proxy runs, is not known before the answer).
    pub bootstrap: bool,
}

/// Asks the shim for the node spec, and for credentials when `bootstrap` and the node
/// does not hold good ones.
pub async fn fetch(what: Fetch<'_>) -> Result<ShimAnswer, ShimSourceError> {
    let Fetch {
        root,
        boot,
        source,
        hostname,
        sdk,
        proxies,
        deadline,
        bootstrap,
    } = what;
    let mut settings = ClientSettings::new(source.servers.clone(), source.ca.clone(), deadline);
    settings.proxies = proxies;
    settings.identity_pem = current_identity(root);
    let client = ShimClient::new(settings)?;
    let signer = StsSigner::from_sdk_config(sdk)?;
    let keys = if bootstrap && !holds_good_credentials(root) {
        Some((
            load_or_generate(root, CLIENT_KEY)?,
            load_or_generate(root, SERVING_KEY)?,
            // Only its certificate holds the node's identity; a fresh key each time.
            generate(KUBE_PROXY_KEY)?,
        ))
    } else {
        None
    };
    let credentials = match &keys {
        Some((client_key, serving_key, kube_proxy_key)) => {
            // The shim takes the names from EC2; the request says who we think we are
            // (the private DNS name from IMDS).
            let subject = Subject::new(&format!("system:node:{hostname}"), &["system:nodes"]);
            let csr = |key: &PrivateKey| {
                key.certificate_request(&subject, &[], &[])
                    .map_err(|e| ShimSourceError::Answer(format!("a CSR we could not build: {e}")))
            };
            let kube_proxy_csr = kube_proxy_csr(kube_proxy_key)
                .map_err(|e| ShimSourceError::Answer(format!("a CSR we could not build: {e}")))?;
            Some(CredentialRequest {
                client_csr: csr(client_key)?,
                serving_csr: csr(serving_key)?,
                kube_proxy_csr: Some(kube_proxy_csr),
            })
        }
        None => None,
    };
    let request = BootstrapRequest {
        api_version: PROTOCOL_VERSION.to_owned(),
        node_group: boot.node_group.to_string(),
        node_spec_sha256: boot.node_spec.sha256.as_str().to_owned(),
        nonce: String::new(), // the client sets a fresh one for every attempt
        credentials,
    };
    let answer = client.bootstrap(&signer, &request).await?;
    let spec = answer.node_spec_bytes().map_err(ShimSourceError::Answer)?;
    let credentials = match (keys, answer.credentials) {
        (Some((client_key, serving_key, kube_proxy_key)), Some(issued)) => Some(NewCredentials {
            client_pem: checked_pair(
                "client",
                &issued.client_certificate,
                &client_key,
                &answer.ca_bundle,
            )?,
            serving_pem: checked_pair(
                "serving",
                &issued.serving_certificate,
                &serving_key,
                &answer.ca_bundle,
            )?,
            kube_proxy_cert: match &issued.kube_proxy_certificate {
                Some(cert) => {
                    checked_pair("kube-proxy", cert, &kube_proxy_key, &answer.ca_bundle)?;
                    cert.clone()
                }
                None => {
                    return Err(ShimSourceError::Answer(
                        "no kube-proxy certificate although we asked for one".to_owned(),
                    ));
                }
            },
            kube_proxy_key: kube_proxy_key.to_pem(),
            client_cert: issued.client_certificate.clone(),
            serving_cert: issued.serving_certificate.clone(),
            ca_bundle: answer.ca_bundle.clone(),
        }),
        (Some(_), None) => {
            return Err(ShimSourceError::Answer(
                "no certificates although we asked for them".to_owned(),
            ));
        }
        (None, _) => None,
    };
    tracing::info!(node_name = %answer.node_name, instance_id = %answer.instance_id,
        credentials = credentials.is_some(), "controller-shim answered");
    Ok(ShimAnswer {
        spec,
        node_name: answer.node_name,
        instance_id: answer.instance_id,
        credentials,
    })
}

/// Checks an issued certificate is for our key and from the CA, and returns it with
/// the key appended (the kubelet's `*-current.pem` layout).
fn checked_pair(
    kind: &str,
    cert_pem: &str,
    key: &PrivateKey,
    ca_bundle: &str,
) -> Result<String, ShimSourceError> {
    let what = format!("the {kind} certificate");
    let info = CertificateInfo::from_pem(&what, cert_pem)
        .map_err(|e| ShimSourceError::Answer(e.to_string()))?;
    if info.public_key != key.public_key() {
        return Err(ShimSourceError::Answer(format!(
            "{what} is not for the key we generated"
        )));
    }
    verify_issued_by(&what, cert_pem, ca_bundle)
        .map_err(|e| ShimSourceError::Answer(e.to_string()))?;
    Ok(format!(
        "{}{}",
        cert_pem.trim_end_matches('\n').to_owned() + "\n",
        key.to_pem()
    ))
}

/// Whether two PEM bundles hold the same certificates (order and text layout aside).
pub fn same_certificates(a: &str, b: &str) -> bool {
    let ders = |pem: &str| {
        let mut ders = nodewright_shim::pki::certificates_der("CA bundle", pem).unwrap_or_default();
        ders.sort();
        ders
    };
    let (a, b) = (ders(a), ders(b));
    !a.is_empty() && a == b
}

/// The kubelet's client certificate and key, while the certificate is valid: what the
/// node presents to prove it is the node the shim recorded.
fn current_identity(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(under(root, CLIENT_PEM)).ok()?;
    let info = CertificateInfo::from_pem(CLIENT_PEM, &text).ok()?;
    let now = time::OffsetDateTime::now_utc();
    (info.not_before <= now && now < info.not_after && text.contains("PRIVATE KEY-----"))
        .then_some(text)
}

/// The kubelet's client certificate is valid beyond [`RENEW_WITHIN`], and so is
/// kube-proxy's where the node runs kube-proxy.
pub fn holds_good_credentials(root: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(under(root, CLIENT_PEM)) else {
        return false;
    };
    let kubelet = CertificateInfo::from_pem(CLIENT_PEM, &text).is_ok_and(|info| lasts(&info));
    kubelet && kube_proxy_pair_good(root)
}

/// Where kube-proxy's kubeconfig is on the node (the last spec ran kube-proxy): its
/// certificate lasts beyond [`RENEW_WITHIN`] and is for the key beside it. Nodes
/// bootstrapped before the shim issued it, a run that stopped between writing the
/// kubeconfig and the pair, and a certificate about to end (kube-proxy never renews
/// it) all make the node ask again.
fn kube_proxy_pair_good(root: &Path) -> bool {
    if !under(root, KUBE_PROXY_KUBECONFIG).exists() {
        return true;
    }
    let read = |path| std::fs::read_to_string(under(root, path)).ok();
    let (Some(cert), Some(key)) = (read(KUBE_PROXY_CERT), read(KUBE_PROXY_KEY)) else {
        return false;
    };
    match (
        CertificateInfo::from_pem(KUBE_PROXY_CERT, &cert),
        PrivateKey::from_pem(KUBE_PROXY_KEY, &key),
    ) {
        (Ok(info), Ok(key)) => info.public_key == key.public_key() && lasts(&info),
        _ => false,
    }
}

/// Valid now and for more than [`RENEW_WITHIN`].
fn lasts(info: &CertificateInfo) -> bool {
    let now = time::OffsetDateTime::now_utc();
    let margin = time::Duration::try_from(RENEW_WITHIN).unwrap_or(time::Duration::DAY);
    info.not_before <= now && info.not_after - now > margin
}

pub fn load_or_generate(root: &Path, node_path: &str) -> Result<PrivateKey, ShimSourceError> {
    let path = under(root, node_path);
    if let Ok(pem) = std::fs::read_to_string(&path) {
        match PrivateKey::from_pem(node_path, &pem) {
            Ok(key) => return Ok(key),
            Err(e) => tracing::warn!(path = node_path, error = %e, "replacing an unreadable key"),
        }
    }
    let key = generate(node_path)?;
    write(root, node_path, key.to_pem().as_bytes(), 0o600)?;
    Ok(key)
}

/// A new key for `node_path`, in memory.
pub fn generate(node_path: &str) -> Result<PrivateKey, ShimSourceError> {
    PrivateKey::generate(KeyAlgorithm::EcdsaP256).map_err(|e| ShimSourceError::File {
        path: node_path.to_owned(),
        detail: e.to_string(),
    })
}

fn under(root: &Path, node_path: &str) -> PathBuf {
    root.join(node_path.trim_start_matches('/'))
}

fn write(root: &Path, node_path: &str, bytes: &[u8], mode: u32) -> Result<(), ShimSourceError> {
    let path = under(root, node_path);
    let fail = |e: std::io::Error| ShimSourceError::File {
        path: node_path.to_owned(),
        detail: e.to_string(),
    };
    let (uid, gid) = fs::current_ids();
    let mut missing = Vec::new();
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.exists() || d == root {
            break;
        }
        missing.push(d.to_owned());
        dir = d.parent();
    }
    for d in missing.iter().rev() {
        // Key directories stay private.
        fs::create_dir(d, if d.ends_with("pki") { 0o700 } else { 0o755 }, uid, gid)
            .map_err(fail)?;
    }
    fs::write_atomic(&path, bytes, mode, uid, gid).map_err(fail)
}

#[cfg(test)]
mod tests;
