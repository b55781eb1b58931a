//! Node specs for tests: the examples, extended with more files and services, with a
//! boot config whose digest matches.

use yaml_serde::{Mapping, Value};

use crate::world::World;

/// `examples/<example>/bootconfig.yaml` with its `sha256:` set to `spec`'s digest.
pub fn boot_config_for(example: &str, spec: &[u8]) -> Vec<u8> {
    let boot = String::from_utf8(crate::example(&format!("{example}/bootconfig.yaml")))
        .expect("the example is UTF-8");
    let digest = nodewright::spec::digest(spec);
    boot.lines()
        .map(|line| match line.split_once("sha256: ") {
            Some((indent, _)) if indent.trim().is_empty() => format!("{indent}sha256: {digest}"),
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

/// `examples/<example>/nodespec.yaml` with `extra` merged in: lists are extended,
/// mappings merged, anything else replaced. Of the control-plane example's
/// `controlPlane` section only `pki` is kept.
pub fn extend_example(example: &str, extra: &str) -> Vec<u8> {
    let mut base: Value =
        yaml_serde::from_slice(&crate::example(&format!("{example}/nodespec.yaml")))
            .expect("the example parses");
    // Of the control plane, only the PKI: these nodes have no etcd volumes to claim,
    // and their `extra` writes by hand what the components would render (manifests,
    // admin.conf).
    if let Some(Value::Mapping(control_plane)) = base.get_mut("controlPlane") {
        control_plane.retain(|key, _| key.as_str() == Some("pki"));
    }
    extend_value(base, extra)
}

/// The spec `base` with `extra` merged in, as [`extend_example`] does.
pub fn extend(base: &[u8], extra: &str) -> Vec<u8> {
    extend_value(
        yaml_serde::from_slice(base).expect("the base spec parses"),
        extra,
    )
}

fn extend_value(mut base: Value, extra: &str) -> Vec<u8> {
    let extra: Value = yaml_serde::from_str(extra).expect("the extra YAML parses");
    merge(&mut base, extra);
    yaml_serde::to_string(&base)
        .expect("a spec serializes")
        .into_bytes()
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Mapping(base), Value::Mapping(extra)) => merge_mappings(base, extra),
        (Value::Sequence(base), Value::Sequence(extra)) => base.extend(extra),
        (base, extra) => *base = extra,
    }
}

fn merge_mappings(base: &mut Mapping, extra: Mapping) {
    for (key, value) in extra {
        match base.get_mut(&key) {
            Some(existing) => merge(existing, value),
            None => {
                base.insert(key, value);
            }
        }
    }
}

/// A world booting `spec` with `example`'s boot config (digest adjusted).
pub fn world(example: &str, spec: &[u8]) -> World {
    World::new(&boot_config_for(example, spec), spec)
}

/// Where the "binary" of [`OPS_WORKER_EXTRA`]'s node agent is installed.
pub const AGENT_BINARY: &str = "/usr/local/bin/node-agent";
pub const AGENT_CONFIG: &str = "/etc/node-agent/config.yaml";
pub const SHIPPER_CONFIG: &str = "/etc/log-shipper/config.yaml";

/// What the worker example gets for the operations tests: two services with a
/// binary, configs and a secret as inputs, so a change restarts exactly one of them.
pub const OPS_WORKER_EXTRA: &str = r#"
directories:
  - path: /etc/node-agent
    mode: "0750"
files:
  - path: /usr/local/bin/node-agent
    mode: "0755"
    content: |
      #!/bin/sh
      # node-agent 1.4.2: reports node health
      exec /bin/sleep infinity
  - path: /etc/node-agent/config.yaml
    content: |
      logLevel: info
      listen: 127.0.0.1:9100
  - path: /etc/node-agent/token
    mode: "0600"
    secret: true
    content: |
      node-agent-token-0123456789
  - path: /etc/log-shipper/config.yaml
    content: |
      endpoint: https://logs.internal.example.com:443
      batch: 512
systemd:
  units:
    - name: node-agent.service
      content: |
        [Unit]
        Description=Node health agent
        After=network-online.target

        [Service]
        ExecStart=/usr/local/bin/node-agent --config /etc/node-agent/config.yaml
        Restart=always

        [Install]
        WantedBy=multi-user.target
      restartOn:
        - /usr/local/bin/node-agent
        - /etc/node-agent/config.yaml
        - /etc/node-agent/token
    - name: log-shipper.service
      content: |
        [Unit]
        Description=Ships node logs

        [Service]
        ExecStart=/bin/sh -c 'exec /bin/sleep infinity'
        Restart=always

        [Install]
        WantedBy=multi-user.target
      restartOn:
        - /etc/log-shipper/config.yaml
"#;

/// The worker example with [`OPS_WORKER_EXTRA`].
pub fn ops_worker_spec() -> Vec<u8> {
    extend_example("worker", OPS_WORKER_EXTRA)
}

/// What the control-plane example gets for the operations tests, until the model
/// renders the control plane itself: static pod manifests, kubeconfigs and keys
/// (secret), the etcd data directory, and a kubelet unit that restarts on them.
pub const CONTROL_PLANE_EXTRA: &str = r#"
directories:
  - path: /var/lib/etcd
    mode: "0700"
  - path: /etc/kubernetes/pki/etcd
    mode: "0700"
files:
  - path: /etc/kubernetes/manifests/etcd.yaml
    content: |
      apiVersion: v1
      kind: Pod
      metadata: {name: etcd, namespace: kube-system}
      spec:
        hostNetwork: true
        containers:
          - name: etcd
            image: registry.k8s.io/etcd:3.5.21-0
            command: [etcd, --data-dir=/var/lib/etcd, --name=etcd-a]
  - path: /etc/kubernetes/manifests/kube-apiserver.yaml
    content: |
      apiVersion: v1
      kind: Pod
      metadata: {name: kube-apiserver, namespace: kube-system}
      spec:
        hostNetwork: true
        containers:
          - name: kube-apiserver
            image: registry.k8s.io/kube-apiserver:v1.33.4
            command: [kube-apiserver, --etcd-servers=https://127.0.0.1:2379, --tls-private-key-file=/etc/kubernetes/pki/apiserver.key]
  - path: /etc/kubernetes/manifests/kube-controller-manager.yaml
    content: |
      apiVersion: v1
      kind: Pod
      metadata: {name: kube-controller-manager, namespace: kube-system}
      spec:
        hostNetwork: true
        containers:
          - name: kube-controller-manager
            image: registry.k8s.io/kube-controller-manager:v1.33.4
  - path: /etc/kubernetes/manifests/kube-scheduler.yaml
    content: |
      apiVersion: v1
      kind: Pod
      metadata: {name: kube-scheduler, namespace: kube-system}
      spec:
        hostNetwork: true
        containers:
          - name: kube-scheduler
            image: registry.k8s.io/kube-scheduler:v1.33.4
  - path: /etc/kubernetes/pki/etcd/peer.key
    mode: "0600"
    secret: true
    content: "test peer key material, not a real key\n"
  - path: /etc/kubernetes/admin.conf
    mode: "0600"
    secret: true
    content: |
      apiVersion: v1
      kind: Config
      users: [{name: admin, user: {token: test-admin-token-0123456789}}]
  - path: /usr/local/bin/kubelet
    mode: "0755"
    content: |
      #!/bin/sh
      exec /bin/sleep infinity
symlinks:
  - path: /usr/local/bin/kubectl
    target: /usr/local/bin/kubelet
"#;

/// The control-plane example with [`CONTROL_PLANE_EXTRA`].
pub fn ops_control_plane_spec() -> Vec<u8> {
    extend_example("control-plane", CONTROL_PLANE_EXTRA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_specs_parse_and_keep_the_example() {
        let spec = ops_worker_spec();
        let text = String::from_utf8(spec.clone()).unwrap();
        let parsed = nodewright::spec::NodeSpec::parse("ops", &text).unwrap();
        let units: Vec<&str> = parsed
            .systemd
            .units
            .iter()
            .map(|u| u.name.as_str())
            .collect();
        assert_eq!(
            units,
            [
                "node-problem-check.service",
                "node-problem-check.timer",
                "node-agent.service",
                "log-shipper.service"
            ]
        );
        assert!(parsed.files.iter().any(|f| f.secret));
        let cp = String::from_utf8(ops_control_plane_spec()).unwrap();
        let cp = nodewright::spec::NodeSpec::parse("cp", &cp).unwrap();
        assert!(cp.files.len() > 8, "{} files", cp.files.len());
        let boot = String::from_utf8(boot_config_for("worker", &spec)).unwrap();
        assert!(boot.contains(&format!("sha256: {}", nodewright::spec::digest(&spec))));
    }
}
