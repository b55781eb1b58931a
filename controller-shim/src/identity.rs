//! The worker's identity proof: an STS `GetCallerIdentity` request signed with SigV4 by
//! the instance role's credentials, with [`BODY_HASH_HEADER`] (the sha256 of the
//! bootstrap request's body) among the signed headers.
//!
//! The worker never sends its credentials, only the signed headers. The shim checks here
//! what it can alone (the body hash is signed and matches, the date is fresh, the
//! request is for the STS endpoint and region it trusts), then replays the request to STS,
//! which checks the signature: a proof cannot be moved to another body, and expires.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::protocol::{AUTH_SCHEME, BODY_HASH_HEADER, STS_BODY};

/// The content type STS's query protocol expects.
pub const STS_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// The headers a proof may hold, and the shim forwards to STS; a proof with any other
/// is refused.
const FORWARDED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "host",
    "x-amz-date",
    "x-amz-security-token",
    BODY_HASH_HEADER,
];

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("signing the identity proof: {0}")]
    Sign(String),
    #[error("the identity proof is missing or malformed: {0}")]
    Malformed(String),
    #[error("the body hash header {BODY_HASH_HEADER} is not among the signed headers")]
    BodyNotSigned,
    #[error("the signed body hash {signed} does not match the body's sha256 {actual}")]
    BodyMismatch { signed: String, actual: String },
    #[error("the signature is dated {date}, more than {max_skew:?} from the shim's clock")]
    Stale { date: String, max_skew: Duration },
    #[error("the proof is signed for {what} {got:?}, but this shim verifies with {want:?}")]
    WrongTarget {
        what: &'static str,
        got: String,
        want: String,
    },
}

/// Where STS is: the regional endpoint by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsEndpoint {
    /// e.g. `https://sts.us-east-1.amazonaws.com`
    pub url: String,
    pub region: String,
}

impl StsEndpoint {
    /// The regional endpoint of `region` (China regions have their own domain).
    pub fn regional(region: &str) -> Self {
        let domain = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        Self {
            url: format!("https://sts.{region}.{domain}"),
            region: region.to_owned(),
        }
    }

    /// The `host[:port]` the signature covers.
    pub fn authority(&self) -> &str {
        let rest = self.url.split("://").nth(1).unwrap_or(&self.url);
        rest.split('/').next().unwrap_or(rest)
    }

    /// The URL to POST to (always the root path).
    pub fn post_url(&self) -> String {
        format!("{}/", self.url.trim_end_matches('/'))
    }
}

/// The signed STS request's headers; travels base64(JSON) in `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityToken {
    pub headers: Vec<(String, String)>,
}

