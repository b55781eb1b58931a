//! Services: enabled, started, restarted exactly when one of their inputs changed
//! (unit text, drop-ins, configs, binary: their digests, never mtimes), stopped when
//! their spec says so, and stopped and forgotten when no longer in the spec. Everything
//! goes through the host's [`Systemd`](crate::host::systemd::Systemd): off a live host
//! it cannot tell a unit's state (the record decides) and skips every job.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome};
use crate::engine::keys::AppliedKey;
use crate::engine::plan::PlanError;
use crate::engine::planner::Planner;
use crate::engine::state::State;
use crate::engine::trigger::Trigger;
use crate::host::systemd::stop_unit;
use crate::model::DesiredService;
use crate::spec::UnitName;

/// Plans the services in their start order, each after its inputs, systemd's reload,
/// what the host needs first (`host_steps`) and the service before it.
pub(crate) async fn plan(
    p: &mut Planner<'_>,
    reload: Option<usize>,
    host_steps: &[usize],
) -> Result<(), PlanError> {
    let desired = p.desired;
    let mut previous: Option<usize> = None;
    for service in &desired.services {
        let trigger = Trigger::new(
            AppliedKey::Service(service.unit.clone()),
            p.input_digests(&service.inputs),
        );
        let mut after = p.steps_writing(service.inputs.iter().map(|p| p.to_string()));
        after.extend(reload);
        after.extend(previous);
        after.extend(host_steps);

        let enable = Trigger::new(AppliedKey::Enable(service.unit.clone()), BTreeMap::new());
        let needs_enable = match p.host.systemd().is_enabled(service.unit.as_str()).await? {
            Some(enabled) => !enabled,
            // Off a live host, only our record can tell.
            None => !p.state.applied.contains_key(&enable.key),
        };
        if service.enabled && needs_enable {
            let step = EnableUnit {
                unit: service.unit.clone(),
                trigger: enable,
            };
            let index = p.push(step, "not enabled".to_owned(), after.clone());
            after.push(index);
            previous = Some(index);
        }
        if let Some(index) = plan_running(p, service, trigger, after).await? {
            previous = Some(index);
        }
    }
    // Services an earlier spec had: stop them and forget them.
    let wanted: BTreeSet<&str> = desired.services.iter().map(|s| s.unit.as_str()).collect();
    let gone: BTreeSet<&UnitName> = p
        .state
        .applied
        .keys()
        .filter_map(AppliedKey::unit)
        .filter(|unit| !wanted.contains(unit.as_str()))
        .collect();
    for unit in gone {
        let stop = StopUnit {
            forget: Some(unit.to_string()),
            unit: unit.clone(),
        };
        p.push(
            stop,
            "no longer in the spec".to_owned(),
            reload.into_iter().collect(),
        );
    }
    Ok(())
}

/// Starts, restarts or stops one service, as its spec, its state and its inputs say.
async fn plan_running(
    p: &mut Planner<'_>,
    service: &DesiredService,
    trigger: Trigger,
    after: Vec<usize>,
) -> Result<Option<usize>, PlanError> {
    let unit = service.unit.clone();
    let queue = service.ready_with_peers;
    let active = p.host.systemd().is_active(unit.as_str()).await?;
    if !service.running {
        if active == Some(true) {
            let stop = StopUnit { unit, forget: None };
            let reason = "running but its spec says stopped".to_owned();
            return Ok(Some(p.push(stop, reason, after)));
        }
        return Ok(None);
    }
    let changed = p.changed(&trigger);
    // Off a live host a service counts as running once it was started.
    let active = active.unwrap_or_else(|| p.state.applied.contains_key(&trigger.key));
    let repaired = p.rewritten(&service.inputs);
    let reason = match (active, changed) {
        (false, _) => {
            let start = StartUnit {
                unit,
                queue,
                trigger,
            };
            return Ok(Some(p.push(start, "not running".to_owned(), after)));
        }
        (true, None) if repaired.is_empty() => return Ok(None),
        // The service may be running with the drifted file (or failing on it).
        (true, None) => format!("inputs restored on disk: {}", repaired.join(", ")),
        (true, Some(changed)) if changed.is_empty() => {
            "running with inputs nodewright has not applied".to_owned()
        }
        (true, Some(changed)) => format!("inputs changed: {}", changed.join(", ")),
    };
    let restart = RestartUnit {
        unit,
        queue,
        trigger,
    };
    Ok(Some(p.push(restart, reason, after)))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnableUnit {
    pub unit: UnitName,
    pub trigger: Trigger,
}

impl Change for EnableUnit {
    fn verb(&self) -> &'static str {
        "enable"
    }

    fn target(&self) -> String {
        self.unit.to_string()
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        self.trigger.resolve_pending(&cx.fetcher);
        Outcome::of_job(cx.host.systemd().enable(self.unit.as_str()).await)
    }

    fn record(&self, finished: &Finished<'_>, state: &mut State) {
        self.trigger.record(state, &finished.at, finished.outcome);
    }
}

