//! Paths an earlier spec had and this one does not: removed, but only ones nodewright
//! wrote (they have a record), and never one under a protected path such as etcd's
//! data. A unit file or drop-in goes only after its unit was stopped and disabled.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome, blocking};
use crate::engine::keys::{AppliedKey, RecordKind};
use crate::engine::kinds::units::unit_of;
use crate::engine::plan::PlanError;
use crate::engine::planner::Planner;
use crate::engine::state::State;
use crate::host::fs::Existing;
use crate::spec::AbsPath;

/// `stopped`: the step that stops and disables each unit no longer wanted, by name.
pub(crate) fn plan(p: &mut Planner, stopped: &BTreeMap<String, usize>) -> Result<(), PlanError> {
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
            let after = unit_of(path.as_str())
                .and_then(|unit| stopped.get(unit))
                .copied()
                .into_iter()
                .collect();
            let step = RemoveFile { path: path.clone() };
            p.push_write(&path, step, "no longer in the spec".to_owned(), after);
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
    use std::sync::Arc;

    use crate::engine::kinds::testing::{Node, at, outcomes};
    use crate::host::systemd::fake::FakeSystemd;
    use crate::model::{DesiredService, Ownership, StateBuilder};
    use crate::spec::UnitName;

    const UNIT: &str = "/etc/systemd/system/app.service";
    const DROP_IN: &str = "/etc/systemd/system/app.service.d/10-limits.conf";

    /// app.service: its unit file, a drop-in, and the service itself.
    fn app(b: &mut StateBuilder) {
        let name = UnitName::try_from("app.service").unwrap();
        b.unit_file(
            "t",
            &name,
            "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        b.drop_in(
            "t",
            &name,
            "10-limits.conf",
            "[Service]\nLimitNOFILE=1048576\n",
        )
        .unwrap();
        b.service(
            "t",
            DesiredService {
                unit: name,
                enabled: true,
                running: true,
                inputs: vec![at(UNIT), at(DROP_IN)],
                ready_with_peers: false,
            },
        )
        .unwrap();
    }

    /// systemd stops a unit through the file it loaded and disables it through the
    /// file's [Install] section: both happen before the files go, then one reload.
    #[tokio::test]
    async fn a_unit_no_longer_wanted_is_stopped_and_disabled_before_its_files_go() {
        let systemd = Arc::new(FakeSystemd::default());
        let mut node = Node::with_systemd(systemd.clone());
        node.want(app);
        node.converge().await;
        let before = systemd.calls().len();

        node.want(|_| {});
        let plan = node.plan().await;
        let lines: Vec<String> = plan.steps.iter().map(|s| s.describe()).collect();
        assert_eq!(
            lines,
            [
                "stop app.service: no longer in the spec".to_owned(),
                format!("remove {UNIT}: no longer in the spec"),
                format!("remove {DROP_IN}: no longer in the spec"),
                format!("daemon-reload systemd: units changed: {UNIT}, {DROP_IN}"),
            ]
        );
        // Each file waits for the stop; the reload for the files.
        assert_eq!(plan.steps[1].after, [0]);
        assert_eq!(plan.steps[2].after, [0]);
        assert_eq!(plan.steps[3].after, [1, 2]);
        node.apply(&plan).await;
        assert_eq!(
            systemd.calls()[before..],
            ["stop app.service", "disable app.service", "daemon-reload"]
        );
        assert!(!node.real(UNIT).exists() && !node.real(DROP_IN).exists());
        assert!(node.plan().await.is_empty());
    }

    /// A refused stop keeps the files (and the records): the next run tries again with
    /// the unit as systemd knows it.
    #[tokio::test]
    async fn a_refused_stop_leaves_the_unit_file_in_place() {
        let systemd = Arc::new(FakeSystemd::default());
        let mut node = Node::with_systemd(systemd.clone());
        node.want(app);
        node.converge().await;
        systemd.fail("stop app.service", "Access denied");

        node.want(|_| {});
        let plan = node.plan().await;
        let report = node.apply(&plan).await;
        let lines = outcomes(&report);
        assert_eq!(
            lines[0],
            "stop app.service: failed: systemctl stop app.service: Access denied"
        );
        assert!(
            lines[1].starts_with(&format!("remove {UNIT}: not run")),
            "{lines:?}"
        );
        assert!(node.real(UNIT).exists() && node.real(DROP_IN).exists());
        assert!(node.state.files.contains_key(UNIT));
        assert!(!systemd.calls().iter().any(|c| c == "disable app.service"));
        // Once systemd lets it stop, it goes as above.
        let systemd_ok = Arc::new(FakeSystemd::default());
        node.host = node.host.clone().with_systemd(systemd_ok.clone());
        node.converge().await;
        assert!(!node.real(UNIT).exists());
        assert_eq!(
            systemd_ok.calls(),
            ["stop app.service", "disable app.service", "daemon-reload"]
        );
    }

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