impl IdentityToken {
    /// Signs `GetCallerIdentity` for `endpoint` with `credentials`, bound to `body`.
    pub fn sign(
        credentials: &Credentials,
        endpoint: &StsEndpoint,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Self, IdentityError> {
        let body_hash = hex::encode(Sha256::digest(body));
        Self::sign_binding(credentials, endpoint, BODY_HASH_HEADER, &body_hash, now)
    }

    /// Signs `GetCallerIdentity` for `endpoint` with one extra signed header that binds
    /// the proof to something (this protocol's body hash, or another protocol's own
    /// binding header, such as kops-controller's `x-kops-request-sha`). The headers
    /// are returned lowercase, `host` first.
    pub fn sign_binding(
        credentials: &Credentials,
        endpoint: &StsEndpoint,
        binding_header: &str,
        binding_value: &str,
        now: SystemTime,
    ) -> Result<Self, IdentityError> {
        let host = endpoint.authority().to_owned();
        let mut headers: Vec<(String, String)> = vec![
            ("host".to_owned(), host),
            ("content-type".to_owned(), STS_CONTENT_TYPE.to_owned()),
            (
                binding_header.to_ascii_lowercase(),
                binding_value.to_owned(),
            ),
        ];
        let identity = credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&endpoint.region)
            .name("sts")
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| IdentityError::Sign(e.to_string()))?
            .into();
        let url = endpoint.post_url();
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(STS_BODY.as_bytes()),
        )
        .map_err(|e| IdentityError::Sign(e.to_string()))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| IdentityError::Sign(e.to_string()))?
            .into_parts();
        let (added, _) = instructions.into_parts();
        for header in added {
            headers.push((header.name().to_owned(), header.value().to_owned()));
        }
        Ok(Self { headers })
    }

    /// The `Authorization` header value that carries this proof.
    pub fn to_header(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{AUTH_SCHEME} {}", crate::protocol::encode_bytes(&json))
    }

    /// Reads a proof from an `Authorization` header value.
    pub fn from_header(value: &str) -> Result<Self, IdentityError> {
        use base64::Engine;
        let encoded = value
            .strip_prefix(AUTH_SCHEME)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| {
                IdentityError::Malformed(format!("the Authorization scheme is not {AUTH_SCHEME}"))
            })?;
        let json = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| IdentityError::Malformed(format!("not base64: {e}")))?;
        let token: Self = serde_json::from_slice(&json)
            .map_err(|e| IdentityError::Malformed(format!("not a proof: {e}")))?;
        Ok(token)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The SigV4 signature (64 hex digits): unique to one signed request, so it names the
    /// proof in the shim's replay defences.
    pub fn signature(&self) -> Option<String> {
        let authorization = self.header("authorization")?;
        SigV4Authorization::parse(authorization)
            .ok()
            .map(|a| a.signature)
    }

    /// The checks the shim makes before asking STS. Returns the headers to replay.
    ///
    /// Strict on purpose: a proof is a handful of known headers, each once, each signed,
    /// each a plain printable value. Anything else is refused here (401), so that nothing
    /// odd reaches STS and a malformed proof is never mistaken for an STS outage.
    pub fn check(
        &self,
        body: &[u8],
        endpoint: &StsEndpoint,
        now: SystemTime,
        max_skew: Duration,
    ) -> Result<Vec<(String, String)>, IdentityError> {
        self.check_headers()?;
        let authorization = self
            .header("authorization")
            .ok_or_else(|| IdentityError::Malformed("no authorization header".to_owned()))?;
        let auth = SigV4Authorization::parse(authorization)?;
        if !auth.signed_headers.iter().any(|h| h == BODY_HASH_HEADER) {
            return Err(IdentityError::BodyNotSigned);
        }
        // Every header but the signature itself is signed, and every signed one is here.
        for (name, _) in &self.headers {
            if name != "authorization" && !auth.signed_headers.contains(name) {
                return Err(IdentityError::Malformed(format!(
                    "header {name} is not among the signed headers"
                )));
            }
        }
        for signed in &auth.signed_headers {
            if self.header(signed).is_none() {
                return Err(IdentityError::Malformed(format!(
                    "signed header {signed} is not in the proof"
                )));
            }
        }
        let signed = self
            .header(BODY_HASH_HEADER)
            .ok_or(IdentityError::BodyNotSigned)?;
        let actual = hex::encode(Sha256::digest(body));
        if signed != actual {
            return Err(IdentityError::BodyMismatch {
                signed: signed.to_owned(),
                actual,
            });
        }
        for required in ["host", "x-amz-date"] {
            if !auth.signed_headers.iter().any(|h| h == required) {
                return Err(IdentityError::Malformed(format!(
                    "{required} is not among the signed headers"
                )));
            }
        }
        let host = self.header("host").unwrap_or_default();
        if host != endpoint.authority() {
            return Err(IdentityError::WrongTarget {
                what: "host",
                got: host.to_owned(),
                want: endpoint.authority().to_owned(),
            });
        }
        if auth.service != "sts" {
            return Err(IdentityError::WrongTarget {
                what: "service",
                got: auth.service,
                want: "sts".to_owned(),
            });
        }
        if auth.region != endpoint.region {
            return Err(IdentityError::WrongTarget {
                what: "region",
                got: auth.region,
                want: endpoint.region.clone(),
            });
        }
        if let Some(content_type) = self.header("content-type")
            && content_type != STS_CONTENT_TYPE
        {
            return Err(IdentityError::Malformed(format!(
                "content-type {content_type:?} is not {STS_CONTENT_TYPE:?}"
            )));
        }
        let date = self
            .header("x-amz-date")
            .ok_or_else(|| IdentityError::Malformed("no x-amz-date header".to_owned()))?;
        let signed_at = parse_amz_date(date)?;
        if !date.starts_with(&auth.scope_date) {
            return Err(IdentityError::Malformed(format!(
                "x-amz-date {date} is not on the credential scope's day {}",
                auth.scope_date
            )));
        }
        let skew = match now.duration_since(signed_at) {
            Ok(age) => age,
            Err(ahead) => ahead.duration(),
        };
        if skew > max_skew {
            return Err(IdentityError::Stale {
                date: date.to_owned(),
                max_skew,
            });
        }
        Ok(self.headers.clone())
    }

    /// Names known, lowercase, once each; values short and printable.
    fn check_headers(&self) -> Result<(), IdentityError> {
        // Known names, each once: at most as many headers as there are names.
        let mut seen = Vec::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            if !FORWARDED_HEADERS.contains(&name.as_str()) {
                return Err(IdentityError::Malformed(format!(
                    "header {:?} has no place in a proof",
                    printable(name)
                )));
            }
            if seen.contains(&name.as_str()) {
                return Err(IdentityError::Malformed(format!(
                    "header {name} appears twice"
                )));
            }
            seen.push(name.as_str());
            if value.is_empty()
                || value.len() > MAX_HEADER_VALUE
                || !value.bytes().all(|b| (0x20..0x7f).contains(&b))
            {
                return Err(IdentityError::Malformed(format!(
                    "header {name}'s value is empty, too long or holds control or non-ASCII characters"
                )));
            }
        }
        Ok(())
    }
}

