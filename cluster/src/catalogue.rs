//! The versions catalogue: for each supported Kubernetes minor version and architecture,
//! the upstream URL and real sha256 of every file a node downloads, and the images it
//! runs. The data is `cluster/catalogue/*.yaml`, reviewed like code and embedded at build
//! time; a `--catalogue` directory replaces it (a private mirror of patched builds).

use std::collections::BTreeMap;
use std::path::Path;

use nodewright::spec::{AssetUrl, ImageRef, KubernetesVersion, Sha256Hex};
use serde::Deserialize;

/// The embedded catalogue's files: one per minor version, plus the component releases.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "components.yaml",
        include_str!("../catalogue/components.yaml"),
    ),
    ("1.33.yaml", include_str!("../catalogue/1.33.yaml")),
    ("1.34.yaml", include_str!("../catalogue/1.34.yaml")),
    ("1.35.yaml", include_str!("../catalogue/1.35.yaml")),
];

/// The file that lists the component releases; every other file is one minor version.
const COMPONENTS: &str = "components.yaml";

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("catalogue {file}: {detail}")]
    Invalid { file: String, detail: String },
    #[error("reading the catalogue {path}: {detail}")]
    Read { path: String, detail: String },
}

/// CPU architectures of the catalogue (Go's names, as in the release URLs).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    #[default]
    Amd64,
    Arm64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }
}

/// One downloadable file and where its digest was copied from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub url: AssetUrl,
    pub sha256: Sha256Hex,
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Component {
    Containerd,
    Runc,
    CniPlugins,
    EcrCredentialProvider,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Release {
    component: Component,
    version: String,
    files: BTreeMap<Arch, File>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentsFile {
    releases: Vec<Release>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Image {
    pub image: ImageRef,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Images {
    pub kube_apiserver: Image,
    pub kube_controller_manager: Image,
    pub kube_scheduler: Image,
    pub kube_proxy: Image,
    pub etcd: Image,
    pub pause: Image,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MinorFile {
    minor: String,
    kubernetes: KubernetesVersion,
    kubelet: BTreeMap<Arch, File>,
    containerd: String,
    runc: String,
    cni_plugins: String,
    ecr_credential_provider: String,
    images: Images,
}

/// What one Kubernetes version's nodes run, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub minor: String,
    pub kubernetes: semver::Version,
    pub containerd: String,
    pub images: Images,
    files: BTreeMap<(Asset, Arch), File>,
}

/// The files a node downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Asset {
    Kubelet,
    Containerd,
    Runc,
    CniPlugins,
    EcrCredentialProvider,
}

impl Asset {
    pub const ALL: [Asset; 5] = [
        Asset::Kubelet,
        Asset::Containerd,
        Asset::Runc,
        Asset::CniPlugins,
        Asset::EcrCredentialProvider,
    ];

    /// The asset's name in a node spec.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kubelet => "kubelet",
            Self::Containerd => "containerd",
            Self::Runc => "runc",
            Self::CniPlugins => "cni-plugins",
            Self::EcrCredentialProvider => "ecr-credential-provider",
        }
    }
}

impl Version {
    pub fn file(&self, asset: Asset, arch: Arch) -> Option<&File> {
        self.files.get(&(asset, arch))
    }
}

/// Every supported version, by minor.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    versions: BTreeMap<(u64, u64), Version>,
}

impl Catalogue {
    /// The catalogue built into this binary.
    pub fn embedded() -> Self {
        let files: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect();
        Self::from_files(&files).expect("the embedded catalogue is checked by its tests")
    }

    /// A catalogue directory: `components.yaml` and one `<minor>.yaml` per version.
    pub fn load(dir: &Path) -> Result<Self, CatalogueError> {
        let read_error = |detail: String| CatalogueError::Read {
            path: dir.display().to_string(),
            detail,
        };
        let mut files = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| read_error(e.to_string()))?;
        for entry in entries {
            let path = entry.map_err(|e| read_error(e.to_string()))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| CatalogueError::Read {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            files.push((name, text));
        }
        files.sort();
        Self::from_files(&files)
    }

    fn from_files(files: &[(String, String)]) -> Result<Self, CatalogueError> {
        let invalid = |file: &str, detail: String| CatalogueError::Invalid {
            file: file.to_owned(),
            detail,
        };
        let (_, components) = files
            .iter()
            .find(|(name, _)| name == COMPONENTS)
            .ok_or_else(|| invalid(COMPONENTS, "is missing".to_owned()))?;
        let components: ComponentsFile = nodewright::spec::parse_yaml(COMPONENTS, components)
            .map_err(|e| invalid(COMPONENTS, e.to_string()))?;
        let mut releases: BTreeMap<(Component, String), BTreeMap<Arch, File>> = BTreeMap::new();
        for release in components.releases {
            let key = (release.component, release.version.clone());
            if releases.insert(key, release.files).is_some() {
                return Err(invalid(
                    COMPONENTS,
                    format!(
                        "{:?} {} is listed twice",
                        release.component, release.version
                    ),
                ));
            }
        }
        let mut versions = BTreeMap::new();
        for (name, text) in files.iter().filter(|(name, _)| name != COMPONENTS) {
            let minor: MinorFile = nodewright::spec::parse_yaml(name, text)
                .map_err(|e| invalid(name, e.to_string()))?;
            let version = resolve(minor, &releases).map_err(|detail| invalid(name, detail))?;
            let key = (version.kubernetes.major, version.kubernetes.minor);
            if name.trim_end_matches(".yaml") != version.minor {
                return Err(invalid(
                    name,
                    format!(
                        "holds minor {} (the file is named for its minor)",
                        version.minor
                    ),
                ));
            }
            versions.insert(key, version);
        }
        if versions.is_empty() {
            return Err(invalid(
                "(catalogue)",
                "lists no Kubernetes version".to_owned(),
            ));
        }
        Ok(Self { versions })
    }

