//! Benchmark for operating a node (issue 9), run by `bench/ops.sh`:
//!
//! 1. what the live run record, the run lock and the kept spec add to a no-op `boot`:
//!    this build against a baseline build, runs interleaved, side by side;
//! 2. `repair` of one drifted config, offline;
//! 3. `status` (trusts unchanged stats) and `verify` (re-hashes everything) on a node
//!    holding big binaries, as a real node does (kubelet, containerd, runc...).
//!
//! Usage: bench-ops CURRENT BASELINE [RUNS] [BINARY_MB]

use nodewright_e2e::stats::{ms, percentile, report_line};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nodewright_e2e::imds::{FakeImds, Instance};
use nodewright_e2e::moto::Moto;
use nodewright_e2e::specs;
use nodewright_e2e::world::spec_location;

fn main() {
    let mut args = std::env::args().skip(1);
    let current = PathBuf::from(args.next().expect("the current binary"));
    let baseline = PathBuf::from(args.next().expect("the baseline binary"));
    let runs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(30);
    let binary_mb: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);

    let spec = specs::ops_worker_spec();
    let boot = specs::boot_config_for("worker", &spec);
    let moto = Moto::start();
    let (bucket, key) = spec_location(&boot).expect("an s3:// spec");
    moto.put_object(&bucket, &key, &spec);
    let imds = FakeImds::start(Instance::example("i-0a1b2c3d4e5f60718"), &boot);
    let home = tempfile::tempdir().expect("a temp home");

    let run = |binary: &Path, root: &Path, args: &[&str]| -> Duration {
        let started = Instant::now();
        let status = Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url())
            .env("AWS_ENDPOINT_URL", moto.url())
            .env("NODEWRIGHT_LOG", "warn")
            .arg("--root")
            .arg(root)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running nodewright");
        assert!(status.success(), "{} {args:?} failed", binary.display());
        started.elapsed()
    };

    // 1. No-op boot, baseline and current interleaved on their own converged roots.
    let base_root = tempfile::tempdir().expect("a root");
    let cur_root = tempfile::tempdir().expect("a root");
    run(&baseline, base_root.path(), &["boot"]);
    run(&current, cur_root.path(), &["boot"]);
    let mut base = Vec::new();
    let mut cur = Vec::new();
    for _ in 0..runs {
        base.push(run(&baseline, base_root.path(), &["boot"]));
        cur.push(run(&current, cur_root.path(), &["boot"]));
    }
    println!("no-op boot, {runs} runs each, interleaved:");
    println!("{:<34} {:>9} {:>9} {:>9}", "", "median", "p90", "min");
    report("baseline", &base);
    report("this build", &cur);
    println!(
        "this build / baseline (median): {:.2}x",
        ms(percentile(&cur, 0.5)) / ms(percentile(&base, 0.5))
    );

    // 2. Repair of one drifted config (re-reads every managed file, restores one,
    //    records the run).
    let root = cur_root.path();
    let samples = runs.min(10);
    let config = root.join(specs::SHIPPER_CONFIG.trim_start_matches('/'));
    let repair: Vec<Duration> = (0..samples)
        .map(|i| {
            std::fs::write(&config, format!("drift {i}\n")).expect("drifting a config");
            run(&current, root, &["repair"])
        })
        .collect();

    // 3. Three big binaries recorded as managed files (as the assets engine records
    //    what it installs), for status and verify.
    let mut total_mb = 0;
    let state_path = root.join("var/lib/nodewright/state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).expect("state")).expect("JSON");
    for (i, name) in ["kubelet", "containerd", "runc"].iter().enumerate() {
        let mb = binary_mb / (i + 1);
        total_mb += mb;
        let path = format!("/usr/local/bin/bench-{name}");
        let real = root.join(path.trim_start_matches('/'));
        let mut rng = fastrand::Rng::with_seed(i as u64);
        let bytes: Vec<u8> = (0..mb << 20).map(|_| rng.u8(..)).collect();
        std::fs::write(&real, &bytes).expect("writing a binary");
        std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let stat = nodewright::host::fs::inspect(&real).expect("stat");
        let nodewright::host::fs::Existing::File(stat) = stat else {
            panic!("not a file")
        };
        state["files"][&path] = serde_json::json!({
            "kind": "file",
            "digest": nodewright::spec::digest(&bytes),
            "mode": 0o755,
            "uid": stat.uid,
            "gid": stat.gid,
            "stat": {
                "size": stat.size,
                "mtimeNs": stat.mtime_ns as i64,
                "ctimeNs": stat.ctime_ns as i64,
                "inode": stat.inode,
            }
        });
    }
    std::fs::write(
        &state_path,
        serde_json::to_vec_pretty(&state).expect("JSON"),
    )
    .expect("state");
    let managed = state["files"].as_object().map_or(0, |f| f.len());
    let time = |args: &[&str]| -> Vec<Duration> {
        (0..samples).map(|_| run(&current, root, args)).collect()
    };
    let status = time(&["status"]);
    let verify = time(&["verify"]);
    println!("\nrepair of one drifted config, offline ({samples} runs):");
    println!("{:<34} {:>9} {:>9} {:>9}", "", "median", "p90", "min");
    report("repair", &repair);
    println!(
        "\nstatus and verify on a node with {managed} managed paths, {total_mb} MB of binaries ({samples} runs):"
    );
    println!("{:<34} {:>9} {:>9} {:>9}", "", "median", "p90", "min");
    report("status (stat check)", &status);
    report("verify (re-hash all)", &verify);
    let verify_s = percentile(&verify, 0.5).as_secs_f64();
    println!(
        "verify: {:.0} MB/s; verify / status: {:.1}x",
        total_mb as f64 / verify_s,
        ms(percentile(&verify, 0.5)) / ms(percentile(&status, 0.5))
    );
}

fn report(name: &str, samples: &[Duration]) {
    println!("{}", report_line(name, samples, 34));
}
