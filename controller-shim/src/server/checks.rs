//! The bootstrap decision's checks, each pure: who the caller is, what the instance is,
//! what its CSRs may ask for, and whether it proved it owns a recorded node.

use std::net::IpAddr;
use std::time::SystemTime;

use super::ec2::InstanceView;
use super::refusal::{Refusal, refuse};
use super::sts::{RoleSession, is_instance_id};
use crate::config::ShimConfig;
use crate::groups::{NodeGroup, NodeNaming};
use crate::pki::{CertificateInfo, CertificateRequest};
use crate::protocol::{ErrorCode, KUBE_PROXY_USER, NodeRecord};

pub const NODES_GROUP: &str = "system:nodes";

/// The caller is an instance role session of this cluster's account and partition.
/// (Which group it may join is [`check_role`]'s, after the group is known: a caller from
/// elsewhere learns nothing about groups.)
pub fn check_session(
    config: &ShimConfig,
    arn: &str,
    account: &str,
) -> Result<RoleSession, Refusal> {
    let session = RoleSession::parse(arn).ok_or_else(|| {
        refuse(
            ErrorCode::NotAnInstance,
            format!("{arn} is not an assumed-role session (an instance role's identity)"),
        )
    })?;
    if session.partition != config.aws.partition
        || session.account != config.aws.account_id
        || account != config.aws.account_id
    {
        return Err(refuse(
            ErrorCode::WrongAccount,
            format!(
                "{arn} is not in account {} of partition {}",
                config.aws.account_id, config.aws.partition
            ),
        ));
    }
    if !is_instance_id(&session.session) {
        return Err(refuse(
            ErrorCode::NotAnInstance,
            format!(
                "session {:?} of {arn} is not an EC2 instance id",
                session.session
            ),
        ));
    }
    Ok(session)
}

/// The session's role may bootstrap into `group`.
pub fn check_role(group: &NodeGroup, session: &RoleSession) -> Result<(), Refusal> {
    if group.roles.contains(&session.role) {
        return Ok(());
    }
    Err(refuse(
        ErrorCode::RoleNotAllowed,
        format!(
            "role {} may not bootstrap into node group {} (allowed: {})",
            session.role,
            group.name,
            group.roles.join(", ")
        ),
    ))
}

pub fn check_instance(
    config: &ShimConfig,
    group: &NodeGroup,
    instance: &InstanceView,
) -> Result<(), Refusal> {
    // EC2 may still say `pending` for an instance that is already running code: its
    // state lags by seconds, so that is "ask again", not a refusal.
    if instance.state == "pending" {
        return Err(refuse(
            ErrorCode::UpstreamUnavailable,
            format!(
                "EC2 still reports instance {} as pending; ask again",
                instance.instance_id
            ),
        ));
    }
    if instance.state != "running" {
        return Err(refuse(
            ErrorCode::InstanceNotRunning,
            format!("instance {} is {}", instance.instance_id, instance.state),
        ));
    }
    let cluster_tag = format!("kubernetes.io/cluster/{}", config.cluster_name);
    match instance.tags.get(&cluster_tag).map(String::as_str) {
        Some("owned" | "shared") => {}
        _ => {
            return Err(refuse(
                ErrorCode::WrongCluster,
                format!(
                    "instance {} has no tag {cluster_tag}=owned: it is not in cluster {}",
                    instance.instance_id, config.cluster_name
                ),
            ));
        }
    }
    let tagged = instance.tags.get(&config.node_group_tag);
    if tagged != Some(&group.name) {
        return Err(refuse(
            ErrorCode::WrongNodeGroup,
            format!(
                "instance {} is tagged {}={} but asks for node group {}",
                instance.instance_id,
                config.node_group_tag,
                tagged.map(String::as_str).unwrap_or("(none)"),
                group.name
            ),
        ));
    }
    Ok(())
}

pub fn node_name(group: &NodeGroup, instance: &InstanceView) -> Result<String, Refusal> {
    match group.node_name {
        NodeNaming::InstanceId => Ok(instance.instance_id.clone()),
        NodeNaming::PrivateDnsName if !instance.private_dns_name.is_empty() => {
            Ok(instance.private_dns_name.clone())
        }
        NodeNaming::PrivateDnsName => Err(refuse(
            ErrorCode::Internal,
            format!(
                "instance {} has no private DNS name (enable DNS hostnames in its VPC, or name nodes by instance id)",
                instance.instance_id
            ),
        )),
    }
}

