//! The backup store: one etcd cluster's prefix in S3 (kops's `backupStore`), laid out
//! as in `layout.rs`. Large objects go up as multipart uploads, so a backup never needs
//! a local copy, and an upload that fails is aborted: S3 shows no object until the
//! upload completes, so a broken backup leaves nothing behind but, if even the abort
//! fails, an invisible upload that the next round aborts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;

use super::layout::{BackupName, DATA_FILE, META_FILE};
use crate::error::chain as error_chain;

/// S3 refuses parts smaller than this, but for the last.
pub const MIN_PART: usize = 5 << 20;
/// Small documents (records, meta) larger than this are not ours.
const MAX_DOCUMENT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("{what} {url}: {detail}")]
pub struct StoreError {
    pub what: &'static str,
    pub url: String,
    pub detail: String,
    pub kind: StoreErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// No answer: network, DNS, timeouts, S3 5xx and throttling.
    Unreachable,
    /// S3 answered no: access denied, no such bucket.
    Refused,
    NotFound,
    /// An object that is not what it should be.
    Invalid,
}

/// One etcd cluster's backups: `s3://bucket/prefix/`.
#[derive(Clone)]
pub struct BackupStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    /// Bounds every call but a part upload's body transfer.
    call_timeout: Duration,
}

/// What a listing found: complete backups (their meta is there) and the names of
/// directories that hold objects but no meta (a backup that broke off, or one being
/// written right now).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    pub complete: BTreeSet<BackupName>,
    pub incomplete: BTreeSet<BackupName>,
    /// Objects by backup, for removal.
    objects: BTreeMap<BackupName, Vec<String>>,
}

impl Listing {
    pub fn newest(&self) -> Option<&BackupName> {
        self.complete.iter().next_back()
    }
}

impl BackupStore {
    /// `url` is `s3://bucket/prefix/` (the prefix ends with `/`).
    pub fn new(
        client: aws_sdk_s3::Client,
        url: &str,
        call_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let (bucket, prefix) = parse_url(url).map_err(|detail| StoreError {
            what: "backup store",
            url: url.to_owned(),
            detail,
            kind: StoreErrorKind::Invalid,
        })?;
        Ok(Self {
            client,
            bucket,
            prefix,
            call_timeout,
        })
    }

