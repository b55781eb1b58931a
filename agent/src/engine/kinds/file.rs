//! Files whose content nodewright holds in memory (configs, units, certificates):
//! written atomically when missing or different, their digest and stat recorded so
//! the next run need not read them again while the stat is unchanged.

use serde::Serialize;

use super::permissions::{Perms, SetPermissions};
use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome, blocking};
use crate::engine::plan::PlanError;
use crate::engine::planner::{Planner, short, wrong_kind};
use crate::engine::state::{FileRecord, State};
use crate::host::fs::{self as hostfs, Existing};
use crate::model::DesiredFile;
use crate::spec::AbsPath;

/// Plans every desired file but the static pod manifests (planned once every file
/// they read is, see `static_pod`).
pub(crate) fn plan(p: &mut Planner) -> Result<(), PlanError> {
    let desired = p.desired;
    for file in &desired.files {
        if desired.static_pod(file.path.as_str()).is_some() {
            continue;
        }
        p.ensure_parents(&file.path)?;
        let perms = p.perms(&file.path, &file.ownership)?;
        let after = p.parent_steps(&file.path);
        let reason = match p.inspect(&file.path)? {
            Existing::Missing => file.issued.clone().unwrap_or_else(|| "missing".to_owned()),
            Existing::File(stat) => {
                let digest = p.digest_of(&file.path, &stat)?;
                if digest != file.content.sha256() {
                    // An issued file says why it was issued (e.g. renewal) instead.
                    file.issued.clone().unwrap_or_else(|| {
                        format!(
                            "content differs (sha256 {} on disk, {} wanted)",
                            short(&digest),
                            short(file.content.sha256())
                        )
                    })
                } else {
                    p.unchanged.insert(
                        file.path.to_string(),
                        FileRecord {
                            secret: file.secret,
                            ..FileRecord::file(digest, perms, &stat)
                        },
                    );
                    if let Some(reason) = perms.differ(stat.mode, stat.uid, stat.gid) {
                        let set = SetPermissions {
                            path: file.path.clone(),
                            perms,
                        };
                        p.push_write(&file.path, set, reason, after);
                    }
                    continue;
                }
            }
            Existing::Symlink { target } => {
                format!("is a symlink to {}; replacing it", target.display())
            }
            other => return Err(wrong_kind(&file.path, &other, "a file")),
        };
        let write = WriteFile {
            path: file.path.clone(),
            file: Box::new(file.clone()),
            perms,
        };
        p.push_write(&file.path, write, reason, after);
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WriteFile {
    pub path: AbsPath,
    #[serde(skip)]
    pub file: Box<DesiredFile>,
    pub perms: Perms,
}

/// What writing `file` is called in the plan: a certificate made on the node is issued.
pub(super) fn verb_of(file: &DesiredFile) -> &'static str {
    if file.issued.is_some() {
        "issue"
    } else {
        "write"
    }
}

impl Change for WriteFile {
    fn verb(&self) -> &'static str {
        verb_of(&self.file)
    }

    fn target(&self) -> String {
        self.path.to_string()
    }

    fn replaces(&self) -> Option<&AbsPath> {
        Some(&self.path)
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        Outcome::of(write(cx, &self.file, self.perms).await)
    }

    fn record(&self, finished: &Finished<'_>, state: &mut State) {
        record_written(finished, state, &self.file, self.perms);
    }
}

/// Writes a desired file's bytes atomically (temp file beside it, fsync, rename).
pub(crate) async fn write(cx: &Context, file: &DesiredFile, perms: Perms) -> Result<(), String> {
    let real = cx.host.path(&file.path);
    let bytes = file.content.clone();
    let Perms { mode, uid, gid } = perms;
    blocking(move || hostfs::write_atomic(&real, bytes.bytes(), mode, uid, gid)).await
}

