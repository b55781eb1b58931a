//! The kubelet: its binary, KubeletConfiguration, kubeconfig, unit and drop-in, and the
//! ECR credential provider. Used for workers and control-plane nodes alike.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::ModelError;
use super::builder::{StateBuilder, fixed_path};
use super::cluster::CA_CERT;
use super::desired::{DesiredService, Ownership};
use super::kubeconfig::Kubeconfig;
use super::merge::merge_json;
use super::pki_paths::{KUBELET_SERVING_CERT, KUBELET_SERVING_KEY};
use super::render::{MANAGED, to_yaml};
use crate::facts::Facts;
use crate::spec::{AbsPath, KubeletSpec, NodeIpFamily, NodeNameSource, NodeSpec, Role, UnitName};

const COMPONENT: &str = "kubelet";

pub const DEFAULT_BIN: &str = "/usr/local/bin/kubelet";
pub const DIR: &str = "/var/lib/kubelet";
pub const PKI_DIR: &str = "/var/lib/kubelet/pki";
pub const CONFIG: &str = "/var/lib/kubelet/config.yaml";
pub const KUBECONFIG: &str = "/var/lib/kubelet/kubeconfig";
/// The kubelet's client certificate: issued through controller-shim on workers, on the
/// node itself on control-plane nodes. Not written here; an input of the service.
pub const CLIENT_CERT: &str = "/var/lib/kubelet/pki/kubelet-client.crt";
pub const CLIENT_KEY: &str = "/var/lib/kubelet/pki/kubelet-client.key";
/// TLS bootstrapping: the kubeconfig the kubelet first authenticates with (a bootstrap
/// token, by file); the kubelet then writes [`KUBECONFIG`] itself, pointing at the
/// certificate it was issued (`pki/kubelet-client-current.pem`, rotated).
pub const BOOTSTRAP_KUBECONFIG: &str = "/var/lib/kubelet/bootstrap-kubeconfig";
pub const CREDENTIAL_PROVIDER_CONFIG: &str = "/var/lib/kubelet/credential-provider.yaml";
pub const DEFAULT_ECR_PROVIDER: &str =
    "/usr/local/libexec/kubelet-credential-providers/ecr-credential-provider";
pub const MANIFESTS: &str = "/etc/kubernetes/manifests";
pub const UNIT: &str = "kubelet.service";
pub const DROP_IN: &str = "10-nodewright.conf";

/// The node's name: the private DNS name or the instance id, as the spec says.
pub fn node_name(kubelet: &KubeletSpec, facts: &Facts) -> String {
    match kubelet.node_name {
        NodeNameSource::PrivateDnsName => facts.instance.hostname.clone(),
        NodeNameSource::InstanceId => facts.instance.instance_id.clone(),
    }
}

/// `aws:///<zone>/<instance-id>`: lets the cloud controller find the instance at once.
pub fn provider_id(facts: &Facts) -> String {
    format!(
        "aws:///{}/{}",
        facts.instance.availability_zone, facts.instance.instance_id
    )
}

pub fn node_ips(kubelet: &KubeletSpec, facts: &Facts) -> Result<Vec<IpAddr>, ModelError> {
    let v4 = IpAddr::V4(facts.instance.private_ipv4);
    let v6 = || {
        facts.instance.ipv6.map(IpAddr::V6).ok_or_else(|| {
            ModelError::Node(format!(
                "kubelet.nodeIp asks for IPv6 but instance {} has no IPv6 address",
                facts.instance.instance_id
            ))
        })
    };
    Ok(match kubelet.node_ip {
        NodeIpFamily::Ipv4 => vec![v4],
        NodeIpFamily::Ipv6 => vec![v6()?],
        NodeIpFamily::DualStack => vec![v4, v6()?],
    })
}

