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
use super::entries::{DirectoryEntry, FileEntry, SymlinkEntry, SysctlValue, SystemdSpec};
use super::host::HostSpec;
use super::kube_proxy::KubeProxySpec;
use super::kubelet::KubeletSpec;
use super::numbers::KubernetesVersion;
use super::types::{AbsPath, DnsName, ModuleName, SysctlKey};
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
                "  enabled: false\n  mode: iptables",
                "  enabled: false\n  mode: iptables\n  extraConfig:\n    hostnameOverride: x",
                "kubeProxy.extraConfig.hostnameOverride: is set by nodewright",
            ),
            (
                "    -----BEGIN CERTIFICATE-----\n",
                "    -----BEGIN CERTIFICATE----\n",
                "cluster.caCertificate: must be PEM certificates",
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
        let tls_bootstrap: &[(&str, &str, &str)] = &[
            (
                "    tokenFile: /etc/kubernetes/bootstrap-token",
                "    tokenFile: /etc/kubernetes/other-token",
                "kubelet.tlsBootstrap.tokenFile: /etc/kubernetes/other-token is none of this spec's files",
            ),
            (
                "    secret: true\n    content: \"07401b",
                "    content: \"07401b",
                "holds a bootstrap token: mark that file secret: true",
            ),
            (
                "07401b.f395accd246ae52d",
                "07401b-f395accd246ae52d",
                "does not hold a bootstrap token",
            ),
            (
                "  enabled: false\n  mode: iptables",
                "  enabled: true\n  mode: iptables",
                "kubeProxy.enabled: a worker that joins by TLS bootstrapping holds no kube-proxy certificate",
            ),
        ];
        for (from, to, wanted) in cases.iter().chain(tls_bootstrap) {
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
        let text = format!("{}{}", &example()[..start], &example()[end..])
            .replace("  enabled: false\n", "");
        assert!(error_of(&text).contains("kube-proxy runs as a static pod of the kubelet"));
    }
}