/// A node may only ask for itself: `CN=system:node:<one of its own names>`, in no group
/// but system:nodes, with no other subject attributes. What it asks for is not what it
/// gets: the certificate's subject and SANs come from EC2.
pub fn check_csr(kind: &str, csr: &CertificateRequest, own_names: &[&str]) -> Result<(), Refusal> {
    let cn = csr.common_name().ok_or_else(|| {
        refuse(
            ErrorCode::CsrNotAllowed,
            format!("the {kind} CSR must have exactly one common name"),
        )
    })?;
    let asked = cn.strip_prefix("system:node:").unwrap_or("");
    if !own_names.iter().any(|n| !n.is_empty() && *n == asked) {
        return Err(refuse(
            ErrorCode::CsrNotAllowed,
            format!(
                "the {kind} CSR asks for {cn:?}, which is not this node (system:node:{})",
                own_names[0]
            ),
        ));
    }
    if let Some(group) = csr.organizations.iter().find(|o| *o != NODES_GROUP) {
        return Err(refuse(
            ErrorCode::CsrNotAllowed,
            format!("the {kind} CSR asks for group {group:?}; a node may only be in {NODES_GROUP}"),
        ));
    }
    if let Some(other) = csr.other_attributes.iter().find(|a| !a.starts_with("SAN ")) {
        return Err(refuse(
            ErrorCode::CsrNotAllowed,
            format!("the {kind} CSR's subject has {other}, which a node may not ask for"),
        ));
    }
    Ok(())
}

/// kube-proxy's CSR asks for `CN=system:kube-proxy` and nothing else (no group, no
/// other attribute, no name), for a key of its own.
pub fn check_kube_proxy_csr(
    csr: &CertificateRequest,
    node_keys: &[&CertificateRequest],
) -> Result<(), Refusal> {
    let refused = |detail: String| {
        refuse(
            ErrorCode::CsrNotAllowed,
            format!("the kube-proxy CSR {detail}"),
        )
    };
    if csr.common_name() != Some(KUBE_PROXY_USER) {
        return Err(refused(format!(
            "asks for {:?}; it may only ask for CN={KUBE_PROXY_USER}",
            csr.common_names
        )));
    }
    if !csr.organizations.is_empty() {
        return Err(refused(format!("asks for groups {:?}", csr.organizations)));
    }
    if !csr.other_attributes.is_empty() || !csr.dns_names.is_empty() || !csr.ips.is_empty() {
        return Err(refused("asks for other names or attributes".to_owned()));
    }
    if node_keys.iter().any(|k| k.public_key == csr.public_key) {
        return Err(refused(
            "is for one of the kubelet's keys; kube-proxy needs its own".to_owned(),
        ));
    }
    Ok(())
}

/// The serving certificate's names: from EC2 only.
pub fn serving_names(instance: &InstanceView) -> (Vec<String>, Vec<IpAddr>) {
    let dns = if instance.private_dns_name.is_empty() {
        Vec::new()
    } else {
        vec![instance.private_dns_name.clone()]
    };
    (dns, instance.ips.clone())
}

/// Whether the client certificate the TLS handshake verified (chain to the cluster CA,
/// validity, client authentication: rustls did those) is the recorded node's:
/// `CN=system:node:<its name>` in `system:nodes`. Any such certificate from the cluster
/// CA counts, not only the one the shim issued: the kubelet rotates its own.
pub fn check_owner(client_certificate: Option<&[u8]>, record: &NodeRecord) -> Result<(), String> {
    let der = client_certificate.ok_or_else(|| {
        format!(
            "instance {} bootstrapped at {} as {}; the request presented no client certificate",
            record.instance_id, record.bootstrapped_at, record.node_name
        )
    })?;
    let info =
        CertificateInfo::from_der("the client certificate", der).map_err(|e| e.to_string())?;
    let want = format!("system:node:{}", record.node_name);
    if info.subject.common_name != want
        || !info.subject.organizations.iter().any(|o| o == NODES_GROUP)
        || !info.client_auth
        || info.is_ca
    {
        return Err(format!(
            "the client certificate is for {}, not {want} (instance {})",
            info.subject, record.instance_id
        ));
    }
    Ok(())
}

