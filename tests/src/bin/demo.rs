//! The demo: boots a worker from the example boot config and node spec into
//! `./demo-node`, with the local stand-ins for AWS (the emulator for S3, a fake IMDS),
//! then shows `nodewright status`. Run by `scripts/demo.sh`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use nodewright_e2e::imds::{FakeImds, Instance};
use nodewright_e2e::moto::Moto;
use nodewright_e2e::tools::workspace_bin;
use nodewright_e2e::world::spec_location;

fn main() -> ExitCode {
    let example = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "worker".to_owned());
    let root = PathBuf::from(
        std::env::args()
            .nth(2)
            .unwrap_or_else(|| "demo-node".to_owned()),
    );
    let boot = nodewright_e2e::example(&format!("{example}/bootconfig.yaml"));
    let spec = nodewright_e2e::example(&format!("{example}/nodespec.yaml"));

    println!("Starting the AWS emulator and a fake instance metadata service...");
    let moto = Moto::start();
    let (bucket, key) = spec_location(&boot).expect("the example names an s3:// spec");
    moto.put_object(&bucket, &key, &spec);
    println!("Published examples/{example}/nodespec.yaml at s3://{bucket}/{key}");
    let imds = FakeImds::start(Instance::example("i-0a1b2c3d4e5f60718"), &boot);

    std::fs::create_dir_all(&root).expect("creating the demo root");
    // What the machine image brings: the agent reads the distribution from it.
    nodewright_e2e::agent::seed_image_files(&root);
    let nodewright = workspace_bin("nodewright");
    let run = |args: &[&str]| {
        Command::new(&nodewright)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::temp_dir())
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url())
            .env("AWS_ENDPOINT_URL", moto.url())
            .arg("--root")
            .arg(&root)
            .args(args)
            .status()
            .expect("running nodewright")
    };
    println!("\n$ nodewright --root {} boot", root.display());
    let status = run(&["boot", "--deadline", "30"]);
    if !status.success() {
        return ExitCode::FAILURE;
    }
    println!("\n$ nodewright --root {} status", root.display());
    run(&["status"]);
    let shown = if root.is_absolute() {
        root.display().to_string()
    } else {
        format!("./{}", root.display())
    };
    println!("\nThe node's files are under {shown}");
    ExitCode::SUCCESS
}
