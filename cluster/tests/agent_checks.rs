//! Every NodeSpec the kit renders is accepted by the agent's own parser and checks, and
//! what the agent then renders from it passes the real tools the model tests use
//! (agent/tests/common/checkers.rs): systemd-analyze for units, kubernetes-validate
//! --strict for static pods, kubectl for kubeconfigs, controller-shim's own config
//! parser for its config.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

// The agent's checkers, shared rather than copied (they need `workspace()` beside them).
#[path = "../../agent/tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use common::checkers::{
    add_stock_units, is_root, kubectl_view, kubernetes_validate, systemd_verify, units_to_verify,
    write_stand_in_certificates, write_tree,
};
use nodewright::model::{controller_shim, desired_state, kube_proxy, kubelet};
use nodewright::spec::{NodeSpec, Role};
use support::{CASES, render_case};

/// Facts of an instance of the group, in the cluster's first zone.
fn facts(spec: &NodeSpec, zone: &str, region: &str) -> nodewright::model::Facts {
    let mut facts = if spec.role == Role::ControlPlane {
        common::control_plane_facts()
    } else {
        nodewright::model::Facts::example()
    };
    // The facts hold a member of each etcd cluster the spec runs, and no other.
    let clusters: Vec<String> = spec
        .control_plane
        .as_ref()
        .and_then(|c| c.etcd_volumes.as_ref())
        .map(|v| v.clusters.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    facts
        .control_plane
        .etcd_members
        .retain(|cluster, _| clusters.contains(cluster));
    facts.instance.region = region.to_owned();
    facts.instance.availability_zone = zone.to_owned();
    if spec
        .kubelet
        .as_ref()
        .is_some_and(|k| k.node_ip == nodewright::spec::NodeIpFamily::Ipv6)
    {
        facts.instance.ipv6 = Some("2600:1f14:abc:de01::1a".parse().unwrap());
    }
    if let Some(arch) = spec
        .assets
        .iter()
        .find(|a| a.name.as_str() == "kubelet")
        .and_then(|a| a.urls.first())
        .filter(|u| u.as_str().contains("arm64"))
    {
        let _ = arch;
        facts.host.arch = "arm64".to_owned();
    }
    facts
}

#[test]
fn every_rendered_spec_passes_the_agent_and_the_real_checkers() {
    let mut checked_units = 0;
    let mut checked_manifests = 0;
    let mut checked_kubeconfigs = 0;
    let mut checked_shim = 0;
    for case in CASES {
        let cluster = support::parse(case);
        let rendered = render_case(case);
        for published in &rendered.plan.specs {
            let at = format!("{case}/{}", published.group);
            let text = String::from_utf8(rendered.files[&published.file].clone()).unwrap();
            let spec = NodeSpec::parse(&at, &text).unwrap_or_else(|e| panic!("{e}"));
            let desired = desired_state(&spec, &facts(&spec, &cluster.zones[0], &cluster.region))
                .unwrap_or_else(|e| panic!("{at}: {e}"));

            // Units and drop-ins.
            let root = tempfile::tempdir().unwrap();
            add_stock_units(root.path());
            write_tree(root.path(), &desired);
            let units = units_to_verify(&desired);
            assert!(
                units.iter().any(|u| u == "kubelet.service"),
                "{at}: {units:?}"
            );
            systemd_verify(root.path(), &units).unwrap_or_else(|e| panic!("{at}: {e}"));
            checked_units += 1;

            // Static pods.
            let version = spec.cluster.kubernetes_version.to_string();
            let manifests = tempfile::tempdir().unwrap();
            for file in desired.files.iter().filter(|f| {
                f.path
                    .starts_with(&nodewright::model::fixed_path(kubelet::MANIFESTS))
            }) {
                let path = manifests
                    .path()
                    .join(file.path.as_path().file_name().unwrap());
                std::fs::write(&path, file.content.bytes()).unwrap();
                kubernetes_validate(&path, &version)
                    .unwrap_or_else(|e| panic!("{at}: {}: {e}", file.path));
                checked_manifests += 1;
            }

            // Kubeconfigs, with stand-in client certificates (the node gets its own).
            if is_root() {
                write_stand_in_certificates(root.path(), &desired);
                let mut kubeconfigs = vec![kubelet::KUBECONFIG];
                if desired.file(kube_proxy::KUBECONFIG).is_some() {
                    kubeconfigs.push(kube_proxy::KUBECONFIG);
                }
                for kubeconfig in kubeconfigs {
                    let flat = kubectl_view(root.path(), kubeconfig)
                        .unwrap_or_else(|e| panic!("{at}: {kubeconfig}: {e}"));
                    assert!(flat.contains("certificate-authority-data:"), "{flat}");
                    checked_kubeconfigs += 1;
                }
            }

            // controller-shim's config, read by the shim's own parser.
            if let Some(file) = desired.file(controller_shim::CONFIG) {
                let text = String::from_utf8_lossy(file.content.bytes());
                nodewright_shim::config::ShimConfig::parse(controller_shim::CONFIG, &text)
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                checked_shim += 1;
            }
        }
    }
    // single-node: 1 spec; ha: 2; ipv6: 3.
    assert_eq!(checked_units, 6);
    // Static pods: single-node 5 (kube-proxy, apiserver, controller-manager,
    // scheduler, etcd main); ha 7 on the control plane (also etcd events and
    // controller-shim) + kube-proxy on the workers; ipv6 6 (no kube-proxy anywhere).
    assert_eq!(checked_manifests, 5 + 8 + 6);
    if is_root() {
        assert!(checked_kubeconfigs >= 6, "{checked_kubeconfigs}");
    }
    assert_eq!(
        checked_shim, 2,
        "the ha and ipv6 control planes run controller-shim"
    );
}

#[test]
fn a_spec_the_agent_refuses_is_never_rendered() {
    use nodewright_cluster::{Catalogue, Cluster};
    // A label the kubelet may not set: the agent's check, reported on the Cluster
    // file's field.
    let text = std::fs::read_to_string(support::cluster_file("ha"))
        .unwrap()
        .replace(
            "      team: platform",
            "      node-role.kubernetes.io/worker: \"\"",
        );
    let catalogue = Catalogue::embedded();
    let cluster = Cluster::parse("ha", &text, &catalogue).unwrap();
    let version = catalogue.find(&cluster.kubernetes_version).unwrap();
    let err = nodewright_cluster::render::render(&cluster, version, Some(&support::ca_pem()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nodeGroups[0].labels"), "{err}");
    assert!(err.contains("node-role.kubernetes.io/worker"), "{err}");
}
