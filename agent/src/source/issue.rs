//! The certificates phase of a control-plane node: the certificates the model says it
//! needs become credential files, keeping every certificate and key on disk that is
//! still good and issuing the rest from the CAs read from the state store, beside the
//! store's own objects (the CA certificates, the service-account keys, the encryption
//! config). The model then renders them as ordinary desired files: written atomically
//! with their modes, recorded in the state (so `verify`, `repair`, `reset` know them),
//! and a changed input of every service that lists them (so exactly those restart).
//!
//! New keys and certificates only live in memory until `apply` writes them; `plan`
//! shows `issue <path>: <why>` and writes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use nodewright_shim::pki::{
    CertificateInfo, KeyAlgorithm, PrivateKey, Profile, Usage, verify_issued_by,
};
use time::OffsetDateTime;

use super::pki::{PkiMaterial, StoreCa};
use crate::error::{Classified, ErrorKind};
use crate::host::Host;
use crate::host::fs as hostfs;
use crate::model::pki::{CERT_MODE, DesiredCertificate, KEY_MODE, Signer};
use crate::model::pki_paths as paths;
use crate::model::{CredentialFile, Origin, fixed_path};
use crate::runbook::Topic;

/// Who issues these, for messages.
const ISSUER: &str = "controlPlane.pki";
/// Where the store's objects come from, for messages.
const STORE: &str = "controlPlane.pki's store";

/// A certificate closer than this to its end is re-issued.
pub const RENEW_WITHIN: Duration = Duration::from_secs(30 * 86400);

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("{path}: {detail}")]
    Path { path: String, detail: String },
    #[error("issuing {path}: {detail}")]
    Issue { path: String, detail: String },
}

/// A certificate that cannot be issued, or a spec at odds with the store: refused
/// input.
impl Classified for IssueError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
    fn topic(&self) -> Option<Topic> {
        Some(Topic::InvalidSpec)
    }
}

/// What the phase produced: the files, and the decision for each certificate.
#[derive(Debug)]
pub struct Settled {
    pub files: Vec<CredentialFile>,
    pub decisions: Vec<(String, Decision)>,
}

/// What the step decided for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Keep,
    /// Issue a new certificate; `new_key` when the key on disk is unusable too.
    Issue {
        why: String,
        new_key: bool,
    },
}

/// The store's objects, then every certificate in `wanted` with its key. `spec_ca` is
/// the spec's `cluster.caCertificate`, if it has one: it must be the store's CA.
pub fn settle(
    wanted: &[DesiredCertificate],
    spec_ca: Option<&str>,
    material: &PkiMaterial,
    host: &Host,
    now: OffsetDateTime,
) -> Result<Settled, IssueError> {
    let mut files = store_files(spec_ca, material)?;
    let mut decisions = Vec::new();
    for want in wanted {
        let ca = ca_for(material, want.signer);
        let cert_text = read_text(host, want.cert_path.as_str())?;
        let key_text = read_text(host, want.key_path.as_str())?;
        let decision = decide(want, ca, cert_text.as_deref(), key_text.as_deref(), now);
        let (cert_pem, key_pem, cert_why, key_why) = match &decision {
            Decision::Keep => (
                cert_text.unwrap_or_default(),
                key_text.unwrap_or_default(),
                None,
                None,
            ),
            Decision::Issue { why, new_key } => {
                let key = if *new_key {
                    PrivateKey::generate(want.key_algorithm)
                } else {
                    PrivateKey::from_pem(want.key_path.as_str(), key_text.as_deref().unwrap_or(""))
                }
                .map_err(|e| IssueError::Issue {
                    path: want.key_path.to_string(),
                    detail: e.to_string(),
                })?;
                let issued = ca
                    .authority
                    .issue(&key.public_key(), &profile(want))
                    .map_err(|e| IssueError::Issue {
                        path: want.cert_path.to_string(),
                        detail: e.to_string(),
                    })?;
                tracing::info!(path = %want.cert_path, reason = %why, "issuing a certificate");
                let (key_pem, key_why) = if *new_key {
                    (
                        key.to_pem(),
                        Some(format!("new key for {}: {why}", want.cert_path)),
                    )
                } else {
                    (key_text.unwrap_or_default(), None)
                };
                (issued.pem, key_pem, Some(why.clone()), key_why)
            }
        };
        let issued = || Origin::Issued {
            by: ISSUER.to_owned(),
        };
        files.push(CredentialFile::new(
            want.key_path.as_str(),
            key_pem,
            KEY_MODE,
            true,
            key_why,
            issued(),
        ));
        files.push(CredentialFile::new(
            want.cert_path.as_str(),
            cert_pem,
            want.cert_mode,
            false,
            cert_why,
            issued(),
        ));
        decisions.push((want.cert_path.to_string(), decision));
    }
    Ok(Settled { files, decisions })
}

