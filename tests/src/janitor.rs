//! Reclaims what a killed test process left behind: its network namespaces, its nodes'
//! mounts, processes and directories, its half-built image layers.
//!
//! A test that fails cleans up on unwind (every harness object tears down on drop); one
//! that is killed outright cannot. So everything the booted-node harness creates is
//! named after its owner, `<pid>-<nonce>`, and the first harness call in each test process
//! sweeps the leftovers of owners that are no longer alive.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// This process's owner tag: its pid and a nonce (a reused pid never collides).
pub fn owner_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| format!("{}-{:06x}", std::process::id(), fastrand::u32(..0xff_ffff)))
}

/// Whether the owner named at the start of `tag` (`<pid>-...`) is gone.
fn owner_is_dead(tag: &str) -> bool {
    let Some(pid) = tag.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Sweeps once per process.
pub fn sweep_once() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(sweep);
}

/// Reclaims the leftovers of every owner that is gone (see the module doc).
pub fn sweep() {
    for name in crate::netns::list() {
        if let Some(tag) = name.strip_prefix(crate::netns::PREFIX)
            && owner_is_dead(tag)
        {
            crate::netns::delete(&name);
        }
    }
    let cache = crate::image::cache_dir();
    let nodes = cache.join("nodes");
    for dir in children(&nodes) {
        let tag = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        if tag.is_some_and(|t| owner_is_dead(&t)) {
            reclaim(&dir);
        }
    }
    for dir in children(&cache) {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some((_, tag)) = name.split_once(".tmp-")
            && owner_is_dead(tag)
        {
            reclaim(&dir);
        }
    }
}

fn children(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Kills every process rooted under `dir`, unmounts everything below it, removes it.
pub fn reclaim(dir: &Path) {
    kill_processes_rooted_under(dir);
    unmount_below(dir);
    let _ = std::fs::remove_dir_all(dir);
}

fn kill_processes_rooted_under(dir: &Path) {
    for entry in children(Path::new("/proc")) {
        let Some(pid) = entry
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if std::fs::read_link(entry.join("root")).is_ok_and(|root| root.starts_with(dir)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Detaches every mount at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let mut points: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The mount points of this mount namespace (`/proc/self/mountinfo`, field 5).
pub fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(nodewright::host::disks::unescape_octal(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_owner_is_not_dead() {
        assert!(!owner_is_dead(owner_tag()));
        assert!(!owner_is_dead("not-a-pid"));
        assert!(!owner_is_dead(&format!("{}-abc", std::process::id())));
        // pid_max is at most 2^22: this pid cannot exist.
        assert!(owner_is_dead("4194305-abcdef"));
    }
}