/// The KubeletConfiguration: our defaults, then the spec's typed fields, then its
/// `extraConfig`.
pub fn configuration(
    spec: &NodeSpec,
    kubelet: &KubeletSpec,
    facts: &Facts,
) -> Result<Value, ModelError> {
    let cluster = &spec.cluster;
    let mut config = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true, "cacheTTL": "2m0s"},
            "x509": {"clientCAFile": CA_CERT},
        },
        "authorization": {
            "mode": "Webhook",
            "webhook": {"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"},
        },
        "cgroupDriver": "systemd",
        "cgroupRoot": "/",
        "clusterDNS": [cluster.dns_ip.to_string()],
        "clusterDomain": cluster.cluster_domain.as_str(),
        "containerRuntimeEndpoint": super::containerd::SOCKET,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "10%",
            "nodefs.inodesFree": "5%",
            "imagefs.available": "10%",
            "imagefs.inodesFree": "5%",
        },
        "failSwapOn": true,
        "logging": {"verbosity": kubelet.verbosity},
        "maxParallelImagePulls": 5,
        "protectKernelDefaults": true,
        "providerID": provider_id(facts),
        "readOnlyPort": 0,
        "serializeImagePulls": false,
        "shutdownGracePeriod": "30s",
        "shutdownGracePeriodCriticalPods": "10s",
        "staticPodPath": MANIFESTS,
    });
    if !kubelet.taints.is_empty() {
        let taints = serde_json::to_value(&kubelet.taints).map_err(|e| ModelError::Encode {
            what: "kubelet.taints",
            detail: e.to_string(),
        })?;
        merge_json(&mut config, &json!({ "registerWithTaints": taints }));
    }
    let typed = serde_json::to_value(&kubelet.config).map_err(|e| ModelError::Encode {
        what: "kubelet.config",
        detail: e.to_string(),
    })?;
    if kubelet.tls_bootstrap.is_some() {
        // The certificate it was issued expires: the kubelet renews it itself. Its
        // serving certificate stays self-signed (serverTLSBootstrap needs an approver).
        merge_json(&mut config, &json!({"rotateCertificates": true}));
    } else if serving_certificate_issued(spec) {
        merge_json(
            &mut config,
            &json!({
                "tlsCertFile": KUBELET_SERVING_CERT,
                "tlsPrivateKeyFile": KUBELET_SERVING_KEY,
            }),
        );
    }
    merge_json(&mut config, &typed);
    merge_json(&mut config, &Value::Object(kubelet.extra_config.clone()));
    // Our parallel-pull default is only valid with parallel pulls: the kubelet refuses
    // maxParallelImagePulls > 1 when pulls are serialized.
    let user_set_parallel = kubelet.config.max_parallel_image_pulls.is_some()
        || kubelet.extra_config.contains_key("maxParallelImagePulls");
    if config["serializeImagePulls"] == json!(true)
        && !user_set_parallel
        && let Some(map) = config.as_object_mut()
    {
        map.remove("maxParallelImagePulls");
    }
    Ok(config)
}

/// Whether the kubelet's serving pair (`kubelet-server.crt`/`.key`) is issued for this
/// node: by the control plane's PKI, or by controller-shim for a worker that does not
/// bootstrap itself (a worker from the state store without TLS bootstrapping is refused
/// before the model: `NodeSpec::kubelet_credentials_problem`).
fn serving_certificate_issued(spec: &NodeSpec) -> bool {
    match spec.role {
        Role::Worker => true,
        Role::ControlPlane => spec.control_plane.as_ref().is_some_and(|c| c.pki.is_some()),
    }
}

/// The flags that have no KubeletConfiguration field.
pub fn flags(kubelet: &KubeletSpec, facts: &Facts) -> Result<Vec<String>, ModelError> {
    let ips: Vec<String> = node_ips(kubelet, facts)?
        .iter()
        .map(IpAddr::to_string)
        .collect();
    let mut flags = vec![
        format!("--config={CONFIG}"),
        format!("--kubeconfig={KUBECONFIG}"),
        // The AWS cloud controller manager initialises the node (in-tree AWS is gone).
        "--cloud-provider=external".to_owned(),
        format!("--hostname-override={}", node_name(kubelet, facts)),
        format!("--node-ip={}", ips.join(",")),
    ];
    if kubelet.tls_bootstrap.is_some() {
        flags.push(format!("--bootstrap-kubeconfig={BOOTSTRAP_KUBECONFIG}"));
    }
    if !kubelet.labels.is_empty() {
        let labels: Vec<String> = kubelet
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        flags.push(format!("--node-labels={}", labels.join(",")));
    }
    if let Some(ecr) = &kubelet.ecr_credential_provider {
        let binary = ecr.binary.path_or(DEFAULT_ECR_PROVIDER);
        let dir = binary.parent().ok_or_else(|| {
            ModelError::Spec("kubelet.ecrCredentialProvider.binary.path is /".to_owned())
        })?;
        flags.push(format!(
            "--image-credential-provider-config={CREDENTIAL_PROVIDER_CONFIG}"
        ));
        flags.push(format!("--image-credential-provider-bin-dir={dir}"));
    }
    Ok(flags)
}

