//! Where backups live in the store and what describes them: etcd-manager's layout, so
//! that a kops cluster's backups and ours list the same and each tool can read the
//! other's.
//!
//! ```text
//! <store>/<name>/etcd.backup.gz        the etcd snapshot, gzipped (as etcd-manager)
//! <store>/<name>/nodewright-backup.json  ours: sha256, size, revision, clusters, time
//! <store>/<name>/_etcd_backup.meta     etcd-manager's BackupInfo; written last
//! ```
//!
//! `<store>` is the etcd cluster's backup prefix (kops's `backupStore`, e.g.
//! `s3://bucket/prod.example.com/backups/etcd/main/`); `<name>` is etcd-manager's:
//! the UTC time in RFC 3339 to the second, `-`, six digits (`2025-01-02T03:15:00Z-000042`).
//! A backup exists once its `_etcd_backup.meta` does: etcd-manager lists backups by that
//! file, and so do we, so the object that marks a backup complete is written last.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub const DATA_FILE: &str = "etcd.backup.gz";
pub const META_FILE: &str = "_etcd_backup.meta";
pub const RECORD_FILE: &str = "nodewright-backup.json";

/// A backup's name: its time and a six-digit suffix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupName(String);

impl BackupName {
    /// The name of a backup taken at `at` (whole seconds, UTC). etcd-manager's suffix is
    /// a per-process counter; ours is the revision's last six digits, which tells two
    /// backups of one second apart and means something to a reader.
    pub fn new(at: SystemTime, revision: i64) -> Self {
        Self(format!(
            "{}-{:06}",
            utc_seconds(at),
            revision.rem_euclid(1_000_000)
        ))
    }

    /// Parses a name as etcd-manager does (`<RFC 3339>` or `<RFC 3339 ending in Z>-<any>`);
    /// `None` for anything else, which is then left alone.
    pub fn parse(text: &str) -> Option<Self> {
        if text.is_empty() || text.contains('/') || text == "." || text == ".." {
            return None;
        }
        let time = match text.find("Z-") {
            Some(z) => &text[..=z],
            None => text,
        };
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).ok()?;
        Some(Self(text.to_owned()))
    }

    /// When the backup was taken, from its name.
    pub fn time(&self) -> SystemTime {
        let time = match self.0.find("Z-") {
            Some(z) => &self.0[..=z],
            None => &self.0,
        };
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
            .map(SystemTime::from)
            .unwrap_or(UNIX_EPOCH)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BackupName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `2025-01-02T03:04:05Z`: what Go's `time.RFC3339` gives for a UTC time, and what sorts
/// in time order as text.
pub fn utc_seconds(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    at.format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// The interval slot `at` falls in: `[start, start + interval)`, aligned to the Unix
/// epoch, hence to UTC midnight for every interval that divides a day. One backup per
/// slot and per etcd cluster is the rule, whichever member takes it.
pub fn slot_start(at: SystemTime, interval: Duration) -> SystemTime {
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let step = interval.as_secs().max(1);
    UNIX_EPOCH + Duration::from_secs(secs - secs % step)
}

/// etcd-manager's `_etcd_backup.meta` (its `BackupInfo` in protobuf JSON). Only its own
/// fields: etcd-manager parses it strictly, so ours go in [`BackupRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdManagerMeta {
    #[serde(default)]
    pub etcd_version: String,
    /// Unix seconds; protobuf JSON writes an int64 as a string.
    #[serde(default, with = "int64_string")]
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_spec: Option<EtcdManagerClusterSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdManagerClusterSpec {
    #[serde(default)]
    pub member_count: i32,
    #[serde(default)]
    pub etcd_version: String,
}

/// What a nodewright backup says about itself, beside etcd-manager's meta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupRecord {
    pub api_version: String,
    pub kind: String,
    /// The Kubernetes cluster (`prod.example.com`).
    pub cluster: String,
    /// The etcd cluster (`main`, `events`).
    pub etcd_cluster: String,
    pub name: String,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub time: String,
    pub etcd_version: String,
    /// The store revision etcd reported just before the snapshot: the backup holds
    /// every write up to it (and possibly a few after).
    pub revision: i64,
    /// sha256 and size of `etcd.backup.gz`, the bytes in the store.
    pub sha256: String,
    pub size: u64,
    /// Size of the snapshot itself (uncompressed), as etcd sent it.
    pub snapshot_size: u64,
    /// The members etcd listed when the backup was taken.
    pub members: Vec<String>,
    /// The member that took it (etcd's leader then).
    pub taken_by: String,
    /// The agent that took it.
    pub agent: String,
}

pub const RECORD_API_VERSION: &str = "nodewright.io/v1alpha1";
pub const RECORD_KIND: &str = "EtcdBackup";

mod int64_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Number(i64),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(n),
            Either::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn names_are_etcd_managers() {
        // 2025-01-02T03:04:05Z
        let name = BackupName::new(at(1_735_787_045), 1_234_567);
        assert_eq!(name.as_str(), "2025-01-02T03:04:05Z-234567");
        assert_eq!(name.time(), at(1_735_787_045));
        assert_eq!(BackupName::parse(name.as_str()), Some(name));
        // etcd-manager's own names parse, with or without a suffix.
        assert!(BackupName::parse("2020-05-06T07:08:09Z-000001").is_some());
        assert!(BackupName::parse("2020-05-06T07:08:09Z").is_some());
        for bad in [
            "",
            "..",
            "x",
            "2020-05-06T07:08:09Z-1/2",
            "2020-13-06T07:08:09Z-1",
        ] {
            assert_eq!(BackupName::parse(bad), None, "{bad}");
        }
        // Text order is time order.
        let earlier = BackupName::new(at(1_735_787_045), 999_999);
        let later = BackupName::new(at(1_735_787_046), 0);
        assert!(earlier < later);
    }

    #[test]
    fn slots_align_to_the_interval() {
        let fifteen = Duration::from_secs(900);
        assert_eq!(slot_start(at(1_735_787_045), fifteen), at(1_735_786_800));
        assert_eq!(slot_start(at(1_735_786_800), fifteen), at(1_735_786_800));
        assert_eq!(utc_seconds(at(1_735_786_800)), "2025-01-02T03:00:00Z");
    }

    #[test]
    fn meta_is_etcd_managers_json() {
        let meta = EtcdManagerMeta {
            etcd_version: "3.5.21".to_owned(),
            timestamp: 1_735_787_045,
            cluster_spec: Some(EtcdManagerClusterSpec {
                member_count: 3,
                etcd_version: "3.5.21".to_owned(),
            }),
        };
        let text = serde_json::to_string(&meta).unwrap();
        assert_eq!(
            text,
            r#"{"etcdVersion":"3.5.21","timestamp":"1735787045","clusterSpec":{"memberCount":3,"etcdVersion":"3.5.21"}}"#
        );
        // etcd-manager writes it indented, and a number parses too.
        let theirs = "{\n  \"etcdVersion\": \"3.4.13\",\n  \"timestamp\": 1600000000,\n  \"clusterSpec\": {\n    \"memberCount\": 1,\n    \"etcdVersion\": \"3.4.13\"\n  }\n}";
        let parsed: EtcdManagerMeta = serde_json::from_str(theirs).unwrap();
        assert_eq!(parsed.timestamp, 1_600_000_000);
        assert_eq!(parsed.cluster_spec.unwrap().member_count, 1);
    }
}
