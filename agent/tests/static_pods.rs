//! Static pods restart on input change: the engine writes each control-plane manifest
//! with the digest of the files its pod reads, so a changed certificate or kubeconfig
//! rewrites exactly the manifests of the pods that read it (and the kubelet re-creates
//! those pods); a run that changes nothing leaves every manifest byte for byte.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::collections::BTreeMap;

use common::{CASES, control_plane_facts, parse};
use nodewright::engine::{self, Action, AppliedKey, Plan, State};
use nodewright::host::Host;
use nodewright::model::{DesiredState, INPUTS_PLACEHOLDER, desired_state, pki_paths as pki};

const MANIFESTS: &str = "etc/kubernetes/manifests";

struct Node {
    dir: tempfile::TempDir,
    host: Host,
    state: State,
    desired: DesiredState,
}

impl Node {
    /// The example control plane, with stand-ins for every file the PKI step writes.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        let case = CASES
            .iter()
            .find(|c| c.name == "example-control-plane")
            .unwrap();
        let desired = desired_state(&parse(case.spec), &control_plane_facts()).unwrap();
        let node = Self {
            dir,
            host,
            state: State::default(),
            desired,
        };
        for pod in &node.desired.static_pods {
            for input in &pod.inputs {
                if node.desired.file(input.as_str()).is_none() {
                    node.put(input.as_str(), &format!("stand-in for {input}\n"));
                }
            }
        }
        node
    }

    fn put(&self, path: &str, text: &str) {
        let real = self.dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(real, text).unwrap();
    }

    async fn converge(&mut self) -> Plan {
        let plan = engine::plan(&self.desired, &self.host, &self.state)
            .await
            .unwrap();
        let report = engine::apply(&plan, &self.host, &mut self.state).await;
        assert!(report.failures().is_empty(), "{:?}", report.failures());
        plan
    }

    fn manifests(&self) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(self.dir.path().join(MANIFESTS))
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }
}

/// The manifests a plan writes, with the reason.
fn manifest_writes(plan: &Plan) -> BTreeMap<String, String> {
    plan.steps
        .iter()
        .filter_map(|s| match &s.action {
            // Static pod manifests, and the one manifest that is a plain file.
            Action::WriteStaticPod(_) | Action::WriteFile(_)
                if s.action.target().contains("/manifests/") =>
            {
                let target = s.action.target();
                let name = std::path::Path::new(&target)
                    .file_name()?
                    .to_string_lossy()
                    .into_owned();
                Some((name, s.reason.clone()))
            }
            _ => None,
        })
        .collect()
}

fn annotation(manifest: &[u8]) -> String {
    String::from_utf8_lossy(manifest)
        .lines()
        .find_map(|l| l.trim().strip_prefix("nodewright.io/inputs-sha256: "))
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_changed_input_rewrites_exactly_the_pods_that_read_it() {
    let mut node = Node::new();
    let first = node.converge().await;
    let written = manifest_writes(&first);
    assert_eq!(written.len(), 7, "{written:?}");
    let before = node.manifests();
    for (name, bytes) in &before {
        if name == "kube-proxy.yaml" {
            continue;
        }
        let digest = annotation(bytes);
        assert!(
            digest.len() == 64 && digest != INPUTS_PLACEHOLDER,
            "{name}: {digest}"
        );
    }

    // Nothing changed: nothing to do, and every manifest byte for byte the same.
    let again = node.converge().await;
    assert!(again.is_empty(), "{}", again.render());
    assert_eq!(node.manifests(), before);

    // A re-issued API server certificate: only the API server's pod.
    node.put(pki::APISERVER_CERT, "re-issued\n");
    let plan = node.converge().await;
    let written = manifest_writes(&plan);
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        ["kube-apiserver.yaml"],
        "{}",
        plan.render()
    );
    assert_eq!(
        written["kube-apiserver.yaml"],
        "pod inputs changed: /etc/kubernetes/pki/apiserver.crt"
    );
    let after = node.manifests();
    assert_ne!(
        annotation(&after["kube-apiserver.yaml"]),
        annotation(&before["kube-apiserver.yaml"])
    );
    for name in before.keys().filter(|n| *n != "kube-apiserver.yaml") {
        assert_eq!(after[name], before[name], "{name}");
    }

    // A new etcd CA: both etcd members and the API server (its etcd client trust).
    node.put(pki::ETCD_CA_CERT, "new etcd CA\n");
    let plan = node.converge().await;
    assert_eq!(
        manifest_writes(&plan).keys().collect::<Vec<_>>(),
        ["etcd-events.yaml", "etcd-main.yaml", "kube-apiserver.yaml"],
        "{}",
        plan.render()
    );
    // A kubeconfig that drifted on disk is restored to what the scheduler's pod was
    // written with: the file is rewritten, the pod is left alone.
    let scheduler = node.manifests()["kube-scheduler.yaml"].clone();
    node.put(pki::SCHEDULER_KUBECONFIG, "drifted\n");
    let plan = node.converge().await;
    assert!(manifest_writes(&plan).is_empty(), "{}", plan.render());
    assert!(
        plan.render()
            .contains("write /etc/kubernetes/scheduler.conf")
    );
    assert_eq!(node.manifests()["kube-scheduler.yaml"], scheduler);
    assert!(node.converge().await.is_empty());
}

#[tokio::test]
async fn a_pod_no_longer_in_the_spec_is_removed_with_its_record() {
    let mut node = Node::new();
    node.converge().await;
    assert!(node.state.applied.contains_key(&AppliedKey::parse(
        "static-pod:/etc/kubernetes/manifests/kube-scheduler.yaml"
    )));
    let manifest = "/etc/kubernetes/manifests/kube-scheduler.yaml";
    node.desired.files.retain(|f| f.path.as_str() != manifest);
    node.desired
        .static_pods
        .retain(|p| p.manifest.as_str() != manifest);
    let plan = node.converge().await;
    assert!(
        plan.render()
            .contains("remove /etc/kubernetes/manifests/kube-scheduler.yaml"),
        "{}",
        plan.render()
    );
    assert!(!node.manifests().contains_key("kube-scheduler.yaml"));
    assert!(
        !node
            .state
            .applied
            .keys()
            .any(|k| k.to_string().contains("kube-scheduler"))
    );
    assert!(node.converge().await.is_empty());
}

#[tokio::test]
async fn plan_shows_the_digest_it_would_write_and_writes_nothing() {
    let node = Node::new();
    let plan = engine::plan(&node.desired, &node.host, &node.state)
        .await
        .unwrap();
    assert!(
        plan.render()
            .contains("write /etc/kubernetes/manifests/kube-apiserver.yaml: missing")
    );
    assert!(!node.dir.path().join(MANIFESTS).exists());
}
