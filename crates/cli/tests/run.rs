//! `hangar run` as a real binary in a temp dir: start, signals, nothing left behind.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::pids_with;

fn hangar() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hangar"));
    c.env_remove("HANGAR_LOG");
    c
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "hangar-cli-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().subsec_nanos()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn write(&self, name: &str, body: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A sleep argument for one test: `tag` must not be a prefix of another
/// test's tag (tests share this process's pid).
fn marker(tag: u32) -> String {
    format!("3600.{:05}{tag}", std::process::id() % 100_000)
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        sig,
    )
    .unwrap();
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// Drain the child's stderr on a thread (a full pipe would stall hangar's logging)
/// and hand back what was read once it closes.
fn collect_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut e = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = e.read_to_string(&mut s);
        s
    })
}

#[test]
fn invalid_file_lists_every_error_and_starts_nothing() {
    let dir = TempDir::new("bad");
    let mk = marker(1);
    let file = dir.write(
        "bad.toml",
        &format!(
            r#"[[process]]
name = "ok"
command = "sleep"
args = ["{mk}"]

[[process]]
name = "a"
command = "sleep"
instancs = 2

[process.restart]
initial_interval = "5 parsecs"

[[process]]
name = "a"
command = "true"

[[process]]
name = "nocmd"
"#
        ),
    );
    let out = hangar().arg("run").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error[CONFIG_INVALID]"), "{err}");
    assert!(err.contains("has 4 errors"), "{err}");
    assert!(
        err.contains(":9:1: process[1].instancs: unknown key"),
        "{err}"
    );
    assert!(
        err.contains(":12:20: process[1].restart.initial_interval: invalid duration"),
        "{err}"
    );
    assert!(
        err.contains(":15:1: process[2].name: duplicate process name \"a\""),
        "{err}"
    );
    assert!(
        err.contains(":18:1: process[3].command: missing required key `command`"),
        "{err}"
    );
    assert!(pids_with(&mk).is_empty(), "something was started");

    let out = hangar()
        .arg("run")
        .arg(dir.0.join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CONFIG_UNREADABLE"));
}

#[test]
fn runs_the_issue_example_until_sigterm_and_leaves_nothing() {
    let dir = TempDir::new("sleepers");
    let mk = marker(2);
    let file = dir.write(
        "p.toml",
        &format!(
            r#"[[process]]
name = "sleeper"
command = "sleep"
args = ["{mk}"]
instances = 500            # sleeper-1 … sleeper-500

[process.restart]
policy = "always"          # always | on-failure | never
initial_interval = "0s"

[[process]]
name = "ghost"
command = "/nonexistent/hangar-ghost"
"#
        ),
    );
    let mut child = hangar()
        .args(["run", "--no-log-files", "--log-format", "json"])
        .arg(&file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect_stderr(&mut child);
    assert!(
        wait_for(Duration::from_secs(20), || pids_with(&mk).len() == 500),
        "only {} of 500 running",
        pids_with(&mk).len()
    );
    // A killed sleeper comes back.
    let victim = pids_with(&mk)[0];
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(victim as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(5), || {
        let p = pids_with(&mk);
        p.len() == 500 && !p.contains(&victim)
    }));
    signal(&child, rustix::process::Signal::TERM);
    let st = wait_exit(&mut child, Duration::from_secs(20)).expect("hangar did not exit");
    assert_eq!(st.code(), Some(0));
    let err = stderr.join().unwrap();
    assert!(err.contains("PROCESS_START_FAILED"), "{err}");
    assert!(err.contains("\"process\":\"ghost\""), "{err}");
    assert!(err.contains("all processes stopped"), "{err}");
    assert!(
        pids_with(&mk).is_empty(),
        "left running: {:?}",
        pids_with(&mk)
    );
}

#[test]
fn children_die_when_hangar_is_killed() {
    let dir = TempDir::new("kill9");
    let mk = marker(3);
    let file = dir.write(
        "p.toml",
        &format!(
            "[[process]]\nname = \"s\"\ncommand = \"sleep\"\nargs = [\"{mk}\"]\ninstances = 20\n"
        ),
    );
    let mut child = hangar()
        .args(["run", "--no-log-files"])
        .arg(&file)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || pids_with(&mk).len() == 20));
    signal(&child, rustix::process::Signal::KILL);
    let _ = child.wait();
    assert!(
        wait_for(Duration::from_secs(5), || pids_with(&mk).is_empty()),
        "orphans after kill -9: {:?}",
        pids_with(&mk)
    );
}

