//! Resource limits (cgroups), users, no_new_privs and network namespaces, checked
//! on the real kernel: real cgroups of whatever version this host has, a real
//! `nobody`, a real namespace made with `ip netns add`.
//!
//! Tests that need root print why and return early when not root; tests of limits
//! print why and return early when this host has no usable cgroups. Every test
//! runs its manager in a cgroup group of its own and removes it (and any
//! namespace it made) on the way out, also when it fails.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use hangar_supervisor::{
    Cgroups, Error, EventKind, Limits, LogLine, Manager, ManagerOptions, ProcessSpec, RunAs, State,
    Stream,
};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

macro_rules! need_root {
    ($test:expr) => {
        if !is_root() {
            eprintln!("SKIP {}: needs root (geteuid() != 0)", $test);
            return;
        }
    };
}

/// Removes the test's cgroup group on drop, whatever happened.
struct GroupGuard(String);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Err(e) = Cgroups::detect().remove_group(&self.0) {
            eprintln!("could not remove cgroup group {}: {e}", self.0);
        }
    }
}

/// A manager with a cgroup group of its own, and the guard that removes it.
fn manager(test: &str) -> (Manager, GroupGuard) {
    let group = format!("hgtest-{}-{test}", std::process::id());
    let m = Manager::with_options(ManagerOptions {
        cgroup_group: Some(group.clone()),
        ..ManagerOptions::default()
    })
    .unwrap();
    (m, GroupGuard(group))
}

/// A manager that gives every process a cgroup where the host allows (as
/// `hangar run` does), in a cgroup group of its own, and the guard.
fn grouping_manager(test: &str) -> (Manager, GroupGuard) {
    let group = format!("hgtest-{}-{test}", std::process::id());
    let m = Manager::with_options(ManagerOptions {
        cgroup_group: Some(group.clone()),
        cgroup_every_process: true,
        ..ManagerOptions::default()
    })
    .unwrap();
    (m, GroupGuard(group))
}

/// Whether this host can apply `limits`; prints why not.
fn limits_usable(test: &str, limits: &Limits) -> bool {
    let host = Cgroups::detect();
    match host.unusable_reason(limits) {
        None => true,
        Some(why) => {
            eprintln!("SKIP {test}: no usable cgroups on this host ({why}); detected: {host}");
            false
        }
    }
}

fn code_of(e: &Error) -> Option<&str> {
    e.context()
        .iter()
        .find(|(k, _)| *k == "code")
        .map(|(_, v)| v.as_str())
}

async fn wait_lines(m: &Manager, name: &str, last: &str) -> Vec<LogLine> {
    wait_for(m, name, |l| l.text == last).await
}

/// The process's output once a line matches `f` (or after 10 s).
async fn wait_for(m: &Manager, name: &str, f: impl Fn(&LogLine) -> bool) -> Vec<LogLine> {
    let mut lines = Vec::new();
    for _ in 0..1000 {
        lines = m.tail(name, 200).unwrap().into_iter().collect();
        if lines.iter().any(&f) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lines
}

fn stdout(lines: &[LogLine]) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| l.text.as_str())
        .collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

async fn exit_of(
    rx: &mut tokio::sync::broadcast::Receiver<hangar_supervisor::Event>,
    name: &str,
) -> hangar_supervisor::ExitInfo {
    let ev = tokio::time::timeout(
        Duration::from_secs(120),
        wait_state(rx, name, State::Exited),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} did not exit within 120 s"));
    match ev.kind {
        EventKind::State { exit: Some(e), .. } => e,
        other => panic!("no exit info in {other:?}"),
    }
}

