//! Repair is the normal plan and apply, over the kept spec, with two differences:
//! nothing is trusted from the stat cache (every managed file is re-read), and nothing
//! under a protected path (etcd data) is planned at all.

use super::protect::{Guard, Protected};
use super::state::State;
use crate::model::DesiredState;

/// What repair plans from.
#[derive(Debug, Clone)]
pub struct RepairView {
    /// The state to plan against: no stat records, no protected paths.
    pub state: State,
    /// Paths the spec declares under a protected path: left alone.
    pub left_alone: Vec<(String, Guard)>,
}

/// Narrows `desired` to what repair may touch, and gives the state to plan against.
pub fn view(state: &State, desired: &mut DesiredState) -> RepairView {
    let protected = Protected::of(state, Some(desired));
    let mut left_alone = Vec::new();
    let mut keep = |path: &str| match protected.covering(path) {
        Some(guard) => {
            left_alone.push((path.to_owned(), guard));
            false
        }
        None => true,
    };
    desired.files.retain(|f| keep(f.path.as_str()));
    desired.directories.retain(|d| keep(d.path.as_str()));
    desired.symlinks.retain(|l| keep(l.path.as_str()));
    desired.asset_files.retain(|a| keep(a.path.as_str()));

    let mut planning = state.clone();
    // Records under protected paths would otherwise read as "no longer in the spec".
    planning
        .files
        .retain(|path, _| protected.covering(path).is_none());
    for record in planning.files.values_mut() {
        record.stat = None;
    }
    RepairView {
        state: planning,
        left_alone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::{FileRecord, StatRecord};
    use crate::model::{Ownership, StateBuilder};
    use crate::spec::AbsPath;

    #[test]
    fn drops_protected_paths_and_the_stat_cache() {
        let mut builder = StateBuilder::default();
        let path = |p: &str| AbsPath::try_from(p).unwrap();
        builder
            .file("t", path("/etc/app.conf"), "a", Ownership::root(0o644))
            .unwrap();
        builder
            .file(
                "t",
                path("/var/lib/etcd/marker"),
                "m",
                Ownership::root(0o600),
            )
            .unwrap();
        builder
            .directory("t", path("/mnt/etcd-a/member"), Ownership::root(0o700))
            .unwrap();
        builder.protect(path("/mnt/etcd-a"), "etcd data of member a");
        let mut desired = builder.finish().unwrap();

        let record = |digest: &str| FileRecord {
            kind: crate::engine::keys::RecordKind::File,
            digest: digest.to_owned(),
            mode: 0o644,
            uid: Some(0),
            gid: Some(0),
            secret: false,
            stat: Some(StatRecord {
                size: 1,
                mtime_ns: 1,
                ctime_ns: 1,
                inode: 1,
            }),
            source: None,
        };
        let mut state = State::default();
        state.files.insert("/etc/app.conf".to_owned(), record("d1"));
        state
            .files
            .insert("/var/lib/etcd/marker".to_owned(), record("d2"));

        let view = view(&state, &mut desired);
        let left: Vec<&str> = view.left_alone.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(left, ["/var/lib/etcd/marker", "/mnt/etcd-a/member"]);
        assert_eq!(view.left_alone[1].1.path, "/mnt/etcd-a");
        assert_eq!(desired.files.len(), 1);
        assert!(desired.directories.is_empty());
        assert_eq!(
            view.state.files.keys().collect::<Vec<_>>(),
            ["/etc/app.conf"]
        );
        assert!(view.state.files["/etc/app.conf"].stat.is_none());
        // The real state keeps its records.
        assert!(state.files["/etc/app.conf"].stat.is_some());
    }
}