#[test]
fn a_second_signal_forces_exit_and_children_still_die() {
    let dir = TempDir::new("force");
    let mk = marker(4);
    // Ignores SIGTERM and has a long grace period: only the second signal ends it.
    let file = dir.write(
        "p.toml",
        &format!(
            "[[process]]\nname = \"stubborn\"\ncommand = \"sh\"\nargs = [\"-c\", \"trap '' TERM; sleep {mk}\"]\nstop_timeout = \"60s\"\n"
        ),
    );
    let mut child = hangar()
        .args(["run", "--no-log-files"])
        .arg(&file)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || pids_with(&mk).len() == 2));
    signal(&child, rustix::process::Signal::TERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited before the grace period"
    );
    signal(&child, rustix::process::Signal::INT);
    let st = wait_exit(&mut child, Duration::from_secs(10)).expect("no exit after second signal");
    assert_eq!(st.code(), Some(130));
    assert!(
        wait_for(Duration::from_secs(5), || pids_with(&mk).is_empty()),
        "{:?}",
        pids_with(&mk)
    );
}

#[test]
fn logs_land_in_the_log_dir() {
    let dir = TempDir::new("logs");
    let logs = dir.0.join("logs");
    let file = dir.write(
        "p.toml",
        "[[process]]\nname = \"hello\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo out; echo err >&2; sleep 30\"]\n",
    );
    let mut child = hangar()
        .arg("run")
        .arg("--log-dir")
        .arg(&logs)
        .arg(&file)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = logs.join("hello.stdout.log");
    let err = logs.join("hello.stderr.log");
    assert!(wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&out).is_ok_and(|s| s == "out\n")
            && std::fs::read_to_string(&err).is_ok_and(|s| s == "err\n")
    }));
    signal(&child, rustix::process::Signal::INT);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn check_and_help_read_well() {
    let out = hangar().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("run") && help.contains("check"), "{help}");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/sleepers.toml");
    let out = hangar().args(["check", example]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sleeper ×5"));
}

#[test]
fn the_web_example_runs_with_probes_ports_and_dependencies() {
    let dir = TempDir::new("web");
    let logs = dir.0.join("logs");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/web.toml");
    let mut child = hangar()
        .args(["run", "--log-format", "json", "--log-dir"])
        .arg(&logs)
        .arg(example)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect_stderr(&mut child);
    let client_log = logs.join("client.stdout.log");
    assert!(
        wait_for(Duration::from_secs(20), || std::fs::read_to_string(
            &client_log
        )
        .is_ok_and(|s| s == "web is ready\n")),
        "client never started"
    );
    signal(&child, rustix::process::Signal::TERM);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20)).and_then(|s| s.code()),
        Some(0)
    );
    let err = stderr.join().unwrap();
    // web became healthy and running before client left waiting.
    let pos = |needle: &str| {
        err.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in {err}"))
    };
    let web_running = pos(r#""message":"running","process":"web""#);
    let client_waiting = pos(r#""message":"waiting for dependencies","process":"client""#);
    let client_running = pos(r#""message":"running","process":"client""#);
    assert!(
        client_waiting < client_running && web_running < client_running,
        "{err}"
    );
    // Stopped in reverse dependency order.
    let client_stopped = pos(r#""message":"stopped","process":"client""#);
    let web_stopped = pos(r#""message":"stopped","process":"web""#);
    assert!(client_stopped < web_stopped, "{err}");
}

#[test]
fn bad_probe_definitions_are_refused_with_the_key_named() {
    let dir = TempDir::new("badprobe");
    let file = dir.write(
        "p.toml",
        r#"[[process]]
name = "web"
command = "sleep"
args = ["1"]
[process.readiness]
grpc = "127.0.0.1:1"
[process.liveness]
http = "localhost/health"
interval = "0s"
"#,
    );
    let out = hangar().arg("check").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":6:1: process[0].readiness.grpc: unknown key `grpc`"),
        "{err}"
    );
    assert!(
        err.contains(
            ":8:1: process[0].liveness.check: url \"localhost/health\" must start with http://"
        ),
        "{err}"
    );
    assert!(
        err.contains(":9:1: process[0].liveness.interval: interval must be greater than zero"),
        "{err}"
    );
}

/// A pipe, close-on-exec: without it every child spawned meanwhile (hangar
/// itself among them) would inherit the reading end and keep the pipe open.
fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe")
}

/// `head -n N` on a thread: reads `n` lines from `reader`, then closes it and
/// says whether all `n` came (a test waits with a timeout, never forever).
fn head_n(reader: std::os::fd::OwnedFd, n: usize) -> std::sync::mpsc::Receiver<Result<(), ()>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(std::fs::File::from(reader));
        let mut ok = Ok(());
        for _ in 0..n {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) == 0 {
                ok = Err(());
                break;
            }
        }
        drop(r);
        let _ = tx.send(ok);
    });
    rx
}

