//! The cluster's PKI from the state store (control-plane nodes only): the three CAs
//! with their keys, the service-account key pair and the encryption-at-rest config.
//! Everything is fetched and checked before anything is written; an error names the
//! object (its s3:// or file:// URL).

use std::time::Duration;

use aws_config::SdkConfig;
use nodewright_shim::pki::{CertificateAuthority, CertificateInfo, PrivateKey, check_pem_block};

use super::store::{StoreError, fetch};
use crate::error::{Classified, ErrorKind};
use crate::retry::RetryError;
use crate::runbook::Topic;
use crate::spec::{PkiSpec, SpecLocation};

/// The objects under the store prefix (docs/pki.md).
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const FRONT_PROXY_CA_CERT: &str = "front-proxy-ca.crt";
pub const FRONT_PROXY_CA_KEY: &str = "front-proxy-ca.key";
pub const ETCD_CA_CERT: &str = "etcd-ca.crt";
pub const ETCD_CA_KEY: &str = "etcd-ca.key";
pub const SA_KEY: &str = "sa.key";
pub const SA_PUB: &str = "sa.pub";
pub const ENCRYPTION_CONFIG: &str = "encryption-config.yaml";

pub const OBJECTS: [&str; 9] = [
    CA_CERT,
    CA_KEY,
    FRONT_PROXY_CA_CERT,
    FRONT_PROXY_CA_KEY,
    ETCD_CA_CERT,
    ETCD_CA_KEY,
    SA_KEY,
    SA_PUB,
    ENCRYPTION_CONFIG,
];

#[derive(Debug, thiserror::Error)]
pub enum PkiSourceError {
    #[error("{0}")]
    Store(Box<RetryError<StoreError>>),
    /// The object is there but unusable.
    #[error("{location}: {detail}")]
    Invalid { location: String, detail: String },
}

/// Fetching is classified as the store's reads are; an unusable object is refused input.
impl Classified for PkiSourceError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Store(e) => e.kind(),
            Self::Invalid { .. } => ErrorKind::InvalidInput,
        }
    }
    fn topic(&self) -> Option<Topic> {
        match self {
            Self::Store(e) => e.topic(),
            Self::Invalid { .. } => Some(Topic::StateStoreUnreachable),
        }
    }
}

/// A CA as read from the store: its certificate and key (both PEM, as stored) and the
/// issuer built from them.
pub struct StoreCa {
    pub cert_pem: String,
    /// Secret: never logged.
    pub key_pem: String,
    pub authority: CertificateAuthority,
    /// Where the certificate came from, for messages.
    pub cert_location: String,
}

impl std::fmt::Debug for StoreCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCa")
            .field("cert", &self.cert_location)
            .finish_non_exhaustive()
    }
}

/// Everything a control-plane node needs from the store. The `Debug` form shows no
/// secret.
pub struct PkiMaterial {
    pub cluster: StoreCa,
    pub front_proxy: StoreCa,
    pub etcd: StoreCa,
    pub sa_key: String,
    pub sa_pub: String,
    pub encryption_config: String,
}

impl std::fmt::Debug for PkiMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PkiMaterial")
            .field("cluster", &self.cluster)
            .field("front_proxy", &self.front_proxy)
            .field("etcd", &self.etcd)
            .finish_non_exhaustive()
    }
}

