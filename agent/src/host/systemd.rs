//! systemd, behind one trait: [`Systemctl`] asks and acts on the running systemd;
//! [`FilesOnly`] stands for a root whose units are not ours to act on (a sandbox root,
//! or a host where systemd is not running): it cannot tell a unit's state and skips
//! every job, with the reason. The engine plans and applies through the trait only.

use std::fmt;

use futures_util::future::BoxFuture;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
#[error("systemctl {args}: {detail}")]
pub struct SystemctlError {
    pub args: String,
    pub detail: String,
}

impl SystemctlError {
    /// systemctl refused because the unit (or its file) does not exist.
    pub fn unit_is_gone(&self) -> bool {
        self.detail.contains("not loaded") || self.detail.contains("does not exist")
    }
}

/// What a job asked of systemd came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    Done,
    /// Not done, and why: this system's units are not ours to act on.
    Skipped(String),
}

/// A systemd answer, later.
pub type Answer<'a, T> = BoxFuture<'a, Result<T, SystemctlError>>;

/// How systemd holds a unit: `LoadState` (`loaded`, `masked`, `not-found`...) and
/// whether its files changed on disk since it was loaded (`NeedDaemonReload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub load_state: String,
    pub need_reload: bool,
}

/// The units of the system nodewright runs on.
pub trait Systemd: fmt::Debug + Send + Sync {
    /// Whether `unit` is active; `None` when this system cannot tell.
    fn is_active<'a>(&'a self, unit: &'a str) -> Answer<'a, Option<bool>>;
    /// Whether `unit` is enabled (or needs no enabling); `None` when this system
    /// cannot tell.
    fn is_enabled<'a>(&'a self, unit: &'a str) -> Answer<'a, Option<bool>>;
    /// How systemd holds each of `units`, in their order (asking loads a unit that
    /// is not loaded yet from its file); `None` when this system cannot tell.
    fn loaded<'a>(&'a self, units: &'a [String]) -> Answer<'a, Option<Vec<Loaded>>>;
    fn daemon_reload(&self) -> Answer<'_, Job>;
    fn enable<'a>(&'a self, unit: &'a str) -> Answer<'a, Job>;
    fn disable<'a>(&'a self, unit: &'a str) -> Answer<'a, Job>;
    /// Starts `unit`; with `queue`, only queues the start (see [`Systemctl`]).
    fn start<'a>(&'a self, unit: &'a str, queue: bool) -> Answer<'a, Job>;
    fn restart<'a>(&'a self, unit: &'a str, queue: bool) -> Answer<'a, Job>;
    fn stop<'a>(&'a self, unit: &'a str) -> Answer<'a, Job>;
}

/// Stops `unit` and, with `disable`, disables it. A unit already gone (an earlier run
/// removed its file and was killed before it could record so) counts as stopped.
pub async fn stop_unit(
    systemd: &dyn Systemd,
    unit: &str,
    disable: bool,
) -> Result<Job, SystemctlError> {
    match systemd.stop(unit).await {
        Ok(Job::Skipped(reason)) => return Ok(Job::Skipped(reason)),
        Err(e) if !e.unit_is_gone() => return Err(e),
        _ => {}
    }
    if !disable {
        return Ok(Job::Done);
    }
    match systemd.disable(unit).await {
        Err(e) if !e.unit_is_gone() => Err(e),
        Ok(Job::Skipped(reason)) => Ok(Job::Skipped(reason)),
        _ => Ok(Job::Done),
    }
}

/// No systemd to act on: every question is unanswered and every job skipped.
#[derive(Debug, Clone)]
pub struct FilesOnly {
    reason: String,
}

impl FilesOnly {
    /// `reason` is what each skipped job reports (e.g. `root is /tmp/x, not /`).
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    fn skip<'a>(&'a self) -> Answer<'a, Job> {
        Box::pin(async move { Ok(Job::Skipped(self.reason.clone())) })
    }
}

