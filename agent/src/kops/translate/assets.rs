//! kops's assets: `sha256@url[,url...]` per architecture, with no names. nodeup finds
//! what it needs by file name (kubelet, runc.amd64, the containerd archive's `bin/`...);
//! the [`LAYOUT`] table says what each becomes here. An asset this table does not know
//! is refused: nodewright will not download a file it cannot say the use of.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::facts::Facts;
use crate::kops::refusals::Ledger;
use crate::spec::{AssetUrl, Sha256Hex};

/// What an asset of kops's list is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AssetUse {
    Kubelet,
    Kubectl,
    EcrCredentialProvider,
    CniPlugins,
    Containerd,
    Runc,
    Crictl,
    Nerdctl,
}

/// One row of the layout table (docs/kops.md shows it, and a test keeps the two equal).
#[derive(Debug, Clone, Copy)]
pub struct LayoutRow {
    pub used_as: AssetUse,
    /// The asset's name in the translated spec.
    pub name: &'static str,
    /// kops's file name (the URL's last segment); `<arch>` and `<version>` vary.
    pub kops_file: &'static str,
    pub archive: bool,
    /// What is installed where.
    pub installs: &'static str,
}

pub const LAYOUT: &[LayoutRow] = &[
    LayoutRow {
        used_as: AssetUse::Kubelet,
        name: "kubelet",
        kops_file: "kubelet",
        archive: false,
        installs: "/usr/local/bin/kubelet (kubelet.binary)",
    },
    LayoutRow {
        used_as: AssetUse::Kubectl,
        name: "kubectl",
        kops_file: "kubectl",
        archive: false,
        installs: "/usr/local/bin/kubectl",
    },
    LayoutRow {
        used_as: AssetUse::EcrCredentialProvider,
        name: "ecr-credential-provider",
        kops_file: "ecr-credential-provider-linux-<arch>",
        archive: false,
        installs: "/usr/local/libexec/kubelet-credential-providers/ecr-credential-provider (kubelet.ecrCredentialProvider.binary)",
    },
    LayoutRow {
        used_as: AssetUse::CniPlugins,
        name: "cni-plugins",
        kops_file: "cni-plugins-linux-<arch>-v<version>.tgz",
        archive: true,
        installs: "each plugin (not LICENSE or README) to /opt/cni/bin (cni.plugins)",
    },
    LayoutRow {
        used_as: AssetUse::Containerd,
        name: "containerd",
        kops_file: "containerd-<version>-linux-<arch>.tar.gz",
        archive: true,
        installs: "bin/containerd, bin/containerd-shim-runc-v2, bin/ctr to /usr/local/bin (containerd.binaries)",
    },
    LayoutRow {
        used_as: AssetUse::Runc,
        name: "runc",
        kops_file: "runc.<arch>",
        archive: false,
        installs: "/usr/local/sbin/runc (containerd.runc)",
    },
    LayoutRow {
        used_as: AssetUse::Crictl,
        name: "crictl",
        kops_file: "crictl-v<version>-linux-<arch>.tar.gz",
        archive: true,
        installs: "crictl to /usr/local/bin/crictl",
    },
    LayoutRow {
        used_as: AssetUse::Nerdctl,
        name: "nerdctl",
        kops_file: "nerdctl-<version>-linux-<arch>.tar.gz",
        archive: true,
        installs: "nerdctl to /usr/local/bin/nerdctl",
    },
];

/// What a kops file name is, for this architecture.
fn classify(file: &str, arch: &str) -> Option<AssetUse> {
    let archive = |f: &str| f.ends_with(".tar.gz") || f.ends_with(".tgz");
    let suffix = format!("-linux-{arch}.tar.gz");
    Some(match file {
        "kubelet" => AssetUse::Kubelet,
        "kubectl" => AssetUse::Kubectl,
        f if f == format!("ecr-credential-provider-linux-{arch}") => {
            AssetUse::EcrCredentialProvider
        }
        f if f.starts_with(&format!("cni-plugins-linux-{arch}-")) && archive(f) => {
            AssetUse::CniPlugins
        }
        f if f.starts_with("containerd-") && f.ends_with(&suffix) => AssetUse::Containerd,
        f if f == format!("runc.{arch}") => AssetUse::Runc,
        f if f.starts_with("crictl-") && f.ends_with(&suffix) => AssetUse::Crictl,
        f if f.starts_with("nerdctl-") && f.ends_with(&suffix) => AssetUse::Nerdctl,
        _ => return None,
    })
}

/// The spec's assets, and which name serves which use.
#[derive(Debug, Default)]
pub struct TranslatedAssets {
    pub entries: Vec<Value>,
    pub names: BTreeMap<AssetUse, &'static str>,
}

impl TranslatedAssets {
    pub fn name(&self, used_as: AssetUse) -> Option<&'static str> {
        self.names.get(&used_as).copied()
    }

    /// The `cni` section when the CNI plugins are among the assets.
    pub fn cni_section(&self) -> Option<Value> {
        self.name(AssetUse::CniPlugins)
            .map(|name| json!({"plugins": {"asset": name}}))
    }
}

