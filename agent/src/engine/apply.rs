//! Apply: carry out a plan's steps, each after the steps it needs, independent ones
//! at the same time (bounded). A failed step stops only the steps that need it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::plan::{Action, Perms, Plan, Step, Trigger};
use super::state::{AppliedRecord, FileRecord, StatRecord, State};
use super::timeline::{Timeline, rfc3339};
use crate::host::fs::{self as hostfs, Existing};
use crate::host::{Host, kernel, systemd};

/// How many steps may run at once.
const PARALLEL_STEPS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Skipped(String),
    Failed(String),
    NotRun(String),
}

impl Outcome {
    pub fn describe(&self) -> String {
        match self {
            Self::Done => "ok".to_owned(),
            Self::Skipped(reason) => format!("skipped: {reason}"),
            Self::Failed(error) => format!("failed: {error}"),
            Self::NotRun(why) => format!("not run: {why}"),
        }
    }
    fn succeeded(&self) -> bool {
        matches!(self, Self::Done | Self::Skipped(_))
    }
}

#[derive(Debug, Clone)]
pub struct StepReport {
    pub description: String,
    pub outcome: Outcome,
    pub began: Instant,
    pub duration: Duration,
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    pub steps: Vec<StepReport>,
}

impl ApplyReport {
    pub fn failures(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Failed(_)))
            .map(|s| format!("{} ({})", s.description, s.outcome.describe()))
            .collect()
    }

    pub fn record(&self, timeline: &mut Timeline) {
        let mut steps: Vec<&StepReport> = self.steps.iter().collect();
        steps.sort_by_key(|s| s.began);
        for step in steps {
            timeline.record_span(
                format!("apply: {}", step.description),
                step.began,
                step.duration,
                step.outcome.describe(),
            );
        }
    }
}

/// Runs the plan's steps and updates `state` with what was done.
pub async fn apply(plan: &Plan, host: &Host, state: &mut State) -> ApplyReport {
    // A killed earlier run may have left temp files beside the files we manage.
    for step in &plan.steps {
        if let Action::WriteFile { path, .. } = &step.action {
            let _ = hostfs::remove_stale_temp(&host.path(path));
        }
    }

    let outcomes = run_steps(&plan.steps, host).await;
    // Files found in place first: a step that re-permissioned one refreshes its stat.
    for (path, record) in &plan.unchanged {
        state.files.insert(path.clone(), record.clone());
    }
    let mut report = ApplyReport::default();
    for (step, (outcome, began, duration)) in plan.steps.iter().zip(outcomes) {
        if outcome.succeeded() {
            remember(step, &outcome, host, state);
        }
        report.steps.push(StepReport {
            description: format!("{} {}", step.action.verb(), step.action.target()),
            outcome,
            began,
            duration,
        });
    }
    for path in &plan.forget {
        state.files.remove(path);
    }
    for (path, perms) in &plan.directories {
        if host.path(path).is_dir() {
            state.files.insert(
                path.to_string(),
                FileRecord {
                    kind: "directory".to_owned(),
                    digest: String::new(),
                    mode: perms.mode,
                    uid: Some(perms.uid),
                    gid: Some(perms.gid),
                    secret: false,
                    stat: None,
                },
            );
        }
    }
    state
        .protected
        .extend(plan.protected.iter().map(|(p, r)| (p.clone(), r.clone())));
    report
}

type StepResult = (Outcome, Instant, Duration);

