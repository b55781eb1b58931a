//! One backup round of one etcd cluster, run by every member at every interval: only
//! etcd's leader (asked over the client API) takes a backup, and only if the store holds
//! none for the current interval slot yet, so three members make one backup per
//! interval with no coordination of our own.
//!
//! The snapshot streams from etcd through gzip into a multipart upload (three stages
//! joined by small bounded channels: memory stays at a few parts, nothing touches the
//! disk). Then the record, then etcd-manager's meta, which makes the backup visible.
//! Any failure aborts the upload and removes what was written: a failed round leaves
//! nothing that lists as a backup, and the next interval tries again. Last, backups past
//! retention are removed.

use std::io::Write;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;

use super::client::{EtcdClient, EtcdError};
use super::layout::{
    BackupName, BackupRecord, DATA_FILE, EtcdManagerClusterSpec, EtcdManagerMeta, META_FILE,
    RECORD_API_VERSION, RECORD_FILE, RECORD_KIND, slot_start, utc_seconds,
};
use super::retention::{KEEP_ALL, Retention};
use super::snapshot::{GatewayChunks, SnapshotCheck, SnapshotError};
use super::store::{BackupStore, MIN_PART, StoreError, StoreErrorKind, Upload};
use crate::error::{Classified, ErrorKind};
use crate::host::hash::Hasher;
use crate::runbook::Topic;

/// gzip's default level, as etcd-manager's Go gzip writer uses: etcd databases are
/// mostly empty pages, which every level squeezes; higher levels cost CPU for little.
const GZIP_LEVEL: u32 = 6;
/// Multipart part size: S3's minimum is 5 MiB; 8 MiB keeps 10,000 parts above 80 GB.
pub const PART_SIZE: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("etcd: {0}")]
    Etcd(#[from] EtcdError),
    #[error("the etcd snapshot from {endpoint}: {source}")]
    Snapshot {
        endpoint: String,
        #[source]
        source: SnapshotError,
    },
    #[error("the backup store: {0}")]
    Store(#[from] StoreError),
    #[error("compressing the snapshot: {0}")]
    Compress(String),
    #[error(
        "etcd is at revision {revision}, behind the store's newest backup {newest} (revision {newest_revision}), and is no cluster restored from a backup in the store: a cluster formed anew (every member lost, blank volumes?). Not backing it up: its backup would become the latest, the one a restore picks. Restore the cluster (nodewright runbook etcd-restore), or, to keep this one as it is, take a backup by hand with --now"
    )]
    NewCluster {
        revision: i64,
        newest: String,
        newest_revision: i64,
    },
}

/// Exit codes from the causes (the store or etcd unreachable: 4, else 5); the runbook
/// topic is the store's when it was unreachable, else the backup's own section.
impl Classified for BackupError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Etcd(e) => e.kind(),
            Self::Store(e) if e.kind == StoreErrorKind::Unreachable => ErrorKind::Unreachable,
            Self::Store(_)
            | Self::Snapshot { .. }
            | Self::Compress(_)
            | Self::NewCluster { .. } => ErrorKind::ChangeFailed,
        }
    }
    fn topic(&self) -> Option<Topic> {
        match self {
            Self::Store(e) if e.kind == StoreErrorKind::Unreachable => {
                Some(Topic::StateStoreUnreachable)
            }
            _ => Some(Topic::EtcdBackupFailed),
        }
    }
}

/// What a round needs to know about the cluster and the policy.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// The Kubernetes cluster and the etcd cluster backed up.
    pub cluster: String,
    pub etcd_cluster: String,
    /// This member's name (`a`), recorded as the taker.
    pub member: String,
    pub interval: Duration,
    pub retention: Retention,
    pub part_size: usize,
}

/// Why a round ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The timer: leader only, one per interval slot.
    Interval,
    /// By hand (`nodewright etcd backup --now`): whichever member, whatever the slot.
    Now,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Another member leads etcd: it takes the backup.
    NotLeader {
        leader: u64,
    },
    /// The slot already has its backup.
    AlreadyTaken(BackupName),
    Taken(Box<BackupRecord>),
}

/// A round's result and what it did on the side.
#[derive(Debug, Clone)]
pub struct Round {
    pub outcome: Outcome,
    /// Backups removed as past retention, and leftovers cleared.
    pub removed: Vec<BackupName>,
    pub stale_uploads_aborted: usize,
    /// Housekeeping that failed without failing the round.
    pub warnings: Vec<String>,
}

