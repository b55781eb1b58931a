//! The specs the golden and checker tests render, and the facts they render them with.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses part of this

pub mod checkers;

use std::path::{Path, PathBuf};

use nodewright::model::{DesiredState, EtcdMember, Facts, desired_state};
use nodewright::spec::NodeSpec;

pub struct Case {
    pub name: &'static str,
    /// Relative to the workspace.
    pub spec: &'static str,
    pub facts: fn() -> Facts,
}

/// The example specs, and test cases for what the examples do not show.
pub const CASES: &[Case] = &[
    Case {
        name: "example-worker",
        spec: "examples/worker/nodespec.yaml",
        facts: Facts::example,
    },
    Case {
        name: "example-shim-worker",
        spec: "examples/controller-shim/worker-nodespec.yaml",
        facts: Facts::example,
    },
    Case {
        name: "example-control-plane",
        spec: "examples/control-plane/nodespec.yaml",
        facts: control_plane_facts,
    },
    Case {
        name: "control-plane-etcd-systemd",
        spec: "agent/tests/cases/control-plane-etcd-systemd.yaml",
        facts: control_plane_facts,
    },
    Case {
        name: "worker-assets-dual-stack",
        spec: "agent/tests/cases/worker-assets-dual-stack.yaml",
        facts: dual_stack_facts,
    },
    Case {
        name: "worker-containerd-2.3",
        spec: "agent/tests/cases/worker-containerd-2.3.yaml",
        facts: amazon_linux_facts,
    },
];

/// A control-plane node holding member `a` of etcd clusters main and events.
pub fn control_plane_facts() -> Facts {
    let mut facts = Facts::example();
    for (cluster, volume) in [
        ("main", "vol-0aaaa1111bbbb2222"),
        ("events", "vol-0cccc3333dddd4444"),
    ] {
        let members: Vec<String> = ["a", "b", "c"].map(str::to_owned).to_vec();
        let peer_names = members
            .iter()
            .map(|m| {
                let name =
                    nodewright::spec::etcd_peer_name(cluster, m, "internal.prod.example.com");
                (m.clone(), name)
            })
            .collect();
        facts.control_plane.etcd_members.insert(
            cluster.to_owned(),
            EtcdMember {
                member: "a".to_owned(),
                members,
                peer_names,
                volume_id: volume.to_owned(),
                device: format!(
                    "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{}",
                    volume.replace('-', "")
                ),
                mount_path: format!("/mnt/etcd-{cluster}-a")
                    .as_str()
                    .try_into()
                    .unwrap(),
                filesystem: "ext4".to_owned(),
                planned: false,
            },
        );
    }
    facts
}

pub fn dual_stack_facts() -> Facts {
    let mut facts = Facts::example();
    facts.instance.ipv6 = Some("2600:1f18:1234:5600::1a".parse().unwrap());
    facts
}

pub fn amazon_linux_facts() -> Facts {
    let mut facts = Facts::example();
    facts.host.distro = "amzn".to_owned();
    facts.host.distro_version = "2023".to_owned();
    facts.host.arch = "arm64".to_owned();
    facts.instance.instance_type = "m7g.large".to_owned();
    facts
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub fn golden_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case)
}

pub fn parse(spec: &str) -> NodeSpec {
    let path = workspace().join(spec);
    let text = std::fs::read_to_string(&path).unwrap();
    NodeSpec::parse(spec, &text).unwrap_or_else(|e| panic!("{e}"))
}

pub fn render_case(case: &Case) -> DesiredState {
    desired_state(&parse(case.spec), &(case.facts)())
        .unwrap_or_else(|e| panic!("{}: {e}", case.name))
}
