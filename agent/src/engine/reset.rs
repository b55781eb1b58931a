//! Reset: take off a node what nodewright put on it, from the state's records alone
//! (no spec, no network): the units it started or enabled (stopped and disabled), the
//! files and links it wrote, the directories it created (when empty), the kept spec,
//! and on request the download cache. `boot` afterwards makes the same node again.
//!
//! Anything under a protected path (etcd data) is kept and listed, unless the caller
//! passes `include_protected` (the CLI asks for two flags). A reset killed half-way is
//! finished by running it again: the records go only once their paths are gone.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::applied::AppliedSpec;
use super::apply::Outcome;
use super::keys::{AppliedKey, RecordKind, split_block_key};
use super::kinds::block;
use super::protect::{Guard, Protected};
use super::state::State;
use super::timeline::Timeline;
use crate::host::fs as hostfs;
use crate::host::{Host, systemd};

/// The download cache (content-addressed, verified).
pub const CACHE_DIR: &str = "/var/cache/nodewright";

#[derive(Debug, Clone, Copy, Default)]
pub struct ResetOptions {
    /// Also delete what lies under protected paths (etcd data).
    pub include_protected: bool,
    pub remove_cache: bool,
}

/// What a reset will do, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetPlan {
    /// Units to stop and disable.
    pub units: Vec<String>,
    /// Files and symlinks to remove.
    pub files: Vec<String>,
    /// Directories nodewright created, deepest first: removed when empty.
    pub directories: Vec<String>,
    /// Protected paths whose contents are deleted (only with `include_protected`).
    pub wipe: Vec<String>,
    /// Paths kept because they are protected, with the protected path and why.
    pub kept: Vec<Kept>,
    pub remove_cache: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    pub path: String,
    pub protected: String,
    pub reason: String,
}

impl ResetPlan {
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
            && self.files.is_empty()
            && self.directories.is_empty()
            && self.wipe.is_empty()
            && !self.remove_cache
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut list = |title: &str, items: &[String]| {
            if !items.is_empty() {
                out.push_str(&format!("{title}:\n"));
                for item in items {
                    out.push_str(&format!("  - {item}\n"));
                }
            }
        };
        list("Stop and disable", &self.units);
        list("Remove", &self.files);
        list("Remove if empty", &self.directories);
        list("DELETE ETCD DATA under", &self.wipe);
        if self.remove_cache {
            out.push_str(&format!("Remove the download cache {CACHE_DIR}\n"));
        }
        if !self.kept.is_empty() {
            out.push_str("Keep (protected):\n");
            for kept in &self.kept {
                out.push_str(&format!(
                    "  - {} (under {}: {})\n",
                    kept.path, kept.protected, kept.reason
                ));
            }
        }
        if out.is_empty() {
            out.push_str("Nothing to remove: nodewright has installed nothing here.\n");
        }
        out
    }
}

/// Plans a reset from the state's records. Reads only.
pub fn plan(state: &State, options: ResetOptions) -> ResetPlan {
    let protected = Protected::of(state, None);
    let mut plan = ResetPlan {
        remove_cache: options.remove_cache,
        ..ResetPlan::default()
    };
    let units: BTreeSet<&str> = state
        .applied
        .keys()
        .filter_map(AppliedKey::unit)
        .map(|unit| unit.as_str())
        .collect();
    plan.units = units.into_iter().map(str::to_owned).collect();

    let mut keep = |path: &str, guard: Guard| {
        plan.kept.push(Kept {
            path: path.to_owned(),
            protected: guard.path,
            reason: guard.reason,
        });
    };
    for (path, record) in &state.files {
        if record.kind == RecordKind::Directory {
            continue;
        }
        match protected.covering(path) {
            Some(guard) if !options.include_protected => keep(path, guard),
            _ => plan.files.push(path.clone()),
        }
    }
    let mut directories: Vec<&String> = state.created_directories.iter().collect();
    directories.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for dir in directories {
        match protected.covering(dir) {
            Some(guard) if !options.include_protected => keep(dir, guard),
            _ => plan.directories.push(dir.clone()),
        }
    }
    if options.include_protected {
        plan.wipe = protected.iter().map(|g| g.path).collect();
    }
    plan
}

/// One thing a reset did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetStep {
    pub description: String,
    pub outcome: String,
    #[serde(skip)]
    pub failed: bool,
}

