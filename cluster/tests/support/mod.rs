//! The Cluster files the tests render (the examples), and how to render them.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses part of this

pub mod kit_args;

use std::path::{Path, PathBuf};

use nodewright_cluster::render::{Rendered, render};
use nodewright_cluster::{Catalogue, Cluster};

/// The three cases: a single node; three zones with one worker group; IPv6 with two.
pub const CASES: &[&str] = &["single-node", "ha", "ipv6"];

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub fn cluster_file(case: &str) -> PathBuf {
    workspace().join(format!("examples/cluster/{case}.yaml"))
}

/// The CA certificate the goldens are rendered with (the worker example's).
pub fn ca_pem() -> String {
    std::fs::read_to_string(workspace().join("cluster/tests/fixtures/ca.crt")).unwrap()
}

pub fn parse(case: &str) -> Cluster {
    let text = std::fs::read_to_string(cluster_file(case)).unwrap();
    Cluster::parse(case, &text, &Catalogue::embedded()).unwrap_or_else(|e| panic!("{e}"))
}

pub fn render_case(case: &str) -> Rendered {
    let cluster = parse(case);
    let catalogue = Catalogue::embedded();
    let version = catalogue.find(&cluster.kubernetes_version).unwrap();
    render(&cluster, version, Some(&ca_pem())).unwrap_or_else(|e| panic!("{case}: {e}"))
}

pub fn golden_dir(case: &str) -> PathBuf {
    workspace().join("cluster/tests/golden").join(case)
}

/// `.tools/venv/bin/<name>` (scripts/setup.sh installs it).
pub fn venv_bin(name: &str) -> PathBuf {
    let tools = std::env::var_os("NODEWRIGHT_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".tools"));
    let path = tools.join("venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh (it installs the test tools)",
        path.display()
    );
    path
}
