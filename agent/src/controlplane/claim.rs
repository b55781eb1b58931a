//! Which etcd volume to claim: pure decisions over what EC2 reported.
//!
//! A volume's tag `k8s.io/etcd/<etcd cluster>=<member>/<all members>` names the member
//! whose data it holds; whichever volume a node gets decides which member it is. EC2's
//! AttachVolume is the lock: two nodes racing for one volume cannot both win.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::cloud::ec2::Volume;
use crate::spec::ForceDetach;

pub const CLUSTER_TAG_PREFIX: &str = "kubernetes.io/cluster/";
pub const ROLE_TAG: &str = "k8s.io/role/control-plane";
pub const ETCD_TAG_PREFIX: &str = "k8s.io/etcd/";

/// What a volume's etcd tag says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTag {
    pub member: String,
    pub members: Vec<String>,
}

/// Parses `a/a,b,c`.
pub(in crate::controlplane) fn parse_etcd_tag(value: &str) -> Result<EtcdTag, String> {
    let (member, all) = value
        .split_once('/')
        .ok_or_else(|| format!("{value:?} is not <member>/<all members>"))?;
    let members: Vec<String> = all.split(',').map(|m| m.trim().to_owned()).collect();
    let label_ok = |m: &str| {
        !m.is_empty()
            && m.len() <= 63
            && m.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if !label_ok(member) || !members.iter().all(|m| label_ok(m)) {
        return Err(format!(
            "{value:?}: member names must be lowercase DNS labels"
        ));
    }
    if !members.iter().any(|m| m == member) {
        return Err(format!("{value:?}: member {member} is not among {all}"));
    }
    Ok(EtcdTag {
        member: member.to_owned(),
        members,
    })
}

/// The DescribeVolumes filters for one etcd cluster's volumes (in `zone` when set).
pub fn volume_filters(
    cluster_name: &str,
    etcd_cluster: &str,
    zone: Option<&str>,
) -> Vec<(String, Vec<String>)> {
    let mut filters = vec![
        (
            format!("tag:{CLUSTER_TAG_PREFIX}{cluster_name}"),
            vec!["owned".to_owned()],
        ),
        (format!("tag:{ROLE_TAG}"), vec!["1".to_owned()]),
        (
            "tag-key".to_owned(),
            vec![format!("{ETCD_TAG_PREFIX}{etcd_cluster}")],
        ),
    ];
    if let Some(zone) = zone {
        filters.push(("availability-zone".to_owned(), vec![zone.to_owned()]));
    }
    filters
}

/// A volume that may be claimed, with its parsed tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub volume: Volume,
    pub tag: EtcdTag,
}

/// A volume EC2 returned that is not ours to touch, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub volume_id: String,
    pub reason: String,
}

/// Checks every volume against the tags and zone again (filters are a server-side
/// convenience, not a guarantee) and parses its member tag.
pub fn eligible(
    volumes: &[Volume],
    cluster_name: &str,
    etcd_cluster: &str,
    zone: Option<&str>,
) -> (Vec<Candidate>, Vec<Ignored>) {
    let mut candidates = Vec::new();
    let mut ignored = Vec::new();
    let cluster_tag = format!("{CLUSTER_TAG_PREFIX}{cluster_name}");
    let etcd_tag = format!("{ETCD_TAG_PREFIX}{etcd_cluster}");
    for volume in volumes {
        let mut ignore = |reason: String| {
            ignored.push(Ignored {
                volume_id: volume.id.clone(),
                reason,
            })
        };
        if volume.tags.get(&cluster_tag).map(String::as_str) != Some("owned") {
            ignore(format!("not tagged {cluster_tag}=owned"));
            continue;
        }
        if volume.tags.get(ROLE_TAG).map(String::as_str) != Some("1") {
            ignore(format!("not tagged {ROLE_TAG}=1"));
            continue;
        }
        if let Some(zone) = zone
            && volume.availability_zone != zone
        {
            ignore(format!("in {}, not {zone}", volume.availability_zone));
            continue;
        }
        let Some(value) = volume.tags.get(&etcd_tag) else {
            ignore(format!("no {etcd_tag} tag"));
            continue;
        };
        match parse_etcd_tag(value) {
            Ok(tag) => candidates.push(Candidate {
                volume: volume.clone(),
                tag,
            }),
            Err(e) => ignore(format!("tag {etcd_tag}: {e}")),
        }
    }
    candidates.sort_by(|a, b| a.tag.member.cmp(&b.tag.member));
    (candidates, ignored)
}

