//! The node groups the shim serves, from its configuration or from a document in the
//! state store that it re-reads while it runs: adding a group is a write to the store,
//! not a change to the control plane.
//!
//! The document is re-read every `refresh` (a conditional GET: unchanged costs a 304),
//! and when an authenticated request names a group the shim does not know, at most once
//! per `min_reread` (a new group is served within seconds, and requests cannot make the
//! shim hammer the store). A document that does not parse or validate never replaces
//! the last good one: the error is logged and counted.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::error::ProvideErrorMetadata;
use tokio::sync::Mutex;

use super::metrics::Metrics;
use crate::config::NodeGroupsSource;
use crate::groups::{MAX_DOCUMENT_BYTES, NodeGroup, NodeGroups};

/// What a lookup found.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Arc<NodeGroup>),
    Unknown,
    /// The groups have never been read (the store was unreachable since the start).
    NotLoaded,
}

type Groups = HashMap<String, Arc<NodeGroup>>;

pub struct GroupRegistry {
    source: Source,
    current: RwLock<Option<Arc<Groups>>>,
    metrics: Arc<Metrics>,
    min_reread: Duration,
    /// One read at a time; also when the last one started.
    reading: Mutex<Option<Instant>>,
}

enum Source {
    Inline,
    Store {
        url: String,
        s3: aws_sdk_s3::Client,
        /// The ETag (S3) or bytes (file) of the document last read, good or not.
        seen: Mutex<Option<Seen>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    ETag(String),
    Bytes(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the node groups {url}: {detail}")]
    Unavailable { url: String, detail: String },
    #[error(transparent)]
    Invalid(#[from] crate::groups::GroupsError),
}

impl GroupRegistry {
    pub fn new(
        source: &NodeGroupsSource,
        s3: aws_sdk_s3::Client,
        metrics: Arc<Metrics>,
        min_reread: Duration,
    ) -> Self {
        let (source, current) = match source {
            NodeGroupsSource::Inline(groups) => (Source::Inline, Some(Arc::new(index(groups)))),
            NodeGroupsSource::Store(url) => (
                Source::Store {
                    url: url.clone(),
                    s3,
                    seen: Mutex::new(None),
                },
                None,
            ),
        };
        if let Some(groups) = &current {
            metrics.node_groups_loaded(groups.len(), SystemTime::now());
        }
        Self {
            source,
            current: RwLock::new(current),
            metrics,
            min_reread,
            reading: Mutex::new(None),
        }
    }

    /// Where the groups come from, for logs.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Inline => "the configuration".to_owned(),
            Source::Store { url, .. } => url.clone(),
        }
    }

    /// The group `name` as last read, without reading the store.
    pub fn lookup(&self, name: &str) -> Lookup {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        match current.as_ref() {
            None => Lookup::NotLoaded,
            Some(groups) => match groups.get(name) {
                Some(group) => Lookup::Found(group.clone()),
                None => Lookup::Unknown,
            },
        }
    }

    /// The group `name`. An unknown name re-reads the store first, unless it was read
    /// less than `min_reread` ago. Call only for authenticated requests.
    pub async fn get(&self, name: &str) -> Lookup {
        match self.lookup(name) {
            Lookup::Found(group) => Lookup::Found(group),
            _ if matches!(self.source, Source::Inline) => Lookup::Unknown,
            _ => {
                self.reread(Some(self.min_reread)).await;
                self.lookup(name)
            }
        }
    }

    /// Re-reads the store now (the periodic refresh). No-op for inline groups.
    pub async fn refresh(&self) {
        self.reread(None).await;
    }

    /// Reads the document unless another read is under way (then waits for it) or, with
    /// `not_within`, one started that recently.
    async fn reread(&self, not_within: Option<Duration>) {
        let Source::Store { url, s3, seen } = &self.source else {
            return;
        };
        let mut reading = self.reading.lock().await;
        if let (Some(window), Some(last)) = (not_within, *reading)
            && last.elapsed() < window
        {
            return;
        }
        *reading = Some(Instant::now());
        let mut seen = seen.lock().await;
        match read(s3, url, seen.as_ref()).await {
            Ok(None) => {} // unchanged
            Ok(Some((text, stamp))) => {
                *seen = Some(stamp);
                match NodeGroups::parse(url, &text) {
                    Ok(document) => self.install(&document),
                    Err(e) => self.broken(&ReadError::Invalid(e)),
                }
            }
            Err(e) => self.broken(&e),
        }
    }

    fn install(&self, document: &NodeGroups) {
        let groups = index(&document.node_groups);
        let names: Vec<&str> = document
            .node_groups
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        tracing::info!(source = %self.describe(), groups = ?names, "node groups loaded");
        self.metrics
            .node_groups_loaded(groups.len(), SystemTime::now());
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(groups));
    }

