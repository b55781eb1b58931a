//! Processes, through /proc: enough to tell whether the process that wrote a live run
//! record is still that process (a pid alone may have been reused since).

use std::path::Path;

/// A process, named by its pid and its start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    pub start: Option<u64>,
}

/// This process.
pub fn current() -> ProcessId {
    let pid = std::process::id();
    ProcessId {
        pid,
        start: start_time(pid),
    }
}

/// Whether `process` is still running (and is the same process).
pub fn is_running(process: ProcessId) -> bool {
    if !Path::new(&format!("/proc/{}", process.pid)).exists() {
        return false;
    }
    match (process.start, start_time(process.pid)) {
        (Some(recorded), Some(now)) => recorded == now,
        // Without a start time to compare, the pid existing is the best we know.
        _ => true,
    }
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of /proc/PID/stat. The command name (field 2) is in parentheses and may
/// hold spaces and parentheses itself, so count from the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_start_time_after_odd_names() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn this_process_runs_and_a_reused_pid_does_not_count() {
        let me = current();
        assert!(me.start.is_some());
        assert!(is_running(me));
        let other = ProcessId {
            pid: me.pid,
            start: me.start.map(|s| s + 1),
        };
        assert!(!is_running(other));
        assert!(!is_running(ProcessId {
            pid: u32::MAX - 1,
            start: None
        }));
    }
}
