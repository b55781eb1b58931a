//! The node groups' specs, read from the state store (or a file) and kept for a short
//! while, so that a fleet booting at once reads each spec once, not once per node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

#[derive(Debug, Clone)]
pub struct SpecBytes {
    pub bytes: Arc<Vec<u8>>,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
#[error("reading the node spec {url}: {detail}")]
pub struct SpecError {
    pub url: String,
    pub detail: String,
}

const MAX_SPEC_BYTES: usize = 4 << 20;

pub struct SpecCache {
    s3: aws_sdk_s3::Client,
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, SpecBytes)>>,
}

impl SpecCache {
    pub fn new(s3: aws_sdk_s3::Client, ttl: Duration) -> Self {
        Self {
            s3,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The spec at `url`: from the cache while fresh; when a re-read fails, the last
    /// good copy is served and the failure logged (the spec rarely changes; S3 blips do).
    pub async fn get(&self, url: &str) -> Result<SpecBytes, SpecError> {
        // Holding the lock while reading makes concurrent misses wait for one read.
        let mut entries = self.entries.lock().await;
        if let Some((at, spec)) = entries.get(url)
            && at.elapsed() < self.ttl
        {
            return Ok(spec.clone());
        }
        match self.read(url).await {
            Ok(bytes) => {
                let spec = SpecBytes {
                    sha256: hex::encode(Sha256::digest(&bytes)),
                    bytes: Arc::new(bytes),
                };
                entries.insert(url.to_owned(), (Instant::now(), spec.clone()));
                Ok(spec)
            }
            Err(e) => match entries.get(url) {
                Some((_, stale)) => {
                    tracing::warn!(error = %e, "serving the last good copy of the node spec");
                    Ok(stale.clone())
                }
                None => Err(e),
            },
        }
    }

    async fn read(&self, url: &str) -> Result<Vec<u8>, SpecError> {
        let fail = |detail: String| SpecError {
            url: url.to_owned(),
            detail,
        };
        let bytes = if let Some(path) = url.strip_prefix("file://") {
            tokio::fs::read(path)
                .await
                .map_err(|e| fail(e.to_string()))?
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .ok_or_else(|| fail("no key after the bucket".to_owned()))?;
            let output = self
                .s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| match e.as_service_error() {
                    Some(s) => fail(format!(
                        "{}: {}",
                        s.code().unwrap_or("Unknown"),
                        s.message().unwrap_or("")
                    )),
                    None => fail(crate::client::error_chain(&e)),
                })?;
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

    fn cache(ttl: Duration) -> SpecCache {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        SpecCache::new(aws_sdk_s3::Client::from_conf(config), ttl)
    }

    #[tokio::test]
    async fn serves_fresh_copies_and_the_last_good_one_when_the_source_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.yaml");
        let url = format!("file://{}", path.display());
        std::fs::write(&path, "one").unwrap();

        let cached = cache(Duration::from_secs(3600));
        assert_eq!(*cached.get(&url).await.unwrap().bytes, b"one");
        std::fs::write(&path, "two").unwrap();
        assert_eq!(
            *cached.get(&url).await.unwrap().bytes,
            b"one",
            "within the TTL"
        );

        let uncached = cache(Duration::ZERO);
        let spec = uncached.get(&url).await.unwrap();
        assert_eq!(*spec.bytes, b"two");
        assert_eq!(spec.sha256, hex::encode(Sha256::digest(b"two")));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            *uncached.get(&url).await.unwrap().bytes,
            b"two",
            "the last good copy"
        );

        let err = cache(Duration::ZERO)
            .get(&url)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.yaml"), "{err}");
    }
}
