//! kops-controller's bootstrap protocol, pure: the JSON documents
//! (`pkg/apis/nodeup/bootstrap.go`) and the `Authorization: x-aws-sts <token>` proof
//! (`pkg/bootstrap/awsbootstrap/authenticator.go`, its "v1" token, the one nodeup sends).
//!
//! The token is base64 of the JSON of the headers of an STS `GetCallerIdentity` request
//! signed with the instance role's credentials, as Go's `http.Header` serialises them
//! (canonical names, each with a list of values, no `Host`: Go sends the URL's). The
//! unpadded base64 of the sha256 of the bootstrap request's body travels in
//! `X-Kops-Request-Sha`, one of the signed headers: the proof is good for that body
//! only. kops-controller replays the request to STS, which checks the signature.

use std::collections::BTreeMap;

use base64::Engine;
use nodewright_shim::pki::{PrivateKey, encode_pem};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const API_VERSION: &str = "bootstrap.kops.k8s.io/v1alpha1";
pub const PATH: &str = "bootstrap";
/// The token's scheme, with its space (kops's `AWSAuthenticationTokenPrefixV1`).
pub const SCHEME: &str = "x-aws-sts ";
/// The binding header, lowercase as SigV4 signs it (Go: `X-Kops-Request-Sha`).
pub const BINDING_HEADER: &str = "x-kops-request-sha";
/// The CA keyset workers' certificates are issued from (kops `fi.CertificateIDCA`).
pub const CLUSTER_CA: &str = "kubernetes-ca";

/// The certificates a worker asks for (nodeup's `GetBootstrapCert` callers on AWS
/// workers: the kubelet's kubeconfig, its serving certificate, kube-proxy's kubeconfig).
pub const KUBELET: &str = "kubelet";
pub const KUBELET_SERVER: &str = "kubelet-server";
pub const KUBE_PROXY: &str = "kube-proxy";

/// `nodeup.BootstrapRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapRequest {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Certificate name -> the node's public key: PEM labelled `RSA PUBLIC KEY`
    /// (kops's label for any PKIX key; kops-controller parses it as PKIX).
    pub certs: BTreeMap<String, String>,
    /// CA keyset name -> the keypair id the node expects its certificates from.
    #[serde(rename = "keypairIDs")]
    pub keypair_ids: BTreeMap<String, String>,
    #[serde(rename = "includeNodeConfig")]
    pub include_node_config: bool,
}

impl BootstrapRequest {
    /// nodeup's first request: the node's configuration, no certificates.
    pub fn node_config() -> Self {
        Self {
            api_version: API_VERSION.to_owned(),
            certs: BTreeMap::new(),
            keypair_ids: BTreeMap::new(),
            include_node_config: true,
        }
    }

    /// nodeup's `BootstrapClientTask`: a certificate for each named key, from the
    /// `kubernetes-ca` keypair `keypair_id`.
    pub fn certificates(keys: &[(&str, &PrivateKey)], keypair_id: &str) -> Self {
        Self {
            api_version: API_VERSION.to_owned(),
            certs: keys
                .iter()
                .map(|(name, key)| ((*name).to_owned(), public_key_pem(key)))
                .collect(),
            keypair_ids: BTreeMap::from([(CLUSTER_CA.to_owned(), keypair_id.to_owned())]),
            include_node_config: false,
        }
    }
}

/// The public half of `key` as kops sends it: PKIX DER under the label `RSA PUBLIC KEY`.
pub fn public_key_pem(key: &PrivateKey) -> String {
    encode_pem("RSA PUBLIC KEY", key.public_key().spki_der())
}

/// `nodeup.BootstrapResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BootstrapResponse {
    #[serde(rename = "Certs", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub certs: BTreeMap<String, String>,
    #[serde(
        rename = "nodeConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub node_config: Option<NodeConfig>,
}