    /// The versions it knows, e.g. `["1.33.8", "1.34.4"]`.
    pub fn known(&self) -> Vec<String> {
        self.versions
            .values()
            .map(|v| v.kubernetes.to_string())
            .collect()
    }

    /// The version `wanted` names: a minor (`1.34`) or one exact release (`1.34.4`).
    pub fn find(&self, wanted: &str) -> Option<&Version> {
        let bare = wanted.strip_prefix('v').unwrap_or(wanted);
        let parts: Vec<&str> = bare.split('.').collect();
        let number = |s: &str| s.parse::<u64>().ok();
        match parts.as_slice() {
            [major, minor] => self.versions.get(&(number(major)?, number(minor)?)),
            [_, _, _] => {
                let exact = semver::Version::parse(bare).ok()?;
                self.versions
                    .get(&(exact.major, exact.minor))
                    .filter(|v| v.kubernetes == exact)
            }
            _ => None,
        }
    }
}

fn resolve(
    minor: MinorFile,
    releases: &BTreeMap<(Component, String), BTreeMap<Arch, File>>,
) -> Result<Version, String> {
    let expected = minor.kubernetes.minor();
    if minor.minor != expected {
        return Err(format!(
            "minor {} does not match kubernetes {}",
            minor.minor, minor.kubernetes
        ));
    }
    let mut files = BTreeMap::new();
    for (arch, file) in minor.kubelet {
        files.insert((Asset::Kubelet, arch), file);
    }
    for (asset, component, version) in [
        (Asset::Containerd, Component::Containerd, &minor.containerd),
        (Asset::Runc, Component::Runc, &minor.runc),
        (Asset::CniPlugins, Component::CniPlugins, &minor.cni_plugins),
        (
            Asset::EcrCredentialProvider,
            Component::EcrCredentialProvider,
            &minor.ecr_credential_provider,
        ),
    ] {
        let release = releases
            .get(&(component, version.clone()))
            .ok_or_else(|| format!("{component:?} {version} is not in components.yaml"))?;
        for (arch, file) in release {
            files.insert((asset, *arch), file.clone());
        }
    }
    // Every asset for every architecture the kubelet is listed for.
    let arches: Vec<Arch> = files
        .keys()
        .filter(|(asset, _)| *asset == Asset::Kubelet)
        .map(|(_, arch)| *arch)
        .collect();
    for arch in &arches {
        for asset in Asset::ALL {
            if !files.contains_key(&(asset, *arch)) {
                return Err(format!("{} has no {} file", asset.name(), arch.as_str()));
            }
        }
    }
    Ok(Version {
        minor: minor.minor,
        kubernetes: minor.kubernetes.version().clone(),
        containerd: minor.containerd,
        images: minor.images,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_catalogue_loads_and_is_complete() {
        let catalogue = Catalogue::embedded();
        assert_eq!(catalogue.known(), ["1.33.8", "1.34.4", "1.35.1"]);
        for known in catalogue.known() {
            let version = catalogue.find(&known).unwrap();
            for arch in [Arch::Amd64, Arch::Arm64] {
                for asset in Asset::ALL {
                    let file = version.file(asset, arch).unwrap();
                    assert!(file.url.as_str().starts_with("https://"), "{file:?}");
                    assert!(!file.source.is_empty());
                    // The URL names the architecture it is for.
                    assert!(file.url.as_str().contains(arch.as_str()), "{file:?}");
                }
            }
            let kubelet = version.file(Asset::Kubelet, Arch::Amd64).unwrap();
            assert!(
                kubelet
                    .url
                    .as_str()
                    .contains(&format!("/v{}/", version.kubernetes))
            );
            assert!(
                version
                    .images
                    .kube_apiserver
                    .image
                    .as_str()
                    .ends_with(&format!(":v{}", version.kubernetes))
            );
        }
    }

    #[test]
    fn versions_are_found_by_minor_or_exact_release() {
        let catalogue = Catalogue::embedded();
        assert_eq!(
            catalogue.find("1.34").unwrap().kubernetes.to_string(),
            "1.34.4"
        );
        assert!(catalogue.find("v1.34.4").is_some());
        assert!(catalogue.find("1.34.3").is_none());
        assert!(catalogue.find("1.31").is_none());
        assert!(catalogue.find("latest").is_none());
        assert!(catalogue.find("1.34.x").is_none());
    }

    #[test]
    fn a_broken_catalogue_is_refused_with_the_file() {
        let mut files: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        files[1].1 = files[1].1.replace("runc: 1.4.3", "runc: 1.4.4");
        let err = Catalogue::from_files(&files).unwrap_err().to_string();
        assert!(
            err.contains("1.33.yaml") && err.contains("Runc 1.4.4"),
            "{err}"
        );
        files[1].1 = files[1]
            .1
            .replace("containerd: 2.3.4", "containerd: 2.3.4\nextra: 1");
        let err = Catalogue::from_files(&files).unwrap_err().to_string();
        assert!(err.contains("extra") && err.contains("line"), "{err}");
    }
}