/// What to do next for one etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A volume is attached (or attaching) to this instance already: it is ours.
    Mine {
        candidate: Candidate,
        /// Other volumes of the same etcd cluster also attached here (left alone).
        extra: Vec<String>,
    },
    /// Try these free volumes, in this order; the first AttachVolume that wins decides.
    Attach(Vec<Candidate>),
    /// Force-detach this volume from a stopped or terminated instance, then claim it.
    TakeOver {
        candidate: Candidate,
        holder: String,
        holder_state: String,
    },
    /// Nothing can be claimed now.
    Wait(String),
}

/// A volume's current holder other than us, if any.
fn holder<'a>(volume: &'a Volume, me: &str) -> Option<&'a str> {
    volume
        .attachments
        .iter()
        .find(|a| a.instance_id != me)
        .map(|a| a.instance_id.as_str())
}

fn attached_to_me(volume: &Volume, me: &str) -> bool {
    volume
        .attachments
        .iter()
        .any(|a| a.instance_id == me && matches!(a.state.as_str(), "attaching" | "attached"))
}

/// Decides. `holder_states` maps the instances holding volumes to their EC2 state
/// (missing: EC2 no longer knows the instance).
pub fn decide(
    me: &str,
    etcd_cluster: &str,
    zone: &str,
    candidates: &[Candidate],
    holder_states: &BTreeMap<String, String>,
    force: ForceDetach,
) -> Decision {
    let mut mine: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| attached_to_me(&c.volume, me))
        .collect();
    if !mine.is_empty() {
        let first = mine.remove(0).clone();
        return Decision::Mine {
            candidate: first,
            extra: mine.iter().map(|c| c.volume.id.clone()).collect(),
        };
    }
    if candidates.is_empty() {
        return Decision::Wait(format!(
            "no etcd volume of {etcd_cluster} in {zone} (tagged for this cluster); create one or check the tags"
        ));
    }
    let mut free: Vec<Candidate> = candidates
        .iter()
        .filter(|c| c.volume.state == "available" && c.volume.attachments.is_empty())
        .cloned()
        .collect();
    if !free.is_empty() {
        // Each node tries the volumes in its own order, so racing nodes mostly go for
        // different volumes; the order is stable, so `plan` shows what `boot` will try.
        free.sort_by_key(|c| preference(me, &c.volume.id));
        return Decision::Attach(free);
    }
    let mut reasons = Vec::new();
    let mut takeover = None;
    for candidate in candidates {
        let volume = &candidate.volume;
        let describe = |what: String| {
            format!(
                "etcd volume {} (member {} of {etcd_cluster}) {what}",
                volume.id, candidate.tag.member
            )
        };
        let Some(holder) = holder(volume, me) else {
            reasons.push(describe(format!("is {}", volume.state)));
            continue;
        };
        let state = holder_states
            .get(holder)
            .map(String::as_str)
            .unwrap_or("terminated");
        let gone = matches!(state, "stopped" | "terminated");
        reasons.push(describe(format!("is attached to {holder} ({state})")));
        if gone && force == ForceDetach::StoppedOrTerminated && takeover.is_none() {
            takeover = Some(Decision::TakeOver {
                candidate: candidate.clone(),
                holder: holder.to_owned(),
                holder_state: state.to_owned(),
            });
        }
    }
    if let Some(takeover) = takeover {
        return takeover;
    }
    let mut reason = reasons.join("; ");
    if holder_states
        .values()
        .any(|s| matches!(s.as_str(), "stopped" | "terminated"))
        && force == ForceDetach::Never
    {
        reason.push_str(
            "; start or terminate that instance, or set controlPlane.etcdVolumes.forceDetach: stoppedOrTerminated to take the volume over",
        );
    }
    Decision::Wait(reason)
}

