//! The node image for booted nodes: our "AMI". A Debian root filesystem made by
//! `debootstrap`, then baked by the same `packer/provision.sh` that the Packer template
//! runs on EC2. It is a stack of overlay layers, each cached under [`cache_dir`] and
//! named by the hash of everything it was made from:
//!
//! | layer | made by | rebuilt when |
//! |---|---|---|
//! | `base-…`  | `debootstrap --variant=minbase` (what a cloud base image has) | suite, mirror, package set change |
//! | `os-…`    | `provision.sh os` (OS prerequisites, [`Recipe::extra_packages`]) | base, provision.sh, packages.txt change |
//! | `baked-…` | `provision.sh agent seal` with the agent binary (and prebake) | any of the above, the binary, the units change |
//!
//! Layers are built under an exclusive lock (parallel test processes wait for the first
//! one), into a temp directory renamed into place when complete. A process using a
//! baked layer holds a shared lock on it; layers nobody uses any more are removed when
//! an image is chosen.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use crate::overlay::Overlay;

/// What goes into an image besides the agent.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Debian release (the base image's distribution).
    pub suite: String,
    pub mirror: String,
    /// More OS packages for `provision.sh os` (e.g. `containerd runc`).
    pub extra_packages: Vec<String>,
    /// A node spec URL for `nodewright prebake`, reachable from the build (`file://`
    /// inside the tree, or a mirror on loopback), and extra arguments.
    pub prebake: Option<(String, Vec<String>)>,
    pub kubernetes_version: String,
    /// More environment for the build's `provision.sh` (e.g. the AWS endpoint and
    /// credentials `prebake` reads an s3:// spec with). Not part of the layer's name:
    /// the prebake spec's URL and digest are.
    pub build_env: Vec<(String, String)>,
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            suite: "bookworm".to_owned(),
            mirror: "http://deb.debian.org/debian".to_owned(),
            // What a Kubernetes node's image carries besides packages.txt: Debian's
            // containerd (the booted workers run it). One default for every booted test,
            // so that they share one cached OS layer.
            extra_packages: vec!["containerd".to_owned(), "runc".to_owned()],
            prebake: None,
            kubernetes_version: "1.33.4".to_owned(),
            build_env: Vec::new(),
        }
    }
}

/// What the base layer carries: a minimal Debian with systemd as init, as a cloud
/// base image has it. Everything a node needs beyond that comes from provision.sh.
const BASE_PACKAGES: &str = "systemd,systemd-sysv,dbus";

/// Where image layers and booted nodes live (`NODEWRIGHT_IMAGE_CACHE` overrides).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("NODEWRIGHT_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace().join("target/nodewright-images"))
}

/// The agent binary baked into images: `NODEWRIGHT_NODE_BINARY`, else this build's
/// `nodewright` (the debug build: the tree is Debian 12 like the machines we test on,
/// so it runs there; CI also boots the static `dist` build, see scripts/test.sh).
pub fn node_binary() -> PathBuf {
    std::env::var_os("NODEWRIGHT_NODE_BINARY")
        .map(PathBuf::from)
        .map(|path| std::path::absolute(&path).unwrap_or(path))
        .unwrap_or_else(|| crate::tools::workspace_bin("nodewright"))
}

/// A baked image, ready to boot: its layers, topmost first. Holding it keeps its
/// layers from being collected.
pub struct Image {
    layers: Vec<PathBuf>,
    _in_use: Flock<File>,
}

impl Image {
    /// The image for `recipe` with `binary`, from the cache or built now.
    pub fn bake(recipe: &Recipe, binary: &Path) -> Self {
        crate::janitor::sweep_once();
        let cache = cache_dir();
        std::fs::create_dir_all(&cache)
            .unwrap_or_else(|e| panic!("creating {}: {e}", cache.display()));
        let _build = lock(&cache.join(".lock"), FlockArg::LockExclusive);

        let packer = crate::workspace().join("packer");
        let base_key = format!(
            "debootstrap --variant=minbase --include={BASE_PACKAGES} {} {}",
            recipe.suite, recipe.mirror
        );
        let base = layer(&cache, "base", &[base_key.as_bytes()], &[], |dir| {
            debootstrap(recipe, dir)
        });

        let provision = read(&packer.join("provision.sh"));
        let packages = read(&packer.join("packages.txt"));
        let extras = recipe.extra_packages.join(" ");
        let os = layer(
            &cache,
            "os",
            &[
                base_file_name(&base),
                &provision,
                &packages,
                extras.as_bytes(),
            ],
            std::slice::from_ref(&base),
            |root| provision_stages(root, &packer, None, recipe, &["os"]),
        );

        let mut units = Vec::new();
        for unit in ["nodewright.service", "nodewright-watch.service"] {
            units.extend(read(&packer.join("units").join(unit)));
        }
        let binary_digest = sha256_file(binary);
        let prebake = format!("{:?} {}", recipe.prebake, recipe.kubernetes_version);
        let below = vec![os.clone(), base.clone()];
        let baked = layer(
            &cache,
            "baked",
            &[
                base_file_name(&os),
                &provision,
                &units,
                binary_digest.as_bytes(),
                prebake.as_bytes(),
            ],
            &below,
            |root| provision_stages(root, &packer, Some(binary), recipe, &["agent", "seal"]),
        );
        let in_use = lock(&baked.with_extension("lock"), FlockArg::LockShared);
        collect_unused(&cache, &[baked.clone(), os.clone(), base.clone()]);
        Self {
            layers: vec![baked, os, base],
            _in_use: in_use,
        }
    }

