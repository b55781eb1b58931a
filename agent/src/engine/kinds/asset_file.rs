//! Files installed from assets (binaries, or members of archives): the asset is
//! downloaded into the verified cache once (one step per digest, shared by every file
//! installed from it), and each file is copied out of the cache, verified by its
//! digest on the way. A file found in place with the right digest costs no download.

use std::collections::BTreeMap;

use serde::Serialize;

use super::permissions::{Perms, SetPermissions};
use crate::assets::install::{InstallError, install_file};
use crate::assets::{Cache, ExtractManifest, Fetcher};
use crate::engine::action::Change;
use crate::engine::apply::{Context, Finished, Outcome};
use crate::engine::keys::AssetSource;
use crate::engine::plan::PlanError;
use crate::engine::planner::{Planner, short, wrong_kind};
use crate::engine::state::{FileRecord, State};
use crate::host::Host;
use crate::host::fs::{self as hostfs, Existing};
use crate::model::{DesiredAsset, DesiredAssetFile};
use crate::spec::AbsPath;

/// What planning the asset files learns about the cache, read once.
struct CacheView {
    cache: Cache,
    /// Archive digest to its extraction manifest, if extracted.
    manifests: BTreeMap<String, Option<ExtractManifest>>,
    /// Asset digest to the step that downloads it.
    fetches: BTreeMap<String, usize>,
}

pub(crate) fn plan(p: &mut Planner) -> Result<(), PlanError> {
    let mut view = CacheView {
        cache: Cache::new(p.host),
        manifests: BTreeMap::new(),
        fetches: BTreeMap::new(),
    };
    let desired = p.desired;
    for file in &desired.asset_files {
        let asset = desired
            .assets
            .get(&file.asset)
            .ok_or_else(|| PlanError::Path {
                path: file.path.to_string(),
                detail: format!("asset {} is not declared", file.asset),
            })?;
        plan_one(p, &mut view, asset, file)?;
    }
    Ok(())
}

fn plan_one(
    p: &mut Planner,
    view: &mut CacheView,
    asset: &DesiredAsset,
    file: &DesiredAssetFile,
) -> Result<(), PlanError> {
    p.ensure_parents(&file.path)?;
    let perms = p.perms(&file.path, &file.ownership)?;
    let source = AssetSource::new(asset.sha256.as_str(), file.member.as_deref());
    let expected = view.expected_digest(asset, file);
    let reason = match p.inspect(&file.path)? {
        Existing::Missing => "missing".to_owned(),
        Existing::File(stat) => {
            let digest = p.digest_of(&file.path, &stat)?;
            // Before the download, a member's digest is known from the record of what
            // was installed from the same archive.
            let known = expected.clone().or_else(|| {
                p.state
                    .files
                    .get(file.path.as_str())
                    .filter(|r| r.source.as_ref() == Some(&source))
                    .map(|r| r.digest.clone())
            });
            match known {
                Some(want) if want == digest => {
                    p.installed.insert(file.path.to_string(), digest.clone());
                    p.unchanged.insert(
                        file.path.to_string(),
                        FileRecord {
                            source: Some(source),
                            ..FileRecord::file(digest, perms, &stat)
                        },
                    );
                    if let Some(reason) = perms.differ(stat.mode, stat.uid, stat.gid) {
                        let after = p.parent_steps(&file.path);
                        let set = SetPermissions {
                            path: file.path.clone(),
                            perms,
                        };
                        p.push(set, reason, after);
                    }
                    return Ok(());
                }
                Some(want) => format!(
                    "content differs (sha256 {} on disk, {} wanted)",
                    short(&digest),
                    short(&want)
                ),
                None => format!(
                    "content differs from what {} held when last installed",
                    file.asset
                ),
            }
        }
        Existing::Symlink { target } => {
            format!("is a symlink to {}; replacing it", target.display())
        }
        other => return Err(wrong_kind(&file.path, &other, "a file")),
    };
    p.installed.insert(
        file.path.to_string(),
        expected.clone().unwrap_or_else(|| source.pending()),
    );
    let mut after = p.parent_steps(&file.path);
    after.extend(view.fetch_step(p, asset));
    let install = InstallAsset {
        path: file.path.clone(),
        asset: file.asset.clone(),
        member: file.member.clone(),
        digest: expected,
        perms,
        desired: Box::new(asset.clone()),
    };
    p.push_write(&file.path, install, reason, after);
    Ok(())
}

