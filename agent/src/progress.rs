//! The live run record: what a running nodewright is doing and what it is waiting
//! for, kept in `/run/nodewright/run-<pid>.json` so that `nodewright status` (another
//! process) can say "boot, phase node spec, waiting for s3://…: AccessDenied (attempt
//! 7)" while the boot is still retrying. One file per process, so that a run waiting
//! for the run lock does not hide the run that holds it.
//!
//! It listens to what the run reports ([`crate::report`]): any code may report a wait
//! there (the retry helper does for every remote source, the flow for the run lock) and
//! the flow reports its phases. A run that is not tracked (`plan`, unit tests) reports
//! into nothing. The file lives under /run
//! (tmpfs: gone after a reboot), is replaced without fsync (it is a live view, not a
//! record), and is removed, with the directories it needed, when the run ends. One
//! left by a killed run is recognised by its pid and start time, and removed by the
//! next run.
//!
//! A run that goes well is over in tens of milliseconds: its record is written only
//! once the run is slow ([`QUIET_FOR`], a timer thread sees to it even if the run is
//! stuck in one call) or waiting for something. A quick run writes nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock::rfc3339;
use crate::host::process::{self, ProcessId};
use crate::report;

/// Where the records live, under the root.
pub const DIR: &str = "run/nodewright";

fn file_name(pid: u32) -> String {
    format!("run-{pid}.json")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    pub command: String,
    pub started_at: String,
    /// The phase under way: `user data`, `facts`, `node spec`, `plan`, `apply`…
    pub phase: String,
    /// What the run is waiting for now (several at once when downloads run in parallel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<Waiting>,
}

/// Something the run is waiting for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    /// What: `s3://bucket/key`, `instance metadata /latest/user-data`, `etcd volume vol-…`.
    pub subject: String,
    /// Why it is not there yet: the last error, or the state seen.
    pub reason: String,
    pub since: String,
    pub attempts: u32,
    /// When the run gives up on it, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gives_up_at: Option<String>,
    /// The runbook section about it, when one fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
}

/// How long a run's phase changes stay in memory only.
pub const QUIET_FOR: Duration = Duration::from_millis(500);

struct Tracker {
    /// Which `begin` this is (a timer acts only on its own run).
    generation: u64,
    root: PathBuf,
    /// This process's record.
    path: PathBuf,
    started: Instant,
    /// Whether the record is on disk.
    written: bool,
    /// Directories created for the record, deepest last: removed at the end if empty.
    created: Vec<PathBuf>,
    record: Progress,
}

static CURRENT: Mutex<Option<Tracker>> = Mutex::new(None);
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Ends tracking (and removes the record) when dropped.
#[must_use = "the record is removed when the guard is dropped"]
pub struct Guard {
    _listening: report::Listening,
}

/// The live record, as the run's listener.
struct LiveRecord;

impl report::Listener for LiveRecord {
    fn phase(&self, phase: &str) {
        update(|record, started| {
            if record.phase == phase {
                return false;
            }
            record.phase = phase.to_owned();
            !record.waiting.is_empty() || started.elapsed() >= QUIET_FOR
        });
    }

    fn waiting(&self, wait: &report::Wait<'_>) {
        let reason = wait.reason.lines().next().unwrap_or(wait.reason).to_owned();
        let runbook = wait.topic.map(|t| t.hint());
        let gives_up_at = wait.gives_up_at.map(rfc3339);
        update(|record, _| {
            match record
                .waiting
                .iter_mut()
                .find(|w| w.subject == wait.subject)
            {
                Some(entry) => {
                    entry.reason = reason.clone();
                    entry.attempts = wait.attempts;
                    entry.gives_up_at = gives_up_at;
                    entry.runbook = runbook;
                }
                None => record.waiting.push(Waiting {
                    subject: wait.subject.to_owned(),
                    reason: reason.clone(),
                    since: rfc3339(SystemTime::now()),
                    attempts: wait.attempts,
                    gives_up_at,
                    runbook,
                }),
            }
            true
        });
    }

    fn done_waiting(&self, subject: &str) {
        update(|record, _| {
            let before = record.waiting.len();
            record.waiting.retain(|w| w.subject != subject);
            record.waiting.len() != before
        });
    }
}

