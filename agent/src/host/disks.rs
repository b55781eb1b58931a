//! Block devices: finding an EBS volume's device, probing it for anything it holds,
//! making a filesystem, mounting, growing. Every path is under the host's root; the
//! by-id links are resolved inside it, so a test root can carry its own `/dev`.
//!
//! The decisions (format or not, grow or not) are made by the caller from what these
//! functions report; nothing here formats a device unless asked to.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

/// udev's link for an EBS volume on a Nitro (NVMe) instance: the volume id, without
/// its dash, is the NVMe serial number.
pub const BY_ID_DIR: &str = "dev/disk/by-id";
pub const EBS_LINK_PREFIX: &str = "nvme-Amazon_Elastic_Block_Store_";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{command}: {detail}")]
    Command { command: String, detail: String },
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DiskError + 'a {
    move |source| DiskError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Where a volume's device was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundDevice {
    /// The device node on this machine (under the root).
    pub device: PathBuf,
    /// The stable node path it was found by (`/dev/disk/by-id/nvme-…` or `/dev/xvdf`),
    /// for the mount unit.
    pub stable_path: String,
}

/// The by-id names udev gives an EBS volume (with and without the namespace suffix).
pub fn ebs_link_names(volume_id: &str) -> [String; 2] {
    let serial = volume_id.replace('-', "");
    [
        format!("{EBS_LINK_PREFIX}{serial}"),
        format!("{EBS_LINK_PREFIX}{serial}_1"),
    ]
}

/// Finds the device of `volume_id`: by its NVMe by-id link; on an instance without any
/// NVMe EBS device (Xen), by the device name EC2 attached it as (`/dev/sdf` shows up
/// as `/dev/xvdf`). Never by name on an NVMe instance, where names are not stable.
pub fn find_ebs_device(
    root: &Path,
    volume_id: &str,
    attached_as: Option<&str>,
) -> Result<Option<FoundDevice>, DiskError> {
    let by_id = root.join(BY_ID_DIR);
    for name in ebs_link_names(volume_id) {
        let link = by_id.join(&name);
        if let Some(device) = resolve_in_root(root, &link)? {
            return Ok(Some(FoundDevice {
                device,
                stable_path: format!("/{BY_ID_DIR}/{name}"),
            }));
        }
    }
    if has_nvme_ebs_links(&by_id)? {
        return Ok(None);
    }
    let Some(attached_as) = attached_as else {
        return Ok(None);
    };
    for candidate in xen_names(attached_as) {
        let path = root.join(candidate.trim_start_matches('/'));
        if is_block_device(&path)? {
            return Ok(Some(FoundDevice {
                device: path,
                stable_path: candidate,
            }));
        }
    }
    Ok(None)
}

/// `/dev/sdf` → [`/dev/sdf`, `/dev/xvdf`]; `/dev/xvdf` → [`/dev/xvdf`, `/dev/sdf`].
fn xen_names(device: &str) -> Vec<String> {
    let mut out = vec![device.to_owned()];
    if let Some(letter) = device.strip_prefix("/dev/sd") {
        out.push(format!("/dev/xvd{letter}"));
    } else if let Some(letter) = device.strip_prefix("/dev/xvd") {
        out.push(format!("/dev/sd{letter}"));
    }
    out
}

fn has_nvme_ebs_links(by_id: &Path) -> Result<bool, DiskError> {
    match std::fs::read_dir(by_id) {
        Ok(entries) => Ok(entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(EBS_LINK_PREFIX))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("listing", by_id)(e)),
    }
}

/// Follows `link` (one level, as udev makes them) with its target read inside `root`;
/// `None` when there is no link or it does not lead to a block device.
fn resolve_in_root(root: &Path, link: &Path) -> Result<Option<PathBuf>, DiskError> {
    let target = match std::fs::read_link(link) {
        Ok(target) => target,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            // Not a link: a device node in its own right.
            return Ok(is_block_device(link)?.then(|| link.to_owned()));
        }
        Err(e) => return Err(io_error("reading link", link)(e)),
    };
    let joined = if target.is_absolute() {
        root.join(target.strip_prefix("/").unwrap_or(&target))
    } else {
        link.parent().unwrap_or(root).join(&target)
    };
    let device = normalize(&joined);
    if !device.starts_with(root) {
        return Ok(None);
    }
    Ok(is_block_device(&device)?.then_some(device))
}

