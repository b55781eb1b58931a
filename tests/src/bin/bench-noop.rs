//! Benchmark: the agent's size, and a no-op re-run of `nodewright boot` on a converged
//! root against the local stand-ins (moto for S3, the fake IMDS), side by side with the
//! first boot, `plan` on the converged root and `check` of the example spec (issues 2
//! and 14). Goals: size <= 10 MB, no-op re-run <= 20 ms, `check` <= 10 ms. Run by
//! `bench/noop.sh`.
//!
//! Usage: bench-noop [--quick] [BINARY] [RUNS]

use nodewright_e2e::stats::{ms, percentile, report_line};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodewright_e2e::imds::{FakeImds, Instance};
use nodewright_e2e::moto::Moto;
use nodewright_e2e::world::spec_location;

const SIZE_GOAL: u64 = 10_000_000;
const NOOP_GOAL_MS: f64 = 20.0;
const CHECK_GOAL_MS: f64 = 10.0;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.first().is_some_and(|a| a == "--quick");
    if quick {
        args.remove(0);
    }
    let binary = PathBuf::from(
        args.first()
            .cloned()
            .unwrap_or_else(|| "target/x86_64-unknown-linux-musl/dist/nodewright".to_owned()),
    );
    let runs: usize = match (quick, args.get(1).and_then(|n| n.parse().ok())) {
        (true, _) => 1,
        (false, Some(runs)) => runs,
        (false, None) => 30,
    };
    assert!(binary.exists(), "{} is missing", binary.display());

    let boot = nodewright_e2e::example("worker/bootconfig.yaml");
    let spec_path = nodewright_e2e::workspace().join("examples/worker/nodespec.yaml");
    let spec = std::fs::read(&spec_path).expect("the worker example");
    let moto = Moto::start();
    let (bucket, key) = spec_location(&boot).expect("an s3:// spec");
    moto.put_object(&bucket, &key, &spec);
    let imds = FakeImds::start(Instance::example("i-0a1b2c3d4e5f60718"), &boot);
    let root = tempfile::tempdir().expect("a temp root");
    nodewright_e2e::agent::seed_image_files(root.path());
    let home = tempfile::tempdir().expect("a temp home");

    let command = |args: &[&str]| -> Command {
        let mut command = Command::new(&binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url())
            .env("AWS_ENDPOINT_URL", moto.url())
            .env("NODEWRIGHT_LOG", "warn")
            .arg("--root")
            .arg(root.path())
            .args(args)
            .stdout(Stdio::null());
        command
    };
    let run = |args: &[&str]| -> Duration {
        let started = Instant::now();
        let status = command(args).status().expect("running nodewright");
        assert!(status.success(), "nodewright {args:?} failed");
        started.elapsed()
    };

    let first = run(&["boot"]);
    let noop: Vec<Duration> = (0..runs).map(|_| run(&["boot"])).collect();
    let plan: Vec<Duration> = (0..runs).map(|_| run(&["plan"])).collect();
    let spec_url = format!("file://{}", spec_path.display());
    let check_args = ["check", "--spec", spec_url.as_str()];
    let check = has_check(&binary).then(|| {
        (0..runs)
            .map(|_| run(&check_args))
            .collect::<Vec<Duration>>()
    });

    let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
    println!(
        "Agent: {} ({size} bytes, {:.1} MiB: {:.2}x the {SIZE_GOAL}-byte limit{})\n",
        binary.display(),
        size as f64 / 1048576.0,
        size as f64 / SIZE_GOAL as f64,
        if quick {
            ", which applies to the dist build"
        } else {
            ""
        },
    );
    println!("| worker example, {runs} runs | median | p90 | min |");
    println!("|---|---|---|---|");
    println!("| first boot | {:.1} ms | | |", ms(first));
    println!("{}", report_line("no-op re-run (`boot`)", &noop));
    println!("{}", report_line("`plan` on the converged root", &plan));
    match &check {
        Some(check) => println!("{}", report_line("`check` of the example spec", check)),
        None => println!("| `check` of the example spec | pending: no `check` command | | |"),
    }
    let median = ms(percentile(&noop, 0.5));
    println!(
        "\nno-op re-run: {:.2}x the {NOOP_GOAL_MS} ms goal; first boot / no-op: {:.2}x",
        median / NOOP_GOAL_MS,
        ms(first) / median
    );
    if let Some(check) = &check {
        println!(
            "check: {:.2}x the {CHECK_GOAL_MS} ms goal",
            ms(percentile(check, 0.5)) / CHECK_GOAL_MS
        );
    }
}

/// Whether this build has `nodewright check` (issue 14).
fn has_check(binary: &Path) -> bool {
    Command::new(binary)
        .args(["check", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
