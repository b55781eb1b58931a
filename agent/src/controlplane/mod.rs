//! The control-plane phase of the boot flow, between facts and model: claim, attach,
//! find, format (only if blank), mount and grow the etcd volumes, then publish the
//! control plane's names. Its result (which etcd member this node is) becomes facts
//! the model renders from.
//!
//! Cloud side effects do not fit the pure model, so they happen here, recorded in the
//! timeline. `plan` runs the same phase read-only: EC2 and Route53 reads, device
//! probes, and a report of what a run would do.

pub mod attach;
pub mod claim;
pub mod device;
pub mod etcd;
pub mod hosts;
pub mod names;
pub mod record;
pub mod records;
pub mod volumes;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cloud::CloudError;
use crate::cloud::ec2::{Ec2, SdkEc2};
use crate::cloud::route53::{Route53, SdkRoute53};
use crate::engine::Timeline;
use crate::error::{Classified, ErrorKind};
use crate::facts::{ControlPlaneFacts, InstanceFacts};
use crate::host::Host;
use crate::host::disks;
use crate::runbook::Topic;
use crate::spec::{ControlPlaneSpec, DnsMode, DnsName, ForceDetach};

pub use record::ControlPlaneRecord;

#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error(transparent)]
    Cloud(CloudError),
    #[error("waiting for an etcd volume of {etcd_cluster}: {reason}")]
    Waiting {
        etcd_cluster: String,
        reason: String,
    },
    #[error("{volume_id} was attached to another instance ({holder}) meanwhile")]
    LostRace { volume_id: String, holder: String },
    #[error("etcd volume {volume_id} ({device}): {reason}")]
    Refused {
        volume_id: String,
        device: String,
        reason: String,
    },
    #[error("etcd volume {volume_id}: {detail}")]
    Disk { volume_id: String, detail: String },
    #[error("etcd volumes: {0}")]
    Volume(String),
    #[error("control-plane names: {0}")]
    Names(String),
}

/// Every failure here leaves the node unchanged or half-way: the change failed. The
/// runbook says what to do about a volume or a name; a cloud error may name its own.
impl Classified for ControlPlaneError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::ChangeFailed
    }
    fn topic(&self) -> Option<Topic> {
        match self {
            Self::Names(_) => Some(Topic::DnsPlaceholder),
            Self::Cloud(e) => e.topic(),
            _ => Some(Topic::VolumeStuck),
        }
    }
}

/// What one phase needs to know, shared by its steps.
pub struct Context<'a, E: Ec2> {
    pub ec2: &'a E,
    pub host: &'a Host,
    pub instance: &'a InstanceFacts,
    pub cluster: DnsName,
    pub cluster_name: &'a str,
    pub force_detach: ForceDetach,
    /// `plan`: read EC2, Route53 and the devices; change nothing.
    pub read_only: bool,
    pub pace: Pace,
}

/// How often the claim looks at the volumes again and polls an attachment (each delay
/// doubles up to its maximum). Tests make it quick.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub look: Duration,
    pub max_look: Duration,
    pub poll: Duration,
    pub max_poll: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            look: Duration::from_millis(500),
            max_look: Duration::from_secs(10),
            poll: Duration::from_millis(200),
            max_poll: Duration::from_secs(5),
        }
    }
}

/// The phase's result: facts for the model, and the report lines.
#[derive(Debug, Default)]
pub struct Outcome {
    pub facts: ControlPlaneFacts,
    pub report: Vec<String>,
}

/// Where the exclusive lock of the volume work lives: one run at a time per node
/// claims, formats and mounts (a boot and a watch round may overlap).
pub const LOCK_FILE: &str = "run/nodewright/etcd-volumes.lock";

