//! The real tools that check what the model renders: systemd-analyze for units,
//! kubernetes-validate for manifests, kubectl for kubeconfigs, containerd for its config.
//! Each returns the tool's complaint as an error, so a test can also prove it fails.

#![allow(dead_code, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nodewright::model::{DesiredState, FileKind};

/// Where scripts/setup.sh installs the Python tools (`NODEWRIGHT_TOOLS` overrides).
pub fn venv_bin(name: &str) -> PathBuf {
    let tools = std::env::var_os("NODEWRIGHT_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::workspace().join(".tools"));
    let path = tools.join("venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh (it installs the test tools)",
        path.display()
    );
    path
}

pub fn require_on_path(program: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    assert!(found, "{program} is missing: run scripts/setup.sh");
}

/// Writes the desired state under `root` the way apply would leave it (files,
/// directories, links), plus an executable stand-in for every program a unit starts
/// that the model does not write itself (binaries from assets or from the image).
pub fn write_tree(root: &Path, desired: &DesiredState) {
    for dir in &desired.directories {
        std::fs::create_dir_all(root.join(dir.path.relative())).unwrap();
    }
    for file in &desired.files {
        let path = root.join(file.path.relative());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, file.content.bytes()).unwrap();
        std::fs::set_permissions(
            &path,
            std::fs::Permissions::from_mode(file.ownership.mode.bits()),
        )
        .unwrap();
    }
    for link in &desired.symlinks {
        let path = root.join(link.path.relative());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(link.target.as_path(), &path).unwrap();
    }
    for file in &desired.files {
        if file.kind != FileKind::Systemd {
            continue;
        }
        let text = String::from_utf8_lossy(file.content.bytes()).into_owned();
        for program in executables(&text) {
            let path = root.join(program.trim_start_matches('/'));
            if !path.exists() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
    }
}

/// The programs of a unit's Exec*= lines.
fn executables(unit: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            key.trim().starts_with("Exec").then_some(value.trim())
        })
        .filter_map(|command| {
            let command = command.trim_start_matches(['-', '@', '+', '!', ':']);
            command.split_whitespace().next().map(str::to_owned)
        })
        .filter(|program| program.starts_with('/'))
        .collect()
}

/// Copies the stock units into `root`, as systemd-analyze needs them there.
pub fn add_stock_units(root: &Path) {
    let dest = root.join("usr/lib/systemd");
    std::fs::create_dir_all(&dest).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system")
        .arg(&dest)
        .status()
        .unwrap();
    assert!(status.success(), "copying the stock units");
}

/// `systemd-analyze verify --man=no --root=ROOT UNIT...`; any stderr line is a failure
/// (a misspelled key only warns, with exit 0).
pub fn systemd_verify(root: &Path, units: &[String]) -> Result<(), String> {
    require_on_path("systemd-analyze");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", root.display()))
        .args(units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() && stderr.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("exit {}: {stderr}", output.status))
    }
}

