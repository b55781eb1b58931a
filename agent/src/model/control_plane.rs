//! The control plane's own units: a mount unit per etcd volume (so the mount is known
//! to systemd and comes back at boot), the `nodewright watch` service, and a backup
//! timer per etcd cluster with backups configured.
//!
//! The volume phase mounts the volume itself (it must format and grow it first); the
//! mount unit is enabled by its `local-fs.target.wants` link but never started or
//! restarted by the engine, so a changed unit can never unmount etcd's data.

use super::ModelError;
use super::builder::{StateBuilder, unit_path};
use super::desired::DesiredService;
use crate::facts::{EtcdMember, Facts};
use crate::spec::{AbsPath, EtcdBackupSpec, NodeSpec, UnitName};

const COMPONENT: &str = "control-plane";

/// The watch service's unit file: the one the image ships (`packer/units/`), so a node
/// that writes it changes nothing.
pub const WATCH_UNIT: &str = include_str!("../../../packer/units/nodewright-watch.service");
pub const WATCH_UNIT_NAME: &str = "nodewright-watch.service";

pub fn render(spec: &NodeSpec, facts: &Facts, out: &mut StateBuilder) -> Result<(), ModelError> {
    if spec.control_plane.is_none() {
        return Ok(());
    }
    for (etcd_cluster, member) in &facts.control_plane.etcd_members {
        mount_unit(etcd_cluster, member, out)?;
    }
    let backups = spec
        .control_plane
        .as_ref()
        .and_then(|cp| cp.etcd.as_ref())
        .map(|etcd| &etcd.clusters);
    for etcd_cluster in facts.control_plane.etcd_members.keys() {
        if let Some(backup) = backups
            .and_then(|clusters| clusters.get(etcd_cluster))
            .and_then(|c| c.backup.as_ref())
        {
            backup_timer(etcd_cluster, backup, out)?;
        }
    }
    let unit = UnitName::try_from(WATCH_UNIT_NAME)?;
    let path = out.unit_file(COMPONENT, &unit, WATCH_UNIT)?;
    out.service(
        COMPONENT,
        DesiredService {
            unit,
            enabled: true,
            running: true,
            inputs: vec![path],
            ready_with_peers: false,
        },
    )?;
    Ok(())
}

fn mount_unit(
    etcd_cluster: &str,
    member: &EtcdMember,
    out: &mut StateBuilder,
) -> Result<(), ModelError> {
    let name = format!("{}.mount", escape_path(member.mount_path.as_str()));
    let unit = UnitName::try_from(name.as_str())?;
    let text = format!(
        "# Managed by nodewright: the data volume of etcd member {member_name} ({etcd_cluster}).\n\
         # nodewright mounts it at boot after checking it; this unit lets systemd know the\n\
         # mount and order etcd after it (RequiresMountsFor={where_}).\n\
         [Unit]\n\
         Description=etcd volume {volume} (member {member_name} of etcd cluster {etcd_cluster})\n\
         \n\
         [Mount]\n\
         What={what}\n\
         Where={where_}\n\
         Type={fs}\n\
         Options=noatime,nofail\n\
         \n\
         [Install]\n\
         WantedBy=local-fs.target\n",
        member_name = member.member,
        volume = member.volume_id,
        what = member.device,
        where_ = member.mount_path,
        fs = member.filesystem,
    );
    let path = out.unit_file(COMPONENT, &unit, &text)?;
    // `systemctl enable`, done as the link it makes, so that no engine step ever
    // starts, restarts or stops the mount.
    let wants = unit_path(&UnitName::try_from("local-fs.target")?, None)?;
    let link = AbsPath::try_from(format!("{wants}.wants/{name}"))?;
    out.symlink(COMPONENT, link, path)?;
    Ok(())
}

/// The backup units of one etcd cluster.
pub fn backup_unit_names(etcd_cluster: &str) -> (String, String) {
    let stem = format!("nodewright-etcd-backup-{etcd_cluster}");
    (format!("{stem}.service"), format!("{stem}.timer"))
}

