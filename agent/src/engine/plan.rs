//! Plan: compare the desired state with what is on the host, and list the changes
//! with a reason each, in an order where every step comes after the steps it needs.
//!
//! Planning only reads: files, the state record, and (on a live host) systemd, sysctl
//! and module status. It never writes, downloads or starts anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use super::blocks;
use super::protect::Protected;
use super::state::{FileRecord, State};
use crate::assets::{Cache, ExtractManifest};
use crate::host::fs::{self as hostfs, Existing};
use crate::host::{Host, kernel, packages, swap, systemd};
use crate::model::{
    Content, DesiredAsset, DesiredAssetFile, DesiredFile, DesiredService, DesiredState, FileKind,
    INPUTS_PLACEHOLDER, Ownership, PackageManager, UNIT_DIR, inputs_digest,
};
use crate::spec::{AbsPath, UnitName};

/// What the engine needs to fill in a static pod manifest's inputs digest.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticPodWrite {
    /// The manifest as the model rendered it, with the placeholder.
    pub template: Content,
    pub inputs: Vec<AbsPath>,
    /// The inputs' digests the manifest was written with (set by apply).
    pub written_with: BTreeMap<String, String>,
}

impl StaticPodWrite {
    /// The manifest with the digest of `digests` (path, sha256) in place.
    pub fn fill(&self, digests: &[(String, String)]) -> Content {
        let digest = inputs_digest(digests.iter().map(|(p, d)| (p.as_str(), d.as_str())));
        let text =
            String::from_utf8_lossy(self.template.bytes()).replace(INPUTS_PLACEHOLDER, &digest);
        Content::new(text)
    }
}

/// The key under which the inputs a static pod manifest was last written with are
/// recorded (so a plan can say which input changed).
pub fn static_pod_key(manifest: &AbsPath) -> String {
    format!("static-pod:{manifest}")
}

/// Resolved owner and mode of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Perms {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Perms {
    /// The owner and mode a file has.
    pub fn of(stat: &crate::host::fs::FileStat) -> Self {
        Self {
            mode: stat.mode,
            uid: stat.uid,
            gid: stat.gid,
        }
    }
}

/// A set of inputs a live action depends on, recorded in the state when it is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trigger {
    pub key: String,
    pub inputs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    CreateDirectory {
        path: AbsPath,
        perms: Perms,
    },
    WriteFile {
        path: AbsPath,
        #[serde(skip)]
        file: Box<DesiredFile>,
        perms: Perms,
        /// A static pod manifest: its inputs digest is taken again from the files on
        /// disk when it is written (they are in place by then).
        #[serde(skip)]
        static_pod: Option<Box<StaticPodWrite>>,
    },
    SetPermissions {
        path: AbsPath,
        perms: Perms,
    },
    Symlink {
        path: AbsPath,
        target: AbsPath,
    },
    RemoveFile {
        path: AbsPath,
    },
    /// Rewrites a shared file (e.g. /etc/hosts) with nodewright's blocks set or removed.
    WriteBlocks {
        path: AbsPath,
        #[serde(skip)]
        file: Box<DesiredFile>,
        perms: Perms,
        /// Block name to the digest of its lines, or `None` when the block is removed.
        blocks: BTreeMap<String, Option<String>>,
    },
    /// Download an asset into the cache.
    FetchAsset {
        asset: String,
        sha256: String,
        urls: Vec<String>,
        #[serde(skip)]
        desired: Box<DesiredAsset>,
    },
    /// Extract an archive asset in the cache (after its download, if any).
    ExtractAsset {
        asset: String,
        sha256: String,
        #[serde(skip)]
        desired: Box<DesiredAsset>,
    },
    /// Install a file out of the cache, verified by its digest on the way.
    InstallAsset {
        path: AbsPath,
        asset: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        member: Option<String>,
        /// The content digest, when known before downloading.
        digest: Option<String>,
        perms: Perms,
        #[serde(skip)]
        desired: Box<DesiredAsset>,
    },
    DaemonReload {
        trigger: Trigger,
    },
    LoadModules {
        modules: Vec<String>,
        trigger: Trigger,
    },
    ApplySysctls {
        values: BTreeMap<String, String>,
        trigger: Trigger,
    },
    InstallPackages {
        manager: PackageManager,
        packages: Vec<String>,
        trigger: Trigger,
    },
    SwapOff {
        /// The active swap areas seen when planning (empty off a live host).
        swaps: Vec<String>,
        trigger: Trigger,
    },
    EnableUnit {
        unit: UnitName,
        trigger: Trigger,
    },
    /// `queue`: do not wait until it is ready (see `DesiredService::ready_with_peers`).
    StartUnit {
        unit: UnitName,
        queue: bool,
        trigger: Trigger,
    },
    RestartUnit {
        unit: UnitName,
        queue: bool,
        trigger: Trigger,
    },
    StopUnit {
        unit: UnitName,
        /// Set when the unit is no longer wanted at all: its record is dropped.
        forget: Option<String>,
    },
}

impl Action {
    /// What the step acts on, for listings.
    pub fn target(&self) -> String {
        match self {
            Self::CreateDirectory { path, .. }
            | Self::WriteFile { path, .. }
            | Self::SetPermissions { path, .. }
            | Self::Symlink { path, .. }
            | Self::RemoveFile { path }
            | Self::WriteBlocks { path, .. }
            | Self::InstallAsset { path, .. } => path.to_string(),
            Self::FetchAsset { asset, .. } | Self::ExtractAsset { asset, .. } => asset.clone(),
            Self::DaemonReload { .. } => "systemd".to_owned(),
            Self::InstallPackages { manager, .. } => format!("{} packages", manager.as_str()),
            Self::SwapOff { .. } => "swap".to_owned(),
            Self::LoadModules { .. } => "kernel modules".to_owned(),
            Self::ApplySysctls { .. } => "sysctls".to_owned(),
            Self::EnableUnit { unit, .. }
            | Self::StartUnit { unit, .. }
            | Self::RestartUnit { unit, .. }
            | Self::StopUnit { unit, .. } => unit.to_string(),
        }
    }