impl Systemd for FilesOnly {
    fn is_active<'a>(&'a self, _unit: &'a str) -> Answer<'a, Option<bool>> {
        Box::pin(async { Ok(None) })
    }
    fn is_enabled<'a>(&'a self, _unit: &'a str) -> Answer<'a, Option<bool>> {
        Box::pin(async { Ok(None) })
    }
    fn loaded<'a>(&'a self, _units: &'a [String]) -> Answer<'a, Option<Vec<Loaded>>> {
        Box::pin(async { Ok(None) })
    }
    fn daemon_reload(&self) -> Answer<'_, Job> {
        self.skip()
    }
    fn enable<'a>(&'a self, _unit: &'a str) -> Answer<'a, Job> {
        self.skip()
    }
    fn disable<'a>(&'a self, _unit: &'a str) -> Answer<'a, Job> {
        self.skip()
    }
    fn start<'a>(&'a self, _unit: &'a str, _queue: bool) -> Answer<'a, Job> {
        self.skip()
    }
    fn restart<'a>(&'a self, _unit: &'a str, _queue: bool) -> Answer<'a, Job> {
        self.skip()
    }
    fn stop<'a>(&'a self, _unit: &'a str) -> Answer<'a, Job> {
        self.skip()
    }
}

/// The running systemd, through `systemctl`. Used only when the root is `/` and
/// systemd is PID 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct Systemctl;

impl Systemd for Systemctl {
    fn is_active<'a>(&'a self, unit: &'a str) -> Answer<'a, Option<bool>> {
        Box::pin(async move { is_active(unit).await.map(Some) })
    }
    fn is_enabled<'a>(&'a self, unit: &'a str) -> Answer<'a, Option<bool>> {
        Box::pin(async move { is_enabled(unit).await.map(Some) })
    }
    /// One `systemctl show` for all of them.
    fn loaded<'a>(&'a self, units: &'a [String]) -> Answer<'a, Option<Vec<Loaded>>> {
        Box::pin(async move { loaded(units).await.map(Some) })
    }
    fn daemon_reload(&self) -> Answer<'_, Job> {
        Box::pin(async { done(run(&["daemon-reload"]).await) })
    }
    /// Enables `unit` without systemd reloading itself: the links are what makes it
    /// start at the next boot, and the engine has already run the one `daemon-reload`
    /// a changed unit file needs (starting it comes next, explicitly). A reload per
    /// enable costs 0.1–0.6 s each, most of a first boot's agent time.
    fn enable<'a>(&'a self, unit: &'a str) -> Answer<'a, Job> {
        Box::pin(async move { done(run(&["--no-reload", "enable", unit]).await) })
    }
    fn disable<'a>(&'a self, unit: &'a str) -> Answer<'a, Job> {
        Box::pin(async move { done(run(&["disable", unit]).await) })
    }
    /// Starts `unit` and waits until it is ready; or only queues the start
    /// (`--no-block`): when asked (`queue`: a unit that is ready only with its peers,
    /// an etcd member at quorum), and when `unit` is ordered after the unit this
    /// process runs in (`nodewright-watch.service` is `After=nodewright.service`): its
    /// job waits for our own unit's, so waiting for it here would wait for ourselves.
    /// systemd starts it as soon as this run ends.
    fn start<'a>(&'a self, unit: &'a str, queue: bool) -> Answer<'a, Job> {
        Box::pin(async move { done(job("start", unit, queue).await) })
    }
    fn restart<'a>(&'a self, unit: &'a str, queue: bool) -> Answer<'a, Job> {
        Box::pin(async move { done(job("restart", unit, queue).await) })
    }
    fn stop<'a>(&'a self, unit: &'a str) -> Answer<'a, Job> {
        Box::pin(async move { done(run(&["stop", unit]).await) })
    }
}

fn done(result: Result<(), SystemctlError>) -> Result<Job, SystemctlError> {
    result.map(|()| Job::Done)
}

/// `systemctl start|restart`, queued (`--no-block`) when asked or when `unit` is
/// ordered after our own unit.
async fn job(verb: &str, unit: &str, queue: bool) -> Result<(), SystemctlError> {
    if queue || ordered_after_us(unit).await {
        return run(&[verb, "--no-block", unit]).await;
    }
    run(&[verb, unit]).await
}

async fn systemctl(args: &[&str]) -> Result<std::process::Output, SystemctlError> {
    Command::new("systemctl")
        .args(args)
        .output()
        .await
        .map_err(|e| SystemctlError {
            args: args.join(" "),
            detail: e.to_string(),
        })
}

