//! Apply: carry out a plan's steps, each after the steps it needs, independent ones
//! at the same time (bounded). A failed step stops only the steps that need it. What
//! each step does, and records, is its kind's (`kinds/`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::action::Action;
use super::keys::AppliedKey;
use super::kinds::directory;
use super::plan::{Plan, Step};
use super::state::{AppliedRecord, State};
use super::timeline::{Timeline, rfc3339};
use crate::assets::Fetcher;
use crate::host::Host;
use crate::host::fs as hostfs;
use crate::host::systemd::{Job, SystemctlError};

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

    /// How a piece of work that either happened or failed ended.
    pub fn of(result: Result<(), String>) -> Self {
        match result {
            Ok(()) => Self::Done,
            Err(error) => Self::Failed(error),
        }
    }

    /// How a systemd job ended.
    pub fn of_job(result: Result<Job, SystemctlError>) -> Self {
        match result {
            Ok(Job::Done) => Self::Done,
            Ok(Job::Skipped(reason)) => Self::Skipped(reason),
            Err(error) => Self::Failed(error.to_string()),
        }
    }
}

/// What every step may use while it runs.
pub(crate) struct Context {
    pub host: Host,
    pub fetcher: Arc<Fetcher>,
    /// The state's applied records as they were before this apply.
    pub applied: BTreeMap<AppliedKey, AppliedRecord>,
}

/// What a step's record may use once it succeeded.
pub(crate) struct Finished<'a> {
    pub host: &'a Host,
    pub fetcher: &'a Fetcher,
    /// When it finished (RFC 3339).
    pub at: String,
    pub outcome: &'a Outcome,
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
            // The timeline is a table: one line per step (the full error is logged).
            let outcome = step.outcome.describe();
            let outcome = match outcome.split_once('\n') {
                Some((first, _)) => format!("{first} …"),
                None => outcome,
            };
            timeline.record_span(
                format!("apply: {}", step.description),
                step.began,
                step.duration,
                outcome,
            );
        }
    }
}

/// Runs the plan's steps and updates `state` with what was done. Assets are fetched
/// with the default download settings; see [`apply_with`].
pub async fn apply(plan: &Plan, host: &Host, state: &mut State) -> ApplyReport {
    let fetcher = Arc::new(Fetcher::plain(host));
    apply_with(plan, host, state, fetcher).await
}

/// Runs the plan's steps, fetching assets with `fetcher`.
pub async fn apply_with(
    plan: &Plan,
    host: &Host,
    state: &mut State,
    fetcher: Arc<Fetcher>,
) -> ApplyReport {
    // A killed earlier run may have left temp files beside the files we manage.
    for step in &plan.steps {
        if let Some(path) = step.action.replaces() {
            let _ = hostfs::remove_stale_temp(&host.path(path));
        }
    }

    // Files found in place first: a step that re-permissioned one refreshes its stat.
    for (path, record) in &plan.unchanged {
        state.files.insert(path.clone(), record.clone());
    }
    let cx = Arc::new(Context {
        host: host.clone(),
        fetcher: fetcher.clone(),
        applied: state.applied.clone(),
    });
    let outcomes = run_steps(&plan.steps, &cx).await;
    let mut report = ApplyReport::default();
    for (step, (outcome, began, duration, action)) in plan.steps.iter().zip(outcomes) {
        if outcome.succeeded() {
            let finished = Finished {
                host,
                fetcher: &fetcher,
                at: rfc3339(std::time::SystemTime::now()),
                outcome: &outcome,
            };
            action.record(&finished, state);
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
    directory::record_declared(&plan.directories, host, state);
    state
        .protected
        .extend(plan.protected.iter().map(|(p, r)| (p.clone(), r.clone())));
    report
}

/// How a step ended, and the action as run (with what only apply could know, such as
/// the digests of downloads, filled in).
type StepResult = (Outcome, Instant, Duration, Action);

async fn run_steps(steps: &[Step], cx: &Arc<Context>) -> Vec<StepResult> {
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
                results[index] = Some((
                    Outcome::NotRun(why),
                    Instant::now(),
                    Duration::ZERO,
                    steps[index].action.clone(),
                ));
                continue;
            }
            let mut action = steps[index].action.clone();
            let semaphore = semaphore.clone();
            let cx = cx.clone();
            running.spawn(async move {
                let _permit = if action.takes_a_slot() {
                    semaphore.acquire_owned().await.ok()
                } else {
                    None
                };
                let began = Instant::now();
                let outcome = action.run(&cx).await;
                log_outcome(&action, &outcome);
                (index, (outcome, began, began.elapsed(), action))
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
                            steps[i].action.clone(),
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

/// Runs blocking file work off the async threads.
pub(crate) async fn blocking(
    work: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<(), String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("internal error: {e}")),
    }
}
