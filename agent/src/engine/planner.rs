//! What every kind's planning shares: the host and the state it reads, the steps
//! planned so far (each kind's steps may come after another kind's: a service after
//! the files it reads), and the helpers that compare a path on disk with what is wanted.

use std::collections::{BTreeMap, BTreeSet};

use super::action::Action;
use super::kinds::directory::CreateDirectory;
use super::kinds::permissions::Perms;
use super::plan::{PlanError, Step};
use super::protect::Protected;
use super::state::{FileRecord, State};
use super::trigger::Trigger;
use crate::host::Host;
use crate::host::fs::{self as hostfs, Existing, FileStat};
use crate::model::{DesiredState, Ownership};
use crate::spec::AbsPath;

pub(crate) struct Planner<'a> {
    pub host: &'a Host,
    pub state: &'a State,
    pub desired: &'a DesiredState,
    pub steps: Vec<Step>,
    /// Path to the index of the step that creates or writes it.
    writes: BTreeMap<String, usize>,
    /// The directories the spec declares: created by their own step, never as a parent.
    explicit: BTreeSet<String>,
    /// Digests of the desired files found already in place, with their stat.
    pub unchanged: BTreeMap<String, FileRecord>,
    /// Records to drop after apply.
    pub forget: Vec<String>,
    /// The directories the spec declares, with their owner and mode.
    pub directories: Vec<(AbsPath, Perms)>,
    pub protected: Protected,
    /// The digest each file installed from an asset will have, or `pending:<source>`
    /// when only the download will tell.
    pub installed: BTreeMap<String, String>,
}

impl<'a> Planner<'a> {
    pub fn new(desired: &'a DesiredState, host: &'a Host, state: &'a State) -> Self {
        Self {
            host,
            state,
            desired,
            steps: Vec::new(),
            writes: BTreeMap::new(),
            explicit: desired
                .directories
                .iter()
                .map(|d| d.path.to_string())
                .collect(),
            unchanged: BTreeMap::new(),
            forget: Vec::new(),
            directories: Vec::new(),
            protected: Protected::of(state, Some(desired)),
            installed: BTreeMap::new(),
        }
    }

    /// Adds a step that runs after the steps `after`; returns its index.
    pub fn push(&mut self, action: impl Into<Action>, reason: String, after: Vec<usize>) -> usize {
        let mut after: Vec<usize> = after;
        after.sort_unstable();
        after.dedup();
        self.steps.push(Step {
            action: action.into(),
            reason,
            after,
        });
        self.steps.len() - 1
    }

    /// Like [`Planner::push`], for a step that puts something at `path`: later steps
    /// that need `path` come after it.
    pub fn push_write(
        &mut self,
        path: &AbsPath,
        action: impl Into<Action>,
        reason: String,
        after: Vec<usize>,
    ) -> usize {
        let index = self.push(action, reason, after);
        self.writes.insert(path.to_string(), index);
        index
    }

    pub fn inspect(&self, path: &AbsPath) -> Result<Existing, PlanError> {
        let real = self.host.path(path);
        hostfs::inspect(&real).map_err(|source| PlanError::Io { path: real, source })
    }

    /// The numeric owner and mode `ownership` names on this host.
    pub fn perms(&self, path: &AbsPath, ownership: &Ownership) -> Result<Perms, PlanError> {
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
    pub fn parent_steps(&self, path: &AbsPath) -> Vec<usize> {
        path.parent()
            .and_then(|p| self.writes.get(p.as_str()).copied())
            .into_iter()
            .collect()
    }

    /// Plans the creation of missing ancestors of `path` (root-owned, 0755).
    pub fn ensure_parents(&mut self, path: &AbsPath) -> Result<(), PlanError> {
        for ancestor in path.ancestors() {
            if self.writes.contains_key(ancestor.as_str())
                || self.explicit.contains(ancestor.as_str())
            {
                continue;
            }
            match self.inspect(&ancestor)? {
                Existing::Directory { .. } => {}
                Existing::Missing => {
                    let after = self.parent_steps(&ancestor);
                    let perms = self.perms(&ancestor, &Ownership::root(0o755))?;
                    self.push_write(
                        &ancestor,
                        CreateDirectory {
                            path: ancestor.clone(),
                            perms,
                        },
                        format!("missing (parent of {path})"),
                        after,
                    );
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

    /// The digest of an existing file: from the record when the stat is unchanged,
    /// else by reading it.
    pub fn digest_of(&self, path: &AbsPath, stat: &FileStat) -> Result<String, PlanError> {
        if let Some(record) = self.state.files.get(path.as_str())
            && record.stat.as_ref().is_some_and(|s| s.matches(stat))
        {
            return Ok(record.digest.clone());
        }
        let real = self.host.path(path);
        hostfs::sha256_file(&real).map_err(|source| PlanError::Io { path: real, source })
    }

    /// The digest each input will have once the plan is applied.
    pub fn input_digests(&self, paths: &[AbsPath]) -> BTreeMap<String, String> {
        paths
            .iter()
            .map(|path| {
                let digest = if let Some(file) = self.desired.file(path.as_str()) {
                    file.content.sha256().to_owned()
                } else if let Some(digest) = self.installed.get(path.as_str()) {
                    digest.clone()
                } else if let Some(link) = self.desired.symlinks.iter().find(|l| l.path == *path) {
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

    /// Inputs whose digest differs from what the trigger last acted on: `None` when
    /// none does, an empty list when it never acted.
    pub fn changed(&self, trigger: &Trigger) -> Option<Vec<String>> {
        trigger.changed_since(self.state.applied.get(&trigger.key))
    }

    /// Inputs this plan rewrites or re-permissions although nodewright last applied
    /// the same content: they drifted on disk, and whatever read them may be affected.
    pub fn rewritten(&self, inputs: &[AbsPath]) -> Vec<String> {
        inputs
            .iter()
            .filter(|p| self.writes.contains_key(p.as_str()))
            .map(|p| p.to_string())
            .collect()
    }

    /// The steps that put something at any of `paths`.
    pub fn steps_writing(&self, paths: impl IntoIterator<Item = String>) -> Vec<usize> {
        paths
            .into_iter()
            .filter_map(|p| self.writes.get(&p).copied())
            .collect()
    }
}

/// What is at a path, in words.
pub fn describe(existing: &Existing) -> &'static str {
    match existing {
        Existing::Missing => "missing",
        Existing::File(_) => "a file",
        Existing::Directory { .. } => "a directory",
        Existing::Symlink { .. } => "a symlink",
        Existing::Other => "a special file",
    }
}

/// A digest shortened for a reason text.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// The error for a path that holds something of the wrong kind.
pub fn wrong_kind(path: &AbsPath, existing: &Existing, must_be: &str) -> PlanError {
    PlanError::Path {
        path: path.to_string(),
        detail: format!(
            "is {} but must be {must_be}; remove it by hand",
            describe(existing)
        ),
    }
}
