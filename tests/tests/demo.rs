//! The README's first command (`scripts/demo.sh`) runs the `demo` binary: the same
//! binary here, into a temporary directory, must boot the worker example against the
//! local stand-ins for AWS and show a converged `nodewright status`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

use nodewright_e2e::tools::workspace_bin;

#[test]
fn the_demo_boots_the_worker_example_and_shows_it_converged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("demo-node");
    let output = Command::new(workspace_bin("demo"))
        .arg("worker")
        .arg(&root)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the demo failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "Last run:     boot converged",
        "Problems:     none",
        &format!("The node's files are under {}", root.display()),
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    // The example's node really is on disk: the kubelet's unit and containerd's config.
    for path in [
        "etc/systemd/system/kubelet.service",
        "etc/containerd/config.toml",
    ] {
        assert!(root.join(path).is_file(), "{path} is missing");
    }
}
