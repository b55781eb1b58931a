//! The status as text for people.

use super::NodeStatus;
use crate::engine::RunResult;

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
