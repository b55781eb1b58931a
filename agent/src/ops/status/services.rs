//! Each service's state: live from systemd, or as the last run recorded it, judged
//! against what the spec wants.

use crate::engine::State;
use crate::engine::applied::{AppliedError, AppliedSpec};
use crate::engine::keys::AppliedKey;
use crate::host::{Host, systemd};
use crate::model::{self, DesiredService};
use crate::runbook::Topic;

use super::{LastRun, ServiceStatus};

/// The services the kept spec wants, or (without one) those nodewright acted on.
pub(super) fn wanted_services(host: &Host, state: &State) -> (Vec<DesiredService>, String) {
    let state_dir = host.state_dir();
    let kept = AppliedSpec::load(&state_dir).and_then(|kept| {
        let spec = kept.node_spec(&state_dir)?;
        Ok((kept, spec))
    });
    match kept {
        Ok((kept, spec)) => match model::desired_state(&spec, &kept.facts) {
            Ok(desired) => (desired.services, "ok".to_owned()),
            Err(e) => (recorded_services(state), format!("does not render: {e}")),
        },
        Err(AppliedError::Missing { .. }) => (recorded_services(state), "none kept".to_owned()),
        Err(e) => (recorded_services(state), e.to_string()),
    }
}

fn recorded_services(state: &State) -> Vec<DesiredService> {
    let mut units: Vec<(String, bool, bool)> = Vec::new();
    for key in state.applied.keys() {
        let (unit, started) = match key {
            AppliedKey::Service(unit) => (unit.as_str(), true),
            AppliedKey::Enable(unit) => (unit.as_str(), false),
            _ => continue,
        };
        match units.iter_mut().find(|(u, _, _)| u == unit) {
            Some(entry) => {
                entry.1 |= started;
                entry.2 |= !started;
            }
            None => units.push((unit.to_owned(), started, !started)),
        }
    }
    units
        .into_iter()
        .filter_map(|(unit, running, enabled)| {
            Some(DesiredService {
                unit: crate::spec::UnitName::try_from(unit).ok()?,
                enabled,
                running,
                inputs: Vec::new(),
                ready_with_peers: false,
            })
        })
        .collect()
}

pub(super) async fn services(
    host: &Host,
    state: &State,
    wanted: &[DesiredService],
    last_run: Option<&LastRun>,
) -> Vec<ServiceStatus> {
    let names: Vec<String> = wanted.iter().map(|s| s.unit.to_string()).collect();
    let live = if host.skip_reason().is_none() {
        systemd::show(&names).await.ok()
    } else {
        None
    };
    wanted
        .iter()
        .map(|service| {
            let unit = service.unit.to_string();
            let base = ServiceStatus {
                unit: unit.clone(),
                wanted: if service.running {
                    "running"
                } else {
                    "stopped"
                }
                .to_owned(),
                enabled: service.enabled,
                source: String::new(),
                state: String::new(),
                healthy: true,
                problem: None,
            };
            match live
                .as_ref()
                .and_then(|all| all.iter().find(|s| s.unit == unit))
            {
                Some(status) => from_systemd(base, service, status),
                None => from_record(base, service, state, last_run),
            }
        })
        .collect()
}

fn from_systemd(
    mut out: ServiceStatus,
    service: &DesiredService,
    status: &systemd::UnitStatus,
) -> ServiceStatus {
    out.source = "systemd".to_owned();
    out.state = format!("{} ({})", status.active_state, status.sub_state);
    if status.restarts > 0 {
        out.state
            .push_str(&format!(", restarted {} times", status.restarts));
    }
    let problem = if status.load_state != "loaded" {
        Some(format!("unit is {}", status.load_state))
    } else if status.active_state == "failed" {
        Some(format!("failed ({})", status.result))
    } else if service.running && status.active_state != "active" {
        Some(format!(
            "wanted running, is {} ({})",
            status.active_state, status.sub_state
        ))
    } else if service.running && status.sub_state == "auto-restart" {
        Some("crash-looping (auto-restart)".to_owned())
    } else {
        None
    };
    out.healthy = problem.is_none();
    out.problem = problem.map(|p| format!("{p}; {}", Topic::ServiceUnhealthy.hint()));
    out
}

