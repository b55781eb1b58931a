//! What the control plane's static pods share: flags from typed fields then
//! `extraArgs`, hostPath mounts of exactly the files a component reads, probes, and the
//! manifest with the inputs annotation the engine fills in.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::ModelError;
use super::builder::{StateBuilder, fixed_path};
use super::desired::{INPUTS_ANNOTATION, INPUTS_PLACEHOLDER};
use super::kubelet::MANIFESTS;
use super::render::to_yaml;
use crate::spec::{AbsPath, ExtraArgs};

/// `--name=value` flags: ours, then `extra` over them (same name replaces), sorted.
pub fn flags(ours: BTreeMap<String, String>, extra: &ExtraArgs) -> Vec<String> {
    let mut all = ours;
    all.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    all.into_iter().map(|(k, v)| format!("--{k}={v}")).collect()
}

/// A typed flag map from `(name, value)` pairs.
pub fn flag_map<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// How a hostPath is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathKind {
    /// A file the pod reads (a certificate, key, kubeconfig or config): read-only, and
    /// an input of the pod (its change re-creates the pod).
    File,
    /// A directory the pod writes (etcd's data, the audit log).
    DirectoryOrCreate,
}

#[derive(Debug, Clone)]
pub struct HostMount {
    pub path: String,
    pub kind: HostPathKind,
}

impl HostMount {
    pub fn file(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            kind: HostPathKind::File,
        }
    }
    pub fn dir(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            kind: HostPathKind::DirectoryOrCreate,
        }
    }
}

/// An HTTP(S) endpoint the kubelet probes.
#[derive(Debug, Clone)]
pub struct Probe {
    pub scheme: &'static str,
    pub port: u16,
    pub liveness: String,
    pub readiness: String,
    pub startup: String,
}

pub struct StaticPod<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub command: Vec<String>,
    pub mounts: Vec<HostMount>,
    pub probe: Probe,
    pub requests: Value,
    pub env: Vec<(&'a str, String)>,
}

impl StaticPod<'_> {
    /// The files whose bytes make the pod's inputs digest, in mount order.
    pub fn inputs(&self) -> Vec<AbsPath> {
        self.mounts
            .iter()
            .filter(|m| m.kind == HostPathKind::File)
            .map(|m| fixed_path(&m.path))
            .collect()
    }

    pub fn render(&self) -> Result<String, ModelError> {
        let mut names = BTreeMap::new();
        let mut volume_mounts = Vec::new();
        let mut volumes = Vec::new();
        for mount in &self.mounts {
            let name = volume_name(&mount.path);
            if let Some(other) = names.insert(name.clone(), mount.path.clone()) {
                return Err(ModelError::Spec(format!(
                    "pod {}: {} and {other} get the same volume name {name}",
                    self.name, mount.path
                )));
            }
            let (kind, read_only) = match mount.kind {
                HostPathKind::File => ("File", true),
                HostPathKind::DirectoryOrCreate => ("DirectoryOrCreate", false),
            };
            volume_mounts
                .push(json!({"name": name, "mountPath": mount.path, "readOnly": read_only}));
            volumes.push(json!({"name": name, "hostPath": {"path": mount.path, "type": kind}}));
        }
        let probe = |path: &str, initial: u32, period: u32, failures: u32| {
            json!({
                "httpGet": {
                    "host": "127.0.0.1",
                    "path": path,
                    "port": self.probe.port,
                    "scheme": self.probe.scheme,
                },
                "initialDelaySeconds": initial,
                "periodSeconds": period,
                "timeoutSeconds": 15,
                "failureThreshold": failures,
            })
        };
        let mut container = json!({
            "name": self.name,
            "image": self.image,
            "command": self.command,
            "livenessProbe": probe(&self.probe.liveness, 10, 10, 8),
            "readinessProbe": probe(&self.probe.readiness, 0, 1, 3),
            "startupProbe": probe(&self.probe.startup, 10, 10, 24),
            "resources": {"requests": self.requests},
            "volumeMounts": volume_mounts,
        });
        if !self.env.is_empty() {
            container["env"] = self
                .env
                .iter()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .collect();
        }
        let manifest = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": "kube-system",
                "labels": {"k8s-app": self.name, "tier": "control-plane"},
                "annotations": {(INPUTS_ANNOTATION): INPUTS_PLACEHOLDER},
            },
            "spec": {
                "hostNetwork": true,
                "priorityClassName": "system-node-critical",
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
                "volumes": volumes,
            },
        });
        Ok(to_yaml(manifest))
    }

    /// Adds the manifest (`<MANIFESTS>/<name>.yaml`) to the state.
    pub fn add(&self, component: &'static str, out: &mut StateBuilder) -> Result<(), ModelError> {
        let path = fixed_path(MANIFESTS).join(&format!("{}.yaml", self.name))?;
        out.static_pod(component, path, self.render()?, self.inputs())
    }
}

/// A volume name (a DNS label) from a host path: `/etc/kubernetes/pki/etcd/ca.crt` →
/// `pki-etcd-ca-crt`.
fn volume_name(path: &str) -> String {
    let short = path
        .strip_prefix("/etc/kubernetes/")
        .unwrap_or(path.trim_start_matches('/'));
    let mut name: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    // A label is at most 63 characters; keep the end, which tells files apart.
    if name.len() > 63 {
        name = name[name.len() - 63..].to_owned();
    }
    name.trim_matches('-').to_owned()
}

/// `{"cpu": .., "memory": ..}` requests.
pub fn requests(cpu: &str, memory: Option<&str>) -> Value {
    let mut out = json!({"cpu": cpu});
    if let Some(memory) = memory {
        out["memory"] = json!(memory);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_args_override_and_extend_ours() {
        let ours = flag_map([("v", "2".to_owned()), ("secure-port", "443".to_owned())]);
        let extra: ExtraArgs = [("v", "4"), ("profiling", "false")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(
            flags(ours, &extra),
            ["--profiling=false", "--secure-port=443", "--v=4"]
        );
    }

    #[test]
    fn volume_names_are_labels() {
        assert_eq!(
            volume_name("/etc/kubernetes/pki/etcd/ca.crt"),
            "pki-etcd-ca-crt"
        );
        assert_eq!(volume_name("/mnt/etcd-main-a/data"), "mnt-etcd-main-a-data");
    }
}
