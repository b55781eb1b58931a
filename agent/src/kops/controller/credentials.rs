//! The worker's credentials from kops-controller: the kubelet's client certificate, its
//! serving certificate and kube-proxy's client certificate, for keys made on the node.
//!
//! Keys are made here (RSA 2048, as nodeup does) and written (0600) before the request,
//! so a retry after a lost answer reuses them; only their public halves are sent. What
//! comes back is checked (each certificate for our key, from the cluster CA) before it
//! is written beside its key, at the paths the translated spec's kubeconfigs and
//! KubeletConfiguration name. On 409 (the node is registered already) nothing is
//! requested or written: the node keeps what it has.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodewright_shim::client::StsSigner;
use nodewright_shim::pki::{
    CertificateInfo, KeyAlgorithm, PrivateKey, encode_pem, verify_issued_by,
};

use super::protocol::{API_VERSION, BootstrapRequest, BootstrapResponse, NodeConfig};
use super::{Answer, ControllerClient, ControllerError};
use crate::host::fs;
use crate::model::{kube_proxy, kubelet, pki_paths};

/// A certificate replaced at boot when this close to its end.
const RENEW_WITHIN: Duration = Duration::from_secs(86400);

/// Where each certificate kops-controller issues goes: `(name, certificate, key)`.
pub const PAIRS: &[(&str, &str, &str)] = &[
    ("kubelet", kubelet::CLIENT_CERT, kubelet::CLIENT_KEY),
    (
        "kubelet-server",
        pki_paths::KUBELET_SERVING_CERT,
        pki_paths::KUBELET_SERVING_KEY,
    ),
    ("kube-proxy", kube_proxy::CLIENT_CERT, kube_proxy::CLIENT_KEY),
];

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("kops-controller: {0}")]
    Controller(#[from] ControllerError),
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
    #[error("kops-controller's answer: {0}")]
    Answer(String),
}

impl CredentialError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Controller(e) => e.exit_code(),
            Self::File { .. } => crate::bootstrap::exit::APPLY_FAILED,
            Self::Answer(_) => crate::bootstrap::exit::INVALID_INPUT,
        }
    }
}

/// The node's configuration from kops-controller (nodeup's first request: no keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigAnswer {
    Config(NodeConfig),
    /// 409: registered already; use the nodeupconfig kept from the first boot.
    AlreadyBootstrapped,
}

/// Asks for the node's configuration only.
pub async fn fetch_node_config(
    client: &ControllerClient,
    signer: &StsSigner,
) -> Result<ConfigAnswer, CredentialError> {
    let request = BootstrapRequest {
        api_version: API_VERSION.to_owned(),
        certs: BTreeMap::new(),
        keypair_ids: BTreeMap::new(),
        include_node_config: true,
    };
    match client.bootstrap(signer, &request).await? {
        Answer::AlreadyBootstrapped { server } => {
            tracing::info!(server, "kops-controller: this node is registered already (409)");
            Ok(ConfigAnswer::AlreadyBootstrapped)
        }
        Answer::Bootstrapped(BootstrapResponse {
            node_config: Some(config),
            ..
        }) if !config.nodeup_config.is_empty() => Ok(ConfigAnswer::Config(config)),
        Answer::Bootstrapped(_) => Err(CredentialError::Answer(
            "no nodeupConfig although it was asked for".to_owned(),
        )),
    }
}

/// What [`issue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issued {
    /// The certificates were written (paths as in [`PAIRS`]).
    Written,
    /// The node holds good certificates already; nothing was asked.
    Kept,
    /// 409: registered already; the credentials on disk stay as they are.
    AlreadyBootstrapped,
}