async fn run_steps(steps: &[Step], host: &Host) -> Vec<StepResult> {
    let total = steps.len();
    let mut results: Vec<Option<StepResult>> = vec![None; total];
    let mut started = vec![false; total];
    let semaphore = Arc::new(Semaphore::new(PARALLEL_STEPS));
    let mut running: JoinSet<(usize, StepResult)> = JoinSet::new();

    loop {
        // Start every step whose prerequisites are settled.
        for index in 0..total {
            if started[index] {
                continue;
            }
            let deps: Vec<&Option<StepResult>> =
                steps[index].after.iter().map(|&d| &results[d]).collect();
            if deps.iter().any(|r| r.is_none()) {
                continue;
            }
            started[index] = true;
            if let Some(failed) = steps[index]
                .after
                .iter()
                .find(|&&d| !results[d].as_ref().is_some_and(|r| r.0.succeeded()))
            {
                let why = format!(
                    "{} {} did not succeed",
                    steps[*failed].action.verb(),
                    steps[*failed].action.target()
                );
                results[index] = Some((Outcome::NotRun(why), Instant::now(), Duration::ZERO));
                continue;
            }
            let action = steps[index].action.clone();
            let host = host.clone();
            let semaphore = semaphore.clone();
            running.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                let began = Instant::now();
                let outcome = run_action(&action, &host).await;
                log_outcome(&action, &outcome);
                (index, (outcome, began, began.elapsed()))
            });
        }
        // Steps resolved as "not run" may unblock others without anything running.
        if results.iter().all(Option::is_some) {
            break;
        }
        match running.join_next().await {
            Some(Ok((index, result))) => results[index] = Some(result),
            Some(Err(panic)) => {
                // A step task cannot panic by design; treat it as every step failing
                // rather than leaving dependents waiting forever.
                tracing::error!(error = %panic, "a step task panicked");
                for (i, slot) in results.iter_mut().enumerate() {
                    if started[i] && slot.is_none() {
                        *slot = Some((
                            Outcome::Failed("internal error".to_owned()),
                            Instant::now(),
                            Duration::ZERO,
                        ));
                    }
                }
            }
            None => {
                if results.iter().all(Option::is_some) {
                    break;
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every step settled"))
        .collect()
}

fn log_outcome(action: &Action, outcome: &Outcome) {
    let target = action.target();
    match outcome {
        Outcome::Done => tracing::info!(verb = action.verb(), target, "done"),
        Outcome::Skipped(reason) => tracing::info!(verb = action.verb(), target, reason, "skipped"),
        Outcome::Failed(error) => tracing::error!(verb = action.verb(), target, error, "failed"),
        Outcome::NotRun(why) => tracing::warn!(verb = action.verb(), target, why, "not run"),
    }
}

async fn run_action(action: &Action, host: &Host) -> Outcome {
    if action.is_live()
        && let Some(reason) = host.skip_reason()
    {
        return Outcome::Skipped(reason.to_owned());
    }
    let result: Result<(), String> = match action {
        Action::CreateDirectory { path, perms } => {
            let real = host.path(path);
            let Perms { mode, uid, gid } = *perms;
            blocking(move || hostfs::create_dir(&real, mode, uid, gid)).await
        }
        Action::WriteFile { file, perms, .. } => {
            let real = host.path(&file.path);
            let bytes = file.content.clone();
            let Perms { mode, uid, gid } = *perms;
            blocking(move || hostfs::write_atomic(&real, bytes.bytes(), mode, uid, gid)).await
        }
        Action::SetPermissions { path, perms } => {
            let real = host.path(path);
            let Perms { mode, uid, gid } = *perms;
            blocking(move || hostfs::set_owner_and_mode(&real, mode, uid, gid)).await
        }
        Action::Symlink { path, target } => {
            let real = host.path(path);
            let target = target.as_path().to_owned();
            blocking(move || hostfs::symlink_atomic(&real, &target)).await
        }
        Action::RemoveFile { path } => {
            let real = host.path(path);
            blocking(move || match std::fs::remove_file(&real) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            })
            .await
        }
        Action::DaemonReload { .. } => systemd::daemon_reload().await.map_err(|e| e.to_string()),
        Action::LoadModules { modules, .. } => {
            let mut errors = Vec::new();
            for module in modules {
                if let Err(e) = kernel::load_module(module).await {
                    errors.push(e);
                }
            }
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("; "))
            }
        }
        Action::ApplySysctls { values, .. } => {
            let root = host.root().to_owned();
            let values = values.clone();
            blocking(move || {
                for (key, value) in &values {
                    kernel::write_sysctl(&root, key, value).map_err(|e| {
                        std::io::Error::new(e.kind(), format!("{key} = {value}: {e}"))
                    })?;
                }
                Ok(())
            })
            .await
        }
        Action::EnableUnit { unit, .. } => systemd::enable(unit.as_str())
            .await
            .map_err(|e| e.to_string()),
        Action::StartUnit { unit, .. } => systemd::start(unit.as_str())
            .await
            .map_err(|e| e.to_string()),
        Action::RestartUnit { unit, .. } => systemd::restart(unit.as_str())
            .await
            .map_err(|e| e.to_string()),
        Action::StopUnit { unit, forget } => {
            // A unit whose file is gone already (an earlier run removed it and was
            // killed before it could record so) is stopped as far as we are concerned.
            let stopped = systemd::stop(unit.as_str()).await;
            match (stopped, forget) {
                (Err(e), _) if !e.unit_is_gone() => Err(e.to_string()),
                (_, Some(_)) => match systemd::disable(unit.as_str()).await {
                    Err(e) if !e.unit_is_gone() => Err(e.to_string()),
                    _ => Ok(()),
                },
                (_, None) => Ok(()),
            }
        }
    };
    match result {
        Ok(()) => Outcome::Done,
        Err(error) => Outcome::Failed(error),
    }
}

