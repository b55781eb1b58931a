//! What `status` reports: runs in progress and what they wait for, the last run with
//! its phases, each service's state (live from systemd on a live host, as recorded
//! otherwise), drift found by a quick check, and a list of problems. Reads only.

use serde::Serialize;

use crate::controlplane::ControlPlaneRecord;
use crate::engine::applied::{AppliedError, AppliedSpec};
use crate::engine::keys::AppliedKey;
use crate::engine::verify::{self, Check};
use crate::engine::{RunResult, State, TimelineEntry};
use crate::host::{Host, systemd};
use crate::model::{self, DesiredService};
use crate::progress::{self, Progress};
use crate::runbook::Topic;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub root: String,
    /// Whether services are asked live (root `/`, systemd running).
    pub live: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_skip_reason: Option<String>,
    /// Runs going on now, with what they wait for.
    pub in_progress: Vec<Progress>,
    /// Records of runs whose process is gone without finishing (killed).
    pub interrupted: Vec<Progress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRun>,
    pub services: Vec<ServiceStatus>,
    pub drift: verify::Report,
    /// The spec kept for `repair`: `ok`, or why it cannot be used.
    pub kept_spec: String,
    /// Control-plane nodes: the etcd volumes claimed and what the last round waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneRecord>,
    /// Everything above that needs attention, one line each.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    pub command: String,
    pub started_at: String,
    pub finished_at: String,
    pub result: RunResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec_sha256: Option<String>,
    pub agent_version: String,
    pub changes: usize,
    pub duration_ms: u64,
    /// The flow's phases (user data, facts, node spec, model, lock, plan, apply).
    pub phases: Vec<TimelineEntry>,
    /// Apply steps that failed or did not run.
    pub failed_steps: Vec<TimelineEntry>,
    /// Every step, for the full timeline.
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub unit: String,
    /// `running` or `stopped`, as the spec wants it.
    pub wanted: String,
    pub enabled: bool,
    /// `systemd` (asked now) or `recorded` (what nodewright last did).
    pub source: String,
    /// e.g. `active (running)`, `failed (exit-code)`, `started by nodewright at …`.
    pub state: String,
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Gathers the node's status (possibly with nothing in it: no run, nothing running).
pub async fn gather(host: &Host, state: &State) -> NodeStatus {
    let (in_progress, interrupted): (Vec<_>, Vec<_>) = progress::read(host.root())
        .into_iter()
        .partition(|found| found.running);
    let in_progress: Vec<Progress> = in_progress.into_iter().map(|f| f.progress).collect();
    let interrupted: Vec<Progress> = interrupted.into_iter().map(|f| f.progress).collect();

    let last_run = state.last_run.as_ref().map(|run| {
        let (steps, phases): (Vec<&TimelineEntry>, Vec<&TimelineEntry>) = run
            .timeline
            .iter()
            .partition(|e| e.name.starts_with("apply: ") || e.name.starts_with("reset: "));
        LastRun {
            command: run.command.clone(),
            started_at: run.started_at.clone(),
            finished_at: run.finished_at.clone(),
            result: run.result,
            error: run.error.clone(),
            spec_url: run.spec_url.clone(),
            spec_sha256: run.spec_sha256.clone(),
            agent_version: run.agent_version.clone(),
            changes: run.changes,
            duration_ms: run
                .timeline
                .iter()
                .map(|e| e.start_ms + e.duration_ms)
                .max()
                .unwrap_or(0),
            phases: phases.into_iter().cloned().collect(),
            failed_steps: steps
                .into_iter()
                .filter(|e| e.outcome.starts_with("failed") || e.outcome.starts_with("not run"))
                .cloned()
                .collect(),
            timeline: run.timeline.clone(),
        }
    });

    let (wanted, kept_spec) = wanted_services(host, state);
    let services = services(host, state, &wanted, last_run.as_ref()).await;
    let drift = verify::verify(host, state, Check::TrustStat);

    let mut problems = Vec::new();
    for run in &in_progress {
        for waiting in &run.waiting {
            problems.push(format!(
                "{} (pid {}) is waiting for {}: {}",
                run.command, run.pid, waiting.subject, waiting.reason
            ));
        }
    }
    for run in &interrupted {
        problems.push(format!(
            "a {} run (pid {}, started {}) ended without finishing, in phase {}: killed?",
            run.command, run.pid, run.started_at, run.phase
        ));
    }
    if let Some(run) = &last_run
        && run.result == RunResult::Failed
    {
        let first = run.error.as_deref().unwrap_or("failed");
        problems.push(format!(
            "the last run ({}) failed: {}",
            run.command,
            first.lines().next().unwrap_or(first)
        ));
    }
    for service in services.iter().filter(|s| !s.healthy) {
        problems.push(format!(
            "{}: {}",
            service.unit,
            service.problem.as_deref().unwrap_or("unhealthy")
        ));
    }
    for drift in &drift.drift {
        problems.push(format!("drift: {}", drift.describe()));
    }
    if !drift.is_clean() {
        problems.push(format!(
            "run `nodewright verify` to re-read every file, `nodewright repair` to restore them ({})",
            Topic::Drift.hint()
        ));
    }

    let control_plane = ControlPlaneRecord::load(&host.state_dir());
    if let Some(record) = &control_plane {
        for (what, reason) in &record.waiting {
            problems.push(format!("control plane waits for {what}: {reason}"));
        }
        if let Some(error) = &record.error {
            problems.push(format!("control plane: {error}"));
        }
    }

    NodeStatus {
        root: host.root().display().to_string(),
        live: host.skip_reason().is_none(),
        live_skip_reason: host.skip_reason().map(str::to_owned),
        in_progress,
        interrupted,
        last_run,
        services,
        drift,
        kept_spec,
        control_plane,
        problems,
    }
}

