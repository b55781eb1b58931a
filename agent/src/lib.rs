//! nodewright: the node-side bootstrap agent for Kubernetes on AWS.
//!
//! Modules import only downward (docs/architecture.md draws the layers; a test,
//! `agent/tests/layers.rs`, keeps them): the command line, then the flows ([`boot`],
//! [`prebake`], [`watch`], [`ops`]), the control plane, the engine, assets and
//! sources, the host and the cloud, then the model, facts and spec, and small shared
//! utilities at the bottom. `model` is pure; `host` alone touches the OS.

pub mod assets;
pub mod boot;
pub mod cli;
pub mod clock;
pub mod cloud;
pub mod controlplane;
pub mod engine;
pub mod error;
pub mod facts;
pub mod host;
pub mod kops;
pub mod logging;
pub mod model;
pub mod ops;
pub mod prebake;
pub mod progress;
pub mod report;
pub mod retry;
pub mod runbook;
pub mod source;
pub mod spec;
pub mod watch;

/// The agent's version, recorded with every run.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
