//! A test PKI, made with the same library the nodes issue with, published where a
//! control-plane spec's `controlPlane.pki.store` says (emulated S3 or a directory).

use std::path::Path;
use std::time::Duration;

use nodewright_shim::pki::{CertificateAuthority, KeyAlgorithm, PrivateKey, encode_pem};

use crate::moto::Moto;

/// A CA as PEM texts.
#[derive(Clone)]
pub struct TestCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn generate(common_name: &str) -> Self {
        let (ca, key) =
            CertificateAuthority::create(common_name, Duration::from_secs(10 * 365 * 86400))
                .expect("a CA is generated");
        Self {
            cert_pem: ca.cert_pem().to_owned(),
            key_pem: key.to_pem(),
        }
    }

    pub fn authority(&self) -> CertificateAuthority {
        CertificateAuthority::from_pem("test CA", &self.cert_pem, &self.key_pem)
            .expect("the test CA loads")
    }
}

/// Every object of a PKI store (docs/pki.md).
#[derive(Clone)]
pub struct TestPki {
    pub cluster: TestCa,
    pub front_proxy: TestCa,
    pub etcd: TestCa,
    pub sa_key: String,
    pub sa_pub: String,
    pub encryption_config: String,
}

impl TestPki {
    pub fn generate() -> Self {
        let sa = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("a key is generated");
        let secret: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
        let secret = encode_pem("X", &secret)
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>();
        Self {
            cluster: TestCa::generate("kubernetes-ca"),
            front_proxy: TestCa::generate("front-proxy-ca"),
            etcd: TestCa::generate("etcd-ca"),
            sa_key: sa.to_pem(),
            sa_pub: encode_pem("PUBLIC KEY", sa.public_key().spki_der()),
            encryption_config: format!(
                "apiVersion: apiserver.config.k8s.io/v1\n\
                 kind: EncryptionConfiguration\n\
                 resources:\n  - resources: [secrets]\n    providers:\n      \
                 - aescbc:\n          keys:\n            - name: key1\n              \
                 secret: {secret}\n      - identity: {{}}\n"
            ),
        }
    }

    /// (object name, content) in the store's layout.
    pub fn objects(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ca.crt", self.cluster.cert_pem.clone()),
            ("ca.key", self.cluster.key_pem.clone()),
            ("front-proxy-ca.crt", self.front_proxy.cert_pem.clone()),
            ("front-proxy-ca.key", self.front_proxy.key_pem.clone()),
            ("etcd-ca.crt", self.etcd.cert_pem.clone()),
            ("etcd-ca.key", self.etcd.key_pem.clone()),
            ("sa.key", self.sa_key.clone()),
            ("sa.pub", self.sa_pub.clone()),
            ("encryption-config.yaml", self.encryption_config.clone()),
        ]
    }

    /// Publishes every object under `store` (`s3://bucket/prefix/` in `moto`, or
    /// `file:///dir/`).
    pub fn publish(&self, store: &str, moto: Option<&Moto>) {
        for (name, content) in self.objects() {
            put(store, name, content.as_bytes(), moto);
        }
    }
}

/// Writes (or replaces) one object of a store.
pub fn put(store: &str, name: &str, content: &[u8], moto: Option<&Moto>) {
    if let Some(rest) = store.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').expect("s3://bucket/prefix/");
        moto.expect("an s3:// store needs the emulator").put_object(
            bucket,
            &format!("{prefix}{name}"),
            content,
        );
    } else if let Some(dir) = store.strip_prefix("file://") {
        std::fs::create_dir_all(dir).expect("the store directory is created");
        std::fs::write(Path::new(dir).join(name), content).expect("the object is written");
    } else {
        panic!("unsupported store {store}");
    }
}

/// Removes one object of a store (`file://` only; on S3, overwrite it).
pub fn remove(store: &str, name: &str) {
    let dir = store.strip_prefix("file://").expect("a file:// store");
    std::fs::remove_file(Path::new(dir).join(name)).expect("the object is removed");
}

/// `controlPlane.pki.store` of a spec, if it has one.
pub fn store_of(spec: &[u8]) -> Option<String> {
    let value: yaml_serde::Value = yaml_serde::from_slice(spec).ok()?;
    value
        .get("controlPlane")?
        .get("pki")?
        .get("store")?
        .as_str()
        .map(str::to_owned)
}