/// The services the kept spec wants, or (without one) those nodewright acted on.
fn wanted_services(host: &Host, state: &State) -> (Vec<DesiredService>, String) {
    let state_dir = host.state_dir();
    let kept = AppliedSpec::load(&state_dir).and_then(|kept| {
        let spec = kept.node_spec(&state_dir)?;
        Ok((kept, spec))
    });
    match kept {
        Ok((kept, spec)) => match model::desired_state(&spec, &kept.facts) {
            Ok(desired) => (desired.services, "ok".to_owned()),
            Err(e) => (recorded_services(state), format!("does not render: {e}")),
        },
        Err(AppliedError::Missing { .. }) => (recorded_services(state), "none kept".to_owned()),
        Err(e) => (recorded_services(state), e.to_string()),
    }
}

fn recorded_services(state: &State) -> Vec<DesiredService> {
    let mut units: Vec<(String, bool, bool)> = Vec::new();
    for key in state.applied.keys() {
        let (unit, started) = match key {
            AppliedKey::Service(unit) => (unit.as_str(), true),
            AppliedKey::Enable(unit) => (unit.as_str(), false),
            _ => continue,
        };
        match units.iter_mut().find(|(u, _, _)| u == unit) {
            Some(entry) => {
                entry.1 |= started;
                entry.2 |= !started;
            }
            None => units.push((unit.to_owned(), started, !started)),
        }
    }
    units
        .into_iter()
        .filter_map(|(unit, running, enabled)| {
            Some(DesiredService {
                unit: crate::spec::UnitName::try_from(unit).ok()?,
                enabled,
                running,
                inputs: Vec::new(),
                ready_with_peers: false,
            })
        })
        .collect()
}

