//! Where a component's programs come from: an asset named in the spec (installed and
//! verified by the assets engine), or a path the machine image already has.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::AbsPath;
use super::types::{AssetName, MemberPath};
use super::validate::Problems;

/// One program, e.g. the kubelet.
///
/// With `asset`, nodewright installs it from that asset at `path`; without, the machine
/// image (or an OS package) is expected to have it at `path`. Either way the program's
/// digest is an input of its service: a new binary restarts the service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Program {
    /// The asset that provides it (see `assets`); leave it out when the image has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<AssetName>,
    /// The member to install when the asset is an archive, e.g. `kubernetes/node/bin/kubelet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberPath>,
    /// Where the program is installed (or found); each component has a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<AbsPath>,
}

impl Program {
    pub fn path_or(&self, default: &str) -> AbsPath {
        self.path
            .clone()
            .unwrap_or_else(|| AbsPath::try_from(default).expect("a valid default path"))
    }

    pub fn check(&self, at: &str, problems: &mut Problems) {
        if self.member.is_some() && self.asset.is_none() {
            problems.add(
                &format!("{at}.member"),
                "a member names a file inside an asset: set `asset` too".to_owned(),
            );
        }
    }
}

/// Several programs that come together, e.g. containerd's binaries from its release
/// archive, installed side by side in one directory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProgramSet {
    /// The archive asset that provides them; leave it out when the image has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<AssetName>,
    /// The directory they are installed in (or found in); each component has a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<AbsPath>,
}

impl ProgramSet {
    pub fn directory_or(&self, default: &str) -> AbsPath {
        self.directory
            .clone()
            .unwrap_or_else(|| AbsPath::try_from(default).expect("a valid default path"))
    }
}
