//! Restart rules, at the engine on a temp root: a service restarts exactly when one of
//! its inputs changed (unit, drop-in, config files, binary), and a run that changes
//! nothing restarts nothing. Binaries are the image's (no downloads involved).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use nodewright::engine::{self, Action, Plan, State};
use nodewright::host::Host;
use nodewright::model::{Facts, desired_state};
use nodewright::spec::NodeSpec;

/// A worker with kube-proxy (booted through controller-shim).
const EXAMPLE: &str = "examples/controller-shim/worker-nodespec.yaml";

fn spec_text() -> String {
    std::fs::read_to_string(common::workspace().join(EXAMPLE)).unwrap()
}

struct Node {
    _dir: tempfile::TempDir,
    host: Host,
    state: State,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        Self {
            _dir: dir,
            host,
            state: State::default(),
        }
    }

    async fn plan(&self, text: &str) -> Plan {
        let spec = NodeSpec::parse("spec", text).unwrap();
        let desired = desired_state(&spec, &Facts::example()).unwrap();
        engine::plan(&desired, &self.host, &self.state)
            .await
            .unwrap()
    }

    async fn converge(&mut self, text: &str) -> Plan {
        let plan = self.plan(text).await;
        let report = engine::apply(&plan, &self.host, &mut self.state).await;
        assert!(report.failures().is_empty(), "{:?}", report.failures());
        plan
    }
}

/// The units a plan restarts or starts.
fn restarts(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::RestartUnit(restart) => Some(restart.unit.to_string()),
            Action::StartUnit(start) => Some(start.unit.to_string()),
            _ => None,
        })
        .collect()
}