async fn services(
    host: &Host,
    state: &State,
    wanted: &[DesiredService],
    last_run: Option<&LastRun>,
) -> Vec<ServiceStatus> {
    let names: Vec<String> = wanted.iter().map(|s| s.unit.to_string()).collect();
    let live = if host.skip_reason().is_none() {
        systemd::show(&names).await.ok()
    } else {
        None
    };
    wanted
        .iter()
        .map(|service| {
            let unit = service.unit.to_string();
            let base = ServiceStatus {
                unit: unit.clone(),
                wanted: if service.running {
                    "running"
                } else {
                    "stopped"
                }
                .to_owned(),
                enabled: service.enabled,
                source: String::new(),
                state: String::new(),
                healthy: true,
                problem: None,
            };
            match live
                .as_ref()
                .and_then(|all| all.iter().find(|s| s.unit == unit))
            {
                Some(status) => from_systemd(base, service, status),
                None => from_record(base, service, state, last_run),
            }
        })
        .collect()
}

fn from_systemd(
    mut out: ServiceStatus,
    service: &DesiredService,
    status: &systemd::UnitStatus,
) -> ServiceStatus {
    out.source = "systemd".to_owned();
    out.state = format!("{} ({})", status.active_state, status.sub_state);
    if status.restarts > 0 {
        out.state
            .push_str(&format!(", restarted {} times", status.restarts));
    }
    let problem = if status.load_state != "loaded" {
        Some(format!("unit is {}", status.load_state))
    } else if status.active_state == "failed" {
        Some(format!("failed ({})", status.result))
    } else if service.running && status.active_state != "active" {
        Some(format!(
            "wanted running, is {} ({})",
            status.active_state, status.sub_state
        ))
    } else if service.running && status.sub_state == "auto-restart" {
        Some("crash-looping (auto-restart)".to_owned())
    } else {
        None
    };
    out.healthy = problem.is_none();
    out.problem = problem.map(|p| format!("{p}; {}", Topic::ServiceUnhealthy.hint()));
    out
}

fn from_record(
    mut out: ServiceStatus,
    service: &DesiredService,
    state: &State,
    last_run: Option<&LastRun>,
) -> ServiceStatus {
    out.source = "recorded".to_owned();
    let unit = service.unit.as_str();
    let failed_step = last_run.and_then(|run| {
        run.failed_steps.iter().find(|e| {
            e.name.ends_with(&format!(" {unit}"))
                && ["start", "restart", "enable", "stop"]
                    .iter()
                    .any(|verb| e.name == format!("apply: {verb} {unit}"))
        })
    });
    let record = state
        .applied
        .get(&AppliedKey::Service(service.unit.clone()));
    out.state = match record {
        Some(record) => format!("last start/restart {} at {}", record.outcome, record.at),
        None if service.running => "never started by nodewright".to_owned(),
        None => "left stopped".to_owned(),
    };
    let problem = match failed_step {
        Some(step) => Some(format!(
            "{}: {}",
            step.name.trim_start_matches("apply: "),
            step.outcome
        )),
        None if service.running && record.is_none() => {
            Some("wanted running, but nodewright never started it".to_owned())
        }
        None => None,
    };
    out.healthy = problem.is_none();
    out.problem = problem;
    out
}

