//! Load balancing over plugin instances with the seed's seven strategies
//! (round-robin, random, least-connections, least-latency, weighted-random,
//! consistent-hash, priority), members enabled and disabled at run time, stats
//! per member (success rate, average latency, health score), and failover: a
//! pick is an ordered list of candidates, the strategy's choice first.
//!
//! Consistent hashing puts `VNODES × weight` points per member on a ring
//! (FNV-1a), so adding or removing one of N members moves about 1/N of keys.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// How a member is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// In turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// Fewest calls in flight.
    LeastConnections,
    /// Lowest average latency (members never measured first).
    LeastLatency,
    /// At random, in proportion to weight.
    WeightedRandom,
    /// By key, on a hash ring: the same key goes to the same member.
    ConsistentHash,
    /// The highest priority number that is available (the seed: "routes to
    /// the highest priority healthy plugin", e.g. primary 100, secondary 50).
    Priority,
}

/// Points per unit of weight on the hash ring.
const VNODES: u32 = 160;

#[derive(Debug)]
struct Member {
    name: String,
    weight: u32,
    priority: u32,
    enabled: AtomicBool,
    healthy: AtomicBool,
    active: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    latency_total_us: AtomicU64,
}

/// A member's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberStats {
    /// Name.
    pub name: String,
    /// Calls recorded.
    pub requests: u64,
    /// Successful share of them (1.0 when none yet).
    pub success_rate: f64,
    /// Mean latency of recorded calls.
    pub avg_latency: Option<Duration>,
    /// Calls in flight.
    pub active: u64,
    /// 0–100: success rate, halved when unhealthy, 0 when disabled.
    pub health_score: f64,
    /// Taking calls.
    pub enabled: bool,
    /// Last health check passed.
    pub healthy: bool,
}

/// A balancer over named members.
#[derive(Debug)]
pub struct Balancer {
    strategy: Strategy,
    members: RwLock<Vec<Arc<Member>>>,
    ring: RwLock<Vec<(u64, usize)>>,
    next: AtomicUsize,
}

