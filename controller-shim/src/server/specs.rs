//! Node specs by digest: a group's spec with sha256 D is `<prefix>nodespec/<D>.yaml`,
//! written once and never replaced. A spec read is checked against its name and kept:
//! what a digest names never changes, so a fleet booting at once reads it once, and a
//! spec read once is served through a store outage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::error::ProvideErrorMetadata;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::groups::spec_url;

#[derive(Debug, Clone)]
pub struct SpecBytes {
    pub bytes: Arc<Vec<u8>>,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// No spec with that digest under the group's prefix.
    #[error("no node spec at {url}")]
    NotFound { url: String },
    #[error("reading the node spec {url}: {detail}")]
    Unavailable { url: String, detail: String },
    /// The object under a digest's name holds other bytes: the store is damaged.
    #[error("the node spec {url} has sha256 {actual}, not the one its name says")]
    Corrupt { url: String, actual: String },
}

const MAX_SPEC_BYTES: usize = 4 << 20;
/// Specs kept in memory (a few KiB each): every group's recent digests.
const MAX_ENTRIES: usize = 512;

type Entry = Arc<OnceCell<SpecBytes>>;

pub struct SpecStore {
    s3: aws_sdk_s3::Client,
    entries: Mutex<HashMap<String, Entry>>,
}

impl SpecStore {
    pub fn new(s3: aws_sdk_s3::Client) -> Self {
        Self {
            s3,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The spec with `sha256` under `prefix`. Concurrent requests for one digest share
    /// one read; a failed read is not kept (the next request reads again).
    pub async fn get(&self, prefix: &str, sha256: &str) -> Result<SpecBytes, SpecError> {
        let url = spec_url(prefix, sha256);
        let entry = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries.len() >= MAX_ENTRIES && !entries.contains_key(&url) {
                // Immutable entries: dropping any is only a re-read later.
                entries.retain(|_, cell| cell.initialized() && fastrand::bool());
            }
            entries.entry(url.clone()).or_default().clone()
        };
        entry
            .get_or_try_init(|| async {
                let bytes = self.read(&url).await?;
                let actual = hex::encode(Sha256::digest(&bytes));
                if actual != sha256 {
                    return Err(SpecError::Corrupt { url, actual });
                }
                Ok(SpecBytes {
                    bytes: Arc::new(bytes),
                    sha256: actual,
                })
            })
            .await
            .cloned()
    }

    async fn read(&self, url: &str) -> Result<Vec<u8>, SpecError> {
        let fail = |detail: String| SpecError::Unavailable {
            url: url.to_owned(),
            detail,
        };
        let bytes = if let Some(path) = url.strip_prefix("file://") {
            match tokio::fs::read(path).await {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(SpecError::NotFound {
                        url: url.to_owned(),
                    });
                }
                Err(e) => return Err(fail(e.to_string())),
            }
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .ok_or_else(|| fail("no key after the bucket".to_owned()))?;
            let output = match self.s3.get_object().bucket(bucket).key(key).send().await {
                Ok(output) => output,
                Err(e) => {
                    return Err(match e.as_service_error() {
                        Some(s) if s.is_no_such_key() => SpecError::NotFound {
                            url: url.to_owned(),
                        },
                        Some(s) => fail(format!(
                            "{}: {}",
                            s.code().unwrap_or("Unknown"),
                            s.message().unwrap_or("")
                        )),
                        None => fail(crate::client::error_chain(&e)),
                    });
                }
            };
            if output
                .content_length()
                .is_some_and(|n| n > MAX_SPEC_BYTES as i64)
            {
                return Err(fail("too large to be a node spec".to_owned()));
            }
            output
                .body
                .collect()
                .await
                .map_err(|e| fail(e.to_string()))?
                .into_bytes()
                .to_vec()
        } else {
            return Err(fail("not an s3:// or file:// URL".to_owned()));
        };
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(fail(format!("{} bytes is too large", bytes.len())));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn store() -> SpecStore {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        SpecStore::new(aws_sdk_s3::Client::from_conf(config))
    }

    fn digest(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[tokio::test]
    async fn serves_exactly_the_digest_asked_for_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("file://{}/", dir.path().display());
        std::fs::create_dir(dir.path().join("nodespec")).unwrap();
        let put = |bytes: &[u8]| {
            let sha = digest(bytes);
            std::fs::write(dir.path().join(format!("nodespec/{sha}.yaml")), bytes).unwrap();
            sha
        };
        let old = put(b"old spec");
        let new = put(b"new spec");
        let specs = store();
        assert_eq!(*specs.get(&prefix, &old).await.unwrap().bytes, b"old spec");
        assert_eq!(*specs.get(&prefix, &new).await.unwrap().bytes, b"new spec");

        // Once read, a spec outlives its object (a store outage).
        std::fs::remove_file(dir.path().join(format!("nodespec/{old}.yaml"))).unwrap();
        assert_eq!(*specs.get(&prefix, &old).await.unwrap().bytes, b"old spec");
        let missing = store().get(&prefix, &old).await.unwrap_err();
        assert!(matches!(missing, SpecError::NotFound { .. }), "{missing}");
        assert!(missing.to_string().contains(&old), "{missing}");

        // An object whose bytes are not what its name says is refused.
        let wrong = digest(b"something else");
        std::fs::write(
            dir.path().join(format!("nodespec/{wrong}.yaml")),
            b"tampered",
        )
        .unwrap();
        let corrupt = store().get(&prefix, &wrong).await.unwrap_err();
        assert!(matches!(corrupt, SpecError::Corrupt { .. }), "{corrupt}");
    }
}