#[test]
fn limits_deserialize_from_manifest_style_values() {
    let spec: ProcessSpec = serde_json::from_str(
        r#"{"name":"svc","command":"true",
            "limits":{"memory_max":"512Mi","cpu_max":"250m","pids_max":64},
            "user":{"uid":65534,"gid":65534},
            "netns":"/run/netns/x"}"#,
    )
    .unwrap();
    let l = spec.limits.unwrap();
    assert_eq!(l.memory_max, Some(512 << 20));
    assert_eq!(l.cpu_max, Some(0.25));
    assert_eq!(l.pids_max, Some(64));
    assert_eq!(spec.user.as_ref().map(|u| u.groups.len()), Some(0));
    assert!(spec.no_new_privs, "no_new_privs defaults to true");
    assert!(spec.problems().is_empty(), "{:?}", spec.problems());
    // Numbers work too, and what is written back reads back the same.
    let again: ProcessSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(again, spec);
    let bad = serde_json::from_str::<ProcessSpec>(
        r#"{"name":"svc","command":"true","limits":{"memory_max":"lots"}}"#,
    );
    assert!(bad.unwrap_err().to_string().contains("memory"));
    // Old specs (no new fields) keep working, with nothing new switched on but NNP.
    let old: ProcessSpec = serde_json::from_str(r#"{"name":"svc","command":"true"}"#).unwrap();
    assert!(old.limits.is_none() && old.user.is_none() && old.netns.is_none());
}

#[test]
fn unknown_users_are_refused_with_a_code() {
    let e = RunAs::from_name("hgtest-no-such-user").unwrap_err();
    assert_eq!(e.code(), "INVALID_SPEC");
    assert_eq!(code_of(&e), Some("PRIVS_UNKNOWN_USER"));
    let nobody = RunAs::from_name("nobody").unwrap();
    assert_eq!(nobody.uid, 65534);
    assert!(nobody.groups.contains(&nobody.gid), "{nobody:?}");
    assert_eq!(RunAs::from_name("65534").unwrap().uid, 65534);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_holds_the_process_with_its_limits_and_goes_away() {
    need_root!("cgroup_holds_the_process_with_its_limits_and_goes_away");
    let limits = Limits {
        memory_max: Some(64 << 20),
        cpu_max: Some(0.5),
        pids_max: Some(32),
    };
    if !limits_usable("cgroup_holds_the_process", &limits) {
        return;
    }
    let (m, guard) = manager("holds");
    let host = Cgroups::detect();
    let mark = marker();
    // A child that also leaves its process group (setsid), as daemons do: the
    // cgroup still finds it at stop.
    let mut spec = never(
        "held",
        "sh",
        &["-c", &format!("setsid sleep {mark}1 & exec sleep {mark}")],
    );
    spec.limits = Some(limits);
    let pid = m.start(spec).await.unwrap();
    let dirs = m.cgroup_dirs("held").unwrap();
    assert!(!dirs.is_empty());
    assert_eq!(dirs, host.process_dirs(&guard.0, "held", &limits));
    let version = m.cgroup_version("held").unwrap();
    assert_eq!(version, host.version_for(&limits));
    for d in &dirs {
        assert!(d.is_dir(), "{}", d.display());
        assert!(
            eventually(Duration::from_secs(10), || read(&d.join("cgroup.procs"))
                .lines()
                .any(|l| l == pid.to_string()))
            .await,
            "pid {pid} not in {}",
            d.display()
        );
    }
    let has = |file: &str| dirs.iter().map(|d| d.join(file)).find(|p| p.exists());
    match version {
        Some(hangar_supervisor::CgroupVersion::V2) => {
            let d = &dirs[0];
            assert_eq!(read(&d.join("memory.max")), (64u64 << 20).to_string());
            assert_eq!(read(&d.join("cpu.max")), "50000 100000");
            assert_eq!(read(&d.join("pids.max")), "32");
        }
        Some(hangar_supervisor::CgroupVersion::V1) => {
            let mem = has("memory.limit_in_bytes").expect("memory hierarchy joined");
            assert_eq!(read(&mem), (64u64 << 20).to_string());
            assert_eq!(read(&has("cpu.cfs_quota_us").unwrap()), "50000");
            assert_eq!(read(&has("cpu.cfs_period_us").unwrap()), "100000");
            assert_eq!(read(&has("pids.max").unwrap()), "32");
        }
        None => unreachable!("limits_usable said yes"),
    }
    // Both sleeps are in the cgroup; usage is counted.
    assert!(eventually(Duration::from_secs(10), || pids_with(&mark).len() == 2).await);
    let usage = m.usage("held").unwrap().unwrap();
    if let Some(p) = usage.pids_current {
        assert!(p >= 2, "{usage:?}");
    }
    let mem = usage
        .memory_current
        .expect("memory is counted where it is limited");
    assert!(mem > 0 && mem <= 64 << 20, "{usage:?}");
    if version == Some(hangar_supervisor::CgroupVersion::V2) {
        assert!(usage.cpu_usage.is_some(), "{usage:?}");
    }
    m.stop("held", Some(Duration::from_secs(5))).await.unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{} left after stop", d.display());
        let group = d.parent().unwrap();
        assert!(!group.exists(), "{} left after stop", group.display());
    }
    assert!(m.cgroup_dirs("held").unwrap().is_empty());
    assert!(
        eventually(Duration::from_secs(10), || pids_with(&mark).is_empty()).await,
        "the setsid'd sleep outlived its cgroup: {:?}",
        pids_with(&mark)
    );

    // A process that exits on its own loses its cgroup too, before its exit is
    // reported.
    let mut rx = m.subscribe();
    let mut spec = never("brief", "sh", &["-c", "sleep 0.3"]);
    spec.limits = Some(limits);
    m.start(spec).await.unwrap();
    let dirs = m.cgroup_dirs("brief").unwrap();
    assert!(dirs.iter().all(|d| d.is_dir()));
    assert_eq!(exit_of(&mut rx, "brief").await.code, Some(0));
    for d in &dirs {
        assert!(!d.exists(), "{} left after exit", d.display());
    }
    m.shutdown().await;
}