    /// A short verb phrase.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::WriteFile { file, .. } if file.issued.is_some() => "issue",
            Self::CreateDirectory { .. } => "create directory",
            Self::WriteFile { .. } => "write",
            Self::SetPermissions { .. } => "set permissions",
            Self::Symlink { .. } => "link",
            Self::RemoveFile { .. } => "remove",
            Self::WriteBlocks { .. } => "edit",
            Self::FetchAsset { .. } => "download",
            Self::ExtractAsset { .. } => "extract",
            Self::InstallAsset { .. } => "install",
            Self::DaemonReload { .. } => "daemon-reload",
            Self::InstallPackages { .. } => "install",
            Self::SwapOff { .. } => "turn off",
            Self::LoadModules { .. } => "load",
            Self::ApplySysctls { .. } => "apply",
            Self::EnableUnit { .. } => "enable",
            Self::StartUnit { .. } => "start",
            Self::RestartUnit { .. } => "restart",
            Self::StopUnit { .. } => "stop",
        }
    }

    /// Whether the step acts on the running system (and is skipped off a live host).
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            Self::DaemonReload { .. }
                | Self::LoadModules { .. }
                | Self::ApplySysctls { .. }
                | Self::InstallPackages { .. }
                | Self::SwapOff { .. }
                | Self::EnableUnit { .. }
                | Self::StartUnit { .. }
                | Self::RestartUnit { .. }
                | Self::StopUnit { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub action: Action,
    pub reason: String,
    /// Indexes of earlier steps that must succeed first.
    pub after: Vec<usize>,
}

