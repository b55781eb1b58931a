//! Publishing the control plane's names: Route53 records per instance, or the fenced
//! /etc/hosts block (`hosts` and `none` modes).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::claim;
use super::hosts;
use super::records::{self, Publish};
use super::{Context, ControlPlaneError};
use crate::cloud::ec2::Ec2;
use crate::cloud::route53::{Action, Route53};
use crate::facts::EtcdMember;
use crate::host::fs as hostfs;
use crate::spec::{DnsMode, DnsSpec, etcd_peer_name};

/// How many times a batch refused because the zone changed meanwhile is recomputed.
const CONFLICT_ROUNDS: u32 = 6;

pub(super) async fn publish<E: Ec2, R: Route53>(
    ctx: &Context<'_, E>,
    route53: Option<&R>,
    dns: &DnsSpec,
    etcd_clusters: &[String],
    members: &BTreeMap<String, EtcdMember>,
) -> Result<Vec<String>, ControlPlaneError> {
    let api = dns.api_name(&ctx.cluster);
    match dns.mode {
        DnsMode::Route53 => {
            let zone = dns.hosted_zone_id.as_deref().unwrap_or_default();
            let route53 = route53.ok_or_else(|| {
                ControlPlaneError::Names("route53 mode without a Route53 client".to_owned())
            })?;
            publish_route53(ctx, route53, zone, dns, &api, members).await
        }
        DnsMode::Hosts | DnsMode::None => write_hosts(ctx, dns, &api, etcd_clusters).await,
    }
}