/// Where the kernel can create a child inside a v2 cgroup (no move into it,
/// so no RCU wait per start), a process without limits is grouped there, even
/// on a host whose controllers are on v1: the child's first look at
/// /proc/self/cgroup finds it in its own v2 cgroup, a restart does too, and the
/// cgroup goes with the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_limits_starts_inside_its_v2_cgroup() {
    need_root!("a_process_without_limits_starts_inside_its_v2_cgroup");
    let host = Cgroups::detect();
    if !host.clones_into_v2() {
        eprintln!(
            "SKIP a_process_without_limits_starts_inside_its_v2_cgroup: children cannot be \
             cloned into a v2 cgroup here (x86-64, Linux 5.7+, a writable cgroup2 mount); detected: {host}"
        );
        return;
    }
    let (m, _guard) = grouping_manager("cloned");
    let mark = marker();
    let mut spec = never(
        "grouped",
        "sh",
        &["-c", &format!("cat /proc/self/cgroup; exec sleep {mark}")],
    );
    spec.restart.policy = hangar_supervisor::RestartMode::Always;
    spec.restart.initial_interval = Duration::ZERO;
    let first = m.start(spec).await.unwrap();
    assert_eq!(
        m.cgroup_version("grouped").unwrap(),
        Some(hangar_supervisor::CgroupVersion::V2)
    );
    let dirs = m.cgroup_dirs("grouped").unwrap();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let mount = host.v2_mount().unwrap();
    let rel = format!("0::/{}", dirs[0].strip_prefix(mount).unwrap().display());
    let lines = wait_for(&m, "grouped", |l| l.text.starts_with("0::")).await;
    assert!(
        stdout(&lines).contains(&rel.as_str()),
        "want {rel}: {lines:?}"
    );

    // Killed, it is started again in the same place.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(first as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let twice = |l: &[LogLine]| stdout(l).iter().filter(|t| **t == rel).count() == 2;
    assert!(
        eventually(Duration::from_secs(10), || {
            let lines: Vec<LogLine> = m.tail("grouped", 200).unwrap().into_iter().collect();
            twice(&lines)
        })
        .await,
        "the restarted child is not in {rel}: {:?}",
        m.tail("grouped", 200).unwrap()
    );
    assert_eq!(m.status("grouped").unwrap().restarts, 1);
    m.stop("grouped", Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(!dirs[0].exists(), "{} left after stop", dirs[0].display());
    m.shutdown().await;
}

