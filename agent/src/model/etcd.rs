//! etcd: one member per etcd cluster this node holds a volume of. The volume decides
//! which member the node is (`facts.control_plane.etcd_members`); the member list comes
//! from the same volume tag, the peer names from `controlPlane.dns`. TLS everywhere:
//! clients and peers must present a certificate of the etcd CA.
//!
//! Runs as a static pod, or as a systemd service from a binary asset whose data
//! directory is on the member's volume mount (ordered after its mount unit).

use std::collections::BTreeMap;

use super::ModelError;
use super::builder::{StateBuilder, fixed_path};
use super::desired::{DesiredService, Ownership};
use super::pki_paths::{
    ETCD_CA_CERT, etcd_peer_cert, etcd_peer_key, etcd_server_cert, etcd_server_key,
};
use super::pod::{HostMount, Probe, StaticPod, flag_map, flags, requests};
use crate::facts::{EtcdMember, Facts};
use crate::spec::{
    ControlPlaneSpec, EtcdClusterSpec, EtcdPorts, EtcdSpec, NodeSpec, RunMode, UnitName,
    etcd_peer_name,
};

const COMPONENT: &str = "etcd";

/// The member's data directory, on its volume.
pub fn data_dir(member: &EtcdMember) -> String {
    format!("{}/data", member.mount_path.as_str().trim_end_matches('/'))
}

/// The systemd unit of etcd cluster `cluster` (systemd mode).
pub fn unit_name(cluster: &str) -> String {
    format!("etcd-{cluster}.service")
}

pub fn render(spec: &NodeSpec, facts: &Facts, out: &mut StateBuilder) -> Result<(), ModelError> {
    let Some(control_plane) = &spec.control_plane else {
        return Ok(());
    };
    let Some(etcd) = &control_plane.etcd else {
        return Ok(());
    };
    for (cluster, member) in &facts.control_plane.etcd_members {
        let Some(settings) = etcd.clusters.get(cluster) else {
            return Err(ModelError::Node(format!(
                "this node holds a volume of etcd cluster {cluster}, which controlPlane.etcd.clusters does not list"
            )));
        };
        let ports = settings
            .ports(cluster)
            .ok_or_else(|| ModelError::Spec(format!("etcd cluster {cluster} has no ports")))?;
        let member_flags = member_flags(spec, control_plane, cluster, member, settings, ports);
        let data = fixed_path(&data_dir(member));
        // etcd refuses a data directory others can read.
        out.directory(COMPONENT, data.clone(), Ownership::root(0o700))?;
        out.protect(
            member.mount_path.clone(),
            format!(
                "etcd data of member {} of etcd cluster {cluster}",
                member.member
            ),
        );
        let certs = [
            ETCD_CA_CERT.to_owned(),
            etcd_server_cert(cluster),
            etcd_server_key(cluster),
            etcd_peer_cert(cluster),
            etcd_peer_key(cluster),
        ];
        match etcd.mode {
            RunMode::StaticPod => {
                let name = format!("etcd-{cluster}");
                let mut command = vec!["etcd".to_owned()];
                command.extend(member_flags);
                let mut mounts: Vec<HostMount> = certs.iter().map(HostMount::file).collect();
                mounts.push(HostMount::dir(data.to_string()));
                StaticPod {
                    name: &name,
                    image: etcd.image.as_str(),
                    command,
                    mounts,
                    probe: health_probe(ports),
                    requests: requests(
                        etcd.cpu_request.as_str(),
                        Some(etcd.memory_request.as_str()),
                    ),
                    env: vec![],
                }
                .add(COMPONENT, out)?;
            }
            RunMode::Systemd => {
                systemd_unit(etcd, cluster, member, &member_flags, &certs, out)?;
            }
        }
    }
    Ok(())
}

/// `/health` on the plain-HTTP metrics listener (127.0.0.1 only).
fn health_probe(ports: EtcdPorts) -> Probe {
    Probe {
        scheme: "HTTP",
        port: ports.metrics,
        liveness: "/health?exclude=NOSPACE&serializable=true".to_owned(),
        readiness: "/health?serializable=false".to_owned(),
        startup: "/health?serializable=false".to_owned(),
    }
}

