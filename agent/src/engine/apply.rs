//! Apply: carry out a plan's steps, each after the steps it needs, independent ones
//! at the same time (bounded). A failed step stops only the steps that need it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::plan::{Action, BLOCK_KIND, Perms, Plan, Step, Trigger, source_key, static_pod_key};
use super::state::{AppliedRecord, FileRecord, StatRecord, State};
use super::timeline::{Timeline, rfc3339};
use crate::assets::Fetcher;
use crate::assets::install::{InstallError, install_file};
use crate::host::fs::{self as hostfs, Existing};
use crate::host::{Host, kernel, packages, swap, systemd};
use crate::model::DesiredAsset;

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
        if let Action::WriteFile { path, .. }
        | Action::WriteBlocks { path, .. }
        | Action::InstallAsset { path, .. } = &step.action
        {
            let _ = hostfs::remove_stale_temp(&host.path(path));
        }
    }

    // Files found in place first: a step that re-permissioned one refreshes its stat.
    for (path, record) in &plan.unchanged {
        state.files.insert(path.clone(), record.clone());
    }
    let applied = Arc::new(state.applied.clone());
    let outcomes = run_steps(&plan.steps, host, &fetcher, &applied).await;
    let mut report = ApplyReport::default();
    for (step, (outcome, began, duration, action)) in plan.steps.iter().zip(outcomes) {
        if outcome.succeeded() {
            let step = Step {
                action,
                reason: step.reason.clone(),
                after: step.after.clone(),
            };
            remember(&step, &outcome, host, &fetcher, state);
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
                    source: None,
                },
            );
        }
    }
    state
        .protected
        .extend(plan.protected.iter().map(|(p, r)| (p.clone(), r.clone())));
    report
}

/// How a step ended, and the action as run (with digests known only after downloads
/// filled in).
type StepResult = (Outcome, Instant, Duration, Action);