async fn run(args: &[&str]) -> Result<(), SystemctlError> {
    let output = systemctl(args).await?;
    if output.status.success() {
        Ok(())
    } else {
        Err(SystemctlError {
            args: args.join(" "),
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

async fn is_active(unit: &str) -> Result<bool, SystemctlError> {
    Ok(systemctl(&["is-active", "--quiet", unit])
        .await?
        .status
        .success())
}

async fn is_enabled(unit: &str) -> Result<bool, SystemctlError> {
    let output = systemctl(&["is-enabled", unit]).await?;
    let state = String::from_utf8_lossy(&output.stdout);
    // "static", "alias" and "generated" units cannot be enabled and need not be.
    Ok(matches!(
        state.trim(),
        "enabled" | "enabled-runtime" | "static" | "alias" | "generated" | "indirect"
    ))
}

async fn loaded(units: &[String]) -> Result<Vec<Loaded>, SystemctlError> {
    if units.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec!["show", "--property=LoadState,NeedDaemonReload", "--"];
    args.extend(units.iter().map(String::as_str));
    let output = systemctl(&args).await?;
    let fail = |detail: String| SystemctlError {
        args: args.join(" "),
        detail,
    };
    if !output.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    let states = parse_loaded(&String::from_utf8_lossy(&output.stdout));
    if states.len() != units.len() {
        return Err(fail(format!(
            "{} answers for {} units",
            states.len(),
            units.len()
        )));
    }
    Ok(states)
}

/// `systemctl show --property=LoadState,NeedDaemonReload` output: a block per unit, in
/// the order asked.
pub fn parse_loaded(text: &str) -> Vec<Loaded> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut loaded = Loaded {
                load_state: String::new(),
                need_reload: true,
            };
            for line in block.lines() {
                match line.split_once('=') {
                    Some(("LoadState", value)) => loaded.load_state = value.to_owned(),
                    Some(("NeedDaemonReload", value)) => loaded.need_reload = value != "no",
                    _ => {}
                }
            }
            loaded
        })
        .collect()
}

/// Whether `unit` is ordered after the service this process runs in.
async fn ordered_after_us(unit: &str) -> bool {
    let Some(own) = own_service() else {
        return false;
    };
    let Ok(output) = systemctl(&["show", "--property=After", "--value", "--", unit]).await else {
        return false;
    };
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .any(|after| after == own)
}

/// The service unit this process runs in, from its cgroup (`…/nodewright.service`).
fn own_service() -> Option<String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    service_of_cgroups(&cgroups)
}

fn service_of_cgroups(cgroups: &str) -> Option<String> {
    cgroups.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit('/')
            .find(|part| part.ends_with(".service"))
            .map(str::to_owned)
    })
}

