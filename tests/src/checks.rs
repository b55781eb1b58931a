//! Real checkers run on what the project ships: systemd's own unit verifier.

use std::path::Path;
use std::process::Command;

/// `systemd-analyze verify` of `units` (name, text) in a throwaway root that holds the
/// machine's stock units and stand-ins for `executables` (verify checks that every
/// command exists). Any line on stderr is a failure: a misspelled key or a bad value
/// only warns, with exit 0.
pub fn systemd_verify(units: &[(&str, &str)], executables: &[&str]) -> Result<(), String> {
    let root = tempfile::tempdir().map_err(|e| format!("a temp root: {e}"))?;
    let root = root.path();
    let system = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&system).map_err(|e| e.to_string())?;
    copy_dir(Path::new("/usr/lib/systemd/system"), &system).map_err(|e| {
        format!("copying the stock units (is systemd installed? scripts/setup.sh): {e}")
    })?;
    // A merged-/usr layout, as on Debian 12.
    for dir in ["bin", "sbin", "lib"] {
        std::fs::create_dir_all(root.join("usr").join(dir)).map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(format!("usr/{dir}"), root.join(dir))
            .map_err(|e| e.to_string())?;
    }
    for executable in executables {
        let path = root.join(executable.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().expect("an absolute path"))
            .map_err(|e| e.to_string())?;
        std::fs::write(&path, "#!/bin/sh\n").map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    for (name, text) in units {
        std::fs::write(system.join(name), text).map_err(|e| e.to_string())?;
    }
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .args(units.iter().map(|(name, _)| *name))
        .output()
        .map_err(|e| format!("running systemd-analyze: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() && stderr.trim().is_empty() {
        Ok(())
    } else {
        Err(format!(
            "systemd-analyze verify ({}):\n{stderr}",
            output.status
        ))
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