/// The status as text for people.
pub fn render_text(status: &NodeStatus) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    match &status.live_skip_reason {
        None => line(format!("Node:         {} (live)", status.root)),
        Some(reason) => line(format!(
            "Node:         {} (files only: {reason})",
            status.root
        )),
    }
    for run in &status.in_progress {
        line(format!(
            "In progress:  {} (pid {}) since {}, phase {}",
            run.command, run.pid, run.started_at, run.phase
        ));
        for waiting in &run.waiting {
            let until = waiting
                .gives_up_at
                .as_ref()
                .map(|t| format!(", gives up at {t}"))
                .unwrap_or_default();
            line(format!(
                "  waiting for {}: {} (attempt {}, since {}{until})",
                waiting.subject, waiting.reason, waiting.attempts, waiting.since
            ));
            if let Some(hint) = &waiting.runbook {
                line(format!("    {hint}"));
            }
        }
    }
    for run in &status.interrupted {
        line(format!(
            "Interrupted:  a {} run (pid {}, started {}) ended in phase {} without finishing",
            run.command, run.pid, run.started_at, run.phase
        ));
    }
    match &status.last_run {
        None => line("Last run:     none recorded".to_owned()),
        Some(run) => {
            let result = match run.result {
                RunResult::Converged => "converged",
                RunResult::Failed => "FAILED",
                RunResult::Reset => "done",
            };
            line(format!(
                "Last run:     {} {result}, {} → {} ({} ms)",
                run.command, run.started_at, run.finished_at, run.duration_ms
            ));
            if let Some(url) = &run.spec_url {
                let sha = run.spec_sha256.as_deref().unwrap_or("unknown");
                line(format!("Spec:         {url} (sha256:{sha})"));
            }
            line(format!("Agent:        nodewright {}", run.agent_version));
            line(format!("Changes:      {}", run.changes));
            if let Some(error) = &run.error {
                line(format!(
                    "Error:        {}",
                    error.replace('\n', "\n              ")
                ));
            }
            if !run.phases.is_empty() {
                line("Phases:".to_owned());
                out.push_str(&crate::engine::timeline::render(&run.phases));
            }
            if !run.failed_steps.is_empty() {
                out.push_str("Failed steps:\n");
                out.push_str(&crate::engine::timeline::render(&run.failed_steps));
            }
        }
    }
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    if status.services.is_empty() {
        line("Services:     none".to_owned());
    } else {
        let source = if status.live {
            "from systemd".to_owned()
        } else {
            "as recorded; systemd is not asked off a live host".to_owned()
        };
        line(format!("Services ({source}):"));
        let width = status
            .services
            .iter()
            .map(|s| s.unit.len())
            .max()
            .unwrap_or(0);
        for service in &status.services {
            let wanted = format!(
                "wanted {}{}",
                service.wanted,
                if service.enabled { ", enabled" } else { "" }
            );
            let mark = if service.healthy { "ok" } else { "UNHEALTHY" };
            line(format!(
                "  {:<width$}  {:<24}  {:<9}  {}",
                service.unit, wanted, mark, service.state
            ));
            if let Some(problem) = &service.problem {
                line(format!("  {:<width$}  {problem}", ""));
            }
        }
    }
    if status.drift.is_clean() {
        line(format!(
            "Drift:        none in {} managed paths (quick check by stat; `nodewright verify` re-reads every file)",
            status.drift.checked
        ));
    } else {
        line(format!(
            "Drift:        {} of {} managed paths (quick check by stat):",
            status.drift.drift.len(),
            status.drift.checked
        ));
        for drift in &status.drift.drift {
            line(format!("  - {}", drift.describe()));
        }
    }
    line(format!(
        "Kept spec:    {} (used by `nodewright repair`)",
        status.kept_spec
    ));
    if let Some(record) = &status.control_plane {
        line(format!(
            "Control plane: last round by {} at {}: {}",
            record.command,
            record.at,
            if record.ok { "ok" } else { "not ok" }
        ));
        for (etcd_cluster, m) in &record.etcd_members {
            line(format!(
                "  etcd {etcd_cluster:<8} member {} on {} ({}) at {}",
                m.member, m.volume_id, m.device, m.mount_path
            ));
        }
        for (what, reason) in &record.waiting {
            line(format!("  Waiting for {what}: {reason}"));
        }
        for report in &record.report {
            line(format!("  - {report}"));
        }
    }
    if status.problems.is_empty() {
        line("Problems:     none".to_owned());
    } else {
        line("Problems:".to_owned());
        for problem in &status.problems {
            line(format!("  - {problem}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::AppliedRecord;
    use crate::spec::UnitName;

    fn service(running: bool) -> DesiredService {
        DesiredService {
            unit: UnitName::try_from("kubelet.service").unwrap(),
            enabled: true,
            running,
            inputs: Vec::new(),
            ready_with_peers: false,
        }
    }

    fn base() -> ServiceStatus {
        ServiceStatus {
            unit: "kubelet.service".to_owned(),
            wanted: "running".to_owned(),
            enabled: true,
            source: String::new(),
            state: String::new(),
            healthy: true,
            problem: None,
        }
    }

    fn unit(active: &str, sub: &str, result: &str, restarts: u32) -> systemd::UnitStatus {
        systemd::UnitStatus {
            unit: "kubelet.service".to_owned(),
            load_state: "loaded".to_owned(),
            active_state: active.to_owned(),
            sub_state: sub.to_owned(),
            unit_file_state: "enabled".to_owned(),
            result: result.to_owned(),
            restarts,
            active_since: String::new(),
        }
    }

    #[test]
    fn live_states_are_judged_against_what_the_spec_wants() {
        let ok = from_systemd(
            base(),
            &service(true),
            &unit("active", "running", "success", 0),
        );
        assert!(ok.healthy, "{ok:?}");
        assert_eq!(ok.state, "active (running)");
        assert_eq!(ok.source, "systemd");

        let failed = from_systemd(
            base(),
            &service(true),
            &unit("failed", "failed", "exit-code", 3),
        );
        assert!(!failed.healthy);
        assert_eq!(failed.state, "failed (failed), restarted 3 times");
        assert!(
            failed
                .problem
                .as_deref()
                .unwrap()
                .starts_with("failed (exit-code)")
        );
        assert!(
            failed
                .problem
                .as_deref()
                .unwrap()
                .contains("service-unhealthy")
        );

        let looping = from_systemd(
            base(),
            &service(true),
            &unit("activating", "auto-restart", "exit-code", 9),
        );
        assert!(!looping.healthy);
        let stopped = from_systemd(
            base(),
            &service(false),
            &unit("inactive", "dead", "success", 0),
        );
        assert!(stopped.healthy, "wanted stopped and stopped: {stopped:?}");
        let mut missing = unit("inactive", "dead", "success", 0);
        missing.load_state = "not-found".to_owned();
        let missing = from_systemd(base(), &service(false), &missing);
        assert!(
            missing
                .problem
                .as_deref()
                .unwrap()
                .starts_with("unit is not-found")
        );
    }

    #[test]
    fn recorded_states_use_the_last_run() {
        let state = State::default();
        let never = from_record(base(), &service(true), &state, None);
        assert!(!never.healthy);
        assert_eq!(never.state, "never started by nodewright");

        let mut state = State::default();
        state.applied.insert(
            AppliedKey::Service(crate::spec::UnitName::try_from("kubelet.service").unwrap()),
            AppliedRecord {
                inputs: Default::default(),
                at: "2026-01-01T00:00:00.000Z".to_owned(),
                outcome: "ok".to_owned(),
            },
        );
        let run = LastRun {
            command: "boot".to_owned(),
            started_at: String::new(),
            finished_at: String::new(),
            result: RunResult::Failed,
            error: None,
            spec_url: None,
            spec_sha256: None,
            agent_version: String::new(),
            changes: 1,
            duration_ms: 1,
            phases: vec![],
            failed_steps: vec![TimelineEntry {
                name: "apply: restart kubelet.service".to_owned(),
                start_ms: 0,
                duration_ms: 1,
                outcome: "failed: systemctl restart kubelet.service: exit status: 1".to_owned(),
            }],
            timeline: vec![],
        };
        let failed = from_record(base(), &service(true), &state, Some(&run));
        assert!(!failed.healthy);
        assert_eq!(
            failed.problem.as_deref(),
            Some(
                "restart kubelet.service: failed: systemctl restart kubelet.service: exit status: 1"
            )
        );
        let fine = from_record(base(), &service(true), &state, None);
        assert!(fine.healthy);
        assert_eq!(
            fine.state,
            "last start/restart ok at 2026-01-01T00:00:00.000Z"
        );
    }
}
