//! Claiming one etcd cluster's volume through EC2: look at the tagged volumes in this
//! zone, attach a free one (EC2's AttachVolume is the lock: the loser moves on), wait
//! for the attachment, or take a volume over from a stopped or terminated instance
//! when the spec allows it. The decisions are [`super::claim`]'s; this module carries
//! them out, or, read-only (`plan`), says what it would do.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::claim::{self, Candidate, Decision};
use super::{Context, ControlPlaneError};
use crate::cloud::ec2::{Ec2, Volume};

/// What the claim came to.
#[derive(Debug)]
pub enum Claim {
    /// A volume is attached here, as the device EC2 reports (when it says).
    Attached {
        candidate: Candidate,
        device: Option<String>,
    },
    /// `plan`: the volume a run would claim.
    Would(Candidate),
    /// `plan`: nothing can be claimed now.
    Nothing,
}

/// Claims a volume of `etcd_cluster` before `deadline`, noting what it does in `lines`.
pub(super) async fn claim<E: Ec2>(
    ctx: &Context<'_, E>,
    etcd_cluster: &str,
    deadline: Instant,
    lines: &mut Vec<String>,
) -> Result<Claim, ControlPlaneError> {
    let mut delay = ctx.pace.look;
    loop {
        match look(ctx, etcd_cluster).await? {
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
                let device = wait_attached(ctx, &candidate.volume.id, deadline).await?;
                return Ok(Claim::Attached { candidate, device });
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
                    return Ok(Claim::Would(first.clone()));
                }
                if let Some((candidate, device)) =
                    attach_first(ctx, etcd_cluster, &free, deadline, lines).await?
                {
                    return Ok(Claim::Attached { candidate, device });
                }
                tracing::info!(
                    etcd_cluster,
                    "lost every race for a free volume; looking again"
                );
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
                    return Ok(Claim::Would(candidate));
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
                    return Ok(Claim::Nothing);
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
        delay = (delay * 2).min(ctx.pace.max_look);
    }
}

/// DescribeVolumes, the holders' states, and the decision.
async fn look<E: Ec2>(
    ctx: &Context<'_, E>,
    etcd_cluster: &str,
) -> Result<Decision, ControlPlaneError> {
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
    Ok(decision)
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
    let mut delay = ctx.pace.poll;
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
        delay = (delay * 2).min(ctx.pace.max_poll);
    }
}

/// Polls until a force-detached volume is available.
async fn wait_available<E: Ec2>(
    ctx: &Context<'_, E>,
    volume_id: &str,
    deadline: Instant,
) -> Result<(), ControlPlaneError> {
    let mut delay = ctx.pace.poll;
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
        delay = (delay * 2).min(ctx.pace.max_poll);
    }
}

#[cfg(test)]
mod tests {
    //! The claim against an in-memory EC2 that behaves like the real one.

    use std::time::Duration;

    use super::super::Pace;
    use super::*;
    use crate::cloud::fake::FakeEc2;
    use crate::facts::{Facts, InstanceFacts};
    use crate::host::Host;
    use crate::spec::{DnsName, ForceDetach};

    const ZONE: &str = "us-east-1a";
    const ME: &str = "i-0000000000000000a";

    fn world() -> FakeEc2 {
        let ec2 = FakeEc2::new();
        ec2.instance(ME, ZONE, "running");
        ec2
    }

    /// A volume of etcd cluster `main`, member `member`, of cluster `cluster`.
    fn etcd_volume(ec2: &FakeEc2, id: &str, cluster: &str, member: &str) {
        let cluster_tag = format!("kubernetes.io/cluster/{cluster}");
        let etcd = format!("{member}/a,b,c");
        ec2.volume(
            id,
            ZONE,
            &[
                (cluster_tag.as_str(), "owned"),
                ("k8s.io/role/control-plane", "1"),
                ("k8s.io/etcd/main", etcd.as_str()),
            ],
        );
    }

    fn me() -> InstanceFacts {
        InstanceFacts {
            instance_id: ME.to_owned(),
            availability_zone: ZONE.to_owned(),
            ..Facts::example().instance
        }
    }

