//! One etcd cluster as this node sees it, from the spec and facts the last converging
//! run applied (kept on the node, so the timer needs no network but etcd's and the
//! store's): this node's member, the ports, the client certificate, the backup policy,
//! the member's data directory and how its etcd is stopped and started.

use std::path::PathBuf;
use std::time::Duration;

use super::backup::{BackupSettings, PART_SIZE};
use super::client::{ClientTls, EtcdError};
use super::restore::{MemberService, RestoreSettings};
use super::retention::Retention;
use super::store::{BackupStore, StoreError};
use crate::error::{Classified, ErrorKind};
use crate::facts::{EtcdMember, Facts};
use crate::host::Host;
use crate::host::systemd::Job;
use crate::model::{etcd as etcd_model, kubelet, pki_paths};
use crate::runbook::Topic;
use crate::spec::{AbsPath, EtcdBackupSpec, EtcdPorts, NodeSpec, RunMode, etcd_peer_name};

/// How long one call to etcd may take (a snapshot's stream excepted).
pub const ETCD_CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(
        "this node's spec ({spec}) is not a control plane's with etcd: no etcd cluster to {what}"
    )]
    NoEtcd { spec: String, what: &'static str },
    #[error(
        "etcd cluster {etcd_cluster} is not in controlPlane.etcd.clusters of {spec} (it lists: {known})"
    )]
    UnknownCluster {
        etcd_cluster: String,
        spec: String,
        known: String,
    },
    #[error(
        "this node holds no member of etcd cluster {etcd_cluster} (no etcd volume of it was claimed by the last run)"
    )]
    NoMember { etcd_cluster: String },
    #[error(
        "etcd cluster {etcd_cluster} has no backup configured: set controlPlane.etcd.clusters.{etcd_cluster}.backup.store in the node spec"
    )]
    NoBackup { etcd_cluster: String },
    #[error("etcd cluster {etcd_cluster} has no ports (set clientPort, peerPort, metricsPort)")]
    NoPorts { etcd_cluster: String },
}

impl Classified for NodeError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NoMember { .. } => ErrorKind::NoState,
            _ => ErrorKind::InvalidInput,
        }
    }
    fn topic(&self) -> Option<Topic> {
        Some(Topic::EtcdBackupFailed)
    }
}

/// One etcd cluster of this node.
#[derive(Debug, Clone)]
pub struct EtcdNode {
    /// The Kubernetes cluster (`prod.example.com`).
    pub cluster: String,
    pub etcd_cluster: String,
    pub member: EtcdMember,
    pub ports: EtcdPorts,
    pub backup: Option<EtcdBackupSpec>,
    pub mode: RunMode,
    pub restore_tool: AbsPath,
    /// The domain of the peer names the spec does not name.
    domain: String,
}

impl EtcdNode {
    /// The view of `etcd_cluster` from a spec and its facts; `what` says what for, in
    /// the error when there is none.
    pub fn new(
        spec: &NodeSpec,
        spec_url: &str,
        facts: &Facts,
        etcd_cluster: &str,
        what: &'static str,
    ) -> Result<Self, NodeError> {
        let no_etcd = || NodeError::NoEtcd {
            spec: spec_url.to_owned(),
            what,
        };
        let control_plane = spec.control_plane.as_ref().ok_or_else(no_etcd)?;
        let etcd = control_plane.etcd.as_ref().ok_or_else(no_etcd)?;
        let settings =
            etcd.clusters
                .get(etcd_cluster)
                .ok_or_else(|| NodeError::UnknownCluster {
                    etcd_cluster: etcd_cluster.to_owned(),
                    spec: spec_url.to_owned(),
                    known: etcd.clusters.keys().cloned().collect::<Vec<_>>().join(", "),
                })?;
        let member = facts
            .control_plane
            .etcd_members
            .get(etcd_cluster)
            .cloned()
            .ok_or_else(|| NodeError::NoMember {
                etcd_cluster: etcd_cluster.to_owned(),
            })?;
        let ports = settings
            .ports(etcd_cluster)
            .ok_or_else(|| NodeError::NoPorts {
                etcd_cluster: etcd_cluster.to_owned(),
            })?;
        let domain = control_plane.dns.as_ref().map_or_else(
            || format!("internal.{}", spec.cluster.name),
            |d| d.etcd_domain(&spec.cluster.name),
        );
        Ok(Self {
            cluster: spec.cluster.name.to_string(),
            etcd_cluster: etcd_cluster.to_owned(),
            member,
            ports,
            backup: settings.backup.clone(),
            mode: etcd.mode,
            restore_tool: etcd.restore_tool(),
            domain,
        })
    }