impl Step {
    pub fn describe(&self) -> String {
        format!(
            "{} {}: {}",
            self.action.verb(),
            self.action.target(),
            self.reason
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Digests of the desired files that the plan found already in place, with the stat
    /// they have; recorded after apply so the next run need not hash them again.
    #[serde(skip)]
    pub unchanged: BTreeMap<String, FileRecord>,
    /// The directories the spec declares (not implicit parents), with their owner and
    /// mode: recorded as managed once they exist.
    #[serde(skip)]
    pub directories: Vec<(AbsPath, Perms)>,
    /// Paths the model declares protected (etcd data), with why: recorded in the state.
    #[serde(skip)]
    pub protected: BTreeMap<String, String>,
    /// Records to drop after apply: blocks of files that are gone, and paths no longer
    /// in the spec that are gone already (an earlier run removed them but was killed
    /// before it could record that).
    #[serde(skip)]
    pub forget: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn render(&self) -> String {
        if self.steps.is_empty() {
            return "No changes: the node is converged.\n".to_owned();
        }
        let mut out = format!("{} changes:\n", self.steps.len());
        for step in &self.steps {
            out.push_str(&format!("  - {}\n", step.describe()));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{path}: {detail}")]
    Path { path: String, detail: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("asking systemd: {0}")]
    Systemd(#[from] systemd::SystemctlError),
    #[error("asking the package manager: {0}")]
    Packages(String),
}

struct Planner<'a> {
    host: &'a Host,
    state: &'a State,
    steps: Vec<Step>,
    /// Path to the index of the step that creates or writes it.
    writes: BTreeMap<String, usize>,
    unchanged: BTreeMap<String, FileRecord>,
    forget: Vec<String>,
    cache: Cache,
    /// Archive digest to its extraction manifest (read once), if extracted.
    manifests: BTreeMap<String, Option<ExtractManifest>>,
    /// Asset digest to the step that downloads it.
    fetches: BTreeMap<String, usize>,
    /// The digest each asset-installed file will have, or `pending:<source>` when only
    /// the download will tell.
    asset_digests: BTreeMap<String, String>,
    directories: Vec<(AbsPath, Perms)>,
    protected: Protected,
}

/// Computes the plan. Reads only.
pub async fn plan(desired: &DesiredState, host: &Host, state: &State) -> Result<Plan, PlanError> {
    let mut planner = Planner {
        host,
        state,
        steps: Vec::new(),
        writes: BTreeMap::new(),
        unchanged: BTreeMap::new(),
        forget: Vec::new(),
        cache: Cache::new(host),
        manifests: BTreeMap::new(),
        fetches: BTreeMap::new(),
        asset_digests: BTreeMap::new(),
        directories: Vec::new(),
        protected: Protected::of(state, Some(desired)),
    };
    planner.directories(desired)?;
    planner.files(desired)?;
    planner.asset_files(desired)?;
    planner.symlinks(desired)?;
    planner.static_pods(desired)?;
    planner.blocks(desired)?;
    planner.removals(desired)?;
    let reload = planner.daemon_reload(desired);
    // What the services need of the host before they start.
    let packages = planner.packages(desired).await?;
    let modules = planner.modules(desired);
    let sysctls = planner.sysctls(desired, modules);
    let swap = planner.swap_off(desired);
    let host_steps: Vec<usize> = [packages, modules, sysctls, swap]
        .into_iter()
        .flatten()
        .collect();
    planner.services(desired, reload, &host_steps).await?;
    Ok(Plan {
        steps: planner.steps,
        unchanged: planner.unchanged,
        directories: planner.directories,
        forget: planner.forget,
        protected: desired
            .protected
            .iter()
            .map(|p| (p.path.to_string(), p.reason.clone()))
            .collect(),
    })
}

impl Planner<'_> {
    fn push(&mut self, action: Action, reason: String, after: Vec<usize>) -> usize {
        let mut after: Vec<usize> = after;
        after.sort_unstable();
        after.dedup();
        self.steps.push(Step {
            action,
            reason,
            after,
        });
        self.steps.len() - 1
    }

    fn inspect(&self, path: &AbsPath) -> Result<Existing, PlanError> {
        let real = self.host.path(path);
        hostfs::inspect(&real).map_err(|source| PlanError::Io { path: real, source })
    }

    fn perms(&self, path: &AbsPath, ownership: &Ownership) -> Result<Perms, PlanError> {
        let fail = |detail: String| PlanError::Path {
            path: path.to_string(),
            detail,
        };
        Ok(Perms {
            mode: ownership.mode.bits(),
            uid: self.host.uid(&ownership.owner).map_err(fail)?,
            gid: self.host.gid(&ownership.group).map_err(fail)?,
        })
    }

    /// Steps that must run before something is put at `path`: its parent's creation.
    fn parent_steps(&self, path: &AbsPath) -> Vec<usize> {
        path.parent()
            .and_then(|p| self.writes.get(p.as_str()).copied())
            .into_iter()
            .collect()
    }

    /// Plans the creation of missing ancestors of `path` (root-owned, 0755).
    fn ensure_parents(
        &mut self,
        path: &AbsPath,
        explicit: &BTreeSet<&str>,
    ) -> Result<(), PlanError> {
        for ancestor in path.ancestors() {
            if self.writes.contains_key(ancestor.as_str()) || explicit.contains(ancestor.as_str()) {
                continue;
            }
            match self.inspect(&ancestor)? {
                Existing::Directory { .. } => {}
                Existing::Missing => {
                    let after = self.parent_steps(&ancestor);
                    let perms = self.perms(&ancestor, &Ownership::root(0o755))?;
                    let index = self.push(
                        Action::CreateDirectory {
                            path: ancestor.clone(),
                            perms,
                        },
                        format!("missing (parent of {path})"),
                        after,
                    );
                    self.writes.insert(ancestor.to_string(), index);
                }
                // A symlink to a directory is fine (e.g. /var/run -> /run).
                Existing::Symlink { .. } if self.host.path(&ancestor).is_dir() => {}
                other => {
                    return Err(PlanError::Path {
                        path: ancestor.to_string(),
                        detail: format!(
                            "is {} but must be a directory (parent of {path}); remove it by hand",
                            describe(&other)
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    fn directories(&mut self, desired: &DesiredState) -> Result<(), PlanError> {
        let explicit: BTreeSet<&str> = desired
            .directories
            .iter()
            .map(|d| d.path.as_str())
            .collect();
        // Shallow first, so parents are planned before children.
        let mut dirs: Vec<_> = desired.directories.iter().collect();
        dirs.sort_by_key(|d| d.path.as_str().matches('/').count());
        for dir in dirs {
            self.ensure_parents(&dir.path, &explicit)?;
            let perms = self.perms(&dir.path, &dir.ownership)?;
            self.directories.push((dir.path.clone(), perms));
            let after = self.parent_steps(&dir.path);
            match self.inspect(&dir.path)? {
                Existing::Missing => {
                    let index = self.push(
                        Action::CreateDirectory {
                            path: dir.path.clone(),
                            perms,
                        },
                        "missing".to_owned(),
                        after,
                    );
                    self.writes.insert(dir.path.to_string(), index);
                }
                Existing::Directory { mode, uid, gid } => {
                    if let Some(reason) = perms_differ(mode, uid, gid, perms) {
                        self.push(
                            Action::SetPermissions {
                                path: dir.path.clone(),
                                perms,
                            },
                            reason,
                            after,
                        );
                    }
                }
                other => {
                    return Err(PlanError::Path {
                        path: dir.path.to_string(),
                        detail: format!(
                            "is {} but must be a directory; remove it by hand",
                            describe(&other)
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    fn files(&mut self, desired: &DesiredState) -> Result<(), PlanError> {
        let explicit: BTreeSet<&str> = desired
            .directories
            .iter()
            .map(|d| d.path.as_str())
            .collect();
        for file in &desired.files {
            // Planned once every file they read is (see `static_pods`).
            if desired.static_pod(file.path.as_str()).is_some() {
                continue;
            }
            self.ensure_parents(&file.path, &explicit)?;
            let perms = self.perms(&file.path, &file.ownership)?;
            let after = self.parent_steps(&file.path);
            let write = |reason: String| {
                (
                    Action::WriteFile {
                        path: file.path.clone(),
                        file: Box::new(file.clone()),
                        perms,
                        static_pod: None,
                    },
                    reason,
                )
            };
            let (action, reason) = match self.inspect(&file.path)? {
                Existing::Missing => {
                    write(file.issued.clone().unwrap_or_else(|| "missing".to_owned()))
                }
                Existing::File(stat) => {
                    let digest = self.digest_of(&file.path, &stat)?;
                    if let Some(why) = file
                        .issued
                        .clone()
                        .filter(|_| digest != file.content.sha256())
                    {
                        write(why)
                    } else if digest != file.content.sha256() {
                        write(format!(
                            "content differs (sha256 {} on disk, {} wanted)",
                            short(&digest),
                            short(file.content.sha256())
                        ))
                    } else {
                        self.unchanged.insert(
                            file.path.to_string(),
                            FileRecord {
                                secret: file.secret,
                                ..FileRecord::file(digest, perms, &stat)
                            },
                        );
                        match perms_differ(stat.mode, stat.uid, stat.gid, perms) {
                            Some(reason) => (
                                Action::SetPermissions {
                                    path: file.path.clone(),
                                    perms,
                                },
                                reason,
                            ),
                            None => continue,
                        }
                    }
                }
                Existing::Symlink { target } => write(format!(
                    "is a symlink to {}; replacing it",
                    target.display()
                )),
                other => {
                    return Err(PlanError::Path {
                        path: file.path.to_string(),
                        detail: format!(
                            "is {} but must be a file; remove it by hand",
                            describe(&other)
                        ),
                    });
                }
            };
            let index = self.push(action, reason, after);
            self.writes.insert(file.path.to_string(), index);
        }
        Ok(())
    }

    fn asset_files(&mut self, desired: &DesiredState) -> Result<(), PlanError> {
        let explicit: BTreeSet<&str> = desired
            .directories
            .iter()
            .map(|d| d.path.as_str())
            .collect();
        for file in &desired.asset_files {
            let asset = desired
                .assets
                .get(&file.asset)
                .ok_or_else(|| PlanError::Path {
                    path: file.path.to_string(),
                    detail: format!("asset {} is not declared", file.asset),
                })?;
            self.ensure_parents(&file.path, &explicit)?;
            let perms = self.perms(&file.path, &file.ownership)?;
            let source = source_key(asset, file.member.as_deref());
            let expected = self.expected_digest(asset, file);
            let reason = match self.inspect(&file.path)? {
                Existing::Missing => "missing".to_owned(),
                Existing::File(stat) => {
                    let digest = self.digest_of(&file.path, &stat)?;
                    // Before the download, a member's digest is known from the record
                    // of what was installed from the same archive.
                    let known = expected.clone().or_else(|| {
                        self.state
                            .files
                            .get(file.path.as_str())
                            .filter(|r| r.source.as_deref() == Some(source.as_str()))
                            .map(|r| r.digest.clone())
                    });
                    match known {
                        Some(want) if want == digest => {
                            self.asset_digests
                                .insert(file.path.to_string(), digest.clone());
                            self.unchanged.insert(
                                file.path.to_string(),
                                FileRecord {
                                    source: Some(source),
                                    ..FileRecord::file(digest, perms, &stat)
                                },
                            );
                            if let Some(reason) = perms_differ(stat.mode, stat.uid, stat.gid, perms)
                            {
                                let after = self.parent_steps(&file.path);
                                self.push(
                                    Action::SetPermissions {
                                        path: file.path.clone(),
                                        perms,
                                    },
                                    reason,
                                    after,
                                );
                            }
                            continue;
                        }
                        Some(want) => format!(
                            "content differs (sha256 {} on disk, {} wanted)",
                            short(&digest),
                            short(&want)
                        ),
                        None => format!(
                            "content differs from what {} held when last installed",
                            file.asset
                        ),
                    }
                }
                Existing::Symlink { target } => {
                    format!("is a symlink to {}; replacing it", target.display())
                }
                other => {
                    return Err(PlanError::Path {
                        path: file.path.to_string(),
                        detail: format!(
                            "is {} but must be a file; remove it by hand",
                            describe(&other)
                        ),
                    });
                }
            };
            let digest = expected.clone();
            self.asset_digests.insert(
                file.path.to_string(),
                expected.unwrap_or_else(|| format!("pending:{source}")),
            );
            let mut after = self.parent_steps(&file.path);
            after.extend(self.fetch_step(asset));
            let index = self.push(
                Action::InstallAsset {
                    path: file.path.clone(),
                    asset: file.asset.clone(),
                    member: file.member.clone(),
                    digest,
                    perms,
                    desired: Box::new(asset.clone()),
                },
                reason,
                after,
            );
            self.writes.insert(file.path.to_string(), index);
        }
        Ok(())
    }

    /// The digest an asset file must have, if known without downloading: the asset's
    /// own for a plain file, the extraction manifest's for a member.
    fn expected_digest(&mut self, asset: &DesiredAsset, file: &DesiredAssetFile) -> Option<String> {
        let Some(member) = &file.member else {
            return Some(asset.sha256.to_string());
        };
        let cache = &self.cache;
        self.manifests
            .entry(asset.sha256.to_string())
            .or_insert_with(|| cache.manifest(asset.sha256.as_str()))
            .as_ref()
            .and_then(|m| m.resolve(member).ok().map(|(_, digest)| digest.to_owned()))
    }

    /// The step after which `asset` is usable from the cache, if it is not yet (one
    /// per digest): its download, and for an archive its extraction after that.
    fn fetch_step(&mut self, asset: &DesiredAsset) -> Option<usize> {
        let sha = asset.sha256.to_string();
        if let Some(index) = self.fetches.get(&sha) {
            return Some(*index);
        }
        let extracted = !asset.archive.is_plain()
            && (self.manifests.get(&sha).is_some_and(Option::is_some)
                || self.cache.manifest(&sha).is_some());
        if extracted {
            return None;
        }
        let download = (!self.cache.has_blob(&sha)).then(|| {
            self.push(
                Action::FetchAsset {
                    asset: asset.name.clone(),
                    sha256: sha.clone(),
                    urls: asset.urls.iter().map(|u| u.to_string()).collect(),
                    desired: Box::new(asset.clone()),
                },
                "not in the cache: download needed".to_owned(),
                vec![],
            )
        });
        let last = if asset.archive.is_plain() {
            download?
        } else {
            let reason = if download.is_some() {
                "an archive: extracted once downloaded"
            } else {
                "in the cache but not extracted yet"
            };
            self.push(
                Action::ExtractAsset {
                    asset: asset.name.clone(),
                    sha256: sha.clone(),
                    desired: Box::new(asset.clone()),
                },
                reason.to_owned(),
                download.into_iter().collect(),
            )
        };
        self.fetches.insert(sha, last);
        Some(last)
    }

    /// The digest of an existing file: from the record when the stat is unchanged,
    /// else by reading it.
    fn digest_of(&self, path: &AbsPath, stat: &hostfs::FileStat) -> Result<String, PlanError> {
        if let Some(record) = self.state.files.get(path.as_str())
            && record.stat.as_ref().is_some_and(|s| s.matches(stat))
        {
            return Ok(record.digest.clone());
        }
        let real = self.host.path(path);
        hostfs::sha256_file(&real).map_err(|source| PlanError::Io { path: real, source })
    }

    fn symlinks(&mut self, desired: &DesiredState) -> Result<(), PlanError> {
        let explicit: BTreeSet<&str> = desired
            .directories
            .iter()
            .map(|d| d.path.as_str())
            .collect();
        for link in &desired.symlinks {
            self.ensure_parents(&link.path, &explicit)?;
            let after = self.parent_steps(&link.path);
            let reason = match self.inspect(&link.path)? {
                Existing::Symlink { target } if target == link.target.as_path() => continue,
                Existing::Symlink { target } => format!("points to {}", target.display()),
                Existing::Missing => "missing".to_owned(),
                Existing::File(_) => "is a file; replacing it".to_owned(),
                other => {
                    return Err(PlanError::Path {
                        path: link.path.to_string(),
                        detail: format!("is {}; remove it by hand", describe(&other)),
                    });
                }
            };
            let index = self.push(
                Action::Symlink {
                    path: link.path.clone(),
                    target: link.target.clone(),
                },
                reason,
                after,
            );
            self.writes.insert(link.path.to_string(), index);
        }
        Ok(())
    }

    /// Static pod manifests, with the digest of what their inputs will hold once the
    /// plan is applied: a changed certificate or config rewrites the manifest (and the
    /// kubelet re-creates the pod); unchanged inputs leave it byte for byte.
    fn static_pods(&mut self, desired: &DesiredState) -> Result<(), PlanError> {
        let explicit: BTreeSet<&str> = desired
            .directories
            .iter()
            .map(|d| d.path.as_str())
            .collect();
        for pod in &desired.static_pods {
            let Some(template) = desired.file(pod.manifest.as_str()) else {
                continue;
            };
            let inputs = self.input_digests(&pod.inputs, desired);
            let ordered: Vec<(String, String)> = pod
                .inputs
                .iter()
                .map(|p| {
                    let digest = inputs.get(p.as_str()).cloned().unwrap_or_default();
                    (p.to_string(), digest)
                })
                .collect();
            let write = StaticPodWrite {
                template: template.content.clone(),
                inputs: pod.inputs.clone(),
                written_with: BTreeMap::new(),
            };
            let mut file = template.clone();
            file.content = write.fill(&ordered);
            self.ensure_parents(&file.path, &explicit)?;
            let perms = self.perms(&file.path, &file.ownership)?;
            let mut after = self.parent_steps(&file.path);
            after.extend(self.steps_writing(pod.inputs.iter().map(|p| p.to_string())));
            let reason = match self.inspect(&file.path)? {
                Existing::Missing => "missing".to_owned(),
                Existing::File(stat) => {
                    let digest = self.digest_of(&file.path, &stat)?;
                    if digest == file.content.sha256() {
                        self.unchanged.insert(
                            file.path.to_string(),
                            FileRecord::file(digest, perms, &stat),
                        );
                        if let Some(reason) = perms_differ(stat.mode, stat.uid, stat.gid, perms) {
                            self.push(
                                Action::SetPermissions {
                                    path: file.path.clone(),
                                    perms,
                                },
                                reason,
                                after,
                            );
                        }
                        continue;
                    }
                    let trigger = Trigger {
                        key: static_pod_key(&pod.manifest),
                        inputs: inputs.clone(),
                    };
                    match self.changed(&trigger) {
                        Some(changed) if !changed.is_empty() => {
                            format!("pod inputs changed: {}", changed.join(", "))
                        }
                        _ => format!(
                            "content differs (sha256 {} on disk, {} wanted)",
                            short(&digest),
                            short(file.content.sha256())
                        ),
                    }
                }
                Existing::Symlink { target } => {
                    format!("is a symlink to {}; replacing it", target.display())
                }
                other => {
                    return Err(PlanError::Path {
                        path: file.path.to_string(),
                        detail: format!(
                            "is {} but must be a file; remove it by hand",
                            describe(&other)
                        ),
                    });
                }
            };
            let index = self.push(
                Action::WriteFile {
                    path: file.path.clone(),
                    file: Box::new(file),
                    perms,
                    static_pod: Some(Box::new(write)),
                },
                reason,
                after,
            );
            self.writes.insert(pod.manifest.to_string(), index);
        }
        Ok(())
    }

    /// Files an earlier spec had and this one does not: removed (only ones we wrote,
    /// and never one under a protected path such as etcd's data).
    fn removals(&mut self, desired: &DesiredState) -> Result<(), PlanError> {
        let wanted: BTreeSet<&str> = desired
            .files
            .iter()
            .map(|f| f.path.as_str())
            .chain(desired.symlinks.iter().map(|l| l.path.as_str()))
            .chain(desired.asset_files.iter().map(|f| f.path.as_str()))
            .chain(desired.directories.iter().map(|d| d.path.as_str()))
            .collect();
        let gone: Vec<(String, FileRecord)> = self
            .state
            .files
            .iter()
            .filter(|(path, record)| {
                !wanted.contains(path.as_str())
                    && record.kind != "directory"
                    && record.kind != BLOCK_KIND
            })
            .map(|(p, r)| (p.clone(), r.clone()))
            .collect();
        for (path, _) in gone {
            let Ok(path) = AbsPath::try_from(path) else {
                continue;
            };
            if let Some(guard) = self.protected.covering(path.as_str()) {
                tracing::warn!(
                    path = %path,
                    protected = %guard.path,
                    "no longer in the spec, but under a protected path: left in place"
                );
                continue;
            }
            if self.inspect(&path)? == Existing::Missing {
                self.forget.push(path.to_string());
            } else {
                let index = self.push(
                    Action::RemoveFile { path: path.clone() },
                    "no longer in the spec".to_owned(),
                    vec![],
                );
                self.writes.insert(path.to_string(), index);
            }
        }
        Ok(())
    }

    /// The digest each input will have once the plan is applied.
    fn input_digests(&self, paths: &[AbsPath], desired: &DesiredState) -> BTreeMap<String, String> {
        paths
            .iter()
            .map(|path| {
                let digest = if let Some(file) = desired.file(path.as_str()) {
                    file.content.sha256().to_owned()
                } else if let Some(digest) = self.asset_digests.get(path.as_str()) {
                    digest.clone()
                } else if let Some(link) = desired.symlinks.iter().find(|l| l.path == *path) {
                    format!("symlink:{}", link.target)
                } else {
                    // Not ours (e.g. a unit file the OS ships): its current content.
                    hostfs::sha256_file(&self.host.path(path))
                        .unwrap_or_else(|_| "absent".to_owned())
                };
                (path.to_string(), digest)
            })
            .collect()
    }

    /// Inputs whose digest differs from what the trigger last acted on.
    fn changed(&self, trigger: &Trigger) -> Option<Vec<String>> {
        let Some(record) = self.state.applied.get(&trigger.key) else {
            return Some(vec![]);
        };
        let mut changed: Vec<String> = trigger
            .inputs
            .iter()
            .filter(|(path, digest)| record.inputs.get(*path) != Some(*digest))
            .map(|(path, _)| path.clone())
            .collect();
        changed.extend(
            record
                .inputs
                .keys()
                .filter(|p| !trigger.inputs.contains_key(*p))
                .cloned(),
        );
        (!changed.is_empty()).then_some(changed)
    }

    /// Inputs this plan rewrites or re-permissions although nodewright last applied
    /// the same content: they drifted on disk, and whatever read them may be affected.
    fn rewritten(&self, inputs: &[AbsPath]) -> Vec<String> {
        inputs
            .iter()
            .filter(|p| self.writes.contains_key(p.as_str()))
            .map(|p| p.to_string())
            .collect()
    }

    fn steps_writing(&self, paths: impl IntoIterator<Item = String>) -> Vec<usize> {
        paths
            .into_iter()
            .filter_map(|p| self.writes.get(&p).copied())
            .collect()
    }

    fn daemon_reload(&mut self, desired: &DesiredState) -> Option<usize> {
        let unit_dir = crate::model::fixed_path(UNIT_DIR);
        let units: Vec<AbsPath> = desired
            .files
            .iter()
            .filter(|f| f.kind == FileKind::Systemd)
            .map(|f| f.path.clone())
            // A mask (a link to /dev/null) changes what systemd loads too.
            .chain(
                desired
                    .symlinks
                    .iter()
                    .filter(|l| l.path.starts_with(&unit_dir))
                    .map(|l| l.path.clone()),
            )
            .collect();
        let trigger = Trigger {
            key: "daemon-reload".to_owned(),
            inputs: self.input_digests(&units, desired),
        };
        if trigger.inputs.is_empty() && !self.state.applied.contains_key(&trigger.key) {
            return None;
        }
        let changed = self.changed(&trigger);
        let reason = match &changed {
            Some(changed) if changed.is_empty() => "units not yet loaded by systemd".to_owned(),
            Some(changed) => format!("units changed: {}", changed.join(", ")),
            // Same text as last loaded, but drifted on disk meanwhile: systemd may have
            // loaded the drifted text, so load the restored one.
            None => {
                let repaired = self.rewritten(&units);
                if repaired.is_empty() {
                    return None;
                }
                format!("unit files restored on disk: {}", repaired.join(", "))
            }
        };
        let after = self.steps_writing(
            trigger
                .inputs
                .keys()
                .cloned()
                .chain(changed.unwrap_or_default()),
        );
        Some(self.push(Action::DaemonReload { trigger }, reason, after))
    }

    fn modules(&mut self, desired: &DesiredState) -> Option<usize> {
        let file = desired.modules_file.clone()?;
        let trigger = Trigger {
            key: "modules".to_owned(),
            inputs: self.input_digests(std::slice::from_ref(&file), desired),
        };
        // Only a live host that owns its kernel can tell what is loaded; elsewhere (a
        // sandbox root, a container) loading is re-planned when the list changes.
        let (modules, reason) = if self.host.owns_kernel() {
            let missing: Vec<String> = desired
                .modules
                .iter()
                .filter(|m| !kernel::module_loaded(m))
                .cloned()
                .collect();
            if missing.is_empty() {
                return None;
            }
            let reason = format!("not loaded: {}", missing.join(", "));
            (missing, reason)
        } else {
            let changed = self.changed(&trigger)?;
            let reason = if changed.is_empty() {
                "never loaded by nodewright".to_owned()
            } else {
                format!("{} changed", file)
            };
            (desired.modules.clone(), reason)
        };
        let after = self.steps_writing([file.to_string()]);
        Some(self.push(Action::LoadModules { modules, trigger }, reason, after))
    }

    fn sysctls(&mut self, desired: &DesiredState, modules: Option<usize>) -> Option<usize> {
        let file = desired.sysctl_file.clone()?;
        let trigger = Trigger {
            key: "sysctls".to_owned(),
            inputs: self.input_digests(std::slice::from_ref(&file), desired),
        };
        let live = self.host.skip_reason().is_none();
        let container = self.host.container().is_some();
        // What the running kernel can be asked: every key on a host that owns its
        // kernel, the namespaced ones in a container; the rest follows the trigger.
        let root = self.host.root();
        let checkable = |key: &str| {
            live && (!container || (kernel::namespaced(key) && kernel::writable(root, key)))
        };
        let differing: BTreeMap<String, String> = desired
            .sysctls
            .iter()
            .filter(|(key, _)| checkable(key))
            .filter(|(key, value)| {
                kernel::read_sysctl(self.host.root(), key).ok() != Some(kernel::normalize(value))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let changed = self.changed(&trigger);
        let mut values = differing.clone();
        if changed.is_some() {
            values.extend(
                desired
                    .sysctls
                    .iter()
                    .filter(|(key, _)| !checkable(key))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        if values.is_empty() {
            return None;
        }
        let reason = if !differing.is_empty() {
            format!(
                "differ on the running kernel: {}",
                differing.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        } else if changed.is_some_and(|c| !c.is_empty()) {
            format!("{file} changed")
        } else {
            "never applied by nodewright".to_owned()
        };
        // Bridge sysctls exist only once br_netfilter is loaded.
        let mut after = self.steps_writing([file.to_string()]);
        after.extend(modules);
        Some(self.push(Action::ApplySysctls { values, trigger }, reason, after))
    }

    /// Installs the packages that are missing (on a live host), or that nodewright
    /// has not installed yet (off one, where it can only skip).
    async fn packages(&mut self, desired: &DesiredState) -> Result<Option<usize>, PlanError> {
        let Some(wanted) = &desired.packages else {
            return Ok(None);
        };
        let manager = wanted.manager;
        let trigger = Trigger {
            key: "packages".to_owned(),
            inputs: wanted
                .names
                .iter()
                .map(|n| (format!("{}:{n}", manager.as_str()), "installed".to_owned()))
                .collect(),
        };
        let (names, reason) = if self.host.skip_reason().is_none() {
            let missing = packages::missing(&packages::Tools::default(), manager, &wanted.names)
                .await
                .map_err(PlanError::Packages)?;
            if missing.is_empty() {
                return Ok(None);
            }
            let reason = format!("not installed: {}", missing.join(", "));
            (missing, reason)
        } else {
            let Some(changed) = self.changed(&trigger) else {
                return Ok(None);
            };
            let reason = if changed.is_empty() {
                "never installed by nodewright".to_owned()
            } else {
                format!("changed: {}", changed.join(", "))
            };
            (wanted.names.clone(), reason)
        };
        Ok(Some(self.push(
            Action::InstallPackages {
                manager,
                packages: names,
                trigger,
            },
            reason,
            vec![],
        )))
    }

    /// Turns swap off when it is on (the model masks swap.target to keep it off).
    fn swap_off(&mut self, desired: &DesiredState) -> Option<usize> {
        if !desired.swap_off {
            return None;
        }
        let trigger = Trigger {
            key: "swap-off".to_owned(),
            inputs: BTreeMap::new(),
        };
        let (swaps, reason) = if self.host.skip_reason().is_none() {
            let active = swap::active(self.host.root()).unwrap_or_default();
            if active.is_empty() {
                return None;
            }
            let reason = format!("swap is on: {}", active.join(", "));
            (active, reason)
        } else {
            self.changed(&trigger)?;
            (Vec::new(), "never turned off by nodewright".to_owned())
        };
        Some(self.push(Action::SwapOff { swaps, trigger }, reason, vec![]))
    }

    /// Sets nodewright's blocks in shared files, and removes blocks an earlier spec had.
    fn blocks(&mut self, desired: &DesiredState) -> Result<(), PlanError> {
        // Path -> block name -> lines (None: remove).
        let mut by_path: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
        for block in &desired.blocks {
            by_path
                .entry(block.path.to_string())
                .or_default()
                .insert(block.name.clone(), Some(block.lines.clone()));
        }
        for (key, record) in &self.state.files {
            if record.kind != BLOCK_KIND {
                continue;
            }
            if let Some((path, name)) = key.split_once('#') {
                by_path
                    .entry(path.to_owned())
                    .or_default()
                    .entry(name.to_owned())
                    .or_insert(None);
            }
        }
        let explicit = BTreeSet::new();
        for (path, wanted) in by_path {
            let path = AbsPath::try_from(path).map_err(|e| PlanError::Path {
                path: "a recorded block".to_owned(),
                detail: e.to_string(),
            })?;
            let real = self.host.path(&path);
            let (existing, perms) = match self.inspect(&path)? {
                Existing::Missing => {
                    if wanted.values().all(Option::is_none) {
                        // Nothing to remove from a file that is gone.
                        for name in wanted.keys() {
                            self.forget_block(&path, name);
                        }
                        continue;
                    }
                    self.ensure_parents(&path, &explicit)?;
                    (String::new(), self.perms(&path, &Ownership::root(0o644))?)
                }
                Existing::File(stat) => {
                    let text = std::fs::read_to_string(&real).map_err(|source| PlanError::Io {
                        path: real.clone(),
                        source,
                    })?;
                    (
                        text,
                        Perms {
                            mode: stat.mode,
                            uid: stat.uid,
                            gid: stat.gid,
                        },
                    )
                }
                other => {
                    return Err(PlanError::Path {
                        path: path.to_string(),
                        detail: format!(
                            "is {} but nodewright edits blocks only in regular files",
                            describe(&other)
                        ),
                    });
                }
            };
            let mut text = existing.clone();
            let mut changes = Vec::new();
            let mut records = BTreeMap::new();
            for (name, lines) in &wanted {
                let before = blocks::current(&text, name).map(str::to_owned);
                text = blocks::replace(&text, name, lines.as_deref());
                records.insert(name.clone(), lines.as_deref().map(blocks::digest));
                match (before.as_deref(), lines.as_deref()) {
                    (None, Some(_)) => changes.push(format!("block {name} missing")),
                    (Some(_), None) => changes.push(format!("block {name} no longer in the spec")),
                    (Some(a), Some(b)) if a != b => changes.push(format!("block {name} differs")),
                    _ => {}
                }
            }
            if text == existing {
                // Already right: make sure the state knows the blocks are ours.
                for (name, digest) in records {
                    if let Some(digest) = digest {
                        self.unchanged.insert(
                            format!("{path}#{name}"),
                            FileRecord {
                                kind: BLOCK_KIND.to_owned(),
                                digest,
                                mode: perms.mode,
                                uid: None,
                                gid: None,
                                secret: false,
                                stat: None,
                                source: None,
                            },
                        );
                    }
                }
                continue;
            }
            let after = self.parent_steps(&path);
            let file = DesiredFile {
                path: path.clone(),
                content: Content::new(text),
                ownership: Ownership::root(perms.mode),
                kind: FileKind::Plain,
                secret: false,
                issued: None,
            };
            let index = self.push(
                Action::WriteBlocks {
                    path: path.clone(),
                    file: Box::new(file),
                    perms,
                    blocks: records,
                },
                changes.join(", "),
                after,
            );
            self.writes.insert(path.to_string(), index);
        }
        Ok(())
    }

    /// A removed block whose file is gone: apply drops its record.
    fn forget_block(&mut self, path: &AbsPath, name: &str) {
        self.forget.push(format!("{path}#{name}"));
    }

    async fn services(
        &mut self,
        desired: &DesiredState,
        reload: Option<usize>,
        host_steps: &[usize],
    ) -> Result<(), PlanError> {
        let live = self.host.skip_reason().is_none();
        let mut previous: Option<usize> = None;
        for service in &desired.services {
            let trigger = Trigger {
                key: service_key(&service.unit),
                inputs: self.input_digests(&service.inputs, desired),
            };
            let mut after = self.steps_writing(service.inputs.iter().map(|p| p.to_string()));
            after.extend(reload);
            after.extend(previous);
            after.extend(host_steps);

            let enable = Trigger {
                key: enable_key(&service.unit),
                inputs: BTreeMap::new(),
            };
            let needs_enable = if live {
                !systemd::is_enabled(service.unit.as_str()).await?
            } else {
                // Off a live host, only our record can tell.
                !self.state.applied.contains_key(&enable.key)
            };
            if service.enabled && needs_enable {
                let index = self.push(
                    Action::EnableUnit {
                        unit: service.unit.clone(),
                        trigger: enable,
                    },
                    "not enabled".to_owned(),
                    after.clone(),
                );
                after.push(index);
                previous = Some(index);
            }
            if let Some(index) = self.service_action(service, trigger, after, live).await? {
                previous = Some(index);
            }
        }
        // Services an earlier spec had: stop them and forget them.
        let wanted: BTreeSet<&str> = desired.services.iter().map(|s| s.unit.as_str()).collect();
        let gone: BTreeSet<String> = self
            .state
            .applied
            .keys()
            .filter_map(|k| {
                k.strip_prefix("service:")
                    .or_else(|| k.strip_prefix("enable:"))
            })
            .filter(|unit| !wanted.contains(unit))
            .map(str::to_owned)
            .collect();
        for unit in gone {
            let Ok(unit) = UnitName::try_from(unit.as_str()) else {
                continue;
            };
            self.push(
                Action::StopUnit {
                    forget: Some(unit.to_string()),
                    unit,
                },
                "no longer in the spec".to_owned(),
                reload.into_iter().collect(),
            );
        }
        Ok(())
    }

    async fn service_action(
        &mut self,
        service: &DesiredService,
        trigger: Trigger,
        after: Vec<usize>,
        live: bool,
    ) -> Result<Option<usize>, PlanError> {
        let unit = service.unit.clone();
        let queue = service.ready_with_peers;
        if !service.running {
            if live && systemd::is_active(unit.as_str()).await? {
                let index = self.push(
                    Action::StopUnit { unit, forget: None },
                    "running but its spec says stopped".to_owned(),
                    after,
                );
                return Ok(Some(index));
            }
            return Ok(None);
        }
        let changed = self.changed(&trigger);
        let active = if live {
            systemd::is_active(unit.as_str()).await?
        } else {
            // Off a live host a service counts as running once it was started.
            self.state.applied.contains_key(&trigger.key)
        };
        let repaired = self.rewritten(&service.inputs);
        let (action, reason) = match (active, changed) {
            (false, _) => (
                Action::StartUnit {
                    unit,
                    queue,
                    trigger,
                },
                "not running".to_owned(),
            ),
            (true, None) if repaired.is_empty() => return Ok(None),
            // The service may be running with the drifted file (or failing on it).
            (true, None) => (
                Action::RestartUnit {
                    unit,
                    queue,
                    trigger,
                },
                format!("inputs restored on disk: {}", repaired.join(", ")),
            ),
            (true, Some(changed)) if changed.is_empty() => (
                Action::RestartUnit {
                    unit,
                    queue,
                    trigger,
                },
                "running with inputs nodewright has not applied".to_owned(),
            ),
            (true, Some(changed)) => (
                Action::RestartUnit {
                    unit,
                    queue,
                    trigger,
                },
                format!("inputs changed: {}", changed.join(", ")),
            ),
        };
        Ok(Some(self.push(action, reason, after)))
    }
}

/// The kind of a block's record in the state (`<path>#<name>`).
pub const BLOCK_KIND: &str = "block";
/// What an asset file is installed from: `sha256:<asset>` or `sha256:<archive>#<member>`.
pub fn source_key(asset: &DesiredAsset, member: Option<&str>) -> String {
    match member {
        None => format!("sha256:{}", asset.sha256),
        Some(member) => format!("sha256:{}#{member}", asset.sha256),
    }
}

pub fn service_key(unit: &UnitName) -> String {
    format!("service:{unit}")
}

pub fn enable_key(unit: &UnitName) -> String {
    format!("enable:{unit}")
}

fn perms_differ(mode: u32, uid: u32, gid: u32, want: Perms) -> Option<String> {
    let mut parts = Vec::new();
    if mode != want.mode {
        parts.push(format!("mode {mode:04o} → {:04o}", want.mode));
    }
    if uid != want.uid || gid != want.gid {
        parts.push(format!("owner {uid}:{gid} → {}:{}", want.uid, want.gid));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn describe(existing: &Existing) -> &'static str {
    match existing {
        Existing::Missing => "missing",
        Existing::File(_) => "a file",
        Existing::Directory { .. } => "a directory",
        Existing::Symlink { .. } => "a symlink",
        Existing::Other => "a special file",
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}
