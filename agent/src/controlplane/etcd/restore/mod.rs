//! Disaster recovery: one member's data directory rebuilt from a backup, run on every
//! member of the etcd cluster (each restores the same backup: the cluster token and
//! member list come from the backup and the spec, so the members agree without talking).
//!
//! Everything that can refuse happens before anything on the node changes: the backup
//! is found and its record checked (this cluster, this etcd cluster), the cluster is
//! asked whether it still has quorum and data (then only `force` goes on), the backup is
//! downloaded onto the member's volume while its sha256 is checked, unpacked and checked
//! again against the digest etcd put in the snapshot, and restored into a new directory
//! beside the data directory. Only then is etcd stopped, the old data directory moved
//! aside (kept, never deleted: it stays on the protected volume), the new one put in its
//! place, and etcd started.

mod files;

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use super::client::EtcdClient;
use super::layout::{BackupName, BackupRecord, META_FILE, RECORD_FILE};
use super::snapshot::SnapshotError;
use super::store::{BackupStore, StoreError};
use crate::error::{Classified, ErrorKind};
use crate::runbook::Topic;
use files::{
    Cleanup, compact_time, digest_hex, disk, download, remove_quietly, run_tool, sibling, swap,
};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the backup store: {0}")]
    Store(#[from] StoreError),
    #[error("no backup to restore in {0}")]
    NoBackup(String),
    #[error("{url} is not a complete backup (no {META_FILE})")]
    Incomplete { url: String },
    #[error(
        "{url} has no nodewright record: it is an etcd-manager (kops) backup, whose cluster and digest cannot be checked; restore it with the etcd-manager option if it is this cluster's"
    )]
    Foreign { url: String },
    #[error("{url} is a backup of {found}, not of {wanted}: refusing it")]
    OtherCluster {
        url: String,
        found: String,
        wanted: String,
    },
    #[error("{url}: its record is unreadable: {detail}")]
    BadRecord { url: String, detail: String },
    #[error("{url}: sha256 is {found} but the backup's record says {recorded}: refusing it")]
    Digest {
        url: String,
        found: String,
        recorded: String,
    },
    #[error("{url}: {source}")]
    Snapshot {
        url: String,
        #[source]
        source: SnapshotError,
    },
    #[error(
        "etcd cluster {etcd_cluster} has quorum ({endpoint} answers) and holds {keys} keys at revision {revision}: a restore would replace them with the backup's. Restore only when quorum is lost, or pass --force"
    )]
    QuorumHealthy {
        etcd_cluster: String,
        endpoint: String,
        keys: u64,
        revision: i64,
    },
    #[error(
        "member {member} already runs the cluster restored from {url} ({endpoint} answers for it with {keys} keys at revision {revision}): restoring it again would put it behind the others. Nothing was done"
    )]
    AlreadyRestored {
        member: String,
        url: String,
        endpoint: String,
        keys: u64,
        revision: i64,
    },
    #[error("{path}: {detail}")]
    Disk { path: String, detail: String },
    #[error("{tool} snapshot restore: {detail}")]
    Tool { tool: String, detail: String },
    #[error("the etcd member's service: {0}")]
    Service(String),
}

/// A refused backup is refused input (3); a restore refused while quorum holds is the
/// command used where it must not be (2, until `--force`); no backup at all is nothing
/// to work from (6); the store unreachable is 4; a step on the node that failed is 5.
impl Classified for RestoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Store(e) => e.kind(),
            Self::NoBackup(_) => ErrorKind::NoState,
            Self::Incomplete { .. }
            | Self::Foreign { .. }
            | Self::OtherCluster { .. }
            | Self::BadRecord { .. }
            | Self::Digest { .. }
            | Self::Snapshot { .. } => ErrorKind::InvalidInput,
            Self::QuorumHealthy { .. } | Self::AlreadyRestored { .. } => ErrorKind::Usage,
            Self::Disk { .. } | Self::Tool { .. } | Self::Service(_) => ErrorKind::ChangeFailed,
        }
    }
    fn topic(&self) -> Option<Topic> {
        match self {
            Self::Store(e) if e.kind == super::store::StoreErrorKind::Unreachable => {
                Some(Topic::StateStoreUnreachable)
            }
            _ => Some(Topic::EtcdRestore),
        }
    }
}

impl RestoreError {
    /// Whether the refusal is the operator's to overrule (`--force`), not a fault.
    pub fn is_quorum_refusal(&self) -> bool {
        matches!(self, Self::QuorumHealthy { .. })
    }
}

