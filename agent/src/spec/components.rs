//! The control plane's components under `controlPlane`: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and controller-shim. Each runs as a static pod
//! of the kubelet (or, for etcd and controller-shim, as a systemd service from a binary
//! asset). Typed fields cover what matters; `extraArgs` adds or overrides flags.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::etcd_backup::EtcdBackupSpec;
use super::types::{AbsPath, AssetName};
use super::values::{ImageRef, Quantity};

/// How a component runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RunMode {
    /// A static pod of the kubelet, from `image`.
    #[default]
    StaticPod,
    /// A systemd service running the binary that `asset` installs at `binary`.
    Systemd,
}

/// Flags passed as `--<name>=<value>`, after (and over) the ones nodewright sets.
pub type ExtraArgs = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdSpec {
    #[serde(default)]
    pub mode: RunMode,
    /// staticPod mode: the etcd image.
    #[serde(default = "default_etcd_image")]
    pub image: ImageRef,
    /// systemd mode: the asset (see `assets`) whose install puts the etcd binary at
    /// `binary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<AssetName>,
    #[serde(default = "default_etcd_binary")]
    pub binary: AbsPath,
    /// The restore's `snapshot restore` tool from the same etcd release: `etcdctl`
    /// (3.4, 3.5) or `etcdutl` (3.5 and later); default `/usr/local/bin/etcdctl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_tool: Option<AbsPath>,
    /// Per etcd cluster (the names of `etcdVolumes.clusters`). `main` and `events`
    /// default to kops's ports (clients 4001/4002, peers 2380/2381, metrics 8081/8082).
    #[serde(default = "default_etcd_clusters")]
    pub clusters: BTreeMap<String, EtcdClusterSpec>,
    #[serde(default = "default_etcd_cpu")]
    pub cpu_request: Quantity,
    #[serde(default = "default_etcd_memory")]
    pub memory_request: Quantity,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdClusterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    /// Plain-HTTP `/health` and `/metrics` on 127.0.0.1 (the probes use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
    /// `--quota-backend-bytes`; etcd's own default (2 GiB) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_backend_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: ExtraArgs,
    /// Periodic backups to the state store; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<EtcdBackupSpec>,
}

/// The ports of one etcd cluster, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdPorts {
    pub client: u16,
    pub peer: u16,
    pub metrics: u16,
}

