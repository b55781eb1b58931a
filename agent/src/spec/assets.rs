//! Assets: files the node downloads (binaries, archives), each pinned by sha256, and the
//! settings for downloading them (mirrors, air-gapped mode, timeouts, parallelism).
//!
//! ```yaml
//! downloads:
//!   mirrors:
//!     - upstream: https://dl.k8s.io/
//!       mirrors: [https://artifacts.corp.example/dl.k8s.io/]
//! assets:
//!   - name: kubelet
//!     sha256: 0123…
//!     urls: [https://dl.k8s.io/release/v1.33.4/bin/linux/amd64/kubelet]
//!     install:
//!       - path: /usr/local/bin/kubelet
//!   - name: containerd
//!     sha256: 4567…
//!     urls: [https://github.com/containerd/containerd/releases/download/…tar.gz]
//!     archive: tar.gz
//!     install:
//!       - member: bin/containerd
//!         path: /usr/local/bin/containerd
//! ```

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::numbers::FileMode;
use super::types::{AbsPath, AssetName, AssetUrl, MemberPath, Principal, Sha256Hex};
use super::validate::Problems;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AssetEntry {
    /// How components and logs refer to the asset.
    pub name: AssetName,
    /// The sha256 of the downloaded bytes (of the archive itself for an archive).
    pub sha256: Sha256Hex,
    /// Where to download it from, tried in order (after any mirror of each).
    pub urls: Vec<AssetUrl>,
    /// `tar.gz` (or `tgz`) to extract it; `plain` (the default) for a single file.
    #[serde(default, skip_serializing_if = "ArchiveKind::is_plain")]
    pub archive: ArchiveKind,
    /// Where it goes on the node: the file itself, or members of the archive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub install: Vec<InstallEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum ArchiveKind {
    /// A single file, installed as it is.
    #[default]
    #[serde(rename = "plain")]
    Plain,
    /// A gzip-compressed tar archive, extracted once into the cache.
    #[serde(rename = "tar.gz", alias = "tgz")]
    TarGz,
}

impl ArchiveKind {
    pub fn is_plain(&self) -> bool {
        *self == Self::Plain
    }
}

impl std::fmt::Display for ArchiveKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain => "plain",
            Self::TarGz => "tar.gz",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstallEntry {
    /// For an archive: the member to install, e.g. `bin/containerd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberPath>,
    pub path: AbsPath,
    #[serde(default = "default_install_mode")]
    pub mode: FileMode,
    #[serde(default = "root")]
    pub owner: Principal,
    #[serde(default = "root")]
    pub group: Principal,
}

/// How assets are downloaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DownloadSettings {
    /// URL prefixes served by mirrors: each mirror is tried first, then the upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorEntry>,
    /// Refuse every URL that is not a mirror (or a local file://).
    #[serde(default)]
    pub airgapped: bool,
    /// How many downloads run at once.
    #[serde(default = "default_parallel")]
    pub parallel: u8,
    /// A transfer that receives no bytes for this long is cut and resumed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u32,
    /// The longest one transfer may take, however steadily bytes arrive.
    #[serde(default = "default_max_seconds")]
    pub max_seconds: u32,
    /// How long failed downloads are retried (rounds over every URL, with backoff).
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: u32,
}

impl Default for DownloadSettings {
    fn default() -> Self {
        Self {
            mirrors: Vec::new(),
            airgapped: false,
            parallel: default_parallel(),
            idle_timeout_seconds: default_idle_timeout(),
            max_seconds: default_max_seconds(),
            retry_seconds: default_retry_seconds(),
        }
    }
}

