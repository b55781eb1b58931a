//! Checked spec values that are numbers underneath: a file mode (written as an octal
//! string) and a Kubernetes version.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::types::InvalidValue;

/// A file mode written as an octal string, e.g. `"0644"`.
///
/// YAML reads a bare `0644` as decimal 644 or octal 420 depending on the version of the
/// YAML spec a tool follows; a string leaves no doubt, so only strings are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FileMode(u32);

impl FileMode {
    pub const fn new(bits: u32) -> Self {
        Self(bits & 0o7777)
    }
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl TryFrom<String> for FileMode {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, InvalidValue> {
        let digits = value.trim();
        if !(3..=4).contains(&digits.len()) || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
            return Err(InvalidValue(format!(
                "mode {value:?} must be an octal string such as \"0644\""
            )));
        }
        let bits = u32::from_str_radix(digits, 8).map_err(|e| InvalidValue(e.to_string()))?;
        Ok(Self(bits))
    }
}

impl From<FileMode> for String {
    fn from(value: FileMode) -> String {
        format!("{:04o}", value.0)
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl JsonSchema for FileMode {
    fn schema_name() -> Cow<'static, str> {
        "FileMode".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A file mode as an octal string, e.g. \"0644\"",
            "pattern": "^[0-7]{3,4}$"
        })
    }
}

/// A Kubernetes version such as `1.33.4` (a leading `v` is accepted and dropped).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KubernetesVersion(semver::Version);

impl KubernetesVersion {
    pub fn version(&self) -> &semver::Version {
        &self.0
    }
    /// `major.minor`, e.g. `1.33`.
    pub fn minor(&self) -> String {
        format!("{}.{}", self.0.major, self.0.minor)
    }
}

impl TryFrom<String> for KubernetesVersion {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, InvalidValue> {
        let bare = value.strip_prefix('v').unwrap_or(&value);
        let version = semver::Version::parse(bare)
            .map_err(|e| InvalidValue(format!("{value:?} is not a version such as 1.33.4: {e}")))?;
        if version.major != 1 || version.minor < 28 {
            return Err(InvalidValue(format!(
                "Kubernetes version {value:?} is not supported (1.28 or newer)"
            )));
        }
        Ok(Self(version))
    }
}

impl From<KubernetesVersion> for String {
    fn from(value: KubernetesVersion) -> String {
        value.0.to_string()
    }
}

impl fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl JsonSchema for KubernetesVersion {
    fn schema_name() -> Cow<'static, str> {
        "KubernetesVersion".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A Kubernetes version, 1.28 or newer, e.g. \"1.33.4\"",
            "pattern": "^v?1\\.[0-9]+\\.[0-9]+"
        })
    }
}
