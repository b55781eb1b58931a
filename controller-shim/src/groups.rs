//! Node groups: which instance roles may bootstrap into a group, where the group's node
//! specs are kept, how its nodes are named and whether a node may bootstrap twice.
//!
//! The definitions are either inline in the shim's configuration or, so that adding a
//! group does not edit (and roll) the control plane, one [`NodeGroups`] document in the
//! state store that the shim re-reads while it runs. Both forms use [`NodeGroup`]; the
//! cluster kit renders the document with these types.
//!
//! A group's specs live under a prefix (`s3://bucket/path/` or `file:///path/`): each
//! published spec at `<prefix>nodespec/<sha256>.yaml`, written once and never overwritten.
//! A node asks for the digest its user data pins and gets exactly that spec.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub const NODE_GROUPS_API_VERSION: &str = "shim.nodewright.io/v1alpha1";
pub const NODE_GROUPS_KIND: &str = "NodeGroups";

/// The largest node-groups document the shim reads.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// The node-groups document kept in the state store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeGroups {
    /// Always [`NODE_GROUPS_API_VERSION`].
    pub api_version: String,
    /// Always [`NODE_GROUPS_KIND`].
    pub kind: String,
    pub node_groups: Vec<NodeGroup>,
}

/// One node group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeGroup {
    /// The name a worker's boot config gives, and the value of its instances' node-group
    /// tag.
    pub name: String,
    /// IAM role names (not ARNs) whose instance sessions may bootstrap into this group.
    pub roles: Vec<String>,
    /// The prefix the group's specs are kept under (`s3://bucket/path/` or
    /// `file:///path/`, ending in `/`): the spec with digest D is
    /// `<nodeSpecs>nodespec/<D>.yaml`.
    pub node_specs: String,
    #[serde(default)]
    pub node_name: NodeNaming,
    #[serde(default)]
    pub rebootstrap: Rebootstrap,
}

/// How a node's Kubernetes name is derived from EC2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeNaming {
    /// The private DNS name (`ip-10-0-1-23.ec2.internal` or `i-0123….ec2.internal`).
    #[default]
    PrivateDnsName,
    InstanceId,
}

/// Whether an instance that has bootstrapped may bootstrap again with a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Rebootstrap {
    /// Once an instance has credentials, a second bootstrap with another key is refused
    /// (409): a pod holding the instance role cannot get the node's credentials.
    #[default]
    Never,
    /// A second bootstrap with a new key gets new credentials (nodes whose disk is
    /// replaced, at the price above).
    Allowed,
}

impl NodeGroup {
    /// The URL of the spec with `sha256` (lowercase hex).
    pub fn spec_url(&self, sha256: &str) -> String {
        spec_url(&self.node_specs, sha256)
    }
}

/// `<prefix>nodespec/<sha256>.yaml`: where a group's spec with that digest is kept.
pub fn spec_url(prefix: &str, sha256: &str) -> String {
    format!("{prefix}nodespec/{sha256}.yaml")
}

/// Whether `text` is a sha256 as the protocol spells it: 64 lowercase hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[derive(Debug, thiserror::Error)]
pub enum GroupsError {
    #[error("{source_name}: {detail}")]
    Parse { source_name: String, detail: String },
    #[error("{source_name} is invalid:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        source_name: String,
        problems: Vec<String>,
    },
}

impl NodeGroups {
    /// A document holding `groups`.
    pub fn new(groups: Vec<NodeGroup>) -> Self {
        Self {
            api_version: NODE_GROUPS_API_VERSION.to_owned(),
            kind: NODE_GROUPS_KIND.to_owned(),
            node_groups: groups,
        }
    }

    /// Parses and checks a document; `source_name` (its URL) names it in errors, and
    /// every error names the field (`nodeGroups[1].roles`).
    pub fn parse(source_name: &str, text: &str) -> Result<Self, GroupsError> {
        let parse_error = |detail: String| GroupsError::Parse {
            source_name: source_name.to_owned(),
            detail,
        };
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(parse_error(format!(
                "{} bytes is more than the {MAX_DOCUMENT_BYTES} a node-groups document may have",
                text.len()
            )));
        }
        if text.trim().is_empty() {
            return Err(parse_error("the document is empty".to_owned()));
        }
        let document: Self = parse_yaml(text).map_err(parse_error)?;
        let mut problems = Vec::new();
        if document.api_version != NODE_GROUPS_API_VERSION {
            problems.push(format!("apiVersion must be {NODE_GROUPS_API_VERSION}"));
        }
        if document.kind != NODE_GROUPS_KIND {
            problems.push(format!("kind must be {NODE_GROUPS_KIND}"));
        }
        check_groups("nodeGroups", &document.node_groups, &mut problems);
        if problems.is_empty() {
            Ok(document)
        } else {
            Err(GroupsError::Invalid {
                source_name: source_name.to_owned(),
                problems,
            })
        }
    }

    /// The YAML text of the document (what the cluster kit publishes).
    pub fn to_yaml(&self) -> String {
        yaml_serde::to_string(self).unwrap_or_default()
    }

    pub fn group(&self, name: &str) -> Option<&NodeGroup> {
        self.node_groups.iter().find(|g| g.name == name)
    }
}

/// Deserializes YAML, naming the field of the first error (`nodeGroups[0].bogus: ...`).
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let deserializer = yaml_serde::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

