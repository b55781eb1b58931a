//! Boot timeline benchmark (issue 8): the booted Kubernetes worker (containerd from the
//! image, the kubelet stand-in from the asset mirror; tests/src/worker.rs) on two
//! images side by side, interleaved: not baked (the kubelet is downloaded at boot) and
//! baked (`nodewright prebake` of the same spec in the image build). Each fresh
//! not-baked instance is also rebooted once (a no-op run). Prints the median of every
//! milestone from the instance start and the baked/not-baked ratios. Run by
//! `bench/boot.sh`; needs root.
//!
//!   bench-boot [RUNS]

use std::process::ExitCode;
use std::time::Duration;

use nodewright_e2e::fleet::{Fleet, boot_config};
use nodewright_e2e::node::{Launch, Node};
use nodewright_e2e::timeline::{BootTimeline, slowest_steps};
use nodewright_e2e::worker::{self, AssetMirror};

fn main() -> ExitCode {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut mirror = AssetMirror::start();
    let Some(mut fleet) = Fleet::start_with(&worker::recipe()) else {
        return ExitCode::FAILURE;
    };
    mirror.expose(&fleet);
    let baked = fleet.bake(&mirror.prebake_recipe(&fleet));
    let spec = mirror.s3_worker_spec();
    let url = "s3://nodewright-state/prod.example.com/nodegroups/nodes-us-east-1a/nodespec.yaml";
    let user_data = boot_config("prod.example.com", "nodes-us-east-1a", "worker", url, &spec);
    fleet.publish(&user_data, &spec);

    let mut not_baked = Vec::new();
    let mut reboot = Vec::new();
    let mut prebaked = Vec::new();
    let mut changes = [0u64; 3];
    let mut statuses = [String::new(), String::new()];
    for run in 0..runs {
        let before = mirror.mirror.hits_for(worker::KUBELET_PATH).len();
        let mut node = fleet.launch(&user_data);
        not_baked.push(timeline(&node, "not baked"));
        changes[0] = last_changes(&node);
        statuses[0] = node.nodewright(&["status"]).stdout + &slowest_steps(&node, 12);
        assert_eq!(
            mirror.mirror.hits_for(worker::KUBELET_PATH).len(),
            before + 1,
            "a node of the plain image downloads the kubelet once"
        );
        node.reboot();
        reboot.push(timeline(&node, "reboot"));
        changes[1] = last_changes(&node);
        fleet.terminate(node);

        let before = mirror.mirror.hits_for(worker::KUBELET_PATH).len();
        let launch = Launch {
            instance: fleet.next_instance(),
            user_data: user_data.clone(),
            environment: fleet.environment(),
        };
        let node = fleet.launch_on(baked.clone(), launch);
        prebaked.push(timeline(&node, "baked"));
        changes[2] = last_changes(&node);
        statuses[1] = node.nodewright(&["status"]).stdout + &slowest_steps(&node, 12);
        assert_eq!(
            mirror.mirror.hits_for(worker::KUBELET_PATH).len(),
            before,
            "a node of the baked image downloaded the kubelet"
        );
        fleet.terminate(node);
        eprint!("\rruns: {}/{runs}", run + 1);
    }
    eprintln!();

    let binary = nodewright_e2e::image::node_binary();
    let kubelet_bytes = std::fs::metadata(worker::standin_binary())
        .map(|m| m.len())
        .unwrap_or(0);
    println!("Agent binary: {}", binary.display());
    println!(
        "Booted worker (tests/fixtures/booted-worker + kubernetes.yaml: containerd from the image, \
         the kubelet stand-in, {:.1} MB, from the mirror), {runs} runs interleaved; medians.",
        kubelet_bytes as f64 / 1e6
    );
    println!(
        "Changes: not baked {}, baked {}, reboot {}.\n",
        changes[0], changes[2], changes[1]
    );
    println!("| from instance start to | not baked | baked | baked / not baked | reboot (no-op) |");
    println!("|---|---|---|---|---|");
    let rows: [(&str, Milestone); 6] = [
        ("systemd logging (PID 1 up)", |t| t.systemd_up),
        ("nodewright.service started", |t| t.unit_started),
        ("agent converged", |t| t.converged),
        ("nodewright.service finished", |t| t.unit_finished),
        ("kubelet running (unit started)", |t| {
            t.kubelet_started.unwrap_or_default()
        }),
        ("agent time (its own timeline)", |t| t.agent_total),
    ];
    for (name, pick) in rows {
        let (a, b, r) = (
            median(&not_baked, pick),
            median(&prebaked, pick),
            median(&reboot, pick),
        );
        println!(
            "| {name} | {} | {} | {:.2}× | {} |",
            ms(a),
            ms(b),
            b.as_secs_f64() / a.as_secs_f64(),
            ms(r)
        );
    }
    let agent_baked = median(&prebaked, |t| t.agent_total);
    let agent_plain = median(&not_baked, |t| t.agent_total);
    println!(
        "\nAgent time: baked {} = {:.2}× the 2 s target; not baked {} = {:.2}× the target.",
        ms(agent_baked),
        agent_baked.as_secs_f64() / 2.0,
        ms(agent_plain),
        agent_plain.as_secs_f64() / 2.0,
    );
    for (what, status) in ["not baked", "baked"].iter().zip(&statuses) {
        println!("\nThe last {what} boot, as `nodewright status` shows it:\n{status}");
    }
    ExitCode::SUCCESS
}

/// Waits for the node's run and the kubelet, then reads the boot's timeline.
fn timeline(node: &Node, what: &str) -> BootTimeline {
    node.wait_converged();
    node.wait_for_unit("kubelet.service", "running", |s| s.active_state == "active");
    let timeline = BootTimeline::of(node).unwrap_or_else(|| panic!("a {what} timeline"));
    assert!(
        timeline.kubelet_started.is_some(),
        "{what}: no `Started kubelet.service` in the journal"
    );
    timeline
}

fn last_changes(node: &Node) -> u64 {
    node.state().expect("state")["lastRun"]["changes"]
        .as_u64()
        .unwrap_or(0)
}

/// Picks one milestone out of a timeline.
type Milestone = fn(&BootTimeline) -> Duration;

fn median(values: &[BootTimeline], pick: Milestone) -> Duration {
    let picked: Vec<Duration> = values.iter().map(pick).collect();
    nodewright_e2e::stats::percentile(&picked, 0.5)
}

fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}