pub fn render(spec: &NodeSpec, facts: &Facts, out: &mut StateBuilder) -> Result<(), ModelError> {
    let Some(kubelet) = &spec.kubelet else {
        return Ok(());
    };
    let Some(api) = &spec.cluster.api else {
        return Err(ModelError::Spec("the kubelet needs cluster.api".to_owned()));
    };
    let binary = kubelet.binary.path_or(DEFAULT_BIN);
    if let Some(asset) = &kubelet.binary.asset {
        out.asset_file(
            COMPONENT,
            binary.clone(),
            asset.as_str(),
            kubelet.binary.member.as_ref().map(|m| m.as_str()),
            Ownership::root(0o755),
        )?;
    }
    out.directory(COMPONENT, fixed_path(DIR), Ownership::root(0o750))?;
    out.directory(COMPONENT, fixed_path(PKI_DIR), Ownership::root(0o700))?;
    out.directory(COMPONENT, fixed_path(MANIFESTS), Ownership::root(0o755))?;

    let config = configuration(spec, kubelet, facts)?;
    out.file(
        COMPONENT,
        fixed_path(CONFIG),
        to_yaml(config),
        Ownership::root(0o644),
    )?;
    let server = api.server_url();
    let kubeconfig = Kubeconfig {
        user: "kubelet",
        server: &server,
        ca_file: CA_CERT,
        client_certificate: CLIENT_CERT,
        client_key: CLIENT_KEY,
    };
    // What the kubelet authenticates with: its kubeconfig, then what that names.
    let (kubeconfig_input, credential_inputs) = match &kubelet.tls_bootstrap {
        // The kubelet writes its kubeconfig once it holds a certificate.
        Some(bootstrap) => {
            out.file(
                COMPONENT,
                fixed_path(BOOTSTRAP_KUBECONFIG),
                kubeconfig.render_token_file(bootstrap.token_file.as_str()),
                Ownership::root(0o600),
            )?;
            (
                fixed_path(BOOTSTRAP_KUBECONFIG),
                vec![bootstrap.token_file.clone()],
            )
        }
        None => {
            out.file(
                COMPONENT,
                fixed_path(KUBECONFIG),
                kubeconfig.render(),
                Ownership::root(0o600),
            )?;
            (
                fixed_path(KUBECONFIG),
                vec![fixed_path(CLIENT_CERT), fixed_path(CLIENT_KEY)],
            )
        }
    };

    let mut inputs: Vec<AbsPath> = Vec::new();
    if let Some(ecr) = &kubelet.ecr_credential_provider {
        let provider = ecr.binary.path_or(DEFAULT_ECR_PROVIDER);
        if let Some(asset) = &ecr.binary.asset {
            out.asset_file(
                "ecr-credential-provider",
                provider.clone(),
                asset.as_str(),
                ecr.binary.member.as_ref().map(|m| m.as_str()),
                Ownership::root(0o755),
            )?;
        }
        let name = provider
            .as_path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let provider_config = json!({
            "apiVersion": "kubelet.config.k8s.io/v1",
            "kind": "CredentialProviderConfig",
            "providers": [{
                "name": name,
                "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                "args": ["get-credentials"],
                "defaultCacheDuration": ecr.cache_duration.as_str(),
                "env": [{"name": "AWS_REGION", "value": facts.instance.region}],
                "matchImages": ecr.match_images,
            }],
        });
        out.file(
            COMPONENT,
            fixed_path(CREDENTIAL_PROVIDER_CONFIG),
            to_yaml(provider_config),
            Ownership::root(0o644),
        )?;
        inputs.push(fixed_path(CREDENTIAL_PROVIDER_CONFIG));
    }

    let unit = UnitName::try_from(UNIT)?;
    let unit_file = out.unit_file(COMPONENT, &unit, &unit_text(&binary))?;
    let drop_in = out.drop_in(
        COMPONENT,
        &unit,
        DROP_IN,
        &drop_in_text(&flags(kubelet, facts)?),
    )?;
    inputs.extend([
        unit_file,
        drop_in,
        fixed_path(CONFIG),
        kubeconfig_input,
        fixed_path(CA_CERT),
    ]);
    inputs.extend(credential_inputs);
    inputs.push(binary);
    out.service(
        COMPONENT,
        DesiredService {
            unit,
            enabled: true,
            running: true,
            inputs,
            ready_with_peers: false,
        },
    )
}

