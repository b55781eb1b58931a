//! Limits per source address: connections open at once and requests per second.
//!
//! They are the first checks a connection and a request meet, cost nothing upstream, and
//! keep one client (a flood, a slow-body attacker) from taking what others need. An IPv6
//! source counts by its /64, which one host can fill with addresses at will.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The address limits are kept by: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Connections open per source.
#[derive(Debug)]
pub struct ConnectionCounts {
    per_source: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection; the count goes down when it is dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    counts: Arc<ConnectionCounts>,
    key: IpAddr,
}

impl ConnectionCounts {
    pub fn new(per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            per_source,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, unless that source has all of its own open.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionGuard> {
        let key = source_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.per_source {
            return None;
        }
        *count += 1;
        Some(ConnectionGuard {
            counts: self.clone(),
            key,
        })
    }

    /// Connections open from `ip`'s source.
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&source_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Requests per second per source.
pub struct RequestRates {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl RequestRates {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        }
    }

    /// Whether a request from `ip` may go on.
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.limiter.check_key(&source_key(ip)).is_ok()
    }

    /// Forgets sources whose budget is full again (call now and then: the map is bounded
    /// by the sources seen recently, not by all sources ever seen).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(other));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn connections_are_counted_per_source_and_given_back() {
        let counts = ConnectionCounts::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = counts.try_open(a).unwrap();
        let _second = counts.try_open(a).unwrap();
        assert!(counts.try_open(a).is_none(), "a third from one source");
        assert!(
            counts.try_open(b).is_some(),
            "another source is not affected"
        );
        drop(first);
        assert_eq!(counts.open(a), 1);
        assert!(counts.try_open(a).is_some());
    }

    #[test]
    fn one_source_spending_its_rate_leaves_others_theirs() {
        let rates = RequestRates::new(1, 3);
        let flood: IpAddr = "10.0.0.1".parse().unwrap();
        let node: IpAddr = "10.0.0.2".parse().unwrap();
        let allowed = (0..100).filter(|_| rates.allow(flood)).count();
        assert_eq!(allowed, 3);
        assert!(rates.allow(node));
        rates.forget_idle();
    }
}
