//! systemd, through `systemctl`. Only used when the root is `/` and systemd runs.

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
#[error("systemctl {args}: {detail}")]
pub struct SystemctlError {
    pub args: String,
    pub detail: String,
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

pub async fn enable(unit: &str) -> Result<(), SystemctlError> {
    run(&["enable", unit]).await
}

pub async fn disable(unit: &str) -> Result<(), SystemctlError> {
    run(&["disable", unit]).await
}

pub async fn start(unit: &str) -> Result<(), SystemctlError> {
    run(&["start", unit]).await
}

pub async fn restart(unit: &str) -> Result<(), SystemctlError> {
    run(&["restart", unit]).await
}

pub async fn stop(unit: &str) -> Result<(), SystemctlError> {
    run(&["stop", unit]).await
}
