//! What a run tells whoever watches it: the phase it is in and what it is waiting for.
//!
//! Code in any layer reports here: the retry helper for every remote source, the flow
//! for its phases and the run lock. The live run record (the `progress` module, a layer above) listens
//! while a run is tracked; with no listener (`plan`, unit tests) reports go nowhere.
//! Reporting never fails and never blocks on I/O of the reporter's own.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::runbook::Topic;

/// Something a run is waiting for.
#[derive(Debug, Clone, Copy)]
pub struct Wait<'a> {
    /// What: `s3://bucket/key`, `instance metadata /latest/user-data`, `the run lock`.
    pub subject: &'a str,
    /// Why it is not there yet: the last error, or the state seen.
    pub reason: &'a str,
    pub attempts: u32,
    /// When the run gives up on it, if it does.
    pub gives_up_at: Option<SystemTime>,
    /// The runbook section about it, when one fits.
    pub topic: Option<Topic>,
}

/// Receives a run's reports.
pub trait Listener: Send + Sync {
    fn phase(&self, phase: &str);
    fn waiting(&self, wait: &Wait<'_>);
    fn done_waiting(&self, subject: &str);
}

static LISTENER: RwLock<Option<Arc<dyn Listener>>> = RwLock::new(None);

/// Sends reports to `listener` until the returned guard is dropped.
#[must_use = "reports stop reaching the listener when the guard is dropped"]
pub fn listen(listener: Arc<dyn Listener>) -> Listening {
    *write() = Some(listener.clone());
    Listening(listener)
}

/// Ends a [`listen`] when dropped (unless another listener took over meanwhile).
pub struct Listening(Arc<dyn Listener>);

impl Drop for Listening {
    fn drop(&mut self) {
        let mut current = write();
        if current.as_ref().is_some_and(|l| Arc::ptr_eq(l, &self.0)) {
            *current = None;
        }
    }
}

/// The run entered `phase`.
pub fn phase(phase: &str) {
    if let Some(listener) = current() {
        listener.phase(phase);
    }
}

/// The run is waiting for something.
pub fn waiting(wait: &Wait<'_>) {
    if let Some(listener) = current() {
        listener.waiting(wait);
    }
}

/// The wait for `subject` is over (it answered, or the run gave up on it).
pub fn done_waiting(subject: &str) {
    if let Some(listener) = current() {
        listener.done_waiting(subject);
    }
}

fn current() -> Option<Arc<dyn Listener>> {
    LISTENER.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn write() -> std::sync::RwLockWriteGuard<'static, Option<Arc<dyn Listener>>> {
    LISTENER.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Notes(Mutex<Vec<String>>);

    impl Listener for Notes {
        fn phase(&self, phase: &str) {
            self.0.lock().unwrap().push(format!("phase {phase}"));
        }
        fn waiting(&self, wait: &Wait<'_>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("waiting {} ({})", wait.subject, wait.attempts));
        }
        fn done_waiting(&self, subject: &str) {
            self.0.lock().unwrap().push(format!("done {subject}"));
        }
    }

    #[test]
    fn reports_reach_the_listener_only_while_it_listens() {
        let notes = Arc::new(Notes::default());
        {
            let _listening = listen(notes.clone());
            phase("facts");
            waiting(&Wait {
                subject: "s3://b/k",
                reason: "AccessDenied",
                attempts: 2,
                gives_up_at: None,
                topic: None,
            });
            done_waiting("s3://b/k");
        }
        phase("after");
        assert_eq!(
            *notes.0.lock().unwrap(),
            ["phase facts", "waiting s3://b/k (2)", "done s3://b/k"]
        );
    }
}
