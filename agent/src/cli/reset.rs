//! `nodewright reset`: take off the node what nodewright installed. Never etcd data
//! unless `--include-etcd-data --confirm-etcd-data-loss`.

use std::path::Path;
use std::time::SystemTime;

use serde_json::json;

use super::exit;
use crate::clock::rfc3339;
use crate::engine::reset::{self, ResetOptions};
use crate::engine::timeline::Timeline;
use crate::engine::{RunRecord, RunResult, State};
use crate::host::Host;
use crate::host::lock::{LockError, RunLock};
use crate::runbook::Topic;
use crate::{progress, report};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do it (without this, reset only shows what it would remove).
    #[arg(long)]
    yes: bool,
    /// Show what would be removed, changing nothing.
    #[arg(long, conflicts_with = "yes")]
    dry_run: bool,
    /// Also empty the download cache (/var/cache/nodewright).
    #[arg(long)]
    remove_cache: bool,
    /// Also DELETE the etcd data under protected paths (needs --confirm-etcd-data-loss).
    #[arg(long, requires = "confirm_etcd_data_loss")]
    include_etcd_data: bool,
    /// Confirms --include-etcd-data: this member's etcd data is destroyed.
    #[arg(long, requires = "include_etcd_data")]
    confirm_etcd_data_loss: bool,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(root: &Path, args: Args) -> u8 {
    let host = Host::new(root);
    let options = ResetOptions {
        include_protected: args.include_etcd_data && args.confirm_etcd_data_loss,
        remove_cache: args.remove_cache,
    };
    if args.dry_run || !args.yes {
        let state = match State::load(&host.state_dir()) {
            Ok(state) => state,
            Err(e) => {
                eprintln!("nodewright: {e}");
                return exit::INTERNAL;
            }
        };
        let plan = reset::plan(&state, options);
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&plan).unwrap_or_default()
            );
        } else {
            print!("{}", plan.render());
        }
        if args.dry_run {
            return exit::OK;
        }
        eprintln!("nodewright: reset changes nothing without --yes");
        return exit::USAGE;
    }

    let _progress = progress::begin(root, "reset");
    let _lock = match RunLock::try_acquire(&host.state_dir()) {
        Ok(lock) => lock,
        Err(e @ LockError::Held { .. }) => {
            eprintln!("nodewright: {e}\n{}", Topic::AnotherRun.hint());
            return exit::BUSY;
        }
        Err(e) => {
            eprintln!("nodewright: {e}");
            return exit::INTERNAL;
        }
    };
    let mut state = match State::load(&host.state_dir()) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("nodewright: {e}");
            return exit::INTERNAL;
        }
    };
    let plan = reset::plan(&state, options);
    let mut timeline = Timeline::new();
    report::phase("reset");
    let steps = reset::run(&plan, &host, &mut state, &mut timeline).await;
    let failures: Vec<String> = steps
        .iter()
        .filter(|s| s.failed)
        .map(|s| format!("{} ({})", s.description, s.outcome))
        .collect();
    state.last_run = Some(RunRecord {
        command: "reset".to_owned(),
        started_at: rfc3339(timeline.started_at()),
        finished_at: rfc3339(SystemTime::now()),
        result: if failures.is_empty() {
            RunResult::Reset
        } else {
            RunResult::Failed
        },
        error: (!failures.is_empty()).then(|| failures.join("; ")),
        spec_url: None,
        spec_sha256: None,
        agent_version: crate::VERSION.to_owned(),
        changes: steps.len(),
        timeline: timeline.into_entries(),
    });
    if let Err(e) = state.save(&host.state_dir()) {
        eprintln!("nodewright: {e}");
        return exit::INTERNAL;
    }
    if args.json {
        let value = json!({ "plan": plan, "steps": steps });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        for step in &steps {
            println!("  - {}: {}", step.description, step.outcome);
        }
        for kept in &plan.kept {
            println!(
                "Kept {} (under protected {}: {}); --include-etcd-data --confirm-etcd-data-loss deletes it",
                kept.path, kept.protected, kept.reason
            );
        }
        let left = state.created_directories.len();
        if left > 0 {
            println!("Kept {left} directories nodewright created that are not empty.");
        }
        println!("Kernel settings already applied stay until the next reboot.");
    }
    if failures.is_empty() {
        exit::OK
    } else {
        eprintln!(
            "nodewright: {} reset steps failed:\n  - {}",
            failures.len(),
            failures.join("\n  - ")
        );
        exit::APPLY_FAILED
    }
}
