//! Verify: compare every path nodewright manages with what it recorded when it
//! installed it: content (sha256), kind, mode, owner, symlink target.
//!
//! Works from the state's file records alone, so whatever the engine records (spec
//! files, units, files installed from assets) is covered without knowing where it came
//! from. `verify` re-reads every file; `status` may trust an unchanged stat (the same
//! shortcut a no-op run takes) to stay quick.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::keys::{RecordKind, split_block_key};
use super::kinds::block;
use super::protect::Protected;
use super::state::{FileRecord, State};
use crate::host::Host;
use crate::host::fs::{self as hostfs, Existing};

/// How file contents are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Re-hash every file, whatever its stat says.
    Rehash,
    /// Re-hash only files whose stat differs from the one recorded with the digest.
    TrustStat,
}

/// One way a path differs from its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum Problem {
    Missing,
    WrongKind {
        recorded: String,
        found: String,
    },
    /// Digests are left out for secret files.
    Changed {
        #[serde(skip_serializing_if = "Option::is_none")]
        recorded: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        found: Option<String>,
    },
    WrongMode {
        recorded: String,
        found: String,
    },
    WrongOwner {
        recorded: String,
        found: String,
    },
    WrongTarget {
        recorded: String,
        found: String,
    },
    Unreadable {
        error: String,
    },
}

impl Problem {
    pub fn describe(&self) -> String {
        match self {
            Self::Missing => "missing".to_owned(),
            Self::WrongKind { recorded, found } => format!("is {found}, recorded as {recorded}"),
            Self::Changed {
                recorded: Some(recorded),
                found: Some(found),
            } => format!(
                "content changed (sha256 {} on disk, {} recorded)",
                short(found),
                short(recorded)
            ),
            Self::Changed { .. } => {
                "content changed (a secret file: digests are not shown)".to_owned()
            }
            Self::WrongMode { recorded, found } => format!("mode {found}, recorded {recorded}"),
            Self::WrongOwner { recorded, found } => {
                format!("owner {found}, recorded {recorded}")
            }
            Self::WrongTarget { recorded, found } => {
                format!("points to {found}, recorded {recorded}")
            }
            Self::Unreadable { error } => format!("cannot be read: {error}"),
        }
    }
}

/// A managed path that differs from its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    pub path: String,
    /// `file`, `directory` or `symlink`, as recorded.
    pub kind: String,
    pub problems: Vec<Problem>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
    /// The protected path (etcd data) this lies under: `repair` leaves it alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected: Option<String>,
}

impl Drift {
    pub fn describe(&self) -> String {
        let problems: Vec<String> = self.problems.iter().map(Problem::describe).collect();
        format!("{}: {}", self.path, problems.join("; "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub check: Check,
    /// How many managed paths were checked.
    pub checked: usize,
    pub drift: Vec<Drift>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.drift.is_empty()
    }
}

/// Checks every managed path against its record. Reads only.
pub fn verify(host: &Host, state: &State, check: Check) -> Report {
    let protected = Protected::of(state, None);
    let records: Vec<(&String, &FileRecord)> = state.files.iter().collect();
    // Hashing big binaries dominates: spread the records over a few threads.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let chunk = records.len().div_ceil(workers).max(1);
    let mut found: BTreeMap<String, Drift> = BTreeMap::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = records
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .filter_map(|(path, record)| check_one(host, path, record, check))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            // A panicking check is a bug; report nothing rather than crash the command.
            for mut drift in handle.join().unwrap_or_default() {
                drift.protected = protected.covering(&drift.path).map(|g| g.path);
                found.insert(drift.path.clone(), drift);
            }
        }
    });
    Report {
        check,
        checked: records.len(),
        drift: found.into_values().collect(),
    }
}

fn check_one(host: &Host, path: &str, record: &FileRecord, check: Check) -> Option<Drift> {
    if record.kind == RecordKind::Block {
        return check_block(host, path, record);
    }
    let real = host.root().join(path.trim_start_matches('/'));
    let problems = match hostfs::inspect(&real) {
        Err(e) => vec![Problem::Unreadable {
            error: e.to_string(),
        }],
        Ok(existing) => problems_of(&real, record, &existing, check),
    };
    (!problems.is_empty()).then(|| Drift {
        path: path.to_owned(),
        kind: record.kind.to_string(),
        problems,
        secret: record.secret,
        protected: None,
    })
}

