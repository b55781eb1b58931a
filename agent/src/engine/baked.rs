//! Files baked into the machine image (`nodewright prebake`, listed in the bake
//! manifest): at boot they are hashed in parallel before planning; a file whose bytes
//! match is recorded as verified (so the plan leaves it alone and nothing is
//! downloaded), one that does not is planned like any drifted file. Reading them all
//! at once also pulls a freshly restored EBS volume's blocks in parallel.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::keys::AssetSource;
use super::kinds::permissions::Perms;
use super::state::{FileRecord, State};
use crate::assets::bake::{BakeManifest, BakedFile};
use crate::assets::hash;
use crate::host::Host;
use crate::host::fs::{self as hostfs, Existing};

#[derive(Debug, Default)]
pub struct BakeCheck {
    pub verified: usize,
    /// Baked files whose bytes are not what was baked (or that are gone).
    pub mismatched: Vec<String>,
    pub elapsed: Duration,
}

/// Hashes, `parallel` at a time, every baked file that is still `wanted` and that the
/// state has no record of yet, and records those that match. Runs once per image:
/// afterwards the records exist.
pub fn verify_baked(
    host: &Host,
    state: &mut State,
    wanted: &BTreeSet<&str>,
    parallel: usize,
) -> Option<BakeCheck> {
    let manifest = BakeManifest::load(host)?;
    let began = Instant::now();
    let pending: Vec<&BakedFile> = manifest
        .files
        .iter()
        .filter(|f| wanted.contains(f.path.as_str()) && !state.files.contains_key(&f.path))
        .collect();
    if pending.is_empty() {
        return None;
    }
    let paths: Vec<PathBuf> = pending
        .iter()
        .map(|f| host.root().join(f.path.trim_start_matches('/')))
        .collect();
    let digests = hash::files_parallel(&paths, parallel);
    let mut check = BakeCheck::default();
    for ((file, path), digest) in pending.iter().zip(&paths).zip(digests) {
        match (digest, stat_of(path)) {
            (Ok(digest), Some(stat)) if digest == file.sha256 => {
                state.files.insert(
                    file.path.clone(),
                    FileRecord {
                        source: file.source.as_deref().and_then(AssetSource::parse),
                        ..FileRecord::file(digest, Perms::of(&stat), &stat)
                    },
                );
                check.verified += 1;
            }
            _ => check.mismatched.push(file.path.clone()),
        }
    }
    check.elapsed = began.elapsed();
    tracing::info!(
        verified = check.verified,
        mismatched = check.mismatched.len(),
        seconds = format!("{:.2}", check.elapsed.as_secs_f64()),
        "verified the files baked into the image"
    );
    for path in &check.mismatched {
        tracing::warn!(
            path,
            "a baked file differs from the bake manifest; it will be replaced"
        );
    }
    Some(check)
}

fn stat_of(path: &Path) -> Option<hostfs::FileStat> {
    match hostfs::inspect(path).ok()? {
        Existing::File(stat) => Some(stat),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::bake::BakeManifest;

    #[test]
    fn matching_baked_files_are_recorded_once_and_changed_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        let put = |path: &str, bytes: &[u8]| {
            let real = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(real.parent().unwrap()).unwrap();
            std::fs::write(real, bytes).unwrap();
        };
        put("/usr/local/bin/kubelet", b"kubelet");
        put("/etc/app.conf", b"edited after the bake");
        let baked = |path: &str, bytes: &[u8], source: Option<&str>| BakedFile {
            path: path.to_owned(),
            sha256: crate::spec::digest(bytes),
            mode: 0o755,
            source: source.map(str::to_owned),
        };
        let kubelet_source = format!("sha256:{}", crate::spec::digest(b"kubelet"));
        BakeManifest {
            files: vec![
                baked("/usr/local/bin/kubelet", b"kubelet", Some(&kubelet_source)),
                baked("/etc/app.conf", b"as baked", None),
                baked("/etc/gone.conf", b"x", None),
                baked("/etc/not-wanted.conf", b"x", None),
            ],
            ..BakeManifest::default()
        }
        .save(&host)
        .unwrap();
        let wanted: BTreeSet<&str> = ["/usr/local/bin/kubelet", "/etc/app.conf", "/etc/gone.conf"]
            .into_iter()
            .collect();

        let mut state = State::default();
        let check = verify_baked(&host, &mut state, &wanted, 2).unwrap();
        assert_eq!(check.verified, 1);
        assert_eq!(check.mismatched, ["/etc/app.conf", "/etc/gone.conf"]);
        let record = &state.files["/usr/local/bin/kubelet"];
        assert_eq!(record.digest, crate::spec::digest(b"kubelet"));
        assert_eq!(
            record.source.as_ref().map(ToString::to_string),
            Some(kubelet_source)
        );
        assert!(record.stat.is_some());
        assert_eq!(state.files.len(), 1);

        // Recorded files are not hashed again; only the mismatched ones are pending.
        let again = verify_baked(&host, &mut state, &wanted, 2).unwrap();
        assert_eq!(again.verified, 0);
        assert_eq!(again.mismatched.len(), 2);
        let done: BTreeSet<&str> = ["/usr/local/bin/kubelet"].into_iter().collect();
        assert!(verify_baked(&host, &mut state, &done, 2).is_none());
    }
}
