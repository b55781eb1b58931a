//! The end-to-end harness: real components wherever they run here (the AWS emulator,
//! the agent's own binary, systemd's checkers), and fakes only for what cannot (IMDS).
//!
//! - [`moto::Moto`]: `moto_server` on a free loopback port, one per test process.
//! - [`front::AwsFront`]: a proxy in front of moto that adds what it lacks (faults,
//!   throttling, EC2 behaviour) for the tests that need it.
//! - [`imds::FakeImds`]: IMDSv2 as EC2 serves it, with switchable faults.
//! - [`agent::Agent`]: runs the `nodewright` binary against a temp root.
//! - [`shim::ShimWorld`]: the real `controller-shim` binary with the cluster CA, against
//!   moto with SigV4 checks on, and EC2 instances with instance-role sessions.

pub mod agent;
pub mod front;
pub mod imds;
pub mod moto;
pub mod proxy;
pub mod runtime;
pub mod shim;
pub mod tools;
pub mod tree;
pub mod world;

/// The workspace root (for examples and fixtures).
pub fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_owned()
}

/// Reads a file under `examples/`.
pub fn example(path: &str) -> Vec<u8> {
    let full = workspace().join("examples").join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}