async fn publish_route53<E: Ec2, R: Route53>(
    ctx: &Context<'_, E>,
    route53: &R,
    zone: &str,
    dns: &DnsSpec,
    api: &str,
    members: &BTreeMap<String, EtcdMember>,
) -> Result<Vec<String>, ControlPlaneError> {
    let mut names = vec![api.to_owned()];
    let mut managed = vec![api.to_owned()];
    for (etcd_cluster, member) in members {
        if member.planned {
            continue;
        }
        if let Some(own) = member.peer_names.get(&member.member) {
            names.push(own.clone());
        }
        managed.extend(member.peer_names.values().cloned());
        let _ = etcd_cluster;
    }
    managed.sort();
    managed.dedup();
    let publish = Publish {
        instance_id: &ctx.instance.instance_id,
        ip: ctx.instance.private_ipv4,
        ttl: dns.ttl,
        names: &names,
    };
    let mut last_conflict = None;
    for attempt in 0..CONFLICT_ROUNDS {
        if attempt > 0 {
            // Let the other node's change land before reading again (jittered, so two
            // nodes do not keep colliding in step).
            let base = 250u64 << attempt.min(5);
            tokio::time::sleep(std::time::Duration::from_millis(
                base / 2 + fastrand::u64(0..=base / 2),
            ))
            .await;
        }
        let mut existing = Vec::new();
        for name in &managed {
            existing.extend(
                route53
                    .records_named(zone, name)
                    .await
                    .map_err(ControlPlaneError::Cloud)?,
            );
        }
        let mut ids = records::instance_ids(&existing);
        ids.insert(ctx.instance.instance_id.clone());
        let live = live_instances(ctx, ids).await?;
        let changes = records::changes(&publish, &managed, &existing, &live)
            .map_err(ControlPlaneError::Names)?;
        if changes.is_empty() {
            return Ok(vec![format!(
                "route53: {} records of {} are current",
                names.len(),
                ctx.instance.instance_id
            )]);
        }
        let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
        if ctx.read_only {
            return Ok(lines.into_iter().map(|l| format!("would {l}")).collect());
        }
        match route53.change(zone, &changes).await {
            Ok(()) => {
                for change in &changes {
                    let level_delete = change.action == Action::Delete;
                    tracing::info!(change = %change, delete = level_delete, "route53 record changed");
                }
                return Ok(lines.into_iter().map(|l| format!("route53: {l}")).collect());
            }
            // Another node changed a record between our read and our batch (e.g. both
            // deleted a dead instance's record): read again and recompute.
            Err(e) if matches!(e.code(), Some("InvalidChangeBatch" | "InvalidInput")) => {
                tracing::info!(error = %e, "the zone changed meanwhile; reading it again");
                last_conflict = Some(e);
            }
            Err(e) => return Err(ControlPlaneError::Cloud(e)),
        }
    }
    Err(ControlPlaneError::Names(format!(
        "route53 refused the changes {CONFLICT_ROUNDS} times: {}",
        last_conflict.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// The instances among `ids` that are pending or running.
async fn live_instances<E: Ec2>(
    ctx: &Context<'_, E>,
    ids: BTreeSet<String>,
) -> Result<BTreeSet<String>, ControlPlaneError> {
    if ids.is_empty() {
        return Ok(BTreeSet::new());
    }
    let instances = ctx
        .ec2
        .describe_instances(&vec![("instance-id".to_owned(), ids.into_iter().collect())])
        .await
        .map_err(ControlPlaneError::Cloud)?;
    Ok(instances
        .into_iter()
        .filter(|i| matches!(i.state.as_str(), "pending" | "running"))
        .map(|i| i.id)
        .collect())
}

/// Discovers the etcd peers (and, in hosts mode, the API servers) from EC2: every
/// volume of the cluster's etcd clusters, in any zone, and the running instances
/// holding them.
async fn discover<E: Ec2>(
    ctx: &Context<'_, E>,
    dns: &DnsSpec,
    etcd_clusters: &[String],
) -> Result<BTreeMap<String, BTreeSet<IpAddr>>, ControlPlaneError> {
    let domain = dns.etcd_domain(&ctx.cluster);
    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for etcd_cluster in etcd_clusters {
        let volumes = ctx
            .ec2
            .describe_volumes(&claim::volume_filters(ctx.cluster_name, etcd_cluster, None))
            .await
            .map_err(ControlPlaneError::Cloud)?;
        let (candidates, _) = claim::eligible(&volumes, ctx.cluster_name, etcd_cluster, None);
        for candidate in candidates {
            for attachment in &candidate.volume.attachments {
                if matches!(attachment.state.as_str(), "attaching" | "attached") {
                    holders
                        .entry(attachment.instance_id.clone())
                        .or_default()
                        .push(etcd_peer_name(etcd_cluster, &candidate.tag.member, &domain));
                }
            }
        }
    }
    let mut entries: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    if !holders.is_empty() {
        let instances = ctx
            .ec2
            .describe_instances(&vec![(
                "instance-id".to_owned(),
                holders.keys().cloned().collect(),
            )])
            .await
            .map_err(ControlPlaneError::Cloud)?;
        for instance in instances {
            if instance.state != "running" {
                continue;
            }
            let (Some(ip), Some(names)) = (instance.private_ip, holders.get(&instance.id)) else {
                continue;
            };
            for name in names {
                entries
                    .entry(name.clone())
                    .or_default()
                    .insert(IpAddr::V4(ip));
            }
            if dns.mode == DnsMode::Hosts {
                entries
                    .entry(dns.api_name(&ctx.cluster))
                    .or_default()
                    .insert(IpAddr::V4(ip));
            }
        }
    }
    if dns.mode == DnsMode::None {
        entries.insert(
            dns.api_name(&ctx.cluster),
            dns.load_balancer_ips.iter().copied().collect(),
        );
    }
    Ok(entries)
}

async fn write_hosts<E: Ec2>(
    ctx: &Context<'_, E>,
    dns: &DnsSpec,
    _api: &str,
    etcd_clusters: &[String],
) -> Result<Vec<String>, ControlPlaneError> {
    let entries = discover(ctx, dns, etcd_clusters).await?;
    let block = hosts::render_block(&entries);
    let path = ctx.host.root().join("etc/hosts");
    let fail = |detail: String| ControlPlaneError::Names(format!("{}: {detail}", path.display()));
    let (existing, mode) = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mode = match hostfs::inspect(&path) {
                Ok(hostfs::Existing::File(stat)) => stat.mode,
                _ => 0o644,
            };
            (text, mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o644),
        Err(e) => return Err(fail(e.to_string())),
    };
    let updated = hosts::splice(&existing, &block).map_err(fail)?;
    let summary = format!(
        "{} mode: /etc/hosts block with {} names",
        dns.mode,
        entries.len()
    );
    if updated == existing {
        return Ok(vec![format!("{summary}, current")]);
    }
    if ctx.read_only {
        return Ok(vec![format!("would write the {summary}")]);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
    }
    // The same atomic write as every managed file: temp, fsync, rename.
    hostfs::write_atomic(&path, updated.as_bytes(), mode, 0, 0)
        .or_else(|e| {
            // Not root (a test root owned by the user): keep the caller's ownership.
            let (uid, gid) = hostfs::current_ids();
            if uid == 0 {
                Err(e)
            } else {
                hostfs::write_atomic(&path, updated.as_bytes(), mode, uid, gid)
            }
        })
        .map_err(|e| fail(e.to_string()))?;
    Ok(vec![format!("wrote the {summary}")])
}
