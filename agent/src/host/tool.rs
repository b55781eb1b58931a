//! Running one of the OS's own tools (modprobe, swapoff) for its effect.

use crate::error::{Classified, ErrorKind};

/// A tool that could not be started, or that exited with a failure.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command}: {stderr}")]
    Failed { command: String, stderr: String },
}

/// A tool that failed leaves the node unconverged.
impl Classified for ToolError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::ChangeFailed
    }
}

/// Runs `program args...` and waits for it; its standard error is the failure's text.
pub async fn run(program: &str, args: &[&str]) -> Result<(), ToolError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|source| ToolError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ToolError::Failed {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_tool_names_the_command_and_its_stderr() {
        let err = run("sh", &["-c", "echo no such module >&2; exit 1"])
            .await
            .unwrap_err();
        assert!(matches!(err, ToolError::Failed { .. }));
        assert_eq!(
            err.to_string(),
            "sh -c echo no such module >&2; exit 1: no such module"
        );
        assert!(run("sh", &["-c", "exit 0"]).await.is_ok());
    }

    #[tokio::test]
    async fn a_missing_tool_is_a_spawn_error() {
        let err = run("/nonexistent/modprobe", &["x"]).await.unwrap_err();
        assert!(matches!(err, ToolError::Spawn { .. }), "{err}");
        assert!(err.to_string().starts_with("/nonexistent/modprobe x: "));
    }
}
