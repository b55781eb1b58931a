//! Directories: those the spec declares (with their owner and mode), and the missing
//! parents of anything nodewright puts on the node (root-owned, 0755).

use serde::Serialize;

use super::permissions::{Perms, SetPermissions};
use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome, blocking};
use crate::engine::keys::RecordKind;
use crate::engine::plan::PlanError;
use crate::engine::planner::{Planner, wrong_kind};
use crate::engine::state::{FileRecord, State};
use crate::host::Host;
use crate::host::fs::{self as hostfs, Existing};
use crate::spec::AbsPath;

/// Plans the directories the spec declares, shallow first so parents come before
/// children.
pub(crate) fn plan(p: &mut Planner) -> Result<(), PlanError> {
    let mut dirs: Vec<_> = p.desired.directories.iter().collect();
    dirs.sort_by_key(|d| d.path.as_str().matches('/').count());
    for dir in dirs {
        p.ensure_parents(&dir.path)?;
        let perms = p.perms(&dir.path, &dir.ownership)?;
        p.directories.push((dir.path.clone(), perms));
        let after = p.parent_steps(&dir.path);
        match p.inspect(&dir.path)? {
            Existing::Missing => {
                let create = CreateDirectory {
                    path: dir.path.clone(),
                    perms,
                };
                p.push_write(&dir.path, create, "missing".to_owned(), after);
            }
            Existing::Directory { mode, uid, gid } => {
                if let Some(reason) = perms.differ(mode, uid, gid) {
                    let set = SetPermissions {
                        path: dir.path.clone(),
                        perms,
                    };
                    p.push(set, reason, after);
                }
            }
            other => return Err(wrong_kind(&dir.path, &other, "a directory")),
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateDirectory {
    pub path: AbsPath,
    pub perms: Perms,
}

impl Change for CreateDirectory {
    fn verb(&self) -> &'static str {
        "create directory"
    }

    fn target(&self) -> String {
        self.path.to_string()
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        let real = cx.host.path(&self.path);
        let Perms { mode, uid, gid } = self.perms;
        Outcome::of(blocking(move || hostfs::create_dir(&real, mode, uid, gid)).await)
    }

    fn record(&self, _finished: &Finished<'_>, state: &mut State) {
        // `reset` removes what nodewright created, once empty.
        state.created_directories.insert(self.path.to_string());
    }
}

/// Records the declared directories that exist as managed (`verify` checks their
/// owner and mode), whether this run created them or found them.
pub(crate) fn record_declared(directories: &[(AbsPath, Perms)], host: &Host, state: &mut State) {
    for (path, perms) in directories {
        if host.path(path).is_dir() {
            state.files.insert(
                path.to_string(),
                FileRecord {
                    kind: RecordKind::Directory,
                    digest: String::new(),
                    mode: perms.mode,
                    uid: Some(perms.uid),
                    gid: Some(perms.gid),
                    secret: false,
                    stat: None,
                    source: None,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kinds::testing::{Node, at};
    use crate::model::Ownership;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn creates_declared_directories_and_missing_parents_then_records_them() {
        let mut node = Node::new();
        node.want(|b| {
            b.directory("t", at("/var/lib/app/data"), Ownership::root(0o700))
                .unwrap();
            b.directory("t", at("/var/lib/app"), Ownership::root(0o750))
                .unwrap();
        });
        let plan = node.plan().await;
        assert_eq!(
            plan.render(),
            "4 changes:\n  - create directory /var: missing (parent of /var/lib/app)\n  - create directory /var/lib: missing (parent of /var/lib/app)\n  - create directory /var/lib/app: missing\n  - create directory /var/lib/app/data: missing\n"
        );
        // The child waits for its parent.
        assert_eq!(plan.steps[3].after, [2]);
        node.apply(&plan).await;

        let mode = |p: &str| {
            std::fs::metadata(node.real(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("/var/lib/app"), 0o750);
        assert_eq!(mode("/var/lib/app/data"), 0o700);
        assert_eq!(mode("/var"), 0o755);
        let created: Vec<&str> = node
            .state
            .created_directories
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(
            created,
            ["/var", "/var/lib", "/var/lib/app", "/var/lib/app/data"]
        );
        // Only the declared ones are managed (verified) paths.
        let managed: Vec<&str> = node.state.files.keys().map(String::as_str).collect();
        assert_eq!(managed, ["/var/lib/app", "/var/lib/app/data"]);
        assert_eq!(node.state.files["/var/lib/app"].kind, RecordKind::Directory);
        assert_eq!(node.state.files["/var/lib/app"].mode, 0o750);
        assert!(node.plan().await.is_empty());
    }

    #[tokio::test]
    async fn a_wrong_mode_is_set_and_a_file_in_the_way_is_refused() {
        let mut node = Node::new();
        node.want(|b| {
            b.directory("t", at("/srv/app"), Ownership::root(0o750))
                .unwrap()
        });
        std::fs::create_dir_all(node.real("/srv/app")).unwrap();
        std::fs::set_permissions(
            node.real("/srv/app"),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        assert_eq!(
            node.planned().await,
            ["set permissions /srv/app: mode 0777 → 0750"]
        );
        node.converge().await;
        // Found, not created: reset leaves it.
        assert!(node.state.created_directories.is_empty());
        assert!(node.state.files.contains_key("/srv/app"));

        std::fs::remove_dir(node.real("/srv/app")).unwrap();
        node.put("/srv/app", "not a directory");
        let err = engine_plan_error(&node).await;
        assert_eq!(
            err,
            "/srv/app: is a file but must be a directory; remove it by hand"
        );
        node.put("/opt", "a file where a parent goes");
        node.want(|b| {
            b.directory("t", at("/opt/app"), Ownership::root(0o755))
                .unwrap()
        });
        assert_eq!(
            engine_plan_error(&node).await,
            "/opt: is a file but must be a directory (parent of /opt/app); remove it by hand"
        );
    }

    async fn engine_plan_error(node: &Node) -> String {
        crate::engine::plan(&node.desired, &node.host, &node.state)
            .await
            .unwrap_err()
            .to_string()
    }
}
