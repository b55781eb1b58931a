//! What `status` reports: runs in progress and what they wait for, the last run with
//! its phases, each service's state (live from systemd on a live host, as recorded
//! otherwise), drift found by a quick check, and a list of problems. Reads only.

mod render;
mod services;

use serde::Serialize;

use crate::controlplane::ControlPlaneRecord;
use crate::engine::verify::{self, Check};
use crate::engine::{RunResult, State, TimelineEntry};
use crate::host::Host;
use crate::progress::{self, Progress};
use crate::runbook::Topic;

pub use render::render_text;
use services::{services, wanted_services};

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
