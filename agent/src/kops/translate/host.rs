//! The host: kops's sysctls (`nodeup/pkg/model/sysctls.go`), OS packages
//! (`packages.go`, `ntp.go`, `update_service.go`), time sync and the instance group's
//! file assets (`file_assets.go`).

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value, json};

use super::Context;
use crate::kops::nodeup_config::{FileAsset, KubeProxyConfig};
use crate::kops::refusals::Ledger;
use crate::model::host;
use crate::spec::{AbsPath, FileMode, PackageName, SysctlKey};

/// Where sysctls with a pattern (`net.ipv4.conf.lxc*.rp_filter`) go: systemd-sysctl and
/// udev apply them to the interfaces they match, including ones made later; there is
/// nothing to write in /proc for them now.
pub const PATTERN_SYSCTLS_FILE: &str = "/etc/sysctl.d/99-kops-patterns.conf";
/// nodeup's directory for file assets without a path.
const FILE_ASSETS_DIR: &str = "/srv/kubernetes/assets";

/// What the host and network sections add to the spec, merged at the end.
#[derive(Debug, Default)]
pub struct Extras {
    pub sysctls: BTreeMap<String, String>,
    /// Pattern sysctls, as `key = value` lines of [`PATTERN_SYSCTLS_FILE`].
    pub pattern_sysctls: Vec<String>,
    pub packages: Vec<String>,
    pub files: Vec<Value>,
    pub units: Vec<Value>,
    pub time_sync: bool,
}

impl Extras {
    pub fn sysctl(&mut self, field: &str, key: &str, value: &str, ledger: &mut Ledger) {
        if key.contains('*') {
            self.pattern_sysctls.push(format!("{key} = {value}"));
        } else if ledger.value(field, SysctlKey::try_from(key)).is_some() {
            self.sysctls.insert(key.to_owned(), value.to_owned());
        }
    }

    pub fn package(&mut self, name: &str) {
        if !self.packages.iter().any(|p| p == name) {
            self.packages.push(name.to_owned());
        }
    }

    /// Adds the sections to the spec document.
    pub fn insert_into(mut self, spec: &mut Map<String, Value>) {
        if !self.pattern_sysctls.is_empty() {
            let mut content = String::from(
                "# kops's sysctls with a pattern, applied to matching interfaces as they appear.\n",
            );
            for line in &self.pattern_sysctls {
                content.push_str(line);
                content.push('\n');
            }
            self.files
                .push(json!({"path": PATTERN_SYSCTLS_FILE, "content": content}));
        }
        if !self.sysctls.is_empty() {
            spec.insert("sysctls".into(), json!(self.sysctls));
        }
        if !self.files.is_empty() {
            spec.insert("files".into(), Value::Array(self.files));
        }
        if !self.units.is_empty() {
            spec.insert("systemd".into(), json!({"units": self.units}));
        }
        let mut host = Map::new();
        if !self.packages.is_empty() {
            host.insert("packages".into(), json!(self.packages));
        }
        if self.time_sync {
            host.insert("timeSync".into(), json!({"daemon": "chrony"}));
        }
        if !host.is_empty() {
            spec.insert("host".into(), Value::Object(host));
        }
    }
}

/// The distributions nodeup knows, as the facts name them (os-release `ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Debian,
    Rhel,
    Other,
}

pub fn family(distro: &str) -> Family {
    match distro {
        "debian" | "ubuntu" => Family::Debian,
        "amzn" | "rhel" | "rocky" | "centos" | "almalinux" | "fedora" => Family::Rhel,
        _ => Family::Other,
    }
}

#[allow(clippy::too_many_arguments)] // one per nodeupconfig field the host takes
pub(super) fn translate(
    context: &Context<'_>,
    packages: &[String],
    ntp_unmanaged: bool,
    service_node_port_range: &str,
    sysctl_parameters: &[String],
    update_policy: &str,
    file_assets: &[FileAsset],
    kube_proxy: Option<&KubeProxyConfig>,
    extras: &mut Extras,
    ledger: &mut Ledger,
) {
    sysctls(
        context,
        service_node_port_range,
        sysctl_parameters,
        extras,
        ledger,
    );
    let host = &context.facts.host;
    let family = family(&host.distro);
    let nftables = kube_proxy.and_then(|p| p.proxy_mode.as_deref()) == Some("nftables");
    match family {
        Family::Debian => {
            for p in ["iptables", "libapparmor1", "libseccomp2", "util-linux"] {
                extras.package(p);
            }
            if nftables {
                extras.package("nftables");
            }
        }
        Family::Rhel => {
            let legacy = matches!(host.distro.as_str(), "rhel" | "rocky")
                && (host.distro_version.starts_with('8') || host.distro_version.starts_with('9'));
            if host.distro == "amzn" {
                extras.package("iptables-nft");
            } else if legacy {
                extras.package("iptables");
            } else {
                extras.package("nftables");
                extras.package("iptables-nft");
            }
            for p in ["libseccomp", "util-linux", "container-selinux"] {
                extras.package(p);
            }
            if nftables {
                extras.package("nftables");
            }
        }
        Family::Other => ledger.note(
            "packages",
            format!("{} {}: nodeup installs no packages on a distribution it does not know; neither does nodewright", host.distro, host.distro_version),
        ),
    }
    for (i, name) in packages.iter().enumerate() {
        if ledger
            .value(
                &format!("packages[{i}]"),
                PackageName::try_from(name.as_str()),
            )
            .is_some()
        {
            if family == Family::Other {
                ledger.refuse(
                    format!("packages[{i}]"),
                    format!("{name}: no package manager is known for {}", host.distro),
                );
            } else {
                extras.package(name);
            }
        }
    }
    // Time: chrony with the Amazon Time Sync Service, unless the cluster manages NTP itself.
    if !ntp_unmanaged {
        match family {
            Family::Debian => {
                extras.package("chrony");
                extras.time_sync = true;
            }
            Family::Rhel => {
                extras.package("chrony");
                ledger.note("NTPUnmanaged", "false: chrony is installed; nodewright configures its time source on Debian and Ubuntu only");
            }
            Family::Other => {}
        }
    }
    update(update_policy, family, extras, ledger);
    files(file_assets, extras, ledger);
}

