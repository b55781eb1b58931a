//! The engine: plan the difference between desired and actual state, apply it in
//! dependency order, and remember what was done.

pub mod applied;
pub mod apply;
pub mod blocks;
pub mod plan;
pub mod protect;
pub mod repair;
pub mod reset;
pub mod state;
pub mod timeline;
pub mod verify;

pub use apply::{ApplyReport, Outcome, apply, apply_with};
pub use plan::{Action, Plan, PlanError, Step, plan};
pub use state::{RunRecord, RunResult, State, StateError};
pub use timeline::{Timeline, TimelineEntry};
