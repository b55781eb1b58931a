//! Keys, certificate signing requests and issuance from a CA.
//!
//! Used on three sides: the worker generates its kubelet keys and CSRs here (the private
//! key never leaves the node), controller-shim issues the kubelet certificates from the
//! cluster CA, and control-plane nodes issue their own certificates locally from the CA
//! in the state store. What a certificate says (subject, SANs, usages, validity) is
//! always chosen by the issuer through a [`Profile`]; a CSR only contributes its public
//! key, and what it asked for is available to the caller for checks.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{what} is not valid PEM: {detail}")]
    Pem { what: String, detail: String },
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error("generating a {algorithm} key: {detail}")]
    Generate { algorithm: String, detail: String },
    #[error("issuing a certificate for {subject}: {detail}")]
    Issue { subject: String, detail: String },
}

fn invalid(what: &str, detail: impl std::fmt::Display) -> PkiError {
    PkiError::Invalid {
        what: what.to_owned(),
        detail: detail.to_string(),
    }
}

/// Key algorithms; ECDSA P-256 unless a spec asks for RSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    #[default]
    EcdsaP256,
    Rsa2048,
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::Rsa2048 => "rsa-2048",
        })
    }
}

/// A private key. Its PEM (PKCS#8) is what goes to disk, with mode 0600.
pub struct PrivateKey {
    pair: KeyPair,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("PrivateKey")
            .field("public_key_sha256", &self.public_key().fingerprint())
            .finish()
    }
}

impl PrivateKey {
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, PkiError> {
        let pair = match algorithm {
            KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyAlgorithm::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
        }
        .map_err(|e| PkiError::Generate {
            algorithm: algorithm.to_string(),
            detail: e.to_string(),
        })?;
        Ok(Self { pair })
    }

    /// Reads a PKCS#8 PEM key (`what` names it in errors, e.g. its path).
    pub fn from_pem(what: &str, pem: &str) -> Result<Self, PkiError> {
        let pair = KeyPair::from_pem(pem).map_err(|e| PkiError::Pem {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(Self { pair })
    }

    pub fn to_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    /// The key's algorithm, when it is one nodewright generates.
    pub fn algorithm(&self) -> Option<KeyAlgorithm> {
        let algorithm = self.pair.algorithm();
        if algorithm == &rcgen::PKCS_ECDSA_P256_SHA256 {
            Some(KeyAlgorithm::EcdsaP256)
        } else if algorithm == &rcgen::PKCS_RSA_SHA256 && self.rsa_bits() == Some(2048) {
            Some(KeyAlgorithm::Rsa2048)
        } else {
            None
        }
    }

    /// The modulus size of an RSA key, from its SubjectPublicKeyInfo.
    fn rsa_bits(&self) -> Option<usize> {
        let spki = rcgen::PublicKeyData::subject_public_key_info(&self.pair);
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).ok()?;
        match info.parsed().ok()? {
            x509_parser::public_key::PublicKey::RSA(rsa) => Some(rsa.key_size()),
            _ => None,
        }
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            spki_der: rcgen::PublicKeyData::subject_public_key_info(&self.pair),
        }
    }

    /// A CSR for this key, asking for `subject` (and optionally SANs).
    pub fn certificate_request(
        &self,
        subject: &Subject,
        dns_names: &[String],
        ips: &[IpAddr],
    ) -> Result<String, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject.to_rcgen();
        params.subject_alt_names = sans(dns_names, ips)
            .map_err(|e| invalid("the requested subject alternative names", e))?;
        params
            .serialize_request(&self.pair)
            .and_then(|csr| csr.pem())
            .map_err(|e| invalid("building a certificate request", e))
    }
}

/// A public key as an X.509 SubjectPublicKeyInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    spki_der: Vec<u8>,
}