/// Carries out `plan`, updating `state` as paths go, and records each step.
pub async fn run(
    plan: &ResetPlan,
    host: &Host,
    state: &mut State,
    timeline: &mut Timeline,
) -> Vec<ResetStep> {
    let mut steps = Vec::new();
    let mut record = |timeline: &mut Timeline, began: Instant, what: String, outcome: Outcome| {
        timeline.record(format!("reset: {what}"), began, outcome.describe());
        steps.push(ResetStep {
            description: what,
            failed: matches!(outcome, Outcome::Failed(_)),
            outcome: outcome.describe(),
        });
    };

    for unit in &plan.units {
        let began = Instant::now();
        let outcome = Outcome::of_job(systemd::stop_unit(host.systemd(), unit, true).await);
        if !matches!(outcome, Outcome::Failed(_)) {
            state
                .applied
                .retain(|key, _| key.unit().is_none_or(|u| u.as_str() != unit));
        }
        record(timeline, began, format!("stop and disable {unit}"), outcome);
    }
    for path in &plan.files {
        let began = Instant::now();
        if let Some((file, name)) = split_block_key(path)
            && state
                .files
                .get(path)
                .is_some_and(|r| r.kind == RecordKind::Block)
        {
            // A block in a shared file (e.g. /etc/hosts): take out our lines only.
            let outcome = match remove_block(&host.root().join(file.trim_start_matches('/')), name)
            {
                Ok(()) => {
                    state.files.remove(path);
                    Outcome::Done
                }
                Err(e) => Outcome::Failed(e.to_string()),
            };
            record(
                timeline,
                began,
                format!("remove block {name} from {file}"),
                outcome,
            );
            continue;
        }
        let outcome = match remove_file(&host.root().join(path.trim_start_matches('/'))) {
            Ok(()) => {
                state.files.remove(path);
                Outcome::Done
            }
            Err(e) => Outcome::Failed(e.to_string()),
        };
        record(timeline, began, format!("remove {path}"), outcome);
    }
    if !plan.units.is_empty() || plan.files.iter().any(|f| f.starts_with("/etc/systemd/")) {
        let began = Instant::now();
        let outcome = Outcome::of_job(host.systemd().daemon_reload().await);
        state.applied.remove(&AppliedKey::DaemonReload);
        record(timeline, began, "daemon-reload".to_owned(), outcome);
    }
    // Kernel settings, packages and swap stay as they are (their earlier values are
    // not known), but every record of what was applied goes, so a boot redoes it all.
    state.applied.clear();

    for dir in &plan.wipe {
        let began = Instant::now();
        let outcome = match remove_contents(&host.root().join(dir.trim_start_matches('/'))) {
            Ok(()) => {
                state
                    .files
                    .retain(|p, _| !Path::new(p).starts_with(Path::new(dir)));
                Outcome::Done
            }
            Err(e) => Outcome::Failed(e.to_string()),
        };
        record(
            timeline,
            began,
            format!("delete etcd data under {dir}"),
            outcome,
        );
    }
    for dir in &plan.directories {
        let real = host.root().join(dir.trim_start_matches('/'));
        match std::fs::remove_dir(&real) {
            Ok(()) => {
                state.created_directories.remove(dir);
                state.files.remove(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                state.created_directories.remove(dir);
                state.files.remove(dir);
            }
            // Not empty (data of the kubelet, the runtime...): kept, and still ours.
            Err(_) => {}
        }
    }
    // Directories the spec declared but nodewright did not create stay, unmanaged.
    state.files.retain(|_, r| r.kind != RecordKind::Directory);

    let began = Instant::now();
    let outcome = match AppliedSpec::remove(&host.state_dir()) {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::Failed(e.to_string()),
    };
    record(timeline, began, "remove the kept spec".to_owned(), outcome);
    if plan.remove_cache {
        let began = Instant::now();
        let cache = host.root().join(CACHE_DIR.trim_start_matches('/'));
        let outcome = match std::fs::remove_dir_all(&cache) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Outcome::Failed(e.to_string()),
            _ => Outcome::Done,
        };
        record(timeline, began, format!("remove {CACHE_DIR}"), outcome);
    }
    steps
}

fn remove_block(path: &Path, name: &str) -> std::io::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let kept = block::remove(&text, name);
    if kept == text {
        return Ok(());
    }
    // Nothing but our block was there: the file was ours too.
    if kept.trim().is_empty() {
        return remove_file(path);
    }
    let meta = std::fs::metadata(path)?;
    use std::os::unix::fs::MetadataExt;
    hostfs::write_atomic(
        path,
        kept.as_bytes(),
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid(),
    )
}

