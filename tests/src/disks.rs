//! Loop devices as EBS volumes, and the device nodes and by-id links that make an
//! attached volume visible inside a node's root.
//!
//! The convention (also for booted nodes): an attached volume `vol-0abc…` appears as
//! a block device node `<root>/dev/nvmeNn1` (same major:minor as its loop device) and
//! the link `<root>/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc… ->
//! ../../nvmeNn1`, exactly what udev makes on a Nitro instance. The agent resolves the
//! link inside its root. Detaching removes both (and lazily unmounts what was mounted
//! from it in that root).
//!
//! Needs root (losetup, mknod, mount). Every loop device is detached on drop, even when
//! a test fails; devices left by a killed test run are reclaimed by [`reclaim_stale`].

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// Backing files live in directories with this prefix, so stale ones can be found.
const PREFIX: &str = "nodewright-disk-";

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A loop device over a sparse file.
pub struct LoopDisk {
    dir: TempDir,
    file: PathBuf,
    device: PathBuf,
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl LoopDisk {
    pub fn new(size_mib: u64) -> Self {
        reclaim_stale();
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir()
            .expect("a temp dir");
        let file = dir.path().join("volume.img");
        let f = std::fs::File::create(&file).expect("the backing file");
        f.set_len(size_mib << 20).expect("sizing the backing file");
        drop(f);
        let device = PathBuf::from(run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file)));
        Self { dir, file, device }
    }

    pub fn device(&self) -> &Path {
        &self.device
    }

    pub fn number(&self) -> (u64, u64) {
        let rdev = std::fs::metadata(&self.device)
            .expect("the loop device")
            .rdev();
        (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
    }

    /// Makes an ext4 filesystem and writes `files` (name, content) into it.
    pub fn format_with(&self, files: &[(&str, &str)]) -> String {
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&self.device));
        let mount = self.dir.path().join("m");
        std::fs::create_dir_all(&mount).expect("a mount point");
        run(Command::new("mount").arg(&self.device).arg(&mount));
        for (name, content) in files {
            std::fs::write(mount.join(name), content).expect("writing a file on the disk");
        }
        run(Command::new("umount").arg(&mount));
        self.uuid().expect("a filesystem UUID")
    }

    /// Writes an MBR partition table with one Linux partition (and nothing else).
    pub fn partition(&self) {
        use std::io::{Seek, SeekFrom, Write};
        let mut mbr = [0u8; 512];
        // Partition 1: type 0x83, from sector 2048, 16384 sectors.
        let entry = &mut mbr[446..462];
        entry[4] = 0x83;
        entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
        entry[12..16].copy_from_slice(&16384u32.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.device)
            .expect("the loop device");
        f.seek(SeekFrom::Start(0)).expect("seek");
        f.write_all(&mbr).expect("writing the partition table");
        f.sync_all().expect("sync");
    }

    pub fn uuid(&self) -> Option<String> {
        let output = Command::new("blkid")
            .args(["-p", "-s", "UUID", "-o", "value"])
            .arg(&self.device)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        (!text.is_empty()).then_some(text)
    }

    /// Grows the backing file and tells the loop driver (what EBS does on ModifyVolume).
    pub fn grow(&self, size_mib: u64) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.file)
            .expect("the backing file");
        f.set_len(size_mib << 20).expect("growing the backing file");
        run(Command::new("losetup")
            .arg("--set-capacity")
            .arg(&self.device));
    }

    /// Every mount point of this device, from /proc/self/mountinfo.
    pub fn mount_points(&self) -> Vec<PathBuf> {
        mount_points_of(self.number())
    }
}

pub fn mount_points_of(number: (u64, u64)) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let wanted = format!("{}:{}", number.0, number.1);
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.get(2) == Some(&wanted.as_str()))
                .then(|| {
                    fields
                        .get(4)
                        .map(|p| PathBuf::from(p.replace("\\040", " ")))
                })
                .flatten()
        })
        .collect()
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        for mount in self.mount_points() {
            let _ = Command::new("umount").arg("-l").arg(&mount).status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// Detaches loop devices whose backing file (in one of our temp dirs) is gone: what a
/// killed test run left behind.
pub fn reclaim_stale() {
    let Ok(output) = Command::new("losetup")
        .args(["--list", "--noheadings", "--output", "NAME,BACK-FILE"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(file)) = (parts.next(), parts.next()) else {
            continue;
        };
        if file.contains(PREFIX) && (line.contains("(deleted)") || !Path::new(file).exists()) {
            if let Ok(meta) = std::fs::metadata(name) {
                let rdev = meta.rdev();
                for mount in
                    mount_points_of((nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev)))
                {
                    let _ = Command::new("umount").arg("-l").arg(&mount).status();
                }
            }
            let _ = Command::new("losetup").arg("-d").arg(name).status();
        }
    }
}

/// The by-id link name of a volume (what udev names it on Nitro).
pub fn by_id_name(volume_id: &str) -> String {
    format!(
        "nvme-Amazon_Elastic_Block_Store_{}",
        volume_id.replace('-', "")
    )
}

/// Makes an attached volume visible in `root`: the device node `dev/<node_name>` and
/// its by-id link.
pub fn expose(root: &Path, volume_id: &str, number: (u64, u64), node_name: &str) {
    let dev = root.join("dev");
    let by_id = dev.join("disk/by-id");
    std::fs::create_dir_all(&by_id).expect("dev/disk/by-id");
    let node = dev.join(node_name);
    if !std::fs::metadata(&node).is_ok_and(|m| m.file_type().is_block_device()) {
        let _ = std::fs::remove_file(&node);
        nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o660),
            nix::sys::stat::makedev(number.0, number.1),
        )
        .expect("mknod");
    }
    let link = by_id.join(by_id_name(volume_id));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(format!("../../{node_name}"), &link).expect("the by-id link");
}

/// The volume leaves `root`: unmount what was mounted from it there, remove the link
/// and the node.
pub fn unexpose(root: &Path, volume_id: &str, number: (u64, u64)) {
    for mount in mount_points_of(number) {
        if mount.starts_with(root) {
            let _ = Command::new("umount").arg("-l").arg(&mount).status();
        }
    }
    let link = root.join("dev/disk/by-id").join(by_id_name(volume_id));
    if let Ok(target) = std::fs::read_link(&link) {
        let node = link.parent().unwrap_or(root).join(target);
        let _ = std::fs::remove_file(node);
    }
    let _ = std::fs::remove_file(link);
}