async fn run_steps(
    steps: &[Step],
    host: &Host,
    fetcher: &Arc<Fetcher>,
    applied: &Arc<BTreeMap<String, AppliedRecord>>,
) -> Vec<StepResult> {
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
            let host = host.clone();
            let semaphore = semaphore.clone();
            let fetcher = fetcher.clone();
            let applied = applied.clone();
            running.spawn(async move {
                // Downloads have their own bound (the fetcher's); they must not hold
                // back the quick steps.
                let _permit = if matches!(action, Action::FetchAsset { .. }) {
                    None
                } else {
                    semaphore.acquire_owned().await.ok()
                };
                let began = Instant::now();
                let outcome = match resolve_pending(&mut action, &fetcher, &applied) {
                    Some(skip) => skip,
                    None => match fill_static_pod(&mut action, &host).await {
                        Err(error) => Outcome::Failed(error),
                        Ok(()) => run_action(&action, &host, &fetcher).await,
                    },
                };
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

/// A static pod manifest gets the digest of its inputs as they are on disk now, after
/// the steps that write them: what the kubelet's pod will read.
async fn fill_static_pod(action: &mut Action, host: &Host) -> Result<(), String> {
    let Action::WriteFile {
        file,
        static_pod: Some(pod),
        ..
    } = action
    else {
        return Ok(());
    };
    let paths: Vec<(String, std::path::PathBuf)> = pod
        .inputs
        .iter()
        .map(|p| (p.to_string(), host.path(p)))
        .collect();
    let read = tokio::task::spawn_blocking(move || {
        paths
            .into_iter()
            .map(|(path, real)| match hostfs::sha256_file(&real) {
                Ok(digest) => Ok((path, digest)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Ok((path, "absent".to_owned()))
                }
                Err(e) => Err(format!("reading {path}: {e}")),
            })
            .collect::<Result<Vec<_>, String>>()
    })
    .await;
    let digests = match read {
        Ok(result) => result?,
        Err(e) => return Err(format!("internal error: {e}")),
    };
    file.content = pod.fill(&digests);
    pod.written_with = digests.into_iter().collect();
    Ok(())
}

/// Fills in the input digests that were `pending:<source>` at planning time (members
/// of archives not yet downloaded). A restart whose inputs turn out unchanged is skipped.
fn resolve_pending(
    action: &mut Action,
    fetcher: &Fetcher,
    applied: &BTreeMap<String, AppliedRecord>,
) -> Option<Outcome> {
    let is_restart = matches!(action, Action::RestartUnit { .. });
    let trigger = match action {
        Action::DaemonReload { trigger }
        | Action::EnableUnit { trigger, .. }
        | Action::LoadModules { trigger, .. }
        | Action::ApplySysctls { trigger, .. }
        | Action::StartUnit { trigger, .. }
        | Action::RestartUnit { trigger, .. } => trigger,
        _ => return None,
    };
    let mut resolved_any = false;
    for digest in trigger.inputs.values_mut() {
        if let Some(source) = digest.strip_prefix("pending:")
            && let Some(actual) = resolve_source(fetcher, source)
        {
            *digest = actual;
            resolved_any = true;
        }
    }
    if resolved_any
        && is_restart
        && applied
            .get(&trigger.key)
            .is_some_and(|record| record.inputs == trigger.inputs)
    {
        return Some(Outcome::Skipped(
            "its inputs are unchanged once downloaded".to_owned(),
        ));
    }
    None
}

/// The content digest of `sha256:<asset>` or `sha256:<archive>#<member>`, from the cache.
fn resolve_source(fetcher: &Fetcher, source: &str) -> Option<String> {
    let rest = source.strip_prefix("sha256:")?;
    match rest.split_once('#') {
        None => Some(rest.to_owned()),
        Some((archive, member)) => fetcher
            .cache()
            .manifest(archive)?
            .resolve(member)
            .ok()
            .map(|(_, digest)| digest.to_owned()),
    }
}

/// Installs one file from an asset, fetching it first if the cache lost it, and
/// fetching it again once if the cached bytes turn out damaged.
async fn install_asset(
    fetcher: &Fetcher,
    host: &Host,
    asset: &DesiredAsset,
    member: Option<&str>,
    path: &crate::spec::AbsPath,
    perms: Perms,
) -> Result<(), String> {
    let target = host.path(path);
    for attempt in 0..3 {
        let found = fetcher.source_of(asset, member);
        let problem = match found {
            Ok((source, expected)) => match copy(source, target.clone(), expected, perms).await {
                Ok(()) => return Ok(()),
                Err(InstallError::Corrupt {
                    source_path,
                    actual,
                    ..
                }) => format!("{} is damaged (sha256 {actual})", source_path.display()),
                Err(InstallError::Read { path, source })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    format!("{} is gone", path.display())
                }
                Err(e) => return Err(e.to_string()),
            },
            // Gone from the cache since planning (pruned).
            Err(e) => e.to_string(),
        };
        if attempt == 2 {
            return Err(problem);
        }
        tracing::warn!(asset = %asset.name, problem, "the cached copy is not usable; fetching it again");
        fetcher.repair(asset).await.map_err(|e| e.to_string())?;
    }
    Err(format!(
        "{}: the cache keeps serving damaged bytes",
        asset.name
    ))
}

async fn copy(
    source: std::path::PathBuf,
    target: std::path::PathBuf,
    expected: String,
    perms: Perms,
) -> Result<(), InstallError> {
    let Perms { mode, uid, gid } = perms;
    match tokio::task::spawn_blocking(move || {
        install_file(&source, &target, &expected, mode, uid, gid)
    })
    .await
    {
        Ok(result) => result,
        Err(e) => Err(InstallError::Read {
            path: Default::default(),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

async fn run_action(action: &Action, host: &Host, fetcher: &Fetcher) -> Outcome {
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
        Action::WriteFile { file, perms, .. } | Action::WriteBlocks { file, perms, .. } => {
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
        Action::FetchAsset { desired, .. } => fetcher
            .ensure_downloaded(desired)
            .await
            .map_err(|e| e.to_string()),
        Action::ExtractAsset { desired, .. } => {
            fetcher.ensure(desired).await.map_err(|e| e.to_string())
        }
        Action::InstallAsset {
            path,
            member,
            perms,
            desired,
            ..
        } => install_asset(fetcher, host, desired, member.as_deref(), path, *perms).await,
        Action::DaemonReload { .. } => systemd::daemon_reload().await.map_err(|e| e.to_string()),
        Action::LoadModules { .. } if host.container().is_some() => {
            return Outcome::Skipped(format!(
                "running in a container ({}): kernel modules belong to the host",
                host.container().unwrap_or_default()
            ));
        }
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
            let container = host.container().map(str::to_owned);
            let values = values.clone();
            // In a container, kernel-wide keys, keys its kernel view lacks (bridge sysctls
            // without br_netfilter) and keys it may not write are the host's: say so.
            let written = tokio::task::spawn_blocking(move || {
                let mut left = Vec::new();
                for (key, value) in &values {
                    if container.is_some()
                        && (!kernel::namespaced(key) || !kernel::sysctl_path(&root, key).exists())
                    {
                        left.push(key.clone());
                        continue;
                    }
                    match kernel::write_sysctl(&root, key, value) {
                        Ok(()) => {}
                        Err(e) if container.is_some() && kernel::refused(&e) => {
                            left.push(key.clone())
                        }
                        Err(e) => return Err(format!("{key} = {value}: {e}")),
                    }
                }
                Ok(left)
            })
            .await
            .unwrap_or_else(|e| Err(format!("internal error: {e}")));
            match written {
                Ok(left) if !left.is_empty() => {
                    return Outcome::Skipped(format!(
                        "running in a container ({}): left to the host: {}",
                        host.container().unwrap_or_default(),
                        left.join(", ")
                    ));
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Action::InstallPackages {
            manager, packages, ..
        } => {
            packages::install(
                &packages::Tools::default(),
                *manager,
                packages,
                crate::retry::RetryPolicy::with_deadline(packages::DEADLINE),
            )
            .await
        }
        Action::SwapOff { .. } => swap::off().await,
        Action::EnableUnit { unit, .. } => systemd::enable(unit.as_str())
            .await
            .map_err(|e| e.to_string()),
        Action::StartUnit { unit, queue, .. } => systemd::start(unit.as_str(), *queue)
            .await
            .map_err(|e| e.to_string()),
        Action::RestartUnit { unit, queue, .. } => systemd::restart(unit.as_str(), *queue)
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
fn remember(step: &Step, outcome: &Outcome, host: &Host, fetcher: &Fetcher, state: &mut State) {
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
        Action::WriteFile {
            path,
            file,
            perms,
            static_pod,
        } => {
            if let Some(pod) = static_pod {
                state.applied.insert(
                    static_pod_key(path),
                    AppliedRecord {
                        inputs: pod.written_with.clone(),
                        at: now.clone(),
                        outcome: outcome.describe(),
                    },
                );
            }
            if let Ok(Existing::File(stat)) = hostfs::inspect(&host.path(path)) {
                state.files.insert(
                    path.to_string(),
                    FileRecord {
                        secret: file.secret,
                        ..FileRecord::file(file.content.sha256().to_owned(), *perms, &stat)
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
                    source: None,
                },
            );
        }
        Action::RemoveFile { path } => {
            state.files.remove(path.as_str());
            // A static pod no longer in the spec: its inputs record goes with it.
            state.applied.remove(&static_pod_key(path));
        }
        Action::WriteBlocks {
            path,
            blocks,
            perms,
            ..
        } => {
            for (name, digest) in blocks {
                let key = format!("{path}#{name}");
                match digest {
                    Some(digest) => {
                        state.files.insert(
                            key,
                            FileRecord {
                                kind: BLOCK_KIND.to_owned(),
                                digest: digest.clone(),
                                mode: perms.mode,
                                uid: None,
                                gid: None,
                                secret: false,
                                stat: None,
                                source: None,
                            },
                        );
                    }
                    None => {
                        state.files.remove(&key);
                    }
                }
            }
        }
        Action::InstallAsset {
            path,
            member,
            perms,
            desired,
            ..
        } => {
            let digest = fetcher
                .source_of(desired, member.as_deref())
                .map(|(_, digest)| digest);
            if let (Ok(digest), Ok(Existing::File(stat))) =
                (digest, hostfs::inspect(&host.path(path)))
            {
                state.files.insert(
                    path.to_string(),
                    FileRecord {
                        source: Some(source_key(desired, member.as_deref())),
                        ..FileRecord::file(digest, *perms, &stat)
                    },
                );
            }
        }
        Action::CreateDirectory { path, .. } => {
            state.created_directories.insert(path.to_string());
        }
        Action::FetchAsset { .. } | Action::ExtractAsset { .. } => {}
        Action::DaemonReload { trigger }
        | Action::EnableUnit { trigger, .. }
        | Action::LoadModules { trigger, .. }
        | Action::ApplySysctls { trigger, .. }
        | Action::InstallPackages { trigger, .. }
        | Action::SwapOff { trigger, .. }
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