/// A proof's longest header value (a session token is ~1-2 KB).
const MAX_HEADER_VALUE: usize = 4096;

/// A name for a log line: control characters escaped, at most 64 characters.
fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect()
}

/// The parts of a SigV4 `Authorization` header the shim checks.
#[derive(Debug)]
struct SigV4Authorization {
    signature: String,
    scope_date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
}

impl SigV4Authorization {
    fn parse(value: &str) -> Result<Self, IdentityError> {
        let malformed = |detail: &str| IdentityError::Malformed(format!("authorization: {detail}"));
        let rest = value
            .strip_prefix("AWS4-HMAC-SHA256 ")
            .ok_or_else(|| malformed("not AWS4-HMAC-SHA256"))?;
        let mut credential = None;
        let mut signed_headers = None;
        let mut signature = None;
        for part in rest.split(',') {
            let (key, value) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| malformed("a part is not key=value"))?;
            let slot = match key {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => return Err(malformed("an unknown part")),
            };
            if slot.replace(value).is_some() {
                return Err(malformed("a part appears twice"));
            }
        }
        let credential = credential.ok_or_else(|| malformed("no Credential"))?;
        let signed_headers = signed_headers.ok_or_else(|| malformed("no SignedHeaders"))?;
        let signature = signature.ok_or_else(|| malformed("no Signature"))?;
        if signature.len() != 64
            || !signature
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(malformed("the signature is not 64 lowercase hex digits"));
        }
        let scope: Vec<&str> = credential.split('/').collect();
        let [key_id, date, region, service, "aws4_request"] = scope.as_slice() else {
            return Err(malformed(
                "the credential scope is not key/date/region/service/aws4_request",
            ));
        };
        if key_id.is_empty() || !key_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(malformed("the access key id is not alphanumeric"));
        }
        let signed_headers: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
        // SigV4's canonical form: lowercase, sorted, each once.
        if !signed_headers.windows(2).all(|w| w[0] < w[1]) {
            return Err(malformed("SignedHeaders are not sorted and unique"));
        }
        if let Some(unknown) = signed_headers
            .iter()
            .find(|h| !FORWARDED_HEADERS.contains(&h.as_str()) || *h == "authorization")
        {
            return Err(malformed(&format!(
                "signed header {:?} has no place in a proof",
                printable(unknown)
            )));
        }
        Ok(Self {
            signature: signature.to_owned(),
            scope_date: (*date).to_owned(),
            region: (*region).to_owned(),
            service: (*service).to_owned(),
            signed_headers,
        })
    }
}

