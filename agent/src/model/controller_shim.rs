//! controller-shim on a control-plane node: its `ShimConfig` (built with the shim's own
//! types, so what is written is what the shim reads), and the shim as a static pod or
//! as a systemd service from a binary asset.

use nodewright_shim::config::{
    AwsSettings, CONFIG_API_VERSION, CONFIG_KIND, CertificateSettings, KeyPairFiles, Limits,
    NodeGroupsSource, ShimConfig, StateSettings,
};
use nodewright_shim::groups::{NodeGroup, NodeNaming, Rebootstrap};
use nodewright_shim::manifest::StaticPodSettings;
use nodewright_shim::protocol::HEALTH_PATH;

use super::ModelError;
use super::builder::{StateBuilder, fixed_path};
use super::desired::{DesiredService, Ownership};
use super::pki_paths as pki;
use super::pod::{HostMount, Probe, StaticPod, requests};
use super::render::MANAGED;
use crate::facts::Facts;
use crate::spec::{ControllerShimSpec, NodeSpec, RunMode, ShimNodeName, UnitName};

const COMPONENT: &str = "controller-shim";

pub const CONFIG: &str = "/etc/kubernetes/controller-shim/config.yaml";
pub const UNIT_NAME: &str = "controller-shim.service";

pub fn render(spec: &NodeSpec, facts: &Facts, out: &mut StateBuilder) -> Result<(), ModelError> {
    let Some(shim) = spec
        .control_plane
        .as_ref()
        .and_then(|c| c.controller_shim.as_ref())
    else {
        return Ok(());
    };
    let config = shim_config(spec, shim, facts);
    let text = yaml_serde::to_string(&config).map_err(|e| ModelError::Encode {
        what: "controller-shim config",
        detail: e.to_string(),
    })?;
    out.file(
        COMPONENT,
        fixed_path(CONFIG),
        format!("{MANAGED}{text}"),
        Ownership::root(0o600),
    )?;
    let trust_bundle = trust_bundle(facts);
    let files = [
        CONFIG,
        pki::SHIM_SERVING_CERT,
        pki::SHIM_SERVING_KEY,
        pki::CA_CERT,
        pki::CA_KEY,
    ];
    match shim.mode {
        RunMode::StaticPod => {
            let image = shim.image.as_ref().ok_or_else(|| {
                ModelError::Spec("controller-shim in staticPod mode needs an image".to_owned())
            })?;
            // The shim's own settings name the files its pod must mount.
            let mut settings = StaticPodSettings::new(image.as_str());
            settings.trust_bundle = trust_bundle.to_owned();
            let mounts: Vec<HostMount> = settings
                .mounts()
                .into_iter()
                .map(|(_, path)| HostMount::file(path))
                .collect();
            StaticPod {
                name: "controller-shim",
                image: image.as_str(),
                command: vec![
                    "/controller-shim".to_owned(),
                    "serve".to_owned(),
                    "--config".to_owned(),
                    CONFIG.to_owned(),
                ],
                mounts,
                probe: Probe {
                    scheme: "HTTPS",
                    port: shim.port,
                    liveness: HEALTH_PATH.to_owned(),
                    readiness: HEALTH_PATH.to_owned(),
                    startup: HEALTH_PATH.to_owned(),
                },
                requests: requests(
                    shim.cpu_request.as_str(),
                    shim.memory_request.as_ref().map(|q| q.as_str()),
                ),
                env: vec![("SSL_CERT_FILE", trust_bundle.to_owned())],
            }
            .add(COMPONENT, out)
        }
        RunMode::Systemd => {
            let unit = UnitName::try_from(UNIT_NAME)?;
            let text = format!(
                "# Managed by nodewright: controller-shim serves the bootstrap of this cluster's workers.\n\
                 [Unit]\n\
                 Description=controller-shim (node bootstrap for {cluster})\n\
                 Wants=network-online.target\n\
                 After=network-online.target\n\
                 \n\
                 [Service]\n\
                 # The node's site settings (proxy, AWS endpoint), as for nodewright itself.\n\
                 EnvironmentFile=-/etc/default/nodewright\n\
                 ExecStart={binary} serve --config {CONFIG}\n\
                 Environment=SSL_CERT_FILE={trust_bundle}\n\
                 Restart=always\n\
                 RestartSec=5\n\
                 NoNewPrivileges=yes\n\
                 ProtectSystem=strict\n\
                 ProtectHome=yes\n\
                 PrivateTmp=yes\n\
                 \n\
                 [Install]\n\
                 WantedBy=multi-user.target\n",
                cluster = spec.cluster.name,
                binary = shim.binary,
            );
            let path = out.unit_file(COMPONENT, &unit, &text)?;
            let mut inputs = vec![path, shim.binary.clone()];
            inputs.extend(files.iter().map(|f| fixed_path(f)));
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
    }
}

/// The OS CA bundle (trust for STS, EC2 and S3), by distribution family.
fn trust_bundle(facts: &Facts) -> &'static str {
    match facts.host.distro.as_str() {
        "amzn" | "rhel" | "centos" | "rocky" | "almalinux" | "ol" | "fedora" => {
            "/etc/pki/tls/certs/ca-bundle.crt"
        }
        _ => "/etc/ssl/certs/ca-certificates.crt",
    }
}

