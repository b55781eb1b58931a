//! What a node remembers of its backup rounds, one file per etcd cluster in the state
//! directory (`etcd-backup-<cluster>.json`), for `status` and the watch's metrics: the
//! last round, and the newest backup of the cluster in the store (whichever member took
//! it: a follower looks it up), so every member can say how old the last backup is.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::backup::{self, BackupError, BackupSettings, Outcome, Round, Trigger};
use super::client::EtcdClient;
use super::layout::{BackupName, BackupRecord, RECORD_FILE, utc_seconds};
use super::store::{BackupStore, StoreError};

pub fn file_name(etcd_cluster: &str) -> String {
    format!("etcd-backup-{etcd_cluster}.json")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    pub etcd_cluster: String,
    pub store: String,
    pub interval_seconds: u64,
    pub last_round: RoundRecord,
    /// The newest complete backup in the store, as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
    /// Rounds in a row that failed (0 after a good one).
    #[serde(default)]
    pub failures_in_a_row: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoundRecord {
    pub at: String,
    /// `taken`, `already-taken`, `not-leader` or `failed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The runbook topic of the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    pub name: String,
    pub url: String,
    /// When it was taken (RFC 3339, from its name).
    pub time: String,
    /// Unix seconds of the same, for ages and metrics.
    pub unix: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_by: Option<String>,
}

impl LastBackup {
    pub fn new(store: &BackupStore, name: &BackupName, record: Option<&BackupRecord>) -> Self {
        let unix = name
            .time()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Self {
            name: name.to_string(),
            url: store.object_url(name, ""),
            time: utc_seconds(name.time()),
            unix,
            size: record.map(|r| r.size),
            revision: record.map(|r| r.revision),
            taken_by: record.map(|r| r.taken_by.clone()),
        }
    }

    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(SystemTime::UNIX_EPOCH + Duration::from_secs(self.unix))
            .unwrap_or_default()
    }
}

