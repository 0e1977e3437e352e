//! The floor for the scheduler's writes: `write_guarded` (the scheduler's
//! own guarded transaction) for N instances, in batches of `MAX_BATCH` as
//! the scheduler writes them, with nothing else (no reads, no planning), on
//! one etcd endpoint; and the same one move per transaction. `bench/fleet.py`
//! runs it beside the scheduler and reports the scheduler's assignments per
//! second as a ratio of the batched figure.
//!
//! Usage: assign_floor ENDPOINT N
//! Prints one JSON object: {"n": N, "per_second": R, "per_second_one_by_one": R1}.

use std::time::Instant;

use etcd_client::{Client, PutOptions};
use hangar_fleet::{write_guarded, Guard, Keys, Move, Written, MAX_BATCH};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().ok_or("usage: assign_floor ENDPOINT N")?;
    let n: usize = args
        .next()
        .ok_or("usage: assign_floor ENDPOINT N")?
        .parse()?;
    let mut c = Client::connect([endpoint], None).await?;
    let keys = Keys::new(&format!("/floor-{}/", std::process::id()));
    let lease = c.lease_grant(60, None).await?.id();
    let leader = c
        .campaign(keys.election(), "floor", lease)
        .await?
        .take_leader()
        .ok_or("no leader key")?;
    // The wants exist first, as they do when the scheduler runs.
    for i in 0..n {
        for set in ["b", "s"] {
            c.put(keys.desired(&format!("{set}{i}")), "{}", None::<PutOptions>)
                .await?;
        }
    }
    let moves = |set: &str| -> Vec<Move> {
        (0..n)
            .map(|i| Move {
                name: format!("{set}{i}"),
                from: None,
                to: Some(format!("node-{}", i % 3)),
                guard: Guard::None,
            })
            .collect()
    };
    let batched = moves("b");
    let t0 = Instant::now();
    for chunk in batched.chunks(MAX_BATCH) {
        let batch: Vec<(i64, &Move)> = chunk.iter().map(|m| (0, m)).collect();
        if write_guarded(&mut c, &keys, &leader, &batch).await? != Written::Done {
            return Err("a batch was not written".into());
        }
    }
    let batched_secs = t0.elapsed().as_secs_f64();
    let single = moves("s");
    let t0 = Instant::now();
    for m in &single {
        if write_guarded(&mut c, &keys, &leader, &[(0, m)]).await? != Written::Done {
            return Err(format!("{} was not written", m.name).into());
        }
    }
    let single_secs = t0.elapsed().as_secs_f64();
    println!(
        "{{\"n\": {n}, \"per_second\": {:.1}, \"per_second_one_by_one\": {:.1}}}",
        n as f64 / batched_secs,
        n as f64 / single_secs
    );
    c.lease_revoke(lease).await?;
    Ok(())
}