/// `20260101T120000Z` as a time.
fn parse_amz_date(text: &str) -> Result<SystemTime, IdentityError> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let date = time::PrimitiveDateTime::parse(text, format)
        .map_err(|e| IdentityError::Malformed(format!("x-amz-date {text:?}: {e}")))?;
    Ok(date.assume_utc().into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn creds() -> Credentials {
        Credentials::new("ASIAEXAMPLE", "secret", Some("token".into()), None, "test")
    }

    fn endpoint() -> StsEndpoint {
        StsEndpoint::regional("us-east-1")
    }

    #[test]
    fn a_fresh_proof_over_the_body_passes_and_is_forwarded_whole() {
        let now = SystemTime::now();
        let token = IdentityToken::sign(&creds(), &endpoint(), b"{}", now).unwrap();
        let again = IdentityToken::from_header(&token.to_header()).unwrap();
        assert_eq!(again, token);
        let headers = again
            .check(b"{}", &endpoint(), now, Duration::from_secs(300))
            .unwrap();
        let names: Vec<_> = headers.iter().map(|(k, _)| k.as_str()).collect();
        for name in [
            "authorization",
            "host",
            "x-amz-date",
            "x-amz-security-token",
            BODY_HASH_HEADER,
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        let auth = token.header("authorization").unwrap();
        assert!(auth.contains(BODY_HASH_HEADER), "{auth}");
        assert!(auth.contains("/us-east-1/sts/aws4_request"), "{auth}");
    }

    #[test]
    fn another_body_a_stale_date_or_an_unsigned_hash_is_refused() {
        let now = SystemTime::now();
        let token = IdentityToken::sign(&creds(), &endpoint(), b"{}", now).unwrap();
        let skew = Duration::from_secs(300);
        assert!(matches!(
            token.check(b"{ }", &endpoint(), now, skew),
            Err(IdentityError::BodyMismatch { .. })
        ));
        assert!(matches!(
            token.check(b"{}", &endpoint(), now + Duration::from_secs(600), skew),
            Err(IdentityError::Stale { .. })
        ));
        assert!(matches!(
            token.check(b"{}", &StsEndpoint::regional("eu-west-1"), now, skew),
            Err(IdentityError::WrongTarget { .. })
        ));
        let mut unsigned = token.clone();
        for (k, v) in unsigned.headers.iter_mut() {
            if k == "authorization" {
                *v = v.replace(&format!(";{BODY_HASH_HEADER}"), "");
            }
        }
        assert!(matches!(
            unsigned.check(b"{}", &endpoint(), now, skew),
            Err(IdentityError::BodyNotSigned)
        ));
        assert!(IdentityToken::from_header("Bearer abc").is_err());
        assert!(IdentityToken::from_header("NodewrightSTS !!!").is_err());
    }

    #[test]
    fn duplicates_control_characters_and_unknown_headers_are_malformed() {
        let now = SystemTime::now();
        let skew = Duration::from_secs(300);
        let token = IdentityToken::sign(&creds(), &endpoint(), b"{}", now).unwrap();
        let malformed =
            |token: &IdentityToken, what: &str| match token.check(b"{}", &endpoint(), now, skew) {
                Err(IdentityError::Malformed(detail)) => detail,
                other => panic!("{what}: {other:?}"),
            };
        type Headers = Vec<(String, String)>;
        let with = |edit: &dyn Fn(&mut Headers)| {
            let mut t = token.clone();
            edit(&mut t.headers);
            t
        };
        let value = |headers: &Vec<(String, String)>, name: &str| {
            headers.iter().find(|(k, _)| k == name).unwrap().1.clone()
        };
        // Every signed header once; a second copy of one is refused.
        let twice = with(&|h| {
            let date = value(h, "x-amz-date");
            h.push(("x-amz-date".into(), date));
        });
        assert!(malformed(&twice, "twice").contains("twice"));
        let cased = with(&|h| {
            let date = value(h, "x-amz-date");
            h.push(("X-Amz-Date".into(), date));
        });
        malformed(&cased, "another case");
        // CR LF (header injection) or any control character in a value.
        for bad in ["\r\nx-evil: 1", "\n", "\u{0}", "\t", "é"] {
            let injected = with(&|h| {
                for (k, v) in h.iter_mut() {
                    if k == "x-amz-security-token" {
                        v.push_str(bad);
                    }
                }
            });
            malformed(&injected, bad);
        }
        // A header that is not part of a proof, signed or not.
        let extra = with(&|h| h.push(("x-forwarded-for".into(), "10.0.0.1".into())));
        malformed(&extra, "unknown header");
        let unknown_signed = with(&|h| {
            for (k, v) in h.iter_mut() {
                if k == "authorization" {
                    *v = v.replace("SignedHeaders=", "SignedHeaders=a-custom;");
                }
            }
        });
        assert!(malformed(&unknown_signed, "unknown signed").contains("a-custom"));
        // A signed header the proof does not carry, and one it carries unsigned.
        let missing = with(&|h| h.retain(|(k, _)| k != "content-type"));
        malformed(&missing, "missing signed header");
        let unsigned = with(&|h| {
            for (k, v) in h.iter_mut() {
                if k == "authorization" {
                    *v = v.replace("content-type;", "");
                }
            }
        });
        malformed(&unsigned, "unsigned header");
        // Two Credentials, or a signature that is not hex.
        let doubled = with(&|h| {
            for (k, v) in h.iter_mut() {
                if k == "authorization" {
                    let credential = v.split(", ").next().unwrap().to_owned();
                    let credential = credential.trim_start_matches("AWS4-HMAC-SHA256 ");
                    *v = format!("{v}, {credential}");
                }
            }
        });
        assert!(malformed(&doubled, "doubled part").contains("twice"));
        let bad_signature = with(&|h| {
            for (k, v) in h.iter_mut() {
                if k == "authorization" {
                    let (head, _) = v.split_once("Signature=").unwrap();
                    *v = format!("{head}Signature=ZZ");
                }
            }
        });
        malformed(&bad_signature, "signature");
        // And the genuine one still passes.
        token.check(b"{}", &endpoint(), now, skew).unwrap();
    }

    #[test]
    fn regional_endpoints() {
        assert_eq!(
            StsEndpoint::regional("cn-north-1").url,
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        let local = StsEndpoint {
            url: "http://127.0.0.1:5000/".into(),
            region: "us-east-1".into(),
        };
        assert_eq!(local.authority(), "127.0.0.1:5000");
        assert_eq!(local.post_url(), "http://127.0.0.1:5000/");
    }
}
