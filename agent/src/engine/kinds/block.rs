//! Blocks of lines nodewright keeps inside files others write too (e.g. /etc/hosts):
//! everything outside `# BEGIN nodewright <name>` ... `# END nodewright <name>` is left
//! as it is. Each block is recorded as `<path>#<name>` with the digest of its lines; a
//! block an earlier spec had is taken out again.

use std::collections::BTreeMap;

use serde::Serialize;

use super::permissions::Perms;
use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome, blocking};
use crate::engine::keys::{RecordKind, block_key, split_block_key};
use crate::engine::plan::PlanError;
use crate::engine::planner::{Planner, describe};
use crate::engine::state::{FileRecord, State};
use crate::host::fs::{self as hostfs, Existing};
use crate::model::{Content, Ownership};
use crate::spec::AbsPath;

/// Sets nodewright's blocks in shared files, and removes blocks an earlier spec had.
pub(crate) fn plan(p: &mut Planner) -> Result<(), PlanError> {
    // Path -> block name -> lines (None: remove).
    let mut by_path: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
    for block in &p.desired.blocks {
        by_path
            .entry(block.path.to_string())
            .or_default()
            .insert(block.name.clone(), Some(block.lines.clone()));
    }
    for (key, record) in &p.state.files {
        if record.kind != RecordKind::Block {
            continue;
        }
        if let Some((path, name)) = split_block_key(key) {
            by_path
                .entry(path.to_owned())
                .or_default()
                .entry(name.to_owned())
                .or_insert(None);
        }
    }
    for (path, wanted) in by_path {
        let path = AbsPath::try_from(path).map_err(|e| PlanError::Path {
            path: "a recorded block".to_owned(),
            detail: e.to_string(),
        })?;
        plan_file(p, &path, &wanted)?;
    }
    Ok(())
}

/// Plans the blocks of one shared file.
fn plan_file(
    p: &mut Planner,
    path: &AbsPath,
    wanted: &BTreeMap<String, Option<String>>,
) -> Result<(), PlanError> {
    let real = p.host.path(path);
    let (existing, perms) = match p.inspect(path)? {
        Existing::Missing => {
            if wanted.values().all(Option::is_none) {
                // Nothing to remove from a file that is gone: drop the records.
                p.forget
                    .extend(wanted.keys().map(|name| block_key(path.as_str(), name)));
                return Ok(());
            }
            p.ensure_parents(path)?;
            (String::new(), p.perms(path, &Ownership::root(0o644))?)
        }
        Existing::File(stat) => {
            let text = std::fs::read_to_string(&real).map_err(|source| PlanError::Io {
                path: real.clone(),
                source,
            })?;
            (text, Perms::of(&stat))
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
    for (name, lines) in wanted {
        let before = current(&text, name).map(str::to_owned);
        text = replace(&text, name, lines.as_deref());
        records.insert(name.clone(), lines.as_deref().map(digest));
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
                p.unchanged
                    .insert(block_key(path.as_str(), &name), record(digest, perms.mode));
            }
        }
        return Ok(());
    }
    let after = p.parent_steps(path);
    let step = WriteBlocks {
        path: path.clone(),
        text: Content::new(text),
        perms,
        blocks: records,
    };
    p.push_write(path, step, changes.join(", "), after);
    Ok(())
}

fn record(digest: String, mode: u32) -> FileRecord {
    FileRecord {
        kind: RecordKind::Block,
        digest,
        mode,
        uid: None,
        gid: None,
        secret: false,
        stat: None,
        source: None,
    }
}

/// Rewrites a shared file with nodewright's blocks set or removed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WriteBlocks {
    pub path: AbsPath,
    /// The whole file as it is to be.
    #[serde(skip)]
    pub text: Content,
    pub perms: Perms,
    /// Block name to the digest of its lines, or `None` when the block is removed.
    pub blocks: BTreeMap<String, Option<String>>,
}

