//! `NodeSpec` v1alpha1: everything a node needs, kept in the state store.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::assets::{AssetEntry, DownloadSettings};
use super::cni::CniSpec;
use super::containerd::ContainerdSpec;
use super::control_plane::ControlPlaneSpec;
use super::host::HostSpec;
use super::kube_proxy::KubeProxySpec;
use super::kubelet::{KubeletSpec, PROTECTED_KERNEL_DEFAULTS};
use super::types::{
    AbsPath, DnsName, DropInName, FileMode, KubernetesVersion, ModuleName, Principal, SysctlKey,
    UnitName,
};
use super::validate::Problems;
use super::{Role, SpecError, parse_yaml};

pub const NODE_SPEC_KIND: &str = "NodeSpec";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSpec {
    /// Always `nodewright.io/v1alpha1`.
    pub api_version: String,
    /// Always `NodeSpec`.
    pub kind: String,
    pub cluster: ClusterSpec,
    pub role: Role,
    /// The node group this spec is for; when set it must match the boot config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_group: Option<DnsName>,
    /// Kernel parameters, persisted in /etc/sysctl.d and applied at once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<SysctlKey, SysctlValue>,
    /// Kernel modules loaded now and at every boot (modules-load.d).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_modules: Vec<ModuleName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directories: Vec<DirectoryEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symlinks: Vec<SymlinkEntry>,
    #[serde(default, skip_serializing_if = "SystemdSpec::is_empty")]
    pub systemd: SystemdSpec,
    /// Packages, swap, the default sysctls and modules, time sync.
    #[serde(default, skip_serializing_if = "HostSpec::is_default")]
    pub host: HostSpec,
    /// The container runtime (with runc). Required with `kubelet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containerd: Option<ContainerdSpec>,
    /// The CNI plugin binaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<KubeletSpec>,
    /// kube-proxy as a static pod; leave it out (or disable it) for CNIs that replace it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_proxy: Option<KubeProxySpec>,
    /// Files to download, verify by sha256 and install (binaries, archives).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assets: Vec<AssetEntry>,
    /// How assets are downloaded: mirrors, air-gapped mode, timeouts.
    #[serde(default, skip_serializing_if = "DownloadSettings::is_default")]
    pub downloads: DownloadSettings,
    /// Control-plane nodes only: etcd volumes, published names, the watch service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    pub name: DnsName,
    pub kubernetes_version: KubernetesVersion,
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: DnsName,
    /// Service network, e.g. `100.64.0.0/13`.
    #[schemars(with = "String")]
    pub service_cidr: IpNet,
    /// Pod network, e.g. `100.96.0.0/11`. Leave it out when the CNI manages pod
    /// addresses itself (IPv6, ENI-based CNIs, Cilium's own IPAM): kube-proxy then gets
    /// no cluster CIDR, and the controller manager cannot allocate node CIDRs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub pod_cidr: Option<IpNet>,
    /// The cluster DNS service IP; must lie in the service network.
    #[schemars(with = "String")]
    pub dns_ip: IpAddr,
    /// How nodes reach the Kubernetes API. Required with `kubelet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiEndpoint>,
    /// The cluster CA certificate (PEM), written to /etc/kubernetes/pki/ca.crt.
    /// Required with `kubelet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiEndpoint {
    /// The name in the API server's certificate, e.g. `api.internal.prod.example.com`.
    pub name: DnsName,
    #[serde(default = "default_api_port")]
    pub port: u16,
    /// The load balancer's addresses. When given, `name` is pinned to them in
    /// /etc/hosts, so nodes need no DNS record for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub load_balancer_ips: Vec<IpAddr>,
    /// The name clients outside the cluster use (e.g. `api.prod.example.com`), when it
    /// differs from `name`: control-plane nodes put it in the API server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_name: Option<DnsName>,
}

impl ApiEndpoint {
    /// `https://<name>` (with `:<port>` unless 443).
    pub fn server_url(&self) -> String {
        if self.port == 443 {
            format!("https://{}", self.name)
        } else {
            format!("https://{}:{}", self.name, self.port)
        }
    }
}

