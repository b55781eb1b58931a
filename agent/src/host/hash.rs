//! sha256 of files: streamed with a large buffer, and many files at once on a few
//! threads. Hashing is aws-lc's (the assembly OpenSSL and BoringSSL use, with the CPU's
//! SHA extensions where present): every asset byte is hashed at least twice (download,
//! install), so this is the agent's hottest loop, and it must not depend on the
//! size-optimised build the binary ships with.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aws_lc_rs::digest::{Context, SHA256};

/// Read size: large enough that syscalls cost nothing next to hashing.
pub const BUFFER: usize = 1 << 20;

/// A running sha256.
#[derive(Clone)]
pub struct Hasher(Context);

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher {
    pub fn new() -> Self {
        Self(Context::new(&SHA256))
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest in lowercase hex.
    pub fn finish(self) -> String {
        hex::encode(self.0.finish().as_ref())
    }
}

pub fn file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Hasher::new();
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finish())
}

/// Hashes `paths` on up to `parallel` threads; results in the same order. Reading many
/// files at once also warms a freshly restored EBS volume, whose blocks load on first
/// read, faster than one reader could.
pub fn files_parallel(paths: &[PathBuf], parallel: usize) -> Vec<io::Result<String>> {
    let next = Mutex::new(0usize);
    let results: Vec<Mutex<Option<io::Result<String>>>> =
        paths.iter().map(|_| Mutex::new(None)).collect();
    let workers = parallel.clamp(1, paths.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = {
                        let mut next = next.lock().unwrap_or_else(|e| e.into_inner());
                        let index = *next;
                        *next += 1;
                        index
                    };
                    let Some(path) = paths.get(index) else {
                        break;
                    };
                    let result = file(path);
                    *results[index].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| Err(io::Error::other("not hashed")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for i in 0..5u8 {
            let path = dir.path().join(i.to_string());
            std::fs::write(&path, vec![i; 3 << 20]).unwrap();
            paths.push(path);
        }
        paths.push(dir.path().join("missing"));
        let results = files_parallel(&paths, 3);
        for (i, result) in results.iter().take(5).enumerate() {
            let want = crate::spec::digest(&vec![i as u8; 3 << 20]);
            assert_eq!(result.as_ref().unwrap(), &want);
        }
        assert!(results[5].is_err());
    }
}