/// Whether `then` (RFC 3339) is less than `window` before `now`.
pub fn within(then: &str, window: std::time::Duration, now: SystemTime) -> bool {
    let Ok(then) =
        time::OffsetDateTime::parse(then, &time::format_description::well_known::Rfc3339)
    else {
        return false;
    };
    let now = time::OffsetDateTime::from(now);
    let age = now - then;
    age >= time::Duration::ZERO && age < window
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use crate::pki::{
        CertificateAuthority, KeyAlgorithm, PrivateKey, Profile, Subject, Usage, certificates_der,
    };

    fn csr(subject: Subject) -> CertificateRequest {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let pem = key.certificate_request(&subject, &[], &[]).unwrap();
        CertificateRequest::from_pem("csr", &pem).unwrap()
    }

    fn config() -> ShimConfig {
        ShimConfig::parse("c", crate::config::tests::EXAMPLE).unwrap()
    }

    fn group() -> NodeGroup {
        crate::config::tests::inline_groups(&config())[0].clone()
    }

    #[test]
    fn a_node_may_ask_only_for_itself() {
        let own = [
            "ip-10-0-1-23.ec2.internal",
            "i-0a1b2c3d4e5f60718",
            "ip-10-0-1-23.ec2.internal",
        ];
        for name in ["ip-10-0-1-23.ec2.internal", "i-0a1b2c3d4e5f60718"] {
            check_csr(
                "client",
                &csr(Subject::new(&format!("system:node:{name}"), &[NODES_GROUP])),
                &own,
            )
            .unwrap();
        }
        check_csr(
            "client",
            &csr(Subject::new("system:node:i-0a1b2c3d4e5f60718", &[])),
            &own,
        )
        .unwrap();
        for bad in [
            Subject::new("system:node:ip-10-0-9-9.ec2.internal", &[NODES_GROUP]),
            Subject::new("system:node:", &[NODES_GROUP]),
            Subject::new("admin", &[NODES_GROUP]),
            Subject::new("system:node:i-0a1b2c3d4e5f60718", &["system:masters"]),
        ] {
            let err = check_csr("client", &csr(bad.clone()), &own).unwrap_err();
            assert_eq!(err.code, ErrorCode::CsrNotAllowed, "{bad}");
        }
    }

    #[test]
    fn kube_proxy_may_ask_only_for_kube_proxy() {
        let kubelet = csr(Subject::new("system:node:a", &[NODES_GROUP]));
        check_kube_proxy_csr(&csr(Subject::new(KUBE_PROXY_USER, &[])), &[&kubelet]).unwrap();
        for bad in [
            Subject::new("system:kube-proxy", &["system:masters"]),
            Subject::new("system:kube-proxy", &[NODES_GROUP]),
            Subject::new("system:node:a", &[]),
            Subject::new("admin", &[]),
        ] {
            let err = check_kube_proxy_csr(&csr(bad.clone()), &[&kubelet]).unwrap_err();
            assert_eq!(err.code, ErrorCode::CsrNotAllowed, "{bad}");
        }
        // Extra names, even DNS or IP, are refused.
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let pem = key
            .certificate_request(
                &Subject::new(KUBE_PROXY_USER, &[]),
                &["kubernetes.default".to_owned()],
                &[],
            )
            .unwrap();
        let named = CertificateRequest::from_pem("csr", &pem).unwrap();
        assert!(check_kube_proxy_csr(&named, &[&kubelet]).is_err());
        // The kubelet's own key is not kube-proxy's.
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let as_kubelet = CertificateRequest::from_pem(
            "csr",
            &key.certificate_request(&Subject::new("system:node:a", &[NODES_GROUP]), &[], &[])
                .unwrap(),
        )
        .unwrap();
        let same_key = CertificateRequest::from_pem(
            "csr",
            &key.certificate_request(&Subject::new(KUBE_PROXY_USER, &[]), &[], &[])
                .unwrap(),
        )
        .unwrap();
        let err = check_kube_proxy_csr(&same_key, &[&as_kubelet]).unwrap_err();
        assert!(err.reason.contains("its own"), "{}", err.reason);
    }

    #[test]
    fn sessions_must_be_instance_roles_of_this_account() {
        let config = config();
        let group = group();
        let ok =
            "arn:aws:sts::123456789012:assumed-role/nodes.prod.example.com/i-0a1b2c3d4e5f60718";
        let session = check_session(&config, ok, "123456789012").unwrap();
        assert_eq!(session.session, "i-0a1b2c3d4e5f60718");
        check_role(&group, &session).unwrap();
        let cases = [
            (
                "arn:aws:sts::210987654321:assumed-role/nodes.prod.example.com/i-0a1b2c3d4e5f60718",
                "210987654321",
                ErrorCode::WrongAccount,
            ),
            (
                "arn:aws-cn:sts::123456789012:assumed-role/nodes.prod.example.com/i-0a1b2c3d4e5f60718",
                "123456789012",
                ErrorCode::WrongAccount,
            ),
            (
                "arn:aws:sts::123456789012:assumed-role/nodes.prod.example.com/alice",
                "123456789012",
                ErrorCode::NotAnInstance,
            ),
            (
                "arn:aws:iam::123456789012:user/alice",
                "123456789012",
                ErrorCode::NotAnInstance,
            ),
        ];
        for (arn, account, code) in cases {
            assert_eq!(
                check_session(&config, arn, account).unwrap_err().code,
                code,
                "{arn}"
            );
        }
        let admin = check_session(
            &config,
            "arn:aws:sts::123456789012:assumed-role/admin/i-0a1b2c3d4e5f60718",
            "123456789012",
        )
        .unwrap();
        let refused = check_role(&group, &admin).unwrap_err();
        assert_eq!(refused.code, ErrorCode::RoleNotAllowed);
        // The log gets the roles; the client's message never names them.
        assert!(refused.reason.contains("nodes.prod.example.com"));
        assert!(!refused.code.summary().contains("nodes.prod"));
    }

    #[test]
    fn only_a_pending_instance_is_asked_to_come_back() {
        let config = config();
        let group = group();
        let instance = |state: &str| InstanceView {
            instance_id: "i-0a1b2c3d4e5f60718".to_owned(),
            state: state.to_owned(),
            tags: [
                ("kubernetes.io/cluster/prod.example.com", "owned"),
                (config.node_group_tag.as_str(), group.name.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            private_dns_name: "ip-10-0-1-23.ec2.internal".to_owned(),
            ips: vec!["10.0.1.23".parse().unwrap()],
        };
        check_instance(&config, &group, &instance("running")).unwrap();
        let pending = check_instance(&config, &group, &instance("pending")).unwrap_err();
        assert_eq!(pending.code, ErrorCode::UpstreamUnavailable);
        assert!(pending.code.retryable(), "{}", pending.reason);
        for state in ["stopping", "stopped", "shutting-down", "terminated"] {
            let refused = check_instance(&config, &group, &instance(state)).unwrap_err();
            assert_eq!(refused.code, ErrorCode::InstanceNotRunning, "{state}");
            assert!(!refused.code.retryable(), "{state}");
        }
    }

    #[test]
    fn only_the_recorded_node_s_certificate_proves_ownership() {
        let (ca, _) = CertificateAuthority::create("ca", Duration::from_secs(3600)).unwrap();
        let issue = |subject: Subject, usage: Usage| {
            let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
            let pem = ca
                .issue(
                    &key.public_key(),
                    &Profile {
                        subject,
                        dns_names: vec![],
                        ips: vec![],
                        usage,
                        validity: Duration::from_secs(3600),
                        backdate: Duration::ZERO,
                    },
                )
                .unwrap()
                .pem;
            certificates_der("cert", &pem).unwrap().remove(0)
        };
        let record = NodeRecord {
            instance_id: "i-0a1b2c3d4e5f60718".into(),
            node_name: "ip-10-0-1-23.ec2.internal".into(),
            node_group: "nodes".into(),
            bootstrapped_at: "2026-01-01T00:00:00Z".into(),
            last_bootstrap_at: "2026-01-01T00:00:00Z".into(),
            bootstraps: 1,
            node_spec_sha256: "0".repeat(64),
            client_key_sha256: "0".repeat(64),
            role_arn: "arn".into(),
            proof_sha256: String::new(),
        };
        let own = issue(
            Subject::new("system:node:ip-10-0-1-23.ec2.internal", &[NODES_GROUP]),
            Usage::Client,
        );
        check_owner(Some(&own), &record).unwrap();
        assert!(check_owner(None, &record).is_err());
        for (subject, usage) in [
            (
                Subject::new("system:node:ip-10-0-9-9.ec2.internal", &[NODES_GROUP]),
                Usage::Client,
            ),
            (Subject::new("system:kube-proxy", &[]), Usage::Client),
            (
                Subject::new("system:node:ip-10-0-1-23.ec2.internal", &[NODES_GROUP]),
                Usage::Server,
            ),
        ] {
            let other = issue(subject.clone(), usage);
            assert!(check_owner(Some(&other), &record).is_err(), "{subject}");
        }
    }

    #[test]
    fn the_retry_window() {
        let now = SystemTime::now();
        let ten_minutes = Duration::from_secs(600);
        let at = |ago: u64| crate::server::app::rfc3339(now - Duration::from_secs(ago));
        assert!(within(&at(60), ten_minutes, now));
        assert!(!within(&at(601), ten_minutes, now));
        assert!(!within("not a time", ten_minutes, now));
    }
}