/// The unit: what does not depend on the node. Its flags come from the drop-in.
fn unit_text(binary: &AbsPath) -> String {
    format!(
        "{MANAGED}\
[Unit]
Description=Kubernetes node agent (kubelet)
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/
Wants=containerd.service network-online.target
After=containerd.service network-online.target
# Keep retrying: the API server may come up after the node.
StartLimitIntervalSec=0

[Service]
ExecStart={binary} $NODEWRIGHT_KUBELET_ARGS
Restart=always
RestartSec=5
CPUAccounting=true
MemoryAccounting=true

[Install]
WantedBy=multi-user.target
"
    )
}

/// The node's flags, as one variable the unit expands (split at spaces; no flag value
/// holds one: labels, names and addresses are checked).
fn drop_in_text(flags: &[String]) -> String {
    format!(
        "{MANAGED}[Service]\nEnvironment=\"NODEWRIGHT_KUBELET_ARGS={}\"\n",
        flags.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_spec;

    fn config_of(kubelet: &str) -> Value {
        let spec = test_spec(&format!(
            "containerd:\n  version: 1.7.27\nkubelet:\n{kubelet}"
        ));
        configuration(&spec, spec.kubelet.as_ref().unwrap(), &Facts::example()).unwrap()
    }

    #[test]
    fn layers_defaults_then_typed_fields_then_extra_config() {
        let config = config_of(
            "  config:
    maxPods: 58
    evictionHard:
      memory.available: 200Mi
    clusterDNS: [169.254.20.10]
  extraConfig:
    maxPods: 64
    evictionHard:
      nodefs.available: null
    shutdownGracePeriod: null
    podLogsDir: /var/log/pods2
",
        );
        // The passthrough wins over the typed field, which wins over the default.
        assert_eq!(config["maxPods"], 64);
        assert_eq!(config["clusterDNS"], json!(["169.254.20.10"]));
        // A typed mapping replaces ours key by key: our other thresholds stay.
        assert_eq!(config["evictionHard"]["memory.available"], "200Mi");
        assert_eq!(config["evictionHard"]["imagefs.available"], "10%");
        // null removes a default; unknown fields pass through.
        assert!(config["evictionHard"].get("nodefs.available").is_none());
        assert!(config.get("shutdownGracePeriod").is_none());
        assert_eq!(config["podLogsDir"], "/var/log/pods2");
        assert_eq!(
            config["providerID"],
            "aws:///us-east-1a/i-0a1b2c3d4e5f60718"
        );
    }

    #[test]
    fn serialized_pulls_drop_our_parallel_default() {
        let config = config_of("  config:\n    serializeImagePulls: true\n");
        assert!(config.get("maxParallelImagePulls").is_none());
        let config = config_of("  verbosity: 2\n");
        assert_eq!(config["maxParallelImagePulls"], 5);
    }

    #[test]
    fn node_names_and_addresses() {
        let spec = test_spec(
            "containerd:\n  version: 1.7.27\nkubelet:\n  nodeName: instanceId\n  nodeIp: dualStack\n",
        );
        let kubelet = spec.kubelet.as_ref().unwrap();
        let mut facts = Facts::example();
        assert_eq!(node_name(kubelet, &facts), "i-0a1b2c3d4e5f60718");
        let err = node_ips(kubelet, &facts).unwrap_err().to_string();
        assert!(err.contains("kubelet.nodeIp asks for IPv6"), "{err}");
        facts.instance.ipv6 = Some("2600:1f18::5".parse().unwrap());
        let flags = flags(kubelet, &facts).unwrap();
        assert!(
            flags.contains(&"--node-ip=10.0.1.23,2600:1f18::5".to_owned()),
            "{flags:?}"
        );
        assert!(flags.contains(&"--hostname-override=i-0a1b2c3d4e5f60718".to_owned()));
    }
}