/// The store's objects as the control plane's files. The cluster CA certificate may
/// also come from the spec (`cluster.caCertificate`): then both must be the same.
fn store_files(
    spec_ca: Option<&str>,
    material: &PkiMaterial,
) -> Result<Vec<CredentialFile>, IssueError> {
    if let Some(spec_ca) = spec_ca
        && !super::shim::same_certificates(spec_ca, &material.cluster.cert_pem)
    {
        return Err(IssueError::Path {
            path: paths::CA_CERT.to_owned(),
            detail: format!(
                "cluster.caCertificate in the spec differs from the cluster CA in the state store ({}); refusing both",
                material.cluster.cert_location
            ),
        });
    }
    let objects: [(&str, &str, u32, bool); 7] = [
        (paths::CA_CERT, &material.cluster.cert_pem, CERT_MODE, false),
        // kube-controller-manager signs CSRs with it.
        (paths::CA_KEY, &material.cluster.key_pem, KEY_MODE, true),
        (
            paths::FRONT_PROXY_CA_CERT,
            &material.front_proxy.cert_pem,
            CERT_MODE,
            false,
        ),
        (
            paths::ETCD_CA_CERT,
            &material.etcd.cert_pem,
            CERT_MODE,
            false,
        ),
        (paths::SA_KEY, &material.sa_key, KEY_MODE, true),
        (paths::SA_PUB, &material.sa_pub, CERT_MODE, false),
        (
            paths::ENCRYPTION_CONFIG,
            &material.encryption_config,
            KEY_MODE,
            true,
        ),
    ];
    Ok(objects
        .into_iter()
        .map(|(path, text, mode, secret)| {
            let origin = if path == paths::CA_CERT {
                Origin::Replaces {
                    by: STORE.to_owned(),
                }
            } else {
                Origin::Issued {
                    by: STORE.to_owned(),
                }
            };
            CredentialFile::new(path, text.to_owned(), mode, secret, None, origin)
        })
        .collect())
}

fn ca_for(material: &PkiMaterial, signer: Signer) -> &StoreCa {
    match signer {
        Signer::Cluster => &material.cluster,
        Signer::FrontProxy => &material.front_proxy,
        Signer::Etcd => &material.etcd,
    }
}

fn read_text(host: &Host, path: &str) -> Result<Option<String>, IssueError> {
    let real = host.path(&fixed_path(path));
    let bytes = hostfs::read_if_present(&real).map_err(|e| IssueError::Path {
        path: path.to_owned(),
        detail: format!("reading: {e}"),
    })?;
    // Bytes that are not text are as good as missing: re-issued.
    Ok(bytes.and_then(|b| String::from_utf8(b).ok()))
}

fn profile(want: &DesiredCertificate) -> Profile {
    Profile {
        subject: want.subject.clone(),
        dns_names: want.dns_names.clone(),
        ips: want.ips.clone(),
        usage: want.usage,
        validity: Duration::from_secs(u64::from(want.validity_days) * 86400),
        backdate: Duration::from_secs(u64::from(want.backdate_minutes) * 60),
    }
}

/// Whether the certificate and key on disk still do, and if not, why. Pure.
pub fn decide(
    want: &DesiredCertificate,
    ca: &StoreCa,
    cert: Option<&str>,
    key: Option<&str>,
    now: OffsetDateTime,
) -> Decision {
    let issue = |why: String, new_key: bool| Decision::Issue { why, new_key };
    let key = match key.map(|k| PrivateKey::from_pem(want.key_path.as_str(), k)) {
        None => return issue("missing".to_owned(), true),
        Some(Err(_)) => return issue("the key on disk is unreadable".to_owned(), true),
        Some(Ok(key)) => key,
    };
    if key.algorithm() != Some(want.key_algorithm) {
        let had = key
            .algorithm()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "another algorithm".to_owned());
        return issue(
            format!("key algorithm changed ({had} → {})", want.key_algorithm),
            true,
        );
    }
    let Some(cert) = cert else {
        return issue("missing".to_owned(), false);
    };
    let info = match CertificateInfo::from_pem(want.cert_path.as_str(), cert) {
        Ok(info) => info,
        Err(_) => return issue("the certificate on disk is unreadable".to_owned(), false),
    };
    if info.public_key != key.public_key() {
        return issue("the certificate does not match the key".to_owned(), false);
    }
    if verify_issued_by(want.cert_path.as_str(), cert, &ca.cert_pem).is_err() {
        return issue(
            format!(
                "signer changed (not signed by the current {})",
                want.signer.as_str()
            ),
            false,
        );
    }
    let left = info.not_after - now;
    if left < time::Duration::try_from(RENEW_WITHIN).unwrap_or(time::Duration::ZERO) {
        return issue(
            format!("expires in {} days (renewed within 30)", left.whole_days()),
            false,
        );
    }
    if info.subject != want.subject {
        return issue(
            format!("subject changed ({} → {})", info.subject, want.subject),
            false,
        );
    }
    let have = sans(&info.dns_names, &info.ips);
    let wanted = sans(&want.dns_names, &want.ips);
    if have != wanted {
        let mut delta: Vec<String> = wanted.difference(&have).map(|s| format!("+{s}")).collect();
        delta.extend(have.difference(&wanted).map(|s| format!("-{s}")));
        return issue(format!("SANs changed ({})", delta.join(", ")), false);
    }
    let (client, server) = match want.usage {
        Usage::Client => (true, false),
        Usage::Server => (false, true),
        Usage::ClientAndServer => (true, true),
    };
    if (info.client_auth, info.server_auth) != (client, server) {
        return issue("extended key usages changed".to_owned(), false);
    }
    Decision::Keep
}