/// Resolves `.` and `..` lexically (the path's own links are not followed).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn is_block_device(path: &Path) -> Result<bool, DiskError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.file_type().is_block_device()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("inspecting", path)(e)),
    }
}

/// The (major, minor) of a device node.
pub fn device_number(device: &Path) -> Result<(u64, u64), DiskError> {
    let meta = std::fs::metadata(device).map_err(io_error("inspecting", device))?;
    let rdev = meta.rdev();
    Ok((nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev)))
}

/// Everything a device was seen to hold: what `blkid -p` and `wipefs` report, and
/// whether its first and last MiB hold anything but zeros.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// `blkid -p -o export` fields (TYPE, UUID, PTTYPE, ...); empty when blank.
    pub blkid: Vec<(String, String)>,
    /// blkid's exit status: 0 found something, 2 found nothing, else it failed.
    pub blkid_status: i32,
    pub blkid_error: String,
    /// Signatures `wipefs` lists (type and offset), empty when none.
    pub wipefs: Vec<String>,
    /// Non-zero bytes in the first or last MiB.
    pub nonzero: bool,
}

impl Probe {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.blkid
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Probes a device without writing to it.
pub fn probe(device: &Path) -> Result<Probe, DiskError> {
    let blkid = run_output(
        Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(device),
    )?;
    let wipefs = run_output(
        Command::new("wipefs")
            .args(["--no-act", "--noheadings", "--output", "TYPE,OFFSET"])
            .arg(device),
    )?;
    if wipefs.status != 0 {
        return Err(DiskError::Command {
            command: format!("wipefs {}", device.display()),
            detail: wipefs.stderr.trim().to_owned(),
        });
    }
    Ok(Probe {
        blkid: blkid
            .stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .filter(|(k, _)| k != "DEVNAME")
            .collect(),
        blkid_status: blkid.status,
        blkid_error: blkid.stderr.trim().to_owned(),
        wipefs: wipefs
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        nonzero: has_nonzero_ends(device)?,
    })
}

const END_BYTES: u64 = 1 << 20;

/// Whether the first or last MiB holds a non-zero byte: a blank EBS volume reads as
/// zeros, and GPT keeps a backup header at the end.
fn has_nonzero_ends(device: &Path) -> Result<bool, DiskError> {
    let mut file = File::open(device).map_err(io_error("opening", device))?;
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(io_error("sizing", device))?;
    let mut buffer = vec![0u8; END_BYTES.min(size) as usize];
    for offset in [0, size.saturating_sub(END_BYTES)] {
        file.seek(SeekFrom::Start(offset))
            .map_err(io_error("reading", device))?;
        file.read_exact(&mut buffer)
            .map_err(io_error("reading", device))?;
        if buffer.iter().any(|b| *b != 0) {
            return Ok(true);
        }
    }
    Ok(false)
}

struct CommandOutput {
    status: i32,
    stdout: String,
    stderr: String,
}

fn run_output(command: &mut Command) -> Result<CommandOutput, DiskError> {
    let name = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DiskError::Command {
            command: name.clone(),
            detail: e.to_string(),
        })?;
    Ok(CommandOutput {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

fn run_checked(command: &mut Command) -> Result<String, DiskError> {
    let name = format!("{command:?}").replace('"', "");
    let output = run_output(command)?;
    if output.status == 0 {
        Ok(output.stdout)
    } else {
        Err(DiskError::Command {
            command: name,
            detail: format!(
                "exit {}: {}",
                output.status,
                output.stderr.trim().lines().collect::<Vec<_>>().join("; ")
            ),
        })
    }
}

/// Makes an ext4 filesystem. mke2fs is not given `-F`: it refuses a device that is
/// mounted or in use, and with no terminal it declines to overwrite what it detects.
pub fn make_ext4(device: &Path, label: &str) -> Result<(), DiskError> {
    run_checked(
        Command::new("mkfs.ext4")
            .args(["-q", "-E", "nodiscard", "-L", label])
            .arg(device),
    )
    .map(|_| ())
}

/// A mounted filesystem, from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub device: (u64, u64),
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

pub fn mounts() -> Result<Vec<MountEntry>, DiskError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(io_error("reading", path))?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let fields: Vec<&str> = left.split(' ').collect();
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let mut right = right.split(' ');
    Some(MountEntry {
        device: (major.parse().ok()?, minor.parse().ok()?),
        mount_point: PathBuf::from(unescape_octal(fields.get(4)?)),
        fstype: right.next()?.to_owned(),
        source: unescape_octal(right.next()?),
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = text
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(code);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts `device` at `mount_point` (created if missing).
pub fn mount(device: &Path, mount_point: &Path, fstype: &str) -> Result<(), DiskError> {
    std::fs::create_dir_all(mount_point).map_err(io_error("creating", mount_point))?;
    nix::mount::mount(
        Some(device),
        mount_point,
        Some(fstype),
        nix::mount::MsFlags::MS_NOATIME,
        None::<&str>,
    )
    .map_err(|e| DiskError::Io {
        what: "mounting",
        path: mount_point.to_owned(),
        source: e.into(),
    })
}

/// The device's size in bytes.
pub fn device_size(device: &Path) -> Result<u64, DiskError> {
    let mut file = File::open(device).map_err(io_error("opening", device))?;
    file.seek(SeekFrom::End(0))
        .map_err(io_error("sizing", device))
}

/// The size of the ext4 filesystem on `device`, in bytes (block count × block size).
pub fn ext4_size(device: &Path) -> Result<u64, DiskError> {
    let text = run_checked(Command::new("dumpe2fs").arg("-h").arg(device))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    match (field("Block count:"), field("Block size:")) {
        (Some(count), Some(size)) => Ok(count * size),
        _ => Err(DiskError::Command {
            command: format!("dumpe2fs -h {}", device.display()),
            detail: "no block count or block size in its output".to_owned(),
        }),
    }
}

/// Grows the (mounted) ext4 filesystem on `device` to the device's size.
pub fn grow_ext4(device: &Path) -> Result<(), DiskError> {
    run_checked(Command::new("resize2fs").arg(device)).map(|_| ())
}

/// An exclusive lock held while the file stays open; released on drop or exit.
pub struct Lock {
    _lock: nix::fcntl::Flock<File>,
}

/// Takes an exclusive lock on `path`, waiting for another holder to release it.
pub fn lock_exclusive(path: &Path) -> Result<Lock, DiskError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error("creating", parent))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_error("opening lock", path))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, errno)| DiskError::Io {
            what: "locking",
            path: path.to_owned(),
            source: errno.into(),
        },
    )?;
    Ok(Lock { _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_octal(r"/a\040b"), "/a b");
        assert_eq!(unescape_octal(r"/plain"), "/plain");
        assert_eq!(unescape_octal(r"/x\134y"), r"/x\y");
    }

