//! Owner and mode of a managed path: what each path kind wants, and the step that
//! sets them on a path whose content is already right.

use serde::Serialize;

use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome, blocking};
use crate::engine::state::{StatRecord, State};
use crate::host::fs::{self as hostfs, Existing, FileStat};
use crate::spec::AbsPath;

/// Resolved owner and mode of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Perms {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Perms {
    /// The owner and mode a file has.
    pub fn of(stat: &FileStat) -> Self {
        Self {
            mode: stat.mode,
            uid: stat.uid,
            gid: stat.gid,
        }
    }

    /// How `mode`, `uid` and `gid` differ from these, in words; `None` when they do not.
    pub fn differ(self, mode: u32, uid: u32, gid: u32) -> Option<String> {
        let mut parts = Vec::new();
        if mode != self.mode {
            parts.push(format!("mode {mode:04o} → {:04o}", self.mode));
        }
        if uid != self.uid || gid != self.gid {
            parts.push(format!("owner {uid}:{gid} → {}:{}", self.uid, self.gid));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetPermissions {
    pub path: AbsPath,
    pub perms: Perms,
}

impl Change for SetPermissions {
    fn verb(&self) -> &'static str {
        "set permissions"
    }

    fn target(&self) -> String {
        self.path.to_string()
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        let real = cx.host.path(&self.path);
        let Perms { mode, uid, gid } = self.perms;
        Outcome::of(blocking(move || hostfs::set_owner_and_mode(&real, mode, uid, gid)).await)
    }

    fn record(&self, finished: &Finished<'_>, state: &mut State) {
        // chmod moves ctime: refresh the stat so the next run trusts the digest.
        if let Some(record) = state.files.get_mut(self.path.as_str()) {
            record.mode = self.perms.mode;
            record.uid = Some(self.perms.uid);
            record.gid = Some(self.perms.gid);
            if let Ok(Existing::File(stat)) = hostfs::inspect(&finished.host.path(&self.path)) {
                record.stat = Some(StatRecord::of(&stat));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kinds::testing::{Node, at};
    use crate::model::Ownership;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn differences_are_named() {
        let want = Perms {
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        assert_eq!(want.differ(0o644, 0, 0), None);
        assert_eq!(
            want.differ(0o600, 1, 0).as_deref(),
            Some("mode 0600 → 0644, owner 1:0 → 0:0")
        );
    }

    #[tokio::test]
    async fn a_chmod_is_set_back_and_its_stat_refreshed() {
        let mut node = Node::new();
        node.want(|b| {
            b.file("t", at("/etc/app.conf"), "a\n", Ownership::root(0o640))
                .unwrap()
        });
        node.converge().await;
        let real = node.real("/etc/app.conf");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o666)).unwrap();

        let plan = node.plan().await;
        assert_eq!(
            plan.render(),
            "1 changes:\n  - set permissions /etc/app.conf: mode 0666 → 0640\n"
        );
        node.apply(&plan).await;
        let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let record = &node.state.files["/etc/app.conf"];
        assert_eq!(record.mode, 0o640);
        let Existing::File(stat) = hostfs::inspect(&real).unwrap() else {
            panic!("not a file")
        };
        assert!(record.stat.as_ref().unwrap().matches(&stat));
        assert!(node.plan().await.is_empty());
    }
}
