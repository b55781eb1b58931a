//! The run's phases, each timed in one place: while it runs the live run record names
//! it ([`crate::report`]), and when it ends the timeline gets its start, duration and
//! outcome.

use std::fmt::Display;
use std::future::Future;
use std::time::Instant;

use crate::engine::{Timeline, TimelineEntry};
use crate::report;

#[derive(Debug, Default)]
pub struct Phases {
    timeline: Timeline,
}

impl Phases {
    /// Runs `phase` as the phase `name`.
    pub async fn run<T, E: Display>(
        &mut self,
        name: &str,
        phase: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let began = self.begin(name);
        let result = phase.await;
        self.end(name, began, outcome(&result));
        result
    }

    /// Enters the phase `name`; [`Phases::end`] records it.
    pub fn begin(&mut self, name: &str) -> Instant {
        report::phase(name);
        Instant::now()
    }

    pub fn end(&mut self, name: &str, began: Instant, outcome: impl Into<String>) {
        self.timeline.record(name, began, outcome);
    }

    /// A phase whose steps record themselves (the control plane's volumes and names):
    /// the live record names it, the timeline holds its steps.
    pub fn steps_of(&mut self, name: &str) -> &mut Timeline {
        report::phase(name);
        &mut self.timeline
    }

    pub fn timeline(&mut self) -> &mut Timeline {
        &mut self.timeline
    }

    pub fn started_at(&self) -> std::time::SystemTime {
        self.timeline.started_at()
    }

    pub fn entries(&self) -> Vec<TimelineEntry> {
        self.timeline.entries().to_vec()
    }
}

/// `ok`, or `failed: ` and the first line of the error.
pub fn outcome<T, E: Display>(result: &Result<T, E>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => {
            let text = e.to_string();
            format!("failed: {}", text.lines().next().unwrap_or(&text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_phase_is_timed_and_its_outcome_entered() {
        let mut phases = Phases::default();
        let ok: Result<u8, String> = phases.run("facts", async { Ok(7) }).await;
        assert_eq!(ok, Ok(7));
        let failed: Result<(), String> = phases
            .run("node spec", async {
                Err("s3://b/k: AccessDenied\nmore".to_owned())
            })
            .await;
        assert!(failed.is_err());
        let entries = phases.entries();
        let names: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.outcome.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("facts", "ok"),
                ("node spec", "failed: s3://b/k: AccessDenied")
            ]
        );
    }
}
