//! The engine: plan the difference between desired and actual state, apply it in
//! dependency order, and remember what was done. Each kind of resource (directory,
//! file, asset file, symlink, block, static pod, unit, service, kernel settings, swap,
//! packages) is one module under `kinds/` that owns its planning, its actions and
//! what it records; `plan` and `apply` put them in order and run them.

mod action;
pub mod applied;
pub mod apply;
pub mod baked;
pub mod keys;
pub mod kinds;
pub mod plan;
mod planner;
pub mod protect;
pub mod repair;
pub mod reset;
pub mod state;
pub mod timeline;
mod trigger;
pub mod verify;

pub use apply::{ApplyReport, Outcome, apply, apply_with};
pub use keys::{AppliedKey, AssetSource, RecordKind};
pub use plan::{Action, Plan, PlanError, Step, plan};
pub use state::{RunRecord, RunResult, State, StateError};
pub use timeline::{Timeline, TimelineEntry};