impl CacheView {
    /// The digest an asset file must have, if known without downloading: the asset's
    /// own for a plain file, the extraction manifest's for a member.
    fn expected_digest(&mut self, asset: &DesiredAsset, file: &DesiredAssetFile) -> Option<String> {
        let Some(member) = &file.member else {
            return Some(asset.sha256.to_string());
        };
        let cache = &self.cache;
        self.manifests
            .entry(asset.sha256.to_string())
            .or_insert_with(|| cache.manifest(asset.sha256.as_str()))
            .as_ref()
            .and_then(|m| m.resolve(member).ok().map(|(_, digest)| digest.to_owned()))
    }

    /// The step after which `asset` is usable from the cache, if it is not yet (one
    /// per digest): its download, and for an archive its extraction after that.
    fn fetch_step(&mut self, p: &mut Planner, asset: &DesiredAsset) -> Option<usize> {
        let sha = asset.sha256.to_string();
        if let Some(index) = self.fetches.get(&sha) {
            return Some(*index);
        }
        let extracted = !asset.archive.is_plain()
            && (self.manifests.get(&sha).is_some_and(Option::is_some)
                || self.cache.manifest(&sha).is_some());
        if extracted {
            return None;
        }
        let download = (!self.cache.has_blob(&sha)).then(|| {
            let fetch = FetchAsset {
                asset: asset.name.clone(),
                sha256: sha.clone(),
                urls: asset.urls.iter().map(|u| u.to_string()).collect(),
                desired: Box::new(asset.clone()),
            };
            p.push(
                fetch,
                "not in the cache: download needed".to_owned(),
                vec![],
            )
        });
        let last = if asset.archive.is_plain() {
            download?
        } else {
            let reason = if download.is_some() {
                "an archive: extracted once downloaded"
            } else {
                "in the cache but not extracted yet"
            };
            let extract = ExtractAsset {
                asset: asset.name.clone(),
                sha256: sha.clone(),
                desired: Box::new(asset.clone()),
            };
            p.push(extract, reason.to_owned(), download.into_iter().collect())
        };
        self.fetches.insert(sha, last);
        Some(last)
    }
}

/// Download an asset into the cache.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FetchAsset {
    pub asset: String,
    pub sha256: String,
    pub urls: Vec<String>,
    #[serde(skip)]
    pub desired: Box<DesiredAsset>,
}

impl Change for FetchAsset {
    fn verb(&self) -> &'static str {
        "download"
    }

    fn target(&self) -> String {
        self.asset.clone()
    }

    fn takes_a_slot(&self) -> bool {
        false
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        Outcome::of(
            cx.fetcher
                .ensure_downloaded(&self.desired)
                .await
                .map_err(|e| e.to_string()),
        )
    }

    fn record(&self, _finished: &Finished<'_>, _state: &mut State) {
        // The cache is its own record.
    }
}

/// Extract an archive asset in the cache (after its download, if any).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExtractAsset {
    pub asset: String,
    pub sha256: String,
    #[serde(skip)]
    pub desired: Box<DesiredAsset>,
}

impl Change for ExtractAsset {
    fn verb(&self) -> &'static str {
        "extract"
    }

    fn target(&self) -> String {
        self.asset.clone()
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        Outcome::of(
            cx.fetcher
                .ensure(&self.desired)
                .await
                .map_err(|e| e.to_string()),
        )
    }

    fn record(&self, _finished: &Finished<'_>, _state: &mut State) {
        // The cache (its extraction manifest) is its own record.
    }
}

/// Install a file out of the cache, verified by its digest on the way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstallAsset {
    pub path: AbsPath,
    pub asset: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The content digest, when known before downloading.
    pub digest: Option<String>,
    pub perms: Perms,
    #[serde(skip)]
    pub desired: Box<DesiredAsset>,
}