/// FNV-1a, 64-bit: stable across runs and builds.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Spread the low bits (FNV's are weak for short inputs).
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl Balancer {
    /// An empty balancer.
    pub fn new(strategy: Strategy) -> Balancer {
        Balancer {
            strategy,
            members: RwLock::new(Vec::new()),
            ring: RwLock::new(Vec::new()),
            next: AtomicUsize::new(0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Member>>> {
        self.members.read().unwrap_or_else(|p| p.into_inner())
    }

    fn rebuild_ring(&self, members: &[Arc<Member>]) {
        let mut ring = Vec::new();
        for (i, m) in members.iter().enumerate() {
            for v in 0..VNODES * m.weight.max(1) {
                ring.push((fnv(format!("{}#{v}", m.name).as_bytes()), i));
            }
        }
        ring.sort_unstable();
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
    }

    /// Add (or replace) a member.
    pub fn add(&self, name: &str, weight: u32, priority: u32) {
        let mut ms = self.members.write().unwrap_or_else(|p| p.into_inner());
        ms.retain(|m| m.name != name);
        ms.push(Arc::new(Member {
            name: name.to_string(),
            weight: weight.max(1),
            priority,
            enabled: AtomicBool::new(true),
            healthy: AtomicBool::new(true),
            active: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency_total_us: AtomicU64::new(0),
        }));
        self.rebuild_ring(&ms);
    }

    /// Remove a member; false when there was none.
    pub fn remove(&self, name: &str) -> bool {
        let mut ms = self.members.write().unwrap_or_else(|p| p.into_inner());
        let before = ms.len();
        ms.retain(|m| m.name != name);
        self.rebuild_ring(&ms);
        ms.len() != before
    }

    fn find(&self, name: &str) -> Option<Arc<Member>> {
        self.read().iter().find(|m| m.name == name).cloned()
    }

    /// Take a member out of (or back into) rotation.
    pub fn set_enabled(&self, name: &str, on: bool) -> bool {
        self.find(name)
            .map(|m| m.enabled.store(on, Ordering::Relaxed))
            .is_some()
    }

    /// Mark a member's health (from its health checker).
    pub fn set_healthy(&self, name: &str, ok: bool) -> bool {
        self.find(name)
            .map(|m| m.healthy.store(ok, Ordering::Relaxed))
            .is_some()
    }

    /// Members to try, in order: the strategy's choice first, then the others
    /// available (for failover). Disabled and unhealthy members are left out;
    /// `key` is used by consistent hashing. `LOADBALANCER_1701` when none is
    /// available.
    pub fn candidates(&self, key: Option<&str>) -> Result<Vec<String>, Error> {
        let ms = self.read();
        let up: Vec<usize> = (0..ms.len())
            .filter(|&i| {
                ms[i].enabled.load(Ordering::Relaxed) && ms[i].healthy.load(Ordering::Relaxed)
            })
            .collect();
        if up.is_empty() {
            return Err(Error::new(
                ErrorKind::NoAvailablePlugins,
                "no enabled, healthy plugin to take the call",
            ));
        }
        let mut order: Vec<usize> = match self.strategy {
            Strategy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed) % up.len();
                up.iter()
                    .cycle()
                    .skip(start)
                    .take(up.len())
                    .copied()
                    .collect()
            }
            Strategy::Random => {
                let mut v = up.clone();
                fastrand::shuffle(&mut v);
                v
            }
            Strategy::LeastConnections => {
                let mut v = up.clone();
                v.sort_by_key(|&i| ms[i].active.load(Ordering::Relaxed));
                v
            }
            Strategy::LeastLatency => {
                let mut v = up.clone();
                // Members never measured sort first, so they get measured.
                v.sort_by_key(|&i| {
                    let n = ms[i].requests.load(Ordering::Relaxed);
                    ms[i]
                        .latency_total_us
                        .load(Ordering::Relaxed)
                        .checked_div(n)
                        .unwrap_or(0)
                });
                v
            }
            Strategy::WeightedRandom => {
                // Weighted order without replacement (Efraimidis–Spirakis keys).
                let mut keyed: Vec<(f64, usize)> = up
                    .iter()
                    .map(|&i| (fastrand::f64().powf(1.0 / f64::from(ms[i].weight)), i))
                    .collect();
                keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
                keyed.into_iter().map(|(_, i)| i).collect()
            }
            Strategy::Priority => {
                let mut v = up.clone();
                v.sort_by_key(|&i| std::cmp::Reverse(ms[i].priority));
                v
            }
            Strategy::ConsistentHash => {
                let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
                let h = fnv(key.unwrap_or_default().as_bytes());
                let start = ring.partition_point(|(p, _)| *p < h);
                let mut v = Vec::with_capacity(up.len());
                for k in 0..ring.len() {
                    let (_, i) = ring[(start + k) % ring.len()];
                    if up.contains(&i) && !v.contains(&i) {
                        v.push(i);
                        if v.len() == up.len() {
                            break;
                        }
                    }
                }
                v
            }
        };
        order.dedup();
        Ok(order.into_iter().map(|i| ms[i].name.clone()).collect())
    }

    /// A call to `name` starts (for least-connections).
    pub fn begin(&self, name: &str) {
        if let Some(m) = self.find(name) {
            m.active.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A call to `name` ended.
    pub fn end(&self, name: &str, ok: bool, latency: Duration) {
        if let Some(m) = self.find(name) {
            let _ = m
                .active
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                    Some(a.saturating_sub(1))
                });
            m.requests.fetch_add(1, Ordering::Relaxed);
            if !ok {
                m.failures.fetch_add(1, Ordering::Relaxed);
            }
            m.latency_total_us.fetch_add(
                latency.as_micros().min(u128::from(u64::MAX)) as u64,
                Ordering::Relaxed,
            );
        }
    }

    /// Every member's numbers.
    pub fn stats(&self) -> Vec<MemberStats> {
        self.read()
            .iter()
            .map(|m| {
                let n = m.requests.load(Ordering::Relaxed);
                let f = m.failures.load(Ordering::Relaxed);
                let rate = if n == 0 {
                    1.0
                } else {
                    (n - f) as f64 / n as f64
                };
                let enabled = m.enabled.load(Ordering::Relaxed);
                let healthy = m.healthy.load(Ordering::Relaxed);
                MemberStats {
                    name: m.name.clone(),
                    requests: n,
                    success_rate: rate,
                    avg_latency: (n > 0).then(|| {
                        Duration::from_micros(m.latency_total_us.load(Ordering::Relaxed) / n)
                    }),
                    active: m.active.load(Ordering::Relaxed),
                    health_score: if !enabled {
                        0.0
                    } else if healthy {
                        100.0 * rate
                    } else {
                        50.0 * rate
                    },
                    enabled,
                    healthy,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(strategy: Strategy, n: usize) -> Balancer {
        let b = Balancer::new(strategy);
        for i in 0..n {
            b.add(&format!("p{i}"), 1, i as u32);
        }
        b
    }

    #[test]
    fn round_robin_takes_turns_and_lists_the_rest_for_failover() {
        let b = with(Strategy::RoundRobin, 3);
        let firsts: Vec<String> = (0..6)
            .map(|_| b.candidates(None).unwrap()[0].clone())
            .collect();
        assert_eq!(firsts, ["p0", "p1", "p2", "p0", "p1", "p2"]);
        assert_eq!(b.candidates(None).unwrap().len(), 3);
    }

    #[test]
    fn disabled_and_unhealthy_members_are_skipped() {
        let b = with(Strategy::Priority, 3);
        assert_eq!(b.candidates(None).unwrap(), ["p2", "p1", "p0"]);
        b.set_enabled("p0", false);
        b.set_healthy("p1", false);
        assert_eq!(b.candidates(None).unwrap(), ["p2"]);
        b.set_enabled("p2", false);
        assert_eq!(b.candidates(None).unwrap_err().code(), "LOADBALANCER_1701");
        let s = b.stats();
        assert_eq!(s[0].health_score, 0.0);
        assert_eq!(s[1].health_score, 50.0);
    }

    #[test]
    fn least_connections_and_least_latency() {
        let b = with(Strategy::LeastConnections, 3);
        b.begin("p0");
        b.begin("p1");
        assert_eq!(b.candidates(None).unwrap()[0], "p2");
        let l = with(Strategy::LeastLatency, 2);
        l.end("p0", true, Duration::from_millis(30));
        l.end("p1", true, Duration::from_millis(10));
        assert_eq!(l.candidates(None).unwrap()[0], "p1");
        let st = l.stats();
        assert_eq!(st[0].avg_latency, Some(Duration::from_millis(30)));
    }

    #[test]
    fn weighted_random_follows_weights() {
        let b = Balancer::new(Strategy::WeightedRandom);
        b.add("heavy", 9, 0);
        b.add("light", 1, 0);
        let heavy = (0..10_000)
            .filter(|_| b.candidates(None).unwrap()[0] == "heavy")
            .count();
        assert!((8_600..=9_400).contains(&heavy), "{heavy}");
    }

    #[test]
    fn consistent_hash_is_stable_and_moves_about_one_nth() {
        let b = with(Strategy::ConsistentHash, 5);
        let keys: Vec<String> = (0..10_000).map(|i| format!("session-{i}")).collect();
        let before: Vec<String> = keys
            .iter()
            .map(|k| b.candidates(Some(k)).unwrap()[0].clone())
            .collect();
        let again: Vec<String> = keys
            .iter()
            .map(|k| b.candidates(Some(k)).unwrap()[0].clone())
            .collect();
        assert_eq!(before, again);
        b.add("p5", 1, 5);
        let after: Vec<String> = keys
            .iter()
            .map(|k| b.candidates(Some(k)).unwrap()[0].clone())
            .collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        // Ideal 1/6 ≈ 16.7 %; every moved key went to the new member.
        assert!(moved < 2_300, "{moved} of 10000 moved");
        assert!(before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b)
            .all(|(_, b)| b == "p5"));
        // Removing a member moves only its own keys.
        b.remove("p2");
        let removed: Vec<String> = keys
            .iter()
            .map(|k| b.candidates(Some(k)).unwrap()[0].clone())
            .collect();
        for ((a, r), _) in after.iter().zip(&removed).zip(&keys) {
            if a != "p2" {
                assert_eq!(a, r);
            }
        }
    }

    #[test]
    fn random_covers_every_member() {
        let b = with(Strategy::Random, 4);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            seen.insert(b.candidates(None).unwrap()[0].clone());
        }
        assert_eq!(seen.len(), 4);
    }
}
