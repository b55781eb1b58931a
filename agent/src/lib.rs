//! nodewright: the node-side bootstrap agent for Kubernetes on AWS.
//!
//! Data flows one way: `source -> spec -> model -> engine -> host`, with `cloud` called
//! from a few named steps of [`bootstrap`]. `model` is pure; `host` alone touches the OS.

pub mod assets;
pub mod bootstrap;
pub mod cli;
pub mod cloud;
pub mod controlplane;
pub mod engine;
pub mod host;
pub mod kops;
pub mod logging;
pub mod model;
pub mod ops;
pub mod prebake;
pub mod progress;
pub mod retry;
pub mod runbook;
pub mod source;
pub mod spec;
pub mod watch;

/// The agent's version, recorded with every run.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
