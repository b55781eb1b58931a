//! The boot timeline: every phase and step with its start and duration.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// `facts`, `spec`, `apply`, `apply: write /etc/...`.
    pub name: String,
    /// Milliseconds since the run started.
    pub start_ms: u64,
    pub duration_ms: u64,
    /// `ok`, `skipped: <reason>`, `failed: <error>`, `not run: <why>`.
    pub outcome: String,
}

/// Records phases as they run.
#[derive(Debug)]
pub struct Timeline {
    started: Instant,
    started_at: SystemTime,
    entries: Vec<TimelineEntry>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Timeline {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            started_at: SystemTime::now(),
            entries: Vec::new(),
        }
    }

    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Adds an entry for something that began at `began` and has just ended.
    pub fn record(&mut self, name: impl Into<String>, began: Instant, outcome: impl Into<String>) {
        self.record_span(name, began, began.elapsed(), outcome);
    }

    pub fn record_span(
        &mut self,
        name: impl Into<String>,
        began: Instant,
        duration: Duration,
        outcome: impl Into<String>,
    ) {
        self.entries.push(TimelineEntry {
            name: name.into(),
            start_ms: began.saturating_duration_since(self.started).as_millis() as u64,
            duration_ms: duration.as_millis() as u64,
            outcome: outcome.into(),
        });
    }

    pub fn entries(&self) -> &[TimelineEntry] {
        &self.entries
    }

    pub fn into_entries(self) -> Vec<TimelineEntry> {
        self.entries
    }
}

/// Kept here for the engine's callers; the one definition is [`crate::clock`].
pub use crate::clock::rfc3339;

/// Renders entries as an aligned table for people.
pub fn render(entries: &[TimelineEntry]) -> String {
    let width = entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(0)
        .min(60);
    let mut out = String::new();
    for entry in entries {
        out.push_str(&format!(
            "  {:>7} ms  {:>7} ms  {:<width$}  {}\n",
            entry.start_ms, entry.duration_ms, entry.name, entry.outcome
        ));
    }
    out
}