impl DownloadSettings {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The URLs to try for `urls`, in order: for each URL, its mirrors first, then the
    /// URL itself (left out when air-gapped). Duplicates are dropped.
    pub fn sources(&self, urls: &[AssetUrl]) -> Vec<AssetUrl> {
        let mut out: Vec<AssetUrl> = Vec::new();
        let mut push = |url: AssetUrl| {
            if !out.contains(&url) {
                out.push(url);
            }
        };
        for url in urls {
            let mirrored = self.mirrors_of(url);
            let is_mirror = self.is_mirror_url(url);
            let rewritten = !mirrored.is_empty();
            for m in mirrored {
                push(m);
            }
            if !self.airgapped || is_mirror || (!rewritten && url.as_str().starts_with("file:")) {
                push(url.clone());
            }
        }
        out
    }

    fn mirrors_of(&self, url: &AssetUrl) -> Vec<AssetUrl> {
        self.mirrors
            .iter()
            .filter_map(|m| Some((m, url.as_str().strip_prefix(m.upstream.as_str())?)))
            .flat_map(|(m, rest)| {
                m.mirrors
                    .iter()
                    .filter_map(move |mirror| AssetUrl::try_from(format!("{mirror}{rest}")).ok())
            })
            .collect()
    }

    fn is_mirror_url(&self, url: &AssetUrl) -> bool {
        self.mirrors
            .iter()
            .flat_map(|m| &m.mirrors)
            .any(|mirror| url.as_str().starts_with(mirror.as_str()))
    }