impl Change for WriteBlocks {
    fn verb(&self) -> &'static str {
        "edit"
    }

    fn target(&self) -> String {
        self.path.to_string()
    }

    fn replaces(&self) -> Option<&AbsPath> {
        Some(&self.path)
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        let real = cx.host.path(&self.path);
        let bytes = self.text.clone();
        let Perms { mode, uid, gid } = self.perms;
        Outcome::of(
            blocking(move || hostfs::write_atomic(&real, bytes.bytes(), mode, uid, gid)).await,
        )
    }

    fn record(&self, _finished: &Finished<'_>, state: &mut State) {
        for (name, digest) in &self.blocks {
            let key = block_key(self.path.as_str(), name);
            match digest {
                Some(digest) => {
                    state
                        .files
                        .insert(key, record(digest.clone(), self.perms.mode));
                }
                None => {
                    state.files.remove(&key);
                }
            }
        }
    }
}

fn begin(name: &str) -> String {
    format!("# BEGIN nodewright {name}")
}

fn end(name: &str) -> String {
    format!("# END nodewright {name}")
}

/// `existing` with block `name` set to `lines` (appended when absent), or removed when
/// `lines` is `None`.
pub fn replace(existing: &str, name: &str, lines: Option<&str>) -> String {
    let (begin, end) = (begin(name), end(name));
    let mut out = String::with_capacity(existing.len() + lines.map_or(0, str::len) + 64);
    let mut inside = false;
    let mut placed = false;
    let block = |out: &mut String| {
        if let Some(lines) = lines {
            out.push_str(&begin);
            out.push('\n');
            out.push_str(lines);
            if !lines.is_empty() && !lines.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&end);
            out.push('\n');
        }
    };
    for line in existing.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if !inside && bare == begin {
            inside = true;
            if !placed {
                block(&mut out);
                placed = true;
            }
            continue;
        }
        if inside {
            if bare == end {
                inside = false;
            }
            continue;
        }
        out.push_str(line);
    }
    if !placed && lines.is_some() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        block(&mut out);
    }
    out
}

/// The digest recorded for a block's lines; the file always holds them with a final
/// newline, so that is what is hashed.
pub fn digest(lines: &str) -> String {
    if lines.is_empty() || lines.ends_with('\n') {
        crate::spec::digest(lines.as_bytes())
    } else {
        crate::spec::digest(format!("{lines}\n").as_bytes())
    }
}

/// `existing` without block `name`: what `reset` leaves of a shared file.
pub fn remove(existing: &str, name: &str) -> String {
    replace(existing, name, None)
}