    async fn claim_in(
        ec2: &FakeEc2,
        cluster: &str,
        force_detach: ForceDetach,
        read_only: bool,
    ) -> (Result<Claim, ControlPlaneError>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        let instance = me();
        let ctx = Context {
            ec2,
            host: &host,
            instance: &instance,
            cluster: DnsName::try_from(cluster).unwrap(),
            cluster_name: cluster,
            force_detach,
            read_only,
            pace: Pace {
                look: Duration::from_millis(1),
                max_look: Duration::from_millis(4),
                poll: Duration::from_millis(1),
                max_poll: Duration::from_millis(4),
            },
        };
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(400);
        let result = claim(&ctx, "main", deadline, &mut lines).await;
        (result, lines)
    }

    async fn claim_as(
        ec2: &FakeEc2,
        force_detach: ForceDetach,
    ) -> Result<Claim, ControlPlaneError> {
        claim_in(ec2, "prod.example.com", force_detach, false)
            .await
            .0
    }

    fn attached(claim: Result<Claim, ControlPlaneError>) -> String {
        match claim {
            Ok(Claim::Attached { candidate, .. }) => candidate.volume.id,
            other => panic!("not attached: {other:?}"),
        }
    }

    fn holder(ec2: &FakeEc2, volume: &str) -> Vec<(String, String)> {
        ec2.volume_state(volume)
            .unwrap()
            .attachments
            .into_iter()
            .map(|a| (a.instance_id, a.state))
            .collect()
    }

    #[tokio::test]
    async fn a_free_volume_is_attached_and_waited_for_until_attached() {
        let ec2 = world();
        etcd_volume(&ec2, "vol-a", "prod.example.com", "a");
        assert_eq!(attached(claim_as(&ec2, ForceDetach::Never).await), "vol-a");
        assert_eq!(ec2.calls(), [format!("AttachVolume vol-a {ME}")]);
        assert_eq!(
            holder(&ec2, "vol-a"),
            [(ME.to_owned(), "attached".to_owned())]
        );
    }

    #[tokio::test]
    async fn a_volume_already_attached_here_is_ours_without_attaching() {
        let ec2 = world();
        etcd_volume(&ec2, "vol-a", "prod.example.com", "a");
        etcd_volume(&ec2, "vol-b", "prod.example.com", "b");
        ec2.attached("vol-b", ME);
        assert_eq!(attached(claim_as(&ec2, ForceDetach::Never).await), "vol-b");
        assert!(ec2.calls().is_empty(), "{:?}", ec2.calls());
    }

    #[tokio::test]
    async fn a_lost_race_moves_on_to_the_next_free_volume() {
        let ec2 = world();
        ec2.instance("i-quicker", ZONE, "running");
        etcd_volume(&ec2, "vol-a", "prod.example.com", "a");
        etcd_volume(&ec2, "vol-b", "prod.example.com", "b");
        // Whichever volume this node tries first, another node attaches it first.
        ec2.race_next("i-quicker");
        let won = attached(claim_as(&ec2, ForceDetach::Never).await);
        let calls = ec2.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        let lost = if won == "vol-a" { "vol-b" } else { "vol-a" };
        assert_eq!(calls[0], format!("AttachVolume {lost} {ME}"));
        assert_eq!(calls[1], format!("AttachVolume {won} {ME}"));
        assert_eq!(holder(&ec2, lost)[0].0, "i-quicker");
    }

    #[tokio::test]
    async fn volume_in_use_everywhere_waits_then_fails_at_the_deadline() {
        let ec2 = world();
        ec2.instance("i-b", ZONE, "running");
        ec2.instance("i-c", ZONE, "running");
        etcd_volume(&ec2, "vol-a", "prod.example.com", "a");
        etcd_volume(&ec2, "vol-b", "prod.example.com", "b");
        ec2.race_next("i-b");
        ec2.race_next("i-c");
        let error = claim_as(&ec2, ForceDetach::Never).await.unwrap_err();
        match error {
            ControlPlaneError::Waiting { reason, .. } => {
                assert!(reason.contains("is attached to i-b (running)"), "{reason}");
                assert!(reason.contains("is attached to i-c (running)"), "{reason}");
            }
            other => panic!("{other}"),
        }
        // Two attempts lost to VolumeInUse, then no more: nothing free was left.
        assert_eq!(ec2.calls().len(), 2, "{:?}", ec2.calls());
    }