/// kops's sysctl set, in its order, then the cluster's and instance group's own.
fn sysctls(
    context: &Context<'_>,
    service_node_port_range: &str,
    parameters: &[String],
    extras: &mut Extras,
    ledger: &mut Ledger,
) {
    let ports = if service_node_port_range.is_empty() {
        "30000-32767"
    } else {
        service_node_port_range
    };
    // The cluster's NodePort range is the one reserved.
    let mut kops: Vec<(&str, &str)> = host::KOPS_SYSCTLS.to_vec();
    for (key, value) in &mut kops {
        if *key == host::RESERVED_PORTS {
            *value = ports;
        }
    }
    if context.ipv6_only {
        kops.push(("net.ipv6.conf.all.forwarding", "1"));
    } else {
        kops.push(("net.ipv4.ip_forward", "1"));
    }
    for (key, value) in kops {
        extras.sysctl(key, key, value, ledger);
    }
    for (i, line) in parameters.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let field = format!("SysctlParameters[{i}]");
        match line.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                extras.sysctl(&field, key.trim(), value.trim(), ledger);
            }
            _ => ledger.refuse(field, format!("{line:?} is not key = value")),
        }
    }
}

/// `UpdatePolicy`: unattended upgrades on Debian and Ubuntu, as nodeup sets them up.
fn update(policy: &str, family: Family, extras: &mut Extras, ledger: &mut Ledger) {
    const FILE: &str = "/etc/apt/apt.conf.d/20auto-upgrades";
    match (policy, family) {
        ("automatic" | "", Family::Debian) => {
            extras.package("unattended-upgrades");
            extras.files.push(json!({
                "path": FILE,
                "content": "APT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"1\";\n\nAPT::Periodic::AutocleanInterval \"7\";\n",
            }));
        }
        ("external", Family::Debian) => {
            extras
                .files
                .push(json!({"path": FILE, "content": "APT::Periodic::Enable \"0\";\n"}));
        }
        ("automatic" | "" | "external", _) => {}
        (other, _) => ledger.refuse(
            "UpdatePolicy",
            format!("{other:?} is not automatic or external"),
        ),
    }
}

fn files(assets: &[FileAsset], extras: &mut Extras, ledger: &mut Ledger) {
    let mut seen = Vec::new();
    for (i, asset) in assets.iter().enumerate() {
        let field = format!("FileAssets[{i}]");
        let FileAsset {
            name,
            path,
            // kops keeps only this role's assets, and clears the list.
            roles: _,
            content,
            is_base64,
            mode,
        } = asset;
        let path = if path.is_empty() {
            format!("{FILE_ASSETS_DIR}/{name}")
        } else {
            path.clone()
        };
        if seen.contains(&path) {
            ledger.note(
                field,
                format!("{path}: declared again; nodeup keeps the first"),
            );
            continue;
        }
        seen.push(path.clone());
        let Some(path) = ledger.value(&format!("{field}.path"), AbsPath::try_from(path.as_str()))
        else {
            continue;
        };
        let text = if *is_base64 {
            // kops decodes without padding (base64.RawStdEncoding); accept either.
            let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(content.trim().trim_end_matches('='));
            match decoded.map(String::from_utf8) {
                Ok(Ok(text)) => text,
                Ok(Err(_)) => {
                    ledger.refuse(format!("{field}.content"), "decodes to bytes that are not UTF-8 text; the node spec carries text files");
                    continue;
                }
                Err(e) => {
                    ledger.refuse(format!("{field}.content"), format!("is not base64: {e}"));
                    continue;
                }
            }
        } else {
            content.clone()
        };
        let mode = if mode.is_empty() {
            "0440"
        } else {
            mode.as_str()
        };
        let Some(mode) = ledger.value(
            &format!("{field}.mode"),
            FileMode::try_from(mode.to_owned()),
        ) else {
            continue;
        };
        extras
            .files
            .push(json!({"path": path, "content": text, "mode": mode}));
    }
}
