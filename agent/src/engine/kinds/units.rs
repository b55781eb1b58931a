//! systemd's unit set: one `daemon-reload` when a unit file, drop-in or mask changed
//! (or was restored on disk after drifting), before any service is started with it,
//! unless systemd already holds every unit as its files now are (`NeedDaemonReload=no`):
//! on the first boot of a baked image, systemd loaded the baked units at boot, and a
//! reload (0.1–0.6 s of a boot) would change nothing.

use serde::Serialize;

use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome};
use crate::engine::keys::AppliedKey;
use crate::engine::planner::Planner;
use crate::engine::state::State;
use crate::engine::trigger::Trigger;
use crate::host::systemd::Loaded;
use crate::model::{FileKind, UNIT_DIR};
use crate::spec::AbsPath;

/// The unit a path in systemd's unit directory belongs to: its unit file or mask
/// (`/etc/systemd/system/app.service`) or one of its drop-ins
/// (`/etc/systemd/system/app.service.d/10-limits.conf`).
pub(crate) fn unit_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(UNIT_DIR)?.strip_prefix('/')?;
    match rest.split_once('/') {
        None => Some(rest),
        Some((dir, _)) => dir.strip_suffix(".d"),
    }
}

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
        match self.held_as_on_disk(cx).await {
            Ok(true) => Outcome::Skipped(
                "systemd holds every unit as its files are (NeedDaemonReload=no)".to_owned(),
            ),
            Ok(false) => Outcome::of_job(cx.host.systemd().daemon_reload().await),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    fn record(&self, finished: &Finished<'_>, state: &mut State) {
        self.trigger.record(state, &finished.at, finished.outcome);
    }
}

impl DaemonReload {
    /// Whether a reload would change nothing: no unit file or mask went since the last
    /// reload (systemd may still hold a removed one), and systemd holds each unit
    /// loaded (a mask: masked) with `NeedDaemonReload=no`. Asked after this run's files
    /// are written; `false` where systemd cannot be asked.
    async fn held_as_on_disk(
        &self,
        cx: &Context,
    ) -> Result<bool, crate::host::systemd::SystemctlError> {
        let removed = cx.applied.get(&self.trigger.key).is_some_and(|last| {
            last.inputs
                .keys()
                .any(|p| !self.trigger.inputs.contains_key(p))
        });
        if removed {
            return Ok(false);
        }
        // Each unit with the load state its inputs give it.
        let mut expected: std::collections::BTreeMap<String, &str> = Default::default();
        for (path, digest) in &self.trigger.inputs {
            let Some(unit) = unit_of(path) else {
                return Ok(false);
            };
            let state = match digest.strip_prefix("symlink:") {
                Some("/dev/null") => "masked",
                // Another link (an alias): leave it to a reload.
                Some(_) => return Ok(false),
                None => "loaded",
            };
            let wanted = expected.entry(unit.to_owned()).or_insert(state);
            if *wanted != state {
                // A mask and files for one unit: not a state to reason about.
                return Ok(false);
            }
        }
        if expected.is_empty() {
            return Ok(false);
        }
        let units: Vec<String> = expected.keys().cloned().collect();
        let Some(held) = cx.host.systemd().loaded(&units).await? else {
            return Ok(false);
        };
        Ok(held.len() == units.len()
            && held.iter().zip(expected.values()).all(
                |(
                    Loaded {
                        load_state,
                        need_reload,
                    },
                    wanted,
                )| { load_state == wanted && !need_reload },
            ))
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

    /// A baked image's first boot: systemd loaded the baked units at boot, so the
    /// reload the record asks for is skipped, and recorded.
    #[tokio::test]
    async fn units_systemd_holds_as_on_disk_need_no_reload() {
        let systemd = Arc::new(FakeSystemd::default());
        systemd.set_loaded("app.service", "loaded", false);
        systemd.set_loaded("swap.target", "masked", false);
        let mut node = Node::with_systemd(systemd.clone());
        unit(&mut node, "[Service]\nExecStart=/bin/true\n");
        let plan = node.plan().await;
        let report = node.apply(&plan).await;
        assert_eq!(
            outcomes(&report).last().unwrap(),
            "daemon-reload systemd: skipped: systemd holds every unit as its files are (NeedDaemonReload=no)"
        );
        assert!(systemd.calls().is_empty(), "{:?}", systemd.calls());
        assert!(node.plan().await.is_empty());

        // A unit file changed on disk since systemd loaded it: reloaded.
        unit(&mut node, "[Service]\nExecStart=/bin/false\n");
        systemd.set_loaded("app.service", "loaded", true);
        node.converge().await;
        assert_eq!(systemd.calls(), ["daemon-reload"]);

        // Held as on disk, but a mask went since the last reload: reloaded.
        node.want(|b| {
            let name = UnitName::try_from("app.service").unwrap();
            b.unit_file("t", &name, "[Service]\nExecStart=/bin/false\n")
                .unwrap();
        });
        node.converge().await;
        assert_eq!(systemd.calls(), ["daemon-reload", "daemon-reload"]);
    }

    /// A unit systemd does not hold as wanted (not found, or loaded while a mask is
    /// wanted) is reloaded.
    #[tokio::test]
    async fn a_unit_not_held_as_wanted_is_reloaded() {
        let systemd = Arc::new(FakeSystemd::default());
        systemd.set_loaded("app.service", "loaded", false);
        systemd.set_loaded("swap.target", "loaded", false);
        let mut node = Node::with_systemd(systemd.clone());
        unit(&mut node, "[Service]\nExecStart=/bin/true\n");
        node.converge().await;
        assert_eq!(systemd.calls(), ["daemon-reload"]);
    }

    #[test]
    fn paths_belong_to_their_unit() {
        use super::unit_of;
        assert_eq!(
            unit_of("/etc/systemd/system/app.service"),
            Some("app.service")
        );
        assert_eq!(
            unit_of("/etc/systemd/system/app.service.d/10-limits.conf"),
            Some("app.service")
        );
        assert_eq!(unit_of("/etc/systemd/system/x/y.conf"), None);
        assert_eq!(unit_of("/etc/systemd/systemd.conf"), None);
        assert_eq!(unit_of("/etc/app/app.service"), None);
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
