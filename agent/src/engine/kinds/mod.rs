//! One module per kind of resource the engine manages. Each owns its planning (what it
//! decides, and why), its actions (what apply does) and what it records in the state.

pub mod asset_file;
pub mod block;
pub mod directory;
pub mod file;
pub mod kernel;
pub mod packages;
pub mod permissions;
pub mod removal;
pub mod service;
pub mod static_pod;
pub mod swap;
pub mod symlink;
pub mod units;

#[cfg(test)]
pub(crate) mod testing;