/// Which backup: the newest complete one, or a named one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    Latest,
    Named(BackupName),
}

/// A `--backup` value that names no backup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is neither `latest`, a backup name such as 2025-01-02T03:15:00Z-000042, nor its s3:// URL{}",
    detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
)]
pub struct BadBackupName {
    pub text: String,
    pub detail: Option<String>,
}

/// A mistyped `--backup` is a command used wrongly.
impl crate::error::Classified for BadBackupName {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Usage
    }
}

/// `latest`, a backup name, or its URL (`s3://bucket/prefix/<name>/` or the URL of its
/// `etcd.backup.gz`). A URL names its own store; the rest use the configured one.
pub fn parse_backup(text: &str) -> Result<(Option<String>, Which), BadBackupName> {
    if text == "latest" {
        return Ok((None, Which::Latest));
    }
    if let Some(name) = BackupName::parse(text) {
        return Ok((None, Which::Named(name)));
    }
    if text.starts_with("s3://") {
        let trimmed = text.trim_end_matches('/');
        let trimmed = trimmed
            .strip_suffix(&format!("/{}", super::layout::DATA_FILE))
            .or_else(|| trimmed.strip_suffix(&format!("/{META_FILE}")))
            .or_else(|| trimmed.strip_suffix(&format!("/{RECORD_FILE}")))
            .unwrap_or(trimmed);
        if let Some((store, name)) = trimmed.rsplit_once('/')
            && let Some(name) = BackupName::parse(name)
        {
            let store = format!("{store}/");
            super::store::parse_url(&store).map_err(|detail| BadBackupName {
                text: text.to_owned(),
                detail: Some(detail),
            })?;
            return Ok((Some(store), Which::Named(name)));
        }
    }
    Err(BadBackupName {
        text: text.to_owned(),
        detail: None,
    })
}

/// Starts and stops the member's etcd (its systemd unit on a node).
pub trait MemberService {
    fn stop(&self) -> impl Future<Output = Result<(), String>>;
    fn start(&self) -> impl Future<Output = Result<(), String>>;
}

/// The member's systemd unit. Its start is only queued: a restored member is ready
/// when a majority of members are, which no single node can wait for.
pub struct SystemdUnit(pub String);

