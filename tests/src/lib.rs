//! The end-to-end harness: real components wherever they run here (the AWS emulator,
//! the agent's own binary, systemd's checkers), and fakes only for what cannot (IMDS).
//!
//! - [`moto::Moto`]: `moto_server` on a free loopback port, one per test process.
//! - [`front::AwsFront`]: a proxy in front of moto that adds what it lacks (faults,
//!   throttling, EC2 behaviour) for the tests that need it.
//! - [`imds::FakeImds`]: IMDSv2 as EC2 serves it, with switchable faults.
//! - [`agent::Agent`]: runs the `nodewright` binary against a temp root (optionally
//!   under a wrapper such as `strace`, for the crash tests).
//! - [`specs`]: the examples extended with more files and services, with boot configs
//!   whose digest matches.
//! - [`mirror::Mirror`]: an asset mirror with per-URL faults (5xx, stalls, cuts, wrong
//!   bytes, redirects, no Range, slow); [`assetkit`] makes asset bytes and archives.
//! - Booted nodes: [`image::Image`] (the "AMI": debootstrap + packer/provision.sh, as
//!   cached overlay layers), [`fleet::Fleet`] (emulator + private [`network::Network`]),
//!   [`node::Node`] (one instance booted with systemd-nspawn, its own IMDS).
//! - [`shim::ShimWorld`]: the real `controller-shim` binary with the cluster CA, against
//!   moto with SigV4 checks on, and EC2 instances with instance-role sessions.

pub mod agent;
pub mod assetkit;
pub mod checks;
pub mod cluster;
pub mod disks;
pub mod etcd;
pub mod fidelity;
pub mod fleet;
pub mod front;
pub mod ha;
pub mod ha_backup;
pub mod image;
pub mod imds;
pub mod janitor;
pub mod kit;
pub mod kops_controller;
pub mod mirror;
pub mod moto;
pub mod netns;
pub mod network;
pub mod node;
pub mod overlay;
pub mod pki;
pub mod proxy;
pub mod runtime;
pub mod shim;
pub mod specs;
pub mod stats;
pub mod timeline;
pub mod tools;
pub mod tree;
pub mod vpc_dns;
pub mod worker;
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
