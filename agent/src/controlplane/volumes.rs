//! One etcd volume per etcd cluster: claim and attach it ([`super::attach`]), then
//! find its device, format it (only if blank), mount and grow it. The decisions are in
//! [`super::claim`] and [`super::device`]; this module carries them out, or,
//! read-only, says what it would do.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use super::attach::{self, Claim};
use super::claim::Candidate;
use super::device::{self, Verdict};
use super::record::{FormatRecord, Formats};
use super::{Context, ControlPlaneError};
use crate::cloud::ec2::Ec2;
use crate::facts::EtcdMember;
use crate::host::disks::{self, FoundDevice};
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
    let (candidate, attached_as) =
        match attach::claim(ctx, etcd_cluster, deadline, &mut lines).await? {
            Claim::Attached { candidate, device } => (candidate, device),
            Claim::Would(candidate) => {
                let member = planned_member(spec, etcd_cluster, domain, &candidate);
                return Ok(VolumeReport {
                    member: Some(member),
                    lines,
                });
            }
            Claim::Nothing => {
                return Ok(VolumeReport {
                    member: None,
                    lines,
                });
            }
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

fn mount_path(
    spec: &EtcdVolumesSpec,
    etcd_cluster: &str,
    member: &str,
) -> Result<AbsPath, ControlPlaneError> {
    spec.mount_root
        .join(&format!("etcd-{etcd_cluster}-{member}"))
        .map_err(|e| ControlPlaneError::Volume(e.to_string()))
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

fn planned_member(
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
                let member = planned_member(spec, etcd_cluster, domain, &candidate);
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
                            at: crate::clock::now(),
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
