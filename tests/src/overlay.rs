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
        for dir in [upper, &work, target] {
            std::fs::create_dir_all(dir)?;
        }
        let lowerdir = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let options = format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
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

impl Drop for Overlay {
    fn drop(&mut self) {
        // Anything mounted below (by a tool run in the tree) goes first.
        crate::janitor::unmount_below(&self.target);
        let _ = nix::mount::umount2(&self.target, MntFlags::MNT_DETACH);
    }
}