    /// `s3://bucket/prefix/`.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// `s3://bucket/prefix/<name>/<file>`.
    pub fn object_url(&self, name: &BackupName, file: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(name, file))
    }

    /// The URL of the backup named `name` (as text), its directory.
    pub fn object_url_of(&self, name: &str) -> String {
        format!("s3://{}/{}{name}/", self.bucket, self.prefix)
    }

    fn key(&self, name: &BackupName, file: &str) -> String {
        format!("{}{name}/{file}", self.prefix)
    }

    /// The backups whose names sort after `after` (all when `None`).
    pub async fn list(&self, after: Option<&str>) -> Result<Listing, StoreError> {
        let mut listing = Listing::default();
        let mut files: BTreeMap<BackupName, BTreeSet<String>> = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let mut request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix);
            if let Some(after) = after {
                request = request.start_after(format!("{}{after}", self.prefix));
            }
            if let Some(token) = &token {
                request = request.continuation_token(token);
            }
            let page = self.timed("listing", &self.url(), request.send()).await?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let Some((dir, file)) = key[self.prefix.len()..].split_once('/') else {
                    continue;
                };
                // Anything that is not a backup (etcd-manager's `control/`) is not ours.
                let Some(name) = BackupName::parse(dir) else {
                    continue;
                };
                files
                    .entry(name.clone())
                    .or_default()
                    .insert(file.to_owned());
                listing
                    .objects
                    .entry(name)
                    .or_default()
                    .push(key.to_owned());
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() || page.is_truncated() != Some(true) {
                break;
            }
        }
        for (name, files) in files {
            if files.contains(META_FILE) {
                listing.complete.insert(name);
            } else {
                listing.incomplete.insert(name);
            }
        }
        Ok(listing)
    }

    /// A small document of backup `name` (its record or meta), `None` if absent.
    pub async fn read_document(
        &self,
        name: &BackupName,
        file: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let url = self.object_url(name, file);
        let answer = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(name, file))
            .send();
        let object = match self.timed("reading", &url, answer).await {
            Ok(object) => object,
            Err(e) if e.kind == StoreErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if object.content_length().unwrap_or(0) as usize > MAX_DOCUMENT {
            return Err(StoreError {
                what: "reading",
                url,
                detail: format!("larger than the {MAX_DOCUMENT} bytes a backup document may be"),
                kind: StoreErrorKind::Invalid,
            });
        }
        let body = tokio::time::timeout(self.call_timeout, object.body.collect())
            .await
            .map_err(|_| unreachable_error("reading", &url, "timed out"))?
            .map_err(|e| unreachable_error("reading", &url, &error_chain(&e)))?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    pub async fn put_document(
        &self,
        name: &BackupName,
        file: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StoreError> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(name, file))
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send();
        self.timed("writing", &self.object_url(name, file), request)
            .await
            .map(drop)
    }

    /// The body of a backup's data object, streamed.
    pub async fn open_data(&self, name: &BackupName) -> Result<(ByteStream, u64), StoreError> {
        let url = self.object_url(name, DATA_FILE);
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(name, DATA_FILE))
            .send();
        let object = self.timed("reading", &url, request).await?;
        let size = object.content_length().unwrap_or(0).max(0) as u64;
        Ok((object.body, size))
    }

    /// Removes every object of backup `name` (as listed in `listing`).
    pub async fn remove(&self, listing: &Listing, name: &BackupName) -> Result<(), StoreError> {
        let Some(keys) = listing.objects.get(name) else {
            return Ok(());
        };
        let url = self.object_url(name, "");
        // The meta goes first: a backup half-removed is no longer listed as one.
        let (meta, rest): (Vec<String>, Vec<String>) =
            keys.iter().cloned().partition(|k| k.ends_with(META_FILE));
        for batch in [meta, rest] {
            if batch.is_empty() {
                continue;
            }
            let objects: Vec<ObjectIdentifier> = batch
                .iter()
                .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StoreError {
                    what: "removing",
                    url: url.clone(),
                    detail: e.to_string(),
                    kind: StoreErrorKind::Invalid,
                })?;
            let request = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send();
            let answer = self.timed("removing", &url, request).await?;
            if let Some(failed) = answer.errors().first() {
                return Err(StoreError {
                    what: "removing",
                    url,
                    detail: format!(
                        "{}: {}",
                        failed.key().unwrap_or("?"),
                        failed.message().unwrap_or("refused")
                    ),
                    kind: StoreErrorKind::Refused,
                });
            }
        }
        Ok(())
    }

    /// Starts the multipart upload of backup `name`'s data, with `metadata` on the object.
    pub async fn start_upload(
        &self,
        name: &BackupName,
        metadata: &[(&str, String)],
    ) -> Result<Upload, StoreError> {
        let key = self.key(name, DATA_FILE);
        let url = self.object_url(name, DATA_FILE);
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/gzip");
        for (k, v) in metadata {
            request = request.metadata(*k, v);
        }
        let answer = self
            .timed("starting the upload of", &url, request.send())
            .await?;
        let id = answer.upload_id().ok_or_else(|| StoreError {
            what: "starting the upload of",
            url: url.clone(),
            detail: "S3 answered without an upload id".to_owned(),
            kind: StoreErrorKind::Invalid,
        })?;
        Ok(Upload {
            store: self.clone(),
            key,
            url,
            id: id.to_owned(),
            parts: Vec::new(),
        })
    }

    /// Aborts the multipart uploads of backups named before `before`: left by a round
    /// that died, or whose abort failed. Returns how many.
    pub async fn abort_stale_uploads(&self, before: SystemTime) -> Result<usize, StoreError> {
        let request = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .send();
        let answer = self
            .timed("listing the uploads of", &self.url(), request)
            .await?;
        let mut aborted = 0;
        for upload in answer.uploads() {
            let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                continue;
            };
            // When the round that started it began: the backup's name in the key says
            // so by the rounds' own clock (S3's `Initiated` would do as well on S3, but
            // not on every S3-compatible store). Uploads not of a backup are not ours.
            let Some(name) = key
                .strip_prefix(&self.prefix)
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(dir, _)| BackupName::parse(dir))
            else {
                continue;
            };
            if name.time() >= before {
                continue;
            }
            let request = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(id)
                .send();
            self.timed(
                "aborting an upload of",
                &format!("s3://{}/{key}", self.bucket),
                request,
            )
            .await?;
            aborted += 1;
        }
        Ok(aborted)
    }

    /// Runs an S3 call under the call timeout, with its error classified.
    async fn timed<T, E>(
        &self,
        what: &'static str,
        url: &str,
        call: impl Future<Output = Result<T, SdkError<E, aws_smithy_runtime_api::http::Response>>>,
    ) -> Result<T, StoreError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match tokio::time::timeout(self.call_timeout, call).await {
            Err(_) => Err(unreachable_error(
                what,
                url,
                &format!("no answer within {:?}", self.call_timeout),
            )),
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(classify(what, url, e)),
        }
    }
}

