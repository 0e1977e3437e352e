//! The network number allocator and the stored record (no root needed).

use std::net::Ipv4Addr;

use hangar_net::{
    LinuxBackend, LinuxConfig, NetAllocator, NetErrorKind, NetPool, NetRecord, NetSpec, NetState,
    NetworkBackend,
};
use proptest::prelude::*;

fn pool(first: u32, last: u32) -> NetPool {
    NetPool::new(Ipv4Addr::new(10, 99, 0, 0), first, last)
}

#[test]
fn the_default_pool_is_the_seeds() {
    let p = NetPool::default();
    assert_eq!(p.host_addr(7), Ipv4Addr::new(10, 99, 7, 1));
    assert_eq!(p.instance_addr(7), Ipv4Addr::new(10, 99, 7, 2));
    assert_eq!((p.first, p.last), (1, 254));
    // A wider base goes past the third octet.
    let wide = NetPool::new(Ipv4Addr::new(10, 64, 0, 0), 1, 1000);
    assert_eq!(wide.instance_addr(300), Ipv4Addr::new(10, 65, 44, 2));
}

#[test]
fn exhaustion_has_a_clear_code_and_release_makes_room() {
    let a = NetAllocator::new(pool(5, 7)).unwrap();
    let got: Vec<u32> = ["a", "b", "c"]
        .iter()
        .map(|o| a.allocate(o).unwrap())
        .collect();
    assert_eq!(got, [5, 6, 7]);
    let e = a.allocate("d").unwrap_err();
    assert_eq!(e.kind, NetErrorKind::Exhausted);
    assert_eq!(e.code(), "NET_RANGE_EXHAUSTED");
    assert!(e.message.contains("5..=7"), "{e}");
    // Same owner again: same number, no new one.
    assert_eq!(a.allocate("b").unwrap(), 6);
    assert_eq!(a.release(6).as_deref(), Some("b"));
    assert_eq!(a.allocate("d").unwrap(), 6);
    assert_eq!(a.release_owner("a"), Some(5));
    assert_eq!(a.number_of("a"), None);
    assert_eq!(a.len(), 2);
}

#[test]
fn a_released_number_is_not_reused_at_once() {
    let a = NetAllocator::new(pool(1, 10)).unwrap();
    let n = a.allocate("x").unwrap();
    a.release(n);
    assert_ne!(a.allocate("y").unwrap(), n);
}

#[test]
fn reserve_and_restore_refuse_conflicts() {
    let a = NetAllocator::new(pool(1, 10)).unwrap();
    a.reserve(3, "x").unwrap();
    a.reserve(3, "x").unwrap();
    assert_eq!(
        a.reserve(3, "y").unwrap_err().code(),
        "NET_NUMBER_UNAVAILABLE"
    );
    assert_eq!(
        a.reserve(4, "x").unwrap_err().code(),
        "NET_NUMBER_UNAVAILABLE"
    );
    assert_eq!(
        a.reserve(11, "z").unwrap_err().code(),
        "NET_NUMBER_UNAVAILABLE"
    );

    let b = LinuxBackend::new(LinuxConfig {
        pool: pool(1, 10),
        ..LinuxConfig::default()
    })
    .unwrap();
    let r1 = b.plan(&NetSpec::new("i1", 2)).unwrap();
    let r2 = b.plan(&NetSpec::new("i2", 2)).unwrap();
    let fresh = NetAllocator::new(pool(1, 10)).unwrap();
    let bad = fresh.restore([&r1, &r2]);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0.instance_id, "i2");
    assert_eq!(fresh.owner(2).as_deref(), Some("i1"));
    assert_ne!(fresh.allocate("i3").unwrap(), 2);
}

#[test]
fn bad_pools_are_refused() {
    assert!(NetAllocator::new(pool(0, 5)).is_err());
    assert!(NetAllocator::new(pool(6, 5)).is_err());
    assert!(NetAllocator::new(NetPool::new(Ipv4Addr::new(10, 99, 0, 5), 1, 5)).is_err());
    assert!(NetAllocator::new(NetPool::new(Ipv4Addr::new(255, 255, 0, 0), 1, 300)).is_err());
}

#[test]
fn a_record_round_trips_through_json() {
    let b = LinuxBackend::new(LinuxConfig::default()).unwrap();
    let mut r = b.plan(&NetSpec::new("inst", 9)).unwrap();
    assert_eq!(r.namespace, "hg-9");
    assert_eq!(r.namespace_path.to_str(), Some("/run/netns/hg-9"));
    assert_eq!(
        (r.host_if.as_str(), r.instance_if.as_str()),
        ("hg-9-h", "hg-9-i")
    );
    assert_eq!(r.table, 4_200_009);
    assert_eq!(r.fwmark, 0x0042_0009);
    r.state = NetState::Error {
        step: "veth".into(),
        cause: "boom".into(),
    };
    let text = r.to_json();
    assert!(text.contains("\"state\":\"error\""), "{text}");
    assert_eq!(NetRecord::from_json(&text).unwrap(), r);
    assert_eq!(
        NetRecord::from_json("{").unwrap_err().code(),
        "NET_RECORD_INVALID"
    );
}

proptest! {
    // A failure prints its minimal case; nothing is written into the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn never_two_owners_for_one_number(ops in proptest::collection::vec((0u8..3, 0u8..12), 1..200)) {
        let a = NetAllocator::new(pool(1, 8)).unwrap();
        for (op, who) in ops {
            let owner = format!("o{who}");
            match op {
                0 => { let _ = a.allocate(&owner); }
                1 => { a.release_owner(&owner); }
                _ => { let _ = a.reserve(u32::from(who % 9) + 1, &owner); }
            }
            let mut seen = std::collections::HashSet::new();
            for n in 1..=8 {
                if let Some(o) = a.owner(n) {
                    prop_assert!(seen.insert(o.clone()), "{o} holds two numbers");
                    prop_assert_eq!(a.number_of(&o), Some(n));
                }
            }
        }
    }
}
