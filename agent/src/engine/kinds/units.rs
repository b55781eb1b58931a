//! systemd's unit set: one `daemon-reload` when a unit file, drop-in or mask changed
//! (or was restored on disk after drifting), before any service is started with it.

use serde::Serialize;

use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome};
use crate::engine::keys::AppliedKey;
use crate::engine::planner::Planner;
use crate::engine::state::State;
use crate::engine::trigger::Trigger;
use crate::model::{FileKind, UNIT_DIR};
use crate::spec::AbsPath;

/// Plans the reload; returns its step, which every service step comes after.
pub(crate) fn plan(p: &mut Planner) -> Option<usize> {
    let unit_dir = crate::model::fixed_path(UNIT_DIR);
    let units: Vec<AbsPath> = p
        .desired
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Systemd)
        .map(|f| f.path.clone())
        // A mask (a link to /dev/null) changes what systemd loads too.
        .chain(
            p.desired
                .symlinks
                .iter()
                .filter(|l| l.path.starts_with(&unit_dir))
                .map(|l| l.path.clone()),
        )
        .collect();
    let trigger = Trigger::new(AppliedKey::DaemonReload, p.input_digests(&units));
    if trigger.inputs.is_empty() && !p.state.applied.contains_key(&trigger.key) {
        return None;
    }
    let changed = p.changed(&trigger);
    let reason = match &changed {
        Some(changed) if changed.is_empty() => "units not yet loaded by systemd".to_owned(),
        Some(changed) => format!("units changed: {}", changed.join(", ")),
        // Same text as last loaded, but drifted on disk meanwhile: systemd may have
        // loaded the drifted text, so load the restored one.
        None => {
            let repaired = p.rewritten(&units);
            if repaired.is_empty() {
                return None;
            }
            format!("unit files restored on disk: {}", repaired.join(", "))
        }
    };
    let after = p.steps_writing(
        trigger
            .inputs
            .keys()
            .cloned()
            .chain(changed.unwrap_or_default()),
    );
    Some(p.push(DaemonReload { trigger }, reason, after))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaemonReload {
    pub trigger: Trigger,
}

impl Change for DaemonReload {
    fn verb(&self) -> &'static str {
        "daemon-reload"
    }

    fn target(&self) -> String {
        "systemd".to_owned()
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        self.trigger.resolve_pending(&cx.fetcher);
        Outcome::of_job(cx.host.systemd().daemon_reload().await)
    }

    fn record(&self, finished: &Finished<'_>, state: &mut State) {
        self.trigger.record(state, &finished.at, finished.outcome);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::engine::keys::AppliedKey;
    use crate::engine::kinds::testing::{Node, at, outcomes};
    use crate::host::systemd::fake::FakeSystemd;
    use crate::spec::UnitName;

    fn unit(node: &mut Node, text: &'static str) {
        node.want(|b| {
            let name = UnitName::try_from("app.service").unwrap();
            b.unit_file("t", &name, text).unwrap();
            b.symlink("t", at("/etc/systemd/system/swap.target"), at("/dev/null"))
                .unwrap();
        });
    }

    #[tokio::test]
    async fn reloads_once_after_the_unit_files_and_only_when_they_change() {
        let systemd = Arc::new(FakeSystemd::default());
        let mut node = Node::with_systemd(systemd.clone());
        unit(&mut node, "[Service]\nExecStart=/bin/true\n");
        let plan = node.plan().await;
        let reload = plan.steps.last().unwrap();
        assert_eq!(
            reload.describe(),
            "daemon-reload systemd: units not yet loaded by systemd"
        );
        // After the unit file and the mask.
        assert_eq!(reload.after.len(), 2);
        node.apply(&plan).await;
        assert_eq!(systemd.calls(), ["daemon-reload"]);
        let record = &node.state.applied[&AppliedKey::DaemonReload];
        assert_eq!(
            record.inputs["/etc/systemd/system/swap.target"],
            "symlink:/dev/null"
        );
        assert!(node.plan().await.is_empty());

        unit(&mut node, "[Service]\nExecStart=/bin/false\n");
        assert_eq!(
            node.planned().await.last().unwrap(),
            "daemon-reload systemd: units changed: /etc/systemd/system/app.service"
        );
        node.converge().await;

        // Drifted and restored: systemd may have loaded the drifted text.
        node.put("/etc/systemd/system/app.service", "[Service]\n");
        assert_eq!(
            node.planned().await.last().unwrap(),
            "daemon-reload systemd: unit files restored on disk: /etc/systemd/system/app.service"
        );
    }

    #[tokio::test]
    async fn off_a_live_host_the_reload_is_skipped_and_recorded() {
        let mut node = Node::new();
        unit(&mut node, "[Service]\nExecStart=/bin/true\n");
        let plan = node.plan().await;
        let report = node.apply(&plan).await;
        let reason = format!("root is {}, not /", node.root().display());
        assert_eq!(
            outcomes(&report).last().unwrap(),
            &format!("daemon-reload systemd: skipped: {reason}")
        );
        assert_eq!(
            node.state.applied[&AppliedKey::DaemonReload].outcome,
            format!("skipped: {reason}")
        );
        assert!(node.plan().await.is_empty());
    }
}