/// A pipe whose reader is already gone: every write to it fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer) = pipe();
    drop(reader);
    Stdio::from(writer)
}

/// `hangar catalog list --json | head -c 0`, `hangar check FILE | head -c 0`:
/// a command whose reader went away ends quietly (no panic, no message).
#[test]
fn a_command_whose_reader_went_away_ends_quietly() {
    let dir = TempDir::new("pipe-cli");
    let file = dir.write(
        "p.toml",
        "[[process]]\nname = \"a\"\ncommand = \"sleep\"\nargs = [\"1\"]\n",
    );
    let data = dir.0.join("data");
    let runs: [Vec<std::ffi::OsString>; 3] = [
        vec![
            "--data-dir".into(),
            data.clone().into(),
            "catalog".into(),
            "list".into(),
            "--json".into(),
        ],
        vec![
            "--data-dir".into(),
            data.clone().into(),
            "catalog".into(),
            "list".into(),
        ],
        vec!["check".into(), file.clone().into()],
    ];
    for args in runs {
        let out = hangar()
            .args(&args)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} said something: {err}");
    }
}

/// `hangar run FILE 2>&1 | head -n 3`, then SIGTERM: the reader is gone when
/// hangar logs the stop, and hangar still stops every process gracefully and
/// exits 0 (it used to abort on the failed log write, leaving its children
/// to PDEATHSIG and their grandchildren behind).
#[test]
fn a_supervisor_whose_output_went_away_still_stops_gracefully() {
    let dir = TempDir::new("pipe-run");
    let mk = marker(7);
    let file = dir.write(
        "p.toml",
        &format!(
            "[[process]]\nname = \"s\"\ncommand = \"sh\"\n\
             args = [\"-c\", \"trap 'echo bye; exit 0' TERM; sleep {mk} & wait\"]\ninstances = 3\n"
        ),
    );
    let (reader, writer) = pipe();
    let writer2 = writer.try_clone().expect("dup");
    let mut child = hangar()
        .args(["run", "--no-log-files"])
        .arg(&file)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        .spawn()
        .unwrap();
    // `head -n 3`: read three lines, then go away.
    let head = head_n(reader, 3);
    assert!(
        // Three shells and their three sleeps carry the marker.
        wait_for(Duration::from_secs(10), || pids_with(&mk).len() == 6),
        "the processes never ran: {:?}",
        pids_with(&mk)
    );
    head.recv_timeout(Duration::from_secs(30))
        .expect("hangar wrote fewer than three lines")
        .expect("hangar closed its output early");
    signal(&child, rustix::process::Signal::TERM);
    let st = wait_exit(&mut child, Duration::from_secs(20)).expect("hangar did not exit");
    assert_eq!(st.code(), Some(0), "not a graceful stop: {st:?}");
    assert!(
        pids_with(&mk).is_empty(),
        "left behind: {:?}",
        pids_with(&mk)
    );
}

/// Pids of the children of `parent` whose state (the letter in
/// `/proc/PID/stat`) passes `keep`.
fn children_where(parent: u32, keep: impl Fn(&str) -> bool) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("Z");
        let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent && keep(state) {
            out.push(pid);
        }
    }
    out
}

/// Pids of the live children of `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    children_where(parent, |s| s != "Z" && s != "X")
}