async fn blocking(
    work: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<(), String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("internal error: {e}")),
    }
}

/// Records in `state` what a finished step changed.
fn remember(step: &Step, outcome: &Outcome, host: &Host, state: &mut State) {
    let now = rfc3339(std::time::SystemTime::now());
    let record_trigger = |state: &mut State, trigger: &Trigger| {
        state.applied.insert(
            trigger.key.clone(),
            AppliedRecord {
                inputs: trigger.inputs.clone(),
                at: now.clone(),
                outcome: outcome.describe(),
            },
        );
    };
    match &step.action {
        Action::WriteFile { path, file, perms } => {
            if let Ok(Existing::File(stat)) = hostfs::inspect(&host.path(path)) {
                state.files.insert(
                    path.to_string(),
                    FileRecord {
                        kind: "file".to_owned(),
                        digest: file.content.sha256().to_owned(),
                        mode: perms.mode,
                        uid: Some(perms.uid),
                        gid: Some(perms.gid),
                        secret: file.secret,
                        stat: Some(StatRecord::of(&stat)),
                    },
                );
            }
        }
        Action::SetPermissions { path, perms } => {
            // chmod moves ctime: refresh the stat so the next run trusts the digest.
            if let Some(record) = state.files.get_mut(path.as_str()) {
                record.mode = perms.mode;
                record.uid = Some(perms.uid);
                record.gid = Some(perms.gid);
                if let Ok(Existing::File(stat)) = hostfs::inspect(&host.path(path)) {
                    record.stat = Some(StatRecord::of(&stat));
                }
            }
        }
        Action::Symlink { path, target } => {
            state.files.insert(
                path.to_string(),
                FileRecord {
                    kind: "symlink".to_owned(),
                    digest: target.to_string(),
                    mode: 0o777,
                    uid: None,
                    gid: None,
                    secret: false,
                    stat: None,
                },
            );
        }
        Action::RemoveFile { path } => {
            state.files.remove(path.as_str());
        }
        Action::CreateDirectory { path, .. } => {
            state.created_directories.insert(path.to_string());
        }
        Action::DaemonReload { trigger }
        | Action::EnableUnit { trigger, .. }
        | Action::LoadModules { trigger, .. }
        | Action::ApplySysctls { trigger, .. }
        | Action::StartUnit { trigger, .. }
        | Action::RestartUnit { trigger, .. } => record_trigger(state, trigger),
        Action::StopUnit { forget, .. } => {
            if let Some(unit) = forget {
                state.applied.remove(&format!("service:{unit}"));
                state.applied.remove(&format!("enable:{unit}"));
            }
        }
    }
}

/// Applied-record keys to the inputs they hold; used by status.
pub fn applied_summary(state: &State) -> BTreeMap<String, String> {
    state
        .applied
        .iter()
        .map(|(k, v)| (k.clone(), format!("{} at {}", v.outcome, v.at)))
        .collect()
}
