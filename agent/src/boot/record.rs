//! The record phase: what the run did, kept in the node's state (`status` shows it),
//! failed runs included once the node has a state directory.

use crate::engine::protect::Guard;
use crate::engine::{self, Plan, RunRecord, RunResult, State};
use crate::host::Host;
use crate::host::lock::RunLock;
use crate::source::VerifiedSpec;

use super::{BootError, Options, Phases};

/// What a converging run did.
pub struct Converged {
    pub plan: Plan,
    pub report: engine::ApplyReport,
    pub timeline: Vec<engine::TimelineEntry>,
    /// Repair only: paths the spec declares under protected paths, left alone.
    pub left_alone: Vec<(String, Guard)>,
}

/// What the phases leave for the record.
#[derive(Default)]
pub struct Run {
    /// The state as apply left it.
    pub state: Option<State>,
    spec_url: Option<String>,
    spec_sha256: Option<String>,
    pub changes: usize,
    pub left_alone: Vec<(String, Guard)>,
    /// Held from planning until the run is recorded.
    lock: Option<RunLock>,
}

impl Run {
    pub fn spec(&mut self, spec: &VerifiedSpec) {
        self.spec_url = Some(spec.url.clone());
        self.spec_sha256 = Some(spec.sha256.clone());
    }

    pub fn hold(&mut self, lock: RunLock) {
        self.lock = Some(lock);
    }

    /// Records the run (unless it never got the lock) and hands back its outcome.
    pub fn record(
        mut self,
        options: &Options,
        host: &Host,
        phases: &mut Phases,
        result: Result<(Plan, engine::ApplyReport), BootError>,
    ) -> Result<Converged, (BootError, Vec<engine::TimelineEntry>)> {
        phases.begin("record");
        let state_dir = host.state_dir();
        let mut state = self
            .state
            .take()
            .unwrap_or_else(|| State::load_or_reset(&state_dir));
        let (result_kind, error) = match &result {
            Ok(_) => (RunResult::Converged, None),
            Err(e) => (RunResult::Failed, Some(e.to_string())),
        };
        let entries = phases.entries();
        state.last_run = Some(RunRecord {
            command: options.command.clone(),
            started_at: crate::clock::rfc3339(phases.started_at()),
            finished_at: crate::clock::now(),
            result: result_kind,
            error,
            spec_url: self.spec_url.take(),
            spec_sha256: self.spec_sha256.take(),
            agent_version: crate::VERSION.to_owned(),
            changes: self.changes,
            timeline: entries.clone(),
        });
        let applied_anything = self.changes > 0 || result.is_ok();
        // A run that never got the lock changed nothing, and must not write the state
        // under the feet of the run that holds it.
        let locked_out = matches!(result, Err(BootError::Locked { .. }));
        if (applied_anything || state_dir.is_dir())
            && !locked_out
            && let Err(e) = state.save(&state_dir)
        {
            tracing::error!(error = %e, "could not record the run");
            if result.is_ok() {
                return Err((e.into(), entries));
            }
        }
        match result {
            Ok((plan, report)) => Ok(Converged {
                plan,
                report,
                timeline: entries,
                left_alone: std::mem::take(&mut self.left_alone),
            }),
            Err(e) => Err((e, entries)),
        }
    }
}
