//! `nodewright etcd backup|restore`: etcd backups to the state store and the restore
//! for when quorum is gone (see `crate::controlplane::etcd::command`).

use std::path::Path;

use serde_json::json;

use super::{exit, fail};
use crate::controlplane::etcd::backup::Outcome;
use crate::controlplane::etcd::command::{self, RestoreRequest};
use crate::host::Host;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: EtcdCommand,
}

#[derive(Debug, clap::Subcommand)]
enum EtcdCommand {
    /// One backup round (what the timer runs each interval): only etcd's leader backs
    /// up, once per interval; the others record the newest backup and exit 0.
    Backup(BackupArgs),
    /// Restore this node's etcd member from a backup. Run it on every control-plane
    /// node; refused while the cluster has quorum and data, unless --force.
    Restore(RestoreArgs),
}

#[derive(Debug, clap::Args)]
struct BackupArgs {
    /// The etcd cluster (`main`, `events`).
    #[arg(long, value_name = "NAME")]
    cluster: String,
    /// Back up now, from this member, whatever the interval and whoever leads.
    #[arg(long)]
    now: bool,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RestoreArgs {
    /// The etcd cluster (`main`, `events`).
    #[arg(long, value_name = "NAME")]
    cluster: String,
    /// `latest`, a backup's name (2025-01-02T03:15:00Z-000042) or its s3:// URL.
    #[arg(long, value_name = "BACKUP")]
    backup: String,
    /// Restore even though the cluster has quorum and holds data: its writes since the
    /// backup are lost.
    #[arg(long)]
    force: bool,
    /// Accept a backup etcd-manager (kops) wrote, which has no nodewright record: its
    /// cluster cannot be checked, only its snapshot's own digest.
    #[arg(long)]
    etcd_manager_backup: bool,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(root: &Path, args: Args) -> u8 {
    let host = Host::new(root);
    match args.command {
        EtcdCommand::Backup(args) => backup(&host, args).await,
        EtcdCommand::Restore(args) => restore(&host, args).await,
    }
}

async fn backup(host: &Host, args: BackupArgs) -> u8 {
    let done = match command::backup(host, &args.cluster, args.now).await {
        Ok(done) => done,
        Err(e) => return fail(&e),
    };
    let (result, text) = match &done.round.outcome {
        Outcome::Taken(record) => (
            "taken",
            format!(
                "etcd cluster {}: backup {} taken ({} bytes, revision {}, sha256 {})",
                args.cluster,
                done.status
                    .last_backup
                    .as_ref()
                    .map_or(record.name.clone(), |b| b.url.clone()),
                record.size,
                record.revision,
                record.sha256
            ),
        ),
        Outcome::AlreadyTaken(name) => (
            "already-taken",
            format!(
                "etcd cluster {}: this interval's backup is {name}; nothing to do",
                args.cluster
            ),
        ),
        Outcome::NotLeader { leader } => (
            "not-leader",
            format!(
                "etcd cluster {}: member {leader:x} leads etcd and takes the backup; nothing to do here",
                args.cluster
            ),
        ),
    };
    if args.json {
        let value = json!({
            "result": result,
            "store": done.store,
            "removed": done.round.removed.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "warnings": done.round.warnings,
            "status": done.status,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        println!("{text}");
        for name in &done.round.removed {
            println!("  removed {name} (past retention)");
        }
        for warning in &done.round.warnings {
            println!("  warning: {warning}");
        }
    }
    exit::OK
}

async fn restore(host: &Host, args: RestoreArgs) -> u8 {
    let request = RestoreRequest {
        etcd_cluster: args.cluster.clone(),
        backup: args.backup.clone(),
        force: args.force,
        etcd_manager_backup: args.etcd_manager_backup,
    };
    let done = match command::restore(host, &request).await {
        Ok(done) => done,
        Err(e) => return fail(&e),
    };
    let restored = &done.restored;
    tracing::warn!(
        etcd_cluster = %args.cluster,
        backup = %restored.backup,
        "etcd member restored from a backup"
    );
    if args.json {
        let value = json!({
            "backup": restored.backup,
            "sha256": restored.sha256,
            "revision": restored.record.as_ref().map(|r| r.revision),
            "clusterToken": restored.cluster_token,
            "clusterId": format!("{:x}", restored.cluster_id),
            "dataDir": done.data_dir,
            "movedAside": restored.moved_aside,
            "quorum": restored.quorum,
            "seconds": restored.seconds,
            "notes": done.notes,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        println!(
            "etcd cluster {}: restored {} (sha256 {}) into {} in {:.1} s",
            args.cluster,
            restored.backup,
            restored.sha256,
            done.data_dir.display(),
            restored.seconds
        );
        println!(
            "  cluster token {}, cluster id {:x}",
            restored.cluster_token, restored.cluster_id
        );
        println!("  quorum check: {}", restored.quorum);
        match &restored.moved_aside {
            Some(path) => println!("  the old data directory is kept at {}", path.display()),
            None => println!("  there was no old data directory"),
        }
        for note in &done.notes {
            println!("  note: {note}");
        }
        println!(
            "  restore every other member from the same backup; the cluster is back when a majority is"
        );
    }
    exit::OK
}
