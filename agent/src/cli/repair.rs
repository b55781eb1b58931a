//! `nodewright repair`: restore drifted files from the spec kept on the node (and the
//! asset cache) through the normal plan and apply, without the network, restarting
//! only the services whose inputs it restored. Never touches protected paths (etcd
//! data). Verifies afterwards, and exits 7 if drift remains.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::exit;
use super::fail;
use crate::boot::{self, Options, SpecSource};
use crate::engine::State;
use crate::engine::verify::{self, Check};
use crate::host::Host;
use crate::runbook::Topic;
use crate::source::facts::FactsFrom;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show what would be restored, changing nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(root: &Path, args: Args) -> u8 {
    let options = Options {
        root: root.to_owned(),
        source: SpecSource::Kept,
        facts: FactsFrom::Imds,
        deadline: Duration::ZERO,
        command: "repair".to_owned(),
        credentials: false,
        repair: true,
        // An operator's command: say at once that another run is busy.
        lock_wait: Duration::ZERO,
    };
    if args.dry_run {
        return dry_run(&options, args.json).await;
    }
    let host = Host::new(root);
    let converged = match boot::converge(&options).await {
        Ok(converged) => converged,
        Err((error, _)) => return fail(&error),
    };
    let state = State::load(&host.state_dir()).unwrap_or_default();
    let after = verify::verify(&host, &state, Check::Rehash);

    let steps: Vec<Value> = converged
        .plan
        .steps
        .iter()
        .zip(&converged.report.steps)
        .map(|(step, report)| {
            let mut value = serde_json::to_value(step).unwrap_or(Value::Null);
            value["outcome"] = Value::String(report.outcome.describe());
            value
        })
        .collect();
    let left_alone: Vec<Value> = converged
        .left_alone
        .iter()
        .map(|(path, guard)| json!({ "path": path, "protected": guard.path, "reason": guard.reason }))
        .collect();
    if args.json {
        let value = json!({
            "steps": steps,
            "leftAlone": left_alone,
            "remainingDrift": after.drift,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        if converged.plan.is_empty() {
            println!("Nothing to repair: every managed file matches the kept spec.");
        } else {
            println!("Repaired ({} changes):", converged.plan.steps.len());
            for (step, report) in converged.plan.steps.iter().zip(&converged.report.steps) {
                println!("  - {} → {}", step.describe(), report.outcome.describe());
            }
        }
        for (path, guard) in &converged.left_alone {
            println!(
                "Left alone: {path} (under protected {}: {})",
                guard.path, guard.reason
            );
        }
        if after.is_clean() {
            println!(
                "Verified {} managed paths after repair: no drift.",
                after.checked
            );
        }
    }
    if after.is_clean() {
        return exit::OK;
    }
    eprintln!("nodewright: drift remains after repair:");
    for drift in &after.drift {
        let why = drift
            .protected
            .as_ref()
            .map(|p| format!(" (under protected {p}: repair never touches etcd data)"))
            .unwrap_or_default();
        eprintln!("  - {}{why}", drift.describe());
    }
    eprintln!("{}", Topic::Drift.hint());
    exit::DRIFT
}

async fn dry_run(options: &Options, as_json: bool) -> u8 {
    match boot::plan_only(options).await {
        Ok((plan, _)) => {
            if as_json {
                match serde_json::to_string_pretty(&plan) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("nodewright: {e}");
                        return exit::INTERNAL;
                    }
                }
            } else if plan.is_empty() {
                println!("Nothing to repair: every managed file matches the kept spec.");
            } else {
                print!("Repair would make {}", plan.render());
            }
            exit::OK
        }
        Err(error) => fail(&error),
    }
}
