//! `nodewright status`: the last run, its timeline, and what each trigger last did.

use std::path::Path;

use serde_json::json;

use crate::bootstrap::exit;
use crate::controlplane::ControlPlaneRecord;
use crate::engine::{State, timeline};
use crate::host::Host;

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
    let Some(run) = &state.last_run else {
        eprintln!(
            "nodewright: no run is recorded under {} (has nodewright run on this node?)",
            host.state_dir().display()
        );
        return exit::NO_STATE;
    };
    let control_plane = ControlPlaneRecord::load(&host.state_dir());
    if args.json {
        let value = json!({
            "lastRun": run,
            "managedFiles": state.files.len(),
            "applied": state.applied,
            "controlPlane": control_plane,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return exit::OK;
    }
    let result = serde_json::to_value(run.result)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    println!(
        "Last run:   {} ({}), {} → {}",
        run.command, result, run.started_at, run.finished_at
    );
    if let Some(error) = &run.error {
        println!("Error:      {}", error.replace('\n', "\n            "));
    }
    println!("Agent:      nodewright {}", run.agent_version);
    if let Some(url) = &run.spec_url {
        println!("Node spec:  {url}");
    }
    if let Some(sha) = &run.spec_sha256 {
        println!("Spec hash:  sha256:{sha}");
    }
    println!("Changes:    {}", run.changes);
    println!("Managed:    {} paths", state.files.len());
    if !state.applied.is_empty() {
        println!("Last actions:");
        for (key, record) in &state.applied {
            println!("  {key:<32} {} at {}", record.outcome, record.at);
        }
    }
    if let Some(record) = &control_plane {
        print_control_plane(record);
    }
    println!("Timeline (start, duration, step, outcome):");
    print!("{}", timeline::render(&run.timeline));
    exit::OK
}

fn print_control_plane(record: &ControlPlaneRecord) {
    println!(
        "Control plane: last round by {} at {}: {}",
        record.command,
        record.at,
        if record.ok { "ok" } else { "not ok" }
    );
    for (etcd_cluster, m) in &record.etcd_members {
        println!(
            "  etcd {etcd_cluster:<8} member {} on {} ({}) at {}",
            m.member, m.volume_id, m.device, m.mount_path
        );
    }
    for (what, reason) in &record.waiting {
        println!("  Waiting for {what}: {reason}");
    }
    if let Some(error) = &record.error {
        println!("  Error: {error}");
    }
    for line in &record.report {
        println!("  - {line}");
    }
}
