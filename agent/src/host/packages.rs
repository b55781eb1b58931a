//! OS packages through apt or dnf.
//!
//! At boot the package database is often busy (unattended-upgrades, cloud-init, a
//! package timer): installs wait for the lock and retry rather than fail. apt waits
//! itself (`DPkg::Lock::Timeout`); errors that still mention the lock, and network
//! errors, are retried with backoff under a deadline. A package apt does not know is
//! looked up again after one `apt-get update`, then refused.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

use crate::error::{Classified, ErrorKind};
use crate::facts::PackageManager;
use crate::retry::{RetryPolicy, Verdict, retry};

/// How long an install may keep waiting and retrying.
pub const DEADLINE: Duration = Duration::from_secs(600);
/// How long apt itself waits for the dpkg lock in one attempt.
const APT_LOCK_TIMEOUT_SECS: u32 = 120;

/// The programs used; tests point them at stand-ins.
#[derive(Debug, Clone)]
pub struct Tools {
    pub apt_get: PathBuf,
    pub dpkg_query: PathBuf,
    pub dpkg: PathBuf,
    pub dnf: PathBuf,
    pub rpm: PathBuf,
}

impl Default for Tools {
    fn default() -> Self {
        Self {
            apt_get: "apt-get".into(),
            dpkg_query: "dpkg-query".into(),
            dpkg: "dpkg".into(),
            dnf: "dnf".into(),
            rpm: "rpm".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command}: {detail}")]
pub struct PackageError {
    pub command: String,
    pub detail: String,
    kind: FailureKind,
}

/// A package that cannot be installed fails the change.
impl Classified for PackageError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::ChangeFailed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// The lock is held, or the network failed: try again.
    Transient,
    /// dpkg was interrupted earlier; `dpkg --configure -a` repairs it.
    Interrupted,
    /// The package is not known to the package lists.
    Unknown,
    Other,
}

impl PackageError {
    fn verdict(&self) -> Verdict {
        match self.kind {
            FailureKind::Transient | FailureKind::Interrupted => Verdict::Retry,
            FailureKind::Unknown | FailureKind::Other => Verdict::Fail,
        }
    }
}

fn classify(stderr: &str) -> FailureKind {
    let text = stderr.to_lowercase();
    const TRANSIENT: &[&str] = &[
        "could not get lock",
        "unable to acquire the dpkg frontend lock",
        "unable to lock",
        "is another process using it",
        "waiting for process with pid",
        "temporary failure resolving",
        "failed to fetch",
        "connection timed out",
        "connection refused",
        "could not resolve host",
        "curl error",
        "cannot download",
        "failed to download metadata",
    ];
    if text.contains("dpkg was interrupted") {
        FailureKind::Interrupted
    } else if TRANSIENT.iter().any(|t| text.contains(t)) {
        FailureKind::Transient
    } else if text.contains("unable to locate package")
        || text.contains("has no installation candidate")
        || text.contains("no match for argument")
        || text.contains("unable to find a match")
    {
        FailureKind::Unknown
    } else {
        FailureKind::Other
    }
}

async fn run(program: &PathBuf, args: &[String], apt: bool) -> Result<String, PackageError> {
    let mut command = Command::new(program);
    command.args(args).stdin(std::process::Stdio::null());
    if apt {
        command
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("NEEDRESTART_MODE", "a");
    }
    let described = format!("{} {}", program.display(), args.join(" "));
    let output = command.output().await.map_err(|e| PackageError {
        command: described.clone(),
        detail: e.to_string(),
        kind: FailureKind::Other,
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last_lines: Vec<&str> = stderr.lines().rev().take(3).collect();
    Err(PackageError {
        command: described,
        detail: format!(
            "{}: {}",
            output.status,
            last_lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ),
        kind: classify(&stderr),
    })
}

/// Reads one line of the query's output: the name of an installed package, if it is one.
type InstalledLine = fn(&str) -> Option<&str>;

/// Which of `names` are not installed. Reads only.
pub async fn missing(
    tools: &Tools,
    manager: PackageManager,
    names: &[String],
) -> Result<Vec<String>, String> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let (program, args, installed_line): (&PathBuf, Vec<String>, InstalledLine) = match manager {
        PackageManager::Apt => (
            &tools.dpkg_query,
            [
                "-W".to_owned(),
                "-f=${Package} ${db:Status-Abbrev}\\n".to_owned(),
                "--".to_owned(),
            ]
            .into_iter()
            .chain(names.iter().cloned())
            .collect(),
            |line| {
                let (name, status) = line.split_once(' ')?;
                status.starts_with("ii").then_some(name)
            },
        ),
        PackageManager::Dnf => (
            &tools.rpm,
            ["-q".to_owned(), "--qf".to_owned(), "%{NAME}\\n".to_owned()]
                .into_iter()
                .chain(names.iter().cloned())
                .collect(),
            |line| (!line.contains(' ')).then_some(line),
        ),
    };
    // Both tools exit non-zero when some package is missing; their output still lists
    // the installed ones.
    let output = Command::new(program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("{}: {e}", program.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| installed_line(l.trim()))
        .collect();
    Ok(names
        .iter()
        .filter(|n| !installed.contains(&n.as_str()))
        .cloned()
        .collect())
}

/// Installs `names`, waiting for the package lock and retrying transient failures.
pub async fn install(
    tools: &Tools,
    manager: PackageManager,
    names: &[String],
    policy: RetryPolicy,
) -> Result<(), String> {
    retry(
        "installing OS packages",
        policy,
        PackageError::verdict,
        || async {
            match manager {
                PackageManager::Apt => apt_install(tools, names).await,
                PackageManager::Dnf => dnf_install(tools, names).await,
            }
        },
    )
    .await
    .map_err(|e| e.to_string())
}

async fn apt_install(tools: &Tools, names: &[String]) -> Result<(), PackageError> {
    let lock = format!("DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_SECS}");
    let install_args: Vec<String> = [
        "-o",
        &lock,
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "--",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain(names.iter().cloned())
    .collect();
    match run(&tools.apt_get, &install_args, true).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind == FailureKind::Interrupted => {
            let configure = ["--configure".to_owned(), "-a".to_owned()];
            run(&tools.dpkg, &configure, true).await?;
            Err(e)
        }
        // Fresh images often ship without package lists: fetch them, then try again
        // once (a package still unknown after that is a spec error, not retried).
        Err(e) if e.kind == FailureKind::Unknown => {
            let update = [
                "-o".to_owned(),
                lock.clone(),
                "update".to_owned(),
                "-q".to_owned(),
            ];
            run(&tools.apt_get, &update, true).await?;
            run(&tools.apt_get, &install_args, true).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

async fn dnf_install(tools: &Tools, names: &[String]) -> Result<(), PackageError> {
    let args: Vec<String> = [
        "install",
        "-y",
        "-q",
        "--setopt=install_weak_deps=False",
        "--",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain(names.iter().cloned())
    .collect();
    run(&tools.dnf, &args, false).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified() {
        assert_eq!(
            classify(
                "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1234 (unattended-upgr)"
            ),
            FailureKind::Transient
        );
        assert_eq!(
            classify("E: Unable to locate package conntrakc"),
            FailureKind::Unknown
        );
        assert_eq!(
            classify(
                "E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem."
            ),
            FailureKind::Interrupted
        );
        assert_eq!(
            classify("Error: Unable to find a match: conntrakc"),
            FailureKind::Unknown
        );
        assert_eq!(
            classify("E: Sub-process /usr/bin/dpkg returned an error code (1)"),
            FailureKind::Other
        );
    }
}
