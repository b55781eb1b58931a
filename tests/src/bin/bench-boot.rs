//! Boot timeline benchmark (issue 8): boots fresh worker nodes from the baked image and
//! reboots each once, then prints the median of every milestone from the instance
//! start, first boot and reboot side by side. Run by `bench/boot.sh`; needs root.
//!
//!   bench-boot [RUNS]

use std::process::ExitCode;
use std::time::Duration;

use nodewright_e2e::fleet::{Fleet, boot_config};
use nodewright_e2e::timeline::BootTimeline;

fn main() -> ExitCode {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let Some(mut fleet) = Fleet::start() else {
        return ExitCode::FAILURE;
    };
    let spec = std::fs::read(
        nodewright_e2e::workspace().join("tests/fixtures/booted-worker/nodespec.yaml"),
    )
    .expect("the booted-worker spec");
    let url = "s3://nodewright-state/prod.example.com/nodegroups/nodes-us-east-1a/nodespec.yaml";
    let user_data = boot_config("prod.example.com", "nodes-us-east-1a", "worker", url, &spec);
    fleet.publish(&user_data, &spec);

    let mut first = Vec::new();
    let mut reboot = Vec::new();
    let mut changes = (0, 0);
    for run in 0..runs {
        let mut node = fleet.launch(&user_data);
        node.wait_converged();
        first.push(BootTimeline::of(&node).expect("a first-boot timeline"));
        changes.0 = node.state().expect("state")["lastRun"]["changes"]
            .as_u64()
            .unwrap_or(0);
        node.reboot();
        node.wait_converged();
        reboot.push(BootTimeline::of(&node).expect("a reboot timeline"));
        changes.1 = node.state().expect("state")["lastRun"]["changes"]
            .as_u64()
            .unwrap_or(0);
        fleet.terminate(node);
        eprint!("\rboots: {}/{runs}", run + 1);
    }
    eprintln!();

    let binary = nodewright_e2e::image::node_binary();
    println!("Agent binary: {}", binary.display());
    println!(
        "Worker (tests/fixtures/booted-worker), {runs} fresh instances, each booted then rebooted; medians."
    );
    println!(
        "First boot: {} changes; reboot: {} changes.\n",
        changes.0, changes.1
    );
    println!("| from instance start to | first boot | reboot (no-op) |");
    println!("|---|---|---|");
    let rows: [(&str, Milestone); 5] = [
        ("systemd logging (PID 1 up)", |t| t.systemd_up),
        ("nodewright.service started", |t| t.unit_started),
        ("agent converged", |t| t.converged),
        ("nodewright.service finished", |t| t.unit_finished),
        ("agent time (its own timeline)", |t| t.agent_total),
    ];
    for (name, pick) in rows {
        println!(
            "| {name} | {} | {} |",
            ms(median(&first, pick)),
            ms(median(&reboot, pick))
        );
    }
    let agent_first = median(&first, |t| t.agent_total);
    println!(
        "\nAgent time of a first boot: {} = {:.2}x the 2 s target; reboot/first boot: {:.2}x",
        ms(agent_first),
        agent_first.as_secs_f64() / 2.0,
        median(&reboot, |t| t.agent_total).as_secs_f64() / agent_first.as_secs_f64()
    );
    ExitCode::SUCCESS
}

/// Picks one milestone out of a timeline.
type Milestone = fn(&BootTimeline) -> Duration;

fn median(values: &[BootTimeline], pick: Milestone) -> Duration {
    let mut picked: Vec<Duration> = values.iter().map(pick).collect();
    picked.sort();
    picked[picked.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}
