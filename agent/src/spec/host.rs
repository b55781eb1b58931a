//! The `host` section: OS packages, swap, the default sysctls, time sync.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::Problems;
use super::values::PackageName;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostSpec {
    /// nodewright's production sysctl set (like kops's); the spec's `sysctls` override
    /// it key by key.
    #[serde(default = "yes")]
    pub default_sysctls: bool,
    /// OS packages to install with apt or dnf (chosen from the distribution).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<PackageName>,
    /// Turn swap off now and keep it off (swap.target masked); the kubelet refuses to
    /// run with swap unless configured for it.
    #[serde(default = "yes")]
    pub disable_swap: bool,
    /// Synchronise the clock with the Amazon Time Sync Service (169.254.169.123).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_sync: Option<TimeSync>,
}

impl Default for HostSpec {
    fn default() -> Self {
        Self {
            default_sysctls: true,
            packages: Vec::new(),
            disable_swap: true,
            time_sync: None,
        }
    }
}

impl HostSpec {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub fn check(&self, problems: &mut Problems) {
        let mut seen = std::collections::BTreeSet::new();
        for (i, package) in self.packages.iter().enumerate() {
            if !seen.insert(package.as_str()) {
                problems.add(
                    &format!("host.packages[{i}]"),
                    format!("package {package} is listed twice"),
                );
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TimeSync {
    /// The daemon the image runs.
    pub daemon: TimeDaemon,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TimeDaemon {
    /// chrony (Debian and Ubuntu layout: a source file in /etc/chrony/sources.d).
    Chrony,
    /// systemd-timesyncd (a drop-in in /etc/systemd/timesyncd.conf.d).
    SystemdTimesyncd,
}

fn yes() -> bool {
    true
}
