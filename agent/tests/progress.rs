//! The live run record. Its own test binary: the tracker is process-wide, and the
//! library's unit tests (the retry helper's) would report into it.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, SystemTime};

use nodewright::host::process;
use nodewright::progress::{self, DIR, Progress, QUIET_FOR};
use nodewright::report::{self, Wait};
use nodewright::runbook::Topic;

/// A wait as a source reports it (the retry helper does, with its error's topic).
fn waiting(subject: &str, reason: &str, attempts: u32, gives_up_at: Option<SystemTime>) {
    let topic = subject
        .starts_with("s3://")
        .then_some(Topic::S3AccessDenied);
    report::waiting(&Wait {
        subject,
        reason,
        attempts,
        gives_up_at,
        topic,
    });
}

/// The tracker is process-wide: one test at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn tracks_phases_and_waits_and_cleans_up() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Nothing is tracked: reports go nowhere.
    waiting("s3://b/k", "AccessDenied", 1, None);
    assert!(progress::read(root).is_empty());

    let guard = progress::begin(root, "boot");
    // A quick run writes nothing...
    report::phase("node spec");
    assert!(progress::read(root).is_empty());
    waiting(
        "s3://b/k",
        "reading s3://b/k: AccessDenied: Access Denied\nmore",
        3,
        Some(SystemTime::now()),
    );
    waiting(
        "etcd volume vol-0abc",
        "attached to i-0def (stopped)",
        1,
        None,
    );
    waiting(
        "s3://b/k",
        "reading s3://b/k: AccessDenied: Access Denied",
        4,
        None,
    );
    // ...but once it waits, the record is there and current.
    let found = progress::read(root).pop().unwrap();
    assert!(found.running);
    assert_eq!(found.progress.command, "boot");
    assert_eq!(found.progress.pid, std::process::id());
    assert_eq!(found.progress.phase, "node spec");
    let waiting = found.progress.waiting;
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    assert_eq!(waiting[0].attempts, 4);
    assert_eq!(
        waiting[0].reason,
        "reading s3://b/k: AccessDenied: Access Denied"
    );
    assert!(waiting[0].gives_up_at.is_none());
    assert!(
        waiting[0]
            .runbook
            .as_deref()
            .unwrap()
            .contains("nodewright runbook s3-access-denied")
    );
    assert_eq!(waiting[1].reason, "attached to i-0def (stopped)");
    report::phase("apply");
    assert_eq!(progress::read(root).pop().unwrap().progress.phase, "apply");
    report::done_waiting("s3://b/k");
    assert_eq!(
        progress::read(root).pop().unwrap().progress.waiting.len(),
        1
    );

    drop(guard);
    assert!(progress::read(root).is_empty());
    // The directories it created for the record are gone too.
    assert_eq!(std::fs::read_dir(root).unwrap().count(), 0);

    // A slow run shows itself without waiting for anything.
    let guard = progress::begin(root, "repair");
    report::phase("apply");
    assert!(progress::read(root).is_empty());
    std::thread::sleep(QUIET_FOR + Duration::from_millis(300));
    let found = progress::read(root).pop().unwrap();
    assert_eq!(found.progress.command, "repair");
    assert_eq!(found.progress.phase, "apply");
    drop(guard);
    assert!(progress::read(root).is_empty());
}

#[test]
fn records_of_runs_that_are_gone_are_stale_and_removed_by_the_next_run() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let records = root.join(DIR);
    std::fs::create_dir_all(&records).unwrap();
    // This pid with another start time: the same number, another process.
    let stale = Progress {
        pid: std::process::id(),
        pid_start: process::current().start.map(|s| s + 7),
        command: "boot".to_owned(),
        started_at: "2026-01-01T00:00:00.000Z".to_owned(),
        phase: "apply".to_owned(),
        waiting: vec![],
    };
    std::fs::write(
        records.join(format!("run-{}.json", std::process::id())),
        serde_json::to_vec(&stale).unwrap(),
    )
    .unwrap();
    // A half-written record of a process that is gone.
    std::fs::write(
        records.join(format!(".run-{}.json.nwtmp", u32::MAX - 3)),
        "{",
    )
    .unwrap();
    let found = progress::read(root);
    assert_eq!(found.len(), 1);
    assert!(!found[0].running);
    assert_eq!(found[0].progress.phase, "apply");

    let guard = progress::begin(root, "boot");
    assert_eq!(std::fs::read_dir(&records).unwrap().count(), 0);
    drop(guard);
}
