//! `render`: pure and deterministic, from a Cluster file (and the cluster CA's
//! certificate) to the files nodes and AWS read. Nothing here does I/O but
//! [`Rendered::write`].
//!
//! The directory it writes:
//!
//! ```text
//! nodegroups/<group>/nodespec.yaml     the group's NodeSpec (published by digest)
//! nodegroups/<group>/bootconfig.yaml   its boot config: the launch template's user data
//! controller-shim/node-groups.yaml     the groups controller-shim serves
//! iam/<group>.json                     each role's policy (also inline in the template)
//! cloudformation.yaml                  the stack
//! publish.yaml                         what `publish` uploads, and where
//! ```

pub mod boot;
pub mod cloudformation;
pub mod groups;
pub mod iam;
pub mod specs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nodewright::spec::{NodeSpec, Role};
use serde::{Deserialize, Serialize};

use crate::catalogue::Version;
use crate::file::{CONTROL_PLANE_GROUP, Cluster};
use specs::StoreLayout;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The Cluster file renders a spec the agent refuses: the agent's message, on the
    /// Cluster file's field where it could be traced back.
    #[error("{0}")]
    Refused(String),
    #[error("the cluster CA's certificate is needed (--ca-cert, written by `pki init`): {0}")]
    MissingCa(String),
    #[error("writing {path}: {detail}")]
    Write { path: String, detail: String },
    #[error("internal error while rendering: {0}")]
    Internal(String),
}

/// The IAM role (and instance profile) of a group: `<group>.<cluster>`, as kops names
/// its roles (`nodes.prod.example.com`).
pub fn role_name(group: &str, cluster: &str) -> String {
    format!("{group}.{cluster}")
}

/// One group's spec, where it is published and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PublishedSpec {
    pub group: String,
    /// The rendered file, relative to the render directory.
    pub file: String,
    pub sha256: String,
    /// `s3://bucket/<prefix>nodegroups/<group>/nodespec/<sha256>.yaml`.
    pub url: String,
}

/// `publish.yaml`: what `publish` uploads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PublishPlan {
    pub cluster: String,
    pub region: String,
    /// The state store's bucket, and the cluster's key prefix in it.
    pub bucket: String,
    pub prefix: String,
    pub specs: Vec<PublishedSpec>,
    /// The node-group definitions and where controller-shim reads them.
    pub node_groups: PublishedFile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PublishedFile {
    pub file: String,
    pub url: String,
}

pub const PUBLISH_PLAN: &str = "publish.yaml";
pub const TEMPLATE: &str = "cloudformation.yaml";
/// Marks a directory as a render's, so `render` may replace it.
pub const MARKER: &str = ".nodewright-render";

/// Everything a render produces: relative path to bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub files: BTreeMap<String, Vec<u8>>,
    pub plan: PublishPlan,
}

