//! A supervisor out of descriptors: its spawns fail with EMFILE, which is the
//! host's condition, not the process's fault. The process waits and tries
//! again (no strike towards its restart circuit), and starts once descriptors
//! are back. Its own test binary: it lowers this process's descriptor limit.
//!
//! A process the limit cannot hold at all is refused when it is registered
//! (`CAPACITY_EXCEEDED`, see `fdlimit`); this is the other case: a process
//! already registered whose respawn finds the descriptors gone (taken by
//! something else, or the limit lowered from outside).

mod common;

use std::time::Duration;

use common::*;
use hangar_supervisor::{Manager, ProcessSpec, RestartMode, RestartPolicy, State};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_is_waited_out_not_counted() {
    let m = Manager::new().unwrap();
    let spec = ProcessSpec::new("starved", "sleep")
        .args(["1000"])
        .restart(RestartPolicy {
            policy: RestartMode::Always,
            initial_interval: Duration::ZERO,
            max_interval: Duration::ZERO,
            max_retries: 1,
            ..RestartPolicy::default()
        });
    let pid = m.start(spec).await.expect("registered and running");
    let before = getrlimit(Resource::Nofile);
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    // No room for a spawn's pipes and pidfd, even once the killed child's
    // three are closed, then its respawn.
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(open - 3),
            maximum: before.maximum,
        },
    )
    .unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // Several failed spawns later, still waiting, the circuit closed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let st = m.status("starved").unwrap();
    setrlimit(Resource::Nofile, before).unwrap();
    assert_ne!(st.state, State::Failed, "{st:?}");
    // The kill was one failure; the starved spawns after it count for none.
    assert_eq!(st.consecutive_failures, 1, "{st:?}");
    assert!(st.restarts >= 1, "it kept trying: {st:?}");
    assert!(
        st.last_error
            .as_ref()
            .is_some_and(|e| e.to_string().contains("pen files")),
        "{st:?}"
    );
    // Descriptors back: it starts at the next try.
    assert!(
        eventually(Duration::from_secs(10), || m
            .status("starved")
            .is_ok_and(|s| s.state == State::Running))
        .await,
        "{:?}",
        m.status("starved")
    );
    m.shutdown().await;
}