/// One round at time `now`.
pub async fn run(
    etcd: &EtcdClient,
    store: &BackupStore,
    settings: &BackupSettings,
    trigger: Trigger,
    now: SystemTime,
) -> Result<Round, BackupError> {
    let status = etcd.status().await?;
    if trigger == Trigger::Interval && !status.is_leader() {
        return Ok(Round::of(Outcome::NotLeader {
            leader: status.leader,
        }));
    }
    // A linearizable read: this member is in a quorum now, and the revision is current.
    let count = etcd.count_keys().await?;
    let revision = count.revision;
    let members = etcd.members().await?;
    if trigger == Trigger::Interval {
        let slot = slot_start(now, settings.interval);
        let listing = store.list(Some(&utc_seconds(slot))).await?;
        if let Some(taken) = listing
            .complete
            .iter()
            .find(|n| n.time() < slot + settings.interval)
        {
            return Ok(Round::of(Outcome::AlreadyTaken(taken.clone())));
        }
        check_lineage(store, settings, &count, &members).await?;
    }
    let mut round = Round::of(Outcome::NotLeader { leader: 0 });
    match store.abort_stale_uploads(now - KEEP_ALL).await {
        Ok(n) => round.stale_uploads_aborted = n,
        Err(e) => round.warnings.push(e.to_string()),
    }
    let name = BackupName::new(now, revision);
    let mut record = BackupRecord {
        api_version: RECORD_API_VERSION.to_owned(),
        kind: RECORD_KIND.to_owned(),
        cluster: settings.cluster.clone(),
        etcd_cluster: settings.etcd_cluster.clone(),
        name: name.to_string(),
        time: utc_seconds(now),
        etcd_version: status.version.clone(),
        revision,
        sha256: String::new(),
        size: 0,
        snapshot_size: 0,
        members: {
            let mut names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
            names.sort();
            names
        },
        taken_by: settings.member.clone(),
        agent: crate::VERSION.to_owned(),
    };
    let metadata = [
        ("cluster", record.cluster.clone()),
        ("etcd-cluster", record.etcd_cluster.clone()),
        ("etcd-version", record.etcd_version.clone()),
        ("revision", record.revision.to_string()),
        ("time", record.time.clone()),
        ("taken-by", record.taken_by.clone()),
    ];
    let mut upload = store.start_upload(&name, &metadata).await?;
    let streamed = match stream(etcd, &mut upload, settings.part_size).await {
        Ok(streamed) => streamed,
        Err(e) => {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(error = %abort, "could not abort the upload; the next round will");
            }
            return Err(e);
        }
    };
    record.sha256 = streamed.sha256;
    record.size = streamed.size;
    record.snapshot_size = streamed.snapshot_size;
    let meta = EtcdManagerMeta {
        etcd_version: record.etcd_version.clone(),
        timestamp: now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64,
        cluster_spec: Some(EtcdManagerClusterSpec {
            member_count: members.len() as i32,
            etcd_version: record.etcd_version.clone(),
        }),
    };
    let written = async {
        let json = serde_json::to_vec_pretty(&record).expect("a record serializes");
        store
            .put_document(&name, RECORD_FILE, json, "application/json")
            .await?;
        let json = serde_json::to_vec_pretty(&meta).expect("a meta serializes");
        store
            .put_document(&name, META_FILE, json, "application/json")
            .await
    }
    .await;
    if let Err(e) = written {
        // Take back what was written; if the store is gone, the next round clears it.
        if let Ok(listing) = store.list(Some(&utc_seconds(name.time()))).await
            && let Err(undo) = store.remove(&listing, &name).await
        {
            tracing::warn!(error = %undo, "could not remove the half-written backup");
        }
        return Err(e.into());
    }
    round.outcome = Outcome::Taken(Box::new(record));
    prune(store, settings.retention, now, &mut round).await;
    Ok(round)
}

/// Refuses the timer's backup of a cluster that went backwards: its revision is below
/// that of the store's newest backup (etcd's revision only grows, a restore keeps the
/// snapshot's), unless it is a cluster restored from one of the store's backups (an
/// operator's roll-back), which its id tells: the one a restore of that backup with
/// these members makes. What is left is a cluster formed anew on blank volumes (with
/// the same token and peer names, so the same id as the lost one), whose backup would
/// become the `latest` a restore picks. A backup etcd-manager wrote has no revision on
/// record: nothing to compare.
async fn check_lineage(
    store: &BackupStore,
    settings: &BackupSettings,
    count: &super::client::KeyCount,
    members: &[super::client::Member],
) -> Result<(), BackupError> {
    let listing = store.list(None).await?;
    let Some(newest) = listing.newest() else {
        return Ok(());
    };
    let Some(bytes) = store.read_document(newest, RECORD_FILE).await? else {
        return Ok(());
    };
    let Ok(record) = serde_json::from_slice::<BackupRecord>(&bytes) else {
        return Ok(());
    };
    if count.revision >= record.revision {
        return Ok(());
    }
    let peers: Vec<(String, String)> = members
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                m.peer_urls.first().cloned().unwrap_or_default(),
            )
        })
        .collect();
    let restored_from_store = listing.complete.iter().any(|name| {
        let token = super::restore::cluster_token(
            &settings.etcd_cluster,
            &settings.cluster,
            &store.object_url(name, ""),
        );
        super::restore::restored_cluster_id(&token, &peers) == count.cluster_id
    });
    if restored_from_store {
        return Ok(());
    }
    Err(BackupError::NewCluster {
        revision: count.revision,
        newest: newest.to_string(),
        newest_revision: record.revision,
    })
}

