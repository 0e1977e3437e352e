//! Real processes through the whole lifecycle: exits, signals, stops, groups.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hangar_supervisor::{EventKind, Manager, ProcessSpec, State};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_is_recorded_and_not_restarted_under_never() {
    let m = Manager::new().unwrap();
    let mut rx = m.subscribe();
    m.start(never("exits3", "sh", &["-c", "exit 3"]))
        .await
        .unwrap();
    let ev = wait_state(&mut rx, "exits3", State::Exited).await;
    match ev.kind {
        EventKind::State { exit, .. } => assert_eq!(exit.unwrap().code, Some(3)),
        other => panic!("{other:?}"),
    }
    let st = m.status("exits3").unwrap();
    assert_eq!(st.state, State::Exited);
    assert_eq!(st.last_exit.unwrap().code, Some(3));
    assert_eq!(st.restarts, 0);
    assert_eq!(st.pid, None);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_by_signal_is_recorded() {
    let m = Manager::new().unwrap();
    let mut rx = m.subscribe();
    m.start(never("segv", "sh", &["-c", "kill -SEGV $$"]))
        .await
        .unwrap();
    wait_state(&mut rx, "segv", State::Exited).await;
    let exit = m.status("segv").unwrap().last_exit.unwrap();
    assert_eq!(exit.signal, Some(11));
    assert_eq!(exit.code, None);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_ignoring_sigterm_is_killed_after_timeout() {
    let m = Manager::new().unwrap();
    let mk = marker();
    let script = format!("trap '' TERM; sleep {mk}");
    let pid = m
        .start(never("stubborn", "sh", &["-c", &script]))
        .await
        .unwrap();
    // Both the shell and its sleep carry the marker.
    assert!(eventually(Duration::from_secs(5), || pids_with(&mk).len() == 2).await);
    let t = Instant::now();
    m.stop("stubborn", Some(Duration::from_millis(300)))
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(300), "stopped after {took:?}");
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");
    let st = m.status("stubborn").unwrap();
    assert_eq!(st.state, State::Stopped);
    assert_eq!(st.last_exit.unwrap().signal, Some(9));
    assert!(!alive(pid));
    // SIGKILL went to the whole group; under load the kernel may take a moment
    // to finish the sleep off.
    assert!(
        eventually(Duration::from_secs(2), || pids_with(&mk).is_empty()).await,
        "the sleep inside survived"
    );
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_is_fast_when_the_child_obeys() {
    let m = Manager::new().unwrap();
    let mk = marker();
    m.start(never("obedient", "sleep", &[&mk])).await.unwrap();
    let t = Instant::now();
    m.stop("obedient", Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(
        m.status("obedient").unwrap().last_exit.unwrap().signal,
        Some(15)
    );
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchildren_are_gone_after_stop() {
    let m = Manager::new().unwrap();
    let mk = marker();
    // Three grandchildren, one of which ignores SIGTERM, plus a great-grandchild.
    let script =
        format!("sleep {mk} & (trap '' TERM; sleep {mk}) & sh -c 'sleep {mk} & wait' & wait");
    m.start(never("forker", "sh", &["-c", &script]))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || pids_with(&mk).len() >= 3).await,
        "grandchildren did not start: {:?}",
        pids_with(&mk)
    );
    let before = pids_with(&mk);
    m.stop("forker", Some(Duration::from_millis(500)))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(2), || pids_with(&mk).is_empty()).await,
        "left behind: {:?} (of {before:?})",
        pids_with(&mk)
    );
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_crashed_leader_are_killed_before_restart() {
    let m = Manager::new().unwrap();
    let mk = marker();
    // The leader leaves a grandchild behind and dies; the restart must not pile up
    // grandchildren.
    let script = format!("sleep {mk} & sleep 0.2; exit 1");
    let mut spec = always_now("leaky", "sh", &["-c", &script]);
    spec.restart.initial_interval = Duration::from_millis(50);
    spec.restart.max_interval = Duration::from_millis(50);
    m.start(spec).await.unwrap();
    let mut rx = m.subscribe();
    for _ in 0..3 {
        wait_state(&mut rx, "leaky", State::Backoff).await;
        assert!(pids_with(&mk).len() <= 1, "{:?}", pids_with(&mk));
    }
    m.shutdown().await;
    assert!(eventually(Duration::from_secs(2), || pids_with(&mk).is_empty()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_executable_fails_only_its_own_process() {
    let m = Manager::new().unwrap();
    let mk = marker();
    let err = m
        .start(always_now("ghost", "/nonexistent/hangar-test-binary", &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "PROCESS_START_FAILED");
    assert!(err.hint().unwrap().contains("check the command path"));
    assert!(err
        .context()
        .iter()
        .any(|(k, v)| *k == "command" && v.contains("nonexistent")));
    let st = m.status("ghost").unwrap();
    assert_eq!(st.state, State::Failed);
    assert_eq!(st.last_error.unwrap().code(), "PROCESS_START_FAILED");

    m.start(never("alive", "sleep", &[&mk])).await.unwrap();
    assert_eq!(m.status("alive").unwrap().state, State::Running);

    // A file without the execute bit: permission denied, not retried.
    let path = std::env::temp_dir().join(format!("hangar-noexec-{}", std::process::id()));
    std::fs::write(&path, "#!/bin/sh\n").unwrap();
    let mut spec = never("noexec", path.to_str().unwrap(), &[]);
    spec.restart.policy = hangar_supervisor::RestartMode::Always;
    let err = m.start(spec).await.unwrap_err();
    let _ = std::fs::remove_file(&path);
    assert_eq!(m.status("noexec").unwrap().state, State::Failed);
    assert_eq!(err.code(), "PROCESS_START_FAILED");
    assert!(err.hint().unwrap().contains("executable"), "{err}");
    m.shutdown().await;
    assert!(eventually(Duration::from_secs(2), || pids_with(&mk).is_empty()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_unknown_names_are_errors() {
    let m = Manager::new().unwrap();
    let mk = marker();
    m.start(never("one", "sleep", &[&mk])).await.unwrap();
    let err = m.start(never("one", "sleep", &[&mk])).await.unwrap_err();
    assert_eq!(err.code(), "DUPLICATE_NAME");
    let err = m.stop("nope", None).await.unwrap_err();
    assert_eq!(err.code(), "PROCESS_NOT_FOUND");
    assert_eq!(m.status("nope").unwrap_err().code(), "PROCESS_NOT_FOUND");
    // Once stopped, the name can be started again with a new spec.
    m.stop("one", None).await.unwrap();
    m.start(never("one", "sleep", &[&mk])).await.unwrap();
    assert_eq!(pids_with(&mk).len(), 1);
    m.remove("one", None).await.unwrap();
    assert!(m.status("one").is_err());
    assert!(eventually(Duration::from_secs(2), || pids_with(&mk).is_empty()).await);
    let bad = ProcessSpec::new("", "");
    assert_eq!(m.start(bad).await.unwrap_err().code(), "INVALID_SPEC");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respawn_after_sigkill_and_restart_by_hand() {
    let m = Manager::new().unwrap();
    let mk = marker();
    let pid = m
        .start(always_now("phoenix", "sleep", &[&mk]))
        .await
        .unwrap();
    let mut rx = m.subscribe();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let ev = wait_state(&mut rx, "phoenix", State::Running).await;
    assert_ne!(ev.pid, Some(pid));
    let st = m.status("phoenix").unwrap();
    assert_eq!(st.restarts, 1);
    assert_eq!(st.last_exit.unwrap().signal, Some(9));
    let new_pid = m.restart("phoenix").await.unwrap();
    assert_ne!(Some(new_pid), ev.pid);
    assert_eq!(pids_with(&mk), vec![new_pid]);
    m.shutdown().await;
    assert!(eventually(Duration::from_secs(2), || pids_with(&mk).is_empty()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_layers_and_working_dir() {
    let m = Manager::new().unwrap();
    let mut rx = m.subscribe();
    m.set_global_env(["G=global", "O=global"]).unwrap();
    assert_eq!(
        m.set_global_env(["novalue"]).unwrap_err().code(),
        "INVALID_SPEC"
    );
    m.set_global_env(["G=global", "O=global"]).unwrap();
    let mut spec = never(
        "env",
        "sh",
        &["-c", "echo $G $O $HANGAR_PROCESS_NAME $(pwd)"],
    );
    spec.env.insert("O".into(), "spec".into());
    spec.working_dir = Some("/tmp".into());
    m.start(spec).await.unwrap();
    wait_state(&mut rx, "env", State::Exited).await;
    assert!(
        eventually(Duration::from_secs(2), || !m
            .tail("env", 10)
            .unwrap()
            .is_empty())
        .await
    );
    let tail = m.tail("env", 10).unwrap();
    assert_eq!(tail[0].text, "global spec env /tmp");
    m.shutdown().await;
}
