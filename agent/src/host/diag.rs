//! Diagnostic commands for support bundles (journalctl, systemctl status, df, lsblk,
//! findmnt...): run with a timeout and a size cap, and never fail the caller: what
//! could not be collected is reported in the text instead.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

/// Output kept per command; the journal of a crash-looping unit can be huge.
const MAX_OUTPUT: usize = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(15);

/// The command line, then its output (stdout, then stderr), or why it did not run.
pub async fn capture(program: &str, args: &[&str]) -> String {
    let line = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    if !on_path(program) {
        return format!("$ {line}\n(not collected: {program} is not installed)\n");
    }
    let mut command = Command::new(program);
    command.args(args).kill_on_drop(true);
    let output = match tokio::time::timeout(TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return format!("$ {line}\n(not collected: {e})\n"),
        Err(_) => {
            return format!(
                "$ {line}\n(not collected: no answer in {} s)\n",
                TIMEOUT.as_secs()
            );
        }
    };
    let mut text = format!("$ {line}\n");
    let mut push = |bytes: &[u8]| {
        let room = MAX_OUTPUT.saturating_sub(text.len());
        let taken = &bytes[..bytes.len().min(room)];
        text.push_str(&String::from_utf8_lossy(taken));
        if taken.len() < bytes.len() {
            text.push_str(&format!(
                "\n(cut: {} more bytes)\n",
                bytes.len() - taken.len()
            ));
        }
    };
    push(&output.stdout);
    push(&output.stderr);
    if !output.status.success() {
        text.push_str(&format!("({})\n", output.status));
    }
    text
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A file's text, or a line saying why it could not be read.
pub fn read_text(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_OUTPUT)]).into_owned(),
        Err(e) => format!("(not collected: {}: {e})\n", path.display()),
    }
}

/// The machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "node".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn captures_output_failures_and_missing_programs() {
        let ok = capture("sh", &["-c", "echo out; echo err >&2"]).await;
        assert_eq!(ok, "$ sh -c echo out; echo err >&2\nout\nerr\n");
        let failed = capture("sh", &["-c", "exit 3"]).await;
        assert!(failed.ends_with("(exit status: 3)\n"), "{failed}");
        let missing = capture("no-such-program-here", &["x"]).await;
        assert!(missing.contains("not installed"), "{missing}");
    }
}
