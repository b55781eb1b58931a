//! `GET /metrics` on the watch's loopback listener, in Prometheus's text format: the
//! watch's rounds, and for each etcd cluster the spec backs up, what its backup timer
//! last recorded on this node (read at each scrape: the timer's runs write it, not the
//! watch). Every member reports the cluster's newest backup, whichever member took it.

use std::fmt::Write;
use std::time::SystemTime;

use super::health::Health;
use crate::controlplane::etcd::record::{BackupStatus, LastBackup};

/// The metrics text at `now`.
pub fn render(health: &Health, now: SystemTime) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    family(
        "nodewright_watch_rounds_total",
        "counter",
        "Rounds of the watch since it started.",
        &[(String::new(), health.rounds as f64)],
    );
    let last_ok = health.last.as_ref().is_some_and(|(_, r)| r.ok);
    family(
        "nodewright_watch_last_round_ok",
        "gauge",
        "1 when the last round succeeded.",
        &[(String::new(), f64::from(u8::from(last_ok)))],
    );

    let records: Vec<(String, Option<BackupStatus>)> = health
        .backups
        .iter()
        .map(|c| (c.clone(), BackupStatus::load(&health.state_dir, c)))
        .collect();
    let label = |cluster: &str| format!("{{etcd_cluster=\"{cluster}\"}}");
    let each = |value: &dyn Fn(&BackupStatus) -> Option<f64>| -> Vec<(String, f64)> {
        records
            .iter()
            .filter_map(|(c, r)| r.as_ref().and_then(value).map(|v| (label(c), v)))
            .collect()
    };
    family(
        "nodewright_etcd_backup_recorded",
        "gauge",
        "1 when a backup round of the etcd cluster has run on this node.",
        &records
            .iter()
            .map(|(c, r)| (label(c), f64::from(u8::from(r.is_some()))))
            .collect::<Vec<_>>(),
    );
    // A figure of each cluster's newest backup, for the clusters that have one.
    let newest = |value: &dyn Fn(&LastBackup) -> Option<f64>| {
        each(&|r: &BackupStatus| r.last_backup.as_ref().and_then(value))
    };
    family(
        "nodewright_etcd_backup_last_timestamp_seconds",
        "gauge",
        "When the newest backup in the store was taken (Unix seconds).",
        &newest(&|b| Some(b.unix as f64)),
    );
    family(
        "nodewright_etcd_backup_age_seconds",
        "gauge",
        "Age of the newest backup in the store.",
        &newest(&|b| Some(b.age(now).as_secs() as f64)),
    );
    family(
        "nodewright_etcd_backup_last_size_bytes",
        "gauge",
        "Size of the newest backup (gzipped snapshot).",
        &newest(&|b| b.size.map(|s| s as f64)),
    );
    family(
        "nodewright_etcd_backup_last_revision",
        "gauge",
        "etcd revision of the newest backup.",
        &newest(&|b| b.revision.map(|v| v as f64)),
    );
    family(
        "nodewright_etcd_backup_interval_seconds",
        "gauge",
        "The backup interval of the spec.",
        &each(&|r| Some(r.interval_seconds as f64)),
    );
    family(
        "nodewright_etcd_backup_failures_in_a_row",
        "gauge",
        "Backup rounds on this node that failed since the last good one.",
        &each(&|r| Some(f64::from(r.failures_in_a_row))),
    );
    family(
        "nodewright_etcd_backup_stale",
        "gauge",
        "1 when there is no backup or the newest is older than twice the interval.",
        &each(&|r| Some(f64::from(u8::from(r.problem(now).is_some())))),
    );
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::controlplane::etcd::layout::{BackupName, utc_seconds};
    use crate::controlplane::etcd::record::{LastBackup, RoundRecord};

    #[test]
    fn backup_figures_come_from_the_timers_record() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_787_045);
        let taken = now - Duration::from_secs(40 * 60);
        let name = BackupName::new(taken, 4242);
        BackupStatus {
            etcd_cluster: "main".to_owned(),
            store: "s3://state/prod/backups/etcd/main/".to_owned(),
            interval_seconds: 900,
            last_round: RoundRecord {
                at: utc_seconds(now),
                result: "not-leader".to_owned(),
                error: None,
                topic: None,
            },
            last_backup: Some(LastBackup {
                name: name.to_string(),
                url: String::new(),
                time: utc_seconds(taken),
                unix: 1_735_787_045 - 2400,
                size: Some(123_456),
                revision: Some(4242),
                taken_by: Some("b".to_owned()),
            }),
            failures_in_a_row: 0,
        }
        .save(dir.path())
        .unwrap();
        let health = Health {
            rounds: 3,
            backups: vec!["main".to_owned(), "events".to_owned()],
            state_dir: dir.path().to_owned(),
            ..Default::default()
        };
        let text = render(&health, now);
        for line in [
            "nodewright_watch_rounds_total 3",
            "nodewright_etcd_backup_recorded{etcd_cluster=\"main\"} 1",
            "nodewright_etcd_backup_recorded{etcd_cluster=\"events\"} 0",
            "nodewright_etcd_backup_last_timestamp_seconds{etcd_cluster=\"main\"} 1735784645",
            "nodewright_etcd_backup_age_seconds{etcd_cluster=\"main\"} 2400",
            "nodewright_etcd_backup_last_size_bytes{etcd_cluster=\"main\"} 123456",
            "nodewright_etcd_backup_last_revision{etcd_cluster=\"main\"} 4242",
            // 40 minutes is more than twice the 15-minute interval.
            "nodewright_etcd_backup_stale{etcd_cluster=\"main\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
        }
        assert!(
            !text.contains("size_bytes{etcd_cluster=\"events\"}"),
            "{text}"
        );
    }
}