impl Change for InstallAsset {
    fn verb(&self) -> &'static str {
        "install"
    }

    fn target(&self) -> String {
        self.path.to_string()
    }

    fn replaces(&self) -> Option<&AbsPath> {
        Some(&self.path)
    }

    async fn run(&mut self, cx: &Context) -> Outcome {
        Outcome::of(
            install(
                &cx.fetcher,
                &cx.host,
                &self.desired,
                self.member.as_deref(),
                &self.path,
                self.perms,
            )
            .await,
        )
    }

    fn record(&self, finished: &Finished<'_>, state: &mut State) {
        let digest = finished
            .fetcher
            .source_of(&self.desired, self.member.as_deref())
            .map(|(_, digest)| digest);
        if let (Ok(digest), Ok(Existing::File(stat))) =
            (digest, hostfs::inspect(&finished.host.path(&self.path)))
        {
            let source = AssetSource::new(self.desired.sha256.as_str(), self.member.as_deref());
            state.files.insert(
                self.path.to_string(),
                FileRecord {
                    source: Some(source),
                    ..FileRecord::file(digest, self.perms, &stat)
                },
            );
        }
    }
}

/// Installs one file from an asset, fetching it first if the cache lost it, and
/// fetching it again once if the cached bytes turn out damaged.
async fn install(
    fetcher: &Fetcher,
    host: &Host,
    asset: &DesiredAsset,
    member: Option<&str>,
    path: &AbsPath,
    perms: Perms,
) -> Result<(), String> {
    let target = host.path(path);
    for attempt in 0..3 {
        let found = fetcher.source_of(asset, member);
        let problem = match found {
            Ok((source, expected)) => match copy(source, target.clone(), expected, perms).await {
                Ok(()) => return Ok(()),
                Err(InstallError::Corrupt {
                    source_path,
                    actual,
                    ..
                }) => format!("{} is damaged (sha256 {actual})", source_path.display()),
                Err(InstallError::Read { path, source })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    format!("{} is gone", path.display())
                }
                Err(e) => return Err(e.to_string()),
            },
            // Gone from the cache since planning (pruned).
            Err(e) => e.to_string(),
        };
        if attempt == 2 {
            return Err(problem);
        }
        tracing::warn!(asset = %asset.name, problem, "the cached copy is not usable; fetching it again");
        fetcher.repair(asset).await.map_err(|e| e.to_string())?;
    }
    Err(format!(
        "{}: the cache keeps serving damaged bytes",
        asset.name
    ))
}

