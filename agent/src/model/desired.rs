//! The desired state of a node: what the engine makes true.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::facts::PackageManager;
use crate::spec::{AbsPath, ArchiveKind, AssetUrl, FileMode, Principal, Sha256Hex, UnitName};

/// The content of a file, with its digest computed once.
#[derive(Clone, PartialEq, Eq)]
pub struct Content {
    bytes: Arc<[u8]>,
    sha256: String,
}

impl Content {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes: Vec<u8> = bytes.into();
        let sha256 = crate::spec::digest(&bytes);
        Self {
            bytes: bytes.into(),
            sha256,
        }
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Content({} bytes, sha256 {})",
            self.bytes.len(),
            &self.sha256[..12]
        )
    }
}

/// Why the engine cares about a file beyond its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    Plain,
    /// A systemd unit or drop-in: a change needs `systemctl daemon-reload`.
    Systemd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub mode: FileMode,
    pub owner: Principal,
    pub group: Principal,
}

impl Ownership {
    pub fn root(mode: u32) -> Self {
        Self {
            mode: FileMode::new(mode),
            owner: Principal::try_from("root").expect("a valid constant"),
            group: Principal::try_from("root").expect("a valid constant"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredFile {
    pub path: AbsPath,
    pub content: Content,
    pub ownership: Ownership,
    pub kind: FileKind,
    /// Never logged or shown; redacted from support bundles.
    pub secret: bool,
    /// Set by the issuing step for a certificate or key it (re-)issues: why, shown by
    /// `plan` as `issue <path>: <why>`.
    pub issued: Option<String>,
}

/// A file installed from a verified download (see the spec's `assets`): the asset
/// itself, or one member of it when it is an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredAssetFile {
    pub path: AbsPath,
    /// The asset's name in the spec.
    pub asset: String,
    /// The path of the member inside an archive asset; `None` for a plain file.
    pub member: Option<String>,
    pub ownership: Ownership,
}

/// A download the node needs: pinned by sha256, with the URLs to try in order (mirrors
/// already applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredAsset {
    pub name: String,
    pub sha256: Sha256Hex,
    pub urls: Vec<AssetUrl>,
    pub archive: ArchiveKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredDirectory {
    pub path: AbsPath,
    pub ownership: Ownership,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSymlink {
    pub path: AbsPath,
    pub target: AbsPath,
}

/// A path holding data that nodewright must never delete or rewrite on its own
/// (etcd's data): removals, `repair` and `reset` leave everything under it alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedPath {
    pub path: AbsPath,
    /// Why, for messages: e.g. "etcd data of member etcd-a".
    pub reason: String,
}

/// A systemd unit the node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredService {
    pub unit: UnitName,
    pub enabled: bool,
    pub running: bool,
    /// Files whose change restarts the service: its unit, drop-ins, configs, binaries.
    pub inputs: Vec<AbsPath>,
    /// Start (and restart) it without waiting until it is ready: it is ready only
    /// together with other machines (an etcd member, once its cluster has quorum), and
    /// the run must neither wait for them nor fail for them. Its state is the unit's.
    pub ready_with_peers: bool,
}

/// A static pod manifest (one of the state's `files`) whose text holds
/// [`INPUTS_PLACEHOLDER`]: the engine replaces it with the sha256 over the current bytes
/// of `inputs` (certificates, keys, kubeconfigs, configs the pod reads) when it writes
/// the manifest. The kubelet re-creates a static pod only when its manifest changes, so
/// a changed input re-creates exactly the pods that read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredStaticPod {
    pub manifest: AbsPath,
    pub inputs: Vec<AbsPath>,
}

/// Stands for the inputs digest in a static pod manifest until the engine writes it.
pub const INPUTS_PLACEHOLDER: &str = "sha256-of-the-pod-inputs-set-when-written";

/// The annotation holding it.
pub const INPUTS_ANNOTATION: &str = "nodewright.io/inputs-sha256";

/// The digest that replaces [`INPUTS_PLACEHOLDER`]: sha256 over one line per input,
/// `<path> <sha256 of its bytes>` (`absent` for a missing file), in the given order.
pub fn inputs_digest<'a>(inputs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut text = String::new();
    for (path, digest) in inputs {
        text.push_str(path);
        text.push(' ');
        text.push_str(digest);
        text.push('\n');
    }
    crate::spec::digest(text.as_bytes())
}

/// OS packages to have installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPackages {
    pub manager: PackageManager,
    pub names: Vec<String>,
}

/// A block of lines nodewright keeps inside a file that others also write (e.g.
/// /etc/hosts), between `# BEGIN nodewright <name>` and `# END nodewright <name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredBlock {
    pub path: AbsPath,
    pub name: String,
    /// The lines, each ending in a newline.
    pub lines: String,
}

/// Everything a node should have. Built by the model, made true by the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub directories: Vec<DesiredDirectory>,
    pub files: Vec<DesiredFile>,
    /// Binaries and other files that come from assets (downloads checked by sha256).
    pub asset_files: Vec<DesiredAssetFile>,
    /// The assets, by name: what `asset_files` install from.
    pub assets: BTreeMap<String, DesiredAsset>,
    pub symlinks: Vec<DesiredSymlink>,
    /// Kernel parameters to hold now (their persisted file is one of `files`).
    pub sysctls: BTreeMap<String, String>,
    /// The file that persists `sysctls`; applying them is re-done when it changes.
    pub sysctl_file: Option<AbsPath>,
    /// Kernel modules to load now (their persisted file is one of `files`).
    pub modules: Vec<String>,
    pub modules_file: Option<AbsPath>,
    /// In start order.
    pub services: Vec<DesiredService>,
    pub packages: Option<DesiredPackages>,
    /// Turn active swap off (the model also masks swap.target so it stays off).
    pub swap_off: bool,
    pub blocks: Vec<DesiredBlock>,
    /// Data nodewright must not delete (recorded in the state for `reset`).
    pub protected: Vec<ProtectedPath>,
    /// Static pod manifests whose inputs digest the engine fills in.
    pub static_pods: Vec<DesiredStaticPod>,
}

impl DesiredState {
    pub fn file(&self, path: &str) -> Option<&DesiredFile> {
        self.files.iter().find(|f| f.path.as_str() == path)
    }

    pub fn static_pod(&self, manifest: &str) -> Option<&DesiredStaticPod> {
        self.static_pods
            .iter()
            .find(|p| p.manifest.as_str() == manifest)
    }

    pub fn asset_file(&self, path: &str) -> Option<&DesiredAssetFile> {
        self.asset_files.iter().find(|f| f.path.as_str() == path)
    }
}
