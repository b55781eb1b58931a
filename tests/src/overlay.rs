//! Overlay mounts: an image is a stack of read-only layers, and each node (and each
//! build step) writes only to its own upper directory above them.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// A mounted overlay, detached on drop.
pub struct Overlay {
    target: PathBuf,
}

impl Overlay {
    /// Mounts `lowers` (topmost first) under `upper` at `target`; `upper`, a work
    /// directory beside it and `target` are created.
    pub fn mount(lowers: &[PathBuf], upper: &Path, target: &Path) -> std::io::Result<Self> {
        let work = upper.with_extension("work");
        for dir in [upper, &work] {
            std::fs::create_dir_all(dir)?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowerdir(lowers),
            upper.display(),
            work.display()
        );
        Self::mount_with(&options, MsFlags::empty(), target)
    }

    /// Mounts `lowers` (at least two, topmost first) read-only at `target`.
    pub fn mount_read_only(lowers: &[PathBuf], target: &Path) -> std::io::Result<Self> {
        let options = format!("lowerdir={}", lowerdir(lowers));
        Self::mount_with(&options, MsFlags::MS_RDONLY, target)
    }

    fn mount_with(options: &str, flags: MsFlags, target: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(target)?;
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            flags,
            Some(options),
        )
        .map_err(|e| {
            std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!(
                    "mounting an overlay at {} ({options}): {e}",
                    target.display()
                ),
            )
        })?;
        Ok(Self {
            target: target.to_owned(),
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }
}

fn lowerdir(lowers: &[PathBuf]) -> String {
    lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

impl Drop for Overlay {
    fn drop(&mut self) {
        // Anything mounted below (by a tool run in the tree) goes first.
        crate::janitor::unmount_below(&self.target);
        let _ = nix::mount::umount2(&self.target, MntFlags::MNT_DETACH);
    }
}
