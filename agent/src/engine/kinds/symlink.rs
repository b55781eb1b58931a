//! Symbolic links (e.g. a unit linked by a link to /dev/null): replaced atomically
//! when missing or pointing elsewhere.

use serde::Serialize;

use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome, blocking};
use crate::engine::keys::RecordKind;
use crate::engine::plan::PlanError;
use crate::engine::planner::{Planner, describe};
use crate::engine::state::{FileRecord, State};
use crate::host::fs::{self as hostfs, Existing};
use crate::spec::AbsPath;

pub(crate) fn plan(p: &mut Planner) -> Result<(), PlanError> {
    for link in &p.desired.symlinks {
        p.ensure_parents(&link.path)?;
        let after = p.parent_steps(&link.path);
        let reason = match p.inspect(&link.path)? {
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
        let step = Symlink {
            path: link.path.clone(),
            target: link.target.clone(),
        };
        p.push_write(&link.path, step, reason, after);
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Symlink {
    pub path: AbsPath,
    pub target: AbsPath,
}

impl Change for Symlink {
    fn verb(&self) -> &'static str {
        "link"
    }

    fn target(&self) -> String {
        self.path.to_string()
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        let real = cx.host.path(&self.path);
        let target = self.target.as_path().to_owned();
        Outcome::of(blocking(move || hostfs::symlink_atomic(&real, &target)).await)
    }

    fn record(&self, _finished: &Finished<'_>, state: &mut State) {
        state.files.insert(
            self.path.to_string(),
            FileRecord {
                kind: RecordKind::Symlink,
                digest: self.target.to_string(),
                mode: 0o777,
                uid: None,
                gid: None,
                secret: false,
                stat: None,
                source: None,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::keys::RecordKind;
    use crate::engine::kinds::testing::{Node, at};

    #[tokio::test]
    async fn links_are_made_repointed_and_recorded_by_target() {
        let mut node = Node::new();
        let link = "/opt/app/current";
        node.want(|b| b.symlink("t", at(link), at("/opt/app/v2")).unwrap());
        let planned = node.planned().await;
        assert_eq!(planned.last().unwrap(), &format!("link {link}: missing"));
        node.converge().await;
        assert_eq!(
            std::fs::read_link(node.real(link)).unwrap().to_str(),
            Some("/opt/app/v2")
        );
        let record = &node.state.files[link];
        assert_eq!(record.kind, RecordKind::Symlink);
        assert_eq!(record.digest, "/opt/app/v2");
        assert!(node.plan().await.is_empty());

        std::fs::remove_file(node.real(link)).unwrap();
        std::os::unix::fs::symlink("/opt/app/v1", node.real(link)).unwrap();
        assert_eq!(
            node.planned().await,
            [format!("link {link}: points to /opt/app/v1")]
        );
        node.converge().await;
        std::fs::remove_file(node.real(link)).unwrap();
        node.put(link, "#!/bin/sh\n");
        assert_eq!(
            node.planned().await,
            [format!("link {link}: is a file; replacing it")]
        );
        node.converge().await;
        assert_eq!(
            std::fs::read_link(node.real(link)).unwrap().to_str(),
            Some("/opt/app/v2")
        );

        std::fs::remove_file(node.real(link)).unwrap();
        std::fs::create_dir(node.real(link)).unwrap();
        let err = crate::engine::plan(&node.desired, &node.host, &node.state)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{link}: is a directory; remove it by hand")
        );
    }
}