fn from_record(
    mut out: ServiceStatus,
    service: &DesiredService,
    state: &State,
    last_run: Option<&LastRun>,
) -> ServiceStatus {
    out.source = "recorded".to_owned();
    let unit = service.unit.as_str();
    let failed_step = last_run.and_then(|run| {
        run.failed_steps.iter().find(|e| {
            e.name.ends_with(&format!(" {unit}"))
                && ["start", "restart", "enable", "stop"]
                    .iter()
                    .any(|verb| e.name == format!("apply: {verb} {unit}"))
        })
    });
    let record = state
        .applied
        .get(&AppliedKey::Service(service.unit.clone()));
    out.state = match record {
        Some(record) => format!("last start/restart {} at {}", record.outcome, record.at),
        None if service.running => "never started by nodewright".to_owned(),
        None => "left stopped".to_owned(),
    };
    let problem = match failed_step {
        Some(step) => Some(format!(
            "{}: {}",
            step.name.trim_start_matches("apply: "),
            step.outcome
        )),
        None if service.running && record.is_none() => {
            Some("wanted running, but nodewright never started it".to_owned())
        }
        None => None,
    };
    out.healthy = problem.is_none();
    out.problem = problem;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::AppliedRecord;
    use crate::engine::{RunResult, TimelineEntry};
    use crate::spec::UnitName;

    fn service(running: bool) -> DesiredService {
        DesiredService {
            unit: UnitName::try_from("kubelet.service").unwrap(),
            enabled: true,
            running,
            inputs: Vec::new(),
            ready_with_peers: false,
        }
    }

    fn base() -> ServiceStatus {
        ServiceStatus {
            unit: "kubelet.service".to_owned(),
            wanted: "running".to_owned(),
            enabled: true,
            source: String::new(),
            state: String::new(),
            healthy: true,
            problem: None,
        }
    }

    fn unit(active: &str, sub: &str, result: &str, restarts: u32) -> systemd::UnitStatus {
        systemd::UnitStatus {
            unit: "kubelet.service".to_owned(),
            load_state: "loaded".to_owned(),
            active_state: active.to_owned(),
            sub_state: sub.to_owned(),
            unit_file_state: "enabled".to_owned(),
            result: result.to_owned(),
            restarts,
            active_since: String::new(),
        }
    }

    #[test]
    fn live_states_are_judged_against_what_the_spec_wants() {
        let ok = from_systemd(
            base(),
            &service(true),
            &unit("active", "running", "success", 0),
        );
        assert!(ok.healthy, "{ok:?}");
        assert_eq!(ok.state, "active (running)");
        assert_eq!(ok.source, "systemd");

        let failed = from_systemd(
            base(),
            &service(true),
            &unit("failed", "failed", "exit-code", 3),
        );
        assert!(!failed.healthy);
        assert_eq!(failed.state, "failed (failed), restarted 3 times");
        assert!(
            failed
                .problem
                .as_deref()
                .unwrap()
                .starts_with("failed (exit-code)")
        );
        assert!(
            failed
                .problem
                .as_deref()
                .unwrap()
                .contains("service-unhealthy")
        );

        let looping = from_systemd(
            base(),
            &service(true),
            &unit("activating", "auto-restart", "exit-code", 9),
        );
        assert!(!looping.healthy);
        let stopped = from_systemd(
            base(),
            &service(false),
            &unit("inactive", "dead", "success", 0),
        );
        assert!(stopped.healthy, "wanted stopped and stopped: {stopped:?}");
        let mut missing = unit("inactive", "dead", "success", 0);
        missing.load_state = "not-found".to_owned();
        let missing = from_systemd(base(), &service(false), &missing);
        assert!(
            missing
                .problem
                .as_deref()
                .unwrap()
                .starts_with("unit is not-found")
        );
    }

    #[test]
    fn recorded_states_use_the_last_run() {
        let state = State::default();
        let never = from_record(base(), &service(true), &state, None);
        assert!(!never.healthy);
        assert_eq!(never.state, "never started by nodewright");

        let mut state = State::default();
        state.applied.insert(
            AppliedKey::Service(crate::spec::UnitName::try_from("kubelet.service").unwrap()),
            AppliedRecord {
                inputs: Default::default(),
                at: "2026-01-01T00:00:00.000Z".to_owned(),
                outcome: "ok".to_owned(),
            },
        );
        let run = LastRun {
            command: "boot".to_owned(),
            started_at: String::new(),
            finished_at: String::new(),
            result: RunResult::Failed,
            error: None,
            spec_url: None,
            spec_sha256: None,
            agent_version: String::new(),
            changes: 1,
            duration_ms: 1,
            phases: vec![],
            failed_steps: vec![TimelineEntry {
                name: "apply: restart kubelet.service".to_owned(),
                start_ms: 0,
                duration_ms: 1,
                outcome: "failed: systemctl restart kubelet.service: exit status: 1".to_owned(),
            }],
            timeline: vec![],
        };
        let failed = from_record(base(), &service(true), &state, Some(&run));
        assert!(!failed.healthy);
        assert_eq!(
            failed.problem.as_deref(),
            Some(
                "restart kubelet.service: failed: systemctl restart kubelet.service: exit status: 1"
            )
        );
        let fine = from_record(base(), &service(true), &state, None);
        assert!(fine.healthy);
        assert_eq!(
            fine.state,
            "last start/restart ok at 2026-01-01T00:00:00.000Z"
        );
    }
}