fn sans(dns: &[String], ips: &[std::net::IpAddr]) -> BTreeSet<String> {
    dns.iter()
        .cloned()
        .chain(ips.iter().map(ToString::to_string))
        .collect()
}

/// Whether `algorithm` is what a key on disk has (for tests and status).
pub fn key_algorithm_of(pem: &str) -> Option<KeyAlgorithm> {
    PrivateKey::from_pem("key", pem).ok()?.algorithm()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::pki::desired_certificates;
    use crate::model::{Facts, test_spec_for};
    use nodewright_shim::pki::{CertificateAuthority, Subject};

    fn store_ca(name: &str) -> StoreCa {
        let (ca, key) =
            CertificateAuthority::create(name, Duration::from_secs(3650 * 86400)).unwrap();
        let cert_pem = ca.cert_pem().to_owned();
        StoreCa {
            authority: CertificateAuthority::from_pem(name, &cert_pem, &key.to_pem()).unwrap(),
            cert_pem,
            key_pem: key.to_pem(),
            cert_location: format!("file:///store/{name}.crt"),
        }
    }

    fn apiserver() -> DesiredCertificate {
        let spec = test_spec_for(
            "control-plane",
            "controlPlane:\n  pki:\n    store: file:///store/\n",
        );
        desired_certificates(&spec, &Facts::example())
            .unwrap()
            .into_iter()
            .next()
            .unwrap()
    }

    fn issue_with(ca: &StoreCa, want: &DesiredCertificate, days: u32) -> (String, String) {
        let key = PrivateKey::generate(want.key_algorithm).unwrap();
        let mut p = profile(want);
        p.validity = Duration::from_secs(u64::from(days) * 86400);
        let issued = ca.authority.issue(&key.public_key(), &p).unwrap();
        (issued.pem, key.to_pem())
    }

    fn why(d: Decision) -> String {
        match d {
            Decision::Issue { why, .. } => why,
            Decision::Keep => "keep".to_owned(),
        }
    }

    #[test]
    fn keeps_a_good_pair_and_says_why_it_re_issues_the_others() {
        let ca = store_ca("kubernetes-ca");
        let want = apiserver();
        let now = OffsetDateTime::now_utc();
        let (cert, key) = issue_with(&ca, &want, 365);
        assert_eq!(
            decide(&want, &ca, Some(&cert), Some(&key), now),
            Decision::Keep
        );
        assert_eq!(
            decide(&want, &ca, None, None, now),
            Decision::Issue {
                why: "missing".into(),
                new_key: true
            }
        );
        assert_eq!(
            decide(&want, &ca, None, Some(&key), now),
            Decision::Issue {
                why: "missing".into(),
                new_key: false
            }
        );
        assert!(why(decide(&want, &ca, Some("garbage"), Some(&key), now)).contains("unreadable"));
        // 10 days from expiry.
        let (short, short_key) = issue_with(&ca, &want, 10);
        assert!(
            why(decide(&want, &ca, Some(&short), Some(&short_key), now))
                .starts_with("expires in 9 days")
                || why(decide(&want, &ca, Some(&short), Some(&short_key), now))
                    .starts_with("expires in 10 days")
        );
        // Another CA signed it.
        let other = store_ca("other-ca");
        let (foreign, foreign_key) = issue_with(&other, &want, 365);
        assert!(
            why(decide(&want, &ca, Some(&foreign), Some(&foreign_key), now))
                .contains("signer changed")
        );
        // Cert of another key.
        assert!(
            why(decide(&want, &ca, Some(&cert), Some(&foreign_key), now))
                .contains("does not match the key")
        );
        // A new load-balancer IP.
        let mut more = want.clone();
        more.ips.push("10.0.1.7".parse().unwrap());
        assert_eq!(
            why(decide(&more, &ca, Some(&cert), Some(&key), now)),
            "SANs changed (+10.0.1.7)"
        );
        let mut renamed = want.clone();
        renamed.subject = Subject::new("kube-apiserver-2", &[]);
        assert!(
            why(decide(&renamed, &ca, Some(&cert), Some(&key), now)).starts_with("subject changed")
        );
        let mut rsa = want.clone();
        rsa.key_algorithm = KeyAlgorithm::Rsa2048;
        assert_eq!(
            decide(&rsa, &ca, Some(&cert), Some(&key), now),
            Decision::Issue {
                why: "key algorithm changed (ecdsa-p256 → rsa-2048)".into(),
                new_key: true
            }
        );
        let mut client = want.clone();
        client.usage = Usage::Client;
        assert!(why(decide(&client, &ca, Some(&cert), Some(&key), now)).contains("usages"));
    }
}
