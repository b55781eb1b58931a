//! Paths an earlier spec had and this one does not: removed, but only ones nodewright
//! wrote (they have a record), and never one under a protected path such as etcd's
//! data.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome, blocking};
use crate::engine::keys::{AppliedKey, RecordKind};
use crate::engine::plan::PlanError;
use crate::engine::planner::Planner;
use crate::engine::state::State;
use crate::host::fs::Existing;
use crate::spec::AbsPath;

pub(crate) fn plan(p: &mut Planner) -> Result<(), PlanError> {
    let desired = p.desired;
    let wanted: BTreeSet<&str> = desired
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(desired.symlinks.iter().map(|l| l.path.as_str()))
        .chain(desired.asset_files.iter().map(|f| f.path.as_str()))
        .chain(desired.directories.iter().map(|d| d.path.as_str()))
        .collect();
    // Directories stay (reset removes those nodewright created); blocks are their kind's.
    let gone: Vec<String> = p
        .state
        .files
        .iter()
        .filter(|(path, record)| {
            !wanted.contains(path.as_str())
                && record.kind != RecordKind::Directory
                && record.kind != RecordKind::Block
        })
        .map(|(path, _)| path.clone())
        .collect();
    for path in gone {
        let Ok(path) = AbsPath::try_from(path) else {
            continue;
        };
        if let Some(guard) = p.protected.covering(path.as_str()) {
            tracing::warn!(
                path = %path,
                protected = %guard.path,
                "no longer in the spec, but under a protected path: left in place"
            );
            continue;
        }
        if p.inspect(&path)? == Existing::Missing {
            // Removed by an earlier run that was killed before it could record so.
            p.forget.push(path.to_string());
        } else {
            let step = RemoveFile { path: path.clone() };
            p.push_write(&path, step, "no longer in the spec".to_owned(), vec![]);
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemoveFile {
    pub path: AbsPath,
}

impl Change for RemoveFile {
    fn verb(&self) -> &'static str {
        "remove"
    }

    fn target(&self) -> String {
        self.path.to_string()
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        let real = cx.host.path(&self.path);
        Outcome::of(
            blocking(move || match std::fs::remove_file(&real) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            })
            .await,
        )
    }

    fn record(&self, _finished: &Finished<'_>, state: &mut State) {
        state.files.remove(self.path.as_str());
        // A static pod no longer in the spec: its inputs record goes with it.
        state
            .applied
            .remove(&AppliedKey::StaticPod(self.path.clone()));
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::kinds::testing::{Node, at};
    use crate::model::Ownership;

    #[tokio::test]
    async fn only_recorded_paths_outside_protected_ones_are_removed() {
        let mut node = Node::new();
        node.want(|b| {
            for path in ["/etc/app/a.conf", "/etc/app/b.conf", "/var/lib/etcd/marker"] {
                b.file("t", at(path), "x\n", Ownership::root(0o644))
                    .unwrap();
            }
        });
        node.converge().await;
        node.put("/etc/app/someone-elses.conf", "y\n");
        node.want(|b| {
            b.file("t", at("/etc/app/a.conf"), "x\n", Ownership::root(0o644))
                .unwrap()
        });
        assert_eq!(
            node.planned().await,
            ["remove /etc/app/b.conf: no longer in the spec"]
        );
        node.converge().await;
        assert!(!node.real("/etc/app/b.conf").exists());
        assert!(!node.state.files.contains_key("/etc/app/b.conf"));
        // etcd's data stays, recorded; what is not ours stays too.
        assert!(node.real("/var/lib/etcd/marker").exists());
        assert!(node.state.files.contains_key("/var/lib/etcd/marker"));
        assert!(node.real("/etc/app/someone-elses.conf").exists());
        assert!(node.plan().await.is_empty());
    }

    #[tokio::test]
    async fn a_path_removed_by_a_killed_run_is_only_forgotten() {
        let mut node = Node::new();
        node.want(|b| {
            b.file("t", at("/etc/app/old.conf"), "x\n", Ownership::root(0o644))
                .unwrap()
        });
        node.converge().await;
        std::fs::remove_file(node.real("/etc/app/old.conf")).unwrap();
        node.want(|_| {});
        let plan = node.plan().await;
        assert!(plan.is_empty());
        assert_eq!(plan.forget, ["/etc/app/old.conf"]);
        node.apply(&plan).await;
        assert!(node.state.files.is_empty());
    }
}
