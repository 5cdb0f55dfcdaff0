//! Bounds per source on connections that have not proven anything yet.
//!
//! A pool of handshakes (or of streams waiting for their first message) is
//! shared by everyone; without a bound per source, one host opening silent
//! connections fills it and every other peer is turned away. [`PerSource`]
//! counts what each source holds and refuses more than its share.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts live guards per key; at most `max` per key at once.
#[derive(Debug)]
pub struct PerSource<K: Hash + Eq + Clone> {
    max: usize,
    counts: Mutex<HashMap<K, usize>>,
}

/// One slot of a [`PerSource`], given back when dropped.
#[derive(Debug)]
pub struct SourceGuard<K: Hash + Eq + Clone> {
    set: Arc<PerSource<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> PerSource<K> {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(PerSource {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `key`, or `None` if it already holds `max`. The map holds
    /// only keys with a live guard, so it is bounded by the guards alive.
    pub fn try_acquire(self: &Arc<Self>, key: K) -> Option<SourceGuard<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceGuard {
            set: self.clone(),
            key,
        })
    }

    /// How many slots `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for SourceGuard<K> {
    fn drop(&mut self) {
        let mut counts = self.set.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The source an address counts against: the IPv4 address, or the /64 of an
/// IPv6 address (one host commonly holds a whole /64). IPv4-mapped IPv6
/// addresses count as their IPv4 address.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// The source a connection from `remote` counts against: its IP's
/// [`source_of`], or `None` for a relayed connection (the address is the
/// relay's; the relay bounds its circuits) or an address without an IP.
pub fn source_of_addr(remote: &libp2p::Multiaddr) -> Option<IpAddr> {
    use libp2p::multiaddr::Protocol;
    if remote.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    remote.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(source_of(ip.into())),
        Protocol::Ip6(ip) => Some(source_of(ip.into())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_its_share_and_gets_it_back() {
        let set = PerSource::new(2);
        let a = source_of("10.0.0.1".parse().unwrap());
        let b = source_of("10.0.0.2".parse().unwrap());
        let g1 = set.try_acquire(a).expect("first");
        let g2 = set.try_acquire(a).expect("second");
        assert!(set.try_acquire(a).is_none(), "a third from the same source");
        let _other = set.try_acquire(b).expect("another source is not affected");
        drop(g1);
        let _g3 = set.try_acquire(a).expect("a slot given back is free again");
        drop(g2);
        assert_eq!(set.held(&a), 1);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let x = source_of("2001:db8:1:2::1".parse().unwrap());
        let y = source_of("2001:db8:1:2:ffff::9".parse().unwrap());
        let z = source_of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_eq!(
            source_of("::ffff:10.1.2.3".parse().unwrap()),
            source_of("10.1.2.3".parse().unwrap())
        );
    }
}