/// The same with a real daemon: nginx (master and workers) under `hangar run`
/// whose output reader went away is stopped gracefully on SIGTERM, and no
/// worker is left serving with PPID 1.
#[test]
fn nginx_under_a_supervisor_whose_output_went_away_is_stopped_whole() {
    if !std::path::Path::new("/usr/sbin/nginx").exists() {
        eprintln!("skipped: needs nginx (Debian: nginx-light; .ci/run installs it)");
        return;
    }
    let dir = TempDir::new("pipe-nginx");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = dir.0.display().to_string();
    let conf = dir.write(
        "nginx.conf",
        &format!(
            "daemon off;\nmaster_process on;\nworker_processes 2;\npid {p}/nginx.pid;\n\
             error_log stderr notice;\nevents {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
             fastcgi_temp_path {p}/fcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }} }}\n"
        ),
    );
    std::fs::create_dir_all(dir.0.join("logs")).unwrap();
    let file = dir.write(
        "p.toml",
        &format!(
            "[[process]]\nname = \"web\"\ncommand = \"/usr/sbin/nginx\"\n\
             args = [\"-p\", \"{p}\", \"-c\", \"{}\"]\n\
             [process.readiness]\nhttp = \"http://127.0.0.1:{port}/\"\n",
            conf.display()
        ),
    );
    let (reader, writer) = pipe();
    let writer2 = writer.try_clone().expect("dup");
    let mut child = hangar()
        .args(["run", "--no-log-files"])
        .arg(&file)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        .spawn()
        .unwrap();
    let head = head_n(reader, 3);
    let serving = || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            use std::io::Write;
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            body.contains("ok")
        })
    };
    assert!(
        wait_for(Duration::from_secs(10), serving),
        "nginx never served"
    );
    let master: u32 = std::fs::read_to_string(dir.0.join("nginx.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let workers = children_of(master);
    assert_eq!(workers.len(), 2, "{workers:?}");
    head.recv_timeout(Duration::from_secs(30))
        .expect("hangar wrote fewer than three lines")
        .expect("hangar closed its output early");
    signal(&child, rustix::process::Signal::TERM);
    let st = wait_exit(&mut child, Duration::from_secs(20)).expect("hangar did not exit");
    assert_eq!(st.code(), Some(0), "not a graceful stop: {st:?}");
    for pid in std::iter::once(master).chain(workers) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty()
                || stat
                    .rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
            "nginx {pid} outlived hangar: {stat}"
        );
    }
    assert!(!serving(), "something still serves on {port}");
}

