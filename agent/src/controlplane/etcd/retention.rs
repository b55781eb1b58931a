//! Which backups to keep, as etcd-manager decides it (`pkg/backupcontroller/cleanup.go`):
//! everything younger than an hour; the first backup of each hour for `hourly`; the
//! first of each UTC day for `daily`; nothing older. Names that do not parse as backup
//! names are never removed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::layout::BackupName;

/// Every backup younger than this is kept.
pub const KEEP_ALL: Duration = Duration::from_secs(3600);
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How long the first backup of each hour is kept.
    pub hourly: Duration,
    /// How long the first backup of each day is kept.
    pub daily: Duration,
}

impl Retention {
    pub fn days(hourly: u32, daily: u32) -> Self {
        Self {
            hourly: Duration::from_secs(u64::from(hourly) * DAY),
            daily: Duration::from_secs(u64::from(daily) * DAY),
        }
    }

    /// The backups among `names` that are past retention at `now`, oldest first.
    pub fn expired(&self, names: &[BackupName], now: SystemTime) -> Vec<BackupName> {
        let mut hourly: BTreeMap<u64, &BackupName> = BTreeMap::new();
        let mut daily: BTreeMap<u64, &BackupName> = BTreeMap::new();
        let mut keep: BTreeSet<&BackupName> = BTreeSet::new();
        for name in names {
            let taken = name.time();
            let age = now.duration_since(taken).unwrap_or_default();
            let secs = taken
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            if age < KEEP_ALL {
                keep.insert(name);
            } else if age < self.hourly {
                first_of(&mut hourly, secs - secs % HOUR, name);
            } else if age < self.daily {
                first_of(&mut daily, secs - secs % DAY, name);
            }
        }
        keep.extend(hourly.values());
        keep.extend(daily.values());
        let mut expired: Vec<BackupName> = names
            .iter()
            .filter(|n| !keep.contains(n))
            .cloned()
            .collect();
        expired.sort();
        expired.dedup();
        expired
    }
}

/// Keeps the earliest backup of each bucket.
fn first_of<'a>(buckets: &mut BTreeMap<u64, &'a BackupName>, bucket: u64, name: &'a BackupName) {
    let slot = buckets.entry(bucket).or_insert(name);
    if name.time() < slot.time() {
        *slot = name;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A backup every 15 minutes for `span`, ending at `now`.
    fn every_quarter_hour(now: u64, span: u64) -> Vec<BackupName> {
        (0..=span / 900)
            .map(|i| BackupName::new(at(now - i * 900), 0))
            .collect()
    }

    #[test]
    fn defaults_keep_an_hour_then_hourly_then_daily() {
        let now = 1_735_776_000; // 2025-01-02T00:00:00Z
        let names = every_quarter_hour(now, 10 * DAY);
        let expired: BTreeSet<BackupName> = Retention::days(7, 730)
            .expired(&names, at(now))
            .into_iter()
            .collect();
        let age = |n: &BackupName| now - n.time().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let kept: Vec<&BackupName> = names.iter().filter(|n| !expired.contains(n)).collect();
        let count =
            |range: std::ops::Range<u64>| kept.iter().filter(|n| range.contains(&age(n))).count();
        // Younger than an hour: all four (00:00, 23:45, 23:30, 23:15).
        assert_eq!(count(0..HOUR), 4);
        // Then one per hour for seven days: 23:00 of the day before back to 00:15 seven
        // days ago (00:00 of that day is seven days old: daily).
        assert_eq!(count(HOUR..7 * DAY), 7 * 24);
        // Then one per day: the days 7, 8, 9 and 10 days ago.
        assert_eq!(count(7 * DAY..11 * DAY), 4);
        for name in &kept {
            if age(name) >= 7 * DAY {
                let secs = name.time().duration_since(UNIX_EPOCH).unwrap().as_secs();
                assert_eq!(secs % DAY, 0, "{name} is not the first of its day");
            }
        }
        assert_eq!(expired.len() + kept.len(), names.len());
    }

    #[test]
    fn nothing_past_the_daily_retention_survives() {
        let now = 1_735_787_700;
        let old = BackupName::new(at(now - 731 * DAY), 1);
        let young = BackupName::new(at(now - 60), 2);
        let future = BackupName::new(at(now + 600), 3);
        let expired =
            Retention::days(7, 730).expired(&[old.clone(), young.clone(), future.clone()], at(now));
        assert_eq!(expired, vec![old]);
    }

    #[test]
    fn the_first_of_an_hour_is_kept_whatever_the_order() {
        let now = 1_735_787_700;
        let base = now - 2 * DAY - (now % HOUR);
        let first = BackupName::new(at(base + 60), 1);
        let second = BackupName::new(at(base + 960), 2);
        let expired = Retention::days(7, 730).expired(&[second.clone(), first.clone()], at(now));
        assert_eq!(expired, vec![second]);
    }
}
