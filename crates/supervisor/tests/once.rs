//! One-shot commands (`Manager::run_once`), as a config checker uses them:
//! real processes, found through /proc.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hangar_supervisor::{Manager, ManagerOptions, ProcessSpec, ONCE_OUTPUT_LIMIT};

/// The marker every child of a manager carries (its supervisor id), here
/// unique to one test.
fn supervisor_marker(mk: &str) -> String {
    format!("HANGAR_SUPERVISOR_ID=test-{mk}")
}

/// A manager whose supervisor id is `test-{mk}`.
fn manager(mk: &str) -> Manager {
    Manager::with_options(ManagerOptions {
        supervisor_id: Some(format!("test-{mk}")),
        ..ManagerOptions::default()
    })
    .unwrap()
}

fn proc_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// (process group, session) of `pid`.
fn group_of(pid: u32) -> Option<(u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

/// Live (non-zombie) members of process group `pgid`.
fn members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if group_of(pid).is_some_and(|(g, _)| g == pgid) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// A checker that never finishes: a shell with a background sleeper and a
/// foreground one, both carrying `mk` in their command lines.
fn hanging_checker(mk: &str) -> ProcessSpec {
    ProcessSpec::new("checker", "sh").args([
        "-c".to_string(),
        format!("sleep {mk} & echo started; sleep {mk}"),
    ])
}

/// Waits until the shell and both sleepers run; checks each is in one new
/// process group and session led by the shell, carries the marker and has
/// no_new_privs. Returns the group.
async fn the_group(mk: &str, marker: &str) -> u32 {
    assert!(
        eventually(Duration::from_secs(10), || pids_with(mk).len() >= 2).await,
        "the checker and its sleepers did not start: {:?}",
        pids_with(mk)
    );
    let pids = pids_with(mk);
    let (pgid, sid) = group_of(pids[0]).expect("stat");
    assert!(
        pids.contains(&pgid),
        "the group leader is the shell: {pids:?} in {pgid}"
    );
    assert_eq!(sid, pgid, "a session of its own");
    let (own_group, _) = group_of(std::process::id()).expect("own stat");
    assert_ne!(pgid, own_group, "not in the test's process group");
    for pid in &pids {
        assert_eq!(group_of(*pid), Some((pgid, sid)), "{pid} is in the group");
        let env = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        assert!(
            env.split(|&b| b == 0).any(|kv| kv == marker.as_bytes()),
            "{pid} carries {marker}"
        );
        assert_eq!(proc_field(*pid, "NoNewPrivs").as_deref(), Some("1"));
    }
    pgid
}

/// The whole group is gone and its leader was reaped (no zombie left).
async fn gone(pgid: u32) {
    assert!(
        eventually(Duration::from_secs(10), || members(pgid).is_empty()).await,
        "members of {pgid} survived: {:?}",
        members(pgid)
    );
    assert!(
        eventually(Duration::from_secs(10), || !std::path::Path::new(&format!(
            "/proc/{pgid}"
        ))
        .exists())
        .await,
        "the leader {pgid} was not reaped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_group() {
    let mk = marker();
    let marker = supervisor_marker(&mk);
    let m = manager(&mk);
    let t0 = Instant::now();
    let run = {
        let m = m.clone();
        let spec = hanging_checker(&mk);
        tokio::spawn(async move { m.run_once(spec, Duration::from_secs(3)).await })
    };
    let pgid = the_group(&mk, &marker).await;
    let out = run.await.unwrap().expect("ran");
    assert!(out.timed_out, "{out:?}");
    assert!(t0.elapsed() >= Duration::from_secs(3));
    assert_eq!(out.exit.signal, Some(9), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.output).trim(), "started");
    gone(pgid).await;
    assert!(pids_with(&mk).is_empty(), "{:?}", pids_with(&mk));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_future_kills_the_whole_group() {
    let mk = marker();
    let marker = supervisor_marker(&mk);
    let m = manager(&mk);
    let run = {
        let m = m.clone();
        let spec = hanging_checker(&mk);
        tokio::spawn(async move { m.run_once(spec, Duration::from_secs(1000)).await })
    };
    let pgid = the_group(&mk, &marker).await;
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    gone(pgid).await;
    assert!(pids_with(&mk).is_empty(), "{:?}", pids_with(&mk));
}

#[tokio::test]
async fn exit_and_output_in_the_order_written() {
    let m = Manager::new().unwrap();
    let spec = ProcessSpec::new("checker", "sh").args([
        "-c",
        "echo one; echo two >&2; echo three; echo four >&2; exit 3",
    ]);
    let out = m.run_once(spec, Duration::from_secs(30)).await.unwrap();
    assert!(!out.timed_out);
    assert_eq!(out.exit.code, Some(3));
    assert_eq!(out.output, b"one\ntwo\nthree\nfour\n");
    assert_eq!(out.dropped, 0);
    let ok = ProcessSpec::new("checker", "true");
    let out = m.run_once(ok, Duration::from_secs(30)).await.unwrap();
    assert!(out.exit.success() && out.output.is_empty());
}

#[tokio::test]
async fn output_is_bounded_to_its_end() {
    let m = Manager::new().unwrap();
    // About 200 KB, then a last line.
    let spec = ProcessSpec::new("checker", "sh").args([
        "-c",
        "i=0; while [ $i -lt 4000 ]; do echo line-$i-..............................; i=$((i+1)); done; echo END",
    ]);
    let out = m.run_once(spec, Duration::from_secs(60)).await.unwrap();
    assert!(out.exit.success());
    assert_eq!(out.output.len(), ONCE_OUTPUT_LIMIT);
    assert!(out
        .output
        .ends_with(b"line-3999-..............................\nEND\n"));
    assert!(out.dropped > 100_000, "{}", out.dropped);
}

#[tokio::test]
async fn a_command_that_cannot_start_is_an_error() {
    let m = Manager::new().unwrap();
    let e = m
        .run_once(
            ProcessSpec::new("checker", "/nonexistent/checker"),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "PROCESS_START_FAILED", "{e:?}");
    let e = m
        .run_once(ProcessSpec::new("", "true"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "INVALID_SPEC", "{e:?}");
}