fn remove_file(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Deletes everything inside `dir`, keeping `dir` itself (it may be a mount point).
fn remove_contents(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if std::fs::symlink_metadata(&path)?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::{AppliedRecord, FileRecord};

    fn file(kind: &str) -> FileRecord {
        FileRecord {
            kind: RecordKind::parse(kind),
            digest: String::new(),
            mode: 0o644,
            uid: Some(0),
            gid: Some(0),
            secret: false,
            stat: None,
            source: None,
        }
    }

    fn state() -> State {
        let mut state = State::default();
        for path in ["/etc/app.conf", "/var/lib/etcd/marker", "/mnt/etcd-a/keep"] {
            state.files.insert(path.to_owned(), file("file"));
        }
        state.files.insert("/etc/app".to_owned(), file("directory"));
        for dir in ["/etc/app", "/etc/app/conf.d", "/mnt/etcd-a"] {
            state.created_directories.insert(dir.to_owned());
        }
        state.applied.insert(
            AppliedKey::Service(crate::spec::UnitName::try_from("app.service").unwrap()),
            AppliedRecord {
                inputs: Default::default(),
                at: String::new(),
                outcome: "done".to_owned(),
            },
        );
        state
            .protected
            .insert("/mnt/etcd-a".to_owned(), "etcd data of member a".to_owned());
        state
    }

    #[test]
    fn keeps_protected_paths_unless_asked() {
        let plan = plan(&state(), ResetOptions::default());
        assert_eq!(plan.units, ["app.service"]);
        assert_eq!(plan.files, ["/etc/app.conf"]);
        assert_eq!(plan.directories, ["/etc/app/conf.d", "/etc/app"]);
        let kept: Vec<&str> = plan.kept.iter().map(|k| k.path.as_str()).collect();
        assert_eq!(
            kept,
            ["/mnt/etcd-a/keep", "/var/lib/etcd/marker", "/mnt/etcd-a"]
        );
        assert!(plan.wipe.is_empty());
        assert!(plan.render().contains("Keep (protected):"));

        let all = super::plan(
            &state(),
            ResetOptions {
                include_protected: true,
                remove_cache: true,
            },
        );
        assert_eq!(all.files.len(), 3);
        assert_eq!(all.wipe, ["/mnt/etcd-a", "/var/lib/etcd"]);
        assert!(all.kept.is_empty());
        assert!(all.render().contains("DELETE ETCD DATA"));
    }

    #[tokio::test]
    async fn removes_what_it_installed_and_keeps_etcd_data() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        let at = |p: &str| dir.path().join(p.trim_start_matches('/'));
        for path in ["/etc/app.conf", "/var/lib/etcd/marker", "/mnt/etcd-a/keep"] {
            std::fs::create_dir_all(at(path).parent().unwrap()).unwrap();
            std::fs::write(at(path), "x").unwrap();
        }
        std::fs::create_dir_all(at("/etc/app/conf.d")).unwrap();
        std::fs::write(at("/var/lib/etcd/db"), "etcd's own data").unwrap();

        let mut state = state();
        let plan = plan(&state, ResetOptions::default());
        let mut timeline = Timeline::new();
        let steps = run(&plan, &host, &mut state, &mut timeline).await;
        assert!(steps.iter().all(|s| !s.failed), "{steps:?}");
        assert!(
            steps[0].outcome.starts_with("skipped: root is"),
            "{steps:?}"
        );
        assert!(!at("/etc/app.conf").exists());
        assert!(!at("/etc/app").exists());
        assert!(at("/etc").exists(), "not created by nodewright: kept");
        assert!(at("/var/lib/etcd/marker").exists());
        assert!(at("/var/lib/etcd/db").exists());
        assert!(at("/mnt/etcd-a/keep").exists());
        assert!(state.applied.is_empty());
        let left: Vec<&String> = state.files.keys().collect();
        assert_eq!(left, ["/mnt/etcd-a/keep", "/var/lib/etcd/marker"]);
        assert_eq!(
            state.created_directories.iter().collect::<Vec<_>>(),
            ["/mnt/etcd-a"]
        );

        // Again, with etcd data included: the data goes, the mount point stays.
        let plan = super::plan(
            &state,
            ResetOptions {
                include_protected: true,
                remove_cache: false,
            },
        );
        run(&plan, &host, &mut state, &mut timeline).await;
        assert!(!at("/var/lib/etcd/db").exists());
        assert!(!at("/var/lib/etcd/marker").exists());
        assert!(at("/var/lib/etcd").is_dir());
        assert!(
            !at("/mnt/etcd-a").exists(),
            "created by nodewright and empty"
        );
        assert!(state.files.is_empty());
    }
}