/// Renders `cluster` with the catalogue's `version`. `ca_pem` is the cluster CA's
/// certificate (needed when the cluster has worker groups: their specs trust it and
/// their boot configs pin it for controller-shim).
pub fn render(
    cluster: &Cluster,
    version: &Version,
    ca_pem: Option<&str>,
) -> Result<Rendered, RenderError> {
    let layout = StoreLayout::of(cluster);
    let mut files = BTreeMap::new();
    let mut published = Vec::new();

    let mut add_group = |files: &mut BTreeMap<String, Vec<u8>>,
                         name: &str,
                         spec: &NodeSpec|
     -> Result<String, RenderError> {
        let bytes = specs::to_bytes(spec, name)?;
        let sha256 = nodewright::spec::digest(&bytes);
        let file = format!("nodegroups/{name}/nodespec.yaml");
        files.insert(file.clone(), bytes);
        published.push(PublishedSpec {
            group: name.to_owned(),
            file,
            sha256: sha256.clone(),
            url: layout.spec_url(name, &sha256),
        });
        Ok(sha256)
    };

    // The control plane.
    let spec = specs::control_plane(cluster, version)?;
    check_with_agent(cluster, CONTROL_PLANE_GROUP, &spec)?;
    let sha256 = add_group(&mut files, CONTROL_PLANE_GROUP, &spec)?;
    let config = boot::boot_config(
        cluster,
        CONTROL_PLANE_GROUP,
        Role::ControlPlane,
        &sha256,
        &boot::Source::Store,
    )?;
    let control_plane_user_data = String::from_utf8(boot::to_bytes(&config)?)
        .map_err(|e| RenderError::Internal(e.to_string()))?;
    files.insert(
        format!("nodegroups/{CONTROL_PLANE_GROUP}/bootconfig.yaml"),
        control_plane_user_data.clone().into_bytes(),
    );
    files.insert(
        format!("iam/{CONTROL_PLANE_GROUP}.json"),
        json_bytes(&iam::control_plane(cluster))?,
    );

    // The worker groups.
    let mut user_data: Vec<(String, String)> = Vec::new();
    if !cluster.node_groups.is_empty() {
        let ca = ca_pem.ok_or_else(|| {
            RenderError::MissingCa(format!(
                "the worker groups ({}) trust it",
                cluster
                    .node_groups
                    .iter()
                    .map(|g| g.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        check_ca(ca)?;
        for (i, group) in cluster.node_groups.iter().enumerate() {
            let name = group.name.as_str();
            let spec = specs::worker(cluster, version, group, ca)?;
            check_with_agent(cluster, &format!("nodeGroups[{i}]"), &spec)?;
            let sha256 = add_group(&mut files, name, &spec)?;
            let source = boot::Source::for_bootstrap(group.bootstrap, ca);
            let config = boot::boot_config(cluster, name, Role::Worker, &sha256, &source)?;
            let bytes = boot::to_bytes(&config)?;
            files.insert(format!("nodegroups/{name}/bootconfig.yaml"), bytes.clone());
            user_data.push((
                name.to_owned(),
                String::from_utf8(bytes).map_err(|e| RenderError::Internal(e.to_string()))?,
            ));
            files.insert(
                format!("iam/{name}.json"),
                json_bytes(&iam::worker(cluster, group))?,
            );
        }
    }

    // controller-shim's node groups.
    let node_groups = groups::document(cluster)?;
    let node_groups_file = "controller-shim/node-groups.yaml".to_owned();
    files.insert(node_groups_file.clone(), node_groups);

    // The stack.
    let group_data: Vec<cloudformation::GroupData> = user_data
        .iter()
        .map(|(name, data)| cloudformation::GroupData {
            name,
            user_data: data,
        })
        .collect();
    let template = cloudformation::template(cluster, &control_plane_user_data, &group_data);
    let template = yaml_serde::to_string(&template)
        .map_err(|e| RenderError::Internal(format!("the template: {e}")))?;
    files.insert(
        TEMPLATE.to_owned(),
        format!("# Rendered by nodewright-cluster from the Cluster file of {}; do not edit.\n{template}", cluster.name)
            .into_bytes(),
    );

    let plan = PublishPlan {
        cluster: cluster.name.to_string(),
        region: cluster.region.clone(),
        bucket: layout.bucket.clone(),
        prefix: layout.prefix.clone(),
        specs: published,
        node_groups: PublishedFile {
            file: node_groups_file,
            url: format!("s3://{}/{}", layout.bucket, layout.node_groups_key()),
        },
    };
    let plan_bytes = yaml_serde::to_string(&plan)
        .map_err(|e| RenderError::Internal(format!("the publish plan: {e}")))?;
    files.insert(PUBLISH_PLAN.to_owned(), plan_bytes.into_bytes());
    Ok(Rendered { files, plan })
}

fn json_bytes(value: &serde_json::Value) -> Result<Vec<u8>, RenderError> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|e| RenderError::Internal(e.to_string()))?;
    text.push('\n');
    Ok(text.into_bytes())
}

fn check_ca(pem: &str) -> Result<(), RenderError> {
    nodewright_shim::pki::CertificateInfo::from_pem("the cluster CA certificate", pem)
        .map(|_| ())
        .map_err(|e| RenderError::MissingCa(e.to_string()))
}

/// Runs the rendered spec through the agent's own parser and checks: a spec the agent
/// would refuse is never written. Problems are reported on the Cluster file's fields
/// where they come from there (labels, taints, kubelet settings, asset mirrors).
fn check_with_agent(cluster: &Cluster, at: &str, spec: &NodeSpec) -> Result<(), RenderError> {
    let group = spec
        .node_group
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let text = String::from_utf8(specs::to_bytes(spec, &group)?)
        .map_err(|e| RenderError::Internal(e.to_string()))?;
    let problems = match NodeSpec::parse(&format!("the spec of {group}"), &text) {
        Ok(parsed) if parsed == *spec => return Ok(()),
        Ok(_) => {
            return Err(RenderError::Internal(format!(
                "the spec of {group} reads back differently from what was rendered"
            )));
        }
        Err(nodewright::spec::SpecError::Invalid { problems, .. }) => problems,
        Err(other) => return Err(RenderError::Internal(other.to_string())),
    };
    let _ = cluster;
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("  - {}: {}", trace_back(at, &p.path), p.message))
        .collect();
    Err(RenderError::Refused(format!(
        "the Cluster file renders a spec for {group} that nodewright refuses:\n{}",
        lines.join("\n")
    )))
}

/// A rendered spec's field path, as the Cluster file's field it came from.
fn trace_back(at: &str, path: &str) -> String {
    let mapped = [
        ("kubelet.labels", "labels"),
        ("kubelet.taints", "taints"),
        ("kubelet.config", "kubelet"),
    ];
    for (from, to) in mapped {
        if let Some(rest) = path.strip_prefix(from)
            && at != CONTROL_PLANE_GROUP
        {
            return format!("{at}.{to}{rest}");
        }
    }
    if path.starts_with("downloads") || path.starts_with("assets") {
        return format!("assets (rendered {path})");
    }
    if path.starts_with("containerd.registryMirrors") {
        return format!("assets.registryMirrors (rendered {path})");
    }
    format!("{at} (rendered {path})")
}

impl Rendered {
    /// Writes the render to `dir`, replacing a previous render there as a whole: the
    /// new one is written beside it and swapped in, so a failure leaves the old one.
    /// A directory that holds anything else is refused.
    pub fn write(&self, dir: &Path) -> Result<(), RenderError> {
        let error = |path: &Path, e: std::io::Error| RenderError::Write {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        if dir.exists() {
            let empty = std::fs::read_dir(dir)
                .map_err(|e| error(dir, e))?
                .next()
                .is_none();
            if !empty && !dir.join(MARKER).exists() {
                return Err(RenderError::Write {
                    path: dir.display().to_string(),
                    detail: format!(
                        "holds files that are not a render (no {MARKER}); choose an empty or new directory"
                    ),
                });
            }
        }
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| error(parent, e))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "render".to_owned());
        let fresh: PathBuf = parent.join(format!(".{name}.new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&fresh);
        for (relative, bytes) in self
            .files
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .chain([(MARKER, b"nodewright-cluster render\n".as_slice())])
        {
            let path = fresh.join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| error(parent, e))?;
            }
            std::fs::write(&path, bytes).map_err(|e| error(&path, e))?;
        }
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(|e| error(dir, e))?;
        }
        std::fs::rename(&fresh, dir).map_err(|e| error(dir, e))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| error(&old, e))?;
        }
        Ok(())
    }
}
