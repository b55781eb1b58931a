//! The node spec's plain OS entries: directories, files, symlinks, systemd units and
//! their drop-ins, sysctl values.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::numbers::FileMode;
use super::types::{AbsPath, DropInName, Principal, UnitName};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SysctlValue {
    Number(i64),
    Text(String),
}

impl SysctlValue {
    pub fn render(&self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::Text(t) => t.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DirectoryEntry {
    pub path: AbsPath,
    #[serde(default = "default_dir_mode")]
    pub mode: FileMode,
    #[serde(default = "root")]
    pub owner: Principal,
    #[serde(default = "root")]
    pub group: Principal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileEntry {
    pub path: AbsPath,
    /// The file's text, written byte for byte.
    pub content: String,
    #[serde(default = "default_file_mode")]
    pub mode: FileMode,
    #[serde(default = "root")]
    pub owner: Principal,
    #[serde(default = "root")]
    pub group: Principal,
    /// Holds a secret: never logged, redacted from support bundles, mode 0600 at most.
    #[serde(default, skip_serializing_if = "is_false")]
    pub secret: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SymlinkEntry {
    pub path: AbsPath,
    pub target: AbsPath,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SystemdSpec {
    #[serde(default)]
    pub units: Vec<UnitEntry>,
}

impl SystemdSpec {
    pub(super) fn is_empty(&self) -> bool {
        self.units.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UnitEntry {
    pub name: UnitName,
    /// The unit file. Leave it out to manage only drop-ins of a unit the OS ships.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_ins: Vec<DropInEntry>,
    /// Enable the unit so that it starts at boot.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub state: UnitState,
    /// Files whose change restarts this unit (its unit file and drop-ins always do).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_on: Vec<AbsPath>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DropInEntry {
    pub name: DropInName,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum UnitState {
    /// Running; restarted when one of its inputs changes.
    #[default]
    Started,
    /// Installed but left stopped (e.g. started by a timer or another unit).
    Stopped,
}

fn default_dir_mode() -> FileMode {
    FileMode::new(0o755)
}
fn default_file_mode() -> FileMode {
    FileMode::new(0o644)
}
fn root() -> Principal {
    Principal::try_from("root").expect("a valid constant")
}
fn yes() -> bool {
    true
}
fn is_false(value: &bool) -> bool {
    !*value
}