fn writes(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::WriteFile(write) => Some(write.path.to_string()),
            Action::WriteStaticPod(write) => Some(write.path.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn changing_nothing_restarts_nothing() {
    let mut node = Node::new();
    let first = node.converge(&spec_text()).await;
    assert_eq!(
        restarts(&first),
        [
            "chrony.service",
            "containerd.service",
            "kubelet.service",
            "node-problem-check.timer"
        ]
    );
    for _ in 0..2 {
        let again = node.converge(&spec_text()).await;
        assert!(again.is_empty(), "{}", again.render());
    }
}

#[tokio::test]
async fn one_kubelet_field_restarts_the_kubelet_and_nothing_else() {
    let mut node = Node::new();
    node.converge(&spec_text()).await;
    let changed = spec_text().replace("    maxPods: 110", "    maxPods: 120");
    let plan = node.converge(&changed).await;
    assert_eq!(writes(&plan), ["/var/lib/kubelet/config.yaml"]);
    assert_eq!(restarts(&plan), ["kubelet.service"], "{}", plan.render());
    assert_eq!(plan.steps.len(), 2, "{}", plan.render());
    let restart = plan
        .steps
        .iter()
        .find(|s| matches!(s.action, Action::RestartUnit(_)))
        .unwrap();
    assert_eq!(
        restart.reason,
        "inputs changed: /var/lib/kubelet/config.yaml"
    );
    // And it stays converged.
    assert!(node.converge(&changed).await.is_empty());
}

#[tokio::test]
async fn a_flag_change_reloads_systemd_and_restarts_only_the_kubelet() {
    let mut node = Node::new();
    node.converge(&spec_text()).await;
    let changed = spec_text().replace(
        "    node.kubernetes.io/node-group: nodes-us-east-1a",
        "    node.kubernetes.io/node-group: nodes-us-east-1b",
    );
    let plan = node.converge(&changed).await;
    assert_eq!(
        writes(&plan),
        ["/etc/systemd/system/kubelet.service.d/10-nodewright.conf"]
    );
    assert!(
        plan.steps
            .iter()
            .any(|s| matches!(s.action, Action::DaemonReload(_))),
        "{}",
        plan.render()
    );
    assert_eq!(restarts(&plan), ["kubelet.service"]);
}

#[tokio::test]
async fn a_containerd_change_restarts_containerd_and_not_the_kubelet() {
    let mut node = Node::new();
    node.converge(&spec_text()).await;
    let changed = spec_text().replace(
        "max_container_log_line_size = 65536",
        "max_container_log_line_size = 32768",
    );
    let plan = node.converge(&changed).await;
    assert_eq!(writes(&plan), ["/etc/containerd/config.toml"]);
    assert_eq!(restarts(&plan), ["containerd.service"]);

    // A mirror is read at every pull: no restart at all.
    let mirrors = changed.replace("https://mirror.gcr.io", "https://mirror.example.com");
    let plan = node.converge(&mirrors).await;
    assert_eq!(
        writes(&plan),
        ["/etc/containerd/certs.d/docker.io/hosts.toml"]
    );
    assert!(restarts(&plan).is_empty(), "{}", plan.render());
}

#[tokio::test]
async fn a_new_binary_restarts_its_service() {
    let mut node = Node::new();
    node.converge(&spec_text()).await;
    // The image's kubelet is replaced (e.g. a package upgrade): its digest changed.
    let kubelet = node.host.root().join("usr/local/bin/kubelet");
    std::fs::create_dir_all(kubelet.parent().unwrap()).unwrap();
    std::fs::write(&kubelet, b"kubelet v1.33.5").unwrap();
    let plan = node.converge(&spec_text()).await;
    assert_eq!(restarts(&plan), ["kubelet.service"], "{}", plan.render());
    assert!(writes(&plan).is_empty());
    assert!(node.converge(&spec_text()).await.is_empty());
}

#[tokio::test]
async fn a_kube_proxy_change_rewrites_its_pod_without_restarting_services() {
    let mut node = Node::new();
    node.converge(&spec_text()).await;
    let changed = spec_text().replace("  mode: iptables", "  mode: nftables");
    let plan = node.converge(&changed).await;
    // The static pod's manifest carries the digest of its config, so the kubelet
    // recreates the pod; no unit restarts.
    assert_eq!(
        writes(&plan),
        [
            "/var/lib/kube-proxy/config.yaml",
            "/etc/kubernetes/manifests/kube-proxy.yaml"
        ]
    );
    assert!(restarts(&plan).is_empty(), "{}", plan.render());
}

#[tokio::test]
async fn api_addresses_live_in_a_block_of_etc_hosts() {
    let mut node = Node::new();
    let hosts = node.host.root().join("etc/hosts");
    std::fs::create_dir_all(hosts.parent().unwrap()).unwrap();
    std::fs::write(&hosts, "127.0.0.1\tlocalhost\n").unwrap();
    node.converge(&spec_text()).await;
    let text = std::fs::read_to_string(&hosts).unwrap();
    assert_eq!(
        text,
        "127.0.0.1\tlocalhost\n# BEGIN nodewright api\n10.0.0.10\tapi.internal.prod.example.com\n10.0.32.10\tapi.internal.prod.example.com\n# END nodewright api\n"
    );
    // Someone else's line stays; a new address replaces the block in place.
    std::fs::write(&hosts, format!("{text}10.1.1.1\tother\n")).unwrap();
    let moved = spec_text().replace("[10.0.0.10, 10.0.32.10]", "[10.0.0.11]");
    let plan = node.converge(&moved).await;
    assert_eq!(plan.steps.len(), 1, "{}", plan.render());
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        "127.0.0.1\tlocalhost\n# BEGIN nodewright api\n10.0.0.11\tapi.internal.prod.example.com\n# END nodewright api\n10.1.1.1\tother\n"
    );
    assert!(node.converge(&moved).await.is_empty());
    // Without load balancer addresses the block goes, and the file stays.
    let gone = spec_text().replace("    loadBalancerIps: [10.0.0.10, 10.0.32.10]\n", "");
    node.converge(&gone).await;
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        "127.0.0.1\tlocalhost\n10.1.1.1\tother\n"
    );
    assert!(!node.state.files.keys().any(|k| k.contains('#')));
    assert!(node.converge(&gone).await.is_empty());
}

#[tokio::test]
async fn host_steps_come_before_the_services() {
    let node = Node::new();
    let plan = node.plan(&spec_text()).await;
    let index = |want: fn(&Action) -> bool| plan.steps.iter().position(|s| want(&s.action));
    let packages = index(|a| matches!(a, Action::InstallPackages(_))).unwrap();
    let swap = index(|a| matches!(a, Action::SwapOff(_))).unwrap();
    let sysctls = index(|a| matches!(a, Action::ApplySysctls(_))).unwrap();
    let modules = index(|a| matches!(a, Action::LoadModules(_))).unwrap();
    for step in &plan.steps {
        if let Action::StartUnit(start) = &step.action {
            let unit = &start.unit;
            for host_step in [packages, swap, sysctls, modules] {
                assert!(
                    step.after.contains(&host_step),
                    "{unit} does not wait for {}",
                    plan.steps[host_step].describe()
                );
            }
        }
    }
    // Off a live host these are planned once and skipped; the engine records them.
    let Action::InstallPackages(install) = &plan.steps[packages].action else {
        unreachable!()
    };
    assert_eq!(
        &install.packages,
        &["conntrack", "ethtool", "iptables", "socat", "nfs-common"]
    );
}
