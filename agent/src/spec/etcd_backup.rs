//! `controlPlane.etcd.clusters.<name>.backup`: periodic backups of one etcd cluster to
//! the state store, with etcd-manager's defaults (every 15 minutes; the first of each
//! hour kept 7 days, the first of each day 2 years) and its layout, so a kops
//! cluster's `backupStore` works as it is.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::Problems;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdBackupSpec {
    /// The etcd cluster's backup prefix: `s3://bucket/<cluster>/backups/etcd/<name>/`, as
    /// kops's `backupStore`. Backups go under it as
    /// `<time>/etcd.backup.gz` + `_etcd_backup.meta`, as etcd-manager writes them.
    pub store: String,
    /// Minutes between backups; the slots are aligned to UTC (a 15-minute interval backs
    /// up at :00, :15, :30, :45). Divides an hour (1 to 60) or is whole hours that
    /// divide a day.
    #[serde(default = "default_interval")]
    pub interval_minutes: u32,
    /// Days the first backup of each hour is kept.
    #[serde(default = "default_hourly")]
    pub hourly_retention_days: u32,
    /// Days the first backup of each day is kept.
    #[serde(default = "default_daily")]
    pub daily_retention_days: u32,
}

fn default_interval() -> u32 {
    15
}
fn default_hourly() -> u32 {
    7
}
fn default_daily() -> u32 {
    730
}

/// Intervals a systemd calendar can fire at on every slot boundary.
pub const BACKUP_INTERVALS_MINUTES: [u32; 19] = [
    1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440,
];

impl EtcdBackupSpec {
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.interval_minutes) * 60)
    }

    /// The timer's `OnCalendar=` for the interval (UTC, on the slot boundaries).
    pub fn on_calendar(&self) -> String {
        let minutes = self.interval_minutes;
        if minutes < 60 {
            format!("*-*-* *:00/{minutes}:00 UTC")
        } else if minutes == 1440 {
            "*-*-* 00:00:00 UTC".to_owned()
        } else {
            format!("*-*-* 00/{}:00:00 UTC", minutes / 60)
        }
    }

    pub(super) fn check(&self, at: &str, problems: &mut Problems) {
        let store = self.store.as_str();
        if let Some(rest) = store.strip_prefix("s3://") {
            match rest.split_once('/') {
                None | Some((_, "")) => problems.add(
                    &format!("{at}.store"),
                    format!(
                        "{store:?} names no prefix: use s3://bucket/<cluster>/backups/etcd/<name>/"
                    ),
                ),
                Some((bucket, prefix)) => {
                    let bucket_ok = (3..=63).contains(&bucket.len())
                        && bucket.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                        });
                    if !bucket_ok {
                        problems.add(
                            &format!("{at}.store"),
                            format!("{bucket:?} is not a valid S3 bucket name"),
                        );
                    } else if !prefix.ends_with('/') || prefix.starts_with('/') {
                        problems.add(
                            &format!("{at}.store"),
                            format!("{store:?} is a prefix and must end with '/'"),
                        );
                    } else if prefix.split('/').any(|p| p == "." || p == "..") {
                        problems.add(
                            &format!("{at}.store"),
                            format!("{store:?} must not contain . or .."),
                        );
                    }
                }
            }
        } else {
            problems.add(
                &format!("{at}.store"),
                format!("{store:?} must be an s3:// prefix (the state store)"),
            );
        }
        if !BACKUP_INTERVALS_MINUTES.contains(&self.interval_minutes) {
            problems.add(
                &format!("{at}.intervalMinutes"),
                format!(
                    "{} does not divide the day into equal slots; use one of {}",
                    self.interval_minutes,
                    BACKUP_INTERVALS_MINUTES.map(|m| m.to_string()).join(", ")
                ),
            );
        }
        if !(1..=36_500).contains(&self.hourly_retention_days) {
            problems.add(
                &format!("{at}.hourlyRetentionDays"),
                format!(
                    "{} is out of range (1 to 36500 days)",
                    self.hourly_retention_days
                ),
            );
        }
        if !(1..=36_500).contains(&self.daily_retention_days) {
            problems.add(
                &format!("{at}.dailyRetentionDays"),
                format!(
                    "{} is out of range (1 to 36500 days)",
                    self.daily_retention_days
                ),
            );
        } else if self.daily_retention_days < self.hourly_retention_days {
            problems.add(
                &format!("{at}.dailyRetentionDays"),
                format!(
                    "{} days is shorter than hourlyRetentionDays ({}): the daily backups would go first",
                    self.daily_retention_days, self.hourly_retention_days
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(interval: u32) -> EtcdBackupSpec {
        EtcdBackupSpec {
            store: "s3://state/prod.example.com/backups/etcd/main/".to_owned(),
            interval_minutes: interval,
            hourly_retention_days: 7,
            daily_retention_days: 730,
        }
    }

    #[test]
    fn calendars_fire_on_slot_boundaries() {
        assert_eq!(spec(15).on_calendar(), "*-*-* *:00/15:00 UTC");
        assert_eq!(spec(1).on_calendar(), "*-*-* *:00/1:00 UTC");
        assert_eq!(spec(60).on_calendar(), "*-*-* 00/1:00:00 UTC");
        assert_eq!(spec(360).on_calendar(), "*-*-* 00/6:00:00 UTC");
        assert_eq!(spec(1440).on_calendar(), "*-*-* 00:00:00 UTC");
        for minutes in BACKUP_INTERVALS_MINUTES {
            assert_eq!(1440 % minutes, 0, "{minutes}");
            if minutes < 60 {
                assert_eq!(60 % minutes, 0, "{minutes}");
            } else {
                assert_eq!(minutes % 60, 0, "{minutes}");
            }
        }
    }
}