async fn copy(
    source: std::path::PathBuf,
    target: std::path::PathBuf,
    expected: String,
    perms: Perms,
) -> Result<(), InstallError> {
    let Perms { mode, uid, gid } = perms;
    match tokio::task::spawn_blocking(move || {
        install_file(&source, &target, &expected, mode, uid, gid)
    })
    .await
    {
        Ok(result) => result,
        Err(e) => Err(InstallError::Read {
            path: Default::default(),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use crate::engine::action::Action;
    use crate::engine::keys::{AppliedKey, AssetSource};
    use crate::engine::kinds::testing::{Node, at};
    use crate::model::{DesiredAsset, DesiredService, Ownership, StateBuilder};
    use crate::spec::{ArchiveKind, AssetUrl, Sha256Hex, UnitName, digest};

    /// An asset served from a file outside the node's root.
    fn asset(
        dir: &tempfile::TempDir,
        name: &str,
        bytes: &[u8],
        archive: ArchiveKind,
    ) -> DesiredAsset {
        let source = dir.path().join(name);
        std::fs::write(&source, bytes).unwrap();
        DesiredAsset {
            name: name.to_owned(),
            sha256: Sha256Hex::try_from(digest(bytes)).unwrap(),
            urls: vec![AssetUrl::try_from(format!("file://{}", source.display())).unwrap()],
            archive,
        }
    }

    fn tar_gz(member: &str, bytes: &[u8]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        tar.append_data(&mut header, member, bytes).unwrap();
        let mut gz = tar.into_inner().unwrap();
        gz.flush().unwrap();
        gz.finish().unwrap()
    }

    fn install(b: &mut StateBuilder, asset: &DesiredAsset, member: Option<&str>) {
        b.asset("t", asset.clone()).unwrap();
        b.asset_file(
            "t",
            at("/usr/local/bin/tool"),
            &asset.name,
            member,
            Ownership::root(0o755),
        )
        .unwrap();
    }

    #[tokio::test]
    async fn a_plain_asset_is_downloaded_once_installed_verified_and_recorded_by_source() {
        let mirror = tempfile::tempdir().unwrap();
        let tool = asset(&mirror, "tool", b"tool v1", ArchiveKind::Plain);
        let mut node = Node::new();
        node.want(|b| install(b, &tool, None));
        let plan = node.plan().await;
        let lines: Vec<String> = plan.steps.iter().map(|s| s.describe()).collect();
        assert_eq!(
            lines[lines.len() - 2..],
            [
                "download tool: not in the cache: download needed",
                "install /usr/local/bin/tool: missing",
            ]
        );
        let install_step = plan.steps.last().unwrap();
        assert!(install_step.after.contains(&(plan.steps.len() - 2)));
        let json = serde_json::to_value(install_step).unwrap();
        assert_eq!(json["digest"], digest(b"tool v1"));
        assert!(json.get("member").is_none());
        node.converge().await;
        assert_eq!(node.read("/usr/local/bin/tool"), "tool v1");
        let record = &node.state.files["/usr/local/bin/tool"];
        assert_eq!(record.digest, digest(b"tool v1"));
        assert_eq!(record.mode, 0o755);
        assert_eq!(
            record.source,
            Some(AssetSource::new(digest(b"tool v1"), None))
        );
        assert!(node.plan().await.is_empty());

        // Damaged on the node: installed again from the cache, nothing downloaded.
        node.put("/usr/local/bin/tool", "tampered");
        let lines = node.planned().await;
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("install /usr/local/bin/tool: content differs (sha256 "),
            "{lines:?}"
        );
        std::fs::remove_file(mirror.path().join("tool")).unwrap();
        node.converge().await;
        assert_eq!(node.read("/usr/local/bin/tool"), "tool v1");
    }

    #[tokio::test]
    async fn a_member_digest_only_the_download_tells_is_filled_in_for_the_services_reading_it() {
        let mirror = tempfile::tempdir().unwrap();
        let archive = asset(
            &mirror,
            "tools.tar.gz",
            &tar_gz("bin/tool", b"member v1"),
            ArchiveKind::TarGz,
        );
        let mut node = Node::new();
        node.want(|b| {
            install(b, &archive, Some("bin/tool"));
            b.service(
                "t",
                DesiredService {
                    unit: UnitName::try_from("tool.service").unwrap(),
                    enabled: false,
                    running: true,
                    inputs: vec![at("/usr/local/bin/tool")],
                    ready_with_peers: false,
                },
            )
            .unwrap();
        });
        let plan = node.plan().await;
        // Downloaded, then extracted in its own step, then the member installed.
        let lines: Vec<String> = plan.steps.iter().map(|s| s.describe()).collect();
        let at_line = |line: &str| {
            lines
                .iter()
                .position(|l| l == line)
                .unwrap_or_else(|| panic!("{line:?} not in {lines:?}"))
        };
        let download = at_line("download tools.tar.gz: not in the cache: download needed");
        let extract = at_line("extract tools.tar.gz: an archive: extracted once downloaded");
        let install = at_line("install /usr/local/bin/tool: missing");
        assert_eq!(plan.steps[extract].after, vec![download]);
        assert!(plan.steps[install].after.contains(&extract));
        let source = AssetSource::new(archive.sha256.as_str(), Some("bin/tool"));
        let Some(Action::StartUnit(start)) = plan.steps.last().map(|s| &s.action) else {
            panic!("{}", plan.render())
        };
        assert_eq!(
            start.trigger.inputs["/usr/local/bin/tool"],
            source.pending()
        );
        let Some(Action::InstallAsset(install)) = plan
            .steps
            .iter()
            .map(|s| &s.action)
            .find(|a| matches!(a, Action::InstallAsset(_)))
        else {
            panic!("{}", plan.render())
        };
        assert_eq!(install.digest, None);
        node.converge().await;
        assert_eq!(node.read("/usr/local/bin/tool"), "member v1");
        let record = &node.state.files["/usr/local/bin/tool"];
        assert_eq!(record.digest, digest(b"member v1"));
        assert_eq!(record.source, Some(source));
        let started =
            &node.state.applied[&AppliedKey::Service(UnitName::try_from("tool.service").unwrap())];
        assert_eq!(started.inputs["/usr/local/bin/tool"], digest(b"member v1"));
        // Extracted now: the digest is known before anything is downloaded.
        assert!(node.plan().await.is_empty());
    }
}
