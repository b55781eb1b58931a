//! kops-controller: what nodeup's `getNodeConfigFromServers` and its
//! `BootstrapClientTask` do, for nodewright (kube_env's `ConfigServer`).
//!
//! 1. The node's configuration: `POST /bootstrap` with `includeNodeConfig` and no
//!    certificates; the nodeupconfig's bytes must hash to `NodeupConfigHash` (checked by
//!    the caller before they are parsed). nodeup trusts kube_env's `CACertificates` as
//!    the cluster CA; so does the translation.
//! 2. The credentials, only on a converging run of a node that does not hold good ones:
//!    keys made on the node (the kubelet's kept before the request, so a retry after a
//!    lost answer reuses them; kube-proxy's fresh), their public halves sent with the
//!    nodeupconfig's `KeypairIDs[kubernetes-ca]`; each certificate checked to be for its
//!    key and from the CA bundle before anything is written. The engine writes them, at
//!    the paths controller-shim's credentials use, which the translated spec's
//!    kubeconfigs and KubeletConfiguration name.
//! 3. 409: kops-controller refuses a node whose Node object is Ready (a workload holding
//!    the node's role must not get its credentials). nodeup exits there and leaves the
//!    node as it is; nodewright, which converges at every boot, keeps the credentials on
//!    disk and uses the nodeupconfig it kept from its first boot, provided that copy
//!    still hashes to kube_env's `NodeupConfigHash` (which pins it exactly).
//!
//! Left out, as on AWS kops does not use them: the callback challenge (other clouds),
//! the secrets kops-controller sends with the configuration (`dockerconfig`: refused by
//! name when present), `kube-router` and Cilium's etcd certificates.

pub mod client;
pub mod protocol;

use std::path::{Path, PathBuf};

use nodewright_shim::client::StsSigner;
use nodewright_shim::pki::{CertificateInfo, PrivateKey, verify_issued_by};

pub use client::{Answer, ControllerClient, ControllerError, ControllerSettings};
use protocol::{BootstrapRequest, KUBE_PROXY, KUBELET, KUBELET_SERVER};

use crate::error::{Classified, ErrorKind};
use crate::model::{CredentialFile, Origin};
use crate::runbook::Topic;
use crate::source::shim::{self as shim_source, NewCredentials};

/// Where the nodeupconfig from kops-controller is kept, for the boots after the first
/// (kops-controller answers 409 once the node is Ready).
pub const KEPT_NODEUP_CONFIG: &str = "/var/lib/nodewright/kops/nodeupconfig.yaml";

/// Who issued the credentials, in the run record and `plan`.
pub const ISSUER: &str = "kops-controller";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error("the node's keys: {0}")]
    Keys(String),
    #[error("kops-controller's answer: {0}")]
    Answer(String),
    #[error(
        "{server} answered 409: this node is registered with the cluster already, and {detail} \
         (nodeup stops here and leaves the node as it is; nothing was written)"
    )]
    Registered { server: String, detail: String },
}

impl Classified for BootstrapError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Controller(e) => e.kind(),
            Self::Keys(_) => ErrorKind::ChangeFailed,
            Self::Answer(_) | Self::Registered { .. } => ErrorKind::InvalidInput,
        }
    }
    fn topic(&self) -> Option<Topic> {
        match self {
            Self::Controller(e) => e.topic(),
            _ => None,
        }
    }
}

/// The nodeupconfig's bytes, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeupConfigBytes {
    pub bytes: Vec<u8>,
    /// kops-controller answered 409: the copy kept from an earlier boot (checked
    /// against `NodeupConfigHash` by the caller, like a fresh one).
    pub registered: Option<String>,
}