    /// The layers, topmost first (an overlay's `lowerdir` order).
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// A read-only view of the image's files, as a node sees them before its first boot.
    pub fn view(&self) -> Scratch {
        Scratch::over(&self.layers, false)
    }
}

/// A writable tree over some image layers, for running provisioning steps by hand
/// (tests of provision.sh itself); removed on drop.
pub struct Scratch {
    dir: PathBuf,
    overlay: Option<Overlay>,
}

impl Scratch {
    /// A fresh overlay over `layers` (topmost first). With `writable` false it is a
    /// read-only view of them (an overlay without an upper layer).
    pub fn over(layers: &[PathBuf], writable: bool) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        crate::janitor::sweep_once();
        let dir = cache_dir().join("nodes").join(format!(
            "{}-scratch{}",
            crate::janitor::owner_tag(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let root = dir.join("root");
        let overlay = if writable {
            Overlay::mount(layers, &dir.join("upper"), &root)
        } else {
            Overlay::mount_read_only(layers, &root)
        }
        .unwrap_or_else(|e| panic!("{e}"));
        Self {
            dir,
            overlay: Some(overlay),
        }
    }

    pub fn root(&self) -> &Path {
        self.overlay.as_ref().expect("mounted").target()
    }

    /// A path inside the tree.
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.root().join(node_path.trim_start_matches('/'))
    }

    /// Runs `provision.sh STAGES` in the tree, as the image build does, with `binary`
    /// as the agent and `env` added; returns its output whatever the outcome.
    pub fn provision(
        &self,
        binary: Option<&Path>,
        env: &[(&str, &str)],
        stages: &[&str],
    ) -> std::process::Output {
        provision_command(
            self.root(),
            &crate::workspace().join("packer"),
            binary,
            env,
            stages,
        )
        .output()
        .unwrap_or_else(|e| panic!("running systemd-nspawn: {e}"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        drop(self.overlay.take());
        crate::janitor::reclaim(&self.dir);
    }
}

fn base_file_name(layer: &Path) -> &[u8] {
    layer
        .file_name()
        .map(|n| n.as_encoded_bytes())
        .unwrap_or_default()
}

/// `<cache>/<kind>-<hash of inputs>`, built by `build` when missing. `below` are the
/// layers it sits on: then `build` gets an overlay root whose writes become the layer;
/// without them it gets the empty layer directory itself.
fn layer(
    cache: &Path,
    kind: &str,
    inputs: &[&[u8]],
    below: &[PathBuf],
    build: impl FnOnce(&Path) -> Result<(), String>,
) -> PathBuf {
    let mut hasher = Sha256::new();
    for input in inputs {
        hasher.update((input.len() as u64).to_le_bytes());
        hasher.update(input);
    }
    let hash = hex::encode(hasher.finalize());
    let dir = cache.join(format!("{kind}-{}", &hash[..16]));
    if dir.is_dir() {
        return dir;
    }
    let tmp = cache.join(format!(
        "{kind}-{}.tmp-{}",
        &hash[..16],
        crate::janitor::owner_tag()
    ));
    crate::janitor::reclaim(&tmp);
    let started = std::time::Instant::now();
    eprintln!("image: building the {kind} layer {}", dir.display());
    let result = if below.is_empty() {
        let tree = tmp.join("tree");
        std::fs::create_dir_all(&tree)
            .map_err(|e| e.to_string())
            .and_then(|()| build(&tree))
    } else {
        let upper = tmp.join("tree");
        Overlay::mount(below, &upper, &tmp.join("root"))
            .map_err(|e| e.to_string())
            .and_then(|overlay| build(overlay.target()))
    };
    if let Err(e) = result {
        crate::janitor::reclaim(&tmp);
        panic!("building the {kind} image layer: {e}");
    }
    std::fs::rename(tmp.join("tree"), &dir)
        .unwrap_or_else(|e| panic!("moving the {kind} layer into {}: {e}", dir.display()));
    crate::janitor::reclaim(&tmp);
    eprintln!(
        "image: built the {kind} layer in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    dir
}

fn debootstrap(recipe: &Recipe, dir: &Path) -> Result<(), String> {
    let log = dir.with_extension("log");
    let output = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={BASE_PACKAGES}")])
        .arg(&recipe.suite)
        .arg(dir)
        .arg(&recipe.mirror)
        .output()
        .map_err(|e| format!("running debootstrap: {e}"))?;
    let _ = std::fs::write(&log, [&output.stdout[..], &output.stderr[..]].concat());
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "debootstrap {} {} failed ({}):\n{}",
            recipe.suite,
            recipe.mirror,
            output.status,
            tail(&output.stdout, 20)
        ))
    }
}

/// Runs `provision.sh STAGES` for an image layer (see [`provision_command`]).
fn provision_stages(
    root: &Path,
    packer: &Path,
    binary: Option<&Path>,
    recipe: &Recipe,
    stages: &[&str],
) -> Result<(), String> {
    let extras = recipe.extra_packages.join(" ");
    let mut env = vec![
        ("NODEWRIGHT_EXTRA_PACKAGES", extras.as_str()),
        ("KUBERNETES_VERSION", recipe.kubernetes_version.as_str()),
    ];
    let prebake_args;
    if let Some((spec, args)) = &recipe.prebake {
        prebake_args = args.join(" ");
        env.push(("NODEWRIGHT_PREBAKE_SPEC", spec));
        env.push(("NODEWRIGHT_PREBAKE_ARGS", &prebake_args));
    }
    for (key, value) in &recipe.build_env {
        env.push((key, value));
    }
    let output = provision_command(root, packer, binary, &env, stages)
        .output()
        .map_err(|e| format!("running systemd-nspawn: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "provision.sh {} failed ({}):\n{}\n{}",
            stages.join(" "),
            output.status,
            tail(&output.stdout, 30),
            tail(&output.stderr, 30)
        ))
    }
}