impl PublicKey {
    /// A SubjectPublicKeyInfo (DER) of a key type certificates can be issued for:
    /// protocols that send a public key alone (kops-controller's) rather than a CSR.
    pub fn from_spki_der(what: &str, der: &[u8]) -> Result<Self, PkiError> {
        SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| invalid(what, format!("unsupported public key: {e}")))?;
        Ok(Self {
            spki_der: der.to_vec(),
        })
    }

    /// sha256 of the SubjectPublicKeyInfo, lowercase hex: names a key without showing it.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.spki_der))
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

/// A certificate's subject: the common name and the organizations (Kubernetes reads
/// them as the user name and the groups).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    pub common_name: String,
    pub organizations: Vec<String>,
}

impl Subject {
    pub fn new(common_name: &str, organizations: &[&str]) -> Self {
        Self {
            common_name: common_name.to_owned(),
            organizations: organizations.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    fn to_rcgen(&self) -> DistinguishedName {
        let mut name = DistinguishedName::new();
        for organization in &self.organizations {
            name.push(DnType::OrganizationName, organization.as_str());
        }
        name.push(DnType::CommonName, self.common_name.as_str());
        name
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CN={}", self.common_name)?;
        for o in &self.organizations {
            write!(f, ",O={o}")?;
        }
        Ok(())
    }
}

/// A verified certificate signing request: its signature is checked on parsing.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    pub public_key: PublicKey,
    /// Every common name in the subject (a well-formed request has one).
    pub common_names: Vec<String>,
    pub organizations: Vec<String>,
    /// Subject attributes other than CN and O, as `OID=value`.
    pub other_attributes: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl CertificateRequest {
    /// Parses a PEM CSR and verifies its self-signature (proof the sender holds the key).
    pub fn from_pem(what: &str, pem: &str) -> Result<Self, PkiError> {
        let der = pem_block(what, pem, "CERTIFICATE REQUEST")?;
        let (rest, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der)
                .map_err(|e| invalid(what, format!("not a certificate request: {e}")))?;
        if !rest.is_empty() {
            return Err(invalid(
                what,
                "trailing bytes after the certificate request",
            ));
        }
        csr.verify_signature()
            .map_err(|_| invalid(what, "the request's signature does not verify"))?;
        let info = &csr.certification_request_info;
        let spki_der = info.subject_pki.raw.to_vec();
        // Refuse key types we could not issue for.
        SubjectPublicKeyInfo::from_der(&spki_der)
            .map_err(|e| invalid(what, format!("unsupported public key: {e}")))?;
        let mut out = Self {
            public_key: PublicKey { spki_der },
            common_names: Vec::new(),
            organizations: Vec::new(),
            other_attributes: Vec::new(),
            dns_names: Vec::new(),
            ips: Vec::new(),
        };
        for attribute in info.subject.iter_attributes() {
            let value = attribute
                .as_str()
                .map_err(|_| invalid(what, "a subject attribute is not a string"))?
                .to_owned();
            let oid = attribute.attr_type();
            if *oid == x509_parser::oid_registry::OID_X509_COMMON_NAME {
                out.common_names.push(value);
            } else if *oid == x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME {
                out.organizations.push(value);
            } else {
                out.other_attributes.push(format!("{oid}={value}"));
            }
        }
        if let Some(extensions) = csr.requested_extensions() {
            for extension in extensions {
                if let ParsedExtension::SubjectAlternativeName(san) = extension {
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(dns) => out.dns_names.push((*dns).to_owned()),
                            GeneralName::IPAddress(bytes) => {
                                if let Some(ip) = ip_from_bytes(bytes) {
                                    out.ips.push(ip);
                                }
                            }
                            other => out.other_attributes.push(format!("SAN {other:?}")),
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The one common name, if there is exactly one.
    pub fn common_name(&self) -> Option<&str> {
        match self.common_names.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Client,
    Server,
    ClientAndServer,
}

/// Everything the issuer decides about a certificate.
#[derive(Debug, Clone)]
pub struct Profile {
    pub subject: Subject,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub usage: Usage,
    pub validity: Duration,
    /// NotBefore is set this far in the past, so nodes with a slow clock accept the cert.
    pub backdate: Duration,
}

/// Default NotBefore backdating: an hour tolerates any clock skew a booting instance has
/// before time sync, and is short enough to mean nothing for revocation.
pub const DEFAULT_BACKDATE: Duration = Duration::from_secs(3600);

/// An issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub pem: String,
    pub not_after: OffsetDateTime,
}

/// A CA that issues certificates: its certificate and its signing key.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A CA from its PEM certificate and key. Refuses a certificate that is not a CA and
    /// a key that is not the certificate's. `what` names them in errors (e.g. the paths).
    pub fn from_pem(what: &str, cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = PrivateKey::from_pem(&format!("{what} key"), key_pem)?;
        let info = CertificateInfo::from_pem(&format!("{what} certificate"), cert_pem)?;
        if !info.is_ca {
            return Err(invalid(
                &format!("{what} certificate"),
                "is not a CA certificate (basicConstraints CA:TRUE is missing)",
            ));
        }
        if info.public_key != key.public_key() {
            return Err(invalid(
                what,
                "the key does not match the certificate (they are from different pairs)",
            ));
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key.pair)
            .map_err(|e| invalid(&format!("{what} certificate"), e))?;
        Ok(Self {
            cert_pem: first_certificate_pem(cert_pem),
            issuer,
        })
    }

    /// A new self-signed CA (cluster creation and tests).
    pub fn create(common_name: &str, validity: Duration) -> Result<(Self, PrivateKey), PkiError> {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = Subject::new(common_name, &[]).to_rcgen();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, validity, DEFAULT_BACKDATE)
            .map_err(|e| invalid("the CA's validity", e))?;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key.pair).map_err(|e| PkiError::Issue {
            subject: common_name.to_owned(),
            detail: e.to_string(),
        })?;
        let cert_pem = cert.pem();
        let ca = Self::from_pem("new CA", &cert_pem, &key.to_pem())?;
        Ok((ca, key))
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `public_key` with exactly what `profile` says.
    pub fn issue(&self, public_key: &PublicKey, profile: &Profile) -> Result<Issued, PkiError> {
        let failed = |detail: String| PkiError::Issue {
            subject: profile.subject.to_string(),
            detail,
        };
        if profile.subject.organizations.len() > 1 {
            // rcgen keeps one value per attribute type; refuse rather than drop groups.
            return Err(failed(
                "a certificate can carry at most one organization (group) here".to_owned(),
            ));
        }
        let key = SubjectPublicKeyInfo::from_der(&public_key.spki_der)
            .map_err(|e| failed(format!("unsupported public key: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = profile.subject.to_rcgen();
        params.subject_alt_names =
            sans(&profile.dns_names, &profile.ips).map_err(|e| failed(e.to_string()))?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match profile.usage {
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::ClientAndServer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let not_after = set_validity(&mut params, profile.validity, profile.backdate)
            .map_err(|e| failed(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| failed(e.to_string()))?;
        Ok(Issued {
            pem: cert.pem(),
            not_after,
        })
    }
}

fn set_validity(
    params: &mut CertificateParams,
    validity: Duration,
    backdate: Duration,
) -> Result<OffsetDateTime, String> {
    let now = OffsetDateTime::now_utc();
    let not_before = now - time::Duration::try_from(backdate).map_err(|e| e.to_string())?;
    let not_after = now + time::Duration::try_from(validity).map_err(|e| e.to_string())?;
    params.not_before = not_before;
    params.not_after = not_after;
    Ok(not_after)
}

/// 16 random bytes with the top bit clear (a positive INTEGER, as RFC 5280 wants).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    for b in &mut bytes {
        *b = fastrand::u8(..);
    }
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn sans(dns_names: &[String], ips: &[IpAddr]) -> Result<Vec<SanType>, rcgen::Error> {
    let mut out = Vec::with_capacity(dns_names.len() + ips.len());
    for name in dns_names {
        out.push(SanType::DnsName(name.clone().try_into()?));
    }
    out.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    Ok(out)
}

/// What a certificate says, for checks (the agent's "do I still hold a good cert", tests).
#[derive(Debug, Clone)]
pub struct CertificateInfo {
    pub subject: Subject,
    pub issuer_common_name: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub is_ca: bool,
    pub client_auth: bool,
    pub server_auth: bool,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub public_key: PublicKey,
}

impl CertificateInfo {
    /// Reads the first certificate of a PEM bundle.
    pub fn from_pem(what: &str, pem: &str) -> Result<Self, PkiError> {
        let der = pem_block(what, pem, "CERTIFICATE")?;
        Self::from_der(what, &der)
    }

    /// Reads a DER certificate (e.g. the one a TLS peer presented).
    pub fn from_der(what: &str, der: &[u8]) -> Result<Self, PkiError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| invalid(what, format!("not a certificate: {e}")))?;
        let mut subject = Subject::default();
        for cn in cert.subject().iter_common_name() {
            subject.common_name = cn.as_str().unwrap_or_default().to_owned();
        }
        for o in cert.subject().iter_organization() {
            subject
                .organizations
                .push(o.as_str().unwrap_or_default().to_owned());
        }
        let issuer_common_name = cert
            .issuer()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut info = Self {
            subject,
            issuer_common_name,
            dns_names: Vec::new(),
            ips: Vec::new(),
            is_ca: false,
            client_auth: false,
            server_auth: false,
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            public_key: PublicKey {
                spki_der: cert.public_key().raw.to_vec(),
            },
        };
        for extension in cert.extensions() {
            match extension.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) => info.is_ca = bc.ca,
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    info.client_auth = eku.client_auth;
                    info.server_auth = eku.server_auth;
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(dns) => info.dns_names.push((*dns).to_owned()),
                            GeneralName::IPAddress(bytes) => {
                                info.ips.extend(ip_from_bytes(bytes));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }
}

/// Checks that `pem` holds a PEM block whose label ends with `label_suffix` (e.g.
/// `PRIVATE KEY` accepts PKCS#8, PKCS#1 and SEC1 keys).
pub fn check_pem_block(what: &str, pem: &str, label_suffix: &str) -> Result<(), PkiError> {
    let blocks = pem_blocks(pem).map_err(|detail| PkiError::Pem {
        what: what.to_owned(),
        detail,
    })?;
    if blocks
        .iter()
        .any(|(l, der)| l.ends_with(label_suffix) && !der.is_empty())
    {
        Ok(())
    } else {
        Err(PkiError::Pem {
            what: what.to_owned(),
            detail: format!("no {label_suffix} block"),
        })
    }
}

/// The DER of the first PEM block with `label`.
fn pem_block(what: &str, pem: &str, label: &str) -> Result<Vec<u8>, PkiError> {
    let blocks = pem_blocks(pem).map_err(|detail| PkiError::Pem {
        what: what.to_owned(),
        detail,
    })?;
    blocks
        .into_iter()
        .find(|(l, _)| l == label)
        .map(|(_, der)| der)
        .ok_or_else(|| PkiError::Pem {
            what: what.to_owned(),
            detail: format!("no {label} block"),
        })
}

/// The first certificate of a PEM bundle, re-encoded (drops text around it).
fn first_certificate_pem(pem: &str) -> String {
    match pem_blocks(pem) {
        Ok(blocks) => blocks
            .into_iter()
            .find(|(l, _)| l == "CERTIFICATE")
            .map(|(_, der)| encode_pem("CERTIFICATE", &der))
            .unwrap_or_else(|| pem.to_owned()),
        Err(_) => pem.to_owned(),
    }
}

/// PEM encoding of `der` under `label`.
pub fn encode_pem(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Every PEM block of a text, as (label, DER).
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let blocks = pem::parse_many(text).map_err(|e| e.to_string())?;
    Ok(blocks
        .into_iter()
        .map(|b| (b.tag().to_owned(), b.into_contents()))
        .collect())
}

/// Every certificate of a PEM bundle, as DER.
pub fn certificates_der(what: &str, pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    let certs: Vec<Vec<u8>> = pem_blocks(pem)
        .map_err(|detail| PkiError::Pem {
            what: what.to_owned(),
            detail,
        })?
        .into_iter()
        .filter(|(l, _)| l == "CERTIFICATE")
        .map(|(_, der)| der)
        .collect();
    if certs.is_empty() {
        return Err(PkiError::Pem {
            what: what.to_owned(),
            detail: "no CERTIFICATE block".to_owned(),
        });
    }
    Ok(certs)
}

/// Whether the PEM certificate `cert_pem` was signed by one of the CAs in `ca_pem`.
pub fn verify_issued_by(what: &str, cert_pem: &str, ca_pem: &str) -> Result<(), PkiError> {
    let der = pem_block(what, cert_pem, "CERTIFICATE")?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| invalid(what, format!("not a certificate: {e}")))?;
    for ca_der in certificates_der("the CA bundle", ca_pem)? {
        let Ok((_, ca)) = X509Certificate::from_der(&ca_der) else {
            continue;
        };
        if cert.verify_signature(Some(ca.public_key())).is_ok() {
            return Ok(());
        }
    }
    Err(invalid(what, "is not signed by any CA in the bundle"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ca() -> CertificateAuthority {
        CertificateAuthority::create("kubernetes-ca", Duration::from_secs(86400 * 3650))
            .unwrap()
            .0
    }

    fn client_profile(name: &str) -> Profile {
        Profile {
            subject: Subject::new(&format!("system:node:{name}"), &["system:nodes"]),
            dns_names: vec![],
            ips: vec![],
            usage: Usage::Client,
            validity: Duration::from_secs(86400),
            backdate: DEFAULT_BACKDATE,
        }
    }

    #[test]
    fn issues_what_the_profile_says_from_a_csr() {
        let ca = ca();
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let csr = key
            .certificate_request(
                &Subject::new("system:node:evil", &["system:masters"]),
                &["evil.example.com".into()],
                &[],
            )
            .unwrap();
        let request = CertificateRequest::from_pem("csr", &csr).unwrap();
        assert_eq!(request.common_name(), Some("system:node:evil"));
        assert_eq!(request.organizations, ["system:masters"]);
        assert_eq!(request.dns_names, ["evil.example.com"]);
        assert_eq!(request.public_key, key.public_key());

        let issued = ca
            .issue(
                &request.public_key,
                &client_profile("ip-10-0-1-23.ec2.internal"),
            )
            .unwrap();
        let info = CertificateInfo::from_pem("cert", &issued.pem).unwrap();
        assert_eq!(
            info.subject,
            Subject::new("system:node:ip-10-0-1-23.ec2.internal", &["system:nodes"])
        );
        assert!(info.dns_names.is_empty(), "SANs come from the profile only");
        assert!(info.client_auth && !info.server_auth && !info.is_ca);
        assert_eq!(info.public_key, key.public_key());
        assert_eq!(info.issuer_common_name, "kubernetes-ca");
        let backdated = OffsetDateTime::now_utc() - info.not_before;
        assert!(backdated > time::Duration::minutes(59), "{backdated}");
        verify_issued_by("cert", &issued.pem, ca.cert_pem()).unwrap();
    }

    #[test]
    fn several_groups_are_read_from_a_csr_but_not_issued() {
        let ca = ca();
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        // rcgen writes one value per attribute type, so a CSR with two groups comes
        // from x509 tooling in real life; ours can only make one, and parsing must
        // see every O a request carries.
        let csr = key
            .certificate_request(&Subject::new("n", &["a"]), &[], &[])
            .unwrap();
        let request = CertificateRequest::from_pem("csr", &csr).unwrap();
        assert_eq!(request.organizations, ["a"]);
        let mut profile = client_profile("n");
        profile.subject = Subject::new("admin", &["system:masters", "ops"]);
        let err = ca
            .issue(&key.public_key(), &profile)
            .unwrap_err()
            .to_string();
        assert!(err.contains("one organization"), "{err}");
    }

    #[test]
    fn serving_certificates_carry_sans() {
        let ca = ca();
        let key = PrivateKey::generate(KeyAlgorithm::Rsa2048).unwrap();
        let profile = Profile {
            subject: Subject::new("system:node:n", &["system:nodes"]),
            dns_names: vec!["ip-10-0-1-23.ec2.internal".into()],
            ips: vec![
                "10.0.1.23".parse().unwrap(),
                "2600:1f18::5".parse().unwrap(),
            ],
            usage: Usage::Server,
            validity: Duration::from_secs(86400),
            backdate: Duration::ZERO,
        };
        let issued = ca.issue(&key.public_key(), &profile).unwrap();
        let info = CertificateInfo::from_pem("cert", &issued.pem).unwrap();
        assert_eq!(info.dns_names, ["ip-10-0-1-23.ec2.internal"]);
        assert_eq!(info.ips, profile.ips);
        assert!(info.server_auth && !info.client_auth);
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let csr = key
            .certificate_request(&Subject::new("system:node:a", &["system:nodes"]), &[], &[])
            .unwrap();
        let der = pem_block("csr", &csr, "CERTIFICATE REQUEST").unwrap();
        // Change one byte of the subject ("a" -> "b"): the signature no longer matches.
        let at = der.windows(13).position(|w| w == b"system:node:a").unwrap() + 12;
        let mut tampered = der.clone();
        tampered[at] = b'b';
        let err =
            CertificateRequest::from_pem("csr", &encode_pem("CERTIFICATE REQUEST", &tampered))
                .unwrap_err()
                .to_string();
        assert!(err.contains("signature"), "{err}");
        for garbage in [
            "",
            "hello",
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        ] {
            assert!(
                CertificateRequest::from_pem("csr", garbage).is_err(),
                "{garbage}"
            );
        }
    }

    #[test]
    fn a_ca_must_match_its_key_and_be_a_ca() {
        let (ca1, key1) = CertificateAuthority::create("one", Duration::from_secs(86400)).unwrap();
        let (_, key2) = CertificateAuthority::create("two", Duration::from_secs(86400)).unwrap();
        CertificateAuthority::from_pem("ca", ca1.cert_pem(), &key1.to_pem()).unwrap();
        let err = CertificateAuthority::from_pem("ca", ca1.cert_pem(), &key2.to_pem())
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match"), "{err}");
        let leaf_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let leaf = ca1
            .issue(&leaf_key.public_key(), &client_profile("x"))
            .unwrap();
        let err = CertificateAuthority::from_pem("ca", &leaf.pem, &leaf_key.to_pem())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a CA"), "{err}");
        let err = CertificateAuthority::from_pem("ca", "nope", &key1.to_pem())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca certificate"), "{err}");
    }

    #[test]
    fn key_algorithms_are_recognised() {
        for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let key = PrivateKey::generate(algorithm).unwrap();
            let again = PrivateKey::from_pem("key", &key.to_pem()).unwrap();
            assert_eq!(again.algorithm(), Some(algorithm));
        }
        check_pem_block(
            "k",
            &PrivateKey::generate(KeyAlgorithm::EcdsaP256)
                .unwrap()
                .to_pem(),
            "PRIVATE KEY",
        )
        .unwrap();
        assert!(check_pem_block("k", "garbage", "PRIVATE KEY").is_err());
    }

    #[test]
    fn keys_round_trip_through_pem_and_never_print() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let again = PrivateKey::from_pem("key", &key.to_pem()).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }
}
