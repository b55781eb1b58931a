//! The test PKI: the cluster kit's own generator (`nodewright_cluster::pki`, what
//! `nodewright-cluster pki init` writes), published where a control-plane spec's
//! `controlPlane.pki.store` says (emulated S3 or a directory).

use std::path::Path;

pub use nodewright_cluster::pki::{CaPair as TestCa, Pki as TestPki};

use crate::moto::Moto;

/// A new PKI, as `pki init` makes one.
pub fn generate() -> TestPki {
    TestPki::generate().expect("the cluster kit generates a PKI")
}

/// Publishing a PKI into a test store.
pub trait Publish {
    /// Publishes every object under `store` (`s3://bucket/prefix/` in `moto`, or
    /// `file:///dir/`).
    fn publish(&self, store: &str, moto: Option<&Moto>);
}

impl Publish for TestPki {
    fn publish(&self, store: &str, moto: Option<&Moto>) {
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