/// `queue`: do not wait until it is ready (see `DesiredService::ready_with_peers`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StartUnit {
    pub unit: UnitName,
    pub queue: bool,
    pub trigger: Trigger,
}

impl Change for StartUnit {
    fn verb(&self) -> &'static str {
        "start"
    }

    fn target(&self) -> String {
        self.unit.to_string()
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        self.trigger.resolve_pending(&cx.fetcher);
        let systemd = cx.host.systemd();
        Outcome::of_job(systemd.start(self.unit.as_str(), self.queue).await)
    }

    fn record(&self, finished: &Finished<'_>, state: &mut State) {
        self.trigger.record(state, &finished.at, finished.outcome);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestartUnit {
    pub unit: UnitName,
    pub queue: bool,
    pub trigger: Trigger,
}

impl Change for RestartUnit {
    fn verb(&self) -> &'static str {
        "restart"
    }

    fn target(&self) -> String {
        self.unit.to_string()
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        // A member of an archive not yet downloaded when planning may turn out the
        // same as what the service runs with: then there is nothing to restart for.
        if self.trigger.resolve_pending(&cx.fetcher)
            && cx
                .applied
                .get(&self.trigger.key)
                .is_some_and(|record| record.inputs == self.trigger.inputs)
        {
            return Outcome::Skipped("its inputs are unchanged once downloaded".to_owned());
        }
        let systemd = cx.host.systemd();
        Outcome::of_job(systemd.restart(self.unit.as_str(), self.queue).await)
    }

    fn record(&self, finished: &Finished<'_>, state: &mut State) {
        self.trigger.record(state, &finished.at, finished.outcome);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StopUnit {
    pub unit: UnitName,
    /// Set when the unit is no longer wanted at all: it is disabled too, and its
    /// records are dropped.
    pub forget: Option<String>,
}

impl Change for StopUnit {
    fn verb(&self) -> &'static str {
        "stop"
    }

    fn target(&self) -> String {
        self.unit.to_string()
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        let disable = self.forget.is_some();
        Outcome::of_job(stop_unit(cx.host.systemd(), self.unit.as_str(), disable).await)
    }

    fn record(&self, _finished: &Finished<'_>, state: &mut State) {
        if self.forget.is_some() {
            state
                .applied
                .remove(&AppliedKey::Service(self.unit.clone()));
            state.applied.remove(&AppliedKey::Enable(self.unit.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against a systemd in memory (a live host), and off a live host.

    use std::sync::Arc;

    use crate::engine::action::Action;
    use crate::engine::keys::AppliedKey;
    use crate::engine::kinds::testing::{Node, at, outcomes};
    use crate::host::systemd::fake::FakeSystemd;
    use crate::model::{DesiredService, Ownership, StateBuilder};
    use crate::spec::UnitName;

    const CONFIG: &str = "/etc/app/config";

    fn unit(name: &str) -> UnitName {
        UnitName::try_from(name).unwrap()
    }

    fn service(name: &str, running: bool, peers: bool) -> DesiredService {
        DesiredService {
            unit: unit(name),
            enabled: true,
            running,
            inputs: vec![at(CONFIG)],
            ready_with_peers: peers,
        }
    }

    /// The app service reading CONFIG (`config` is its text), plus `more`.
    fn want(node: &mut Node, config: &'static str, more: impl FnOnce(&mut StateBuilder)) {
        node.want(|b| {
            b.file("t", at(CONFIG), config, Ownership::root(0o644))
                .unwrap();
            more(b);
        });
    }

    fn app(running: bool) -> impl FnOnce(&mut StateBuilder) {
        move |b: &mut StateBuilder| {
            b.service("t", service("app.service", running, false))
                .unwrap()
        }
    }

    #[tokio::test]
    async fn a_new_service_is_enabled_then_started_after_its_inputs() {
        let systemd = Arc::new(FakeSystemd::default());
        let mut node = Node::with_systemd(systemd.clone());
        want(&mut node, "v1\n", app(true));
        let plan = node.plan().await;
        let lines: Vec<String> = plan.steps.iter().map(|s| s.describe()).collect();
        assert_eq!(
            lines[lines.len() - 2..],
            [
                "enable app.service: not enabled",
                "start app.service: not running"
            ]
        );
        let config = plan
            .steps
            .iter()
            .position(|s| s.action.target() == CONFIG)
            .unwrap();
        let enable = plan.steps.len() - 2;
        assert!(plan.steps[enable].after.contains(&config));
        assert!(plan.steps[enable + 1].after.contains(&enable));
        node.apply(&plan).await;
        assert_eq!(systemd.calls(), ["enable app.service", "start app.service"]);
        let record = &node.state.applied[&AppliedKey::Service(unit("app.service"))];
        assert_eq!(record.inputs[CONFIG], crate::spec::digest(b"v1\n"));
        assert!(
            node.state
                .applied
                .contains_key(&AppliedKey::Enable(unit("app.service")))
        );
        assert!(node.plan().await.is_empty());
    }

    #[tokio::test]
    async fn restarts_exactly_when_an_input_changes_or_is_restored() {
        let systemd = Arc::new(FakeSystemd::default());
        let mut node = Node::with_systemd(systemd.clone());
        want(&mut node, "v1\n", app(true));
        node.converge().await;

        want(&mut node, "v2\n", app(true));
        assert_eq!(
            node.planned().await.last().unwrap(),
            &format!("restart app.service: inputs changed: {CONFIG}")
        );
        node.converge().await;
        assert_eq!(systemd.calls().last().unwrap(), "restart app.service");

        // Drifted on disk: the rewrite restores what was applied, and the service, which
        // may have read the drifted file, restarts.
        node.put(CONFIG, "edited by hand\n");
        assert_eq!(
            node.planned().await.last().unwrap(),
            &format!("restart app.service: inputs restored on disk: {CONFIG}")
        );
        node.converge().await;

        // Crashed: started again, without a restart.
        systemd.set_active("app.service", false);
        assert_eq!(node.planned().await, ["start app.service: not running"]);
        node.converge().await;

        // Running with what nodewright never applied (its record lost).
        node.state
            .applied
            .remove(&AppliedKey::Service(unit("app.service")));
        assert_eq!(
            node.planned().await,
            ["restart app.service: running with inputs nodewright has not applied"]
        );
    }

    #[tokio::test]
    async fn a_stopped_spec_stops_and_a_service_gone_from_the_spec_is_disabled_and_forgotten() {
        let systemd = Arc::new(FakeSystemd::default());
        let mut node = Node::with_systemd(systemd.clone());
        want(&mut node, "v1\n", app(true));
        node.converge().await;

        want(&mut node, "v1\n", app(false));
        assert_eq!(
            node.planned().await,
            ["stop app.service: running but its spec says stopped"]
        );
        node.converge().await;
        assert_eq!(systemd.calls().last().unwrap(), "stop app.service");
        assert!(node.plan().await.is_empty());

        want(&mut node, "v1\n", |_| {});
        let plan = node.plan().await;
        assert_eq!(
            plan.steps.iter().map(|s| s.describe()).collect::<Vec<_>>(),
            ["stop app.service: no longer in the spec"]
        );
        let json = serde_json::to_value(&plan.steps[0]).unwrap();
        assert_eq!(json["action"], "stop-unit");
        assert_eq!(json["forget"], "app.service");
        node.apply(&plan).await;
        assert_eq!(
            systemd.calls()[systemd.calls().len() - 2..],
            ["stop app.service", "disable app.service"]
        );
        assert!(node.state.applied.keys().all(|k| k.unit().is_none()));
        assert!(node.plan().await.is_empty());
    }

    #[tokio::test]
    async fn a_unit_whose_file_is_gone_counts_as_stopped() {
        let systemd = Arc::new(FakeSystemd::default());
        let mut node = Node::with_systemd(systemd.clone());
        want(&mut node, "v1\n", app(true));
        node.converge().await;
        systemd.fail("stop app.service", "Unit app.service not loaded.");
        systemd.fail(
            "disable app.service",
            "Unit file app.service does not exist.",
        );
        want(&mut node, "v1\n", |_| {});
        let plan = node.plan().await;
        let report = node.apply(&plan).await;
        assert_eq!(outcomes(&report), ["stop app.service: ok"]);

        // Any other refusal fails the step, and the record stays for the next run.
        want(&mut node, "v1\n", app(true));
        node.converge().await;
        systemd.fail("stop app.service", "Access denied");
        want(&mut node, "v1\n", |_| {});
        let plan = node.plan().await;
        let report = node.apply(&plan).await;
        assert_eq!(report.failures().len(), 1, "{:?}", outcomes(&report));
        assert!(
            node.state
                .applied
                .contains_key(&AppliedKey::Service(unit("app.service")))
        );
    }

    #[tokio::test]
    async fn a_member_of_a_cluster_is_only_queued() {
        let systemd = Arc::new(FakeSystemd::default());
        let mut node = Node::with_systemd(systemd.clone());
        want(&mut node, "v1\n", |b| {
            b.service("t", service("etcd.service", true, true)).unwrap()
        });
        let plan = node.plan().await;
        assert!(
            plan.steps
                .iter()
                .any(|s| matches!(&s.action, Action::StartUnit(start) if start.queue))
        );
        node.apply(&plan).await;
        assert_eq!(
            systemd.calls(),
            ["enable etcd.service", "start --no-block etcd.service"]
        );
    }

    #[tokio::test]
    async fn off_a_live_host_the_record_decides_and_every_job_is_skipped() {
        let mut node = Node::new();
        want(&mut node, "v1\n", app(true));
        let plan = node.plan().await;
        let report = node.apply(&plan).await;
        let skipped = format!("skipped: root is {}, not /", node.root().display());
        let lines = outcomes(&report);
        assert_eq!(
            lines[lines.len() - 2..],
            [
                format!("enable app.service: {skipped}"),
                format!("start app.service: {skipped}"),
            ]
        );
        assert_eq!(
            node.state.applied[&AppliedKey::Service(unit("app.service"))].outcome,
            skipped
        );
        // Started once, as far as the record knows: nothing to do until an input changes.
        assert!(node.plan().await.is_empty());
        want(&mut node, "v2\n", app(true));
        assert_eq!(
            node.planned().await.last().unwrap(),
            &format!("restart app.service: inputs changed: {CONFIG}")
        );
        want(&mut node, "v2\n", |_| {});
        let plan = node.plan().await;
        let report = node.apply(&plan).await;
        assert_eq!(
            outcomes(&report).last().unwrap(),
            &format!("stop app.service: {skipped}")
        );
        assert!(node.state.applied.keys().all(|k| k.unit().is_none()));
    }
}
