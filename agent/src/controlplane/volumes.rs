//! Claim, attach, find, format (only if blank), mount and grow one etcd volume per
//! etcd cluster. The decisions are in [`super::claim`] and [`super::device`]; this
//! module carries them out, or, read-only, says what it would do.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::claim::{self, Candidate, Decision};
use super::device::{self, Verdict};
use super::record::{FormatRecord, Formats};
use super::{Context, ControlPlaneError};
use crate::cloud::ec2::{Ec2, Volume};
use crate::host::disks::{self, FoundDevice};
use crate::model::EtcdMember;
use crate::spec::{AbsPath, EtcdVolumesSpec, etcd_peer_name};

/// Grow the filesystem when the device is this much bigger (resize2fs leaves a partial
/// block group unused, so a few MiB of difference is normal).
const GROW_THRESHOLD: u64 = 16 << 20;

/// What happened to one etcd cluster's volume, for the timeline and `plan`.
pub struct VolumeReport {
    pub member: Option<EtcdMember>,
    pub lines: Vec<String>,
}

pub(super) async fn ensure<E: Ec2>(
    ctx: &Context<'_, E>,
    spec: &EtcdVolumesSpec,
    etcd_cluster: &str,
    domain: &str,
) -> Result<VolumeReport, ControlPlaneError> {
    let deadline = Instant::now() + Duration::from_secs(u64::from(spec.attach_deadline_seconds));
    let mut lines = Vec::new();
    let mut delay = Duration::from_millis(500);
    let (candidate, attached_as) = loop {
        let (candidates, decision) = look(ctx, etcd_cluster).await?;
        match decision {
            Decision::Mine { candidate, extra } => {
                if !extra.is_empty() {
                    let warning = format!(
                        "this instance also holds {} of etcd cluster {etcd_cluster}; left attached, using {}",
                        extra.join(", "),
                        candidate.volume.id
                    );
                    tracing::warn!(etcd_cluster, "{warning}");
                    lines.push(warning);
                }
                let attached_as = wait_attached(ctx, &candidate.volume.id, deadline).await?;
                break (candidate, attached_as);
            }
            Decision::Attach(free) => {
                if ctx.read_only {
                    let first = &free[0];
                    lines.push(format!(
                        "would claim {} as member {} of {etcd_cluster} ({} free in {})",
                        first.volume.id,
                        first.tag.member,
                        free.len(),
                        ctx.instance.availability_zone
                    ));
                    let member = planned_member(ctx, spec, etcd_cluster, domain, first);
                    return Ok(VolumeReport {
                        member: Some(member),
                        lines,
                    });
                }
                if let Some((candidate, device)) =
                    attach_first(ctx, etcd_cluster, &free, deadline, &mut lines).await?
                {
                    break (candidate, device);
                }
                tracing::info!(
                    etcd_cluster,
                    "lost every race for a free volume; looking again"
                );
                let _ = candidates;
            }
            Decision::TakeOver {
                candidate,
                holder,
                holder_state,
            } => {
                let what = format!(
                    "{} (member {} of {etcd_cluster}) from {holder} ({holder_state})",
                    candidate.volume.id, candidate.tag.member
                );
                if ctx.read_only {
                    lines.push(format!("would force-detach {what} and claim it"));
                    let member = planned_member(ctx, spec, etcd_cluster, domain, &candidate);
                    return Ok(VolumeReport {
                        member: Some(member),
                        lines,
                    });
                }
                tracing::warn!(volume = %candidate.volume.id, %holder, %holder_state, "force-detaching an etcd volume");
                ctx.ec2
                    .detach_volume(&candidate.volume.id, &holder, true)
                    .await
                    .map_err(ControlPlaneError::Cloud)?;
                lines.push(format!("force-detached {what}"));
                wait_available(ctx, &candidate.volume.id, deadline).await?;
                // The next look sees it free and races for it like any free volume.
                continue;
            }
            Decision::Wait(reason) => {
                if ctx.read_only {
                    lines.push(format!("would wait: {reason}"));
                    return Ok(VolumeReport {
                        member: None,
                        lines,
                    });
                }
                if Instant::now() + delay >= deadline {
                    return Err(ControlPlaneError::Waiting {
                        etcd_cluster: etcd_cluster.to_owned(),
                        reason,
                    });
                }
                tracing::warn!(etcd_cluster, %reason, "waiting for an etcd volume");
                super::record::note_waiting(ctx.host, etcd_cluster, &reason);
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    };
    prepare_device(
        ctx,
        spec,
        etcd_cluster,
        domain,
        candidate,
        attached_as,
        deadline,
        lines,
    )
    .await
}

/// DescribeVolumes, the holders' states, and the decision.
async fn look<E: Ec2>(
    ctx: &Context<'_, E>,
    etcd_cluster: &str,
) -> Result<(Vec<Candidate>, Decision), ControlPlaneError> {
    let zone = ctx.instance.availability_zone.as_str();
    let volumes = ctx
        .ec2
        .describe_volumes(&claim::volume_filters(
            ctx.cluster_name,
            etcd_cluster,
            Some(zone),
        ))
        .await
        .map_err(ControlPlaneError::Cloud)?;
    let (candidates, ignored) =
        claim::eligible(&volumes, ctx.cluster_name, etcd_cluster, Some(zone));
    for i in &ignored {
        tracing::warn!(volume = %i.volume_id, reason = %i.reason, "ignoring a volume EC2 returned");
    }
    let holders: Vec<String> = candidates
        .iter()
        .flat_map(|c| c.volume.attachments.iter())
        .map(|a| a.instance_id.clone())
        .filter(|id| *id != ctx.instance.instance_id)
        .collect();
    let mut states = BTreeMap::new();
    if !holders.is_empty() {
        let instances = ctx
            .ec2
            .describe_instances(&vec![("instance-id".to_owned(), holders)])
            .await
            .map_err(ControlPlaneError::Cloud)?;
        for instance in instances {
            states.insert(instance.id, instance.state);
        }
    }
    let decision = claim::decide(
        &ctx.instance.instance_id,
        etcd_cluster,
        zone,
        &candidates,
        &states,
        ctx.force_detach,
    );
    Ok((candidates, decision))
}

/// AttachVolume on each free volume in turn until one is ours.
async fn attach_first<E: Ec2>(
    ctx: &Context<'_, E>,
    etcd_cluster: &str,
    free: &[Candidate],
    deadline: Instant,
    lines: &mut Vec<String>,
) -> Result<Option<(Candidate, Option<String>)>, ControlPlaneError> {
    let me = &ctx.instance.instance_id;
    for candidate in free {
        let in_use = devices_in_use(ctx).await?;
        let Some(device) = claim::free_device_name(&in_use) else {
            return Err(ControlPlaneError::Volume(
                "no free device name (xvdf to xvdz) to attach a volume as".to_owned(),
            ));
        };
        let id = &candidate.volume.id;
        match ctx.ec2.attach_volume(id, me, &device).await {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.code(),
                    Some(
                        "VolumeInUse"
                            | "IncorrectState"
                            | "InvalidVolume.NotFound"
                            | "InvalidVolume.ZoneMismatch"
                    )
                ) =>
            {
                tracing::info!(volume = %id, error = %e, "another node was first; trying the next volume");
                continue;
            }
            Err(e) => return Err(ControlPlaneError::Cloud(e)),
        }
        match wait_attached(ctx, id, deadline).await {
            Ok(attached_as) => {
                lines.push(format!(
                    "claimed {id} as member {} of {etcd_cluster} (attached as {device})",
                    candidate.tag.member
                ));
                tracing::info!(volume = %id, member = %candidate.tag.member, etcd_cluster, "claimed an etcd volume");
                return Ok(Some((candidate.clone(), attached_as)));
            }
            Err(ControlPlaneError::LostRace { holder, .. }) => {
                tracing::info!(volume = %id, %holder, "lost the race for the volume; trying the next");
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Device names this instance uses (block device mappings and attachments).
async fn devices_in_use<E: Ec2>(ctx: &Context<'_, E>) -> Result<Vec<String>, ControlPlaneError> {
    let me = &ctx.instance.instance_id;
    let mut names: Vec<String> = ctx
        .ec2
        .describe_instances(&vec![("instance-id".to_owned(), vec![me.clone()])])
        .await
        .map_err(ControlPlaneError::Cloud)?
        .into_iter()
        .flat_map(|i| i.device_names)
        .collect();
    let attached = ctx
        .ec2
        .describe_volumes(&vec![(
            "attachment.instance-id".to_owned(),
            vec![me.clone()],
        )])
        .await
        .map_err(ControlPlaneError::Cloud)?;
    names.extend(
        attached
            .iter()
            .flat_map(|v| v.attachments.iter())
            .filter(|a| a.instance_id == *me)
            .map(|a| a.device.clone()),
    );
    Ok(names)
}

async fn describe_one<E: Ec2>(
    ctx: &Context<'_, E>,
    volume_id: &str,
) -> Result<Option<Volume>, ControlPlaneError> {
    let volumes = ctx
        .ec2
        .describe_volumes(&vec![("volume-id".to_owned(), vec![volume_id.to_owned()])])
        .await
        .map_err(ControlPlaneError::Cloud)?;
    Ok(volumes.into_iter().find(|v| v.id == volume_id))
}

/// Polls until the volume is attached here; returns the device name EC2 reports.
async fn wait_attached<E: Ec2>(
    ctx: &Context<'_, E>,
    volume_id: &str,
    deadline: Instant,
) -> Result<Option<String>, ControlPlaneError> {
    let me = &ctx.instance.instance_id;
    let mut delay = Duration::from_millis(200);
    loop {
        let volume = describe_one(ctx, volume_id).await?;
        let attachments = volume.map(|v| v.attachments).unwrap_or_default();
        if let Some(other) = attachments.iter().find(|a| a.instance_id != *me) {
            return Err(ControlPlaneError::LostRace {
                volume_id: volume_id.to_owned(),
                holder: other.instance_id.clone(),
            });
        }
        let state = match attachments.iter().find(|a| a.instance_id == *me) {
            Some(a) if a.state == "attached" => return Ok(Some(a.device.clone())),
            Some(a) => a.state.clone(),
            None => "not attached".to_owned(),
        };
        if ctx.read_only {
            return Ok(None);
        }
        if Instant::now() + delay >= deadline {
            return Err(ControlPlaneError::Volume(format!(
                "{volume_id} is still {state} to {me}; gave up waiting"
            )));
        }
        tracing::debug!(volume = volume_id, state, "waiting for the attachment");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Polls until a force-detached volume is available.
async fn wait_available<E: Ec2>(
    ctx: &Context<'_, E>,
    volume_id: &str,
    deadline: Instant,
) -> Result<(), ControlPlaneError> {
    let mut delay = Duration::from_millis(200);
    loop {
        let volume = describe_one(ctx, volume_id).await?;
        match volume {
            Some(v) if v.state == "available" && v.attachments.is_empty() => return Ok(()),
            Some(v) if Instant::now() + delay >= deadline => {
                return Err(ControlPlaneError::Volume(format!(
                    "{volume_id} is still {} after the force-detach; gave up waiting",
                    v.state
                )));
            }
            None => {
                return Err(ControlPlaneError::Volume(format!(
                    "{volume_id} disappeared while being detached"
                )));
            }
            Some(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn mount_path(
    spec: &EtcdVolumesSpec,
    etcd_cluster: &str,
    member: &str,
) -> Result<AbsPath, ControlPlaneError> {
    spec.mount_root
        .join(&format!("etcd-{etcd_cluster}-{member}"))
        .map_err(ControlPlaneError::Volume)
}

fn member_facts(
    spec: &EtcdVolumesSpec,
    etcd_cluster: &str,
    domain: &str,
    candidate: &Candidate,
    device: String,
    planned: bool,
) -> Result<EtcdMember, ControlPlaneError> {
    Ok(EtcdMember {
        member: candidate.tag.member.clone(),
        members: candidate.tag.members.clone(),
        peer_names: candidate
            .tag
            .members
            .iter()
            .map(|m| (m.clone(), etcd_peer_name(etcd_cluster, m, domain)))
            .collect(),
        volume_id: candidate.volume.id.clone(),
        device,
        mount_path: mount_path(spec, etcd_cluster, &candidate.tag.member)?,
        filesystem: spec.filesystem.as_str().to_owned(),
        planned,
    })
}

fn planned_member<E: Ec2>(
    _ctx: &Context<'_, E>,
    spec: &EtcdVolumesSpec,
    etcd_cluster: &str,
    domain: &str,
    candidate: &Candidate,
) -> EtcdMember {
    let device = format!(
        "/{}/{}",
        disks::BY_ID_DIR,
        disks::ebs_link_names(&candidate.volume.id)[0]
    );
    // The mount root is checked by the spec, so the join cannot fail; fall back to the
    // root's path rather than panic.
    member_facts(spec, etcd_cluster, domain, candidate, device, true).unwrap_or_else(|_| {
        EtcdMember {
            member: candidate.tag.member.clone(),
            members: candidate.tag.members.clone(),
            peer_names: BTreeMap::new(),
            volume_id: candidate.volume.id.clone(),
            device: String::new(),
            mount_path: spec.mount_root.clone(),
            filesystem: spec.filesystem.as_str().to_owned(),
            planned: true,
        }
    })
}

/// Finds the device, then formats (only if blank), mounts and grows it.
#[allow(clippy::too_many_arguments)]
async fn prepare_device<E: Ec2>(
    ctx: &Context<'_, E>,
    spec: &EtcdVolumesSpec,
    etcd_cluster: &str,
    domain: &str,
    candidate: Candidate,
    attached_as: Option<String>,
    deadline: Instant,
    mut lines: Vec<String>,
) -> Result<VolumeReport, ControlPlaneError> {
    let volume_id = candidate.volume.id.clone();
    let root = ctx.host.root().to_owned();
    // udev makes the by-id link a moment after the attachment: poll for it.
    let mut delay = Duration::from_millis(100);
    let found = loop {
        let search_root = root.clone();
        let id = volume_id.clone();
        let asked = attached_as.clone();
        let found =
            blocking(move || Ok(disks::find_ebs_device(&search_root, &id, asked.as_deref())?))
                .await?;
        match found {
            Some(found) => break found,
            None if ctx.read_only => {
                lines.push(format!(
                    "{volume_id} (member {}) is attached but its device is not visible yet",
                    candidate.tag.member
                ));
                let member = planned_member(ctx, spec, etcd_cluster, domain, &candidate);
                return Ok(VolumeReport {
                    member: Some(member),
                    lines,
                });
            }
            None if Instant::now() + delay >= deadline => {
                return Err(ControlPlaneError::Volume(format!(
                    "{volume_id} is attached but no device for it appeared under {} ({}…); is this an NVMe instance without udev rules?",
                    root.join(disks::BY_ID_DIR).display(),
                    disks::EBS_LINK_PREFIX
                )));
            }
            None => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    };
    let member = member_facts(
        spec,
        etcd_cluster,
        domain,
        &candidate,
        found.stable_path.clone(),
        false,
    )?;
    let mount_point = ctx.host.path(&member.mount_path);
    let job = DiskJob {
        found,
        mount_point,
        volume_id: volume_id.clone(),
        instance_id: ctx.instance.instance_id.clone(),
        filesystem: spec.filesystem.as_str(),
        label: label(etcd_cluster, &member.member),
        ec2_size: u64::try_from(candidate.volume.size_gib).unwrap_or(0) << 30,
        read_only: ctx.read_only,
        formats_dir: ctx.host.state_dir(),
    };
    let done = blocking(move || job.run()).await?;
    lines.extend(done);
    Ok(VolumeReport {
        member: Some(member),
        lines,
    })
}

/// ext4 labels hold 16 bytes.
fn label(etcd_cluster: &str, member: &str) -> String {
    let mut label = format!("etcd-{etcd_cluster}-{member}");
    label.truncate(16);
    label
}

struct DiskJob {
    found: FoundDevice,
    mount_point: PathBuf,
    volume_id: String,
    instance_id: String,
    filesystem: &'static str,
    label: String,
    ec2_size: u64,
    read_only: bool,
    formats_dir: PathBuf,
}

impl DiskJob {
    fn run(self) -> Result<Vec<String>, ControlPlaneError> {
        let device = &self.found.device;
        let id = &self.volume_id;
        let disk = |e: disks::DiskError| ControlPlaneError::Disk {
            volume_id: id.clone(),
            detail: e.to_string(),
        };
        let refuse = |reason: String| ControlPlaneError::Refused {
            volume_id: id.clone(),
            device: self.found.stable_path.clone(),
            reason,
        };
        let mut lines = Vec::new();
        let probe = disks::probe(device).map_err(disk)?;
        match device::verdict(&probe, self.filesystem) {
            Verdict::Refuse(reason) => return Err(refuse(reason)),
            Verdict::Filesystem { .. } => {}
            Verdict::Blank => {
                let formats = Formats::load(&self.formats_dir);
                if let Some(earlier) = formats.get(id) {
                    return Err(refuse(format!(
                        "it reads blank, but this node formatted it at {} (as {}); the device may be the wrong one, so it is not formatted again",
                        earlier.at, earlier.device
                    )));
                }
                if self.read_only {
                    lines.push(format!(
                        "would make {} on blank {id} ({})",
                        self.filesystem, self.found.stable_path
                    ));
                    lines.push(format!("would mount it at {}", self.mount_point.display()));
                    return Ok(lines);
                }
                // Blank twice, the second time under the lock the caller holds, right
                // before mkfs: two overlapping runs cannot both format.
                let again = disks::probe(device).map_err(disk)?;
                if device::verdict(&again, self.filesystem) != Verdict::Blank {
                    lines.push(format!("{id} was formatted by another run meanwhile"));
                } else {
                    tracing::warn!(volume = %id, device = %device.display(), "formatting a blank etcd volume");
                    disks::make_ext4(device, &self.label).map_err(disk)?;
                    let uuid = disks::probe(device)
                        .ok()
                        .and_then(|p| p.field("UUID").map(str::to_owned));
                    Formats::add(
                        &self.formats_dir,
                        id,
                        FormatRecord {
                            at: crate::engine::timeline::rfc3339(std::time::SystemTime::now()),
                            instance: self.instance_id.clone(),
                            device: self.found.stable_path.clone(),
                            uuid,
                        },
                    )
                    .map_err(|e| {
                        ControlPlaneError::Volume(format!(
                            "{id} was formatted but recording it failed: {e}"
                        ))
                    })?;
                    lines.push(format!("made {} on blank {id}", self.filesystem));
                }
            }
        }
        let (major, minor) = disks::device_number(device).map_err(disk)?;
        let mounts = disks::mounts().map_err(disk)?;
        match mounts.iter().find(|m| m.mount_point == self.mount_point) {
            Some(m) if m.device == (major, minor) => {}
            Some(m) => {
                return Err(refuse(format!(
                    "{} already has {} ({}) mounted on it",
                    self.mount_point.display(),
                    m.source,
                    m.fstype
                )));
            }
            None if self.read_only => {
                lines.push(format!("would mount it at {}", self.mount_point.display()));
                return Ok(lines);
            }
            None => {
                disks::mount(device, &self.mount_point, self.filesystem).map_err(disk)?;
                lines.push(format!("mounted at {}", self.mount_point.display()));
            }
        }
        let device_size = disks::device_size(device).map_err(disk)?;
        let fs_size = disks::ext4_size(device).map_err(disk)?;
        if device_size > fs_size + GROW_THRESHOLD {
            let what = format!(
                "the filesystem from {} to {} MiB",
                fs_size >> 20,
                device_size >> 20
            );
            if self.read_only {
                lines.push(format!("would grow {what}"));
            } else {
                // Not fatal: etcd runs on the smaller filesystem, and the next round
                // tries again. (Online growth needs CAP_SYS_RESOURCE.)
                match disks::grow_ext4(device) {
                    Ok(()) => lines.push(format!("grew {what}")),
                    Err(e) => {
                        tracing::warn!(volume = %id, error = %e, "could not grow the filesystem");
                        lines.push(format!("could not grow {what}: {e}"));
                    }
                }
            }
        } else if self.ec2_size > device_size + GROW_THRESHOLD {
            lines.push(format!(
                "EC2 reports {} GiB but the device has {} MiB: the resize has not reached the instance yet",
                self.ec2_size >> 30,
                device_size >> 20
            ));
        }
        Ok(lines)
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ControlPlaneError> + Send + 'static,
) -> Result<T, ControlPlaneError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ControlPlaneError::Volume(format!("internal error: {e}")))?
}

/// Maps the blocking disk errors of `find_ebs_device`.
impl From<disks::DiskError> for ControlPlaneError {
    fn from(e: disks::DiskError) -> Self {
        ControlPlaneError::Volume(e.to_string())
    }
}
