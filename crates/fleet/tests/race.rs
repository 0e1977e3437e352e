//! The guard against double assignment (`write_guarded`), against a real
//! etcd (Debian's `etcd-server`; skipped, saying why, where there is none).

use etcd_client::{Client, LeaderKey, PutOptions};
use hangar_fleet::{write_guarded, Assignment, Guard, Keys, Move, Written};

mod common;

/// A one-member etcd and a client of it (the guard: the member and its
/// directory), or `None` where there is no etcd.
async fn etcd() -> Option<((common::Etcd, tempfile::TempDir), Client)> {
    let bin = common::etcd_bin()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://127.0.0.1:{}", common::free_port());
    let member = common::start(&bin, dir.path(), &url, &[]);
    let c = common::client(&url).await;
    Some(((member, dir), c))
}

async fn campaign(c: &mut Client, name: &str, who: &str) -> (i64, LeaderKey) {
    let lease = c.lease_grant(30, None).await.expect("lease").id();
    let mut r = c.campaign(name, who, lease).await.expect("campaign");
    (lease, r.take_leader().expect("a leader key"))
}

fn place(name: &str, to: &str) -> Move {
    Move {
        name: name.into(),
        from: None,
        to: Some(to.into()),
        guard: Guard::None,
    }
}

/// Two schedulers race to assign the same instances, 100 times each way:
/// a deposed leader against the elected one, and two writers under the
/// same leader key that read the same revision. Every instance ends with
/// exactly one assignment, written once (its version is 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_schedulers_never_assign_twice() {
    let Some((_etcd, mut c)) = etcd().await else {
        return;
    };
    let keys = Keys::new("/race/");
    let election = keys.election();
    // A leads, then loses its lease (a scheduler that does not know yet
    // that it was deposed); B is elected.
    let (lease_a, deposed) = campaign(&mut c, &election, "a").await;
    c.lease_revoke(lease_a).await.expect("revoke");
    let (_lease_b, leader) = campaign(&mut c, &election, "b").await;
    for i in 0..100 {
        let name = format!("w{i}");
        c.put(keys.desired(&name), "{}", None::<PutOptions>)
            .await
            .expect("want");
        let (mut ca, mut cb) = (c.clone(), c.clone());
        let (ma, mb) = (place(&name, "node-a"), place(&name, "node-b"));
        let (ba, bb) = ([(0, &ma)], [(0, &mb)]);
        let (ra, rb) = tokio::join!(
            write_guarded(&mut ca, &keys, &deposed, &ba),
            write_guarded(&mut cb, &keys, &leader, &bb),
        );
        assert_eq!(ra.expect("a's write answered"), Written::Deposed);
        assert_eq!(rb.expect("b's write answered"), Written::Done);

        // Two writers under one leader key, from the same read.
        let name = format!("v{i}");
        c.put(keys.desired(&name), "{}", None::<PutOptions>)
            .await
            .expect("want");
        let (ma, mb) = (place(&name, "node-a"), place(&name, "node-b"));
        let (ba, bb) = ([(0, &ma)], [(0, &mb)]);
        let (ra, rb) = tokio::join!(
            write_guarded(&mut ca, &keys, &leader, &ba),
            write_guarded(&mut cb, &keys, &leader, &bb),
        );
        let mut got = [ra.expect("answered"), rb.expect("answered")];
        got.sort_by_key(|w| *w as u8);
        assert_eq!(got, [Written::Done, Written::Raced], "{name}");
    }
    let all = c
        .get(
            keys.assign_all(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("read");
    assert_eq!(all.kvs().len(), 200);
    for kv in all.kvs() {
        assert_eq!(kv.version(), 1, "{:?} was written twice", kv.key_str());
        let a: Assignment = serde_json::from_slice(kv.value()).expect("an assignment");
        if kv.key_str().unwrap_or("").starts_with("/race/assign/w") {
            assert_eq!(a.node, "node-b", "only the elected scheduler writes");
        }
    }
}

/// A move planned off a lost node is not written once that node registered
/// again, and a move off a draining node not once its drain mark is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_off_a_node_holds_only_while_the_node_is_still_gone_or_draining() {
    let Some((_etcd, mut c)) = etcd().await else {
        return;
    };
    let keys = Keys::new("/guard/");
    let (_lease, leader) = campaign(&mut c, &keys.election(), "s").await;
    c.put(keys.desired("w"), "{}", None::<PutOptions>)
        .await
        .expect("want");
    let old = c
        .put(keys.assign("w"), r#"{"node":"x"}"#, None::<PutOptions>)
        .await
        .expect("assign")
        .header()
        .map(|h| h.revision())
        .expect("a revision");
    let off_lost = Move {
        name: "w".into(),
        from: Some("x".into()),
        to: Some("y".into()),
        guard: Guard::NodeGone("x".into()),
    };
    // x is back: nothing moves.
    c.put(keys.node("x"), "{}", None::<PutOptions>)
        .await
        .expect("x registers");
    let r = write_guarded(&mut c, &keys, &leader, &[(old, &off_lost)]).await;
    assert_eq!(r.expect("answered"), Written::Raced);
    // x is gone: it moves.
    c.delete(keys.node("x"), None).await.expect("x goes");
    let r = write_guarded(&mut c, &keys, &leader, &[(old, &off_lost)]).await;
    assert_eq!(r.expect("answered"), Written::Done);

    let now = c
        .get(keys.assign("w"), None)
        .await
        .expect("read")
        .kvs()
        .first()
        .map(|kv| kv.mod_revision())
        .expect("assigned");
    let off_draining = Move {
        name: "w".into(),
        from: Some("y".into()),
        to: None,
        guard: Guard::Draining("y".into()),
    };
    // No drain mark (it was cleared): it stays.
    let r = write_guarded(&mut c, &keys, &leader, &[(now, &off_draining)]).await;
    assert_eq!(r.expect("answered"), Written::Raced);
    c.put(keys.draining("y"), "", None::<PutOptions>)
        .await
        .expect("drain");
    let r = write_guarded(&mut c, &keys, &leader, &[(now, &off_draining)]).await;
    assert_eq!(r.expect("answered"), Written::Done);
}

/// A batch is all or nothing: one move whose assignment changed since it
/// was read keeps every other move of the batch from being written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_stale_move_writes_nothing() {
    let Some((_etcd, mut c)) = etcd().await else {
        return;
    };
    let keys = Keys::new("/batch/");
    let (_lease, leader) = campaign(&mut c, &keys.election(), "s").await;
    let moves: Vec<Move> = (0..hangar_fleet::MAX_BATCH)
        .map(|i| place(&format!("b{i}"), "node-a"))
        .collect();
    for m in &moves {
        c.put(keys.desired(&m.name), "{}", None::<PutOptions>)
            .await
            .expect("want");
    }
    // Someone assigned the last one meanwhile.
    c.put(
        keys.assign("b39"),
        r#"{"node":"node-b"}"#,
        None::<PutOptions>,
    )
    .await
    .expect("assign");
    let batch: Vec<(i64, &Move)> = moves.iter().map(|m| (0, m)).collect();
    let r = write_guarded(&mut c, &keys, &leader, &batch).await;
    assert_eq!(r.expect("answered"), Written::Raced);
    let all = c
        .get(
            keys.assign_all(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("read");
    assert_eq!(all.kvs().len(), 1, "only the one written before");
    // Without the stale one, the rest go in one transaction.
    let r = write_guarded(&mut c, &keys, &leader, &batch[..batch.len() - 1]).await;
    assert_eq!(r.expect("answered"), Written::Done);
    let all = c
        .get(
            keys.assign_all(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("read");
    assert_eq!(all.kvs().len(), hangar_fleet::MAX_BATCH);
}