impl BackupStatus {
    pub fn load(state_dir: &Path, etcd_cluster: &str) -> Option<Self> {
        let bytes = std::fs::read(state_dir.join(file_name(etcd_cluster))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes the record atomically (0644: it holds no secret).
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let (uid, gid) = crate::host::fs::current_ids();
        std::fs::create_dir_all(state_dir)?;
        crate::host::fs::write_atomic(
            &state_dir.join(file_name(&self.etcd_cluster)),
            &bytes,
            0o644,
            uid,
            gid,
        )
    }

    /// A problem for `status`: no backup yet, or the newest older than two intervals.
    pub fn problem(&self, now: SystemTime) -> Option<String> {
        let limit = Duration::from_secs(self.interval_seconds * 2);
        let failing = match (&self.last_round.error, self.failures_in_a_row) {
            (Some(error), n) if n > 0 => format!(
                "; the last {n} round(s) failed: {error} (nodewright runbook {})",
                self.last_round
                    .topic
                    .as_deref()
                    .unwrap_or("etcd-backup-failed")
            ),
            _ => String::new(),
        };
        match &self.last_backup {
            None => Some(format!(
                "etcd cluster {} has no backup in {}{failing}",
                self.etcd_cluster, self.store
            )),
            Some(last) if last.age(now) > limit => Some(format!(
                "etcd cluster {}: the last backup ({}) is {} minutes old, more than twice the {}-minute interval{failing}",
                self.etcd_cluster,
                last.name,
                last.age(now).as_secs() / 60,
                self.interval_seconds / 60
            )),
            Some(_) => None,
        }
    }
}

/// One round as the timer runs it, recorded: the status file that `status` and the
/// watch read, a journal error with its runbook topic when the round failed. Nothing
/// else is retried: the next interval's round is the retry.
pub async fn run_and_record(
    etcd: &EtcdClient,
    store: &BackupStore,
    settings: &BackupSettings,
    trigger: Trigger,
    state_dir: &Path,
    now: SystemTime,
) -> (Result<Round, BackupError>, BackupStatus) {
    let previous = BackupStatus::load(state_dir, &settings.etcd_cluster);
    let result = backup::run(etcd, store, settings, trigger, now).await;
    let previous_backup = previous.as_ref().and_then(|p| p.last_backup.clone());
    let last_backup = match &result {
        Ok(Round {
            outcome: Outcome::Taken(record),
            ..
        }) => BackupName::parse(&record.name).map(|n| LastBackup::new(store, &n, Some(record))),
        // Another member's, or this slot's: the store says which is newest.
        Ok(_) => match newest_backup(store, now).await {
            Ok(newest) => newest,
            Err(e) => {
                tracing::warn!(error = %e, "could not look up the newest backup");
                previous_backup
            }
        },
        Err(_) => previous_backup,
    };
    let at = utc_seconds(now);
    let (last_round, failures_in_a_row) = match &result {
        Ok(round) => {
            for warning in &round.warnings {
                tracing::warn!(etcd_cluster = %settings.etcd_cluster, "backup housekeeping: {warning}");
            }
            let label = match &round.outcome {
                Outcome::Taken(record) => {
                    tracing::info!(
                        etcd_cluster = %settings.etcd_cluster,
                        backup = %store.object_url_of(&record.name),
                        size = record.size,
                        revision = record.revision,
                        "etcd backup taken"
                    );
                    "taken"
                }
                Outcome::AlreadyTaken(_) => "already-taken",
                Outcome::NotLeader { .. } => "not-leader",
            };
            (
                RoundRecord {
                    at,
                    result: label.to_owned(),
                    error: None,
                    topic: None,
                },
                0,
            )
        }
        Err(e) => {
            tracing::error!(
                etcd_cluster = %settings.etcd_cluster,
                store = %store.url(),
                topic = e.topic(),
                "etcd backup failed: {e}; the next interval retries (nodewright runbook {})",
                e.topic()
            );
            (
                RoundRecord {
                    at,
                    result: "failed".to_owned(),
                    error: Some(e.to_string()),
                    topic: Some(e.topic().to_owned()),
                },
                previous.as_ref().map_or(0, |p| p.failures_in_a_row) + 1,
            )
        }
    };
    let status = BackupStatus {
        etcd_cluster: settings.etcd_cluster.clone(),
        store: store.url(),
        interval_seconds: settings.interval.as_secs(),
        last_round,
        last_backup,
        failures_in_a_row,
    };
    if let Err(e) = status.save(state_dir) {
        tracing::warn!(error = %e, dir = %state_dir.display(), "could not record the backup round");
    }
    (result, status)
}

/// The newest complete backup in the store (looked for in the last two days first,
/// then everywhere), with its record when it has one.
pub async fn newest_backup(
    store: &BackupStore,
    now: SystemTime,
) -> Result<Option<LastBackup>, StoreError> {
    let recent = utc_seconds(now - Duration::from_secs(2 * 86_400));
    let mut listing = store.list(Some(&recent)).await?;
    if listing.complete.is_empty() {
        listing = store.list(None).await?;
    }
    let Some(name) = listing.newest().cloned() else {
        return Ok(None);
    };
    let record = store
        .read_document(&name, RECORD_FILE)
        .await?
        .and_then(|bytes| serde_json::from_slice::<BackupRecord>(&bytes).ok());
    Ok(Some(LastBackup::new(store, &name, record.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(age_minutes: Option<u64>, now: SystemTime) -> BackupStatus {
        BackupStatus {
            etcd_cluster: "main".to_owned(),
            store: "s3://state/prod.example.com/backups/etcd/main/".to_owned(),
            interval_seconds: 900,
            last_round: RoundRecord {
                at: utc_seconds(now),
                result: "failed".to_owned(),
                error: Some("the backup store: ... unreachable".to_owned()),
                topic: Some("state-store-unreachable".to_owned()),
            },
            last_backup: age_minutes.map(|m| {
                let at = now - Duration::from_secs(m * 60);
                let name = BackupName::new(at, 1);
                LastBackup {
                    name: name.to_string(),
                    url: String::new(),
                    time: utc_seconds(at),
                    unix: at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
                    size: Some(1),
                    revision: Some(2),
                    taken_by: None,
                }
            }),
            failures_in_a_row: 2,
        }
    }

    #[test]
    fn a_backup_older_than_two_intervals_is_a_problem() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_787_045);
        assert_eq!(status(Some(29), now).problem(now), None);
        let problem = status(Some(31), now).problem(now).unwrap();
        assert!(problem.contains("31 minutes old"), "{problem}");
        assert!(problem.contains("state-store-unreachable"), "{problem}");
        let none = status(None, now).problem(now).unwrap();
        assert!(none.contains("has no backup"), "{none}");
    }
}
