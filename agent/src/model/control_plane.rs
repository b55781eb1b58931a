//! The control plane's own units: a mount unit per etcd volume (so the mount is known
//! to systemd and comes back at boot), and the `nodewright watch` service.
//!
//! The volume phase mounts the volume itself (it must format and grow it first); the
//! mount unit is enabled by its `local-fs.target.wants` link but never started or
//! restarted by the engine, so a changed unit can never unmount etcd's data.

use super::ModelError;
use super::builder::{StateBuilder, unit_path};
use super::desired::DesiredService;
use crate::facts::{EtcdMember, Facts};
use crate::spec::{AbsPath, NodeSpec, UnitName};

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