/// The checks every list of groups gets, inline or in the store; `at` is the list's path.
pub(crate) fn check_groups(at: &str, groups: &[NodeGroup], out: &mut Vec<String>) {
    let mut names = BTreeSet::new();
    for (i, group) in groups.iter().enumerate() {
        let here = format!("{at}[{i}]");
        if !is_group_name(&group.name) {
            out.push(format!(
                "{here}.name: {:?} must be 1-63 lowercase letters, digits, '-' and '.'",
                group.name
            ));
        }
        if !names.insert(group.name.as_str()) {
            out.push(format!("{here}.name: {} appears twice", group.name));
        }
        if group.roles.is_empty() {
            out.push(format!("{here}.roles: at least one role is needed"));
        }
        for role in &group.roles {
            if role.is_empty() || role.starts_with("arn:") || role.contains('/') {
                out.push(format!(
                    "{here}.roles: {role:?} must be a role name, not an ARN or path"
                ));
            }
        }
        if let Err(problem) = check_prefix(&group.node_specs) {
            out.push(format!("{here}.nodeSpecs: {problem}"));
        }
    }
}

fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
}

/// A spec prefix: `s3://bucket/path/` or `file:///path/`.
fn check_prefix(prefix: &str) -> Result<(), String> {
    let ok_scheme = match prefix.strip_prefix("s3://") {
        Some(rest) => rest
            .split_once('/')
            .is_some_and(|(bucket, _)| !bucket.is_empty()),
        None => prefix.starts_with("file:///"),
    };
    if !ok_scheme {
        return Err(format!(
            "{prefix:?} must be s3://bucket/path/ or file:///path/ (the prefix the group's specs are kept under)"
        ));
    }
    if !prefix.ends_with('/') {
        return Err(format!(
            "{prefix:?} must end with '/': specs are kept at <prefix>nodespec/<sha256>.yaml"
        ));
    }
    if prefix.contains("/../") || prefix.contains("/./") {
        return Err(format!("{prefix:?} must not contain . or .. segments"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub const DOCUMENT: &str = "\
apiVersion: shim.nodewright.io/v1alpha1
kind: NodeGroups
nodeGroups:
  - name: nodes-us-east-1a
    roles: [nodes.prod.example.com]
    nodeSpecs: s3://nodewright-state/prod.example.com/nodegroups/nodes-us-east-1a/
  - name: gpu
    roles: [gpu.prod.example.com]
    nodeSpecs: file:///srv/specs/gpu/
    nodeName: instanceId
    rebootstrap: allowed
";

    #[test]
    fn parses_with_defaults_and_round_trips() {
        let groups = NodeGroups::parse("groups.yaml", DOCUMENT).unwrap();
        let first = groups.group("nodes-us-east-1a").unwrap();
        assert_eq!(first.node_name, NodeNaming::PrivateDnsName);
        assert_eq!(first.rebootstrap, Rebootstrap::Never);
        assert_eq!(
            first.spec_url(&"a".repeat(64)),
            format!(
                "s3://nodewright-state/prod.example.com/nodegroups/nodes-us-east-1a/nodespec/{}.yaml",
                "a".repeat(64)
            )
        );
        let gpu = groups.group("gpu").unwrap();
        assert_eq!(gpu.rebootstrap, Rebootstrap::Allowed);
        assert_eq!(gpu.node_name, NodeNaming::InstanceId);
        let again = NodeGroups::parse("again", &groups.to_yaml()).unwrap();
        assert_eq!(again, groups);
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let text = DOCUMENT.replace("    nodeName: instanceId", "    nodeNmae: instanceId");
        let err = NodeGroups::parse("s3://b/groups.yaml", &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("s3://b/groups.yaml"), "{err}");
        assert!(err.contains("nodeGroups[1]"), "{err}");
        assert!(err.contains("nodeNmae"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn names_every_problem() {
        let text = DOCUMENT
            .replace("kind: NodeGroups", "kind: NodeGroupList")
            .replace("name: gpu", "name: nodes-us-east-1a")
            .replace("[gpu.prod.example.com]", "[\"arn:aws:iam::1:role/x\"]")
            .replace("file:///srv/specs/gpu/", "https://example.com/specs/")
            .replace(
                "nodegroups/nodes-us-east-1a/",
                "nodegroups/nodes-us-east-1a/nodespec.yaml",
            );
        let err = NodeGroups::parse("groups", &text).unwrap_err().to_string();
        for expected in [
            "kind must be NodeGroups",
            "nodeGroups[1].name: nodes-us-east-1a appears twice",
            "nodeGroups[1].roles",
            "nodeGroups[1].nodeSpecs",
            "nodeGroups[0].nodeSpecs",
            "must end with '/'",
        ] {
            assert!(err.contains(expected), "{expected} in {err}");
        }
        assert!(NodeGroups::parse("groups", "").is_err());
        assert!(NodeGroups::parse("groups", "- a\n- b\n").is_err());
    }

    #[test]
    fn digests_are_lowercase_hex() {
        assert!(is_sha256_hex(&"0f".repeat(32)));
        assert!(!is_sha256_hex(&"0F".repeat(32)));
        assert!(!is_sha256_hex(&"0f".repeat(31)));
        assert!(!is_sha256_hex(&format!("{}/..", "0".repeat(60))));
    }
}
