//! The etcd backups of this node's etcd clusters, as `status` shows them: for each etcd
//! cluster the kept spec backs up and this node holds a member of, the record its timer
//! keeps (the last round, the newest backup in the store), and a problem when the
//! newest backup is older than twice the interval, when rounds fail, or when no round
//! has run although the spec has asked for backups for longer than two intervals.

use std::time::SystemTime;

use crate::controlplane::etcd::record::BackupStatus;
use crate::engine::applied::AppliedSpec;
use crate::host::Host;
use crate::model::control_plane::backup_unit_names;
use crate::runbook::Topic;

/// The backups' records, and the problems among them.
pub(super) fn etcd_backups(host: &Host, now: SystemTime) -> (Vec<BackupStatus>, Vec<String>) {
    let state_dir = host.state_dir();
    let Ok(kept) = AppliedSpec::load(&state_dir) else {
        return (Vec::new(), Vec::new());
    };
    let Ok(spec) = kept.node_spec(&state_dir) else {
        return (Vec::new(), Vec::new());
    };
    let Some(etcd) = spec.control_plane.as_ref().and_then(|cp| cp.etcd.as_ref()) else {
        return (Vec::new(), Vec::new());
    };
    let mut records = Vec::new();
    let mut problems = Vec::new();
    for etcd_cluster in kept.facts.control_plane.etcd_members.keys() {
        let Some(backup) = etcd
            .clusters
            .get(etcd_cluster)
            .and_then(|c| c.backup.as_ref())
        else {
            continue;
        };
        match BackupStatus::load(&state_dir, etcd_cluster) {
            Some(record) => {
                if let Some(problem) = record.problem(now) {
                    problems.push(problem);
                }
                records.push(record);
            }
            None => {
                // The spec asked for backups at `saved_at`; none ran in two intervals.
                let asked_before = crate::clock::rfc3339(now - backup.interval() * 2);
                if kept.saved_at < asked_before {
                    let (_, timer) = backup_unit_names(etcd_cluster);
                    problems.push(format!(
                        "etcd cluster {etcd_cluster}: no backup round has run on this node (is {timer} active? `systemctl list-timers`) ({})",
                        Topic::EtcdBackupFailed.hint()
                    ));
                }
            }
        }
    }
    (records, problems)
}
