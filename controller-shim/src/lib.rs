//! controller-shim: the cluster serves the bootstrap of its own nodes.
//!
//! The library is shared by both sides of the protocol:
//! - [`protocol`]: the versioned request and answer types;
//! - [`identity`]: the worker's proof of identity (a signed STS `GetCallerIdentity`
//!   bound to the request body) and its checks on the server;
//! - [`client`]: what the agent on a worker calls;
//! - [`pki`]: keys, CSRs and issuance from a CA (also used by control-plane nodes);
//! - [`config`]: the shim's configuration file, which the control-plane model renders;
//! - [`groups`]: node-group definitions (inline, or a document in the state store);
//! - [`manifest`]: the shim as a static pod, for the control-plane model;
//! - [`support`]: the error chain on one line and the backoff both crates use;
//! - `server` (feature `server`): the HTTPS service itself.

pub mod client;
pub mod config;
pub mod groups;
pub mod identity;
pub mod manifest;
pub mod pki;
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
pub mod support;