/// A stable per-node order of volumes.
fn preference(me: &str, volume_id: &str) -> [u8; 8] {
    let digest = Sha256::digest(format!("{me}/{volume_id}").as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// A device name for AttachVolume that this instance does not use yet. Only names
/// matter to EC2 here; the device is found by the volume id afterwards.
pub fn free_device_name(in_use: &[String]) -> Option<String> {
    let used = |letter: char| {
        in_use.iter().any(|d| {
            d == &format!("/dev/xvd{letter}")
                || d == &format!("/dev/sd{letter}")
                || d == &format!("xvd{letter}")
                || d == &format!("sd{letter}")
        })
    };
    ('f'..='z')
        .rev()
        .find(|l| !used(*l))
        .map(|l| format!("/dev/xvd{l}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::ec2::Attachment;

    fn volume(id: &str, member: &str, attached_to: Option<(&str, &str)>) -> Volume {
        let mut tags = BTreeMap::new();
        tags.insert("kubernetes.io/cluster/prod".to_owned(), "owned".to_owned());
        tags.insert(ROLE_TAG.to_owned(), "1".to_owned());
        tags.insert("k8s.io/etcd/main".to_owned(), format!("{member}/a,b,c"));
        Volume {
            id: id.to_owned(),
            availability_zone: "us-east-1a".to_owned(),
            size_gib: 20,
            state: if attached_to.is_some() {
                "in-use"
            } else {
                "available"
            }
            .to_owned(),
            tags,
            attachments: attached_to
                .map(|(instance, state)| Attachment {
                    instance_id: instance.to_owned(),
                    device: "/dev/xvdu".to_owned(),
                    state: state.to_owned(),
                })
                .into_iter()
                .collect(),
        }
    }

    fn candidates(volumes: &[Volume]) -> Vec<Candidate> {
        let (c, ignored) = eligible(volumes, "prod", "main", Some("us-east-1a"));
        assert!(ignored.is_empty(), "{ignored:?}");
        c
    }

    #[test]
    fn tags_parse_and_bad_ones_are_refused() {
        let tag = parse_etcd_tag("b/a,b,c").unwrap();
        assert_eq!(tag.member, "b");
        assert_eq!(tag.members, ["a", "b", "c"]);
        assert!(parse_etcd_tag("d/a,b,c").unwrap_err().contains("not among"));
        assert!(parse_etcd_tag("a").is_err());
        assert!(parse_etcd_tag("A/A").is_err());
    }

    #[test]
    fn wrong_cluster_zone_and_untagged_volumes_are_ignored() {
        let mut other_cluster = volume("vol-1", "a", None);
        other_cluster.tags.remove("kubernetes.io/cluster/prod");
        other_cluster
            .tags
            .insert("kubernetes.io/cluster/dev".to_owned(), "owned".to_owned());
        let mut other_zone = volume("vol-2", "b", None);
        other_zone.availability_zone = "us-east-1b".to_owned();
        let mut root = volume("vol-3", "c", Some(("i-me", "attached")));
        root.tags.clear();
        let mut bad = volume("vol-4", "c", None);
        bad.tags
            .insert("k8s.io/etcd/main".to_owned(), "x/a,b".to_owned());
        let good = volume("vol-5", "c", None);
        let (c, ignored) = eligible(
            &[other_cluster, other_zone, root, bad, good],
            "prod",
            "main",
            Some("us-east-1a"),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].volume.id, "vol-5");
        let ids: Vec<&str> = ignored.iter().map(|i| i.volume_id.as_str()).collect();
        assert_eq!(ids, ["vol-1", "vol-2", "vol-3", "vol-4"]);
        assert!(ignored[1].reason.contains("us-east-1b"));
    }

    #[test]
    fn a_volume_attached_here_is_ours() {
        let c = candidates(&[
            volume("vol-1", "a", Some(("i-other", "attached"))),
            volume("vol-2", "b", Some(("i-me", "attaching"))),
            volume("vol-3", "c", None),
        ]);
        match decide(
            "i-me",
            "main",
            "us-east-1a",
            &c,
            &BTreeMap::new(),
            ForceDetach::Never,
        ) {
            Decision::Mine { candidate, extra } => {
                assert_eq!(candidate.volume.id, "vol-2");
                assert!(extra.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn free_volumes_are_tried_in_a_per_node_order() {
        let c = candidates(&[
            volume("vol-1", "a", None),
            volume("vol-2", "b", None),
            volume("vol-3", "c", Some(("i-x", "attached"))),
        ]);
        let order = |me: &str| match decide(
            me,
            "main",
            "us-east-1a",
            &c,
            &BTreeMap::new(),
            ForceDetach::Never,
        ) {
            Decision::Attach(list) => list.iter().map(|c| c.volume.id.clone()).collect(),
            other => panic!("{other:?}"),
        };
        let first: Vec<String> = order("i-1");
        assert_eq!(first.len(), 2, "held volumes are not tried");
        assert_eq!(order("i-1"), first, "stable");
        let firsts: std::collections::BTreeSet<String> = (0..20)
            .map(|n| order(&format!("i-{n}"))[0].clone())
            .collect();
        assert_eq!(
            firsts.len(),
            2,
            "different nodes start at different volumes"
        );
    }

    #[test]
    fn held_by_a_stopped_instance_is_reported_and_taken_only_when_allowed() {
        let c = candidates(&[
            volume("vol-1", "a", Some(("i-run", "attached"))),
            volume("vol-2", "b", Some(("i-stopped", "attached"))),
        ]);
        let mut states = BTreeMap::new();
        states.insert("i-run".to_owned(), "running".to_owned());
        states.insert("i-stopped".to_owned(), "stopped".to_owned());
        match decide(
            "i-me",
            "main",
            "us-east-1a",
            &c,
            &states,
            ForceDetach::Never,
        ) {
            Decision::Wait(reason) => {
                assert!(
                    reason.contains(
                        "etcd volume vol-2 (member b of main) is attached to i-stopped (stopped)"
                    ),
                    "{reason}"
                );
                assert!(reason.contains("vol-1") && reason.contains("(running)"));
                assert!(reason.contains("forceDetach"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match decide(
            "i-me",
            "main",
            "us-east-1a",
            &c,
            &states,
            ForceDetach::StoppedOrTerminated,
        ) {
            Decision::TakeOver {
                candidate,
                holder,
                holder_state,
            } => {
                assert_eq!(candidate.volume.id, "vol-2");
                assert_eq!(holder, "i-stopped");
                assert_eq!(holder_state, "stopped");
            }
            other => panic!("{other:?}"),
        }
        // Never from a running instance, whatever the policy.
        states.insert("i-stopped".to_owned(), "running".to_owned());
        assert!(matches!(
            decide(
                "i-me",
                "main",
                "us-east-1a",
                &c,
                &states,
                ForceDetach::StoppedOrTerminated
            ),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn no_volumes_at_all_is_a_wait_with_a_hint() {
        match decide(
            "i-me",
            "main",
            "us-east-1a",
            &[],
            &BTreeMap::new(),
            ForceDetach::Never,
        ) {
            Decision::Wait(reason) => assert!(reason.contains("no etcd volume of main")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn device_names_avoid_those_in_use() {
        assert_eq!(free_device_name(&[]).unwrap(), "/dev/xvdz");
        assert_eq!(
            free_device_name(&["/dev/sdz".to_owned(), "/dev/xvdy".to_owned()]).unwrap(),
            "/dev/xvdx"
        );
    }
}