/// `nodeup.NodeConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeConfig {
    /// The nodeupconfig's text (its sha256 is kube_env's NodeupConfigHash).
    #[serde(rename = "nodeupConfig", default)]
    pub nodeup_config: String,
    /// Secrets by name (`dockerconfig`), base64 in JSON as Go writes `[]byte`.
    #[serde(
        rename = "nodeSecrets",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub node_secrets: BTreeMap<String, String>,
}

/// The value of [`BINDING_HEADER`] for a request body: base64 without padding, as kops
/// compares it.
pub fn body_hash(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(body))
}

/// The `Authorization` header value carrying a signed STS request's headers.
pub fn authorization(signed_headers: &[(String, String)]) -> String {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in signed_headers {
        // Go sends the Host from the URL, never from the header map.
        if name.eq_ignore_ascii_case("host") {
            continue;
        }
        headers
            .entry(canonical(name))
            .or_default()
            .push(value.clone());
    }
    // A map of strings to lists of strings always encodes.
    let json = serde_json::to_vec(&headers).unwrap_or_default();
    format!(
        "{SCHEME}{}",
        base64::engine::general_purpose::STANDARD.encode(json)
    )
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: `x-amz-date` -> `X-Amz-Date`. kops-controller
/// looks headers up by their canonical names in the decoded map.
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
    use nodewright_shim::pki::KeyAlgorithm;

    #[test]
    fn header_names_as_go_writes_them() {
        assert_eq!(canonical(BINDING_HEADER), "X-Kops-Request-Sha");
        assert_eq!(canonical("x-amz-security-token"), "X-Amz-Security-Token");
        assert_eq!(canonical("authorization"), "Authorization");
        assert_eq!(canonical("content-type"), "Content-Type");
    }

    #[test]
    fn the_token_is_base64_json_of_the_signed_headers_without_host() {
        let body = br#"{"apiVersion":"x"}"#;
        let signed = vec![
            ("host".to_owned(), "sts.us-east-1.amazonaws.com".to_owned()),
            (BINDING_HEADER.to_owned(), body_hash(body)),
            (
                "authorization".to_owned(),
                "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host;x-kops-request-sha, Signature=f"
                    .to_owned(),
            ),
        ];
        let value = authorization(&signed);
        let encoded = value.strip_prefix(SCHEME).unwrap();
        let json = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let map: BTreeMap<String, Vec<String>> = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            ["Authorization", "X-Kops-Request-Sha"]
        );
        assert_eq!(map["X-Kops-Request-Sha"], [body_hash(body)]);
    }

    #[test]
    fn the_body_hash_is_unpadded_base64_of_its_sha256() {
        // sha256("") = e3b0c442...; base64 of it, padding removed.
        assert_eq!(
            body_hash(b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn requests_encode_as_kops_decodes_them() {
        let json = serde_json::to_value(BootstrapRequest::node_config()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"apiVersion": API_VERSION, "certs": {}, "keypairIDs": {},
                "includeNodeConfig": true})
        );
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let request = BootstrapRequest::certificates(&[(KUBELET, &key)], "123");
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json["keypairIDs"],
            serde_json::json!({"kubernetes-ca": "123"})
        );
        assert_eq!(json["includeNodeConfig"], false);
        let pem = json["certs"]["kubelet"].as_str().unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PUBLIC KEY-----\n"), "{pem}");
        // The private key never travels.
        assert!(!serde_json::to_string(&request).unwrap().contains("PRIVATE"));
    }

    #[test]
    fn responses_decode_as_kops_encodes_them() {
        let text = r#"{"Certs":{"kubelet":"PEM"},"nodeConfig":{"nodeupConfig":"a: b\n","nodeSecrets":{"dockerconfig":"e30="}}}"#;
        let response: BootstrapResponse = serde_json::from_str(text).unwrap();
        assert_eq!(response.certs["kubelet"], "PEM");
        let config = response.node_config.unwrap();
        assert_eq!(config.nodeup_config, "a: b\n");
        assert_eq!(config.node_secrets["dockerconfig"], "e30=");
        // kops omits empty Certs.
        let empty: BootstrapResponse = serde_json::from_str("{}").unwrap();
        assert!(empty.certs.is_empty() && empty.node_config.is_none());
    }
}
