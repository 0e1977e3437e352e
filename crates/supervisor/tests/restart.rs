//! Restart policy against real processes with tokio's clock paused: the backoff
//! waits pass instantly, and the virtual time at which each start happens is exact.

use std::time::Duration;

use hangar_supervisor::{EventKind, Manager, ManagerOptions, RestartMode, RestartPolicy, State};
use tokio::time::Instant;

fn failing(policy: RestartPolicy) -> hangar_supervisor::ProcessSpec {
    hangar_supervisor::ProcessSpec::new("flaky", "false").restart(policy)
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_then_the_circuit_opens() {
    let m = Manager::new().unwrap();
    let mut rx = m.subscribe();
    let policy = RestartPolicy {
        policy: RestartMode::OnFailure,
        initial_interval: Duration::from_secs(1),
        multiplier: 2.0,
        max_interval: Duration::from_secs(3),
        jitter: 0.0,
        min_uptime: Duration::from_secs(10),
        max_retries: 4,
    };
    let t0 = Instant::now();
    m.start(failing(policy)).await.unwrap();
    let mut starts = vec![];
    let failed = loop {
        let ev = rx.recv().await.unwrap();
        if let EventKind::State {
            from, to, error, ..
        } = ev.kind
        {
            if to == State::Starting && from == State::Backoff {
                starts.push(Instant::now().duration_since(t0).as_millis());
            }
            if to == State::Failed {
                break error.unwrap();
            }
        }
    };
    // Waits of 1, 2, 3 (capped), 3 s between the 5 runs.
    let gaps: Vec<u128> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(starts.first(), Some(&1000), "{starts:?}");
    assert_eq!(gaps, vec![2000, 3000, 3000], "{starts:?}");
    assert_eq!(failed.code(), "MAX_ERRORS_EXCEEDED");
    assert!(failed.hint().is_some());
    let st = m.status("flaky").unwrap();
    assert_eq!(st.state, State::Failed);
    assert_eq!(st.restarts, 4);
    assert_eq!(st.consecutive_failures, 5);
    assert_eq!(st.last_exit.unwrap().code, Some(1));

    // A manual start closes the circuit: it runs (and fails) again.
    m.start_name("flaky").await.unwrap();
    assert_eq!(m.status("flaky").unwrap().consecutive_failures, 0);
    m.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_waits_within_bounds() {
    let m = Manager::with_options(ManagerOptions {
        jitter_seed: Some(42),
        ..ManagerOptions::default()
    })
    .unwrap();
    let mut rx = m.subscribe();
    let policy = RestartPolicy {
        policy: RestartMode::Always,
        initial_interval: Duration::from_secs(10),
        multiplier: 1.0,
        max_interval: Duration::from_secs(10),
        jitter: 0.2,
        min_uptime: Duration::from_secs(60),
        max_retries: 0,
    };
    let mut last = Instant::now();
    m.start(failing(policy)).await.unwrap();
    let mut gaps = vec![];
    while gaps.len() < 12 {
        let ev = rx.recv().await.unwrap();
        if let EventKind::State {
            from: State::Backoff,
            to: State::Starting,
            ..
        } = ev.kind
        {
            let now = Instant::now();
            gaps.push(now.duration_since(last));
            last = now;
        }
    }
    // The first gap includes the spawn; the rest are pure waits.
    for g in &gaps[1..] {
        assert!(
            *g >= Duration::from_secs(8) && *g <= Duration::from_secs(12),
            "{gaps:?}"
        );
    }
    let distinct: std::collections::BTreeSet<_> = gaps[1..].iter().collect();
    assert!(distinct.len() > 5, "jitter did not vary: {gaps:?}");
    m.shutdown().await;
}

/// Real time here: uptime is measured on tokio's clock, which does not move while a
/// paused runtime waits for a child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_resets_the_backoff() {
    let m = Manager::new().unwrap();
    let mut rx = m.subscribe();
    // Each run lasts 50 ms and fails; with min_uptime 10 ms every run counts as long,
    // so the wait never grows (it would be 3 s, then 30 s) and the circuit never
    // opens despite max_retries = 1.
    let policy = RestartPolicy {
        policy: RestartMode::OnFailure,
        initial_interval: Duration::from_millis(300),
        multiplier: 10.0,
        max_interval: Duration::from_secs(500),
        jitter: 0.0,
        min_uptime: Duration::from_millis(10),
        max_retries: 1,
    };
    let spec = hangar_supervisor::ProcessSpec::new("slowfail", "sh")
        .args(["-c", "sleep 0.05; exit 2"])
        .restart(policy);
    m.start(spec).await.unwrap();
    let mut waits = vec![];
    let mut last = None;
    while waits.len() < 3 {
        let ev = rx.recv().await.unwrap();
        if let EventKind::State { from, to, .. } = ev.kind {
            assert_ne!(to, State::Failed);
            if to == State::Backoff {
                last = Some(Instant::now());
            }
            if from == State::Backoff {
                waits.push(Instant::now().duration_since(last.unwrap()));
            }
        }
    }
    // Measured between event receipts, which can lag the timer by a little:
    // the point is that no wait grew to 3 s.
    for w in &waits {
        assert!(
            *w >= Duration::from_millis(250) && *w < Duration::from_millis(1500),
            "{waits:?}"
        );
    }
    m.shutdown().await;
}
