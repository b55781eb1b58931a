//! Boots one worker node from the baked image, the way the booted-node tests do, and
//! leaves it running so that you can look around (`scripts/boot-node.sh`). Needs root.
//!
//!   boot-node [SPEC.yaml] [SECONDS]
//!
//! SPEC defaults to tests/fixtures/booted-worker/nodespec.yaml; the node stays up for
//! SECONDS (default: until stdin closes or Enter is pressed), then is torn down.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nodewright_e2e::fleet::{Fleet, boot_config};

fn main() -> ExitCode {
    let spec_path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            nodewright_e2e::workspace().join("tests/fixtures/booted-worker/nodespec.yaml")
        });
    let hold = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let spec = match std::fs::read(&spec_path) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("boot-node: reading {}: {e}", spec_path.display());
            return ExitCode::FAILURE;
        }
    };
    println!("Baking the image (cached after the first time) and starting the emulator...");
    let Some(mut fleet) = Fleet::start() else {
        return ExitCode::FAILURE;
    };
    let url = "s3://nodewright-state/prod.example.com/nodegroups/nodes-us-east-1a/nodespec.yaml";
    let user_data = boot_config("prod.example.com", "nodes-us-east-1a", "worker", url, &spec);
    fleet.publish(&user_data, &spec);
    let began = Instant::now();
    let node = fleet.launch(&user_data);
    let status = node.wait_for_unit("nodewright.service", "finished a run", |s| {
        s.active_state == "active" || s.sub_state == "auto-restart" || s.active_state == "failed"
    });
    println!(
        "\nnodewright.service: {} ({}) {:.2}s after the instance started",
        status.active_state,
        status.sub_state,
        began.elapsed().as_secs_f64()
    );
    let run = node.nodewright(&["status"]);
    print!("\n$ nodewright status\n{}{}", run.stdout, run.stderr);
    let pids = node.pids().expect("the node is running");
    println!(
        "\nThe node is up. Enter it with:\n  nsenter --target {} --all /bin/bash\nIts disk: {}",
        pids[2],
        node.path("/").display()
    );
    match hold {
        Some(duration) => std::thread::sleep(duration),
        None => {
            println!("Press Enter to tear it down.");
            let _ = std::io::stdin().lock().lines().next();
        }
    }
    ExitCode::SUCCESS
}
