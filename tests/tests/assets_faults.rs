//! Local failures while downloading: the cache's disk full, the cache read-only, no
//! permission. Each must give a clear error naming the path, leave no temp file, and
//! leave the cache usable. These tests mount file systems, so they need root; elsewhere
//! they say so and pass without running.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nodewright_e2e::agent::Run;
use nodewright_e2e::assetkit::{AssetNode, bytes, sha256};
use nodewright_e2e::mirror::Mirror;

const MIB: usize = 1 << 20;

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (mounts a small tmpfs as the cache)");
    false
}

/// A tmpfs mounted for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, options: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(options),
        )
        .unwrap();
        Self(at.to_owned())
    }

    fn remount(&self, flags: MsFlags, options: &str) {
        mount(
            None::<&str>,
            &self.0,
            None::<&str>,
            MsFlags::MS_REMOUNT | flags,
            Some(options),
        )
        .unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

fn spec(mirror: &Mirror, data: &[u8]) -> String {
    format!(
        "assets:\n  - name: kubelet\n    sha256: {}\n    urls: [{}]\n    install:\n      - path: /usr/local/bin/kubelet\n",
        sha256(data),
        mirror.url("/kubelet")
    )
}

fn files_under(dir: &Path) -> Vec<String> {
    nodewright_e2e::tree::snapshot(dir)
        .into_iter()
        .filter(|(_, e)| e.kind == "file")
        .map(|(p, _)| p.display().to_string())
        .collect()
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_cache_stays_consistent() {
    if !is_root() {
        return;
    }
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(1, 4 * MIB);
    mirror.put("/kubelet", data.clone());
    let cache = node.agent.path("/var/cache/nodewright");
    let tmpfs = Tmpfs::mount(&cache, "size=1m,mode=0755");

    let run = node.apply(&spec(&mirror, &data));
    run.expect_code(5);
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("the disk is full"), "{}", run.stderr);
    assert!(
        run.stderr.contains("/var/cache/nodewright/tmp/"),
        "{}",
        run.stderr
    );
    assert!(
        files_under(&cache).is_empty(),
        "left behind: {:?}",
        files_under(&cache)
    );
    assert!(!node.agent.path("/usr/local/bin/kubelet").exists());

    // With room again, the next run converges from that same cache.
    tmpfs.remount(MsFlags::empty(), "size=16m");
    node.apply(&spec(&mirror, &data)).expect_code(0);
    assert_eq!(
        std::fs::read(node.agent.path("/usr/local/bin/kubelet")).unwrap(),
        data
    );
}

#[test]
fn a_read_only_cache_is_a_clear_error_but_what_it_holds_still_installs() {
    if !is_root() {
        return;
    }
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(2, MIB);
    mirror.put("/kubelet", data.clone());
    let cache = node.agent.path("/var/cache/nodewright");
    let tmpfs = Tmpfs::mount(&cache, "size=16m,mode=0755");
    tmpfs.remount(MsFlags::MS_RDONLY, "");

    let run = node.apply(&spec(&mirror, &data));
    run.expect_code(5);
    assert!(
        run.stderr.contains("Read-only file system"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("the file system is read-only"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/var/cache/nodewright"),
        "{}",
        run.stderr
    );
    assert!(
        mirror.hits().is_empty(),
        "nothing was downloaded into nowhere"
    );

    // A read-only cache that already holds the asset (a baked image) serves it.
    tmpfs.remount(MsFlags::empty(), "");
    node.apply(&spec(&mirror, &data)).expect_code(0);
    std::fs::remove_file(node.agent.path("/usr/local/bin/kubelet")).unwrap();
    tmpfs.remount(MsFlags::MS_RDONLY, "");
    mirror.clear_log();
    node.apply(&spec(&mirror, &data)).expect_code(0);
    assert!(mirror.hits().is_empty());
    assert_eq!(
        std::fs::read(node.agent.path("/usr/local/bin/kubelet")).unwrap(),
        data
    );
}

#[test]
fn no_permission_on_the_cache_is_a_clear_error() {
    if !is_root() {
        return;
    }
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(3, MIB);
    mirror.put("/kubelet", data.clone());
    let spec_path = node.spec_file(&spec(&mirror, &data));
    // The agent runs as nobody: it can read the spec, not write the root's cache.
    for dir in [node.specs_dir(), node.agent.root()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&spec_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cache = node.agent.path("/var/cache/nodewright");
    std::fs::create_dir_all(&cache).unwrap();
    // Its own state directory is writable (so the run lock works): only the cache is not.
    let state_dir = node.agent.path("/var/lib/nodewright");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::os::unix::fs::chown(&state_dir, Some(65534), Some(65534)).unwrap();
    let url = format!("file://{}", spec_path.display());
    let mut command = node
        .agent
        .command(&["apply", "--spec", &url, "--deadline", "20"]);
    command.uid(65534).gid(65534);
    let run = run_of(command.output().unwrap());
    run.expect_code(5);
    assert!(run.stderr.contains("Permission denied"), "{}", run.stderr);
    assert!(
        run.stderr.contains("/var/cache/nodewright"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("nodewright needs to run as root"),
        "{}",
        run.stderr
    );
    assert!(files_under(&cache).is_empty());
}

fn run_of(output: std::process::Output) -> Run {
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