    fn broken(&self, error: &ReadError) {
        let kept = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|g| g.len());
        let reason = match error {
            ReadError::Unavailable { .. } => "unavailable",
            ReadError::Invalid(_) => "invalid",
        };
        self.metrics.node_groups_error(reason);
        match kept {
            Some(count) => tracing::error!(error = %error, kept_groups = count,
                "the node groups could not be read; serving the last good copy"),
            None => tracing::error!(error = %error,
                "the node groups could not be read, and none were read before"),
        }
    }

    /// Runs the periodic refresh until the task is dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        if matches!(self.source, Source::Inline) {
            return None;
        }
        let registry = self.clone();
        Some(tokio::spawn(async move {
            loop {
                registry.refresh().await;
                tokio::time::sleep(every).await;
            }
        }))
    }
}

fn index(groups: &[NodeGroup]) -> Groups {
    groups
        .iter()
        .map(|g| (g.name.clone(), Arc::new(g.clone())))
        .collect()
}

/// The document's text and what identifies this version of it, or None when it is the
/// version `known`.
async fn read(
    s3: &aws_sdk_s3::Client,
    url: &str,
    known: Option<&Seen>,
) -> Result<Option<(String, Seen)>, ReadError> {
    let fail = |detail: String| ReadError::Unavailable {
        url: url.to_owned(),
        detail,
    };
    let text = |bytes: Vec<u8>| {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(fail(format!("{} bytes is too large", bytes.len())));
        }
        String::from_utf8(bytes).map_err(|_| fail("the document is not UTF-8".to_owned()))
    };
    if let Some(path) = url.strip_prefix("file://") {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let stamp = Seen::Bytes(bytes.clone());
        if known == Some(&stamp) {
            return Ok(None);
        }
        return Ok(Some((text(bytes)?, stamp)));
    }
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| fail("not an s3:// or file:// URL".to_owned()))?;
    let (bucket, key) = rest
        .split_once('/')
        .ok_or_else(|| fail("no key after the bucket".to_owned()))?;
    let mut request = s3.get_object().bucket(bucket).key(key);
    if let Some(Seen::ETag(etag)) = known {
        request = request.if_none_match(etag);
    }
    let output = match request.send().await {
        Ok(output) => output,
        Err(e) => {
            if e.raw_response().is_some_and(|r| r.status().as_u16() == 304) {
                return Ok(None);
            }
            return Err(match e.as_service_error() {
                Some(s) => fail(format!(
                    "{}: {}",
                    s.code().unwrap_or("Unknown"),
                    s.message().unwrap_or("")
                )),
                None => fail(crate::client::error_chain(&e)),
            });
        }
    };
    let etag = output.e_tag().unwrap_or_default().to_owned();
    if !etag.is_empty() && known == Some(&Seen::ETag(etag.clone())) {
        return Ok(None);
    }
    let bytes = output
        .body
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?
        .into_bytes()
        .to_vec();
    Ok(Some((text(bytes)?, Seen::ETag(etag))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn registry(source: &NodeGroupsSource, metrics: Arc<Metrics>) -> GroupRegistry {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        GroupRegistry::new(
            source,
            aws_sdk_s3::Client::from_conf(config),
            metrics,
            Duration::ZERO,
        )
    }

    #[tokio::test]
    async fn a_broken_document_keeps_the_last_good_one_and_a_new_group_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("groups.yaml");
        let url = format!("file://{}", path.display());
        let metrics = Arc::new(Metrics::new());
        let groups = registry(&NodeGroupsSource::Store(url), metrics.clone());
        assert!(matches!(groups.get("gpu").await, Lookup::NotLoaded));

        let document = crate::groups::tests::DOCUMENT;
        let first_only = document.split("  - name: gpu").next().unwrap();
        std::fs::write(&path, first_only).unwrap();
        groups.refresh().await;
        assert!(matches!(
            groups.get("nodes-us-east-1a").await,
            Lookup::Found(_)
        ));

        // Broken: unknown field. The good copy stays, the error is counted.
        std::fs::write(&path, format!("{first_only}    bogus: 1\n")).unwrap();
        groups.refresh().await;
        assert!(matches!(
            groups.get("nodes-us-east-1a").await,
            Lookup::Found(_)
        ));
        let text = metrics.render();
        assert!(
            text.contains("controller_shim_node_groups_errors_total{reason=\"invalid\"} 1"),
            "{text}"
        );

        // A new group appears in the store: an unknown name reads it again.
        std::fs::write(&path, document).unwrap();
        match groups.get("gpu").await {
            Lookup::Found(group) => assert_eq!(group.roles, ["gpu.prod.example.com"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(groups.get("nope").await, Lookup::Unknown));
    }
}
