//! Kernel parameters and modules on the running kernel.

use std::path::{Path, PathBuf};

/// The /proc/sys file of a dotted sysctl key.
pub fn sysctl_path(root: &Path, key: &str) -> PathBuf {
    root.join("proc/sys").join(key.replace('.', "/"))
}

/// The live value, whitespace-normalised as `sysctl` prints it.
pub fn read_sysctl(root: &Path, key: &str) -> std::io::Result<String> {
    let text = std::fs::read_to_string(sysctl_path(root, key))?;
    Ok(normalize(&text))
}

pub fn write_sysctl(root: &Path, key: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(sysctl_path(root, key), value)
}

/// "1\t2  3\n" and "1 2 3" are the same value.
pub fn normalize(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a module is loaded or built in.
pub fn module_loaded(name: &str) -> bool {
    let sysfs = name.replace('-', "_");
    Path::new("/sys/module").join(sysfs).exists()
}

pub async fn load_module(name: &str) -> Result<(), String> {
    let output = tokio::process::Command::new("modprobe")
        .arg(name)
        .output()
        .await
        .map_err(|e| format!("modprobe {name}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "modprobe {name}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
