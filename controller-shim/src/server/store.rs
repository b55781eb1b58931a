//! Bootstrap records, one S3 object per instance under the state store's prefix.
//!
//! Why S3 with conditional writes: the record must survive restarts and be shared by
//! every replica, and two replicas (or two requests) racing to bootstrap one instance
//! must not both win. `PutObject` with `If-None-Match: *` creates a record only if none
//! exists, atomically, so exactly one bootstrap claims an instance; a re-bootstrap
//! replaces it with `If-Match: <etag>`. The state store is already the cluster's
//! source of truth, and the control plane already holds credentials for it.
//!
//! The fleet view is answered from memory: records this shim writes go straight into
//! it, and a refresh now and then (one LIST, then a GET only for the records whose ETag
//! changed: other replicas' writes) brings in the rest. A request for the fleet costs
//! no S3 call at all.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::SystemTime;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use futures_util::StreamExt;

use crate::protocol::NodeRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state store s3://{bucket}/{key}: {detail}")]
    Unavailable {
        bucket: String,
        key: String,
        detail: String,
    },
    #[error("the record s3://{bucket}/{key} does not parse: {detail}")]
    Corrupt {
        bucket: String,
        key: String,
        detail: String,
    },
}

/// The outcome of a conditional write.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    Done,
    /// Someone else wrote first; read again.
    Conflict,
}

#[derive(Debug)]
pub struct NodeStore {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    fleet: RwLock<Fleet>,
}

/// The records as last seen: by key, with their ETags.
#[derive(Debug, Default)]
struct Fleet {
    records: HashMap<String, (String, NodeRecord)>,
    refreshed_at: Option<SystemTime>,
}

impl NodeStore {
    pub fn new(s3: aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Self {
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        Self {
            s3,
            bucket: bucket.to_owned(),
            prefix,
            fleet: RwLock::new(Fleet::default()),
        }
    }

    fn key(&self, instance_id: &str) -> String {
        format!("{}{instance_id}.json", self.prefix)
    }

    fn unavailable(&self, key: &str, detail: String) -> StoreError {
        StoreError::Unavailable {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            detail,
        }
    }

    /// The record of an instance and its ETag, if there is one.
    pub async fn get(&self, instance_id: &str) -> Result<Option<(NodeRecord, String)>, StoreError> {
        let key = self.key(instance_id);
        self.get_key(&key).await
    }

    async fn get_key(&self, key: &str) -> Result<Option<(NodeRecord, String)>, StoreError> {
        let output = match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => return Ok(None),
            Err(e) => return Err(self.unavailable(key, describe(&e))),
        };
        let etag = output.e_tag().unwrap_or_default().to_owned();
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|e| self.unavailable(key, e.to_string()))?
            .into_bytes();
        let record = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(Some((record, etag)))
    }

    /// Creates the record unless one exists.
    pub async fn create(&self, record: &NodeRecord) -> Result<Write, StoreError> {
        self.put(record, Condition::Absent).await
    }

    /// Replaces the record if it is still the one with `etag`.
    pub async fn replace(&self, record: &NodeRecord, etag: &str) -> Result<Write, StoreError> {
        self.put(record, Condition::Matches(etag)).await
    }

    async fn put(
        &self,
        record: &NodeRecord,
        condition: Condition<'_>,
    ) -> Result<Write, StoreError> {
        let key = self.key(&record.instance_id);
        let body = serde_json::to_vec_pretty(record).unwrap_or_default();
        let mut request = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        request = match condition {
            Condition::Absent => request.if_none_match("*"),
            Condition::Matches(etag) => request.if_match(etag),
        };
        match request.send().await {
            Ok(output) => {
                let etag = output.e_tag().unwrap_or_default().to_owned();
                self.remember(key, etag, record.clone());
                Ok(Write::Done)
            }
            Err(e) if is_conflict(&e) => Ok(Write::Conflict),
            Err(e) => Err(self.unavailable(&key, describe(&e))),
        }
    }

    fn remember(&self, key: String, etag: String, record: NodeRecord) {
        let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
        fleet.records.insert(key, (etag, record));
    }

    /// The record of `instance_id` as last seen, if any. No S3 call.
    pub fn remembered(&self, instance_id: &str) -> Option<NodeRecord> {
        let fleet = self.fleet.read().unwrap_or_else(|e| e.into_inner());
        fleet
            .records
            .get(&self.key(instance_id))
            .map(|(_, record)| record.clone())
    }

    /// Every record as last seen, oldest bootstrap first, and when the view was last
    /// brought up to date (None: never yet). No S3 call.
    pub fn fleet(&self) -> (Vec<NodeRecord>, Option<SystemTime>) {
        let fleet = self.fleet.read().unwrap_or_else(|e| e.into_inner());
        let mut records: Vec<NodeRecord> = fleet.records.values().map(|(_, r)| r.clone()).collect();
        records.sort_by(|a, b| {
            (&a.bootstrapped_at, &a.instance_id).cmp(&(&b.bootstrapped_at, &b.instance_id))
        });
        (records, fleet.refreshed_at)
    }

    /// Brings the fleet view up to date: one LIST (per 1000 records), then a GET for
    /// each record that is new or changed. Returns how many were read.
    pub async fn refresh(&self) -> Result<usize, StoreError> {
        let mut listed: HashMap<String, String> = HashMap::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.unavailable(&self.prefix, describe(&e)))?;
            for object in page.contents() {
                if let Some(key) = object.key()
                    && key.ends_with(".json")
                {
                    listed.insert(
                        key.to_owned(),
                        object.e_tag().unwrap_or_default().to_owned(),
                    );
                }
            }
        }
        let stale: Vec<String> = {
            let fleet = self.fleet.read().unwrap_or_else(|e| e.into_inner());
            listed
                .iter()
                .filter(|(key, etag)| {
                    fleet
                        .records
                        .get(*key)
                        .is_none_or(|(known, _)| known != *etag)
                })
                .map(|(key, _)| key.clone())
                .collect()
        };
        let read: Vec<(String, String, NodeRecord)> = futures_util::stream::iter(stale)
            .map(|key| async move {
                let found = self.get_key(&key).await;
                found.map(|r| r.map(|(record, etag)| (key, etag, record)))
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .filter_map(|r| match r {
                Ok(found) => found,
                Err(e) => {
                    // One unreadable record must not hide the fleet.
                    tracing::warn!(error = %e, "skipping a bootstrap record");
                    None
                }
            })
            .collect();
        let count = read.len();
        let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
        fleet.records.retain(|key, _| listed.contains_key(key));
        for (key, etag, record) in read {
            fleet.records.insert(key, (etag, record));
        }
        fleet.refreshed_at = Some(SystemTime::now());
        Ok(count)
    }
}

enum Condition<'a> {
    Absent,
    Matches(&'a str),
}

fn is_conflict<E, R>(error: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(e) => matches!(
            e.err().code(),
            Some("PreconditionFailed" | "ConditionalRequestConflict")
        ),
        _ => false,
    }
}

fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error {
        SdkError::ServiceError(e) => format!(
            "{}: {}",
            e.err().code().unwrap_or("Unknown"),
            e.err().message().unwrap_or("")
        ),
        other => crate::client::error_chain(other),
    }
}
