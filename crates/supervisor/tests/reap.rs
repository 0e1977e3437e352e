//! Ending processes another run left (`hangar_supervisor::reap`), against real
//! processes.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::alive;
use hangar_supervisor::reap::{end_pinned, stat};

/// A `sleep` that is ours (a child of the test, reaped by the test) and its
/// start time.
fn sleeper(ignore_term: bool) -> (Child, u32, u64) {
    let script = if ignore_term {
        "trap '' TERM; echo ready; while :; do sleep 1; done"
    } else {
        "echo ready; exec sleep 1000"
    };
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sh");
    // Wait until the trap is set.
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).expect("ready");
    let pid = child.id();
    let start = stat(pid).expect("stat").start;
    (child, pid, start)
}

fn gone_within(child: &mut Child, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn term_then_kill_and_only_what_the_scan_found() {
    let (mut polite, p1, s1) = sleeper(false);
    let (mut stubborn, p2, s2) = sleeper(true);
    // The scan's start time does not match: a recycled pid, left alone.
    let (mut stranger, p3, s3) = sleeper(false);
    let t0 = Instant::now();
    let n = end_pinned(
        &[(p1, s1), (p2, s2), (p3, s3 + 1)],
        Duration::from_millis(500),
    );
    assert_eq!(n, 2, "only the two the scan proved");
    // The stubborn one needed the grace and then SIGKILL.
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert!(gone_within(&mut polite, Duration::from_secs(5)));
    assert!(gone_within(&mut stubborn, Duration::from_secs(5)));
    let st = stubborn.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(9),
        "{st:?}"
    );
    assert!(alive(p3), "the stranger was not signalled");
    let _ = stranger.kill();
    let _ = stranger.wait();
    // Gone already: nothing to pin, nothing signalled.
    assert_eq!(end_pinned(&[(p1, s1)], Duration::from_millis(100)), 0);
}