impl Round {
    fn of(outcome: Outcome) -> Self {
        Self {
            outcome,
            removed: Vec::new(),
            stale_uploads_aborted: 0,
            warnings: Vec::new(),
        }
    }
}

/// Removes backups past retention, and leftovers of broken rounds older than an hour.
async fn prune(store: &BackupStore, retention: Retention, now: SystemTime, round: &mut Round) {
    let listing = match store.list(None).await {
        Ok(listing) => listing,
        Err(e) => {
            round.warnings.push(e.to_string());
            return;
        }
    };
    let complete: Vec<BackupName> = listing.complete.iter().cloned().collect();
    let mut doomed = retention.expired(&complete, now);
    doomed.extend(
        listing
            .incomplete
            .iter()
            .filter(|n| {
                now.duration_since(n.time())
                    .is_ok_and(|age| age >= KEEP_ALL)
            })
            .cloned(),
    );
    for name in doomed {
        match store.remove(&listing, &name).await {
            Ok(()) => round.removed.push(name),
            Err(e) => round.warnings.push(e.to_string()),
        }
    }
}

struct Streamed {
    sha256: String,
    size: u64,
    snapshot_size: u64,
}

/// Snapshot → gzip → parts, then the upload completed. On failure the caller aborts it.
async fn stream(
    etcd: &EtcdClient,
    upload: &mut Upload,
    part_size: usize,
) -> Result<Streamed, BackupError> {
    let part_size = part_size.max(MIN_PART);
    let response = etcd.snapshot().await?;
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(32);
    let (part_tx, mut part_rx) = tokio::sync::mpsc::channel::<Bytes>(1);

    // gzip and the two checks, off the async threads.
    let compressor = tokio::task::spawn_blocking(move || {
        let mut check = SnapshotCheck::new();
        let sink = PartSink {
            buffer: Vec::with_capacity(part_size + (1 << 20)),
            part_size,
            hasher: Hasher::new(),
            size: 0,
            parts: part_tx,
        };
        let mut gzip = GzEncoder::new(sink, Compression::new(GZIP_LEVEL));
        while let Some(chunk) = raw_rx.blocking_recv() {
            check.update(&chunk);
            gzip.write_all(&chunk)?;
        }
        let mut sink = gzip.finish()?;
        sink.send_rest()?;
        Ok::<_, std::io::Error>((check, sink.hasher.finish(), sink.size))
    });

    let endpoint = etcd.endpoint().to_owned();
    let read = async move {
        let mut chunks = GatewayChunks::new(response.bytes_stream());
        while let Some(chunk) = chunks.next().await? {
            if raw_tx.send(chunk).await.is_err() {
                // The compressor stopped; its error says why.
                break;
            }
        }
        Ok::<_, SnapshotError>(())
    };
    let send = async {
        while let Some(part) = part_rx.recv().await {
            upload.put_part(part).await?;
        }
        Ok::<_, StoreError>(())
    };
    let (read, sent) = tokio::join!(read, send);
    let compressed = compressor.await;
    read.map_err(|source| BackupError::Snapshot {
        endpoint: endpoint.clone(),
        source,
    })?;
    sent?;
    let (check, sha256, size) = compressed
        .map_err(|e| BackupError::Compress(e.to_string()))?
        .map_err(|e| BackupError::Compress(e.to_string()))?;
    let snapshot_size = check
        .finish()
        .map_err(|source| BackupError::Snapshot { endpoint, source })?;
    upload.complete().await?;
    Ok(Streamed {
        sha256,
        size,
        snapshot_size,
    })
}

/// Collects gzip's output into parts, hashing it on the way.
struct PartSink {
    buffer: Vec<u8>,
    part_size: usize,
    hasher: Hasher,
    size: u64,
    parts: tokio::sync::mpsc::Sender<Bytes>,
}

impl PartSink {
    fn send(&mut self) -> std::io::Result<()> {
        let part = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.part_size));
        self.parts
            .blocking_send(Bytes::from(part))
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }

    /// The last part; S3 accepts it smaller than the minimum.
    fn send_rest(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

impl Write for PartSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= self.part_size {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The time of the slot after `now`'s: when the next round will try.
pub fn next_slot(now: SystemTime, interval: Duration) -> SystemTime {
    slot_start(now, interval) + interval
}

/// The object a complete backup's data lives at.
pub fn data_url(store: &BackupStore, name: &BackupName) -> String {
    store.object_url(name, DATA_FILE)
}