/// A block nodewright keeps inside a shared file (`<path>#<name>`): its lines must be
/// there as recorded; the rest of the file is not ours to check.
fn check_block(host: &Host, key: &str, record: &FileRecord) -> Option<Drift> {
    let (path, name) = split_block_key(key)?;
    let real = host.root().join(path.trim_start_matches('/'));
    let problems = match std::fs::read_to_string(&real) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![Problem::Missing],
        Err(e) => vec![Problem::Unreadable {
            error: e.to_string(),
        }],
        Ok(text) => match block::current(&text, name) {
            None => vec![Problem::Missing],
            Some(lines) if block::digest(lines) == record.digest => vec![],
            Some(lines) => vec![Problem::Changed {
                recorded: Some(record.digest.clone()),
                found: Some(block::digest(lines)),
            }],
        },
    };
    (!problems.is_empty()).then(|| Drift {
        path: key.to_owned(),
        kind: record.kind.to_string(),
        problems,
        secret: record.secret,
        protected: None,
    })
}

fn problems_of(
    real: &Path,
    record: &FileRecord,
    existing: &Existing,
    check: Check,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let wrong_kind = |found: &str| {
        vec![Problem::WrongKind {
            recorded: record.kind.to_string(),
            found: found.to_owned(),
        }]
    };
    match (record.kind.as_str(), existing) {
        (_, Existing::Missing) => return vec![Problem::Missing],
        ("file", Existing::File(stat)) => {
            let trusted =
                check == Check::TrustStat && record.stat.as_ref().is_some_and(|s| s.matches(stat));
            if !trusted {
                match hostfs::sha256_file(real) {
                    Ok(digest) if digest == record.digest => {}
                    Ok(digest) => problems.push(Problem::Changed {
                        recorded: (!record.secret).then(|| record.digest.clone()),
                        found: (!record.secret).then_some(digest),
                    }),
                    Err(e) => problems.push(Problem::Unreadable {
                        error: e.to_string(),
                    }),
                }
            }
            perms(record, stat.mode, stat.uid, stat.gid, &mut problems);
        }
        ("directory", Existing::Directory { mode, uid, gid }) => {
            perms(record, *mode, *uid, *gid, &mut problems);
        }
        ("symlink", Existing::Symlink { target }) => {
            let found = target.display().to_string();
            if found != record.digest {
                problems.push(Problem::WrongTarget {
                    recorded: record.digest.clone(),
                    found,
                });
            }
        }
        (_, Existing::File(_)) => return wrong_kind("a file"),
        (_, Existing::Directory { .. }) => return wrong_kind("a directory"),
        (_, Existing::Symlink { .. }) => return wrong_kind("a symlink"),
        (_, Existing::Other) => return wrong_kind("a special file"),
    }
    problems
}

