//! Tests of `source::shim`, kept beside it so the module itself stays short.

use nodewright_shim::pki::{CertificateAuthority, Profile, Usage};

use super::*;

fn issue(ca: &CertificateAuthority, key: &PrivateKey, cn: &str, days: u64) -> String {
    ca.issue(
        &key.public_key(),
        &Profile {
            subject: Subject::new(cn, &[]),
            dns_names: Vec::new(),
            ips: Vec::new(),
            usage: Usage::Client,
            validity: Duration::from_secs(days * 86400),
            backdate: Duration::from_secs(3600),
        },
    )
    .unwrap()
    .pem
}

fn put(root: &Path, node_path: &str, text: &str) {
    let path = under(root, node_path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A node that bootstrapped with a good kubelet certificate: what decides whether it
/// asks again is kube-proxy's pair, where its kubeconfig says kube-proxy runs.
#[test]
fn a_missing_mismatched_or_ending_kube_proxy_pair_makes_the_node_ask_again() {
    let (ca, _) = CertificateAuthority::create("test-ca", Duration::from_secs(86400 * 30)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let kubelet_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let kubelet = issue(&ca, &kubelet_key, "system:node:n", 10);
    put(
        root,
        CLIENT_PEM,
        &format!("{kubelet}{}", kubelet_key.to_pem()),
    );
    // No kube-proxy on this node (no kubeconfig): the kubelet's certificate decides.
    assert!(holds_good_credentials(root));

    put(root, KUBE_PROXY_KUBECONFIG, "kubeconfig");
    assert!(!holds_good_credentials(root), "kube-proxy has no pair");

    let proxy_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    put(root, KUBE_PROXY_KEY, &proxy_key.to_pem());
    put(
        root,
        KUBE_PROXY_CERT,
        &issue(&ca, &proxy_key, "system:kube-proxy", 10),
    );
    assert!(holds_good_credentials(root));

    let other_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    put(root, KUBE_PROXY_KEY, &other_key.to_pem());
    assert!(
        !holds_good_credentials(root),
        "the certificate is not for the key"
    );

    put(root, KUBE_PROXY_KEY, &proxy_key.to_pem());
    put(
        root,
        KUBE_PROXY_CERT,
        &issue(&ca, &proxy_key, "system:kube-proxy", 0),
    );
    assert!(
        !holds_good_credentials(root),
        "the certificate ends within a day"
    );

    put(root, KUBE_PROXY_CERT, "not a certificate");
    assert!(!holds_good_credentials(root), "an unreadable certificate");
}

#[test]
fn kube_proxy_s_pair_is_written_only_where_the_spec_runs_kube_proxy() {
    let credentials = NewCredentials {
        ca_bundle: "ca".into(),
        client_pem: "client pem".into(),
        serving_pem: "serving pem".into(),
        client_cert: "client".into(),
        serving_cert: "serving".into(),
        kube_proxy_cert: "proxy cert".into(),
        kube_proxy_key: "proxy key".into(),
    };
    let paths = |extra: &str| {
        let spec = crate::model::test_spec(&format!(
            "containerd:\n  version: 1.7.27\nkubelet: {{}}\n{extra}"
        ));
        credentials
            .files(&spec)
            .into_iter()
            .map(|c| {
                let f = c.file;
                (
                    f.path.as_str().to_owned(),
                    f.ownership.mode.bits(),
                    f.secret,
                )
            })
            .collect::<Vec<_>>()
    };
    let with = paths("kubeProxy: {}\n");
    assert!(
        with.contains(&(KUBE_PROXY_KEY.to_owned(), 0o600, true)),
        "{with:?}"
    );
    assert!(
        with.contains(&(KUBE_PROXY_CERT.to_owned(), 0o644, false)),
        "{with:?}"
    );
    let without = paths("kubeProxy:\n  enabled: false\n");
    assert!(
        !without
            .iter()
            .any(|(p, _, _)| p.starts_with("/var/lib/kube-proxy/")),
        "{without:?}"
    );
    assert_eq!(with.len(), without.len() + 2);
}
