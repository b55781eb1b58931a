//! A node on a temp root for the kinds' unit tests: declare what is wanted, plan,
//! apply, and look at the files and the state.

use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::{self, ApplyReport, Plan, State};
use crate::host::Host;
use crate::host::systemd::fake::FakeSystemd;
use crate::model::{DesiredState, StateBuilder};
use crate::spec::AbsPath;

pub(crate) struct Node {
    dir: tempfile::TempDir,
    pub host: Host,
    pub state: State,
    pub desired: DesiredState,
}

/// A node path.
pub(crate) fn at(path: &str) -> AbsPath {
    AbsPath::try_from(path).expect("a valid path")
}

impl Node {
    /// A files-only node: no systemd to act on.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp root");
        let host = Host::new(dir.path());
        Self {
            dir,
            host,
            state: State::default(),
            desired: DesiredState::default(),
        }
    }

    /// A live node on the temp root, in a container run by `manager` (e.g.
    /// `systemd-nspawn`), or on its own kernel with `None`. Plan only: applying would
    /// act on this machine.
    pub fn live(manager: Option<&str>) -> Self {
        let mut node = Self::new();
        node.host = Host::live_for_tests(node.dir.path(), manager);
        node
    }

    /// A node whose systemd is `systemd` (files and the kernel stay files only).
    pub fn with_systemd(systemd: Arc<FakeSystemd>) -> Self {
        let mut node = Self::new();
        node.host = node.host.clone().with_systemd(systemd);
        node
    }

    /// Replaces what is wanted with what `build` declares.
    pub fn want(&mut self, build: impl FnOnce(&mut StateBuilder)) {
        let mut builder = StateBuilder::default();
        build(&mut builder);
        self.desired = builder.finish().expect("a consistent desired state");
    }

    /// The temp root.
    pub fn root(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Where a node path is on the temp root.
    pub fn real(&self, path: &str) -> PathBuf {
        self.dir.path().join(path.trim_start_matches('/'))
    }

    /// Puts a file on the root (with its parents), as something other than nodewright.
    pub fn put(&self, path: &str, bytes: impl AsRef<[u8]>) {
        let real = self.real(path);
        std::fs::create_dir_all(real.parent().expect("a parent")).expect("parents");
        std::fs::write(real, bytes).expect("writing a test file");
    }

    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.real(path)).expect("reading a test file")
    }

    pub async fn plan(&self) -> Plan {
        engine::plan(&self.desired, &self.host, &self.state)
            .await
            .expect("a plan")
    }

    pub async fn apply(&mut self, plan: &Plan) -> ApplyReport {
        engine::apply(plan, &self.host, &mut self.state).await
    }

    /// Plans and applies; every step must succeed.
    pub async fn converge(&mut self) -> Plan {
        let plan = self.plan().await;
        let report = self.apply(&plan).await;
        assert!(report.failures().is_empty(), "{:?}", report.failures());
        plan
    }

    /// The plan's lines (`verb target: reason`).
    pub async fn planned(&self) -> Vec<String> {
        self.plan()
            .await
            .steps
            .iter()
            .map(|s| s.describe())
            .collect()
    }
}

/// The outcome of each step of a report, as `description: outcome`.
pub(crate) fn outcomes(report: &ApplyReport) -> Vec<String> {
    report
        .steps
        .iter()
        .map(|s| format!("{}: {}", s.description, s.outcome.describe()))
        .collect()
}