/// The block's lines in `existing`, if it has the block.
pub fn current<'a>(existing: &'a str, name: &str) -> Option<&'a str> {
    let begin = format!("{}\n", begin(name));
    let start = existing.find(&begin)? + begin.len();
    let end_marker = end(name);
    let rest = &existing[start..];
    let end = rest.find(&end_marker)?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kinds::testing::{Node, at};

    const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n";

    #[test]
    fn digests_ignore_a_missing_final_newline() {
        assert_eq!(digest("a\tb"), digest("a\tb\n"));
        let text = replace(HOSTS, "api", Some("10.0.1.5\tapi.internal"));
        assert_eq!(
            digest(current(&text, "api").unwrap()),
            digest("10.0.1.5\tapi.internal")
        );
        assert_eq!(remove(&text, "api"), HOSTS);
    }

    #[test]
    fn appends_then_replaces_in_place_then_removes() {
        let added = replace(HOSTS, "api", Some("10.0.1.5\tapi.internal\n"));
        assert_eq!(
            added,
            format!(
                "{HOSTS}# BEGIN nodewright api\n10.0.1.5\tapi.internal\n# END nodewright api\n"
            )
        );
        assert_eq!(current(&added, "api"), Some("10.0.1.5\tapi.internal\n"));
        // Lines someone adds after our block stay after it.
        let edited = format!("{added}10.9.9.9\tother\n");
        let replaced = replace(&edited, "api", Some("10.0.2.5\tapi.internal\n"));
        assert_eq!(
            replaced,
            format!(
                "{HOSTS}# BEGIN nodewright api\n10.0.2.5\tapi.internal\n# END nodewright api\n10.9.9.9\tother\n"
            )
        );
        assert_eq!(
            replace(&replaced, "api", None),
            format!("{HOSTS}10.9.9.9\tother\n")
        );
        // Setting what is there changes nothing.
        assert_eq!(
            replace(&added, "api", Some("10.0.1.5\tapi.internal\n")),
            added
        );
    }

    #[test]
    fn other_blocks_and_missing_newlines() {
        let two = replace(
            &replace("127.0.0.1 localhost", "api", Some("10.0.1.5 api\n")),
            "etcd",
            Some("10.0.1.6 etcd-a\n"),
        );
        assert!(two.starts_with("127.0.0.1 localhost\n# BEGIN nodewright api\n"));
        let without_api = replace(&two, "api", None);
        assert_eq!(current(&without_api, "etcd"), Some("10.0.1.6 etcd-a\n"));
        assert_eq!(current(&without_api, "api"), None);
        assert_eq!(replace("", "x", None), "");
    }

    fn hosts_block(node: &mut Node, lines: Option<&'static str>) {
        node.want(|b| {
            if let Some(lines) = lines {
                b.file_block("t", at("/etc/hosts"), "api", lines.to_owned())
                    .unwrap();
            }
        });
    }

    #[tokio::test]
    async fn a_block_is_set_kept_among_other_lines_and_taken_out() {
        let mut node = Node::new();
        node.put("/etc/hosts", HOSTS);
        hosts_block(&mut node, Some("10.0.1.5\tapi.internal\n"));
        assert_eq!(node.planned().await, ["edit /etc/hosts: block api missing"]);
        let plan = node.plan().await;
        let json = serde_json::to_value(&plan.steps[0]).unwrap();
        assert_eq!(json["blocks"]["api"], digest("10.0.1.5\tapi.internal\n"));
        node.apply(&plan).await;
        assert_eq!(
            node.read("/etc/hosts"),
            format!(
                "{HOSTS}# BEGIN nodewright api\n10.0.1.5\tapi.internal\n# END nodewright api\n"
            )
        );
        let record = &node.state.files["/etc/hosts#api"];
        assert_eq!(record.kind, RecordKind::Block);
        assert_eq!(record.digest, digest("10.0.1.5\tapi.internal\n"));
        assert!(node.plan().await.is_empty());

        // Someone else's lines are theirs.
        let text = node.read("/etc/hosts");
        node.put("/etc/hosts", format!("{text}10.9.9.9\tother\n"));
        assert!(node.plan().await.is_empty());

        hosts_block(&mut node, Some("10.0.2.5\tapi.internal\n"));
        assert_eq!(node.planned().await, ["edit /etc/hosts: block api differs"]);
        node.converge().await;

        hosts_block(&mut node, None);
        assert_eq!(
            node.planned().await,
            ["edit /etc/hosts: block api no longer in the spec"]
        );
        node.converge().await;
        assert_eq!(node.read("/etc/hosts"), format!("{HOSTS}10.9.9.9\tother\n"));
        assert!(node.state.files.is_empty());
    }

    #[tokio::test]
    async fn a_block_found_in_place_is_recorded_and_one_in_a_gone_file_forgotten() {
        let mut node = Node::new();
        node.put(
            "/etc/hosts",
            replace(HOSTS, "api", Some("10.0.1.5\tapi.internal\n")),
        );
        hosts_block(&mut node, Some("10.0.1.5\tapi.internal\n"));
        let plan = node.plan().await;
        assert!(plan.is_empty());
        node.apply(&plan).await;
        assert!(node.state.files.contains_key("/etc/hosts#api"));

        std::fs::remove_file(node.real("/etc/hosts")).unwrap();
        hosts_block(&mut node, None);
        let plan = node.plan().await;
        assert!(plan.is_empty());
        assert_eq!(plan.forget, ["/etc/hosts#api"]);
        node.apply(&plan).await;
        assert!(node.state.files.is_empty());

        std::fs::create_dir_all(node.real("/etc/hosts")).unwrap();
        hosts_block(&mut node, Some("10.0.1.5\tapi.internal\n"));
        let err = crate::engine::plan(&node.desired, &node.host, &node.state)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/hosts: is a directory but nodewright edits blocks only in regular files"
        );
    }
}
