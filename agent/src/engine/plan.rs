//! Plan: compare the desired state with what is on the host, and list the changes
//! with a reason each, in an order where every step comes after the steps it needs.
//!
//! Planning only reads: files, the state record, and (on a live host) systemd, sysctl
//! and module status. It never writes, downloads or starts anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use super::protect::Protected;
use super::state::{FileRecord, StatRecord, State};
use crate::host::fs::{self as hostfs, Existing};
use crate::host::{Host, kernel, systemd};
use crate::model::{DesiredFile, DesiredService, DesiredState, FileKind, Ownership};
use crate::spec::{AbsPath, UnitName};

/// Resolved owner and mode of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Perms {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
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
    EnableUnit {
        unit: UnitName,
        trigger: Trigger,
    },
    StartUnit {
        unit: UnitName,
        trigger: Trigger,
    },
    RestartUnit {
        unit: UnitName,
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
            | Self::RemoveFile { path } => path.to_string(),
            Self::DaemonReload { .. } => "systemd".to_owned(),
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
            Self::CreateDirectory { .. } => "create directory",
            Self::WriteFile { .. } => "write",
            Self::SetPermissions { .. } => "set permissions",
            Self::Symlink { .. } => "link",
            Self::RemoveFile { .. } => "remove",
            Self::DaemonReload { .. } => "daemon-reload",
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
    /// Records of paths no longer in the spec that are gone already (an earlier run
    /// removed them but was killed before it could record that): dropped after apply.
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
}

struct Planner<'a> {
    host: &'a Host,
    state: &'a State,
    steps: Vec<Step>,
    /// Path to the index of the step that creates or writes it.
    writes: BTreeMap<String, usize>,
    unchanged: BTreeMap<String, FileRecord>,
    forget: Vec<String>,
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
        directories: Vec::new(),
        protected: Protected::of(state, Some(desired)),
    };
    if let Some(file) = desired.asset_files.first() {
        // The assets engine (issue 3) installs these; until then, refuse loudly.
        return Err(PlanError::Unsupported(format!(
            "{}: files from assets ({}) are not supported by this build yet",
            file.path, file.asset
        )));
    }
    planner.directories(desired)?;
    planner.files(desired)?;
    planner.symlinks(desired)?;
    planner.removals(desired)?;
    let reload = planner.daemon_reload(desired);
    let modules = planner.modules(desired);
    planner.sysctls(desired, modules);
    planner.services(desired, reload).await?;
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
            self.ensure_parents(&file.path, &explicit)?;
            let perms = self.perms(&file.path, &file.ownership)?;
            let after = self.parent_steps(&file.path);
            let write = |reason: String| {
                (
                    Action::WriteFile {
                        path: file.path.clone(),
                        file: Box::new(file.clone()),
                        perms,
                    },
                    reason,
                )
            };
            let (action, reason) = match self.inspect(&file.path)? {
                Existing::Missing => write("missing".to_owned()),
                Existing::File(stat) => {
                    let digest = self.digest_of(&file.path, &stat)?;
                    if digest != file.content.sha256() {
                        write(format!(
                            "content differs (sha256 {} on disk, {} wanted)",
                            short(&digest),
                            short(file.content.sha256())
                        ))
                    } else {
                        self.unchanged.insert(
                            file.path.to_string(),
                            FileRecord {
                                kind: "file".to_owned(),
                                digest,
                                mode: perms.mode,
                                uid: Some(perms.uid),
                                gid: Some(perms.gid),
                                secret: file.secret,
                                stat: Some(StatRecord::of(&stat)),
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

    /// Files an earlier spec had and this one does not: removed (only ones we wrote,
    /// and never one under a protected path such as etcd's data).
    fn removals(&mut self, desired: &DesiredState) -> Result<(), PlanError> {
        let wanted: BTreeSet<&str> = desired
            .files
            .iter()
            .map(|f| f.path.as_str())
            .chain(desired.symlinks.iter().map(|l| l.path.as_str()))
            .chain(desired.directories.iter().map(|d| d.path.as_str()))
            .collect();
        let gone: Vec<(String, FileRecord)> = self
            .state
            .files
            .iter()
            .filter(|(path, record)| !wanted.contains(path.as_str()) && record.kind != "directory")
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
        let units: Vec<AbsPath> = desired
            .files
            .iter()
            .filter(|f| f.kind == FileKind::Systemd)
            .map(|f| f.path.clone())
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
        let (modules, reason) = if self.host.skip_reason().is_none() {
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

    fn sysctls(&mut self, desired: &DesiredState, modules: Option<usize>) {
        let Some(file) = desired.sysctl_file.clone() else {
            return;
        };
        let trigger = Trigger {
            key: "sysctls".to_owned(),
            inputs: self.input_digests(std::slice::from_ref(&file), desired),
        };
        let (values, reason) = if self.host.skip_reason().is_none() {
            let differing: BTreeMap<String, String> = desired
                .sysctls
                .iter()
                .filter(|(key, value)| {
                    kernel::read_sysctl(self.host.root(), key).ok()
                        != Some(kernel::normalize(value))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if differing.is_empty() {
                return;
            }
            let reason = format!(
                "differ on the running kernel: {}",
                differing.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            (differing, reason)
        } else {
            let Some(changed) = self.changed(&trigger) else {
                return;
            };
            let reason = if changed.is_empty() {
                "never applied by nodewright".to_owned()
            } else {
                format!("{file} changed")
            };
            (desired.sysctls.clone(), reason)
        };
        // Bridge sysctls exist only once br_netfilter is loaded.
        let mut after = self.steps_writing([file.to_string()]);
        after.extend(modules);
        self.push(Action::ApplySysctls { values, trigger }, reason, after);
    }

    async fn services(
        &mut self,
        desired: &DesiredState,
        reload: Option<usize>,
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
                Action::StartUnit { unit, trigger },
                "not running".to_owned(),
            ),
            (true, None) if repaired.is_empty() => return Ok(None),
            // The service may be running with the drifted file (or failing on it).
            (true, None) => (
                Action::RestartUnit { unit, trigger },
                format!("inputs restored on disk: {}", repaired.join(", ")),
            ),
            (true, Some(changed)) if changed.is_empty() => (
                Action::RestartUnit { unit, trigger },
                "running with inputs nodewright has not applied".to_owned(),
            ),
            (true, Some(changed)) => (
                Action::RestartUnit { unit, trigger },
                format!("inputs changed: {}", changed.join(", ")),
            ),
        };
        Ok(Some(self.push(action, reason, after)))
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
