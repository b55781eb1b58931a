//! Protected paths: data nodewright must never delete or rewrite on its own, above all
//! etcd's data. The model declares them (the etcd volume's mount point), the state
//! records them (so `reset` knows them even without a spec), and a few well-known
//! locations are protected always. Removals of paths no longer in the spec, `repair`
//! and `reset` consult this before touching anything.

use std::collections::BTreeMap;
use std::path::Path;

use super::state::State;
use crate::model::DesiredState;

/// Protected on every node, whatever the spec or the state says.
pub const BUILTIN: &[(&str, &str)] = &[(
    "/var/lib/etcd",
    "etcd data (the default etcd data directory)",
)];

/// One protected path and why it is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub path: String,
    pub reason: String,
}

/// The protected paths that apply to a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    paths: BTreeMap<String, String>,
}

impl Protected {
    /// The built-in paths, those the state recorded, and those `desired` declares.
    pub fn of(state: &State, desired: Option<&DesiredState>) -> Self {
        let mut paths: BTreeMap<String, String> = BUILTIN
            .iter()
            .map(|(p, r)| ((*p).to_owned(), (*r).to_owned()))
            .collect();
        paths.extend(state.protected.clone());
        if let Some(desired) = desired {
            paths.extend(
                desired
                    .protected
                    .iter()
                    .map(|p| (p.path.to_string(), p.reason.clone())),
            );
        }
        Self { paths }
    }

    /// The protected path that `path` is, or lies under.
    pub fn covering(&self, path: &str) -> Option<Guard> {
        self.paths
            .iter()
            .find(|(protected, _)| Path::new(path).starts_with(Path::new(protected)))
            .map(|(p, r)| Guard {
                path: p.clone(),
                reason: r.clone(),
            })
    }

    /// Whether `path` is a parent of a protected path (removing it recursively would
    /// remove protected data).
    pub fn holds_protected(&self, path: &str) -> Option<Guard> {
        self.paths
            .iter()
            .find(|(protected, _)| Path::new(protected).starts_with(Path::new(path)))
            .map(|(p, r)| Guard {
                path: p.clone(),
                reason: r.clone(),
            })
    }

    pub fn iter(&self) -> impl Iterator<Item = Guard> + '_ {
        self.paths.iter().map(|(p, r)| Guard {
            path: p.clone(),
            reason: r.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ProtectedPath, StateBuilder};
    use crate::spec::AbsPath;

    #[test]
    fn builtin_state_and_model_paths_are_protected() {
        let mut state = State::default();
        state.protected.insert(
            "/mnt/etcd-prod-a".to_owned(),
            "etcd data of member a".to_owned(),
        );
        let mut builder = StateBuilder::default();
        builder.protect(
            AbsPath::try_from("/mnt/etcd-events-a").unwrap(),
            "etcd-events data",
        );
        let desired = builder.finish().unwrap();
        assert_eq!(
            desired.protected,
            [ProtectedPath {
                path: AbsPath::try_from("/mnt/etcd-events-a").unwrap(),
                reason: "etcd-events data".to_owned()
            }]
        );
        let protected = Protected::of(&state, Some(&desired));

        let guard = protected.covering("/var/lib/etcd/member/snap/db").unwrap();
        assert_eq!(guard.path, "/var/lib/etcd");
        assert_eq!(
            protected.covering("/mnt/etcd-prod-a").unwrap().reason,
            "etcd data of member a"
        );
        assert!(protected.covering("/mnt/etcd-events-a/member").is_some());
        // A sibling whose name merely starts the same is not covered.
        assert!(protected.covering("/var/lib/etcd-backup/x").is_none());
        assert!(protected.covering("/etc/kubernetes/admin.conf").is_none());
        assert_eq!(
            protected.holds_protected("/mnt").unwrap().path,
            "/mnt/etcd-events-a"
        );
        assert!(protected.holds_protected("/var/lib/kubelet").is_none());
        // Without the desired state, the state's and built-in paths still hold.
        assert!(
            Protected::of(&state, None)
                .covering("/mnt/etcd-events-a")
                .is_none()
        );
        assert!(
            Protected::of(&state, None)
                .covering("/mnt/etcd-prod-a/x")
                .is_some()
        );
    }
}
