//! The `cni` section: the CNI plugin binaries, and only those, in /opt/cni/bin.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::program::ProgramSet;
use super::validate::Problems;

/// The `cni` section: the CNI plugin binaries (only the plugins) in /opt/cni/bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CniSpec {
    /// The plugins archive (members are the plugin names), installed in `directory`
    /// (default /opt/cni/bin).
    #[serde(default)]
    pub plugins: ProgramSet,
    /// Which plugins of the archive to install; the default is every plugin of the
    /// containernetworking/plugins 1.x release (not its LICENSE or README).
    #[serde(default = "default_cni_plugins")]
    pub install: Vec<String>,
}

/// The plugins of containernetworking/plugins 1.x.
pub const CNI_PLUGINS: &[&str] = &[
    "bandwidth",
    "bridge",
    "dhcp",
    "dummy",
    "firewall",
    "host-device",
    "host-local",
    "ipvlan",
    "loopback",
    "macvlan",
    "portmap",
    "ptp",
    "sbr",
    "static",
    "tap",
    "tuning",
    "vlan",
    "vrf",
];

fn default_cni_plugins() -> Vec<String> {
    CNI_PLUGINS.iter().map(|p| (*p).to_owned()).collect()
}

impl CniSpec {
    pub fn check(&self, problems: &mut Problems) {
        for (i, name) in self.install.iter().enumerate() {
            let plain = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !name.starts_with('.');
            if !plain {
                problems.add(
                    &format!("cni.install[{i}]"),
                    format!("{name:?} is not a plugin file name"),
                );
            }
        }
        if self.install.is_empty() {
            problems.add("cni.install", "lists no plugins".to_owned());
        }
    }
}
