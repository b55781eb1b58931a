//! `render` is pure and deterministic: the three example Cluster files render to exactly
//! the files under `cluster/tests/golden/<case>/` (`UPDATE_GOLDEN=1` rewrites them after
//! a deliberate change; review the diff).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use support::{CASES, golden_dir, render_case};

fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn renders_match_the_goldens() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in CASES {
        let rendered = render_case(case);
        // Deterministic: a second render is byte for byte the same.
        assert_eq!(
            rendered,
            render_case(case),
            "{case} renders differently twice"
        );
        let dir = golden_dir(case);
        if update {
            let _ = std::fs::remove_dir_all(&dir);
            for (path, bytes) in &rendered.files {
                let path = dir.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            continue;
        }
        let golden = read_tree(&dir);
        let names: Vec<&String> = rendered.files.keys().collect();
        assert_eq!(
            golden.keys().collect::<Vec<_>>(),
            names,
            "{case}: the files rendered differ from the golden's"
        );
        for (path, bytes) in &rendered.files {
            if golden.get(path) != Some(bytes) {
                failures.push(format!("{case}/{path}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "these renders differ from their goldens (UPDATE_GOLDEN=1 to accept, then review the diff):\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_ha_example_is_about_forty_lines() {
    let text = std::fs::read_to_string(support::cluster_file("ha")).unwrap();
    let lines = text.lines().count();
    assert!(lines <= 42, "examples/cluster/ha.yaml has {lines} lines");
    let cluster = support::parse("ha");
    assert_eq!(cluster.control_plane.count, 3);
    assert_eq!(cluster.zones.len(), 3);
    assert_eq!(cluster.node_groups.len(), 1);
}

#[test]
fn the_boot_configs_pin_their_specs_by_digest() {
    for case in CASES {
        let rendered = render_case(case);
        for spec in &rendered.plan.specs {
            let bytes = &rendered.files[&spec.file];
            assert_eq!(nodewright::spec::digest(bytes), spec.sha256);
            assert!(
                spec.url.ends_with(&format!(
                    "/nodegroups/{}/nodespec/{}.yaml",
                    spec.group, spec.sha256
                )),
                "{}",
                spec.url
            );
            let boot = &rendered.files[&format!("nodegroups/{}/bootconfig.yaml", spec.group)];
            let text = String::from_utf8(boot.clone()).unwrap();
            let config = nodewright::spec::BootConfig::parse("boot config", &text)
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(config.node_spec.sha256.as_str(), spec.sha256);
            assert_eq!(config.node_group.as_str(), spec.group);
            // Nodes that read the store read exactly the content-addressed key.
            if let Some(url) = &config.node_spec.url {
                assert_eq!(url, &spec.url);
            }
        }
    }
}

#[test]
fn adding_a_worker_group_leaves_the_control_plane_spec_alone() {
    use nodewright_cluster::{Catalogue, Cluster};
    let text = std::fs::read_to_string(support::cluster_file("ha")).unwrap();
    let more =
        format!("{text}  - name: gpu\n    instanceType: g6.xlarge\n    min: 0\n    max: 4\n");
    let catalogue = Catalogue::embedded();
    let before = render_case("ha");
    let cluster = Cluster::parse("ha+gpu", &more, &catalogue).unwrap();
    let version = catalogue.find(&cluster.kubernetes_version).unwrap();
    let after =
        nodewright_cluster::render::render(&cluster, version, Some(&support::ca_pem())).unwrap();
    let digest = |r: &nodewright_cluster::render::Rendered, group: &str| {
        r.plan
            .specs
            .iter()
            .find(|s| s.group == group)
            .map(|s| s.sha256.clone())
    };
    assert_eq!(
        digest(&before, "control-plane"),
        digest(&after, "control-plane")
    );
    assert_eq!(digest(&before, "nodes"), digest(&after, "nodes"));
    assert!(digest(&after, "gpu").is_some());
    assert_ne!(
        before.files["controller-shim/node-groups.yaml"],
        after.files["controller-shim/node-groups.yaml"]
    );
}
