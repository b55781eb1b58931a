//! Kernel parameters and modules on the running kernel.

use std::path::{Path, PathBuf};

use super::tool::{self, ToolError};

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

/// Whether a sysctl belongs to the network or IPC namespace, so that a container can
/// set its own; every other key is kernel-wide and, in a container, the host's.
pub fn namespaced(key: &str) -> bool {
    key.starts_with("net.")
        || key.starts_with("fs.mqueue.")
        || matches!(
            key,
            "kernel.shmmax"
                | "kernel.shmall"
                | "kernel.shmmni"
                | "kernel.shm_rmid_forced"
                | "kernel.msgmax"
                | "kernel.msgmnb"
                | "kernel.msgmni"
                | "kernel.sem"
        )
}

/// Whether this process may write a sysctl: in a container most of /proc/sys is
/// read-only, and some `net.` keys stay global (read-only outside the host's namespace).
pub fn writable(root: &Path, key: &str) -> bool {
    nix::unistd::access(&sysctl_path(root, key), nix::unistd::AccessFlags::W_OK).is_ok()
}

/// A write refused because the key is not this system's to set.
pub fn refused(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    ) || error.raw_os_error() == Some(nix::libc::EPERM)
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

pub async fn load_module(name: &str) -> Result<(), ToolError> {
    tool::run("modprobe", &[name]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_keys() {
        assert!(namespaced("net.ipv4.ip_forward"));
        assert!(namespaced("kernel.shmmax"));
        assert!(!namespaced("kernel.panic"));
        assert!(!namespaced("vm.overcommit_memory"));
        assert!(!namespaced("fs.inotify.max_user_watches"));
        assert_eq!(normalize("1\t2  3\n"), "1 2 3");
    }
}
