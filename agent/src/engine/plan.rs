//! Plan: compare the desired state with what is on the host, and list the changes
//! with a reason each, in an order where every step comes after the steps it needs.
//! Each kind of resource plans its own steps (`kinds/`); this file puts them in order.
//!
//! Planning only reads: files, the state record, and (on a live host) systemd, sysctl
//! and module status. It never writes, downloads or starts anything.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::kinds::{
    asset_file, block, directory, file, kernel, packages, removal, service, static_pod, swap,
    symlink, units,
};
use super::planner::Planner;
use super::state::{FileRecord, State};
use crate::host::{Host, systemd};
use crate::model::DesiredState;
use crate::spec::AbsPath;

pub use super::action::Action;
pub use super::kinds::permissions::Perms;
pub use super::kinds::static_pod::StaticPodWrite;
pub use super::trigger::Trigger;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub action: Action,
    pub reason: String,
    /// Indexes of earlier steps that must succeed first.
    pub after: Vec<usize>,
}

impl Step {
    pub fn describe(&self) -> String {
        format!(
            "{} {}: {}",
            self.action.verb(),
            self.action.target(),
            self.reason
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Digests of the desired files that the plan found already in place, with the stat
    /// they have; recorded after apply so the next run need not hash them again.
    #[serde(skip)]
    pub unchanged: BTreeMap<String, FileRecord>,
    /// The directories the spec declares (not implicit parents), with their owner and
    /// mode: recorded as managed once they exist.
    #[serde(skip)]
    pub directories: Vec<(AbsPath, Perms)>,
    /// Paths the model declares protected (etcd data), with why: recorded in the state.
    #[serde(skip)]
    pub protected: BTreeMap<String, String>,
    /// Records to drop after apply: blocks of files that are gone, and paths no longer
    /// in the spec that are gone already (an earlier run removed them but was killed
    /// before it could record that).
    #[serde(skip)]
    pub forget: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn render(&self) -> String {
        if self.steps.is_empty() {
            return "No changes: the node is converged.\n".to_owned();
        }
        let mut out = format!("{} changes:\n", self.steps.len());
        for step in &self.steps {
            out.push_str(&format!("  - {}\n", step.describe()));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{path}: {detail}")]
    Path { path: String, detail: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("asking systemd: {0}")]
    Systemd(#[from] systemd::SystemctlError),
    #[error("asking the package manager: {0}")]
    Packages(String),
}

/// Computes the plan. Reads only.
pub async fn plan(desired: &DesiredState, host: &Host, state: &State) -> Result<Plan, PlanError> {
    let mut planner = Planner::new(desired, host, state);
    // Paths first, parents before what they hold; files before the static pod
    // manifests that carry their digests.
    directory::plan(&mut planner)?;
    file::plan(&mut planner)?;
    asset_file::plan(&mut planner)?;
    symlink::plan(&mut planner)?;
    static_pod::plan(&mut planner)?;
    block::plan(&mut planner)?;
    removal::plan(&mut planner)?;
    // Then the running system: systemd loads the units, the host gets what the
    // services need, and the services start.
    let reload = units::plan(&mut planner);
    let packages = packages::plan(&mut planner).await?;
    let modules = kernel::plan_modules(&mut planner);
    let sysctls = kernel::plan_sysctls(&mut planner, modules);
    let swap = swap::plan(&mut planner);
    let host_steps: Vec<usize> = [packages, modules, sysctls, swap]
        .into_iter()
        .flatten()
        .collect();
    service::plan(&mut planner, reload, &host_steps).await?;
    Ok(Plan {
        steps: planner.steps,
        unchanged: planner.unchanged,
        directories: planner.directories,
        forget: planner.forget,
        protected: desired
            .protected
            .iter()
            .map(|p| (p.path.to_string(), p.reason.clone()))
            .collect(),
    })
}
