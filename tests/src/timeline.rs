//! A booted node's boot timeline, from its own journal: when systemd came up, when the
//! boot unit started, when the agent said it converged, when the kubelet was running,
//! all from the instance start.

use std::time::{Duration, SystemTime};

use crate::node::{JournalEntry, Node};

#[derive(Debug, Clone, Copy)]
pub struct BootTimeline {
    /// The first journal entry of the boot (systemd as PID 1 is logging).
    pub systemd_up: Duration,
    /// `Starting nodewright.service`.
    pub unit_started: Duration,
    /// The agent's `converged` message.
    pub converged: Duration,
    /// `Finished nodewright.service` (the unit's job is done; units after it may start).
    pub unit_finished: Duration,
    /// `Started kubelet.service` (systemd runs the kubelet), if the node has one.
    pub kubelet_started: Option<Duration>,
    /// The agent's own total, from its recorded timeline (what `nodewright status` shows).
    pub agent_total: Duration,
}

impl BootTimeline {
    /// The timeline of the node's current boot, once the agent has converged in it.
    pub fn of(node: &Node) -> Option<Self> {
        let started = node.started()?;
        let output = node.exec(&["cat", "/proc/sys/kernel/random/boot_id"]);
        let boot_id = String::from_utf8_lossy(&output.stdout)
            .trim()
            .replace('-', "");
        let entries = node.journal_matching(&[&format!("_BOOT_ID={boot_id}")]);
        let since = |entry: &JournalEntry| {
            let at = SystemTime::UNIX_EPOCH + Duration::from_micros(entry.realtime_us);
            at.duration_since(started).unwrap_or_default()
        };
        let first = |prefix: &str| {
            entries
                .iter()
                .find(|e| e.message.starts_with(prefix))
                .map(since)
        };
        let state = node.state()?;
        let agent_total = state["lastRun"]["timeline"]
            .as_array()?
            .iter()
            .filter_map(|e| Some(e["startMs"].as_u64()? + e["durationMs"].as_u64()?))
            .max()?;
        Some(Self {
            systemd_up: entries.first().map(since)?,
            unit_started: first("Starting nodewright.service")?,
            converged: first("converged")?,
            unit_finished: first("Finished nodewright.service")?,
            kubelet_started: first("Started kubelet.service"),
            agent_total: Duration::from_millis(agent_total),
        })
    }
}

/// The run's slowest timeline entries (steps of apply included), as a short list.
pub fn slowest_steps(node: &Node, count: usize) -> String {
    let state = node.state().expect("state");
    let mut entries: Vec<(u64, u64, String)> = state["lastRun"]["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["durationMs"].as_u64()?,
                e["startMs"].as_u64()?,
                e["name"].as_str()?.to_owned(),
            ))
        })
        .collect();
    entries.sort_by(|a, b| b.cmp(a));
    let mut text = String::from("Slowest timeline entries (duration, start, name):\n");
    for (duration, start, name) in entries.iter().take(count) {
        text.push_str(&format!("  {duration:>5} ms  @{start:>5} ms  {name}\n"));
    }
    text
}
