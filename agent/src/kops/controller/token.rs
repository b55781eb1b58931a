//! The `Authorization: x-aws-sts <token>` proof kops-controller verifies
//! (`pkg/bootstrap/awsbootstrap/authenticator.go`, its "v1" token).
//!
//! The token is base64 of the JSON of the headers of an STS `GetCallerIdentity` request
//! signed with the instance role's credentials, as Go's `http.Header` serialises them
//! (canonical names, each with a list of values). `X-Kops-Request-Sha`, the unpadded
//! base64 of the sha256 of the bootstrap request's body, is one of the signed headers:
//! the proof is good for that body only. kops-controller replays the request to STS.

use std::collections::BTreeMap;

use base64::Engine;
use nodewright_shim::identity::IdentityToken;
use sha2::{Digest, Sha256};

pub const SCHEME: &str = "x-aws-sts ";
pub const BODY_HASH_HEADER: &str = "X-Kops-Request-Sha";

/// The body hash as kops binds it: base64 without padding.
pub fn body_hash(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(body))
}

/// The `Authorization` header value for a signed STS request.
pub fn header(signed: &IdentityToken) -> String {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &signed.headers {
        // Go sends the Host from the URL, never from the header map.
        if name.eq_ignore_ascii_case("host") {
            continue;
        }
        headers.entry(canonical(name)).or_default().push(value.clone());
    }
    let json = serde_json::to_vec(&headers).unwrap_or_default();
    format!("{SCHEME}{}", base64::engine::general_purpose::STANDARD.encode(json))
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: `x-amz-date` -> `X-Amz-Date`.
pub fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_go_writes_them() {
        assert_eq!(canonical("x-kops-request-sha"), BODY_HASH_HEADER);
        assert_eq!(canonical("x-amz-security-token"), "X-Amz-Security-Token");
        assert_eq!(canonical("Authorization"), "Authorization");
    }

    #[test]
    fn the_token_is_base64_json_of_the_headers() {
        let signed = IdentityToken {
            headers: vec![
                ("host".into(), "sts.amazonaws.com".into()),
                ("x-kops-request-sha".into(), body_hash(b"{}")),
                ("authorization".into(), "AWS4-HMAC-SHA256 Credential=x".into()),
            ],
        };
        let value = header(&signed);
        let encoded = value.strip_prefix(SCHEME).unwrap();
        let json = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
        let map: BTreeMap<String, Vec<String>> = serde_json::from_slice(&json).unwrap();
        assert_eq!(map[BODY_HASH_HEADER], [body_hash(b"{}")]);
        assert!(!map.contains_key("Host"));
        // No padding, as kops compares it.
        assert!(!body_hash(b"{}").ends_with('='));
    }
}
