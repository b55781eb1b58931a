//! Requests for an instance that has bootstrapped, decided from the record in memory.
//!
//! Once a node has claimed its instance, whoever holds the instance role but presents
//! no client certificate (a pod, when the IMDS hop limit lets it reach the role) can get
//! nothing: a spec-only request needs the node's certificate, and new credentials need
//! the recorded key within the retry window or a group that allows re-bootstrap. That is
//! known as soon as STS has said which instance signed, so such a request is refused
//! there, before it costs an EC2 or S3 call. Anything this cannot settle from memory (a
//! client certificate, which the record in memory may be too old to judge; a group that
//! allows re-bootstrap; an instance not in memory) goes on to the full checks.

use std::time::{Duration, SystemTime};

use super::checks;
use super::refusal::{Refusal, refuse};
use crate::pki::CertificateRequest;
use crate::protocol::{BootstrapRequest, ErrorCode, NodeRecord};

/// What the full checks would say of `request` without a client certificate, for an
/// instance with `record`: `Err` to refuse it now, `Ok` to let the full checks decide.
/// `rebootstrap_allowed`: whether the request's node group allows re-bootstrap (None:
/// not known from memory).
pub fn refuse_from_memory(
    request: &BootstrapRequest,
    record: &NodeRecord,
    rebootstrap_allowed: Option<bool>,
    retry_window: Duration,
    now: SystemTime,
) -> Result<(), Refusal> {
    let Some(credentials) = &request.credentials else {
        let reason = checks::check_owner(None, record).err().unwrap_or_default();
        return Err(refuse(ErrorCode::OwnerProofRequired, reason));
    };
    let same_key = CertificateRequest::from_pem("the client CSR", &credentials.client_csr)
        .is_ok_and(|csr| csr.public_key.fingerprint() == record.client_key_sha256);
    if same_key && checks::within(&record.last_bootstrap_at, retry_window, now) {
        return Ok(()); // the node lost our answer and asks again
    }
    if rebootstrap_allowed != Some(false) {
        return Ok(());
    }
    let why = if same_key {
        format!("the same key asks again after the {retry_window:?} retry window")
    } else {
        "another key asks".to_owned()
    };
    Err(refuse(
        ErrorCode::AlreadyBootstrapped,
        format!(
            "instance {} bootstrapped at {} as {}; {why}, without its client certificate, and its node group does not allow re-bootstrap",
            record.instance_id, record.bootstrapped_at, record.node_name
        ),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::pki::{KeyAlgorithm, PrivateKey, Subject};
    use crate::protocol::{CredentialRequest, PROTOCOL_VERSION};

    const WINDOW: Duration = Duration::from_secs(60);

    fn request(key: Option<&PrivateKey>) -> BootstrapRequest {
        let csr = |key: &PrivateKey| {
            key.certificate_request(&Subject::new("system:node:n", &["system:nodes"]), &[], &[])
                .unwrap()
        };
        BootstrapRequest {
            api_version: PROTOCOL_VERSION.to_owned(),
            node_group: "nodes".to_owned(),
            node_spec_sha256: "0".repeat(64),
            nonce: crate::protocol::nonce(),
            credentials: key.map(|key| CredentialRequest {
                client_csr: csr(key),
                serving_csr: csr(key),
                kube_proxy_csr: None,
            }),
        }
    }

    fn record(key: &PrivateKey, at: SystemTime) -> NodeRecord {
        let at = crate::server::app::rfc3339(at);
        NodeRecord {
            instance_id: "i-0123456789abcdef0".to_owned(),
            node_name: "n".to_owned(),
            node_group: "nodes".to_owned(),
            bootstrapped_at: at.clone(),
            last_bootstrap_at: at,
            bootstraps: 1,
            node_spec_sha256: "0".repeat(64),
            client_key_sha256: key.public_key().fingerprint(),
            role_arn: String::new(),
            proof_sha256: String::new(),
        }
    }

    #[test]
    fn only_what_memory_settles_is_refused() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let other = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let now = SystemTime::now();
        let fresh = record(&key, now - Duration::from_secs(10));
        let old = record(&key, now - Duration::from_secs(600));
        let decide = |request: &BootstrapRequest, record: &NodeRecord, allowed| {
            refuse_from_memory(request, record, allowed, WINDOW, now).map_err(|r| r.code)
        };
        // The spec alone: the node's certificate is needed, whatever the group says.
        for allowed in [Some(false), Some(true), None] {
            assert_eq!(
                decide(&request(None), &fresh, allowed),
                Err(ErrorCode::OwnerProofRequired)
            );
        }
        // The recorded key within the window: the full checks (a lost answer).
        assert_eq!(decide(&request(Some(&key)), &fresh, Some(false)), Ok(()));
        // After the window, or another key: refused where the group does not allow
        // re-bootstrap, left to the full checks where it does or is not known.
        for (request, record) in [(request(Some(&key)), &old), (request(Some(&other)), &fresh)] {
            assert_eq!(
                decide(&request, record, Some(false)),
                Err(ErrorCode::AlreadyBootstrapped)
            );
            assert_eq!(decide(&request, record, Some(true)), Ok(()));
            assert_eq!(decide(&request, record, None), Ok(()));
        }
    }
}