/// Live `sleep ARG` processes (the exact command line).
fn sleeps(arg: &str) -> Vec<u32> {
    let want = format!("sleep\0{arg}\0").into_bytes();
    pids_with(arg)
        .into_iter()
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// A child killed (SIGKILL) and reaped when the test ends, however it ends.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Zombie children of `parent`.
fn zombies_of(parent: u32) -> Vec<u32> {
    children_where(parent, |s| s == "Z")
}

/// Descendants that leave their process group (setsid, a double fork, a
/// shell's `nohup … &` outliving the shell, one with its environment wiped)
/// do not outlive `hangar run`, and whatever reparents to hangar is reaped.
#[test]
fn descendants_that_left_the_group_do_not_outlive_hangar_run() {
    let dir = TempDir::new("escape");
    let mk = |n: u32| marker(50 + n);
    let file = dir.write(
        "p.toml",
        &format!(
            r#"
# setsid: its own session, still a child of sh
[[process]]
name = "setsid"
command = "sh"
args = ["-c", "setsid sleep {a} & sleep {a}0"]

# double fork: the subshell exits at once, its sleep reparents to hangar
[[process]]
name = "double"
command = "sh"
args = ["-c", "(setsid sleep {b} &); sleep {b}0"]

# nohup … & from a shell that then exits
[[process]]
name = "nohup"
command = "sh"
args = ["-c", "nohup setsid sleep {c} >/dev/null 2>&1 & sleep 1; exit 0"]
[process.restart]
policy = "never"

# no markers at all: environment wiped, own session, parent gone
[[process]]
name = "bare"
command = "sh"
args = ["-c", "(env -i setsid sleep {d} &); sleep {d}0"]
"#,
            a = mk(1),
            b = mk(2),
            c = mk(3),
            d = mk(4),
        ),
    );
    let mut child = Reap(
        hangar()
            .args(["run", "--no-log-files"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = collect_stderr(&mut child.0);
    let escaped = || -> Vec<u32> { (1..=4).flat_map(|n| sleeps(&mk(n))).collect() };
    assert!(
        wait_for(Duration::from_secs(10), || [1, 2, 3, 4]
            .iter()
            .all(|n| sleeps(&mk(*n)).len() == 1)),
        "not all started: {:?}",
        (1..=4).map(|n| sleeps(&mk(n))).collect::<Vec<_>>()
    );
    // The nohup'd sleep outlives its shell by nothing: the shell's exit ended
    // the process, and everything it started.
    assert!(
        wait_for(Duration::from_secs(5), || sleeps(&mk(3)).is_empty()),
        "nohup child outlived its process: {:?}",
        sleeps(&mk(3))
    );
    // Orphans reparented to hangar, and none is left a zombie.
    let me = child.0.id();
    assert!(
        wait_for(Duration::from_secs(5), || zombies_of(me).is_empty()),
        "zombies: {:?}",
        zombies_of(me)
    );
    signal(&child.0, rustix::process::Signal::TERM);
    let st = wait_exit(&mut child.0, Duration::from_secs(30)).expect("hangar did not exit");
    let err = stderr.join().unwrap();
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(
        wait_for(Duration::from_secs(2), || escaped().is_empty()),
        "outlived hangar run: {:?}\n{err}",
        escaped()
    );
}

/// `hangar` under a descriptor limit of `soft:hard`, set by prlimit(1). With
/// `may_raise` false it may not raise the hard limit even as root: setpriv(1)
/// drops CAP_SYS_RESOURCE from its bounding set.
fn hangar_limited(soft: u64, hard: u64, may_raise: bool) -> Command {
    let mut c = Command::new("prlimit");
    c.arg(format!("--nofile={soft}:{hard}")).arg("--");
    if !may_raise && rustix::process::geteuid().is_root() {
        c.args(["setpriv", "--bounding-set=-sys_resource"]);
    }
    c.arg(env!("CARGO_BIN_EXE_hangar")).env_remove("HANGAR_LOG");
    c
}

/// `hangar run --no-log-files FILE` under [`hangar_limited`], its stderr
/// collected.
fn run_limited(
    soft: u64,
    hard: u64,
    may_raise: bool,
    file: &std::path::Path,
) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = hangar_limited(soft, hard, may_raise)
        .args(["run", "--no-log-files"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = collect_stderr(&mut child);
    (child, err)
}

/// Whether this process has CAP_SYS_RESOURCE (root in a container may not),
/// which hangar, its child, inherits.
fn may_raise_hard_limits() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(eff, 16).unwrap() & (1 << 24) != 0
}

/// `(soft, hard)` "Max open files" of a process, from /proc.
fn nofile_of(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut nums = line["Max open files".len()..]
        .split_whitespace()
        .map(|n| n.parse::<u64>().unwrap());
    (nums.next().unwrap(), nums.next().unwrap())
}

#[test]
fn a_file_the_descriptor_limit_cannot_hold_starts_nothing_and_says_why() {
    let dir = TempDir::new("fdlimit");
    let m = marker(8);
    let file = dir.write(
        "many.toml",
        &format!(
            "[[process]]\nname = \"a\"\ncommand = \"sleep\"\nargs = [\"{m}\"]\ninstances = 50\n\n\
             [[process]]\nname = \"b\"\ncommand = \"sleep\"\nargs = [\"{m}\"]\ninstances = 50\n"
        ),
    );
    // 256 descriptors hold about 50 processes: 100 cannot be held, and
    // hangar may not raise its limit.
    let (mut child, err) = run_limited(256, 256, false, &file);
    // Before: spawns failed with EMFILE one by one, waited out for ever.
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let err = err.join().unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{err}");
    assert!(err.contains("CAPACITY_EXCEEDED"), "{err}");
    assert!(
        err.contains("100 processes need 300 file descriptors"),
        "{err}"
    );
    assert!(err.contains("its limit is 256"), "{err}");
    assert!(err.contains("LimitNOFILE="), "{err}");
    assert!(pids_with(&m).is_empty(), "nothing may start: {err}");
}

#[test]
fn children_get_back_the_descriptor_limit_hangar_raised() {
    let dir = TempDir::new("fdchild");
    let m = marker(9);
    let file = dir.write(
        "one.toml",
        &format!("[[process]]\nname = \"s\"\ncommand = \"sleep\"\nargs = [\"{m}\"]\n"),
    );
    let (mut child, err) = run_limited(512, 4096, true, &file);
    assert!(wait_for(Duration::from_secs(20), || pids_with(&m).len() == 1));
    let own = nofile_of(child.id());
    let sleeper = nofile_of(pids_with(&m)[0]);
    signal(&child, rustix::process::Signal::TERM);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let err = err.join().unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
    // hangar raised its own soft limit to the hard one, and with
    // CAP_SYS_RESOURCE the hard limit to fs.nr_open ...
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let hard = if may_raise_hard_limits() {
        nr_open
    } else {
        4096
    };
    assert_eq!(own, (hard, hard), "{err}");
    // ... and its child starts with the soft limit hangar was given, under
    // the hard limit hangar holds.
    assert_eq!(sleeper, (512, hard), "{err}");
}