fn shim_config(spec: &NodeSpec, shim: &ControllerShimSpec, facts: &Facts) -> ShimConfig {
    let cluster = spec.cluster.name.to_string();
    let certificates = CertificateSettings {
        validity_days: shim.certificate_validity_days,
        ..CertificateSettings::default()
    };
    ShimConfig {
        api_version: CONFIG_API_VERSION.to_owned(),
        kind: CONFIG_KIND.to_owned(),
        cluster_name: cluster.clone(),
        listen: format!("0.0.0.0:{}", shim.port),
        admin_listen: format!(
            "127.0.0.1:{}",
            nodewright_shim::protocol::DEFAULT_ADMIN_PORT
        ),
        tls: KeyPairFiles {
            cert_file: pki::SHIM_SERVING_CERT.into(),
            key_file: pki::SHIM_SERVING_KEY.into(),
        },
        ca: KeyPairFiles {
            cert_file: pki::CA_CERT.into(),
            key_file: pki::CA_KEY.into(),
        },
        aws: AwsSettings {
            region: facts.instance.region.clone(),
            account_id: facts.instance.account_id.clone(),
            partition: partition(&facts.instance.region).to_owned(),
            sts_endpoint: None,
        },
        state: StateSettings {
            bucket: shim.state_bucket.clone(),
            prefix: shim
                .state_prefix
                .clone()
                .unwrap_or_else(|| format!("{cluster}/controller-shim/nodes/")),
        },
        // Listed in the spec: fixed here. Left out: read from the store at run time.
        node_groups: if shim.node_groups.is_empty() {
            NodeGroupsSource::Store(format!(
                "s3://{}/{cluster}/controller-shim/node-groups.yaml",
                shim.state_bucket
            ))
        } else {
            NodeGroupsSource::Inline(
                shim.node_groups
                    .iter()
                    .map(|g| NodeGroup {
                        name: g.name.clone(),
                        node_specs: g.node_specs.clone(),
                        roles: g.roles.clone(),
                        node_name: match g.node_name {
                            Some(ShimNodeName::InstanceId) => NodeNaming::InstanceId,
                            _ => NodeNaming::PrivateDnsName,
                        },
                        rebootstrap: if g.allow_rebootstrap {
                            Rebootstrap::Allowed
                        } else {
                            Rebootstrap::Never
                        },
                    })
                    .collect(),
            )
        },
        node_group_tag: shim
            .node_group_tag
            .clone()
            .unwrap_or_else(|| "nodewright.io/node-group".to_owned()),
        certificates,
        limits: Limits::default(),
    }
}

fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}