/// Runs the phase with the real AWS clients.
#[allow(clippy::too_many_arguments)]
pub async fn run_with_aws(
    spec: &ControlPlaneSpec,
    cluster: &DnsName,
    instance: &InstanceFacts,
    host: &Host,
    sdk: &aws_config::SdkConfig,
    call_deadline: Duration,
    read_only: bool,
    command: &str,
    timeline: &mut Timeline,
) -> Result<Outcome, ControlPlaneError> {
    let ec2 = SdkEc2::new(sdk, call_deadline);
    let route53 = SdkRoute53::new(sdk, call_deadline);
    run(
        spec,
        cluster,
        instance,
        host,
        &ec2,
        Some(&route53),
        read_only,
        command,
        timeline,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
pub async fn run<E: Ec2, R: Route53>(
    spec: &ControlPlaneSpec,
    cluster: &DnsName,
    instance: &InstanceFacts,
    host: &Host,
    ec2: &E,
    route53: Option<&R>,
    read_only: bool,
    command: &str,
    timeline: &mut Timeline,
) -> Result<Outcome, ControlPlaneError> {
    let ctx = Context {
        ec2,
        host,
        instance,
        cluster: cluster.clone(),
        cluster_name: cluster.as_str(),
        force_detach: spec
            .etcd_volumes
            .as_ref()
            .map(|v| v.force_detach)
            .unwrap_or_default(),
        read_only,
        pace: Pace::default(),
    };
    let mut outcome = Outcome::default();
    let mut record = ControlPlaneRecord {
        command: command.to_owned(),
        ..Default::default()
    };
    let result = run_steps(&ctx, spec, route53, timeline, &mut outcome, &mut record).await;
    if !read_only {
        record.at = crate::clock::now();
        record.ok = result.is_ok();
        record.etcd_members = outcome.facts.etcd_members.clone();
        record.report = outcome.report.clone();
        if let Err(e) = &result {
            record.error = Some(e.to_string());
        }
        if let Err(e) = record.save(&host.state_dir()) {
            tracing::warn!(error = %e, "could not record the control-plane round");
        }
    }
    result.map(|()| outcome)
}

async fn run_steps<E: Ec2, R: Route53>(
    ctx: &Context<'_, E>,
    spec: &ControlPlaneSpec,
    route53: Option<&R>,
    timeline: &mut Timeline,
    outcome: &mut Outcome,
    record: &mut ControlPlaneRecord,
) -> Result<(), ControlPlaneError> {
    let domain = spec
        .dns
        .as_ref()
        .map(|d| d.etcd_domain(&ctx.cluster))
        .unwrap_or_else(|| format!("internal.{}", ctx.cluster));
    let mut etcd_clusters = Vec::new();
    if let Some(volumes) = &spec.etcd_volumes {
        let _lock = if ctx.read_only {
            None
        } else {
            let path = ctx.host.root().join(LOCK_FILE);
            Some(
                tokio::task::spawn_blocking(move || disks::lock_exclusive(&path))
                    .await
                    .map_err(|e| ControlPlaneError::Volume(format!("internal error: {e}")))?
                    .map_err(|e| ControlPlaneError::Volume(e.to_string()))?,
            )
        };
        for etcd_cluster in &volumes.clusters {
            let etcd_cluster = etcd_cluster.to_string();
            let began = Instant::now();
            let result = volumes::ensure(ctx, volumes, &etcd_cluster, &domain).await;
            let step = format!("etcd volume {etcd_cluster}");
            match result {
                Ok(report) => {
                    let text = if report.lines.is_empty() {
                        "ok".to_owned()
                    } else {
                        report.lines.join("; ")
                    };
                    timeline.record(&step, began, format!("ok: {text}"));
                    for line in &report.lines {
                        tracing::info!(etcd_cluster = %etcd_cluster, "{line}");
                        outcome.report.push(format!("{step}: {line}"));
                    }
                    if let Some(member) = report.member {
                        if !ctx.read_only {
                            outcome.report.push(format!(
                                "{step}: member {} on {} at {}",
                                member.member, member.volume_id, member.mount_path
                            ));
                        }
                        outcome
                            .facts
                            .etcd_members
                            .insert(etcd_cluster.clone(), member);
                    }
                }
                Err(e) => {
                    timeline.record(&step, began, format!("failed: {e}"));
                    if let ControlPlaneError::Waiting { reason, .. } = &e {
                        record.waiting.insert(step, reason.clone());
                    }
                    return Err(e);
                }
            }
            etcd_clusters.push(etcd_cluster);
        }
    }
    if let Some(dns) = &spec.dns {
        let began = Instant::now();
        let result = names::publish(
            ctx,
            route53,
            dns,
            &etcd_clusters,
            &outcome.facts.etcd_members,
        )
        .await;
        let step = match dns.mode {
            DnsMode::Route53 => "control-plane names (route53)",
            DnsMode::Hosts => "control-plane names (hosts)",
            DnsMode::None => "control-plane names (none)",
        };
        match result {
            Ok(lines) => {
                timeline.record(step, began, format!("ok: {}", lines.join("; ")));
                outcome
                    .report
                    .extend(lines.into_iter().map(|l| format!("names: {l}")));
            }
            Err(e) => {
                timeline.record(step, began, format!("failed: {e}"));
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Members by etcd cluster, for reports.
pub fn describe_members(facts: &ControlPlaneFacts) -> BTreeMap<String, String> {
    facts
        .etcd_members
        .iter()
        .map(|(cluster, m)| {
            (
                cluster.clone(),
                format!("member {} on {} at {}", m.member, m.volume_id, m.mount_path),
            )
        })
        .collect()
}