/// Starts tracking a run under `root`.
pub fn begin(root: &Path, command: &str) -> Guard {
    let me = process::current();
    let record = Progress {
        pid: me.pid,
        pid_start: me.start,
        command: command.to_owned(),
        started_at: rfc3339(SystemTime::now()),
        phase: "starting".to_owned(),
        waiting: Vec::new(),
    };
    let dir = root.join(DIR);
    remove_stale(&dir);
    let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    *lock() = Some(Tracker {
        generation,
        root: root.to_owned(),
        path: dir.join(file_name(me.pid)),
        started: Instant::now(),
        written: false,
        created: Vec::new(),
        record,
    });
    // A run still going after QUIET_FOR shows itself, even if stuck in one call.
    let spawned = std::thread::Builder::new()
        .name("progress".to_owned())
        .spawn(move || {
            std::thread::sleep(QUIET_FOR);
            update_run(Some(generation), |_, _| true);
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "no timer for the live run record");
    }
    Guard {
        _listening: report::listen(Arc::new(LiveRecord)),
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(tracker) = lock().take()
            && tracker.written
        {
            let _ = std::fs::remove_file(&tracker.path);
            for dir in tracker.created.iter().rev() {
                // Only if empty: another run may have started meanwhile.
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<Tracker>> {
    // A panic while holding it leaves plain data behind: keep using it.
    CURRENT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Applies `change` to the record; writes it when `change` says it is worth showing.
fn update(change: impl FnOnce(&mut Progress, Instant) -> bool) {
    update_run(None, change);
}

/// [`update`], for the run of `generation` only when given.
fn update_run(generation: Option<u64>, change: impl FnOnce(&mut Progress, Instant) -> bool) {
    let mut current = lock();
    if let Some(tracker) = current.as_mut()
        && generation.is_none_or(|g| g == tracker.generation)
        && change(&mut tracker.record, tracker.started)
    {
        if !tracker.written {
            tracker.created = create_parents(&tracker.root, &tracker.path);
            tracker.written = true;
        }
        write(tracker);
    }
}

/// Creates the missing directories between `root` and `path`; returns them.
fn create_parents(root: &Path, path: &Path) -> Vec<PathBuf> {
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let mut missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| *d != root && !d.exists())
        .map(Path::to_owned)
        .collect();
    missing.reverse();
    missing
        .into_iter()
        .filter(|d| std::fs::create_dir(d).is_ok())
        .collect()
}

/// Replaces the record (temp + rename, so a reader never sees half of it).
fn write(tracker: &Tracker) {
    let path = &tracker.path;
    let temp = crate::host::fs::temp_path(path);
    let Ok(bytes) = serde_json::to_vec_pretty(&tracker.record) else {
        return;
    };
    if std::fs::write(&temp, bytes)
        .and_then(|()| std::fs::rename(&temp, path))
        .is_err()
    {
        let _ = std::fs::remove_file(&temp);
        tracing::debug!(path = %path.display(), "could not write the live run record");
    }
}

/// A run record found on disk, and whether its process still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub progress: Progress,
    /// False when the process is gone: the run was killed (or the machine rebooted
    /// without clearing /run).
    pub running: bool,
}

/// Reads the live run records under `root`, oldest first.
pub fn read(root: &Path) -> Vec<Found> {
    let Ok(entries) = std::fs::read_dir(root.join(DIR)) else {
        return Vec::new();
    };
    let mut found: Vec<Found> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("run-") && name.ends_with(".json")
        })
        .filter_map(|e| {
            let progress: Progress = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            let running = process::is_running(ProcessId {
                pid: progress.pid,
                start: progress.pid_start,
            });
            Some(Found { progress, running })
        })
        .collect();
    found.sort_by(|a, b| a.progress.started_at.cmp(&b.progress.started_at));
    found
}

/// Removes the records (and half-written temp files) of processes that are gone.
fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .trim_start_matches('.')
            .strip_prefix("run-")
            .and_then(|rest| rest.split('.').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let start = std::fs::read(entry.path())
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Progress>(&bytes).ok())
            .and_then(|p| p.pid_start);
        if !process::is_running(ProcessId { pid, start }) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