fn default_api_port() -> u16 {
    443
}

fn default_cluster_domain() -> DnsName {
    DnsName::try_from("cluster.local").expect("a valid constant")
}

/// A sysctl value: YAML numbers are accepted and kept as their text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SysctlValue {
    Number(i64),
    Text(String),
}

impl SysctlValue {
    pub fn render(&self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::Text(t) => t.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DirectoryEntry {
    pub path: AbsPath,
    #[serde(default = "default_dir_mode")]
    pub mode: FileMode,
    #[serde(default = "root")]
    pub owner: Principal,
    #[serde(default = "root")]
    pub group: Principal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileEntry {
    pub path: AbsPath,
    /// The file's text, written byte for byte.
    pub content: String,
    #[serde(default = "default_file_mode")]
    pub mode: FileMode,
    #[serde(default = "root")]
    pub owner: Principal,
    #[serde(default = "root")]
    pub group: Principal,
    /// Holds a secret: never logged, redacted from support bundles, mode 0600 at most.
    #[serde(default, skip_serializing_if = "is_false")]
    pub secret: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SymlinkEntry {
    pub path: AbsPath,
    pub target: AbsPath,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SystemdSpec {
    #[serde(default)]
    pub units: Vec<UnitEntry>,
}

impl SystemdSpec {
    fn is_empty(&self) -> bool {
        self.units.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UnitEntry {
    pub name: UnitName,
    /// The unit file. Leave it out to manage only drop-ins of a unit the OS ships.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_ins: Vec<DropInEntry>,
    /// Enable the unit so that it starts at boot.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub state: UnitState,
    /// Files whose change restarts this unit (its unit file and drop-ins always do).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_on: Vec<AbsPath>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DropInEntry {
    pub name: DropInName,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum UnitState {
    /// Running; restarted when one of its inputs changes.
    #[default]
    Started,
    /// Installed but left stopped (e.g. started by a timer or another unit).
    Stopped,
}

fn default_dir_mode() -> FileMode {
    FileMode::new(0o755)
}
fn default_file_mode() -> FileMode {
    FileMode::new(0o644)
}
fn root() -> Principal {
    Principal::try_from("root").expect("a valid constant")
}
fn yes() -> bool {
    true
}
fn is_false(value: &bool) -> bool {
    !*value
}

impl NodeSpec {
    /// Parses and checks a node spec. `source` names the document in errors.
    pub fn parse(source: &str, text: &str) -> Result<Self, SpecError> {
        let spec: NodeSpec = parse_yaml(source, text)?;
        let mut problems = Problems::new(source, text);
        spec.check(&mut problems);
        problems.finish()?;
        Ok(spec)
    }

    /// Checks that need more than one field at a time.
    fn check(&self, problems: &mut Problems) {
        problems.check_header("", &self.api_version, &self.kind, NODE_SPEC_KIND);

        let cluster = &self.cluster;
        if !cluster.service_cidr.contains(&cluster.dns_ip) {
            problems.add(
                "cluster.dnsIp",
                format!(
                    "{} is not inside serviceCidr {}",
                    cluster.dns_ip, cluster.service_cidr
                ),
            );
        }
        if let Some(pod_cidr) = &cluster.pod_cidr
            && (cluster.service_cidr.contains(&pod_cidr.network())
                || pod_cidr.contains(&cluster.service_cidr.network()))
        {
            problems.add(
                "cluster.podCidr",
                format!("{pod_cidr} overlaps serviceCidr {}", cluster.service_cidr),
            );
        }
        let allocates = self
            .control_plane
            .as_ref()
            .and_then(|c| c.controller_manager.as_ref())
            .is_some_and(|kcm| kcm.allocate_node_cidrs);
        if allocates && cluster.pod_cidr.is_none() {
            problems.add(
                "cluster",
                "controlPlane.controllerManager.allocateNodeCidrs needs cluster.podCidr to allocate from"
                    .to_owned(),
            );
        }

        self.check_components(problems);

        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut claim = |problems: &mut Problems, path: &AbsPath, at: String| {
            if let Some(first) = seen.get(path.as_str()) {
                problems.add(&at, format!("{path} is already declared at {first}"));
            } else {
                seen.insert(path.to_string(), at);
            }
        };
        for (i, dir) in self.directories.iter().enumerate() {
            claim(problems, &dir.path, format!("directories[{i}].path"));
        }
        for (i, file) in self.files.iter().enumerate() {
            let at = format!("files[{i}]");
            claim(problems, &file.path, format!("{at}.path"));
            if file.secret && file.mode.bits() & 0o077 != 0 {
                problems.add(
                    &format!("{at}.mode"),
                    format!(
                        "a secret file must not be readable by group or others (mode {}, use 0600)",
                        file.mode
                    ),
                );
            }
        }
        for (i, link) in self.symlinks.iter().enumerate() {
            claim(problems, &link.path, format!("symlinks[{i}].path"));
        }
        for (i, asset) in self.assets.iter().enumerate() {
            for (j, target) in asset.install.iter().enumerate() {
                claim(
                    problems,
                    &target.path,
                    format!("assets[{i}].install[{j}].path"),
                );
            }
        }
        super::assets::check(&self.assets, &self.downloads, problems);

        let mut units = BTreeSet::new();
        for (i, unit) in self.systemd.units.iter().enumerate() {
            let at = format!("systemd.units[{i}]");
            if !units.insert(unit.name.as_str()) {
                problems.add(
                    &format!("{at}.name"),
                    format!("unit {} is declared twice", unit.name),
                );
            }
            if unit.content.is_none() && unit.drop_ins.is_empty() {
                problems.add(
                    &at,
                    format!(
                        "unit {} has neither content nor dropIns: nothing to manage",
                        unit.name
                    ),
                );
            }
            let mut drop_ins = BTreeSet::new();
            for (j, drop_in) in unit.drop_ins.iter().enumerate() {
                if !drop_ins.insert(drop_in.name.as_str()) {
                    problems.add(
                        &format!("{at}.dropIns[{j}].name"),
                        format!("drop-in {} is declared twice", drop_in.name),
                    );
                }
            }
        }

        if let Some(control_plane) = &self.control_plane {
            if self.role != Role::ControlPlane {
                problems.add(
                    "controlPlane",
                    format!(
                        "only control-plane nodes have this section (role is {})",
                        self.role
                    ),
                );
            }
            control_plane.check(problems);
            control_plane.check_assets(&self.assets, problems);
        }

        let mut modules = BTreeSet::new();
        for (i, module) in self.kernel_modules.iter().enumerate() {
            if !modules.insert(module.as_str()) {
                problems.add(
                    &format!("kernelModules[{i}]"),
                    format!("module {module} is listed twice"),
                );
            }
        }
        for (key, value) in &self.sysctls {
            let text = value.render();
            if text.is_empty() || text.contains('\n') {
                problems.add(
                    &format!("sysctls[{:?}]", key.as_str()),
                    "a sysctl value must be one non-empty line".to_owned(),
                );
            }
        }
    }
}

impl NodeSpec {
    /// Checks of the node components' sections, alone and against each other.
    fn check_components(&self, problems: &mut Problems) {
        let cluster = &self.cluster;
        self.host.check(problems);
        if let Some(containerd) = &self.containerd {
            containerd.check(problems);
        }
        if let Some(cni) = &self.cni {
            cni.check(problems);
        }
        if let Some(pem) = &cluster.ca_certificate
            && let Err(message) = check_pem_certificate(pem)
        {
            problems.add("cluster.caCertificate", message);
        }
        if let Some(api) = &cluster.api {
            let mut seen = BTreeSet::new();
            for (i, ip) in api.load_balancer_ips.iter().enumerate() {
                if !seen.insert(ip) {
                    problems.add(
                        &format!("cluster.api.loadBalancerIps[{i}]"),
                        format!("{ip} is listed twice"),
                    );
                }
            }
        }
        let kube_proxy = self.kube_proxy.as_ref().filter(|k| k.enabled);
        if let Some(kube_proxy) = &self.kube_proxy {
            kube_proxy.check(problems);
        }
        if kube_proxy.is_some() && self.kubelet.is_none() {
            problems.add(
                "kubeProxy",
                "kube-proxy runs as a static pod of the kubelet: add a kubelet section".to_owned(),
            );
        }
        let Some(kubelet) = &self.kubelet else {
            return;
        };
        kubelet.check(problems);
        if self.containerd.is_none() {
            problems.add(
                "kubelet",
                "the kubelet needs a container runtime: add a containerd section".to_owned(),
            );
        }
        if cluster.api.is_none() {
            problems.add(
                "cluster",
                "the kubelet needs cluster.api (the API server's name) to reach the cluster"
                    .to_owned(),
            );
        }
        // A control-plane node with controlPlane.pki writes ca.crt from the store.
        let pki_ca = self.role == Role::ControlPlane
            && self.control_plane.as_ref().is_some_and(|c| c.pki.is_some());
        if cluster.ca_certificate.is_none() && !pki_ca {
            problems.add(
                "cluster",
                "the kubelet needs cluster.caCertificate (or, on control-plane nodes, \
                 controlPlane.pki) to trust the API server"
                    .to_owned(),
            );
        }
        if kubelet.protects_kernel_defaults() {
            for (key, wanted) in PROTECTED_KERNEL_DEFAULTS {
                let set = self
                    .sysctls
                    .iter()
                    .find(|(k, _)| k.as_str() == *key)
                    .map(|(k, v)| (k, v.render()));
                match set {
                    Some((k, value)) if value.trim() != *wanted => problems.add(
                        &format!("sysctls[{:?}]", k.as_str()),
                        format!(
                            "the kubelet (protectKernelDefaults) refuses to start unless {key} = {wanted}"
                        ),
                    ),
                    None if !self.host.default_sysctls => problems.add(
                        "host.defaultSysctls",
                        format!(
                            "the kubelet (protectKernelDefaults) refuses to start unless {key} = {wanted}: set it in sysctls or keep the default sysctls"
                        ),
                    ),
                    _ => {}
                }
            }
        }
    }
}

/// PEM certificates: one, or several (a CA bundle during a rotation, as kops keeps
/// them), each the armour and a base64 body, with nothing else around them.
fn check_pem_certificate(pem: &str) -> Result<(), String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut rest = pem.trim();
    if rest.is_empty() {
        return Err(format!("must be PEM certificates ({BEGIN} ... {END})"));
    }
    while !rest.is_empty() {
        let body = rest
            .strip_prefix(BEGIN)
            .and_then(|r| r.split_once(END))
            .map(|(body, after)| {
                rest = after.trim_start();
                body
            })
            .ok_or_else(|| format!("must be PEM certificates ({BEGIN} ... {END})"))?;
        let base64_ok = body
            .chars()
            .filter(|c| !c.is_whitespace())
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
        if !base64_ok || body.trim().is_empty() || body.contains("-----") {
            return Err("holds something other than base64 certificate bodies".to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/worker/nodespec.yaml"
        ))
        .unwrap()
    }

    fn error_of(text: &str) -> String {
        NodeSpec::parse("spec.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn the_examples_parse() {
        let spec = NodeSpec::parse("worker", &example()).unwrap();
        assert_eq!(spec.role, Role::Worker);
        assert_eq!(spec.cluster.kubernetes_version.minor(), "1.33");
        let cp = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/control-plane/nodespec.yaml"
        ))
        .unwrap();
        assert_eq!(NodeSpec::parse("cp", &cp).unwrap().role, Role::ControlPlane);
    }

    #[test]
    fn malformed_yaml_names_the_line() {
        let text = example().replace("  dnsIp: 100.64.0.10", "  dnsIp: [100.64.0.10");
        let err = error_of(&text);
        assert!(err.starts_with("spec.yaml: "), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn unknown_field_names_path_and_line() {
        let text = example().replace(
            "    mode: \"0700\"",
            "    mode: \"0700\"\n    recursive: true",
        );
        let err = error_of(&text);
        assert!(err.contains("directories[1]"), "{err}");
        assert!(err.contains("recursive"), "{err}");
        assert!(err.contains("directories[1].recursive"), "{err}");
        assert!(err.contains("line 42"), "{err}");
    }

    #[test]
    fn wrong_type_names_path_and_line() {
        let text = example().replace("kubernetesVersion: 1.33.4", "kubernetesVersion: [1, 33]");
        let err = error_of(&text);
        assert!(err.contains("cluster.kubernetesVersion"), "{err}");
        assert!(err.contains("line 8"), "{err}");
    }

    #[test]
    fn relative_path_names_path_and_line() {
        let text = example().replace(
            "  - path: /etc/security/limits.d/90-kubernetes.conf",
            "  - path: etc/security/limits.d/90-kubernetes.conf",
        );
        let err = error_of(&text);
        assert!(err.contains("files[1].path"), "{err}");
        assert!(err.contains("must be absolute"), "{err}");
        assert!(err.contains("line 49"), "{err}");
    }

    #[test]
    fn dot_dot_and_bad_modes_are_refused() {
        let text = example().replace(
            "/var/lib/node-problem-check",
            "/var/lib/../node-problem-check",
        );
        assert!(error_of(&text).contains("must not contain `..`"));
        let text = example().replace("mode: \"0700\"", "mode: \"0799\"");
        let err = error_of(&text);
        assert!(
            err.contains("directories[1].mode") && err.contains("octal"),
            "{err}"
        );
    }

    #[test]
    fn cross_field_checks_point_at_the_field() {
        let text = example().replace("dnsIp: 100.64.0.10", "dnsIp: 10.0.0.10");
        let err = error_of(&text);
        assert!(
            err.contains("cluster.dnsIp: 10.0.0.10 is not inside serviceCidr"),
            "{err}"
        );
        assert!(err.contains("line 12"), "{err}");

        let text = example().replace(
            "  - path: /etc/security/limits.d/90-kubernetes.conf",
            "  - path: /etc/systemd/journald.conf.d/50-nodewright.conf",
        );
        let err = error_of(&text);
        assert!(err.contains("files[1].path: /etc/systemd/journald.conf.d/50-nodewright.conf is already declared at files[0].path"), "{err}");
    }

    #[test]
    fn secret_files_must_be_private() {
        let text = example().replace(
            "      *       hard    nofile  1048576\n",
            "      *       hard    nofile  1048576\n    secret: true\n",
        );
        let err = error_of(&text);
        assert!(
            err.contains("files[1].mode") && err.contains("secret"),
            "{err}"
        );
    }

    #[test]
    fn several_problems_are_listed_together() {
        let text = example()
            .replace("dnsIp: 100.64.0.10", "dnsIp: 10.0.0.10")
            .replace(
                "apiVersion: nodewright.io/v1alpha1",
                "apiVersion: nodewright.io/v2",
            );
        let err = error_of(&text);
        assert!(err.contains("apiVersion") && err.contains("dnsIp"), "{err}");
    }

    #[test]
    fn schema_is_generated_from_the_types() {
        let schema = crate::spec::json_schema(false);
        assert_eq!(schema["additionalProperties"], false);
        assert!(schema["properties"]["cluster"].is_object());
        let text = schema.to_string();
        assert!(
            text.contains("kubernetesVersion") && text.contains("FileMode"),
            "{text}"
        );
    }

    #[test]
    fn component_sections_are_checked_against_each_other() {
        // The kubelet needs containerd, the API name and the CA.
        let text = example()
            .replace("  api:\n    name: api.internal.prod.example.com\n", "")
            .replace("    # The internal load balancer's addresses: pinned in /etc/hosts, no DNS record needed.\n    loadBalancerIps: [10.0.0.10, 10.0.32.10]\n", "");
        let err = error_of(&text);
        assert!(err.contains("the kubelet needs cluster.api"), "{err}");
        let start = example().find("containerd:\n  version").unwrap();
        let end = example().find("cni:\n").unwrap();
        let text = format!("{}{}", &example()[..start], &example()[end..]);
        let err = error_of(&text);
        assert!(
            err.contains("kubelet: the kubelet needs a container runtime"),
            "{err}"
        );

        // protectKernelDefaults: a spec value the kubelet refuses.
        let text = example().replace(
            "  net.ipv4.tcp_keepalive_time: 600",
            "  net.ipv4.tcp_keepalive_time: 600\n  kernel.panic: 0",
        );
        let err = error_of(&text);
        assert!(
            err.contains("sysctls[\"kernel.panic\"]: the kubelet (protectKernelDefaults) refuses to start unless kernel.panic = 10"),
            "{err}"
        );
        // ...and passes once the kubelet does not check them.
        let text = text.replace(
            "    maxPods: 110",
            "    maxPods: 110\n    protectKernelDefaults: false",
        );
        NodeSpec::parse("spec.yaml", &text).unwrap();
    }

    #[test]
    fn kubelet_values_the_kubelet_would_refuse() {
        let cases = [
            (
                "    node.kubernetes.io/node-group: nodes-us-east-1a",
                "    node-role.kubernetes.io/worker: \"\"",
                "a kubelet may not set node-role.kubernetes.io/worker",
            ),
            (
                "    imageGCLowThresholdPercent: 75",
                "    imageGCLowThresholdPercent: 90",
                "imageGCLowThresholdPercent: 90 must be below imageGCHighThresholdPercent",
            ),
            (
                "    containerLogMaxWorkers: 2",
                "    staticPodPath: /srv/manifests",
                "kubelet.extraConfig.staticPodPath: is set by nodewright",
            ),
            (
                "    maxPods: 110",
                "    maxPods: 110\n    serializeImagePulls: true\n    maxParallelImagePulls: 3",
                "must be 1 or unset when serializeImagePulls is true",
            ),
            (
                "    maxPods: 110",
                "    maxPods: 110\n    evictionHard: {memory.available: lots}",
                "eviction threshold \"lots\"",
            ),
            (
                "    maxPods: 110",
                "    maxPods: 110\n    shutdownGracePeriod: 30",
                "kubelet.config.shutdownGracePeriod",
            ),
            (
                "kubeProxy:\n  mode: iptables",
                "kubeProxy:\n  mode: iptables\n  extraConfig:\n    hostnameOverride: x",
                "kubeProxy.extraConfig.hostnameOverride: is set by nodewright",
            ),
            (
                "    -----BEGIN CERTIFICATE-----\n",
                "    -----BEGIN CERTIFICATE----\n",
                "cluster.caCertificate: must be one PEM certificate",
            ),
            (
                "      - https://mirror.gcr.io",
                "      - mirror.gcr.io",
                "must be an http:// or https:// URL",
            ),
            (
                "  packages: [conntrack, ethtool, iptables, socat, nfs-common]",
                "  packages: [conntrack, ethtool, conntrack, --force-yes]",
                "package name \"--force-yes\"",
            ),
        ];
        for (from, to, wanted) in cases {
            let text = example().replace(from, to);
            assert_ne!(text, example(), "{from} is not in the example");
            let err = error_of(&text);
            assert!(err.contains(wanted), "{to}: {err}");
            assert!(err.contains("line "), "{to}: {err}");
        }
        // The static CPU manager without reserved CPU.
        let text = example().replace("      cpu: 100m\n", "").replace(
            "    maxPods: 110",
            "    maxPods: 110\n    cpuManagerPolicy: static",
        );
        assert!(error_of(&text).contains("the static CPU manager needs CPU reserved"));
        NodeSpec::parse(
            "spec.yaml",
            &example().replace(
                "    maxPods: 110",
                "    maxPods: 110\n    cpuManagerPolicy: static",
            ),
        )
        .unwrap();
        // kube-proxy without a kubelet has nothing to run it.
        let start = example().find("kubelet:\n  binary").unwrap();
        let end = example().find("kubeProxy:").unwrap();
        let text = format!("{}{}", &example()[..start], &example()[end..]);
        assert!(error_of(&text).contains("kube-proxy runs as a static pod of the kubelet"));
    }
}