impl MemberService for SystemdUnit {
    async fn stop(&self) -> Result<(), String> {
        use crate::host::systemd::{Systemctl, Systemd};
        Systemctl
            .stop(&self.0)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
    async fn start(&self) -> Result<(), String> {
        use crate::host::systemd::{Systemctl, Systemd};
        Systemctl
            .start(&self.0, true)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct RestoreSettings {
    pub cluster: String,
    pub etcd_cluster: String,
    /// This member's name and every member's peer URL (this one's included), as the
    /// spec and the volumes say now.
    pub member: String,
    pub initial_cluster: Vec<(String, String)>,
    /// The member's data directory (on its volume).
    pub data_dir: PathBuf,
    /// `etcdctl` (3.4, 3.5) or `etcdutl` (3.5 and later) of the node's etcd release.
    pub restore_tool: PathBuf,
    /// Restore even though the cluster has quorum and data.
    pub force: bool,
    /// Accept a backup without a nodewright record (etcd-manager's).
    pub etcd_manager_backup: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    pub backup: String,
    pub record: Option<BackupRecord>,
    pub sha256: String,
    pub cluster_token: String,
    pub cluster_id: u64,
    /// Where the old data directory went, if there was one.
    pub moved_aside: Option<PathBuf>,
    /// What the quorum check found (or that it was skipped).
    pub quorum: String,
    pub seconds: f64,
}

/// Restores this member from `which` in `store`. `peers` are clients of every member
/// (this one's included), asked whether the cluster still has quorum.
pub async fn restore(
    store: &BackupStore,
    which: &Which,
    peers: &[EtcdClient],
    settings: &RestoreSettings,
    service: &impl MemberService,
    now: SystemTime,
) -> Result<Restored, RestoreError> {
    let began = Instant::now();
    let name = match which {
        Which::Named(name) => name.clone(),
        Which::Latest => store
            .list(None)
            .await?
            .newest()
            .cloned()
            .ok_or_else(|| RestoreError::NoBackup(store.url()))?,
    };
    let url = store.object_url(&name, "");
    let record = checked_record(store, &name, settings).await?;
    let cluster_token = cluster_token(&settings.etcd_cluster, &settings.cluster, &url);
    let cluster_id = restored_cluster_id(&cluster_token, &settings.initial_cluster);
    let quorum = quorum_check(peers, settings, cluster_id, &url).await?;

    // Download and unpack beside the data directory: on the member's volume, never
    // the root disk, and on one filesystem with it so the renames below are atomic.
    let parent = settings
        .data_dir
        .parent()
        .ok_or_else(|| disk(&settings.data_dir, "has no parent directory".to_owned()))?;
    let stamp = compact_time(now);
    let snapshot_file = parent.join(format!(".restore-{stamp}.db"));
    let restored_dir = sibling(&settings.data_dir, &format!("restored-{stamp}"));
    let _cleanup = Cleanup(vec![snapshot_file.clone(), restored_dir.clone()]);
    let recorded = record.as_ref().map(|r| r.sha256.as_str());
    let sha256 = download(store, &name, &snapshot_file, recorded).await?;
    run_tool(settings, &snapshot_file, &restored_dir, &cluster_token).await?;
    remove_quietly(&snapshot_file);

    // The point of no return: swap the directories while etcd is stopped.
    service.stop().await.map_err(RestoreError::Service)?;
    let moved_aside = swap(&settings.data_dir, &restored_dir, &stamp)?;
    service.start().await.map_err(RestoreError::Service)?;
    Ok(Restored {
        backup: url,
        record,
        sha256,
        cluster_token,
        cluster_id,
        moved_aside,
        quorum,
        seconds: began.elapsed().as_secs_f64(),
    })
}

/// The backup's record, checked against this cluster; `None` for an etcd-manager
/// backup when that was asked for.
async fn checked_record(
    store: &BackupStore,
    name: &BackupName,
    settings: &RestoreSettings,
) -> Result<Option<BackupRecord>, RestoreError> {
    let url = store.object_url(name, "");
    if store.read_document(name, META_FILE).await?.is_none() {
        return Err(RestoreError::Incomplete { url });
    }
    let Some(bytes) = store.read_document(name, RECORD_FILE).await? else {
        if settings.etcd_manager_backup {
            return Ok(None);
        }
        return Err(RestoreError::Foreign { url });
    };
    let record: BackupRecord =
        serde_json::from_slice(&bytes).map_err(|e| RestoreError::BadRecord {
            url: url.clone(),
            detail: e.to_string(),
        })?;
    let found = format!("etcd cluster {} of {}", record.etcd_cluster, record.cluster);
    let wanted = format!(
        "etcd cluster {} of {}",
        settings.etcd_cluster, settings.cluster
    );
    if found != wanted {
        return Err(RestoreError::OtherCluster { url, found, wanted });
    }
    if record.name != name.as_str() {
        return Err(RestoreError::BadRecord {
            url,
            detail: format!("it names backup {}", record.name),
        });
    }
    Ok(Some(record))
}

/// Refuses while a member serves a linearizable read of a cluster that holds keys,
/// unless that cluster is the one this very restore makes (`restored`: the members that
/// restored before this one have formed it; this member joins them). A cluster that
/// answers but holds no keys formed anew on blank volumes: nothing of it is lost.
async fn quorum_check(
    peers: &[EtcdClient],
    settings: &RestoreSettings,
    restored: u64,
    url: &str,
) -> Result<String, RestoreError> {
    if settings.force {
        return Ok("not checked (--force)".to_owned());
    }
    // `peers` are in the members' order, this member's among them.
    let own = settings
        .initial_cluster
        .iter()
        .position(|(name, _)| *name == settings.member);
    let mut found = Vec::new();
    for (index, peer) in peers.iter().enumerate() {
        match peer.count_keys().await {
            // Run again where it already succeeded (a runbook step repeated): this
            // member serves the restored cluster, maybe with writes since.
            Ok(count) if count.cluster_id == restored && Some(index) == own => {
                return Err(RestoreError::AlreadyRestored {
                    member: settings.member.clone(),
                    url: url.to_owned(),
                    endpoint: peer.endpoint().to_owned(),
                    keys: count.keys,
                    revision: count.revision,
                });
            }
            Ok(count) if count.cluster_id == restored => found.push(format!(
                "{} answers for the cluster restored from this backup ({} keys at revision {})",
                peer.endpoint(),
                count.keys,
                count.revision
            )),
            Ok(count) if count.keys == 0 => found.push(format!(
                "{} answers for an empty cluster (revision {})",
                peer.endpoint(),
                count.revision
            )),
            Ok(count) => {
                return Err(RestoreError::QuorumHealthy {
                    etcd_cluster: settings.etcd_cluster.clone(),
                    endpoint: peer.endpoint().to_owned(),
                    keys: count.keys,
                    revision: count.revision,
                });
            }
            Err(e) => tracing::info!(error = %e, "no quorum through this member"),
        }
    }
    if found.is_empty() {
        return Ok("no member has quorum".to_owned());
    }
    Ok(found.join("; "))
}

/// The cluster token a restore of the backup at `url` uses: the same on every member
/// that restores it, and new to etcd.
pub fn cluster_token(etcd_cluster: &str, cluster: &str, url: &str) -> String {
    format!(
        "etcd-cluster-{etcd_cluster}-{cluster}-restore-{}",
        &digest_hex(url.as_bytes())[..12]
    )
}

/// The id etcd gives the cluster a restore with `token` and `members` makes: each
/// member's id is the first 8 bytes of sha1(its sorted peer URLs + token), the
/// cluster's the first 8 bytes of sha1 of the sorted member ids (etcd's
/// `computeMemberId` and `genID`). Every member restoring the same backup computes it.
pub fn restored_cluster_id(token: &str, members: &[(String, String)]) -> u64 {
    use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
    let first8 = |bytes: &[u8]| {
        let hash = digest(&SHA1_FOR_LEGACY_USE_ONLY, bytes);
        let mut id = [0u8; 8];
        id.copy_from_slice(&hash.as_ref()[..8]);
        u64::from_be_bytes(id)
    };
    let mut ids: Vec<u64> = members
        .iter()
        .map(|(_, url)| first8(format!("{url}{token}").as_bytes()))
        .collect();
    ids.sort_unstable();
    let joined: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    first8(&joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_references() {
        assert_eq!(parse_backup("latest").unwrap(), (None, Which::Latest));
        let name = BackupName::parse("2025-01-02T03:15:00Z-000042").unwrap();
        assert_eq!(
            parse_backup("2025-01-02T03:15:00Z-000042").unwrap(),
            (None, Which::Named(name.clone()))
        );
        for url in [
            "s3://state/prod.example.com/backups/etcd/main/2025-01-02T03:15:00Z-000042/",
            "s3://state/prod.example.com/backups/etcd/main/2025-01-02T03:15:00Z-000042",
            "s3://state/prod.example.com/backups/etcd/main/2025-01-02T03:15:00Z-000042/etcd.backup.gz",
        ] {
            assert_eq!(
                parse_backup(url).unwrap(),
                (
                    Some("s3://state/prod.example.com/backups/etcd/main/".to_owned()),
                    Which::Named(name.clone())
                ),
                "{url}"
            );
        }
        for bad in [
            "",
            "newest",
            "s3://state/x/",
            "s3://state/2025-01-02T03:15:00Z-1/",
        ] {
            let err = parse_backup(bad).unwrap_err();
            assert_eq!(err.text, bad);
            assert!(err.to_string().contains("is neither `latest`"), "{err}");
        }
        // A URL that has a backup name but no store in it says what is wrong with it.
        let no_bucket = parse_backup("s3:///2025-01-02T03:15:00Z-000042/").unwrap_err();
        assert!(no_bucket.detail.is_some(), "{no_bucket}");
        assert_eq!(
            crate::error::Classified::kind(&no_bucket),
            crate::error::ErrorKind::Usage
        );
    }

    #[test]
    fn cluster_ids_are_etcds() {
        // What etcd 3.4.23's `snapshot restore` logged for these members and token.
        let members = [
            ("a".to_owned(), "https://127.0.0.1:2380".to_owned()),
            ("b".to_owned(), "https://127.0.0.2:2380".to_owned()),
        ];
        assert_eq!(
            restored_cluster_id("tok-1", &members),
            0x23f2_c277_befd_e625
        );
    }

    #[test]
    fn the_old_data_directory_is_moved_aside_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("member")).unwrap();
        std::fs::write(data.join("member/old"), b"old").unwrap();
        let restored = dir.path().join("data.restored-x");
        std::fs::create_dir_all(restored.join("member")).unwrap();
        std::fs::write(restored.join("member/new"), b"new").unwrap();
        let aside = swap(&data, &restored, "x").unwrap().unwrap();
        assert_eq!(aside, dir.path().join("data.before-restore-x"));
        assert_eq!(std::fs::read(aside.join("member/old")).unwrap(), b"old");
        assert_eq!(std::fs::read(data.join("member/new")).unwrap(), b"new");
        assert!(!restored.exists());
    }
}
