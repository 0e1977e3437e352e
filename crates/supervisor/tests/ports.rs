//! The port registry against the real host: real binds, real concurrency.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Arc;

use hangar_supervisor::{PortErrorKind, PortRange, PortRegistry};
use proptest::prelude::*;

/// A range of `n` ports below the host's ephemeral range (where the kernel picks
/// ports for outgoing connections and `bind(0)`, so any program may hold one at
/// any time), at a base derived from the pid so parallel test binaries do not
/// fight over the same ports.
fn range(tag: u16, n: u16) -> PortRange {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // 40 ports per test binary, 8 per test: slots from 10000 up to the range.
    let slots = u32::from(ephemeral_start.saturating_sub(10000) / 40).max(1);
    let base = 10000 + (std::process::id() % slots) as u16 * 40 + tag * 8;
    assert!(
        base + n <= ephemeral_start.max(10040),
        "no room below the ephemeral range"
    );
    PortRange::new("test", base, base + n - 1)
}

#[test]
fn skips_ports_another_program_holds() {
    let r = range(0, 4);
    let busy = TcpListener::bind(("0.0.0.0", r.start)).unwrap();
    let reg = PortRegistry::new([r.clone()]).unwrap();
    assert!(!reg.is_available(r.start));
    let p = reg.allocate("test", "a").unwrap();
    assert_ne!(p, r.start, "handed out a port a listener holds");
    assert_eq!(
        reg.reserve(r.start, "b").unwrap_err().kind,
        PortErrorKind::NotBindable
    );
    drop(busy);
    assert!(reg.is_available(r.start));
}

#[test]
fn never_two_owners_and_exhaustion_is_an_error() {
    let r = range(1, 3);
    let reg = PortRegistry::new([r.clone()]).unwrap();
    let got: HashSet<u16> = (0..3)
        .map(|i| reg.allocate("test", &format!("o{i}")).unwrap())
        .collect();
    assert_eq!(got.len(), 3);
    let err = reg.allocate("test", "late").unwrap_err();
    assert_eq!(err.code(), "PORT_RANGE_EXHAUSTED");
    assert!(err.message.contains("late"));
    let p = *got.iter().next().unwrap();
    let owner = reg.owner(p).unwrap();
    assert_eq!(
        reg.reserve(p, "thief").unwrap_err().kind,
        PortErrorKind::InUse
    );
    assert!(
        reg.reserve(p, &owner).is_ok(),
        "re-reserving one's own port is idempotent"
    );
    assert!(reg.release(p));
    assert!(!reg.release(p));
    assert_eq!(reg.allocate("test", "late").unwrap(), p);
}

#[test]
fn release_all_frees_an_owner_and_is_idempotent() {
    let reg = PortRegistry::new([range(2, 6)]).unwrap();
    let a1 = reg.allocate("test", "a").unwrap();
    let a2 = reg.allocate("test", "a").unwrap();
    let b = reg.allocate("test", "b").unwrap();
    assert_eq!(reg.ports_of("a"), vec![a1, a2]);
    assert_eq!(reg.release_all("a"), vec![a1, a2]);
    assert!(reg.release_all("a").is_empty());
    assert_eq!(
        reg.allocations().into_iter().collect::<Vec<_>>(),
        vec![(b, "b".to_string())]
    );
}

#[test]
fn many_threads_allocating_at_once_get_distinct_ports_and_release_all() {
    let r = range(3, 8);
    let reg =
        Arc::new(PortRegistry::new([PortRange::new("test", r.start, r.start + 199)]).unwrap());
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let reg = Arc::clone(&reg);
            std::thread::spawn(move || {
                let owner = format!("t{t}");
                let mine: Vec<u16> = (0..10)
                    .map(|_| reg.allocate("test", &owner).unwrap())
                    .collect();
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    let distinct: HashSet<u16> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "a port went to two owners");
    for t in 0..16 {
        assert_eq!(reg.release_all(&format!("t{t}")).len(), 10);
    }
    assert!(reg.allocations().is_empty());
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(u8),
    Release(u8),
    ReleaseAll(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4).prop_map(Op::Alloc),
        (0u8..12).prop_map(Op::Release),
        (0u8..4).prop_map(Op::ReleaseAll),
    ]
}

proptest! {
    // A failure prints its minimal case; nothing is written into the source tree.
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
    /// Against a model: allocations are unique, within the range, owned by whom the
    /// model says, and exhaustion happens exactly when the model is full.
    #[test]
    fn allocator_matches_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        let r = range(4, 6);
        let reg = PortRegistry::new([r.clone()]).unwrap();
        let mut model: std::collections::BTreeMap<u16, u8> = Default::default();
        let mut handed: Vec<u16> = Vec::new();
        for o in ops {
            match o {
                Op::Alloc(owner) => match reg.allocate("test", &owner.to_string()) {
                    Ok(p) => {
                        prop_assert!(p >= r.start && p <= r.end);
                        prop_assert!(!model.contains_key(&p));
                        model.insert(p, owner);
                        handed.push(p);
                    }
                    Err(e) => {
                        prop_assert_eq!(e.kind, PortErrorKind::Exhausted);
                        prop_assert_eq!(model.len(), 6);
                    }
                },
                Op::Release(i) => {
                    if let Some(p) = handed.get(i as usize).copied() {
                        prop_assert_eq!(reg.release(p), model.remove(&p).is_some());
                    }
                }
                Op::ReleaseAll(owner) => {
                    let mut freed = reg.release_all(&owner.to_string());
                    freed.sort();
                    let mut want: Vec<u16> = model.iter().filter(|(_, o)| **o == owner).map(|(p, _)| *p).collect();
                    want.sort();
                    model.retain(|_, o| *o != owner);
                    prop_assert_eq!(freed, want);
                }
            }
            let now: Vec<(u16, String)> = reg.allocations().into_iter().collect();
            let expect: Vec<(u16, String)> = model.iter().map(|(p, o)| (*p, o.to_string())).collect();
            prop_assert_eq!(now, expect);
        }
    }
}