fn perms(record: &FileRecord, mode: u32, uid: u32, gid: u32, problems: &mut Vec<Problem>) {
    if mode != record.mode {
        problems.push(Problem::WrongMode {
            recorded: format!("{:04o}", record.mode),
            found: format!("{mode:04o}"),
        });
    }
    let owner_differs =
        record.uid.is_some_and(|u| u != uid) || record.gid.is_some_and(|g| g != gid);
    if owner_differs {
        problems.push(Problem::WrongOwner {
            recorded: format!(
                "{}:{}",
                record.uid.map_or("?".to_owned(), |u| u.to_string()),
                record.gid.map_or("?".to_owned(), |g| g.to_string())
            ),
            found: format!("{uid}:{gid}"),
        });
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::StatRecord;
    use std::os::unix::fs::PermissionsExt;

    fn record_file(host: &Host, state: &mut State, path: &str, bytes: &[u8], secret: bool) {
        let real = host.root().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        let (uid, gid) = hostfs::current_ids();
        hostfs::write_atomic(&real, bytes, 0o644, uid, gid).unwrap();
        let Existing::File(stat) = hostfs::inspect(&real).unwrap() else {
            panic!("not a file")
        };
        state.files.insert(
            path.to_owned(),
            FileRecord {
                kind: RecordKind::File,
                digest: crate::spec::digest(bytes),
                mode: 0o644,
                uid: Some(uid),
                gid: Some(gid),
                secret,
                stat: Some(StatRecord::of(&stat)),
                source: None,
            },
        );
    }

    #[test]
    fn blocks_in_shared_files_are_checked_by_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        let hosts = dir.path().join("etc/hosts");
        std::fs::create_dir_all(hosts.parent().unwrap()).unwrap();
        let lines = "10.0.1.5\tapi.internal";
        std::fs::write(
            &hosts,
            block::replace("127.0.0.1 localhost\n", "api", Some(lines)),
        )
        .unwrap();
        let mut state = State::default();
        state.files.insert(
            "/etc/hosts#api".to_owned(),
            FileRecord {
                kind: RecordKind::Block,
                digest: block::digest(lines),
                mode: 0o644,
                uid: None,
                gid: None,
                secret: false,
                stat: None,
                source: None,
            },
        );
        assert!(verify(&host, &state, Check::Rehash).is_clean());
        // Others may edit the rest of the file.
        let text = std::fs::read_to_string(&hosts).unwrap();
        std::fs::write(&hosts, format!("{text}10.9.9.9 other\n")).unwrap();
        assert!(verify(&host, &state, Check::Rehash).is_clean());
        // Our lines changed, then gone.
        std::fs::write(
            &hosts,
            block::replace(&text, "api", Some("10.0.1.6\tapi.internal")),
        )
        .unwrap();
        let report = verify(&host, &state, Check::Rehash);
        assert!(
            matches!(report.drift[0].problems[0], Problem::Changed { .. }),
            "{report:?}"
        );
        std::fs::write(&hosts, block::remove(&text, "api")).unwrap();
        let report = verify(&host, &state, Check::Rehash);
        assert!(
            matches!(report.drift[0].problems[0], Problem::Missing),
            "{report:?}"
        );
    }

    #[test]
    fn finds_each_kind_of_drift() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        let mut state = State::default();
        for name in ["same", "changed", "chmod", "gone", "secret"] {
            record_file(
                &host,
                &mut state,
                &format!("/etc/app/{name}"),
                b"original\n",
                name == "secret",
            );
        }
        state.files.insert(
            "/etc/app/link".to_owned(),
            FileRecord {
                kind: RecordKind::Symlink,
                digest: "/usr/bin/true".to_owned(),
                mode: 0o777,
                uid: None,
                gid: None,
                secret: false,
                stat: None,
                source: None,
            },
        );
        std::os::unix::fs::symlink("/usr/bin/false", dir.path().join("etc/app/link")).unwrap();
        let at = |n: &str| dir.path().join("etc/app").join(n);
        std::fs::write(at("changed"), b"tampered\n").unwrap();
        std::fs::write(at("secret"), b"tampered\n").unwrap();
        std::fs::set_permissions(at("chmod"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(at("gone")).unwrap();

        let report = verify(&host, &state, Check::Rehash);
        assert_eq!(report.checked, 6);
        let described: Vec<String> = report.drift.iter().map(Drift::describe).collect();
        assert_eq!(described.len(), 5, "{described:#?}");
        assert!(described[0].starts_with("/etc/app/changed: content changed (sha256 "));
        assert_eq!(described[1], "/etc/app/chmod: mode 0600, recorded 0644");
        assert_eq!(described[2], "/etc/app/gone: missing");
        assert_eq!(
            described[3],
            "/etc/app/link: points to /usr/bin/false, recorded /usr/bin/true"
        );
        assert_eq!(
            described[4],
            "/etc/app/secret: content changed (a secret file: digests are not shown)"
        );
        // A secret file's digests are not shown, in text or JSON.
        let secret = serde_json::to_value(&report.drift[4]).unwrap();
        assert_eq!(
            secret["problems"],
            serde_json::json!([{ "problem": "changed" }])
        );
        assert_eq!(secret["secret"], true);
    }

    #[test]
    fn rehash_catches_what_a_preserved_stat_hides() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        let mut state = State::default();
        record_file(
            &host,
            &mut state,
            "/usr/local/bin/tool",
            b"binary v1",
            false,
        );
        // Same size, and a record whose stat is made to match what is on disk now:
        // as if the change had been made behind the stat's back (e.g. on the raw disk).
        let real = dir.path().join("usr/local/bin/tool");
        std::fs::write(&real, b"binary v2").unwrap();
        let Existing::File(stat) = hostfs::inspect(&real).unwrap() else {
            panic!()
        };
        state.files.get_mut("/usr/local/bin/tool").unwrap().stat = Some(StatRecord::of(&stat));

        assert!(verify(&host, &state, Check::TrustStat).is_clean());
        let report = verify(&host, &state, Check::Rehash);
        assert_eq!(report.drift.len(), 1);
        assert!(matches!(
            report.drift[0].problems[0],
            Problem::Changed { .. }
        ));
    }

    #[test]
    fn drift_under_a_protected_path_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        let mut state = State::default();
        record_file(&host, &mut state, "/var/lib/etcd/marker", b"x", false);
        std::fs::remove_file(dir.path().join("var/lib/etcd/marker")).unwrap();
        let report = verify(&host, &state, Check::Rehash);
        assert_eq!(report.drift[0].protected.as_deref(), Some("/var/lib/etcd"));
    }
}
