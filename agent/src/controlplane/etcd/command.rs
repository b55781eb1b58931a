//! The two operator commands over the core, from the spec and facts kept on the node:
//! `nodewright etcd backup` (what the timer runs each interval) and `nodewright etcd
//! restore`. Each reads the kept spec, finds this node's member of the etcd cluster,
//! and calls the backup round or the restore; the command line prints the result.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::backup::{BackupError, Round, Trigger};
use super::client::{EtcdClient, EtcdError};
use super::node::{ETCD_CALL_TIMEOUT, EtcdNode, NodeError, StoreOrNode};
use super::record::{self, BackupStatus};
use super::restore::{self, RestoreError, Restored};
use super::store::StoreError;
use crate::cloud::http::NetworkError;
use crate::cloud::{NetworkSettings, aws};
use crate::engine::applied::{AppliedError, AppliedSpec};
use crate::error::{Classified, ErrorKind};
use crate::host::Host;
use crate::runbook::Topic;

/// How long one call to the store may take (a part's transfer excepted).
const STORE_CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Kept(#[from] AppliedError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("etcd backup of {etcd_cluster} failed: {source}; the next interval retries")]
    Backup {
        etcd_cluster: String,
        #[source]
        source: BackupError,
    },
    #[error("restoring etcd cluster {etcd_cluster}: {source}")]
    Restore {
        etcd_cluster: String,
        #[source]
        source: RestoreError,
    },
    #[error("--backup {0}")]
    BackupRef(#[source] restore::BadBackupName),
}

impl From<StoreOrNode> for CommandError {
    fn from(e: StoreOrNode) -> Self {
        match e {
            StoreOrNode::Node(e) => Self::Node(e),
            StoreOrNode::Store(e) => Self::Store(e),
        }
    }
}

impl Classified for CommandError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Kept(e) => e.kind(),
            Self::Node(e) => e.kind(),
            Self::Network(e) => e.kind(),
            Self::Etcd(e) => e.kind(),
            Self::Store(e) => e.kind(),
            Self::Backup { source, .. } => source.kind(),
            Self::Restore { source, .. } => source.kind(),
            Self::BackupRef(e) => e.kind(),
        }
    }
    fn topic(&self) -> Option<Topic> {
        match self {
            Self::Kept(e) => e.topic(),
            Self::Node(e) => e.topic(),
            Self::Network(e) => e.topic(),
            Self::Etcd(_) => Some(Topic::EtcdBackupFailed),
            Self::Store(e) => e.topic(),
            Self::Backup { source, .. } => source.topic(),
            Self::Restore { source, .. } => source.topic(),
            Self::BackupRef(_) => Some(Topic::EtcdRestore),
        }
    }
}

/// The kept spec's view of `etcd_cluster`, and the region for the store's client.
fn load(
    host: &Host,
    etcd_cluster: &str,
    what: &'static str,
) -> Result<(EtcdNode, String), CommandError> {
    let state_dir = host.state_dir();
    let kept = AppliedSpec::load(&state_dir)?;
    let spec = kept.node_spec(&state_dir)?;
    let node = EtcdNode::new(&spec, &kept.spec_url, &kept.facts, etcd_cluster, what)?;
    Ok((node, kept.facts.instance.region.clone()))
}

async fn s3(region: &str) -> Result<aws_sdk_s3::Client, CommandError> {
    // Endpoints, proxy and credentials the standard AWS way (the unit's environment
    // file, then the instance role).
    let sdk = aws::sdk_config(region, &NetworkSettings::default()).await?;
    Ok(aws::s3_client(&sdk))
}

/// What `nodewright etcd backup` did.
#[derive(Debug)]
pub struct BackupDone {
    pub round: Round,
    pub status: BackupStatus,
    pub store: String,
}

/// One backup round of `etcd_cluster` on this node, recorded for `status` and the
/// watch's metrics. `now`: the timer's round (leader only, one per interval slot);
/// else by hand, on whichever member.
pub async fn backup(
    host: &Host,
    etcd_cluster: &str,
    now: bool,
) -> Result<BackupDone, CommandError> {
    let (node, region) = load(host, etcd_cluster, "back up")?;
    let settings = node.backup_settings()?;
    let store = node.store(s3(&region).await?, None, STORE_CALL_TIMEOUT)?;
    let tls = node.tls(host)?;
    let etcd = EtcdClient::new(&node.local_endpoint(), &tls, ETCD_CALL_TIMEOUT)?;
    let trigger = if now { Trigger::Now } else { Trigger::Interval };
    let (result, status) = record::run_and_record(
        &etcd,
        &store,
        &settings,
        trigger,
        &host.state_dir(),
        SystemTime::now(),
    )
    .await;
    match result {
        Ok(round) => Ok(BackupDone {
            round,
            status,
            store: store.url(),
        }),
        Err(source) => Err(CommandError::Backup {
            etcd_cluster: etcd_cluster.to_owned(),
            source,
        }),
    }
}

/// What `nodewright etcd restore` is asked.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub etcd_cluster: String,
    /// `latest`, a backup's name, or its URL.
    pub backup: String,
    pub force: bool,
    pub etcd_manager_backup: bool,
}

/// What `nodewright etcd restore` did.
#[derive(Debug)]
pub struct RestoreDone {
    pub restored: Restored,
    pub data_dir: PathBuf,
    /// What the operator still has to do on this node (start etcd where this command
    /// could not).
    pub notes: Vec<String>,
}

/// Restores this node's member of the etcd cluster from a backup (see
/// [`restore::restore`] for the checks and the order of the steps).
pub async fn restore(host: &Host, request: &RestoreRequest) -> Result<RestoreDone, CommandError> {
    let (node, region) = load(host, &request.etcd_cluster, "restore")?;
    let (url, which) = restore::parse_backup(&request.backup).map_err(CommandError::BackupRef)?;
    let store = node.store(s3(&region).await?, url.as_deref(), STORE_CALL_TIMEOUT)?;
    let tls = node.tls(host)?;
    let peers = node
        .member_endpoints()
        .iter()
        .map(|endpoint| EtcdClient::new(endpoint, &tls, Duration::from_secs(5)))
        .collect::<Result<Vec<_>, _>>()?;
    let settings = node.restore_settings(host, request.force, request.etcd_manager_backup);
    let service = node.service(host);
    let restored = restore::restore(
        &store,
        &which,
        &peers,
        &settings,
        &service,
        SystemTime::now(),
    )
    .await
    .map_err(|source| CommandError::Restore {
        etcd_cluster: request.etcd_cluster.clone(),
        source,
    })?;
    Ok(RestoreDone {
        restored,
        data_dir: settings.data_dir,
        notes: service.notes(),
    })
}
