//! What to do with a volume's device, from what the probes saw. Pure.
//!
//! Formatting is the one step here that can lose a cluster, so the rule is narrow:
//! format only when every probe agrees the device is blank (`blkid -p` found nothing,
//! `wipefs` lists no signature, and the first and last MiB are zeros). Any filesystem
//! other than the one wanted, any partition table, anything unrecognised: refuse, and
//! say what was found.

use crate::host::disks::Probe;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing on it: make the filesystem.
    Blank,
    /// The wanted filesystem: mount it, never format.
    Filesystem { uuid: Option<String> },
    /// Neither: leave it alone.
    Refuse(String),
}

pub fn verdict(probe: &Probe, wanted_fs: &str) -> Verdict {
    match probe.blkid_status {
        0 => {
            if let Some(table) = probe.field("PTTYPE") {
                return Verdict::Refuse(format!(
                    "it has a partition table ({table}); refusing to format or mount it"
                ));
            }
            match probe.field("TYPE") {
                Some(fs) if fs == wanted_fs => Verdict::Filesystem {
                    uuid: probe.field("UUID").map(str::to_owned),
                },
                Some(other) => Verdict::Refuse(format!(
                    "it holds {other}, not {wanted_fs}; refusing to format or mount it"
                )),
                None => Verdict::Refuse(format!(
                    "blkid found something it cannot name ({}); refusing to format it",
                    describe_fields(probe)
                )),
            }
        }
        2 => {
            if !probe.wipefs.is_empty() {
                Verdict::Refuse(format!(
                    "blkid sees nothing but wipefs finds signatures ({}); refusing to format it",
                    probe.wipefs.join(", ")
                ))
            } else if probe.nonzero {
                Verdict::Refuse(
                    "no filesystem is recognised but its first or last MiB holds data; refusing to format it (wipe it by hand if it is really unused)"
                        .to_owned(),
                )
            } else {
                Verdict::Blank
            }
        }
        status => Verdict::Refuse(format!(
            "blkid failed (exit {status}: {}); refusing to format it",
            if probe.blkid_error.is_empty() {
                "no message"
            } else {
                &probe.blkid_error
            }
        )),
    }
}

fn describe_fields(probe: &Probe) -> String {
    probe
        .blkid
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(status: i32, fields: &[(&str, &str)]) -> Probe {
        Probe {
            blkid: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            blkid_status: status,
            ..Probe::default()
        }
    }

    #[test]
    fn blank_only_when_every_probe_agrees() {
        assert_eq!(verdict(&probe(2, &[]), "ext4"), Verdict::Blank);
        let mut data = probe(2, &[]);
        data.nonzero = true;
        assert!(matches!(verdict(&data, "ext4"), Verdict::Refuse(r) if r.contains("holds data")));
        let mut signed = probe(2, &[]);
        signed.wipefs = vec!["xfs 0x0".to_owned()];
        assert!(matches!(verdict(&signed, "ext4"), Verdict::Refuse(r) if r.contains("wipefs")));
    }

    #[test]
    fn the_wanted_filesystem_is_mounted_never_formatted() {
        assert_eq!(
            verdict(&probe(0, &[("TYPE", "ext4"), ("UUID", "u-1")]), "ext4"),
            Verdict::Filesystem {
                uuid: Some("u-1".to_owned())
            }
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for (fields, text) in [
            (vec![("PTTYPE", "gpt")], "partition table (gpt)"),
            (vec![("PTTYPE", "dos"), ("TYPE", "ext4")], "partition table"),
            (vec![("TYPE", "xfs")], "holds xfs"),
            (vec![("TYPE", "crypto_LUKS")], "holds crypto_LUKS"),
            (vec![("TYPE", "LVM2_member")], "holds LVM2_member"),
            (vec![("USAGE", "other")], "cannot name"),
        ] {
            match verdict(&probe(0, &fields), "ext4") {
                Verdict::Refuse(reason) => assert!(reason.contains(text), "{reason}"),
                other => panic!("{fields:?}: {other:?}"),
            }
        }
        let mut failed = probe(4, &[]);
        failed.blkid_error = "cannot open".to_owned();
        assert!(matches!(verdict(&failed, "ext4"), Verdict::Refuse(r) if r.contains("exit 4")));
        // Ambivalent results (blkid exit 8) are refused too.
        assert!(matches!(
            verdict(&probe(8, &[]), "ext4"),
            Verdict::Refuse(_)
        ));
    }
}