/// A unit's state as systemd reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitStatus {
    pub unit: String,
    /// `loaded`, `not-found`, `masked`…
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`…
    pub active_state: String,
    /// `running`, `exited`, `dead`, `auto-restart`…
    pub sub_state: String,
    /// `enabled`, `disabled`, `static`…
    pub unit_file_state: String,
    /// `success`, `exit-code`, `signal`, `timeout`…
    pub result: String,
    /// How often systemd restarted it (Restart=).
    pub restarts: u32,
    pub active_since: String,
}

const SHOW_PROPERTIES: &str =
    "Id,LoadState,ActiveState,SubState,UnitFileState,Result,NRestarts,ActiveEnterTimestamp";

/// The state of each unit, in one `systemctl show`.
pub async fn show(units: &[String]) -> Result<Vec<UnitStatus>, SystemctlError> {
    if units.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec!["show", "--property", SHOW_PROPERTIES, "--"];
    args.extend(units.iter().map(String::as_str));
    let output = systemctl(&args).await?;
    if !output.status.success() {
        return Err(SystemctlError {
            args: args.join(" "),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(parse_show(&String::from_utf8_lossy(&output.stdout)))
}

/// Parses `systemctl show` output: one `Key=Value` block per unit, blank-line separated.
pub fn parse_show(text: &str) -> Vec<UnitStatus> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut status = UnitStatus::default();
            for line in block.lines() {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let value = value.to_owned();
                match key {
                    "Id" => status.unit = value,
                    "LoadState" => status.load_state = value,
                    "ActiveState" => status.active_state = value,
                    "SubState" => status.sub_state = value,
                    "UnitFileState" => status.unit_file_state = value,
                    "Result" => status.result = value,
                    "NRestarts" => status.restarts = value.parse().unwrap_or(0),
                    "ActiveEnterTimestamp" => status.active_since = value,
                    _ => {}
                }
            }
            status
        })
        .collect()
}

/// A systemd in memory for tests: units are active or enabled as the test sets them
/// (and as the jobs leave them), every call is recorded, and a call can be made to fail.
#[cfg(test)]
pub mod fake {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    use super::{Answer, Job, Loaded, SystemctlError, Systemd};

    #[derive(Debug, Default)]
    pub struct FakeSystemd {
        units: Mutex<Units>,
    }

    #[derive(Debug, Default)]
    struct Units {
        active: BTreeSet<String>,
        enabled: BTreeSet<String>,
        /// How systemd holds a unit; a unit not here is `not-found`.
        loaded: BTreeMap<String, Loaded>,
        calls: Vec<String>,
        /// Call (`stop app.service`) to the error systemctl prints.
        failing: BTreeMap<String, String>,
    }

    impl FakeSystemd {
        fn units(&self) -> std::sync::MutexGuard<'_, Units> {
            self.units.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub fn set_active(&self, unit: &str, active: bool) {
            let mut units = self.units();
            if active {
                units.active.insert(unit.to_owned());
            } else {
                units.active.remove(unit);
            }
        }

        /// Has systemd hold `unit` as `load_state` (`loaded`, `masked`), its files
        /// changed since (`need_reload`) or not.
        pub fn set_loaded(&self, unit: &str, load_state: &str, need_reload: bool) {
            self.units().loaded.insert(
                unit.to_owned(),
                Loaded {
                    load_state: load_state.to_owned(),
                    need_reload,
                },
            );
        }

        /// The jobs asked, in order (`start app.service`, `daemon-reload`...).
        pub fn calls(&self) -> Vec<String> {
            self.units().calls.clone()
        }

        /// Makes `call` fail with `detail` from now on.
        pub fn fail(&self, call: &str, detail: &str) {
            self.units()
                .failing
                .insert(call.to_owned(), detail.to_owned());
        }

        fn job(&self, call: String, change: impl FnOnce(&mut Units)) -> Answer<'_, Job> {
            let mut units = self.units();
            let result = match units.failing.get(&call) {
                Some(detail) => Err(SystemctlError {
                    args: call.clone(),
                    detail: detail.clone(),
                }),
                None => {
                    change(&mut units);
                    Ok(Job::Done)
                }
            };
            units.calls.push(call);
            Box::pin(async move { result })
        }
    }

    impl Systemd for FakeSystemd {
        fn is_active<'a>(&'a self, unit: &'a str) -> Answer<'a, Option<bool>> {
            let active = self.units().active.contains(unit);
            Box::pin(async move { Ok(Some(active)) })
        }
        fn is_enabled<'a>(&'a self, unit: &'a str) -> Answer<'a, Option<bool>> {
            let enabled = self.units().enabled.contains(unit);
            Box::pin(async move { Ok(Some(enabled)) })
        }
        fn loaded<'a>(&'a self, units: &'a [String]) -> Answer<'a, Option<Vec<Loaded>>> {
            let known = &self.units().loaded;
            let states = units
                .iter()
                .map(|unit| {
                    known.get(unit).cloned().unwrap_or(Loaded {
                        load_state: "not-found".to_owned(),
                        need_reload: false,
                    })
                })
                .collect();
            Box::pin(async move { Ok(Some(states)) })
        }
        fn daemon_reload(&self) -> Answer<'_, Job> {
            // systemd has every unit as on disk now.
            self.job("daemon-reload".to_owned(), |u| {
                for loaded in u.loaded.values_mut() {
                    loaded.need_reload = false;
                }
            })
        }
        fn enable<'a>(&'a self, unit: &'a str) -> Answer<'a, Job> {
            self.job(format!("enable {unit}"), |u| {
                u.enabled.insert(unit.to_owned());
            })
        }
        fn disable<'a>(&'a self, unit: &'a str) -> Answer<'a, Job> {
            self.job(format!("disable {unit}"), |u| {
                u.enabled.remove(unit);
            })
        }
        fn start<'a>(&'a self, unit: &'a str, queue: bool) -> Answer<'a, Job> {
            let call = if queue {
                format!("start --no-block {unit}")
            } else {
                format!("start {unit}")
            };
            self.job(call, |u| {
                u.active.insert(unit.to_owned());
            })
        }
        fn restart<'a>(&'a self, unit: &'a str, queue: bool) -> Answer<'a, Job> {
            let call = if queue {
                format!("restart --no-block {unit}")
            } else {
                format!("restart {unit}")
            };
            self.job(call, |u| {
                u.active.insert(unit.to_owned());
            })
        }
        fn stop<'a>(&'a self, unit: &'a str) -> Answer<'a, Job> {
            self.job(format!("stop {unit}"), |u| {
                u.active.remove(unit);
            })
        }
    }
}

#[cfg(test)]
mod tests;