/// Records a written file with its digest and the stat it has now.
pub(crate) fn record_written(
    finished: &Finished<'_>,
    state: &mut State,
    file: &DesiredFile,
    perms: Perms,
) {
    if let Ok(Existing::File(stat)) = hostfs::inspect(&finished.host.path(&file.path)) {
        state.files.insert(
            file.path.to_string(),
            FileRecord {
                secret: file.secret,
                ..FileRecord::file(file.content.sha256().to_owned(), perms, &stat)
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::keys::RecordKind;
    use crate::engine::kinds::testing::{Node, at};
    use crate::host::fs::{self as hostfs, Existing};
    use crate::model::Ownership;

    fn app(node: &mut Node, text: &'static str) {
        node.want(|b| {
            b.file("t", at("/etc/app/app.conf"), text, Ownership::root(0o644))
                .unwrap();
            b.secret_file(
                "t",
                at("/etc/app/token"),
                "s3cret\n",
                Ownership::root(0o600),
            )
            .unwrap();
        });
    }

    #[tokio::test]
    async fn writes_missing_files_and_records_digest_and_stat() {
        let mut node = Node::new();
        app(&mut node, "a = 1\n");
        assert_eq!(
            node.planned().await,
            [
                "create directory /etc: missing (parent of /etc/app/app.conf)",
                "create directory /etc/app: missing (parent of /etc/app/app.conf)",
                "write /etc/app/app.conf: missing",
                "write /etc/app/token: missing",
            ]
        );
        node.converge().await;
        assert_eq!(node.read("/etc/app/app.conf"), "a = 1\n");
        let record = &node.state.files["/etc/app/app.conf"];
        assert_eq!(record.kind, RecordKind::File);
        assert_eq!(record.digest, crate::spec::digest(b"a = 1\n"));
        assert_eq!(
            (record.mode, record.uid, record.gid),
            (0o644, Some(0), Some(0))
        );
        let Existing::File(stat) = hostfs::inspect(&node.real("/etc/app/app.conf")).unwrap() else {
            panic!("not a file")
        };
        assert!(record.stat.as_ref().unwrap().matches(&stat));
        assert!(node.state.files["/etc/app/token"].secret);
        assert!(!record.secret);
        assert!(node.plan().await.is_empty());
    }

    #[tokio::test]
    async fn a_changed_spec_or_a_drifted_file_is_rewritten_with_the_digests_named() {
        let mut node = Node::new();
        app(&mut node, "a = 1\n");
        node.converge().await;
        app(&mut node, "a = 2\n");
        let old = crate::spec::digest(b"a = 1\n");
        let new = crate::spec::digest(b"a = 2\n");
        assert_eq!(
            node.planned().await,
            [format!(
                "write /etc/app/app.conf: content differs (sha256 {} on disk, {} wanted)",
                &old[..12],
                &new[..12]
            )]
        );
        node.converge().await;
        assert_eq!(node.read("/etc/app/app.conf"), "a = 2\n");

        // Edited behind nodewright's back: the stat moved, so it is read again.
        node.put("/etc/app/app.conf", "a = 3\n");
        assert_eq!(node.plan().await.steps.len(), 1);
        node.converge().await;
        assert_eq!(node.read("/etc/app/app.conf"), "a = 2\n");

        // A symlink where the file goes is replaced.
        std::fs::remove_file(node.real("/etc/app/app.conf")).unwrap();
        std::os::unix::fs::symlink("/dev/null", node.real("/etc/app/app.conf")).unwrap();
        assert_eq!(
            node.planned().await,
            ["write /etc/app/app.conf: is a symlink to /dev/null; replacing it"]
        );
        node.converge().await;
        assert_eq!(node.read("/etc/app/app.conf"), "a = 2\n");
    }

    #[tokio::test]
    async fn a_killed_write_leaves_no_partial_file() {
        let mut node = Node::new();
        app(&mut node, "a = 1\n");
        let plan = node.plan().await;
        // A temp file from a write that was killed before its rename.
        std::fs::create_dir_all(node.real("/etc/app")).unwrap();
        let temp = hostfs::temp_path(&node.real("/etc/app/app.conf"));
        std::fs::write(&temp, "a = ").unwrap();
        node.apply(&plan).await;
        assert!(!temp.exists());
        assert_eq!(node.read("/etc/app/app.conf"), "a = 1\n");
    }
}