impl EtcdClusterSpec {
    /// The ports, or `None` when one is missing and `name` has no default.
    pub fn ports(&self, name: &str) -> Option<EtcdPorts> {
        let default = match name {
            "main" => Some((4001, 2380, 8081)),
            "events" => Some((4002, 2381, 8082)),
            _ => None,
        };
        Some(EtcdPorts {
            client: self.client_port.or(default.map(|d| d.0))?,
            peer: self.peer_port.or(default.map(|d| d.1))?,
            metrics: self.metrics_port.or(default.map(|d| d.2))?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiServerSpec {
    /// Default `registry.k8s.io/kube-apiserver:v<cluster.kubernetesVersion>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// The port it serves on (all addresses); kubeconfigs on the node use 127.0.0.1.
    #[serde(default = "default_secure_port")]
    pub secure_port: u16,
    #[serde(default = "default_authorization_modes")]
    pub authorization_modes: Vec<String>,
    /// `--enable-admission-plugins`.
    #[serde(default = "default_admission_plugins")]
    pub admission_plugins: Vec<String>,
    /// Audit logging; off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSpec>,
    /// The service-account token issuer; default `https://<cluster.api.name>` (or
    /// `https://api.internal.<cluster>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_issuer: Option<String>,
    /// Encrypt secrets at rest with the encryption config the PKI step writes.
    #[serde(default)]
    pub encryption_config: bool,
    #[serde(default = "default_apiserver_cpu")]
    pub cpu_request: Quantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: ExtraArgs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuditSpec {
    /// The audit policy file (e.g. one of `files`).
    pub policy_file: AbsPath,
    /// Where the log goes; its directory is mounted into the pod.
    #[serde(default = "default_audit_log")]
    pub log_path: AbsPath,
    #[serde(default = "default_audit_max_age")]
    pub max_age_days: u32,
    #[serde(default = "default_audit_max_backups")]
    pub max_backups: u32,
    #[serde(default = "default_audit_max_size")]
    pub max_size_mb: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControllerManagerSpec {
    /// Default `registry.k8s.io/kube-controller-manager:v<cluster.kubernetesVersion>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// Give each node a pod CIDR out of `cluster.podCidr`.
    #[serde(default = "yes")]
    pub allocate_node_cidrs: bool,
    /// Sign CSRs (kubelet serving certificates and the like) with the cluster CA.
    #[serde(default = "yes")]
    pub cluster_signing: bool,
    #[serde(default = "default_kcm_cpu")]
    pub cpu_request: Quantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: ExtraArgs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SchedulerSpec {
    /// Default `registry.k8s.io/kube-scheduler:v<cluster.kubernetesVersion>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    #[serde(default = "default_scheduler_cpu")]
    pub cpu_request: Quantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: ExtraArgs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControllerShimSpec {
    #[serde(default)]
    pub mode: RunMode,
    /// staticPod mode: the controller-shim image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// systemd mode: the asset whose install puts the binary at `binary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<AssetName>,
    #[serde(default = "default_shim_binary")]
    pub binary: AbsPath,
    #[serde(default = "default_shim_port")]
    pub port: u16,
    /// S3 bucket and key prefix of the bootstrap records.
    pub state_bucket: String,
    /// Default `<cluster>/controller-shim/nodes/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_prefix: Option<String>,
    /// The EC2 tag naming an instance's node group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_group_tag: Option<String>,
    /// The node groups the shim serves. Left out (the usual way): the shim reads them
    /// while it runs from `s3://<stateBucket>/<cluster>/controller-shim/node-groups.yaml`
    /// (a `NodeGroups` document), so adding a group does not change this spec and roll
    /// the control plane. Listed here, they are fixed with the control plane.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_groups: Vec<ShimNodeGroup>,
    /// Validity of the kubelet certificates it issues.
    #[serde(default = "default_shim_validity")]
    pub certificate_validity_days: u32,
    #[serde(default = "default_shim_cpu")]
    pub cpu_request: Quantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<Quantity>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ShimNodeGroup {
    pub name: String,
    /// `s3://bucket/path/` or `file:///path/`: the prefix the group's node specs are
    /// kept under, each at `<prefix>nodespec/<sha256>.yaml`, never replaced in place.
    pub node_specs: String,
    /// IAM role names whose instances may bootstrap into the group.
    pub roles: Vec<String>,
    /// `privateDnsName` (default) or `instanceId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<ShimNodeName>,
    #[serde(default)]
    pub allow_rebootstrap: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ShimNodeName {
    PrivateDnsName,
    InstanceId,
}

fn yes() -> bool {
    true
}
fn default_etcd_image() -> ImageRef {
    ImageRef::try_from("registry.k8s.io/etcd:3.5.21-0").expect("a valid constant")
}
impl EtcdSpec {
    /// The `snapshot restore` tool, default applied.
    pub fn restore_tool(&self) -> AbsPath {
        self.restore_tool.clone().unwrap_or_else(|| {
            AbsPath::try_from("/usr/local/bin/etcdctl").expect("a valid constant")
        })
    }
}

fn default_etcd_binary() -> AbsPath {
    AbsPath::try_from("/usr/local/bin/etcd").expect("a valid constant")
}
fn default_shim_binary() -> AbsPath {
    AbsPath::try_from("/usr/local/bin/controller-shim").expect("a valid constant")
}
fn default_etcd_clusters() -> BTreeMap<String, EtcdClusterSpec> {
    ["main", "events"]
        .into_iter()
        .map(|n| (n.to_owned(), EtcdClusterSpec::default()))
        .collect()
}
fn quantity(text: &str) -> Quantity {
    Quantity::try_from(text).expect("a valid constant")
}
fn default_etcd_cpu() -> Quantity {
    quantity("200m")
}
fn default_etcd_memory() -> Quantity {
    quantity("100Mi")
}
fn default_apiserver_cpu() -> Quantity {
    quantity("150m")
}
fn default_kcm_cpu() -> Quantity {
    quantity("100m")
}
fn default_scheduler_cpu() -> Quantity {
    quantity("100m")
}
fn default_shim_cpu() -> Quantity {
    quantity("50m")
}
fn default_secure_port() -> u16 {
    443
}
fn default_shim_port() -> u16 {
    3988
}
fn default_shim_validity() -> u32 {
    365
}
fn default_authorization_modes() -> Vec<String> {
    vec!["Node".to_owned(), "RBAC".to_owned()]
}
fn default_admission_plugins() -> Vec<String> {
    vec!["NodeRestriction".to_owned()]
}
fn default_audit_log() -> AbsPath {
    AbsPath::try_from("/var/log/kubernetes/audit/audit.log").expect("a valid constant")
}
fn default_audit_max_age() -> u32 {
    10
}
fn default_audit_max_backups() -> u32 {
    1
}
fn default_audit_max_size() -> u32 {
    100
}

#[cfg(test)]
mod tests {
    use crate::spec::NodeSpec;

    fn example() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/control-plane/nodespec.yaml"
        ))
        .unwrap()
    }

    fn error_of(text: &str) -> String {
        NodeSpec::parse("spec.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn the_example_parses_with_its_components() {
        let spec = NodeSpec::parse("cp", &example()).unwrap();
        let cp = spec.control_plane.unwrap();
        let etcd = cp.etcd.unwrap();
        assert_eq!(etcd.image.as_str(), "registry.k8s.io/etcd:3.5.21-0");
        let main = etcd.clusters["main"].ports("main").unwrap();
        assert_eq!((main.client, main.peer, main.metrics), (4001, 2380, 8081));
        assert_eq!(cp.api_server.unwrap().secure_port, 443);
    }

    #[test]
    fn a_bad_flag_name_is_an_error_naming_its_path() {
        let cases = [
            (
                "      profiling: \"false\"\n      # Overrides",
                "      \"\": \"false\"\n      # Overrides",
                "controlPlane.apiServer.extraArgs[\"\"]: \"\" is not a flag name",
            ),
            (
                "      terminated-pod-gc-threshold: \"12500\"",
                "      --terminated-pod-gc-threshold: \"12500\"",
                "controlPlane.controllerManager.extraArgs[\"--terminated-pod-gc-threshold\"]: \"--terminated-pod-gc-threshold\" is not a flag name",
            ),
            (
                "          auto-compaction-retention: 1h",
                "          auto-compaction-retention: \"1h\\nx\"",
                "controlPlane.etcd.clusters.events.extraArgs[\"auto-compaction-retention\"]: a flag value must be one line",
            ),
        ];
        for (from, to, wanted) in cases {
            let text = example().replacen(from, to, 1);
            assert_ne!(text, example(), "{from} is not in the example");
            let err = error_of(&text);
            assert!(err.contains(wanted), "{to}: {err}");
            assert!(err.contains(" at line "), "{err}");
        }
    }

    #[test]
    fn components_are_checked_against_each_other() {
        let cases = [
            (
                "    image: registry.k8s.io/etcd:3.5.21-0\n",
                "    image: registry.k8s.io/etcd:3.5.21-0\n    mode: systemd\n",
                "controlPlane.etcd.asset: systemd mode needs the asset",
            ),
            (
                "    image: registry.k8s.io/etcd:3.5.21-0\n",
                "    image: registry.k8s.io/etcd:3.5.21-0\n    mode: systemd\n    asset: etcd\n",
                "controlPlane.etcd.asset: asset etcd is not declared in assets",
            ),
            (
                "    clusters: [main, events]\n",
                "    clusters: [main]\n",
                "controlPlane.etcd.clusters.events: etcd cluster events is not in etcdVolumes.clusters",
            ),
            (
                "        quotaBackendBytes: 8589934592\n",
                "        quotaBackendBytes: 8589934592\n        clientPort: 4002\n",
                "controlPlane.etcd.clusters.main.clientPort: port 4002 is already used by controlPlane.etcd.clusters.events.clientPort",
            ),
            (
                "    image: ghcr.io/nodewright/controller-shim:0.1.0\n",
                "",
                "controlPlane.controllerShim.image: staticPod mode needs the controller-shim image",
            ),
            (
                "    authorizationModes: [Node, RBAC]",
                "    authorizationModes: [\"Node,RBAC\"]",
                "controlPlane.apiServer.authorizationModes[0]",
            ),
        ];
        for (from, to, wanted) in cases {
            let text = example().replacen(from, to, 1);
            assert_ne!(text, example(), "{from} is not in the example");
            let err = error_of(&text);
            assert!(err.contains(wanted), "{to}: {err}");
        }
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let text = example().replace("    encryptionConfig: true", "    encryptionConfg: true");
        let err = error_of(&text);
        assert!(err.contains("controlPlane.apiServer"), "{err}");
        assert!(err.contains("encryptionConfg"), "{err}");
    }
}
