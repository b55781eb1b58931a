//! The cluster's PKI in the state store (layout: docs/pki.md): the cluster CA, the
//! front-proxy (aggregation layer) CA, the etcd CA, the service-account signing pair and
//! the encryption config for secrets at rest.
//!
//! [`Pki::generate`] makes them (the test harness uses it too); [`init`] creates what the
//! store lacks and never overwrites anything. Objects come in sets (a CA's certificate
//! and key, the service-account pair): a set is created only when none of it exists, key
//! first, so that a run that fails or loses a race half-way never leaves a certificate
//! beside a key of another pair.

use std::time::Duration;

use base64::Engine;
use nodewright_shim::pki::{CertificateAuthority, KeyAlgorithm, PrivateKey, encode_pem};

use crate::store::{Created, Store, StoreError};

/// CAs are valid this long; the node certificates they sign are re-issued well before.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating the PKI: {0}")]
    Generate(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the state store holds {present} but not {missing}: a half-made set; it is never overwritten, so remove {present} (if nothing uses it yet) or restore {missing}, then run pki init again"
    )]
    HalfMade { present: String, missing: String },
    #[error("{object} in the state store is not usable: {detail}")]
    Invalid { object: String, detail: String },
}

/// A CA as PEM texts.
#[derive(Clone)]
pub struct CaPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CaPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaPair").finish_non_exhaustive()
    }
}

impl CaPair {
    fn generate(common_name: &str) -> Result<Self, PkiError> {
        let (ca, key) = CertificateAuthority::create(common_name, CA_VALIDITY)
            .map_err(|e| PkiError::Generate(e.to_string()))?;
        Ok(Self {
            cert_pem: ca.cert_pem().to_owned(),
            key_pem: key.to_pem(),
        })
    }

    pub fn authority(&self) -> Result<CertificateAuthority, PkiError> {
        CertificateAuthority::from_pem("CA", &self.cert_pem, &self.key_pem)
            .map_err(|e| PkiError::Generate(e.to_string()))
    }
}

/// Every object of the PKI store.
#[derive(Clone)]
pub struct Pki {
    pub cluster: CaPair,
    pub front_proxy: CaPair,
    pub etcd: CaPair,
    pub sa_key: String,
    pub sa_pub: String,
    pub encryption_config: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

/// One set of objects created together: (name, content), the secret ones first.
pub struct ObjectSet {
    pub objects: Vec<(&'static str, String)>,
}

impl Pki {
    /// A new PKI: three CAs, the service-account pair, and an encryption config with a
    /// 32-byte key from the operating system's random source.
    pub fn generate() -> Result<Self, PkiError> {
        let sa = PrivateKey::generate(KeyAlgorithm::EcdsaP256)
            .map_err(|e| PkiError::Generate(e.to_string()))?;
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret)
            .map_err(|_| PkiError::Generate("no random bytes from the OS".to_owned()))?;
        Ok(Self {
            cluster: CaPair::generate("kubernetes-ca")?,
            front_proxy: CaPair::generate("front-proxy-ca")?,
            etcd: CaPair::generate("etcd-ca")?,
            sa_key: sa.to_pem(),
            sa_pub: encode_pem("PUBLIC KEY", sa.public_key().spki_der()),
            encryption_config: encryption_config(&secret),
        })
    }

    /// The sets, in the order they are created; within a set the key comes first.
    pub fn sets(&self) -> Vec<ObjectSet> {
        let pair = |key: &'static str, cert: &'static str, ca: &CaPair| ObjectSet {
            objects: vec![(key, ca.key_pem.clone()), (cert, ca.cert_pem.clone())],
        };
        vec![
            pair("ca.key", "ca.crt", &self.cluster),
            pair(
                "front-proxy-ca.key",
                "front-proxy-ca.crt",
                &self.front_proxy,
            ),
            pair("etcd-ca.key", "etcd-ca.crt", &self.etcd),
            ObjectSet {
                objects: vec![
                    ("sa.key", self.sa_key.clone()),
                    ("sa.pub", self.sa_pub.clone()),
                ],
            },
            ObjectSet {
                objects: vec![("encryption-config.yaml", self.encryption_config.clone())],
            },
        ]
    }

    /// (object name, content) in the store's layout.
    pub fn objects(&self) -> Vec<(&'static str, String)> {
        self.sets().into_iter().flat_map(|s| s.objects).collect()
    }
}

/// `kind: EncryptionConfiguration` encrypting secrets with secretbox (XSalsa20-Poly1305,
/// Kubernetes' recommendation among the local providers); `identity` last so secrets
/// written before encryption was on stay readable.
fn encryption_config(secret: &[u8; 32]) -> String {
    let key = base64::engine::general_purpose::STANDARD.encode(secret);
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\n\
         kind: EncryptionConfiguration\n\
         resources:\n  - resources: [secrets]\n    providers:\n      \
         - secretbox:\n          keys:\n            - name: key1\n              \
         secret: {key}\n      - identity: {{}}\n"
    )
}

