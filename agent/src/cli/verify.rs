//! `nodewright verify`: re-hash every managed file and compare it, its mode, owner and
//! kind with what was recorded. Exits 7 on drift.

use std::path::Path;

use serde_json::json;

use super::exit;
use crate::engine::State;
use crate::engine::applied::AppliedSpec;
use crate::engine::verify::{self, Check};
use crate::host::Host;
use crate::runbook::Topic;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(root: &Path, args: Args) -> u8 {
    let host = Host::new(root);
    let state = match State::load(&host.state_dir()) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("nodewright: {e}");
            return exit::INTERNAL;
        }
    };
    if state.files.is_empty() && state.last_run.is_none() {
        eprintln!(
            "nodewright: nothing is recorded under {}: nodewright has installed nothing to verify",
            host.state_dir().display()
        );
        return exit::NO_STATE;
    }
    let report = verify::verify(&host, &state, Check::Rehash);
    let kept = match AppliedSpec::load(&host.state_dir()) {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.to_string(),
    };
    if args.json {
        let value = json!({ "report": report, "keptSpec": kept });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else if report.is_clean() {
        println!(
            "Verified {} managed paths: no drift (every file re-hashed).",
            report.checked
        );
        println!("Kept spec: {kept}");
    } else {
        println!(
            "Drift in {} of {} managed paths:",
            report.drift.len(),
            report.checked
        );
        for drift in &report.drift {
            let protected = drift
                .protected
                .as_ref()
                .map(|p| format!(" [protected: under {p}; repair leaves it alone]"))
                .unwrap_or_default();
            println!("  - {}{protected}", drift.describe());
        }
        println!("Kept spec: {kept}");
        println!("Restore with `nodewright repair`; {}", Topic::Drift.hint());
    }
    if report.is_clean() {
        exit::OK
    } else {
        exit::DRIFT
    }
}
