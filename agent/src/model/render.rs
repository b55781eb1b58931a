//! Shared rendering helpers: YAML with ordered keys, and the header of managed files.

use super::merge::sorted;

/// The first line of every file nodewright writes in a format that has comments.
pub const MANAGED: &str = "# Managed by nodewright; local changes are overwritten.\n";

/// YAML of `value` with every mapping's keys in order, behind the managed header.
pub fn to_yaml(value: serde_json::Value) -> String {
    let body = yaml_serde::to_string(&sorted(value)).expect("JSON values always serialize");
    format!("{MANAGED}{body}")
}