/// What `init` did with each object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `s3://...` URLs written now.
    pub created: Vec<String>,
    /// URLs that were there already (left as they were).
    pub existing: Vec<String>,
    /// The cluster CA's certificate as the store holds it after the run.
    pub ca_cert_pem: String,
}

/// Creates, under `prefix` (ending in `/`), every PKI object the store lacks; never
/// overwrites one. Existing CA pairs are checked (a certificate that is not a CA, or a
/// key that is not its certificate's, is an error).
pub async fn init(store: &Store, prefix: &str, pki: &Pki) -> Result<Report, PkiError> {
    let url = |name: &str| format!("s3://{}/{prefix}{name}", store.bucket);
    let mut report = Report {
        created: Vec::new(),
        existing: Vec::new(),
        ca_cert_pem: String::new(),
    };
    for set in pki.sets() {
        let mut present = Vec::new();
        for (name, _) in &set.objects {
            if store.get(&format!("{prefix}{name}")).await?.is_some() {
                present.push(*name);
            }
        }
        if present.len() == set.objects.len() {
            report
                .existing
                .extend(set.objects.iter().map(|(name, _)| url(name)));
            continue;
        }
        if !present.is_empty() {
            let missing: Vec<&str> = set
                .objects
                .iter()
                .map(|(name, _)| *name)
                .filter(|name| !present.contains(name))
                .collect();
            return Err(PkiError::HalfMade {
                present: present
                    .iter()
                    .map(|n| url(n))
                    .collect::<Vec<_>>()
                    .join(", "),
                missing: missing
                    .iter()
                    .map(|n| url(n))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        for (i, (name, content)) in set.objects.iter().enumerate() {
            let key = format!("{prefix}{name}");
            match store
                .create(&key, content.as_bytes(), content_type(name))
                .await?
            {
                Created::Written => report.created.push(url(name)),
                // Another run made this set meanwhile: its first object is theirs, so
                // the rest must be too.
                Created::Existed if i == 0 => {
                    report
                        .existing
                        .extend(set.objects.iter().map(|(name, _)| url(name)));
                    break;
                }
                Created::Existed => {
                    return Err(PkiError::HalfMade {
                        present: url(name),
                        missing: format!("the {} written by this run", url(set.objects[0].0)),
                    });
                }
            }
        }
    }
    // What the nodes will read: check the CA pairs load, and hand back the cluster CA.
    for (key, cert) in [
        ("ca.key", "ca.crt"),
        ("front-proxy-ca.key", "front-proxy-ca.crt"),
        ("etcd-ca.key", "etcd-ca.crt"),
    ] {
        let read = |name: &'static str| async move {
            let bytes = store
                .get(&format!("{prefix}{name}"))
                .await?
                .unwrap_or_default();
            String::from_utf8(bytes).map_err(|e| PkiError::Invalid {
                object: url(name),
                detail: e.to_string(),
            })
        };
        let (key_pem, cert_pem) = (read(key).await?, read(cert).await?);
        CertificateAuthority::from_pem(&url(cert), &cert_pem, &key_pem).map_err(|e| {
            PkiError::Invalid {
                object: url(cert),
                detail: e.to_string(),
            }
        })?;
        if cert == "ca.crt" {
            report.ca_cert_pem = cert_pem;
        }
    }
    Ok(report)
}

fn content_type(name: &str) -> &'static str {
    if name.ends_with(".yaml") {
        "application/yaml"
    } else {
        "application/x-pem-file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pki_is_complete_and_consistent() {
        let pki = Pki::generate().unwrap();
        let names: Vec<&str> = pki.objects().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "ca.key",
                "ca.crt",
                "front-proxy-ca.key",
                "front-proxy-ca.crt",
                "etcd-ca.key",
                "etcd-ca.crt",
                "sa.key",
                "sa.pub",
                "encryption-config.yaml"
            ]
        );
        for ca in [&pki.cluster, &pki.front_proxy, &pki.etcd] {
            ca.authority().unwrap();
        }
        assert!(pki.sa_key.contains("BEGIN PRIVATE KEY"));
        assert!(pki.sa_pub.contains("BEGIN PUBLIC KEY"));
        let config: serde_json::Value = yaml_serde::from_str(&pki.encryption_config).unwrap();
        assert_eq!(config["kind"], "EncryptionConfiguration");
        let secret = config["resources"][0]["providers"][0]["secretbox"]["keys"][0]["secret"]
            .as_str()
            .unwrap();
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret)
            .unwrap();
        assert_eq!(key.len(), 32);
        // Two PKIs share nothing.
        let other = Pki::generate().unwrap();
        assert_ne!(other.encryption_config, pki.encryption_config);
        assert_ne!(other.cluster.cert_pem, pki.cluster.cert_pem);
    }
}