    /// The backup policy, or why there is none.
    pub fn backup_spec(&self) -> Result<&EtcdBackupSpec, NodeError> {
        self.backup.as_ref().ok_or_else(|| NodeError::NoBackup {
            etcd_cluster: self.etcd_cluster.clone(),
        })
    }

    /// The etcd CA and this node's etcd client certificate (`etcd-client`).
    pub fn tls(&self, host: &Host) -> Result<ClientTls, EtcdError> {
        let at = |path: &str| host.root().join(path.trim_start_matches('/'));
        ClientTls::read(
            &at(pki_paths::ETCD_CA_CERT),
            &at(pki_paths::ETCD_CLIENT_CERT),
            &at(pki_paths::ETCD_CLIENT_KEY),
        )
    }

    /// This node's member, on loopback.
    pub fn local_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.client)
    }

    /// A member's peer name (`etcd-a.internal.<cluster>`), as the unit's flags use it.
    pub fn peer_name(&self, member: &str) -> String {
        self.member
            .peer_names
            .get(member)
            .cloned()
            .unwrap_or_else(|| etcd_peer_name(&self.etcd_cluster, member, &self.domain))
    }

    /// Every member's client endpoint, by its peer name (this node's included).
    pub fn member_endpoints(&self) -> Vec<String> {
        self.member
            .members
            .iter()
            .map(|m| format!("https://{}:{}", self.peer_name(m), self.ports.client))
            .collect()
    }

    /// Every member's name and peer URL, as `--initial-cluster` has them.
    pub fn initial_cluster(&self) -> Vec<(String, String)> {
        self.member
            .members
            .iter()
            .map(|m| {
                (
                    m.clone(),
                    format!("https://{}:{}", self.peer_name(m), self.ports.peer),
                )
            })
            .collect()
    }

    pub fn backup_settings(&self) -> Result<BackupSettings, NodeError> {
        let backup = self.backup_spec()?;
        Ok(BackupSettings {
            cluster: self.cluster.clone(),
            etcd_cluster: self.etcd_cluster.clone(),
            member: self.member.member.clone(),
            interval: backup.interval(),
            retention: Retention::days(backup.hourly_retention_days, backup.daily_retention_days),
            part_size: PART_SIZE,
        })
    }

    /// The member's data directory on its volume, under the host's root.
    pub fn data_dir(&self, host: &Host) -> PathBuf {
        host.root()
            .join(etcd_model::data_dir(&self.member).trim_start_matches('/'))
    }

    pub fn restore_settings(
        &self,
        host: &Host,
        force: bool,
        etcd_manager_backup: bool,
    ) -> RestoreSettings {
        RestoreSettings {
            cluster: self.cluster.clone(),
            etcd_cluster: self.etcd_cluster.clone(),
            member: self.member.member.clone(),
            initial_cluster: self.initial_cluster(),
            data_dir: self.data_dir(host),
            restore_tool: host.path(&self.restore_tool),
            force,
            etcd_manager_backup,
        }
    }

    /// The backup store: the spec's, or the one a backup's URL names.
    pub fn store(
        &self,
        s3: aws_sdk_s3::Client,
        url: Option<&str>,
        call_timeout: Duration,
    ) -> Result<BackupStore, StoreOrNode> {
        let url = match url {
            Some(url) => url.to_owned(),
            None => self.backup_spec()?.store.clone(),
        };
        Ok(BackupStore::new(s3, &url, call_timeout)?)
    }

    /// How this member's etcd is stopped and started by a restore.
    pub fn service<'a>(&self, host: &'a Host) -> NodeMember<'a> {
        NodeMember {
            host,
            mode: self.mode,
            etcd_cluster: self.etcd_cluster.clone(),
            client_port: self.ports.client,
            notes: std::sync::Mutex::new(Vec::new()),
        }
    }
}

