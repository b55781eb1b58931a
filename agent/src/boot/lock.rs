//! The lock phase: one converging run at a time. A run waits for another to finish
//! (up to its deadline) and says in the live record whom it is waiting for.

use std::time::{Duration, Instant, SystemTime};

use super::BootError;
use crate::engine::Timeline;
use crate::host::Host;
use crate::host::lock::{LockError, RunLock};
use crate::{progress, report};

/// Subject of the wait for the run lock, in the live run record.
const SUBJECT: &str = "the run lock";

/// Takes the run lock, waiting up to `wait` for another run to release it. Only a
/// wait is entered in the timeline.
pub async fn acquire(
    host: &Host,
    wait: Duration,
    timeline: &mut Timeline,
) -> Result<RunLock, BootError> {
    let began = Instant::now();
    let mut attempts = 0;
    loop {
        match RunLock::try_acquire(&host.state_dir()) {
            Ok(lock) => {
                if attempts > 0 {
                    report::done_waiting(SUBJECT);
                    timeline.record("lock", began, "ok");
                }
                return Ok(lock);
            }
            Err(source @ LockError::Held { .. }) => {
                attempts += 1;
                let holder = holder(host);
                if began.elapsed() >= wait {
                    report::done_waiting(SUBJECT);
                    timeline.record("lock", began, "failed: held by another run");
                    return Err(BootError::Locked { source, holder });
                }
                let reason = format!(
                    "held by {}",
                    holder.as_deref().unwrap_or("another nodewright run")
                );
                report::waiting(&report::Wait {
                    subject: SUBJECT,
                    reason: &reason,
                    attempts,
                    gives_up_at: Some(SystemTime::now() + wait.saturating_sub(began.elapsed())),
                    topic: None,
                });
                if attempts == 1 {
                    tracing::info!(%reason, "waiting for the run lock");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(source) => {
                return Err(BootError::Locked {
                    source,
                    holder: None,
                });
            }
        }
    }
}

/// The run holding the lock, from its live record.
fn holder(host: &Host) -> Option<String> {
    let me = std::process::id();
    progress::read(host.root())
        .into_iter()
        .find(|f| f.running && f.progress.pid != me)
        .map(|f| {
            format!(
                "{} (pid {}, since {}, phase {})",
                f.progress.command, f.progress.pid, f.progress.started_at, f.progress.phase
            )
        })
}