/// With a cgroup, a stop looks for the tree outside the process group only
/// when the cgroup holds more than the main process: a descendant that left
/// the group (setsid) still gets the stop signal, not only the final SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descendant_that_left_the_group_gets_the_stop_signal() {
    need_root!("a_descendant_that_left_the_group_gets_the_stop_signal");
    if Cgroups::detect().version().is_none() && !Cgroups::detect().clones_into_v2() {
        eprintln!(
            "SKIP a_descendant_that_left_the_group_gets_the_stop_signal: no usable cgroups here"
        );
        return;
    }
    let (m, _guard) = grouping_manager("escaped");
    let mark = marker();
    // The main process takes half a second to go, so the final SIGKILL of
    // the rest cannot overtake the stop signal's handler.
    let script = format!(
        "setsid sh -c 'trap \"echo escaped-got-term; exit 0\" TERM; echo escaped-ready; \
         sleep {mark} & wait' & trap 'sleep 0.5; exit 0' TERM; \
         while :; do sleep 0.05; done"
    );
    m.start(never("parent", "sh", &["-c", &script]))
        .await
        .unwrap();
    assert!(!m.cgroup_dirs("parent").unwrap().is_empty(), "no cgroup");
    wait_lines(&m, "parent", "escaped-ready").await;
    m.stop("parent", Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let lines = wait_lines(&m, "parent", "escaped-got-term").await;
    assert!(
        stdout(&lines).contains(&"escaped-got-term"),
        "the escaped descendant was not sent the stop signal: {lines:?}"
    );
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_is_enforced_by_the_oom_killer() {
    need_root!("memory_limit_is_enforced_by_the_oom_killer");
    let limits = Limits {
        memory_max: Some(32 << 20),
        ..Limits::default()
    };
    if !limits_usable("memory_limit_is_enforced", &limits) {
        return;
    }
    let (m, _guard) = manager("oom");
    let mut rx = m.subscribe();
    // The shell itself holds 100 MiB: over the limit it is the one killed.
    let hog = r#"x=$(head -c 100000000 /dev/zero | tr '\0' a); echo survived ${#x}"#;
    let free = never("hog-free", "sh", &["-c", hog]);
    m.start(free).await.unwrap();
    let exit = exit_of(&mut rx, "hog-free").await;
    assert_eq!(
        exit.code,
        Some(0),
        "without a limit the hog survives: {exit:?}"
    );
    let mut limited = never("hog", "sh", &["-c", hog]);
    limited.limits = Some(limits);
    m.start(limited).await.unwrap();
    let exit = exit_of(&mut rx, "hog").await;
    assert_eq!(exit.signal, Some(9), "killed by the OOM killer: {exit:?}");

    // A member killed while the main process lives: the counter says so.
    let mut spec = never(
        "host",
        "sh",
        &[
            "-c",
            r#"(x=$(head -c 100000000 /dev/zero | tr '\0' a)); echo rc=$?; exec sleep 3600"#,
        ],
    );
    spec.limits = Some(limits);
    m.start(spec).await.unwrap();
    let lines = wait_lines(&m, "host", "rc=137").await;
    assert!(stdout(&lines).contains(&"rc=137"), "{lines:?}");
    let usage = m.usage("host").unwrap().unwrap();
    if let Some(n) = usage.oom_kills {
        assert!(n >= 1, "{usage:?}");
    }
    if let Some(mem) = usage.memory_current {
        assert!(mem <= 32 << 20, "{usage:?}");
    }
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_limit_makes_forks_fail() {
    need_root!("pids_limit_makes_forks_fail");
    let limits = Limits {
        pids_max: Some(6),
        ..Limits::default()
    };
    if !limits_usable("pids_limit_makes_forks_fail", &limits) {
        return;
    }
    let (m, _guard) = manager("pids");
    let mut rx = m.subscribe();
    let script =
        "i=0; while [ $i -lt 20 ]; do sleep 30 & i=$((i+1)); echo forked=$i; done; echo END";
    let free = never("forker-free", "sh", &["-c", script]);
    m.start(free).await.unwrap();
    assert_eq!(exit_of(&mut rx, "forker-free").await.code, Some(0));
    let lines = wait_lines(&m, "forker-free", "END").await;
    assert!(stdout(&lines).contains(&"forked=20"), "{lines:?}");

    let mut spec = never("forker", "sh", &["-c", script]);
    spec.limits = Some(limits);
    m.start(spec).await.unwrap();
    let exit = exit_of(&mut rx, "forker").await;
    assert_ne!(
        exit.code,
        Some(0),
        "the shell gives up when fork fails: {exit:?}"
    );
    let lines = wait_for(&m, "forker", |l| {
        l.stream == Stream::Stderr && l.text.to_lowercase().contains("fork")
    })
    .await;
    let out = stdout(&lines);
    assert!(!out.contains(&"END"), "{lines:?}");
    let forked = out
        .iter()
        .filter_map(|l| l.strip_prefix("forked="))
        .filter_map(|n| n.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    assert!(forked < 6, "at most 5 sleeps beside the shell: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.stream == Stream::Stderr && l.text.to_lowercase().contains("fork")),
        "{lines:?}"
    );
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_nobody_without_access_to_roots_files() {
    need_root!("runs_as_nobody_without_access_to_roots_files");
    let secret = std::env::temp_dir().join(format!("hgtest-secret-{}", std::process::id()));
    std::fs::write(&secret, "top secret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (m, _guard) = manager("nobody");
    let mut spec = never(
        "as-nobody",
        "sh",
        &[
            "-c",
            &format!(
                "id -u; id -g; id -G; cat {} || echo unreadable; \
                 grep NoNewPrivs /proc/self/status; echo END",
                secret.display()
            ),
        ],
    );
    spec.user = Some(RunAs::from_name("nobody").unwrap());
    m.start(spec).await.unwrap();
    let lines = wait_lines(&m, "as-nobody", "END").await;
    let _ = std::fs::remove_file(&secret);
    let out = stdout(&lines);
    assert_eq!(out[0], "65534", "{lines:?}");
    let nobody = RunAs::from_name("nobody").unwrap();
    assert_eq!(out[1], nobody.gid.to_string(), "{lines:?}");
    let groups: Vec<&str> = out[2].split_whitespace().collect();
    assert!(!groups.contains(&"0"), "root's group dropped: {lines:?}");
    assert!(!out.contains(&"top secret"), "{lines:?}");
    assert!(out.contains(&"unreadable"), "{lines:?}");
    assert!(out.contains(&"NoNewPrivs:\t1"), "{lines:?}");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_new_privs_is_set_by_default_and_can_be_turned_off() {
    let (m, _guard) = manager("nnp");
    let script = "grep NoNewPrivs /proc/self/status; echo END";
    m.start(never("nnp-on", "sh", &["-c", script]))
        .await
        .unwrap();
    let lines = wait_lines(&m, "nnp-on", "END").await;
    assert!(stdout(&lines).contains(&"NoNewPrivs:\t1"), "{lines:?}");
    // Off only shows where hangar itself is free of it.
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    if own.contains("NoNewPrivs:\t0") {
        let mut spec = never("nnp-off", "sh", &["-c", script]);
        spec.no_new_privs = false;
        m.start(spec).await.unwrap();
        let lines = wait_lines(&m, "nnp-off", "END").await;
        assert!(stdout(&lines).contains(&"NoNewPrivs:\t0"), "{lines:?}");
    } else {
        eprintln!("hangar's test process has NoNewPrivs itself: the off case is not checked");
    }
    m.shutdown().await;
}

/// Deletes the namespace on drop.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_a_network_namespace_before_exec() {
    need_root!("joins_a_network_namespace_before_exec");
    let name = format!("hgtest-{}", std::process::id());
    match std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
    {
        Ok(s) if s.success() => {}
        other => {
            eprintln!("SKIP joins_a_network_namespace: `ip netns add` failed: {other:?}");
            return;
        }
    }
    let _ns = NetnsGuard(name.clone());
    let (m, _guard) = manager("netns");
    let script = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; echo END";
    let mut spec = never("inside", "sh", &["-c", script]);
    spec.netns = Some(PathBuf::from(format!("/run/netns/{name}")));
    m.start(spec).await.unwrap();
    let lines = wait_lines(&m, "inside", "END").await;
    assert_eq!(stdout(&lines), ["lo", "END"], "{lines:?}");
    // Everything at once: cgroup, namespace, then the drop to nobody (setns needs
    // the privileges the drop gives up, so the order matters).
    let mut spec = never("inside-nobody", "sh", &["-c", &format!("id -u; {script}")]);
    spec.netns = Some(PathBuf::from(format!("/run/netns/{name}")));
    spec.user = Some(RunAs::from_name("nobody").unwrap());
    spec.limits = Some(Limits {
        pids_max: Some(16),
        ..Limits::default()
    });
    m.start(spec).await.unwrap();
    let lines = wait_lines(&m, "inside-nobody", "END").await;
    assert_eq!(stdout(&lines), ["65534", "lo", "END"], "{lines:?}");
    // The same command outside sees the host's interfaces (at least one more).
    m.start(never("outside", "sh", &["-c", script]))
        .await
        .unwrap();
    let lines = wait_lines(&m, "outside", "END").await;
    assert!(stdout(&lines).len() > 2, "{lines:?}");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_failures_fail_the_start_with_a_code_and_leave_nothing() {
    let (m, guard) = manager("fail");
    let host = Cgroups::detect();
    let limits = Limits {
        memory_max: Some(64 << 20),
        pids_max: Some(16),
        ..Limits::default()
    };
    let gone = |name: &str| {
        host.process_dirs(&guard.0, name, &limits)
            .iter()
            .all(|d| !d.exists())
    };

    // A namespace that does not exist: refused before anything is created.
    let mut spec = never("no-ns", "sleep", &["3600"]);
    spec.limits = Some(limits);
    spec.netns = Some(PathBuf::from(format!(
        "/run/netns/hgtest-missing-{}",
        std::process::id()
    )));
    let e = m.start(spec).await.unwrap_err();
    assert_eq!(e.code(), "PROCESS_START_FAILED");
    assert_eq!(code_of(&e), Some("NETNS_OPEN_FAILED"), "{e}");
    assert!(e.hint().is_some_and(|h| h.contains("ip netns add")), "{e}");
    assert!(gone("no-ns"));

    // A file that is no namespace.
    let mut spec = never("not-ns", "sleep", &["3600"]);
    spec.netns = Some(PathBuf::from("/etc/hostname"));
    let e = m.start(spec).await.unwrap_err();
    assert_eq!(code_of(&e), Some("NETNS_OPEN_FAILED"), "{e}");

    if !is_root() {
        let mut spec = never("not-root", "sleep", &["3600"]);
        spec.user = Some(RunAs::from_name("nobody").unwrap());
        let e = m.start(spec).await.unwrap_err();
        assert_eq!(code_of(&e), Some("PRIVS_NOT_ROOT"), "{e}");
        eprintln!("SKIP the cgroup part of setup_failures: needs root");
        m.shutdown().await;
        return;
    }
    if !limits_usable("setup_failures (cgroup part)", &limits) {
        m.shutdown().await;
        return;
    }
    // The kernel refuses a value: the cgroup made for it is removed.
    let mut spec = never("bad-limit", "sleep", &["3600"]);
    spec.limits = Some(Limits {
        pids_max: Some(50_000_000),
        ..limits
    });
    let e = m.start(spec).await.unwrap_err();
    assert_eq!(code_of(&e), Some("CGROUP_LIMIT_FAILED"), "{e}");
    assert!(gone("bad-limit"));

    // The child joined its cgroup, then failed (exec, chdir): the cgroup goes too.
    let mut spec = never("no-exe", "/nonexistent/hgtest-binary", &[]);
    spec.limits = Some(limits);
    assert!(m.start(spec).await.is_err());
    assert!(gone("no-exe"));
    let mut spec = never("no-dir", "sleep", &["3600"]);
    spec.limits = Some(limits);
    spec.working_dir = Some(PathBuf::from("/nonexistent/hgtest-dir"));
    assert!(m.start(spec).await.is_err());
    assert!(gone("no-dir"));
    // As nobody, into a directory only root may enter.
    let private = std::env::temp_dir().join(format!("hgtest-private-{}", std::process::id()));
    std::fs::create_dir_all(&private).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut spec = never("nobody-denied", "sleep", &["3600"]);
    spec.limits = Some(limits);
    spec.user = Some(RunAs::from_name("nobody").unwrap());
    spec.working_dir = Some(private.clone());
    let res = m.start(spec).await;
    let _ = std::fs::remove_dir(&private);
    assert!(res.is_err());
    assert!(gone("nobody-denied"));

    // The group directory itself is gone once nothing is left in it.
    for d in host.process_dirs(&guard.0, "x", &limits) {
        let group = d.parent().unwrap().to_path_buf();
        assert!(!group.exists(), "{} left", group.display());
    }
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_usable_cgroups_limited_processes_still_run() {
    let limits = Limits {
        memory_max: Some(64 << 20),
        ..Limits::default()
    };
    if Cgroups::detect().unusable_reason(&limits).is_none() {
        eprintln!(
            "SKIP without_usable_cgroups: this host can apply limits (run the tests as a \
             non-root user to check the fallback)"
        );
        return;
    }
    let (m, _guard) = manager("nocg");
    let mut spec = never("unlimited", "sleep", &["3600"]);
    spec.limits = Some(limits);
    m.start(spec).await.unwrap();
    assert!(m.cgroup_dirs("unlimited").unwrap().is_empty());
    assert_eq!(m.usage("unlimited").unwrap(), None);
    assert_eq!(m.status("unlimited").unwrap().state, State::Running);
    m.shutdown().await;
}

/// A cgroup holding a `sleep` at `dirs`, as a supervisor that died would leave
/// it. Returns the thread that reaps the sleep (with its exit status).
fn leftover(
    dirs: &[PathBuf],
) -> std::thread::JoinHandle<std::io::Result<std::process::ExitStatus>> {
    let mut child = std::process::Command::new("sleep")
        .arg("3600")
        .spawn()
        .unwrap();
    for d in dirs {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("cgroup.procs"), child.id().to_string()).unwrap();
    }
    std::thread::spawn(move || child.wait())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_dead_supervisor_are_cleared() {
    need_root!("leftovers_of_a_dead_supervisor_are_cleared");
    let limits = Limits {
        pids_max: Some(16),
        ..Limits::default()
    };
    if !limits_usable("leftovers_of_a_dead_supervisor", &limits) {
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let (m, guard) = manager("leftover");
    let host = Cgroups::detect();
    // The same name again: the old occupant is killed, the new one moves in.
    let dirs = host.process_dirs(&guard.0, "again", &limits);
    let old = leftover(&dirs);
    let mut spec = never("again", "sleep", &["3600"]);
    spec.limits = Some(limits);
    let pid = m.start(spec).await.unwrap();
    assert_eq!(old.join().unwrap().unwrap().signal(), Some(9));
    for d in &dirs {
        assert_eq!(read(&d.join("cgroup.procs")), pid.to_string());
    }
    m.stop("again", None).await.unwrap();

    // What no process of the new supervisor claims: remove_group at boot.
    let dirs = host.process_dirs(&guard.0, "orphan", &limits);
    let orphan = leftover(&dirs);
    assert_eq!(host.remove_group(&guard.0).unwrap(), 1);
    assert_eq!(orphan.join().unwrap().unwrap().signal(), Some(9));
    for d in &dirs {
        assert!(!d.exists(), "{}", d.display());
        assert!(!d.parent().unwrap().exists(), "{}", d.display());
    }
    m.shutdown().await;
}