fn member_flags(
    spec: &NodeSpec,
    control_plane: &ControlPlaneSpec,
    cluster: &str,
    member: &EtcdMember,
    settings: &EtcdClusterSpec,
    ports: EtcdPorts,
) -> Vec<String> {
    let domain = control_plane.dns.as_ref().map_or_else(
        || format!("internal.{}", spec.cluster.name),
        |d| d.etcd_domain(&spec.cluster.name),
    );
    let peer_name = |m: &str| {
        member
            .peer_names
            .get(m)
            .cloned()
            .unwrap_or_else(|| etcd_peer_name(cluster, m, &domain))
    };
    let me = peer_name(&member.member);
    let initial_cluster: Vec<String> = member
        .members
        .iter()
        .map(|m| format!("{m}=https://{}:{}", peer_name(m), ports.peer))
        .collect();
    let mut ours: BTreeMap<String, String> = flag_map([
        ("name", member.member.clone()),
        ("data-dir", data_dir(member)),
        (
            "listen-client-urls",
            format!("https://0.0.0.0:{}", ports.client),
        ),
        (
            "advertise-client-urls",
            format!("https://{me}:{}", ports.client),
        ),
        (
            "listen-peer-urls",
            format!("https://0.0.0.0:{}", ports.peer),
        ),
        (
            "initial-advertise-peer-urls",
            format!("https://{me}:{}", ports.peer),
        ),
        ("initial-cluster", initial_cluster.join(",")),
        ("initial-cluster-state", "new".to_owned()),
        (
            "initial-cluster-token",
            format!("etcd-cluster-{cluster}-{}", spec.cluster.name),
        ),
        (
            "listen-metrics-urls",
            format!("http://127.0.0.1:{}", ports.metrics),
        ),
        ("client-cert-auth", "true".to_owned()),
        ("trusted-ca-file", ETCD_CA_CERT.to_owned()),
        ("cert-file", etcd_server_cert(cluster)),
        ("key-file", etcd_server_key(cluster)),
        ("peer-client-cert-auth", "true".to_owned()),
        ("peer-trusted-ca-file", ETCD_CA_CERT.to_owned()),
        ("peer-cert-file", etcd_peer_cert(cluster)),
        ("peer-key-file", etcd_peer_key(cluster)),
    ]);
    if let Some(quota) = settings.quota_backend_bytes {
        ours.insert("quota-backend-bytes".to_owned(), quota.to_string());
    }
    flags(ours, &settings.extra_args)
}

fn systemd_unit(
    etcd: &EtcdSpec,
    cluster: &str,
    member: &EtcdMember,
    member_flags: &[String],
    certs: &[String],
    out: &mut StateBuilder,
) -> Result<(), ModelError> {
    let unit = UnitName::try_from(unit_name(cluster).as_str())?;
    let mut exec = format!("ExecStart={}", etcd.binary);
    for flag in member_flags {
        // systemd would expand `$` and `%` in the command line.
        let flag = flag.replace('%', "%%").replace('$', "$$");
        exec.push_str(&format!(" \\\n  {flag}"));
    }
    let text = format!(
        "# Managed by nodewright: member {member_name} of etcd cluster {cluster}, its data on\n\
         # volume {volume} (mounted at {mount}).\n\
         [Unit]\n\
         Description=etcd member {member_name} of etcd cluster {cluster}\n\
         Documentation=https://etcd.io/docs/\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         # Needs the volume's mount unit, and starts after it.\n\
         RequiresMountsFor={mount}\n\
         \n\
         [Service]\n\
         Type=notify\n\
         {exec}\n\
         Restart=always\n\
         RestartSec=5\n\
         LimitNOFILE=65536\n\
         TimeoutStartSec=300\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        member_name = member.member,
        volume = member.volume_id,
        mount = member.mount_path,
    );
    let path = out.unit_file(COMPONENT, &unit, &text)?;
    let mut inputs = vec![path, etcd.binary.clone()];
    inputs.extend(certs.iter().map(|c| fixed_path(c)));
    out.service(
        COMPONENT,
        DesiredService {
            unit,
            enabled: true,
            running: true,
            inputs,
            ready_with_peers: true,
        },
    )
}

/// The etcd client URLs of this node's members, for the API server: `main` and the
/// others, by cluster name.
pub fn local_client_urls(etcd: &EtcdSpec) -> BTreeMap<String, String> {
    etcd.clusters
        .iter()
        .filter_map(|(name, c)| {
            c.ports(name)
                .map(|p| (name.clone(), format!("https://127.0.0.1:{}", p.client)))
        })
        .collect()
}