    #[tokio::test]
    async fn an_attachment_stuck_in_attaching_gives_up_at_the_deadline() {
        let ec2 = world();
        etcd_volume(&ec2, "vol-a", "prod.example.com", "a");
        ec2.stick("vol-a");
        let error = claim_as(&ec2, ForceDetach::Never).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("etcd volumes: vol-a is still attaching to {ME}; gave up waiting")
        );
    }

    #[tokio::test]
    async fn a_volume_held_by_a_stopped_instance_is_taken_over_only_when_allowed() {
        let ec2 = world();
        ec2.instance("i-old", ZONE, "stopped");
        etcd_volume(&ec2, "vol-a", "prod.example.com", "a");
        ec2.attached("vol-a", "i-old");
        let error = claim_as(&ec2, ForceDetach::Never).await.unwrap_err();
        let text = error.to_string();
        assert!(text.contains("is attached to i-old (stopped)"), "{text}");
        assert!(text.contains("forceDetach: stoppedOrTerminated"), "{text}");
        assert!(ec2.calls().is_empty(), "never detached: {:?}", ec2.calls());

        assert_eq!(
            attached(claim_as(&ec2, ForceDetach::StoppedOrTerminated).await),
            "vol-a"
        );
        assert_eq!(
            ec2.calls(),
            [
                "DetachVolume vol-a i-old force".to_owned(),
                format!("AttachVolume vol-a {ME}")
            ]
        );
    }

    #[tokio::test]
    async fn a_volume_held_by_a_terminated_instance_is_taken_over_only_when_allowed() {
        let ec2 = world();
        ec2.instance("i-gone", ZONE, "running");
        etcd_volume(&ec2, "vol-a", "prod.example.com", "a");
        ec2.attached("vol-a", "i-gone");
        // EC2 no longer lists it: it is terminated.
        ec2.forget_instance("i-gone");
        let error = claim_as(&ec2, ForceDetach::Never).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("is attached to i-gone (terminated)"),
            "{error}"
        );
        assert!(ec2.calls().is_empty());
        assert_eq!(
            attached(claim_as(&ec2, ForceDetach::StoppedOrTerminated).await),
            "vol-a"
        );
        assert_eq!(ec2.calls()[0], "DetachVolume vol-a i-gone force");
    }

    #[tokio::test]
    async fn a_running_holder_is_never_forced() {
        let ec2 = world();
        ec2.instance("i-peer", ZONE, "running");
        etcd_volume(&ec2, "vol-a", "prod.example.com", "a");
        ec2.attached("vol-a", "i-peer");
        let error = claim_as(&ec2, ForceDetach::StoppedOrTerminated)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ControlPlaneError::Waiting { .. }),
            "{error}"
        );
        assert!(ec2.calls().is_empty());
    }

    #[tokio::test]
    async fn two_clusters_volumes_side_by_side_are_each_their_own() {
        let ec2 = world();
        etcd_volume(&ec2, "vol-prod", "prod.example.com", "a");
        etcd_volume(&ec2, "vol-dev", "dev.example.com", "a");
        // `plan` first: it says which one, and changes nothing.
        let (planned, lines) = claim_in(&ec2, "dev.example.com", ForceDetach::Never, true).await;
        match planned {
            Ok(Claim::Would(candidate)) => assert_eq!(candidate.volume.id, "vol-dev"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            lines,
            ["would claim vol-dev as member a of main (1 free in us-east-1a)"]
        );
        assert!(ec2.calls().is_empty());
        let (claimed, _) = claim_in(&ec2, "dev.example.com", ForceDetach::Never, false).await;
        assert_eq!(attached(claimed), "vol-dev");
        assert!(
            holder(&ec2, "vol-prod").is_empty(),
            "the other cluster's volume is untouched"
        );
        assert_eq!(
            attached(claim_as(&ec2, ForceDetach::Never).await),
            "vol-prod"
        );
    }
}
