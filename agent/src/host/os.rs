//! Facts about the host's OS.

use std::path::Path;

use crate::facts::HostFacts;

pub fn host_facts(root: &Path) -> HostFacts {
    let release = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(root.join(p)).ok())
        .unwrap_or_default();
    let field = |name: &str| {
        release
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    HostFacts {
        arch: kubernetes_arch(std::env::consts::ARCH).to_owned(),
        distro: field("ID"),
        distro_version: field("VERSION_ID"),
    }
}

/// Kubernetes names architectures as Go does.
pub fn kubernetes_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