/// A multipart upload in progress.
pub struct Upload {
    store: BackupStore,
    key: String,
    url: String,
    id: String,
    parts: Vec<CompletedPart>,
}

impl Upload {
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Uploads the next part (at least [`MIN_PART`] bytes, but for the last).
    pub async fn put_part(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        let number = self.parts.len() as i32 + 1;
        // A part may take a while on a slow link: allow for 1 MiB/s.
        let budget = self.store.call_timeout + Duration::from_secs((bytes.len() >> 20) as u64);
        let request = self
            .store
            .client
            .upload_part()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send();
        let answer = match tokio::time::timeout(budget, request).await {
            Err(_) => {
                return Err(unreachable_error(
                    "uploading a part of",
                    &self.url,
                    &format!("part {number} not sent within {budget:?}"),
                ));
            }
            Ok(answer) => answer.map_err(|e| classify("uploading a part of", &self.url, e))?,
        };
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(answer.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }

    pub async fn complete(&self) -> Result<(), StoreError> {
        let request = self
            .store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(self.parts.clone()))
                    .build(),
            )
            .send();
        self.store
            .timed("completing the upload of", &self.url, request)
            .await
            .map(drop)
    }

    /// Gives the upload up: S3 drops its parts and no object appears.
    pub async fn abort(self) -> Result<(), StoreError> {
        let request = self
            .store
            .client
            .abort_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .send();
        self.store
            .timed("aborting the upload of", &self.url, request)
            .await
            .map(drop)
    }
}

/// `s3://bucket/prefix/` into the bucket and the prefix.
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{url:?} is not an s3:// URL"))?;
    let (bucket, prefix) = rest
        .split_once('/')
        .ok_or_else(|| format!("{url:?} names no prefix in the bucket"))?;
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !bucket_ok {
        return Err(format!("{bucket:?} is not a valid S3 bucket name"));
    }
    if prefix.is_empty() || !prefix.ends_with('/') || prefix.starts_with('/') {
        return Err(format!(
            "{url:?}: the prefix must be a directory such as prod.example.com/backups/etcd/main/"
        ));
    }
    if prefix.split('/').any(|part| part == "." || part == "..") {
        return Err(format!("{url:?}: the prefix must not contain . or .."));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

fn unreachable_error(what: &'static str, url: &str, detail: &str) -> StoreError {
    StoreError {
        what,
        url: url.to_owned(),
        detail: detail.to_owned(),
        kind: StoreErrorKind::Unreachable,
    }
}

fn classify<E>(
    what: &'static str,
    url: &str,
    error: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let (detail, kind) = match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown");
            let message = service.err().message().unwrap_or("");
            let kind = match (code, status) {
                ("NoSuchKey" | "NotFound" | "NoSuchUpload", _) | (_, Some(404)) => {
                    StoreErrorKind::NotFound
                }
                ("SlowDown" | "Throttling" | "RequestTimeout" | "InternalError", _) => {
                    StoreErrorKind::Unreachable
                }
                (_, Some(s)) if s >= 500 => StoreErrorKind::Unreachable,
                _ => StoreErrorKind::Refused,
            };
            let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
            (format!("{code}{status}: {message}"), kind)
        }
        other => (error_chain(other), StoreErrorKind::Unreachable),
    };
    StoreError {
        what,
        url: url.to_owned(),
        detail,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(
            parse_url("s3://state/prod.example.com/backups/etcd/main/").unwrap(),
            (
                "state".to_owned(),
                "prod.example.com/backups/etcd/main/".to_owned()
            )
        );
        for bad in [
            "state/prefix/",
            "s3://state",
            "s3://state/",
            "s3://state/prefix",
            "s3://St/prefix/",
            "s3://state/a/../b/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