    pub(super) fn check(&self, problems: &mut Problems) {
        if !(1..=32).contains(&self.parallel) {
            problems.add(
                "downloads.parallel",
                format!("{} is not between 1 and 32", self.parallel),
            );
        }
        for (field, value) in [
            ("idleTimeoutSeconds", self.idle_timeout_seconds),
            ("maxSeconds", self.max_seconds),
        ] {
            if value == 0 {
                problems.add(
                    &format!("downloads.{field}"),
                    "must be at least 1".to_owned(),
                );
            }
        }
        let mut upstreams = BTreeSet::new();
        for (i, mirror) in self.mirrors.iter().enumerate() {
            let at = format!("downloads.mirrors[{i}]");
            if !mirror.upstream.as_str().ends_with('/') {
                problems.add(
                    &format!("{at}.upstream"),
                    format!(
                        "{} must end with / so that it only matches whole path segments",
                        mirror.upstream
                    ),
                );
            }
            if !upstreams.insert(mirror.upstream.as_str()) {
                problems.add(
                    &format!("{at}.upstream"),
                    format!("{} has mirrors declared twice", mirror.upstream),
                );
            }
            if mirror.mirrors.is_empty() {
                problems.add(&format!("{at}.mirrors"), "lists no mirror".to_owned());
            }
            for (j, target) in mirror.mirrors.iter().enumerate() {
                if !target.as_str().ends_with('/') {
                    problems.add(
                        &format!("{at}.mirrors[{j}]"),
                        format!("{target} must end with /, like the upstream it replaces"),
                    );
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MirrorEntry {
    /// A URL prefix, e.g. `https://dl.k8s.io/`.
    pub upstream: AssetUrl,
    /// Prefixes that replace it, tried in order before the upstream.
    pub mirrors: Vec<AssetUrl>,
}

/// Checks the assets list against the download settings.
pub(super) fn check(assets: &[AssetEntry], downloads: &DownloadSettings, problems: &mut Problems) {
    downloads.check(problems);
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, asset) in assets.iter().enumerate() {
        let at = format!("assets[{i}]");
        if let Some(first) = names.insert(asset.name.as_str(), i) {
            problems.add(
                &format!("{at}.name"),
                format!(
                    "asset {} is already declared at assets[{first}]",
                    asset.name
                ),
            );
        }
        if asset.urls.is_empty() {
            problems.add(&format!("{at}.urls"), "lists no URL".to_owned());
        }
        if downloads.airgapped {
            for (j, url) in asset.urls.iter().enumerate() {
                let mirrored = !downloads.mirrors_of(url).is_empty();
                let local = url.as_str().starts_with("file:");
                if !mirrored && !local && !downloads.is_mirror_url(url) {
                    problems.add(
                        &format!("{at}.urls[{j}]"),
                        format!(
                            "{url} is not served by a mirror, and downloads.airgapped refuses other URLs"
                        ),
                    );
                }
            }
        }
        for (j, target) in asset.install.iter().enumerate() {
            let here = format!("{at}.install[{j}]");
            match (asset.archive, &target.member) {
                (ArchiveKind::Plain, Some(member)) => problems.add(
                    &format!("{here}.member"),
                    format!(
                        "asset {} is a plain file, not an archive: it has no member {member}",
                        asset.name
                    ),
                ),
                (ArchiveKind::TarGz, None) => problems.add(
                    &here,
                    format!(
                        "asset {} is an archive: say which member goes to {}",
                        asset.name, target.path
                    ),
                ),
                (ArchiveKind::TarGz, Some(_)) | (ArchiveKind::Plain, None) => {}
            }
        }
    }
}

fn default_install_mode() -> FileMode {
    FileMode::new(0o755)
}
fn root() -> Principal {
    Principal::try_from("root").expect("a valid constant")
}
fn default_parallel() -> u8 {
    8
}
fn default_idle_timeout() -> u32 {
    30
}
fn default_max_seconds() -> u32 {
    1800
}
fn default_retry_seconds() -> u32 {
    300
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> AssetUrl {
        AssetUrl::try_from(s).unwrap()
    }

    fn settings(airgapped: bool) -> DownloadSettings {
        DownloadSettings {
            mirrors: vec![MirrorEntry {
                upstream: url("https://dl.k8s.io/"),
                mirrors: vec![
                    url("https://mirror-a.corp/k8s/"),
                    url("s3://corp-assets/k8s/"),
                ],
            }],
            airgapped,
            ..DownloadSettings::default()
        }
    }

    #[test]
    fn mirrors_come_first_then_the_upstream() {
        let sources = settings(false).sources(&[
            url("https://dl.k8s.io/release/v1.33.4/bin/linux/amd64/kubelet"),
            url("https://github.com/x/y"),
        ]);
        let sources: Vec<&str> = sources.iter().map(AssetUrl::as_str).collect();
        assert_eq!(
            sources,
            [
                "https://mirror-a.corp/k8s/release/v1.33.4/bin/linux/amd64/kubelet",
                "s3://corp-assets/k8s/release/v1.33.4/bin/linux/amd64/kubelet",
                "https://dl.k8s.io/release/v1.33.4/bin/linux/amd64/kubelet",
                "https://github.com/x/y",
            ]
        );
    }

    #[test]
    fn airgapped_keeps_only_mirrors_and_local_files() {
        let sources = settings(true).sources(&[
            url("https://dl.k8s.io/a/kubelet"),
            url("https://mirror-a.corp/k8s/b"),
            url("file:///opt/kubelet"),
        ]);
        let sources: Vec<&str> = sources.iter().map(AssetUrl::as_str).collect();
        assert_eq!(
            sources,
            [
                "https://mirror-a.corp/k8s/a/kubelet",
                "s3://corp-assets/k8s/a/kubelet",
                "https://mirror-a.corp/k8s/b",
                "file:///opt/kubelet",
            ]
        );
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        let sources = settings(false).sources(&[url("https://dl.k8s.io.evil.example/kubelet")]);
        assert_eq!(sources.len(), 1);
    }

    const BASE: &str = "\
apiVersion: nodewright.io/v1alpha1
kind: NodeSpec
cluster:
  name: prod.example.com
  kubernetesVersion: 1.33.4
  serviceCidr: 100.64.0.0/13
  podCidr: 100.96.0.0/11
  dnsIp: 100.64.0.10
role: worker
";

    fn error_of(extra: &str) -> String {
        crate::spec::NodeSpec::parse("spec.yaml", &format!("{BASE}{extra}"))
            .unwrap_err()
            .to_string()
    }

    const SHA: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn bad_assets_are_refused_with_path_and_line() {
        let err = error_of(&format!(
            "assets:\n  - name: kubelet\n    sha256: {SHA}\n    urls: [https://dl.k8s.io/kubelet]\n    install:\n      - member: bin/kubelet\n        path: /usr/bin/kubelet\n"
        ));
        assert!(
            err.contains("assets[0].install[0].member")
                && err.contains("plain file")
                && err.contains("line 15"),
            "{err}"
        );

        let err = error_of(&format!(
            "assets:\n  - name: cni\n    sha256: {SHA}\n    urls: [https://x/cni.tgz]\n    archive: tgz\n    install:\n      - path: /opt/cni/bin/bridge\n"
        ));
        assert!(
            err.contains("assets[0].install[0]: asset cni is an archive"),
            "{err}"
        );

        let err = error_of(&format!(
            "assets:\n  - name: a\n    sha256: {SHA}\n    urls: []\n  - name: a\n    sha256: {SHA}\n    urls: [ftp://x/y]\n"
        ));
        assert!(
            err.contains("assets[1].urls[0]") && err.contains("ftp"),
            "{err}"
        );

        let err = error_of(&format!(
            "assets:\n  - name: a\n    sha256: {SHA}\n    urls: []\n  - name: a\n    sha256: {SHA}\n    urls: [https://x/y]\n"
        ));
        assert!(err.contains("assets[0].urls: lists no URL"), "{err}");
        assert!(
            err.contains("assets[1].name: asset a is already declared at assets[0]"),
            "{err}"
        );

        let err = error_of(&format!(
            "assets:\n  - name: a\n    sha256: {SHA}\n    urls: [https://x/y]\n    compress: true\n"
        ));
        assert!(
            err.contains("assets[0]") && err.contains("compress"),
            "{err}"
        );
    }

    #[test]
    fn install_paths_conflict_with_files() {
        let err = error_of(&format!(
            "files:\n  - path: /usr/bin/kubelet\n    content: x\nassets:\n  - name: kubelet\n    sha256: {SHA}\n    urls: [https://x/kubelet]\n    install:\n      - path: /usr/bin/kubelet\n"
        ));
        assert!(
            err.contains(
                "assets[0].install[0].path: /usr/bin/kubelet is already declared at files[0].path"
            ),
            "{err}"
        );
    }

    #[test]
    fn airgapped_refuses_urls_no_mirror_serves() {
        let err = error_of(&format!(
            "downloads:\n  airgapped: true\n  mirrors:\n    - upstream: https://dl.k8s.io/\n      mirrors: [https://mirror.corp/k8s/]\nassets:\n  - name: kubelet\n    sha256: {SHA}\n    urls:\n      - https://dl.k8s.io/kubelet\n      - https://github.com/kubelet\n"
        ));
        assert!(
            err.contains("assets[0].urls[1]: https://github.com/kubelet is not served by a mirror")
                && err.contains("line 20"),
            "{err}"
        );
        assert!(!err.contains("urls[0]"), "{err}");
    }

    #[test]
    fn bad_mirror_tables_are_refused() {
        let err = error_of(
            "downloads:\n  parallel: 0\n  mirrors:\n    - upstream: https://dl.k8s.io\n      mirrors: [https://mirror.corp/k8s]\n",
        );
        assert!(err.contains("downloads.parallel"), "{err}");
        assert!(err.contains("downloads.mirrors[0].upstream"), "{err}");
        assert!(err.contains("downloads.mirrors[0].mirrors[0]"), "{err}");
    }

    #[test]
    fn the_schema_describes_assets_and_downloads() {
        let schema = crate::spec::json_schema(false).to_string();
        for word in [
            "assets",
            "downloads",
            "airgapped",
            "ArchiveKind",
            "tar.gz",
            "member",
        ] {
            assert!(schema.contains(word), "{word} missing from the schema");
        }
    }
}