/// `kubernetes-validate --strict -k VERSION FILE`; WARN lines fail too.
pub fn kubernetes_validate(file: &Path, version: &str) -> Result<String, String> {
    let output = Command::new(venv_bin("kubernetes-validate"))
        .arg("--strict")
        .arg("-k")
        .arg(version)
        .arg(file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let complaint = stdout
        .lines()
        .chain(stderr.lines())
        .any(|l| l.starts_with("WARN") || l.starts_with("ERROR"));
    if output.status.success() && !complaint && stdout.contains("passed") {
        Ok(stdout)
    } else {
        Err(format!("exit {}: {stdout}{stderr}", output.status))
    }
}

/// `kubectl config view --kubeconfig F --minify --flatten`, run inside `root` (chroot)
/// so the absolute paths in the kubeconfig are the node's. Needs root.
pub fn kubectl_view(root: &Path, kubeconfig: &str) -> Result<String, String> {
    let kubectl = root.join("kubectl-check");
    if !kubectl.exists() {
        std::fs::copy(venv_bin("kubectl"), &kubectl).unwrap();
    }
    // chroot lives in /usr/sbin, which not every PATH has.
    let chroot = ["/usr/sbin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("chroot");
    let output = Command::new(chroot)
        .arg(root)
        .arg("/kubectl-check")
        .args([
            "config",
            "view",
            "--kubeconfig",
            kubeconfig,
            "--minify",
            "--flatten",
        ])
        .env_clear()
        .env("HOME", "/")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() && stderr.trim().is_empty() {
        Ok(stdout)
    } else {
        Err(format!("exit {}: {stderr}", output.status))
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `containerd --config FILE config dump`: the config as containerd understood it.
pub fn containerd_dump(config: &Path) -> Result<toml::Table, String> {
    require_on_path("containerd");
    let output = Command::new("containerd")
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .output()
        .unwrap();
    if !output.status.success() {
        return Err(format!(
            "exit {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    toml::from_str(&String::from_utf8_lossy(&output.stdout)).map_err(|e| e.to_string())
}

/// Every leaf of `ours` that the dump lacks or holds with another value: what
/// containerd ignored (a misspelled or misplaced key) or read differently.
pub fn not_understood(ours: &toml::Table, dump: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    walk(ours, Some(dump), "", &mut out);
    out
}

fn walk(ours: &toml::Table, dump: Option<&toml::Table>, at: &str, out: &mut Vec<String>) {
    for (key, value) in ours {
        let path = format!("{at}.{key}");
        let theirs = dump.and_then(|d| d.get(key));
        match (value, theirs) {
            (toml::Value::Table(mine), Some(toml::Value::Table(theirs))) => {
                walk(mine, Some(theirs), &path, out)
            }
            (toml::Value::Table(mine), _) => walk(mine, None, &path, out),
            (mine, Some(theirs)) if mine == theirs => {}
            (mine, theirs) => out.push(format!(
                "{path}: ours {mine}, containerd {}",
                theirs.map_or("(absent)".to_owned(), ToString::to_string)
            )),
        }
    }
}

/// A throwaway key and a certificate signed by nothing in particular, for files the
/// kubeconfigs name but other components provide (client certificates).
pub fn write_test_certificate(cert: &Path, key: &Path, subject: &str) {
    std::fs::create_dir_all(cert.parent().unwrap()).unwrap();
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .arg("-subj")
        .arg(subject)
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// What systemd-analyze verify is given for a desired state: each unit file, and the
/// unit each drop-in belongs to, once each.
pub fn units_to_verify(desired: &DesiredState) -> Vec<String> {
    let mut units: Vec<String> = desired
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Systemd)
        .filter_map(|f| {
            let path = f.path.as_str().strip_prefix("/etc/systemd/system/")?;
            Some(
                path.split_once(".d/")
                    .map_or(path, |(unit, _)| unit)
                    .to_owned(),
            )
        })
        .collect();
    units.sort();
    units.dedup();
    units
}

/// Stand-ins, under `root`, for the certificates the kubeconfigs of `desired` name but
/// the node gets elsewhere: the kubelet's and kube-proxy's client certificates (from
/// controller-shim, or issued on a control plane), and the cluster CA where the node
/// fetches it from the state store (a control plane with `controlPlane.pki`).
pub fn write_stand_in_certificates(root: &Path, desired: &DesiredState) {
    use nodewright::model::{cluster, kube_proxy, kubelet};
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    write_test_certificate(
        &at(kubelet::CLIENT_CERT),
        &at(kubelet::CLIENT_KEY),
        "/O=system:nodes/CN=system:node:test",
    );
    write_test_certificate(
        &at(kube_proxy::CLIENT_CERT),
        &at(kube_proxy::CLIENT_KEY),
        "/CN=system:kube-proxy",
    );
    if desired.file(cluster::CA_CERT).is_none() {
        write_test_certificate(
            &at(cluster::CA_CERT),
            &root.join("stand-in-ca.key"),
            "/CN=kubernetes-ca",
        );
    }
}