/// A timer that runs `nodewright etcd backup` on every member at each interval slot
/// (UTC); only etcd's leader takes the backup, once per slot, so every member may run
/// it. A failed round is logged with its runbook topic and retried by the next slot.
fn backup_timer(
    etcd_cluster: &str,
    backup: &EtcdBackupSpec,
    out: &mut StateBuilder,
) -> Result<(), ModelError> {
    let (service_name, timer_name) = backup_unit_names(etcd_cluster);
    let service = UnitName::try_from(service_name.as_str())?;
    let timer = UnitName::try_from(timer_name.as_str())?;
    let service_text = format!(
        "# Managed by nodewright: one backup round of etcd cluster {etcd_cluster}, started by\n\
         # {timer_name}. Only etcd's leader backs up, once per interval; a failed round is\n\
         # logged with its runbook topic (`nodewright runbook etcd-backup-failed`) and the next\n\
         # interval tries again.\n\
         [Unit]\n\
         Description=nodewright etcd backup of etcd cluster {etcd_cluster} to {store}\n\
         Documentation=https://github.com/nodewright/nodewright/blob/main/docs/etcd-backup.md\n\
         Wants=network-online.target\n\
         After=network-online.target nodewright.service\n\
         ConditionPathExists=/var/lib/nodewright/applied-spec.json\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         # Site settings (proxy, AWS endpoint, log filter), as for the boot run.\n\
         EnvironmentFile=-/etc/default/nodewright\n\
         ExecStart=/usr/local/bin/nodewright etcd backup --cluster {etcd_cluster}\n\
         # A round that hangs must not hold the next interval's.\n\
         TimeoutStartSec={timeout}\n\
         Nice=10\n\
         IOSchedulingClass=idle\n\
         SyslogIdentifier=nodewright-etcd-backup\n",
        store = backup.store.replace('%', "%%"),
        timeout = backup_timeout(backup),
    );
    let timer_text = format!(
        "# Managed by nodewright: a backup of etcd cluster {etcd_cluster} every {minutes} minutes,\n\
         # on the UTC interval boundaries (controlPlane.etcd.clusters.{etcd_cluster}.backup).\n\
         [Unit]\n\
         Description=nodewright etcd backup of etcd cluster {etcd_cluster}, every {minutes} minutes\n\
         Documentation=https://github.com/nodewright/nodewright/blob/main/docs/etcd-backup.md\n\
         \n\
         [Timer]\n\
         OnCalendar={calendar}\n\
         # Members fire within a few seconds of each other; the slot check in the store\n\
         # keeps it to one backup.\n\
         AccuracySec=1s\n\
         RandomizedDelaySec=20s\n\
         Unit={service_name}\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n",
        minutes = backup.interval_minutes,
        calendar = backup.on_calendar(),
    );
    let service_path = out.unit_file(COMPONENT, &service, &service_text)?;
    let timer_path = out.unit_file(COMPONENT, &timer, &timer_text)?;
    out.service(
        COMPONENT,
        DesiredService {
            unit: timer,
            enabled: true,
            running: true,
            inputs: vec![timer_path, service_path],
            ready_with_peers: false,
        },
    )
}

/// A round may take most of the interval (a large database over a slow link), never
/// more: the next slot's round must find the unit free.
fn backup_timeout(backup: &EtcdBackupSpec) -> String {
    let minutes = backup.interval_minutes.saturating_sub(1).max(1);
    format!("{minutes}min")
}

/// `systemd-escape --path`: `/mnt/etcd-main-a` → `mnt-etcd\x2dmain\x2da`.
pub fn escape_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return "-".to_owned();
    }
    let mut out = String::new();
    for (i, part) in trimmed.split('/').filter(|p| !p.is_empty()).enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, byte) in part.bytes().enumerate() {
            let plain =
                byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':' || byte == b'.';
            if plain && !(j == 0 && i == 0 && byte == b'.') {
                out.push(byte as char);
            } else {
                out.push_str(&format!("\\x{byte:02x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_escape_as_systemd_does() {
        assert_eq!(escape_path("/mnt/etcd-main-a"), "mnt-etcd\\x2dmain\\x2da");
        assert_eq!(escape_path("/var/lib/x y"), "var-lib-x\\x20y");
        assert_eq!(escape_path("/.hidden/a.b"), "\\x2ehidden-a.b");
    }
}