pub(super) fn translate(
    assets: &BTreeMap<String, Option<Vec<String>>>,
    install_cni_assets: bool,
    installs_containerd: bool,
    facts: &Facts,
    ledger: &mut Ledger,
) -> TranslatedAssets {
    let arch = facts.host.arch.as_str();
    let mut out = TranslatedAssets::default();
    let Some(list) = assets.get(arch).and_then(Option::as_ref) else {
        ledger.refuse(
            format!("Assets.{arch}"),
            format!("lists no assets for this instance's architecture ({arch})"),
        );
        return out;
    };
    for (i, asset) in list.iter().enumerate() {
        let field = format!("Assets.{arch}[{i}]");
        let Some((sha256, urls)) = asset.split_once('@') else {
            ledger.refuse(
                field,
                format!("{asset:?} has no sha256@ before its URLs: nodewright installs nothing it cannot verify"),
            );
            continue;
        };
        let Some(sha256) = ledger.value(&field, Sha256Hex::try_from(sha256)) else {
            continue;
        };
        let urls: Vec<&str> = urls.split(',').map(str::trim).collect();
        let mut checked = Vec::new();
        for url in &urls {
            if let Some(url) = ledger.value(&field, AssetUrl::try_from(*url)) {
                checked.push(url);
            }
        }
        let file = urls
            .first()
            .and_then(|u| u.split('?').next())
            .and_then(|u| u.rsplit('/').next())
            .unwrap_or_default();
        let Some(used_as) = classify(file, arch) else {
            ledger.refuse(
                field,
                format!("{file}: not an asset nodewright knows the use of (see the asset layout table in docs/kops.md)"),
            );
            continue;
        };
        let Some(row) = LAYOUT.iter().find(|r| r.used_as == used_as) else {
            continue;
        };
        if out.names.insert(used_as, row.name).is_some() {
            ledger.refuse(field, format!("a second {} asset ({file})", row.name));
            continue;
        }
        let mut entry = json!({
            "name": row.name,
            "sha256": sha256,
            "urls": checked,
        });
        if row.archive {
            entry["archive"] = json!("tar.gz");
        }
        // Assets no component installs say where they go themselves.
        match used_as {
            AssetUse::Kubectl => {
                entry["install"] = json!([{"path": "/usr/local/bin/kubectl"}]);
            }
            AssetUse::Crictl => {
                entry["install"] = json!([{"member": "crictl", "path": "/usr/local/bin/crictl"}]);
            }
            AssetUse::Nerdctl => {
                entry["install"] = json!([{"member": "nerdctl", "path": "/usr/local/bin/nerdctl"}]);
            }
            _ => {}
        }
        out.entries.push(entry);
    }
    for (needed, why) in [
        (AssetUse::Kubelet, "the kubelet"),
        (AssetUse::Containerd, "containerd"),
        (AssetUse::Runc, "runc"),
        (
            AssetUse::EcrCredentialProvider,
            "the ECR credential provider nodeup installs on AWS",
        ),
    ] {
        // Without containerd's install (skipInstall, refused on its own) kops lists neither.
        let expected =
            installs_containerd || !matches!(needed, AssetUse::Containerd | AssetUse::Runc);
        if expected && !out.names.contains_key(&needed) && !list.is_empty() {
            ledger.refuse(format!("Assets.{arch}"), format!("has no asset for {why}"));
        }
    }
    if install_cni_assets && !out.names.contains_key(&AssetUse::CniPlugins) {
        ledger.refuse(
            "InstallCNIAssets",
            format!("is true but Assets.{arch} has no CNI plugins archive"),
        );
    }
    if !install_cni_assets && let Some(name) = out.names.remove(&AssetUse::CniPlugins) {
        // nodeup downloads it only to install it; so do we.
        out.entries.retain(|e| e["name"] != name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_by_architecture() {
        assert_eq!(classify("kubelet", "amd64"), Some(AssetUse::Kubelet));
        assert_eq!(classify("runc.arm64", "arm64"), Some(AssetUse::Runc));
        assert_eq!(classify("runc.amd64", "arm64"), None);
        assert_eq!(
            classify("containerd-2.3.4-linux-amd64.tar.gz", "amd64"),
            Some(AssetUse::Containerd)
        );
        assert_eq!(
            classify("cni-plugins-linux-arm64-v1.7.1.tgz", "arm64"),
            Some(AssetUse::CniPlugins)
        );
        assert_eq!(
            classify("ecr-credential-provider-linux-amd64", "amd64"),
            Some(AssetUse::EcrCredentialProvider)
        );
        assert_eq!(
            classify("cri-containerd-cni-1.3.9-linux-amd64.tar.gz", "amd64"),
            None
        );
        assert_eq!(classify("runsc", "amd64"), None);
        // Every row of the table is reachable.
        for row in LAYOUT {
            let file = row
                .kops_file
                .replace("<arch>", "amd64")
                .replace("<version>", "1.2.3");
            assert_eq!(
                classify(&file, "amd64"),
                Some(row.used_as),
                "{}",
                row.kops_file
            );
        }
    }
}
