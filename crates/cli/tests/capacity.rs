//! What one hangar can hold: a daemon under a descriptor limit it may not
//! raise refuses, whole and at once, a change that would take more processes
//! than the limit holds, and keeps what it runs.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{pids_with, run, stderr, stdout, wait_for, Scratch, Served, LONG};

#[test]
fn a_daemon_refuses_a_change_its_descriptor_limit_cannot_hold() {
    let scratch = Scratch::new("capacity");
    let data = scratch.path().join("data");
    let arg = format!("3600.{}77", std::process::id());
    let cfg = scratch.path().join("hangar.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[process]]\nname = \"base\"\ncommand = \"sleep\"\nargs = [\"{arg}\"]\ninstances = 20\n"
        ),
    )
    .unwrap();
    // 256 descriptors hold about 50 processes; setpriv keeps even root from
    // raising the limit (unprivileged, prlimit's hard limit does).
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=256:256").arg("--");
    if rustix::process::geteuid().is_root() {
        cmd.args(["setpriv", "--bounding-set=-sys_resource"]);
    }
    let log = scratch.path().join("serve.log");
    let child = cmd
        .arg(env!("CARGO_BIN_EXE_hangar"))
        .env_remove("HANGAR_LOG")
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--http", "", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _served = Served::adopt(child, &data);
    assert!(
        wait_for(LONG, || pids_with(&arg).len() == 20),
        "the 20 did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // 40 more would make 60: refused, with the numbers, before any starts.
    let more = scratch.path().join("more.toml");
    std::fs::write(
        &more,
        format!("[[process]]\nname = \"more\"\ncommand = \"sleep\"\nargs = [\"{arg}\"]\ninstances = 40\n"),
    )
    .unwrap();
    let r = run(&data, &["add", more.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1), "{}{}", stdout(&r), stderr(&r));
    let err = stderr(&r);
    assert!(err.contains("CAPACITY_EXCEEDED"), "{err}");
    assert!(
        err.contains("60 processes need 180 file descriptors"),
        "{err}"
    );
    assert!(err.contains("its limit is 256"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pids_with(&arg).len(), 20, "only the 20 run");
    let ps = run(&data, &["ps", "more*"]);
    assert_eq!(
        ps.status.code(),
        Some(4),
        "nothing of the refused change is registered: {}",
        stdout(&ps)
    );

    // What fits is still taken: 10 more make 30.
    std::fs::write(
        &more,
        format!("[[process]]\nname = \"more\"\ncommand = \"sleep\"\nargs = [\"{arg}\"]\ninstances = 10\n"),
    )
    .unwrap();
    let r = run(&data, &["add", more.to_str().unwrap()]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(wait_for(LONG, || pids_with(&arg).len() == 30));
}
