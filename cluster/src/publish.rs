//! `publish`: uploads a render's specs under their content-addressed keys
//! (`<prefix>nodegroups/<group>/nodespec/<sha256>.yaml`, created only if absent: a spec
//! is never replaced, so a node launched from an older template still finds the spec
//! its user data pins), then the node-group definitions controller-shim reads, then the
//! record of what was published (`<prefix>nodegroups/published.yaml`), from which it
//! tells which groups' digests changed and need a roll. Running it twice changes
//! nothing the second time.

use std::collections::BTreeMap;
use std::path::Path;

use crate::render::{PUBLISH_PLAN, PublishPlan};
use crate::store::{Created, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{path}: {detail}")]
    Render { path: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The record of the last publish: group to the digest its launch template pins.
pub const PUBLISHED: &str = "nodegroups/published.yaml";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecOutcome {
    Uploaded,
    AlreadyThere,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReport {
    pub group: String,
    pub sha256: String,
    pub url: String,
    pub outcome: SpecOutcome,
    /// The digest published before, when it differs (or `None` for a new group).
    pub changed_from: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub groups: Vec<GroupReport>,
    pub node_groups_url: String,
    pub node_groups_updated: bool,
    /// Groups published before that the render no longer has.
    pub removed: Vec<String>,
}

impl Report {
    pub fn needs_roll(&self) -> Vec<&str> {
        self.groups
            .iter()
            .filter(|g| matches!(g.changed_from, Some(Some(_))))
            .map(|g| g.group.as_str())
            .collect()
    }

    pub fn nothing_changed(&self) -> bool {
        self.groups
            .iter()
            .all(|g| g.outcome == SpecOutcome::AlreadyThere && g.changed_from.is_none())
            && !self.node_groups_updated
            && self.removed.is_empty()
    }

    /// What an operator reads.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for group in &self.groups {
            let what = match (&group.outcome, &group.changed_from) {
                (SpecOutcome::Uploaded, _) => "uploaded",
                (SpecOutcome::AlreadyThere, _) => "already in the store",
            };
            out.push_str(&format!("{}: {what}: {}\n", group.group, group.url));
            match &group.changed_from {
                Some(Some(old)) => out.push_str(&format!(
                    "  digest changed (was {old}): deploy the stack, then roll {}\n",
                    group.group
                )),
                Some(None) => out.push_str("  new group: deploy the stack to launch it\n"),
                None => {}
            }
        }
        out.push_str(&format!(
            "controller-shim's node groups {}: {}\n",
            if self.node_groups_updated {
                "updated"
            } else {
                "unchanged"
            },
            self.node_groups_url
        ));
        for group in &self.removed {
            out.push_str(&format!(
                "{group}: no longer rendered (its published specs stay in the store for nodes that still run it)\n"
            ));
        }
        let roll = self.needs_roll();
        if self.nothing_changed() {
            out.push_str("nothing to publish: every spec is in the store and no digest changed\n");
        } else if roll.is_empty() {
            out.push_str("no group needs a roll\n");
        } else {
            out.push_str(&format!("groups to roll: {}\n", roll.join(", ")));
        }
        out
    }
}

/// Reads and checks a render directory's publish plan: every spec file must still have
/// the digest the plan (and the boot configs) pin.
pub fn load(dir: &Path) -> Result<(PublishPlan, BTreeMap<String, Vec<u8>>), PublishError> {
    let render_error = |path: &Path, detail: String| PublishError::Render {
        path: path.display().to_string(),
        detail,
    };
    let plan_path = dir.join(PUBLISH_PLAN);
    let text = std::fs::read_to_string(&plan_path).map_err(|e| {
        render_error(
            &plan_path,
            format!("{e} (is {} a directory `render` wrote?)", dir.display()),
        )
    })?;
    let plan: PublishPlan = nodewright::spec::parse_yaml(&plan_path.display().to_string(), &text)
        .map_err(|e| render_error(&plan_path, e.to_string()))?;
    let mut files = BTreeMap::new();
    for spec in &plan.specs {
        let path = dir.join(&spec.file);
        let bytes = std::fs::read(&path).map_err(|e| render_error(&path, e.to_string()))?;
        let actual = nodewright::spec::digest(&bytes);
        if actual != spec.sha256 {
            return Err(render_error(
                &path,
                format!(
                    "sha256 is {actual} but the render pinned {}: the file changed after render; render again",
                    spec.sha256
                ),
            ));
        }
        files.insert(spec.file.clone(), bytes);
    }
    let path = dir.join(&plan.node_groups.file);
    let bytes = std::fs::read(&path).map_err(|e| render_error(&path, e.to_string()))?;
    files.insert(plan.node_groups.file.clone(), bytes);
    Ok((plan, files))
}

/// The key of an `s3://bucket/key` URL in `store`'s bucket.
fn key_of<'a>(store: &Store, url: &'a str) -> Result<&'a str, PublishError> {
    url.strip_prefix("s3://")
        .and_then(|rest| rest.strip_prefix(store.bucket.as_str()))
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| PublishError::Render {
            path: PUBLISH_PLAN.to_owned(),
            detail: format!("{url} is not in the state store's bucket {}", store.bucket),
        })
}

pub async fn publish(
    store: &Store,
    prefix: &str,
    plan: &PublishPlan,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<Report, PublishError> {
    let published_key = format!("{prefix}{PUBLISHED}");
    let before: BTreeMap<String, String> = match store.get(&published_key).await? {
        Some(bytes) => yaml_serde::from_slice(&bytes).map_err(|e| PublishError::Render {
            path: format!("s3://{}/{published_key}", store.bucket),
            detail: format!("does not parse ({e}); remove it to start the record again"),
        })?,
        None => BTreeMap::new(),
    };
    let mut report = Report {
        groups: Vec::new(),
        node_groups_url: plan.node_groups.url.clone(),
        node_groups_updated: false,
        removed: before
            .keys()
            .filter(|g| !plan.specs.iter().any(|s| &s.group == *g))
            .cloned()
            .collect(),
    };
    // Specs first: nothing may name a digest before its spec is in the store.
    for spec in &plan.specs {
        let key = key_of(store, &spec.url)?;
        let outcome = match store
            .create(key, &files[&spec.file], "application/yaml")
            .await?
        {
            Created::Written => SpecOutcome::Uploaded,
            Created::Existed => SpecOutcome::AlreadyThere,
        };
        let changed_from = match before.get(&spec.group) {
            Some(old) if *old == spec.sha256 => None,
            Some(old) => Some(Some(old.clone())),
            None => Some(None),
        };
        report.groups.push(GroupReport {
            group: spec.group.clone(),
            sha256: spec.sha256.clone(),
            url: spec.url.clone(),
            outcome,
            changed_from,
        });
    }
    let key = key_of(store, &plan.node_groups.url)?;
    let wanted = &files[&plan.node_groups.file];
    if store.get(key).await?.as_ref() != Some(wanted) {
        store.replace(key, wanted, "application/yaml").await?;
        report.node_groups_updated = true;
    }
    let after: BTreeMap<String, String> = plan
        .specs
        .iter()
        .map(|s| (s.group.clone(), s.sha256.clone()))
        .collect();
    if after != before {
        let text = yaml_serde::to_string(&after).unwrap_or_default();
        let record = format!(
            "# The spec digest each group's launch template pins, as of the last publish.\n{text}"
        );
        store
            .replace(&published_key, record.as_bytes(), "application/yaml")
            .await?;
    }
    Ok(report)
}