/// Asks for the node's configuration (nodeup's first request); on 409, reads the copy
/// kept from an earlier boot.
pub async fn nodeup_config(
    client: &ControllerClient,
    signer: &StsSigner,
    root: &Path,
) -> Result<NodeupConfigBytes, BootstrapError> {
    match client
        .bootstrap(signer, &BootstrapRequest::node_config())
        .await?
    {
        Answer::Bootstrapped(response) => {
            let config = response.node_config.ok_or_else(|| {
                BootstrapError::Answer("no nodeConfig although it was asked for".to_owned())
            })?;
            if config.nodeup_config.is_empty() {
                return Err(BootstrapError::Answer("an empty nodeupConfig".to_owned()));
            }
            if let Some(name) = config.node_secrets.keys().next() {
                return Err(BootstrapError::Answer(format!(
                    "nodeSecrets.{name}: node secrets (a container registry's credentials) are \
                     not supported by nodewright yet; refusing rather than leaving them out"
                )));
            }
            Ok(NodeupConfigBytes {
                bytes: config.nodeup_config.into_bytes(),
                registered: None,
            })
        }
        Answer::AlreadyRegistered { server } => {
            tracing::info!(
                server,
                "kops-controller: this node is registered already (409); using the kept nodeupconfig"
            );
            match std::fs::read(under(root, KEPT_NODEUP_CONFIG)) {
                Ok(bytes) => Ok(NodeupConfigBytes {
                    bytes,
                    registered: Some(server),
                }),
                Err(e) => Err(BootstrapError::Registered {
                    server,
                    detail: format!(
                        "no nodeupconfig was kept from its first boot ({KEPT_NODEUP_CONFIG}: {e})"
                    ),
                }),
            }
        }
    }
}

/// The kept nodeupconfig as a file of this run: written fresh, or declared as kept.
pub fn kept_nodeup_config(config: &NodeupConfigBytes) -> CredentialFile {
    let origin = match config.registered {
        Some(_) => Origin::Kept,
        None => Origin::Issued {
            by: ISSUER.to_owned(),
        },
    };
    CredentialFile::new(
        KEPT_NODEUP_CONFIG,
        config.bytes.clone(),
        0o600,
        false,
        Some(
            "the nodeupconfig from kops-controller, kept for the boots after the first".to_owned(),
        ),
        origin,
    )
}

/// What the node needs certificates for.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    pub root: &'a Path,
    /// The nodeupconfig's `KeypairIDs["kubernetes-ca"]`.
    pub keypair_id: &'a str,
    /// kube_env's `CACertificates`: the certificates must chain to one of them.
    pub ca_bundle: &'a str,
    /// The spec runs kube-proxy: ask for its certificate too.
    pub kube_proxy: bool,
}

/// What [`credentials`] did.
#[derive(Debug)]
pub enum Credentials {
    /// New certificates, checked, for keys made on the node.
    Issued(NewCredentials),
    /// The node holds good ones; nothing was asked.
    Held,
    /// 409: registered already; the credentials on disk stay as they are.
    Registered { server: String },
}

