//! Static pod manifests: written with the digest of the files their pod reads, so a
//! changed certificate or config rewrites exactly the manifests of the pods that read
//! it (and the kubelet re-creates those pods); unchanged inputs leave them byte for
//! byte. The digest is taken again from the files on disk when the manifest is
//! written, after the steps that write them: what the kubelet's pod will read.

use std::collections::BTreeMap;

use serde::Serialize;

use super::file::{record_written, write};
use super::permissions::{Perms, SetPermissions};
use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome};
use crate::engine::keys::AppliedKey;
use crate::engine::plan::PlanError;
use crate::engine::planner::{Planner, short, wrong_kind};
use crate::engine::state::{AppliedRecord, FileRecord, State};
use crate::engine::trigger::Trigger;
use crate::host::fs::{self as hostfs, Existing};
use crate::model::{Content, DesiredFile, INPUTS_PLACEHOLDER, inputs_digest};
use crate::spec::AbsPath;

/// Plans the manifests, with the digest of what their inputs will hold once the plan
/// is applied.
pub(crate) fn plan(p: &mut Planner) -> Result<(), PlanError> {
    let desired = p.desired;
    for pod in &desired.static_pods {
        let Some(template) = desired.file(pod.manifest.as_str()) else {
            continue;
        };
        let inputs = p.input_digests(&pod.inputs);
        let ordered: Vec<(String, String)> = pod
            .inputs
            .iter()
            .map(|path| {
                let digest = inputs.get(path.as_str()).cloned().unwrap_or_default();
                (path.to_string(), digest)
            })
            .collect();
        let write = StaticPodWrite {
            template: template.content.clone(),
            inputs: pod.inputs.clone(),
            written_with: BTreeMap::new(),
        };
        let mut file = template.clone();
        file.content = write.fill(&ordered);
        p.ensure_parents(&file.path)?;
        let perms = p.perms(&file.path, &file.ownership)?;
        let mut after = p.parent_steps(&file.path);
        after.extend(p.steps_writing(pod.inputs.iter().map(|p| p.to_string())));
        let reason = match p.inspect(&file.path)? {
            Existing::Missing => "missing".to_owned(),
            Existing::File(stat) => {
                let digest = p.digest_of(&file.path, &stat)?;
                if digest == file.content.sha256() {
                    p.unchanged.insert(
                        file.path.to_string(),
                        FileRecord::file(digest, perms, &stat),
                    );
                    if let Some(reason) = perms.differ(stat.mode, stat.uid, stat.gid) {
                        let set = SetPermissions {
                            path: file.path.clone(),
                            perms,
                        };
                        p.push(set, reason, after);
                    }
                    continue;
                }
                let trigger = Trigger::new(AppliedKey::StaticPod(pod.manifest.clone()), inputs);
                match p.changed(&trigger) {
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
            other => return Err(wrong_kind(&file.path, &other, "a file")),
        };
        let step = WriteStaticPod {
            path: file.path.clone(),
            file: Box::new(file),
            perms,
            pod: Box::new(write),
        };
        p.push_write(&pod.manifest, step, reason, after);
    }
    Ok(())
}

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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WriteStaticPod {
    pub path: AbsPath,
    /// The manifest as planned (apply fills the digest in again from the disk).
    #[serde(skip)]
    pub file: Box<DesiredFile>,
    pub perms: Perms,
    #[serde(skip)]
    pub pod: Box<StaticPodWrite>,
}

impl WriteStaticPod {
    /// Takes the inputs' digests as they are on disk now and fills them in.
    async fn fill_from_disk(&mut self, cx: &Context) -> Result<(), String> {
        let paths: Vec<(String, std::path::PathBuf)> = self
            .pod
            .inputs
            .iter()
            .map(|p| (p.to_string(), cx.host.path(p)))
            .collect();
        let read = tokio::task::spawn_blocking(move || {
            paths
                .into_iter()
                .map(|(path, real)| match hostfs::sha256_file(&real) {
                    Ok(digest) => Ok((path, digest)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Ok((path, "absent".to_owned()))
                    }
                    Err(e) => Err(format!("reading {path}: {e}")),
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .await;
        let digests = match read {
            Ok(result) => result?,
            Err(e) => return Err(format!("internal error: {e}")),
        };
        self.file.content = self.pod.fill(&digests);
        self.pod.written_with = digests.into_iter().collect();
        Ok(())
    }
}

impl Change for WriteStaticPod {
    fn verb(&self) -> &'static str {
        super::file::verb_of(&self.file)
    }

    fn target(&self) -> String {
        self.path.to_string()
    }

    fn replaces(&self) -> Option<&AbsPath> {
        Some(&self.path)
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        if let Err(error) = self.fill_from_disk(cx).await {
            return Outcome::Failed(error);
        }
        Outcome::of(write(cx, &self.file, self.perms).await)
    }

    fn record(&self, finished: &Finished<'_>, state: &mut State) {
        // What the manifest was written with, so a later plan can name the input that
        // changed.
        state.applied.insert(
            AppliedKey::StaticPod(self.path.clone()),
            AppliedRecord {
                inputs: self.pod.written_with.clone(),
                at: finished.at.clone(),
                outcome: finished.outcome.describe(),
            },
        );
        record_written(finished, state, &self.file, self.perms);
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::action::Action;
    use crate::engine::keys::AppliedKey;
    use crate::engine::kinds::testing::{Node, at};
    use crate::model::{INPUTS_PLACEHOLDER, Ownership, inputs_digest};

    const MANIFEST: &str = "/etc/kubernetes/manifests/app.yaml";

    fn want(node: &mut Node, config: &'static str) {
        node.want(|b| {
            b.file("t", at("/etc/app/config"), config, Ownership::root(0o644))
                .unwrap();
            b.static_pod(
                "t",
                at(MANIFEST),
                format!("metadata:\n  annotations:\n    sum: {INPUTS_PLACEHOLDER}\n"),
                vec![at("/etc/app/config"), at("/etc/app/key")],
            )
            .unwrap();
        });
    }

    fn sum(config: &str, key: &str) -> String {
        inputs_digest([
            (
                "/etc/app/config",
                crate::spec::digest(config.as_bytes()).as_str(),
            ),
            ("/etc/app/key", key),
        ])
    }

    #[tokio::test]
    async fn the_manifest_carries_its_inputs_digest_and_follows_them() {
        let mut node = Node::new();
        want(&mut node, "v1\n");
        let plan = node.plan().await;
        // After the input it reads; shown as a file write.
        let write = plan
            .steps
            .iter()
            .position(|s| matches!(s.action, Action::WriteStaticPod(_)))
            .unwrap();
        let config = plan
            .steps
            .iter()
            .position(|s| s.action.target() == "/etc/app/config")
            .unwrap();
        assert!(plan.steps[write].after.contains(&config));
        let json = serde_json::to_value(&plan.steps[write]).unwrap();
        assert_eq!(json["action"], "write-file");
        assert_eq!(json["path"], MANIFEST);
        node.apply(&plan).await;
        // The key is not there: its digest says so.
        assert_eq!(
            node.read(MANIFEST),
            format!(
                "metadata:\n  annotations:\n    sum: {}\n",
                sum("v1\n", "absent")
            )
        );
        let record = &node.state.applied[&AppliedKey::StaticPod(at(MANIFEST))];
        assert_eq!(record.inputs["/etc/app/key"], "absent");
        assert!(node.plan().await.is_empty());

        // An input that is not nodewright's appears: taken from the disk.
        node.put("/etc/app/key", "k\n");
        assert_eq!(
            node.planned().await,
            [format!(
                "write {MANIFEST}: pod inputs changed: /etc/app/key"
            )]
        );
        node.converge().await;
        let key = crate::spec::digest(b"k\n");
        assert!(node.read(MANIFEST).contains(&sum("v1\n", &key)));

        want(&mut node, "v2\n");
        assert_eq!(
            node.planned().await,
            [
                format!(
                    "write /etc/app/config: content differs (sha256 {} on disk, {} wanted)",
                    &crate::spec::digest(b"v1\n")[..12],
                    &crate::spec::digest(b"v2\n")[..12]
                ),
                format!("write {MANIFEST}: pod inputs changed: /etc/app/config"),
            ]
        );
        node.converge().await;
        assert!(node.read(MANIFEST).contains(&sum("v2\n", &key)));
        assert!(node.plan().await.is_empty());
    }
}
