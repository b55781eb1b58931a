//! The only code that touches the OS. Every path is under the root (`--root`, default
//! `/`), so the whole agent runs against a temp directory in tests.

pub mod diag;
pub mod disks;
pub mod fs;
pub mod hash;
pub mod kernel;
pub mod lock;
pub mod os;
pub mod packages;
pub mod process;
pub mod swap;
pub mod systemd;
pub mod tool;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::spec::{AbsPath, Principal};
use systemd::Systemd;

/// Whether actions on the running system (systemd, sysctl, modprobe) are performed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveMode {
    /// Root is `/` and systemd is running: act on the live system.
    Live,
    /// Act on files only; every live action is recorded as skipped with this reason.
    FilesOnly(String),
}

#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
    live: LiveMode,
    /// The running systemd when live; one that skips every job when files only.
    systemd: Arc<dyn Systemd>,
    /// The container manager when the live system is a container (e.g. `systemd-nspawn`,
    /// `docker`): its kernel is the host's, so modules and kernel-wide sysctls are not ours.
    container: Option<String>,
}

impl Host {
    /// A host rooted at `root`. Live actions happen only when the root is `/` and
    /// systemd is PID 1 (`/run/systemd/system` exists, as `sd_booted()` checks).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root: PathBuf = root.into();
        let live = if root != Path::new("/") {
            LiveMode::FilesOnly(format!("root is {}, not /", root.display()))
        } else if !Path::new("/run/systemd/system").exists() {
            LiveMode::FilesOnly("systemd is not running on this host".to_owned())
        } else {
            LiveMode::Live
        };
        let container = (live == LiveMode::Live)
            .then(|| std::fs::read_to_string("/run/systemd/container").ok())
            .flatten()
            .map(|kind| kind.trim().to_owned())
            .filter(|kind| !kind.is_empty());
        let systemd: Arc<dyn Systemd> = match &live {
            LiveMode::Live => Arc::new(systemd::Systemctl),
            LiveMode::FilesOnly(reason) => Arc::new(systemd::FilesOnly::new(reason.clone())),
        };
        Self {
            root,
            live,
            systemd,
            container,
        }
    }

    /// A live host on a temp root, in a container when `container` names its manager,
    /// for tests of what such a host plans. Its systemd acts on files only: nothing runs.
    #[cfg(test)]
    pub fn live_for_tests(root: impl Into<PathBuf>, container: Option<&str>) -> Self {
        Self {
            root: root.into(),
            live: LiveMode::Live,
            systemd: Arc::new(systemd::FilesOnly::new("a test host".to_owned())),
            container: container.map(str::to_owned),
        }
    }

    /// The same host with another systemd (tests put a fake one on a temp root).
    pub fn with_systemd(mut self, systemd: Arc<dyn Systemd>) -> Self {
        self.systemd = systemd;
        self
    }

    /// The units of this host: acted on when live, skipped (with the reason) when not.
    pub fn systemd(&self) -> &dyn Systemd {
        self.systemd.as_ref()
    }

    /// The container manager, when the live system runs in a container (systemd writes
    /// it to /run/systemd/container).
    pub fn container(&self) -> Option<&str> {
        self.container.as_deref()
    }

    /// Whether modules can be loaded and every sysctl written: a live host that is not
    /// a container.
    pub fn owns_kernel(&self) -> bool {
        self.skip_reason().is_none() && self.container.is_none()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn live(&self) -> &LiveMode {
        &self.live
    }

    /// Why live actions are skipped, or `None` when they run.
    pub fn skip_reason(&self) -> Option<&str> {
        match &self.live {
            LiveMode::Live => None,
            LiveMode::FilesOnly(reason) => Some(reason),
        }
    }

    /// Where a node path is on this machine.
    pub fn path(&self, path: &AbsPath) -> PathBuf {
        self.root.join(path.relative())
    }

    pub fn uid(&self, owner: &Principal) -> Result<u32, users::UnknownPrincipal> {
        users::resolve(&self.root.join("etc/passwd"), owner.as_str())
    }

    pub fn gid(&self, group: &Principal) -> Result<u32, users::UnknownPrincipal> {
        users::resolve(&self.root.join("etc/group"), group.as_str())
    }

    /// Where nodewright keeps its state and records.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("var/lib/nodewright")
    }
}
