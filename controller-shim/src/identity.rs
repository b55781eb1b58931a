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

/// The headers the shim forwards to STS; anything else in a proof is dropped.
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
        Self::sign_binding(credentials, endpoint, (BODY_HASH_HEADER, &body_hash), now)
    }

    /// Signs `GetCallerIdentity` with `binding` (a header name and value, e.g. another
    /// protocol's body hash) among the signed headers. kops's `X-Kops-Request-SHA` is
    /// one: the agent's kops-controller client signs with it.
    pub fn sign_binding(
        credentials: &Credentials,
        endpoint: &StsEndpoint,
        binding: (&str, &str),
        now: SystemTime,
    ) -> Result<Self, IdentityError> {
        let host = endpoint.authority().to_owned();
        let mut headers: Vec<(String, String)> = vec![
            ("host".to_owned(), host),
            ("content-type".to_owned(), STS_CONTENT_TYPE.to_owned()),
            (binding.0.to_ascii_lowercase(), binding.1.to_owned()),
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

    /// The checks the shim makes before asking STS. Returns the headers to replay.
    pub fn check(
        &self,
        body: &[u8],
        endpoint: &StsEndpoint,
        now: SystemTime,
        max_skew: Duration,
    ) -> Result<Vec<(String, String)>, IdentityError> {
        let authorization = self
            .header("authorization")
            .ok_or_else(|| IdentityError::Malformed("no authorization header".to_owned()))?;
        let auth = SigV4Authorization::parse(authorization)?;
        if !auth.signed_headers.iter().any(|h| h == BODY_HASH_HEADER) {
            return Err(IdentityError::BodyNotSigned);
        }
        let signed = self
            .header(BODY_HASH_HEADER)
            .ok_or(IdentityError::BodyNotSigned)?;
        let actual = hex::encode(Sha256::digest(body));
        if !signed.eq_ignore_ascii_case(&actual) {
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
        Ok(self
            .headers
            .iter()
            .filter(|(k, _)| FORWARDED_HEADERS.contains(&k.to_ascii_lowercase().as_str()))
            .cloned()
            .collect())
    }
}

/// The parts of a SigV4 `Authorization` header the shim checks.
#[derive(Debug)]
struct SigV4Authorization {
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
            match key {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed_headers = Some(value),
                "Signature" => signature = Some(value),
                _ => return Err(malformed("an unknown part")),
            }
        }
        let credential = credential.ok_or_else(|| malformed("no Credential"))?;
        let signed_headers = signed_headers.ok_or_else(|| malformed("no SignedHeaders"))?;
        signature.ok_or_else(|| malformed("no Signature"))?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [_key_id, date, region, service, "aws4_request"] = scope.as_slice() else {
            return Err(malformed(
                "the credential scope is not key/date/region/service/aws4_request",
            ));
        };
        Ok(Self {
            scope_date: (*date).to_owned(),
            region: (*region).to_owned(),
            service: (*service).to_owned(),
            signed_headers: signed_headers.split(';').map(str::to_owned).collect(),
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
