//! Boot timeline of the booted HA control plane (issue 8): per run, a fresh control
//! plane (tests/src/ha.rs) whose three nodes boot at once, then a replacement of one of
//! them, then a worker that bootstraps through controller-shim. Prints the medians of
//! each node's milestones from its instance start, and of the cluster's (etcd healthy
//! on three members) from the launch. Run by `bench/control-plane.sh`; needs root.
//!
//!   bench-control-plane [RUNS]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use nodewright_e2e::ha::{self, HaControlPlane};
use nodewright_e2e::node::Node;
use nodewright_e2e::timeline::{BootTimeline, slowest_steps};

/// What one run measured.
struct Run {
    /// The three nodes booted at once.
    first: Vec<BootTimeline>,
    /// From the launch of the three to etcd healthy on three members.
    cluster_healthy: Duration,
    replacement: BootTimeline,
    /// From the replacement's launch to etcd healthy on three members again.
    rejoined: Duration,
    worker: BootTimeline,
    /// Where the agent's time went on one of the three.
    slowest: String,
}

fn main() -> ExitCode {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut results = Vec::new();
    for run in 0..runs {
        let Some(cp) = HaControlPlane::start() else {
            return ExitCode::FAILURE;
        };
        results.push(one_run(cp));
        eprint!("\rruns: {}/{runs}", run + 1);
    }
    eprintln!();

    println!(
        "Agent binary: {}",
        nodewright_e2e::image::node_binary().display()
    );
    println!(
        "Booted HA control plane (tests/fixtures/booted-control-plane: etcd volume claim, \
         Route53, PKI, etcd and controller-shim as systemd services), {runs} runs; medians.\n"
    );
    println!(
        "| node, from its instance start to | agent converged | boot unit finished | agent time | kubelet running |"
    );
    println!("|---|---|---|---|---|");
    let first: Vec<BootTimeline> = results.iter().flat_map(|r| r.first.clone()).collect();
    let replacement: Vec<BootTimeline> = results.iter().map(|r| r.replacement).collect();
    let worker: Vec<BootTimeline> = results.iter().map(|r| r.worker).collect();
    for (name, timelines) in [
        ("control plane, three at once", &first),
        ("replacement (volume with data)", &replacement),
        ("worker through controller-shim", &worker),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(median(timelines, |t| t.converged)),
            ms(median(timelines, |t| t.unit_finished)),
            ms(median(timelines, |t| t.agent_total)),
            ms(median(timelines, |t| t.kubelet_started.unwrap_or_default())),
        );
    }
    let healthy: Vec<Duration> = results.iter().map(|r| r.cluster_healthy).collect();
    let rejoined: Vec<Duration> = results.iter().map(|r| r.rejoined).collect();
    println!(
        "\netcd healthy on three members: {} after the three launches; {} after the replacement's launch.",
        ms(nodewright_e2e::stats::percentile(&healthy, 0.5)),
        ms(nodewright_e2e::stats::percentile(&rejoined, 0.5)),
    );
    if let Some(last) = results.last() {
        println!(
            "\nThe first of the three in the last run:\n{}",
            last.slowest
        );
    }
    ExitCode::SUCCESS
}

fn one_run(mut cp: HaControlPlane) -> Run {
    let launched = Instant::now();
    let mut nodes: Vec<Node> = (0..3).map(|_| cp.launch()).collect();
    let first: Vec<BootTimeline> = nodes.iter().map(timeline).collect();
    ha::wait_cluster_healthy(&nodes[0]);
    let cluster_healthy = launched.elapsed();
    let slowest = slowest_steps(&nodes[0], 15);

    let old = nodes.remove(0);
    cp.terminate(old);
    let launched = Instant::now();
    let new = cp.launch();
    let replacement = timeline(&new);
    ha::wait_cluster_healthy(&new);
    let rejoined = launched.elapsed();
    nodes.push(new);

    let worker = cp.launch_worker();
    let worker = timeline(&worker);
    Run {
        first,
        cluster_healthy,
        replacement,
        rejoined,
        worker,
        slowest,
    }
}

/// Waits for the node's run (and the kubelet), then reads the boot's timeline.
fn timeline(node: &Node) -> BootTimeline {
    node.wait_for_unit_within(
        "nodewright.service",
        "active after a successful run",
        Duration::from_secs(180),
        |s| s.active_state == "active" && s.result == "success",
    );
    node.wait_for_unit("kubelet.service", "running", |s| s.active_state == "active");
    BootTimeline::of(node).unwrap_or_else(|| panic!("a timeline of {}", node.name()))
}

fn median(values: &[BootTimeline], pick: fn(&BootTimeline) -> Duration) -> Duration {
    let picked: Vec<Duration> = values.iter().map(pick).collect();
    nodewright_e2e::stats::percentile(&picked, 0.5)
}

fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}