/// Makes (or reuses) the node's keys and asks kops-controller for their certificates,
/// unless the node holds good ones. `keypair_ids` is the nodeupconfig's `KeypairIDs`
/// (kops-controller refuses to issue from another CA keypair); `ca_bundle` is the
/// cluster CA the certificates must chain to.
pub async fn issue(
    root: &Path,
    client: &ControllerClient,
    signer: &StsSigner,
    keypair_ids: &BTreeMap<String, String>,
    ca_bundle: &str,
) -> Result<Issued, CredentialError> {
    if holds_good_credentials(root, ca_bundle) {
        return Ok(Issued::Kept);
    }
    let mut keys = BTreeMap::new();
    for (name, _, key_path) in PAIRS {
        keys.insert(*name, load_or_generate(root, key_path)?);
    }
    let request = BootstrapRequest {
        api_version: API_VERSION.to_owned(),
        certs: keys
            .iter()
            .map(|(name, key)| {
                // kops labels any PKIX public key this way.
                ((*name).to_owned(), encode_pem("RSA PUBLIC KEY", key.public_key().spki_der()))
            })
            .collect(),
        keypair_ids: keypair_ids
            .iter()
            .filter(|(name, _)| name.as_str() == "kubernetes-ca")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        include_node_config: false,
    };
    let response = match client.bootstrap(signer, &request).await? {
        Answer::AlreadyBootstrapped { server } => {
            tracing::info!(server, "kops-controller: registered already (409); keeping the credentials on disk");
            return Ok(Issued::AlreadyBootstrapped);
        }
        Answer::Bootstrapped(response) => response,
    };
    let mut checked = Vec::new();
    for (name, cert_path, _) in PAIRS {
        let pem = response
            .certs
            .get(*name)
            .ok_or_else(|| CredentialError::Answer(format!("no {name:?} certificate")))?;
        check(name, pem, &keys[name], ca_bundle)?;
        checked.push((*cert_path, pem.trim_end().to_owned() + "\n"));
    }
    // Written only once all three are good: never a half-issued set.
    for (path, pem) in checked {
        write(root, path, pem.as_bytes(), 0o644)?;
    }
    Ok(Issued::Written)
}

/// The certificate is for our key and from the cluster CA.
fn check(name: &str, pem: &str, key: &PrivateKey, ca_bundle: &str) -> Result<(), CredentialError> {
    let what = format!("the {name} certificate");
    let info = CertificateInfo::from_pem(&what, pem)
        .map_err(|e| CredentialError::Answer(e.to_string()))?;
    if info.public_key != key.public_key() {
        return Err(CredentialError::Answer(format!(
            "{what} is not for the key this node made"
        )));
    }
    verify_issued_by(&what, pem, ca_bundle).map_err(|e| CredentialError::Answer(e.to_string()))
}

/// Whether all three certificates are on disk, from this CA, for their keys, and not
/// about to expire.
pub fn holds_good_credentials(root: &Path, ca_bundle: &str) -> bool {
    PAIRS.iter().all(|(name, cert_path, key_path)| {
        let (Ok(cert), Ok(key)) = (
            std::fs::read_to_string(under(root, cert_path)),
            std::fs::read_to_string(under(root, key_path)),
        ) else {
            return false;
        };
        let Ok(key) = PrivateKey::from_pem(key_path, &key) else {
            return false;
        };
        let Ok(info) = CertificateInfo::from_pem(cert_path, &cert) else {
            return false;
        };
        let left = info.not_after - time::OffsetDateTime::now_utc();
        let fresh = left > time::Duration::try_from(RENEW_WITHIN).unwrap_or(time::Duration::DAY);
        fresh && check(name, &cert, &key, ca_bundle).is_ok()
    })
}

fn load_or_generate(root: &Path, node_path: &str) -> Result<PrivateKey, CredentialError> {
    let path = under(root, node_path);
    if let Ok(pem) = std::fs::read_to_string(&path) {
        match PrivateKey::from_pem(node_path, &pem) {
            Ok(key) => return Ok(key),
            Err(e) => tracing::warn!(path = node_path, error = %e, "replacing an unreadable key"),
        }
    }
    let key = PrivateKey::generate(KeyAlgorithm::Rsa2048).map_err(|e| CredentialError::File {
        path: node_path.to_owned(),
        detail: e.to_string(),
    })?;
    write(root, node_path, key.to_pem().as_bytes(), 0o600)?;
    Ok(key)
}

fn under(root: &Path, node_path: &str) -> PathBuf {
    root.join(node_path.trim_start_matches('/'))
}

fn write(root: &Path, node_path: &str, bytes: &[u8], mode: u32) -> Result<(), CredentialError> {
    let path = under(root, node_path);
    let fail = |e: std::io::Error| CredentialError::File {
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
        // Directories that hold keys stay private.
        let private = d.ends_with("pki") || d.ends_with("kube-proxy");
        fs::create_dir(d, if private { 0o700 } else { 0o755 }, uid, gid).map_err(fail)?;
    }
    fs::write_atomic(&path, bytes, mode, uid, gid).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_requested_certificate_has_a_place() {
        use super::super::protocol::CERTIFICATES;
        let names: Vec<&str> = PAIRS.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(names, CERTIFICATES);
    }
}