/// Fetches every object (concurrently, each with the store's retry rules) and checks
/// them. `aws` is needed for an `s3://` store only.
pub async fn fetch_material(
    pki: &PkiSpec,
    aws: Option<&SdkConfig>,
    deadline: Duration,
) -> Result<PkiMaterial, PkiSourceError> {
    let locations: Vec<SpecLocation> = OBJECTS
        .iter()
        .map(|name| {
            pki.object(name).map_err(|e| PkiSourceError::Invalid {
                location: format!("{}{name}", pki.store),
                detail: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    let fetched = futures_util::future::join_all(
        locations
            .iter()
            .map(|location| fetch(location, aws, deadline)),
    )
    .await;
    let mut texts = Vec::with_capacity(OBJECTS.len());
    for (location, bytes) in locations.iter().zip(fetched) {
        let bytes = bytes.map_err(|e| PkiSourceError::Store(Box::new(e)))?;
        let text = String::from_utf8(bytes).map_err(|_| PkiSourceError::Invalid {
            location: location.to_string(),
            detail: "is not text (PEM or YAML expected)".to_owned(),
        })?;
        texts.push((location.to_string(), text));
    }
    check_material(&texts)
}

/// Checks the fetched objects, given as (location, text) in [`OBJECTS`] order.
pub fn check_material(texts: &[(String, String)]) -> Result<PkiMaterial, PkiSourceError> {
    let text = |name: &str| {
        let i = OBJECTS.iter().position(|o| *o == name).unwrap_or(0);
        (&texts[i].0, &texts[i].1)
    };
    let ca = |cert: &str, key: &str| {
        let (cert_location, cert_pem) = text(cert);
        let (key_location, key_pem) = text(key);
        load_ca(cert_location, cert_pem, key_location, key_pem)
    };
    let (sa_key_location, sa_key) = text(SA_KEY);
    check_pem_block(sa_key_location, sa_key, "PRIVATE KEY")
        .map_err(|e| invalid(sa_key_location, e))?;
    let (sa_pub_location, sa_pub) = text(SA_PUB);
    check_pem_block(sa_pub_location, sa_pub, "PUBLIC KEY")
        .map_err(|e| invalid(sa_pub_location, e))?;
    let (config_location, encryption_config) = text(ENCRYPTION_CONFIG);
    check_encryption_config(encryption_config).map_err(|e| invalid(config_location, e))?;
    Ok(PkiMaterial {
        cluster: ca(CA_CERT, CA_KEY)?,
        front_proxy: ca(FRONT_PROXY_CA_CERT, FRONT_PROXY_CA_KEY)?,
        etcd: ca(ETCD_CA_CERT, ETCD_CA_KEY)?,
        sa_key: sa_key.clone(),
        sa_pub: sa_pub.clone(),
        encryption_config: encryption_config.clone(),
    })
}

fn invalid(location: &str, detail: impl std::fmt::Display) -> PkiSourceError {
    PkiSourceError::Invalid {
        location: location.to_owned(),
        detail: detail.to_string(),
    }
}

/// A CA: its certificate must parse and say CA:TRUE, its key must parse and be the
/// certificate's. Errors name the object at fault, without its content.
fn load_ca(
    cert_location: &str,
    cert_pem: &str,
    key_location: &str,
    key_pem: &str,
) -> Result<StoreCa, PkiSourceError> {
    let info = CertificateInfo::from_pem("the object", cert_pem)
        .map_err(|e| invalid(cert_location, format!("not a PEM certificate ({e})")))?;
    if !info.is_ca {
        return Err(invalid(
            cert_location,
            "is not a CA certificate (basicConstraints CA:TRUE is missing)",
        ));
    }
    // Key errors must not echo the key: only say what is wrong.
    let key = PrivateKey::from_pem("the object", key_pem)
        .map_err(|_| invalid(key_location, "not a PEM private key (PKCS#8 expected)"))?;
    if key.public_key() != info.public_key {
        return Err(invalid(
            key_location,
            format!("does not match the CA certificate {cert_location} (a different key pair)"),
        ));
    }
    let authority = CertificateAuthority::from_pem(cert_location, cert_pem, key_pem)
        .map_err(|e| invalid(cert_location, e))?;
    Ok(StoreCa {
        cert_pem: cert_pem.to_owned(),
        key_pem: key_pem.to_owned(),
        authority,
        cert_location: cert_location.to_owned(),
    })
}

/// The API server's `--encryption-provider-config`: a YAML EncryptionConfiguration.
fn check_encryption_config(text: &str) -> Result<(), String> {
    let value: yaml_serde::Value =
        yaml_serde::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    match value.get("kind").and_then(|k| k.as_str()) {
        Some("EncryptionConfiguration") => Ok(()),
        other => Err(format!("kind is {other:?}, not EncryptionConfiguration")),
    }
}