/// Either error of [`EtcdNode::store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreOrNode {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// This node's etcd member as a restore stops and starts it: its systemd unit, or its
/// static pod's manifest taken out of the kubelet's directory and put back. Where
/// nothing can be stopped (a sandbox root, no systemd), the restore goes on only when
/// etcd does not answer on its client port: the operator stopped it.
pub struct NodeMember<'a> {
    host: &'a Host,
    mode: RunMode,
    etcd_cluster: String,
    client_port: u16,
    /// What was not done here and is the operator's to do.
    notes: std::sync::Mutex<Vec<String>>,
}

/// How long a static pod's etcd may take to stop once its manifest is gone.
const POD_STOP_WAIT: Duration = Duration::from_secs(120);

impl NodeMember<'_> {
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    fn note(&self, text: String) {
        if let Ok(mut notes) = self.notes.lock() {
            notes.push(text);
        }
    }

    fn manifest(&self) -> (PathBuf, PathBuf) {
        let name = format!("etcd-{}.yaml", self.etcd_cluster);
        let manifests = self
            .host
            .root()
            .join(kubelet::MANIFESTS.trim_start_matches('/'));
        let parked = self
            .host
            .root()
            .join("etc/kubernetes")
            .join(format!("{name}.stopped-for-restore"));
        (manifests.join(name), parked)
    }

    async fn answers(&self) -> bool {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.client_port));
        matches!(
            tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(address)
            )
            .await,
            Ok(Ok(_))
        )
    }
}

impl MemberService for NodeMember<'_> {
    async fn stop(&self) -> Result<(), String> {
        match self.mode {
            RunMode::Systemd => {
                let unit = etcd_model::unit_name(&self.etcd_cluster);
                match self.host.systemd().stop(&unit).await {
                    Ok(Job::Done) => Ok(()),
                    Ok(Job::Skipped(reason)) => {
                        if self.answers().await {
                            return Err(format!(
                                "cannot stop {unit} here ({reason}) and etcd still answers on 127.0.0.1:{}: stop it, then restore again",
                                self.client_port
                            ));
                        }
                        self.note(format!(
                            "{unit} was not stopped here ({reason}); etcd did not answer"
                        ));
                        Ok(())
                    }
                    Err(e) => Err(format!("stopping {unit}: {e}")),
                }
            }
            RunMode::StaticPod => {
                let (manifest, parked) = self.manifest();
                if manifest.exists() {
                    std::fs::rename(&manifest, &parked)
                        .map_err(|e| format!("moving {} aside: {e}", manifest.display()))?;
                }
                let deadline = tokio::time::Instant::now() + POD_STOP_WAIT;
                while self.answers().await {
                    if tokio::time::Instant::now() > deadline {
                        return Err(format!(
                            "etcd still answers on 127.0.0.1:{} {} s after its manifest was moved to {}",
                            self.client_port,
                            POD_STOP_WAIT.as_secs(),
                            parked.display()
                        ));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok(())
            }
        }
    }

    async fn start(&self) -> Result<(), String> {
        match self.mode {
            RunMode::Systemd => {
                let unit = etcd_model::unit_name(&self.etcd_cluster);
                match self.host.systemd().start(&unit, true).await {
                    Ok(Job::Done) => Ok(()),
                    Ok(Job::Skipped(reason)) => {
                        self.note(format!(
                            "{unit} was not started here ({reason}): start etcd"
                        ));
                        Ok(())
                    }
                    Err(e) => Err(format!("starting {unit}: {e}")),
                }
            }
            RunMode::StaticPod => {
                let (manifest, parked) = self.manifest();
                if parked.exists() {
                    std::fs::rename(&parked, &manifest)
                        .map_err(|e| format!("putting {} back: {e}", manifest.display()))?;
                }
                Ok(())
            }
        }
    }
}
