//! Proofs are single-use: a signed proof STS would accept again for minutes (its date
//! is fresh) gets nothing the second time it reaches this shim. Across replicas, the
//! bootstrap record carries the proof that wrote it (see `bootstrap::claim`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Signatures seen, each kept while a proof with it could still pass the date check.
#[derive(Debug)]
pub struct ReplayCache {
    keep: Duration,
    max: usize,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    signatures: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl ReplayCache {
    /// `keep`: how long a proof stays usable (twice the clock skew allowed, and some).
    /// `max`: the most signatures remembered (the oldest go first beyond it).
    pub fn new(keep: Duration, max: usize) -> Self {
        Self {
            keep,
            max: max.max(1),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Records `signature`; false if it was seen before (a replay).
    pub fn first_use(&self, signature: &str) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((at, _)) = seen.order.front() {
            if now.duration_since(*at) < self.keep && seen.order.len() < self.max {
                break;
            }
            if let Some((_, old)) = seen.order.pop_front() {
                seen.signatures.remove(&old);
            }
        }
        if seen.signatures.contains_key(signature) {
            return false;
        }
        seen.signatures.insert(signature.to_owned(), now);
        seen.order.push_back((now, signature.to_owned()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_good_once() {
        let cache = ReplayCache::new(Duration::from_secs(600), 2);
        assert!(cache.first_use("a"));
        assert!(!cache.first_use("a"));
        assert!(cache.first_use("b"));
        // Beyond `max`, the oldest is forgotten first.
        assert!(cache.first_use("c"));
        assert!(!cache.first_use("c"));
        let expiring = ReplayCache::new(Duration::ZERO, 10);
        assert!(expiring.first_use("a"));
        assert!(expiring.first_use("a"), "kept no longer than asked");
    }
}