/// Asks kops-controller for the worker's certificates unless the node holds good ones.
pub async fn credentials(
    client: &ControllerClient,
    signer: &StsSigner,
    wanted: &Wanted<'_>,
) -> Result<Credentials, BootstrapError> {
    if shim_source::holds_good_credentials(wanted.root) {
        return Ok(Credentials::Held);
    }
    let file_error = |e: shim_source::ShimSourceError| BootstrapError::Keys(e.to_string());
    let client_key =
        shim_source::load_or_generate(wanted.root, shim_source::CLIENT_KEY).map_err(file_error)?;
    let serving_key =
        shim_source::load_or_generate(wanted.root, shim_source::SERVING_KEY).map_err(file_error)?;
    let kube_proxy_key = shim_source::generate(shim_source::KUBE_PROXY_KEY).map_err(file_error)?;
    let mut keys = vec![(KUBELET, &client_key), (KUBELET_SERVER, &serving_key)];
    if wanted.kube_proxy {
        keys.push((KUBE_PROXY, &kube_proxy_key));
    }
    let request = BootstrapRequest::certificates(&keys, wanted.keypair_id);
    let response = match client.bootstrap(signer, &request).await? {
        Answer::AlreadyRegistered { server } => {
            tracing::info!(
                server,
                "kops-controller: registered already (409); keeping the credentials on disk"
            );
            return Ok(Credentials::Registered { server });
        }
        Answer::Bootstrapped(response) => response,
    };
    let issued = |name: &str, key: &PrivateKey| -> Result<String, BootstrapError> {
        let pem = response
            .certs
            .get(name)
            .ok_or_else(|| BootstrapError::Answer(format!("no {name:?} certificate")))?;
        check(name, pem, key, wanted.ca_bundle)?;
        Ok(pem.trim_end().to_owned() + "\n")
    };
    let client_cert = issued(KUBELET, &client_key)?;
    let serving_cert = issued(KUBELET_SERVER, &serving_key)?;
    let kube_proxy_cert = if wanted.kube_proxy {
        issued(KUBE_PROXY, &kube_proxy_key)?
    } else {
        String::new()
    };
    Ok(Credentials::Issued(NewCredentials {
        ca_bundle: wanted.ca_bundle.to_owned(),
        client_pem: format!("{client_cert}{}", client_key.to_pem()),
        serving_pem: format!("{serving_cert}{}", serving_key.to_pem()),
        client_cert,
        serving_cert,
        kube_proxy_cert,
        kube_proxy_key: kube_proxy_key.to_pem(),
    }))
}

/// The certificate is for our key and from the cluster CA.
fn check(name: &str, pem: &str, key: &PrivateKey, ca_bundle: &str) -> Result<(), BootstrapError> {
    let what = format!("the {name:?} certificate");
    let info =
        CertificateInfo::from_pem(&what, pem).map_err(|e| BootstrapError::Answer(e.to_string()))?;
    if info.public_key != key.public_key() {
        return Err(BootstrapError::Answer(format!(
            "{what} is not for the key this node made"
        )));
    }
    verify_issued_by(&what, pem, ca_bundle).map_err(|e| BootstrapError::Answer(e.to_string()))
}

fn under(root: &Path, node_path: &str) -> PathBuf {
    root.join(node_path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodewright_shim::pki::{CertificateAuthority, KeyAlgorithm, Profile, Subject, Usage};
    use std::time::Duration;

    fn issue(ca: &CertificateAuthority, key: &PrivateKey) -> String {
        ca.issue(
            &key.public_key(),
            &Profile {
                subject: Subject::new("system:kube-proxy", &[]),
                dns_names: vec![],
                ips: vec![],
                usage: Usage::Client,
                validity: Duration::from_secs(3600),
                backdate: Duration::from_secs(60),
            },
        )
        .unwrap()
        .pem
    }

    #[test]
    fn a_certificate_must_be_for_our_key_and_from_the_ca() {
        let (ca, _) =
            CertificateAuthority::create("kubernetes-ca", Duration::from_secs(3600)).unwrap();
        let (other, _) =
            CertificateAuthority::create("kubernetes-ca", Duration::from_secs(3600)).unwrap();
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let stranger = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let bundle = format!("{}{}", other.cert_pem(), ca.cert_pem());
        check("kube-proxy", &issue(&ca, &key), &key, &bundle).unwrap();
        let error = check("kube-proxy", &issue(&ca, &stranger), &key, &bundle).unwrap_err();
        assert!(error.to_string().contains("not for the key"), "{error}");
        let error = check("kube-proxy", &issue(&ca, &key), &key, other.cert_pem()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn the_kept_nodeup_config_is_issued_then_kept() {
        let fresh = kept_nodeup_config(&NodeupConfigBytes {
            bytes: b"a".to_vec(),
            registered: None,
        });
        assert_eq!(fresh.file.path.as_str(), KEPT_NODEUP_CONFIG);
        assert!(matches!(fresh.origin, Origin::Issued { .. }));
        let kept = kept_nodeup_config(&NodeupConfigBytes {
            bytes: b"a".to_vec(),
            registered: Some("s".into()),
        });
        assert_eq!(kept.origin, Origin::Kept);
    }
}