/// `provision.sh STAGES` inside `root` with systemd-nspawn (as a command, not a boot):
/// the packer directory and the binary are bound read-only under /run, which nspawn
/// keeps on a tmpfs, so they leave no trace in the tree.
fn provision_command(
    root: &Path,
    packer: &Path,
    binary: Option<&Path>,
    env: &[(&str, &str)],
    stages: &[&str],
) -> Command {
    let mut command = Command::new("systemd-nspawn");
    command
        .args(["-q", "--register=no", "--keep-unit", "-D"])
        .arg(root)
        .arg(format!(
            "--bind-ro={}:/run/nodewright-image",
            packer.display()
        ));
    if let Some(binary) = binary {
        command
            .arg(format!(
                "--bind-ro={}:/run/nodewright-bin/nodewright",
                binary.display()
            ))
            .arg("--setenv=NODEWRIGHT_BINARY=/run/nodewright-bin/nodewright");
    }
    for (key, value) in env {
        command.arg(format!("--setenv={key}={value}"));
    }
    command
        .args(["--", "/bin/bash", "/run/nodewright-image/provision.sh"])
        .args(stages)
        .stdin(std::process::Stdio::null());
    command
}

/// Removes the baked layers no process holds (their lock can be taken exclusively) and,
/// once `keep` is the only baked layer left, the base and OS layers it does not sit on.
/// Runs under the build lock, so no other process is between choosing and holding.
fn collect_unused(cache: &Path, keep: &[PathBuf]) {
    let layers = |prefix: &str| -> Vec<PathBuf> {
        std::fs::read_dir(cache)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .map(|n| n.to_string_lossy())
                            .is_some_and(|n| n.starts_with(prefix) && !n.contains('.'))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut others_in_use = false;
    for layer in layers("baked-") {
        if keep.contains(&layer) {
            continue;
        }
        let lock_path = layer.with_extension("lock");
        let held = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ok()
            .and_then(|file| Flock::lock(file, FlockArg::LockExclusiveNonblock).ok());
        match held {
            Some(_held) => {
                let _ = std::fs::remove_dir_all(&layer);
                let _ = std::fs::remove_file(&lock_path);
            }
            None => others_in_use = true,
        }
    }
    if others_in_use {
        return;
    }
    for layer in layers("os-").into_iter().chain(layers("base-")) {
        if !keep.contains(&layer) {
            let _ = std::fs::remove_dir_all(&layer);
        }
    }
}

fn lock(path: &Path, how: FlockArg) -> Flock<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    Flock::lock(file, how).unwrap_or_else(|(_, e)| panic!("locking {}: {e}", path.display()))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// sha256 of a (possibly large) file, by coreutils (fast even in a debug test build).
pub fn sha256_file(path: &Path) -> String {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running sha256sum: {e}"));
    assert!(
        output.status.success(),
        "sha256sum {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
