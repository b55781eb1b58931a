//! Benchmark for operating a node (issue 9), run by `bench/ops.sh`:
//!
//! 1. a no-op `boot` of the worker example against a baseline: another build run with
//!    its own worker example (e.g. the previous release, from its tag), interleaved,
//!    side by side; or, without one, the figure recorded for the foundation;
//! 2. `repair` of one drifted config, offline;
//! 3. `status` (trusts unchanged stats) and `verify` (re-hashes everything) on a node
//!    holding big binaries, as a real node does (kubelet, containerd, runc...).
//!
//! Usage: bench-ops [--quick] CURRENT [RUNS] [BINARY_MB] [--baseline BINARY EXAMPLE_DIR]
//! (EXAMPLE_DIR: the baseline's own `examples/worker`, with its bootconfig.yaml and
//! nodespec.yaml).

use nodewright_e2e::stats::{ms, percentile, report_line};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nodewright_e2e::imds::{FakeImds, Instance};
use nodewright_e2e::moto::Moto;
use nodewright_e2e::specs;
use nodewright_e2e::world::spec_location;

/// The baseline when no other build is given: the foundation's own figure for the same
/// measurement, its dist agent's no-op `boot` of its own worker example (9a3cbca, 30 runs,
/// bench/RESULTS.md "Issue 2"), recorded on the same 2-core machine.
const RECORDED_BASELINE: (&str, f64) = (
    "foundation 9a3cbca, its own example (recorded, RESULTS.md issue 2)",
    21.7,
);

/// An agent binary with the boot config and spec it boots, against its own stand-ins
/// (two builds' examples may name the same S3 object).
struct Side {
    binary: PathBuf,
    root: tempfile::TempDir,
    _moto: Moto,
    imds: FakeImds,
    moto_url: String,
}

impl Side {
    fn new(binary: PathBuf, boot: &[u8], spec: &[u8]) -> Self {
        assert!(binary.exists(), "{} is missing", binary.display());
        let moto = Moto::start();
        let (bucket, key) = spec_location(boot).expect("an s3:// spec");
        moto.put_object(&bucket, &key, spec);
        let imds = FakeImds::start(Instance::example("i-0a1b2c3d4e5f60718"), boot);
        let root = tempfile::tempdir().expect("a root");
        // The image's files: os-release names the package manager.
        nodewright_e2e::agent::seed_image_files(root.path());
        Self {
            binary,
            root,
            moto_url: moto.url().to_owned(),
            _moto: moto,
            imds,
        }
    }

    fn run(&self, home: &Path, args: &[&str]) -> Duration {
        let started = Instant::now();
        let status = Command::new(&self.binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", self.imds.url())
            .env("AWS_ENDPOINT_URL", &self.moto_url)
            .env("NODEWRIGHT_LOG", "warn")
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running nodewright");
        assert!(
            status.success(),
            "{} {args:?} failed",
            self.binary.display()
        );
        started.elapsed()
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.first().is_some_and(|a| a == "--quick");
    if quick {
        args.remove(0);
    }
    let baseline = args.iter().position(|a| a == "--baseline").map(|i| {
        let given: Vec<String> = args.drain(i..).skip(1).collect();
        let [binary, examples] = given.as_slice() else {
            panic!("--baseline BINARY EXAMPLE_DIR");
        };
        (PathBuf::from(binary), PathBuf::from(examples))
    });
    let mut args = args.into_iter();
    let current = PathBuf::from(args.next().expect("the current binary"));
    let mut runs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(30);
    let mut binary_mb: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    if quick {
        (runs, binary_mb) = (1, 3);
    }
    let home = tempfile::tempdir().expect("a temp home");

    // 1. No-op boot of each side's own worker example, interleaved.
    let plain = Side::new(
        current.clone(),
        &nodewright_e2e::example("worker/bootconfig.yaml"),
        &nodewright_e2e::example("worker/nodespec.yaml"),
    );
    let base = baseline.as_ref().map(|(binary, examples)| {
        let read = |name: &str| {
            let path = examples.join(name);
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        };
        Side::new(
            binary.clone(),
            &read("bootconfig.yaml"),
            &read("nodespec.yaml"),
        )
    });
    plain.run(home.path(), &["boot"]);
    if let Some(base) = &base {
        base.run(home.path(), &["boot"]);
    }
    let mut cur = Vec::new();
    let mut old = Vec::new();
    for _ in 0..runs {
        if let Some(base) = &base {
            old.push(base.run(home.path(), &["boot"]));
        }
        cur.push(plain.run(home.path(), &["boot"]));
    }
    println!("No-op `boot` of the worker example, {runs} runs each, interleaved:\n");
    header("");
    let this = ms(percentile(&cur, 0.5));
    let (name, base_median) = match &baseline {
        Some((binary, _)) => {
            let name = format!("baseline {} (its own example)", binary.display());
            row(&name, &old);
            (name, ms(percentile(&old, 0.5)))
        }
        None => {
            let (name, figure) = RECORDED_BASELINE;
            println!("| {name} | {figure:.1} ms | | |");
            (name.to_owned(), figure)
        }
    };
    row("this build", &cur);
    println!(
        "\nthis build / {name} (median): {:.2}x; vs the 20 ms goal: {:.2}x",
        this / base_median,
        this / 20.0
    );

    // 2. Repair of one drifted config (re-reads every managed file, restores one,
    //    records the run), on the worker example extended with two services.
    let spec = specs::ops_worker_spec();
    let ops = Side::new(current, &specs::boot_config_for("worker", &spec), &spec);
    ops.run(home.path(), &["boot"]);
    let root = ops.root.path();
    let samples = runs.min(10);
    let config = root.join(specs::SHIPPER_CONFIG.trim_start_matches('/'));
    let repair: Vec<Duration> = (0..samples)
        .map(|i| {
            std::fs::write(&config, format!("drift {i}\n")).expect("drifting a config");
            ops.run(home.path(), &["repair"])
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
        (0..samples).map(|_| ops.run(home.path(), args)).collect()
    };
    let status = time(&["status"]);
    let verify = time(&["verify"]);
    println!(
        "\nOperator commands ({samples} runs; status and verify on a node with {managed} managed paths, {total_mb} MB of binaries):\n"
    );
    header("");
    row("repair of one drifted config, offline", &repair);
    row("status (stat check)", &status);
    row("verify (re-hash all)", &verify);
    let verify_s = percentile(&verify, 0.5).as_secs_f64();
    println!(
        "\nverify: {:.0} MB/s; verify / status: {:.1}x",
        total_mb as f64 / verify_s,
        ms(percentile(&verify, 0.5)) / ms(percentile(&status, 0.5))
    );
}

fn header(name: &str) {
    println!("| {name} | median | p90 | min |");
    println!("|---|---|---|---|");
}

fn row(name: &str, samples: &[Duration]) {
    println!("{}", report_line(name, samples));
}
