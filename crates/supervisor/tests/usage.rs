//! The shared usage sample: real processes, read from their cgroup or
//! `/proc`, one sample for every caller within a second, and a figure only
//! for the run it was read for.

mod common;

use std::time::Duration;

use common::*;
use hangar_supervisor::usage::{FRESH, STALE};
use hangar_supervisor::{Manager, State};

#[tokio::test]
async fn one_sample_serves_every_caller_and_follows_the_running_child() {
    let m = Manager::new().unwrap();
    let mut rx = m.subscribe();
    // A shell that does some work, then waits as `sleep`.
    let pid = m
        .start(always_now(
            "busy",
            "sh",
            &["-c", "x=$(seq 1 20000); exec sleep 3600"],
        ))
        .await
        .unwrap();
    // Sampled right after its exec, a process has hardly a page resident,
    // and the kernel's resident count (kept per CPU and summed lazily) can
    // read 0; the figure asserted below is that of the settled process.
    assert!(
        eventually(Duration::from_secs(10), || {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
        .await,
        "the shell never got to its sleep"
    );
    let first = m.usage_sample().await;
    let u = first
        .of("busy", pid)
        .expect("a figure for the running child");
    assert!(u.memory_bytes.unwrap_or(0) > 0, "{u:?}");
    assert!(u.cpu.is_some(), "{u:?}");
    // Within FRESH every caller gets the same sample: nothing is read again.
    let again = m.usage_sample().await;
    assert_eq!(again.at, first.at);

    // Past FRESH (but under STALE) the old sample is served at once and a new
    // one is taken in the background.
    assert!(FRESH < STALE);
    tokio::time::sleep(FRESH + Duration::from_millis(100)).await;
    let served = m.usage_sample().await;
    assert_eq!(served.at, first.at);
    assert!(
        eventually(Duration::from_secs(10), || {
            m.last_usage_sample().is_some_and(|s| s.at > first.at)
        })
        .await,
        "no new sample was taken in the background"
    );

    // A restarted process has no figure under its old pid.
    m.restart("busy").await.unwrap();
    wait_state(&mut rx, "busy", State::Running).await;
    tokio::time::sleep(FRESH + Duration::from_millis(100)).await;
    let _ = m.usage_sample().await;
    assert!(
        eventually(Duration::from_secs(10), || {
            m.last_usage_sample()
                .is_some_and(|s| s.of("busy", pid).is_none() && s.by_name.contains_key("busy"))
        })
        .await,
        "the old pid's figure outlived its run"
    );
    m.shutdown().await;
}