    #[test]
    fn link_names_carry_the_serial() {
        assert_eq!(
            ebs_link_names("vol-0123456789abcdef0")[0],
            "nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0"
        );
    }

    #[test]
    fn xen_aliases() {
        assert_eq!(xen_names("/dev/sdf"), ["/dev/sdf", "/dev/xvdf"]);
        assert_eq!(xen_names("/dev/xvdu"), ["/dev/xvdu", "/dev/sdu"]);
    }

    #[test]
    fn mountinfo_lines() {
        let entry = parse_mountinfo_line(
            "36 35 7:3 / /tmp/root\\040dir/mnt/etcd-main-a rw,noatime shared:1 - ext4 /dev/loop3 rw",
        )
        .unwrap();
        assert_eq!(entry.device, (7, 3));
        assert_eq!(
            entry.mount_point,
            PathBuf::from("/tmp/root dir/mnt/etcd-main-a")
        );
        assert_eq!(entry.fstype, "ext4");
        assert_eq!(entry.source, "/dev/loop3");
    }

    #[test]
    fn links_resolve_inside_the_root_and_never_escape() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(BY_ID_DIR)).unwrap();
        let [name, _] = ebs_link_names("vol-1");
        // A link to a device that is not in the root: not found (never the host's).
        std::os::unix::fs::symlink("/dev/null", root.join(BY_ID_DIR).join(&name)).unwrap();
        assert_eq!(
            find_ebs_device(root, "vol-1", Some("/dev/sdf")).unwrap(),
            None
        );
        let escaping = root
            .join(BY_ID_DIR)
            .join(ebs_link_names("vol-2")[0].clone());
        std::os::unix::fs::symlink("../../../../../../../../dev/null", &escaping).unwrap();
        assert_eq!(find_ebs_device(root, "vol-2", None).unwrap(), None);
    }
}
