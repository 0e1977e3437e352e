//! Distribution of group calls over real socket plugins for every strategy,
//! counted on the servers, and consistent hashing moving about 1/N of keys
//! when a member is added or removed.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hangar_plugin::{Balancer, ExecOptions, Manager, Strategy};
use serde_json::{json, Value};
use support::{config, knobs, unix_plugin, Knobs, Server};

struct Group {
    _dir: tempfile::TempDir,
    _servers: Vec<Server>,
    knobs: Vec<Arc<Knobs>>,
    m: Manager,
}

async fn group(strategy: &str, members: &[(&str, Value)]) -> Group {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    let mut ks = Vec::new();
    let mut plugins = Vec::new();
    for (name, extra) in members {
        let k = knobs(name);
        servers.push(Server::start(&dir.path().join(format!("{name}.sock")), Arc::clone(&k)).await);
        ks.push(k);
        let mut extra = extra.clone();
        extra["type"] = json!("g");
        plugins.push(unix_plugin(name, dir.path(), extra));
    }
    let m = Manager::new();
    m.load(config(
        json!({"load_balancing": strategy, "plugins": plugins}),
    ))
    .await
    .unwrap();
    Group {
        _dir: dir,
        _servers: servers,
        knobs: ks,
        m,
    }
}

impl Group {
    fn counts(&self) -> Vec<u32> {
        self.knobs
            .iter()
            .map(|k| k.calls.load(Ordering::SeqCst))
            .collect()
    }

    async fn call(&self, key: Option<String>, data: Value) -> String {
        let out = self
            .m
            .execute_group(
                "g",
                data,
                ExecOptions {
                    key,
                    ..ExecOptions::default()
                },
            )
            .await
            .unwrap();
        out["plugin"].as_str().unwrap().to_string()
    }
}

fn abc() -> Vec<(&'static str, Value)> {
    vec![("a", json!({})), ("b", json!({})), ("c", json!({}))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_exact() {
    let g = group("round-robin", &abc()).await;
    for _ in 0..300 {
        g.call(None, json!({})).await;
    }
    assert_eq!(g.counts(), [100, 100, 100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_is_roughly_uniform() {
    let g = group("random", &abc()).await;
    for _ in 0..300 {
        g.call(None, json!({})).await;
    }
    // Binomial(300, 1/3): sd ≈ 8.2, so ±40 is about 5 sd.
    for c in g.counts() {
        assert!((60..=140).contains(&c), "{:?}", g.counts());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_random_follows_weights() {
    let g = group(
        "weighted-random",
        &[
            ("a", json!({"weight": 1})),
            ("b", json!({"weight": 2})),
            ("c", json!({"weight": 3})),
        ],
    )
    .await;
    for _ in 0..600 {
        g.call(None, json!({})).await;
    }
    let c = g.counts();
    for (got, want) in c.iter().zip([100u32, 200, 300]) {
        assert!(got.abs_diff(want) <= 60, "{c:?}");
    }
    assert!(c[0] < c[1] && c[1] < c[2], "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_sends_everything_to_the_highest_and_fails_over_to_the_next() {
    let mut g = group(
        "priority",
        &[
            ("a", json!({"priority": 2})),
            ("b", json!({"priority": 1})),
            ("c", json!({"priority": 3})),
        ],
    )
    .await;
    // The highest number is the highest priority (seed: primary 100, secondary 50).
    for _ in 0..20 {
        assert_eq!(g.call(None, json!({})).await, "c");
    }
    g._servers[2].kill();
    for _ in 0..5 {
        assert_eq!(g.call(None, json!({})).await, "a");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_spreads_concurrent_calls() {
    let g = Arc::new(group("least-connections", &abc()).await);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..9u64 {
        let g2 = Arc::clone(&g);
        set.spawn(async move { g2.call(None, json!({"sleep_ms": 2000})).await });
        // Each call is in flight before the next one picks.
        let t0 = std::time::Instant::now();
        loop {
            let active: u64 =
                g.m.balancer("g")
                    .unwrap()
                    .stats()
                    .iter()
                    .map(|s| s.active)
                    .sum();
            if active > i {
                break;
            }
            assert!(t0.elapsed() < std::time::Duration::from_secs(10));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    while set.join_next().await.is_some() {}
    assert_eq!(g.counts(), [3, 3, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_latency_avoids_the_slow_member() {
    let g = group("least-latency", &abc()).await;
    g.knobs[1].delay_ms.store(50, Ordering::SeqCst);
    for _ in 0..60 {
        g.call(None, json!({})).await;
    }
    let c = g.counts();
    assert!(
        c[1] <= 2,
        "the slow member is measured once or twice, then avoided: {c:?}"
    );
    assert_eq!(c.iter().sum::<u32>(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_keys_on_their_member_and_spreads_them() {
    let g = group("consistent-hash", &abc()).await;
    let mut owner = HashMap::new();
    for i in 0..300 {
        let key = format!("user-{i}");
        owner.insert(key.clone(), g.call(Some(key), json!({})).await);
    }
    for c in g.counts() {
        assert!(c >= 50, "{:?}", g.counts());
    }
    for (key, who) in owner.iter().take(50) {
        assert_eq!(&g.call(Some(key.clone()), json!({})).await, who);
    }
}

fn owners(b: &Balancer, keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|k| b.candidates(Some(k)).unwrap()[0].clone())
        .collect()
}

#[test]
fn consistent_hash_moves_about_one_nth_of_keys() {
    let keys: Vec<String> = (0..20_000).map(|i| format!("key-{i}")).collect();
    let b = Balancer::new(Strategy::ConsistentHash);
    for i in 0..10 {
        b.add(&format!("m{i}"), 1, 0);
    }
    let before = owners(&b, &keys);

    b.add("m10", 1, 0);
    let after_add = owners(&b, &keys);
    let moved: Vec<usize> = (0..keys.len())
        .filter(|&i| before[i] != after_add[i])
        .collect();
    let share = moved.len() as f64 / keys.len() as f64;
    assert!(share <= 1.5 / 11.0, "added: {share}");
    assert!(
        moved.iter().all(|&i| after_add[i] == "m10"),
        "keys only move to the new member"
    );

    b.remove("m3");
    let after_remove = owners(&b, &keys);
    let moved: Vec<usize> = (0..keys.len())
        .filter(|&i| after_add[i] != after_remove[i])
        .collect();
    let share = moved.len() as f64 / keys.len() as f64;
    assert!(share <= 1.5 / 11.0, "removed: {share}");
    assert!(
        moved.iter().all(|&i| after_add[i] == "m3"),
        "only m3's keys move"
    );
}
