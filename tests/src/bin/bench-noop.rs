//! Benchmark: a no-op re-run of `nodewright boot` on a converged root, against the
//! local stand-ins (moto for S3, the fake IMDS), side by side with the first boot.
//! Target: a no-op re-run under 50 ms wall. Run by `bench/noop.sh`.
//!
//! Usage: bench-noop [BINARY] [RUNS]

use nodewright_e2e::stats::{ms, percentile, report_line};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nodewright_e2e::imds::{FakeImds, Instance};
use nodewright_e2e::moto::Moto;
use nodewright_e2e::world::spec_location;

fn main() {
    let binary = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/x86_64-unknown-linux-musl/dist/nodewright".to_owned()),
    );
    let runs: usize = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
    assert!(binary.exists(), "{} is missing", binary.display());

    let boot = nodewright_e2e::example("worker/bootconfig.yaml");
    let spec = nodewright_e2e::example("worker/nodespec.yaml");
    let moto = Moto::start();
    let (bucket, key) = spec_location(&boot).expect("an s3:// spec");
    moto.put_object(&bucket, &key, &spec);
    let imds = FakeImds::start(Instance::example("i-0a1b2c3d4e5f60718"), &boot);
    let root = tempfile::tempdir().expect("a temp root");
    nodewright_e2e::agent::seed_image_files(root.path());
    let home = tempfile::tempdir().expect("a temp home");

    let run = |args: &[&str]| -> Duration {
        let started = Instant::now();
        let status = Command::new(&binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url())
            .env("AWS_ENDPOINT_URL", moto.url())
            .env("NODEWRIGHT_LOG", "warn")
            .arg("--root")
            .arg(root.path())
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running nodewright");
        assert!(status.success(), "nodewright {args:?} failed");
        started.elapsed()
    };

    // Warm the emulator (its first S3 call loads its catalogue) on a throwaway root.
    let first = run(&["boot"]);
    let noop: Vec<Duration> = (0..runs).map(|_| run(&["boot"])).collect();
    let plan: Vec<Duration> = (0..runs).map(|_| run(&["plan"])).collect();

    let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
    println!(
        "binary: {} ({:.1} MiB)",
        binary.display(),
        size as f64 / 1048576.0
    );
    println!("{:<28} {:>9} {:>9} {:>9}", "", "median", "p90", "min");
    println!("{:<28} {:>7.1}ms", "first boot (25 changes)", ms(first));
    report("no-op re-run (boot)", &noop);
    report("plan on converged root", &plan);
    let median = percentile(&noop, 0.5);
    println!(
        "no-op re-run vs 50 ms target: {:.2}x the target; first boot / no-op: {:.2}x",
        ms(median) / 50.0,
        ms(first) / ms(median)
    );
}

fn report(name: &str, samples: &[Duration]) {
    println!("{}", report_line(name, samples, 28));
}
