//! systemd, through `systemctl`. Only used when the root is `/` and systemd runs.

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

pub async fn is_active(unit: &str) -> Result<bool, SystemctlError> {
    Ok(systemctl(&["is-active", "--quiet", unit])
        .await?
        .status
        .success())
}

pub async fn is_enabled(unit: &str) -> Result<bool, SystemctlError> {
    let output = systemctl(&["is-enabled", unit]).await?;
    let state = String::from_utf8_lossy(&output.stdout);
    // "static", "alias" and "generated" units cannot be enabled and need not be.
    Ok(matches!(
        state.trim(),
        "enabled" | "enabled-runtime" | "static" | "alias" | "generated" | "indirect"
    ))
}

pub async fn daemon_reload() -> Result<(), SystemctlError> {
    run(&["daemon-reload"]).await
}

/// Enables `unit` without systemd reloading itself: the links are what makes it start
/// at the next boot, and the engine has already run the one `daemon-reload` a changed
/// unit file needs (starting it comes next, explicitly). A reload per enable costs
/// 0.1–0.6 s each, most of a first boot's agent time.
pub async fn enable(unit: &str) -> Result<(), SystemctlError> {
    run(&["--no-reload", "enable", unit]).await
}

pub async fn disable(unit: &str) -> Result<(), SystemctlError> {
    run(&["disable", unit]).await
}

/// Starts `unit` and waits until it is ready; or only queues the start (`--no-block`):
/// when asked (`queue`: a unit that is ready only with its peers, an etcd member at
/// quorum), and when `unit` is ordered after the unit this process runs in
/// (`nodewright-watch.service` is `After=nodewright.service`): its job waits for our own
/// unit's, so waiting for it here would wait for ourselves. systemd starts it as soon
/// as this run ends.
pub async fn start(unit: &str, queue: bool) -> Result<(), SystemctlError> {
    if queue || ordered_after_us(unit).await {
        return run(&["start", "--no-block", unit]).await;
    }
    run(&["start", unit]).await
}

/// Like [`start`], for a restart.
pub async fn restart(unit: &str, queue: bool) -> Result<(), SystemctlError> {
    if queue || ordered_after_us(unit).await {
        return run(&["restart", "--no-block", unit]).await;
    }
    run(&["restart", unit]).await
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

pub async fn stop(unit: &str) -> Result<(), SystemctlError> {
    run(&["stop", unit]).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_show_blocks() {
        // As systemd 252 prints it for a running and a failed unit.
        let text = "Id=kubelet.service\nLoadState=loaded\nActiveState=active\nSubState=running\nResult=success\nNRestarts=0\nActiveEnterTimestamp=Tue 2026-01-06 10:00:01 UTC\nUnitFileState=enabled\n\nId=containerd.service\nLoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\nNRestarts=5\nActiveEnterTimestamp=\nUnitFileState=enabled\n";
        let units = parse_show(text);
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].unit, "kubelet.service");
        assert_eq!(units[0].sub_state, "running");
        assert_eq!(units[1].active_state, "failed");
        assert_eq!(units[1].result, "exit-code");
        assert_eq!(units[1].restarts, 5);
    }
}
