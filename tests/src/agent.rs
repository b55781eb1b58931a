//! Runs the real `nodewright` binary against a temp root, with IMDS and AWS pointed at
//! the harness's stand-ins and nothing inherited from the machine's AWS settings.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use crate::tools::workspace_bin;

pub struct Agent {
    /// The binary run: the test build's, or another (a benchmark's `dist` build).
    binary: PathBuf,
    root: TempDir,
    home: TempDir,
    env: Vec<(String, String)>,
    /// The root as the harness made it (the image's files), before any run.
    baseline: crate::tree::Snapshot,
}

/// The os-release of the image the harness's roots stand for (Debian 12): the agent
/// reads the distribution from it, e.g. to pick apt for OS packages.
pub const OS_RELEASE: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"
NAME=\"Debian GNU/Linux\"
VERSION_ID=\"12\"
VERSION=\"12 (bookworm)\"
VERSION_CODENAME=bookworm
ID=debian
";

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A run's standard output as JSON (`--json`); panics with the output otherwise.
pub fn json_of(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", run.stdout, run.stderr))
}

/// The units a plan's (or repair's) JSON steps start or restart.
pub fn restarted(steps: &serde_json::Value) -> Vec<String> {
    steps
        .as_array()
        .expect("steps are an array")
        .iter()
        .filter(|s| s["action"] == "restart-unit" || s["action"] == "start-unit")
        .map(|s| {
            s["unit"]
                .as_str()
                .expect("a step on a unit names it")
                .to_owned()
        })
        .collect()
}

impl Run {
    pub fn from_output(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics with the output unless the run exited with `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Writes what a machine image has before nodewright runs and the agent reads.
pub fn seed_image_files(root: &Path) {
    std::fs::create_dir_all(root.join("etc")).expect("the root's /etc");
    std::fs::write(root.join("etc/os-release"), OS_RELEASE).expect("os-release");
}

impl Agent {
    /// An agent whose IMDS is at `imds_url` and whose AWS endpoint is `aws_url`.
    pub fn new(imds_url: &str, aws_url: &str) -> Self {
        let root = tempfile::Builder::new()
            .prefix("nodewright-root-")
            .tempdir()
            .expect("a temp root");
        let home = tempfile::tempdir().expect("a temp home");
        seed_image_files(root.path());
        let baseline = crate::tree::snapshot(root.path());
        let env = vec![
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT".to_owned(),
                imds_url.to_owned(),
            ),
            ("AWS_ENDPOINT_URL".to_owned(), aws_url.to_owned()),
            ("NODEWRIGHT_LOG".to_owned(), "info".to_owned()),
        ];
        Self {
            binary: workspace_bin("nodewright"),
            root,
            home,
            env,
            baseline,
        }
    }

    /// Runs `binary` instead of the test build's agent.
    pub fn set_binary(&mut self, binary: &Path) {
        self.binary = binary.to_owned();
    }

    /// Whether the root is still as the harness made it: nothing written, nothing moved.
    pub fn untouched(&self) -> bool {
        crate::tree::snapshot(self.root.path()) == self.baseline
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// The command, ready to run: a clean environment plus the harness's settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// The command run under a wrapper (e.g. `strace ... --`), with the same
    /// environment: `wrapper[0]` is the program, the agent binary follows the rest.
    pub fn command_under(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let mut command = Command::new(wrapper[0]);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(&wrapper[1..])
            .arg(&self.binary)
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .stdin(Stdio::null());
        command
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from_output(
            self.command(args)
                .output()
                .unwrap_or_else(|e| panic!("running nodewright {args:?}: {e}")),
        )
    }

    /// A path under the root.
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.root.path().join(node_path.trim_start_matches('/'))
    }

    /// The recorded state, as JSON.
    pub fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path("/var/lib/nodewright/state.json"))
            .expect("a state file");
        serde_json::from_str(&text).expect("state is JSON")
    }
}
