//! `hangar serve` as a real binary: each test boots a daemon on a data dir of its
//! own and drives it through the client commands, signals, `kill -9`, TCP with a
//! token, the metrics listener and an HTTP history sink.
//!
//! Every child a daemon starts carries `HANGAR_TEST_MARKER=<unique>` in its
//! environment (the configuration's `[env]`; descendants inherit it), so the
//! tests find them through `/proc`, and so the guard that ends each test kills
//! whatever is left: the daemon, its clients and every marked process, whether
//! the test passed or not.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use common::{free_port, hangar, http_get, wait_for};
use rustix::process::Signal;
use serde_json::Value;

/// Generous: a 2-core machine may be building something else meanwhile.
const LONG: Duration = Duration::from_secs(30);

fn send(pid: u32, sig: Signal) {
    let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), sig);
}

// ---------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------

/// A live process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proc {
    pid: u32,
    pgid: u32,
    /// Start time, clock ticks after boot: with `pid`, identifies the process.
    start: u64,
    /// `HANGAR_PROCESS_NAME` from its environment.
    name: Option<String>,
    cmdline: String,
}

fn proc_stat(pid: u32) -> Option<(char, u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some((
        f.first()?.chars().next()?,
        f.get(2)?.parse().ok()?,
        f.get(19)?.parse().ok()?,
    ))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live (not zombie) processes whose environment holds `HANGAR_TEST_MARKER=marker`.
fn marked(marker: &str) -> Vec<Proc> {
    let want = format!("HANGAR_TEST_MARKER={marker}").into_bytes();
    let mut out = Vec::new();
    for pid in all_pids() {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        if !vars.contains(&want.as_slice()) {
            continue;
        }
        let Some((state, pgid, start)) = proc_stat(pid) else {
            continue;
        };
        if matches!(state, 'Z' | 'X') {
            continue;
        }
        let name = vars.iter().find_map(|v| {
            v.strip_prefix(b"HANGAR_PROCESS_NAME=")
                .map(|n| String::from_utf8_lossy(n).into_owned())
        });
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        out.push(Proc {
            pid,
            pgid,
            start,
            name,
            cmdline,
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// Live processes whose command line contains `needle`.
fn with_cmdline(needle: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
                && proc_stat(*pid).is_some_and(|(s, _, _)| !matches!(s, 'Z' | 'X'))
        })
        .collect()
}

fn alive(p: &Proc) -> bool {
    proc_stat(p.pid).is_some_and(|(s, _, start)| start == p.start && !matches!(s, 'Z' | 'X'))
}

// ---------------------------------------------------------------------------
// A test's world: temp dir, data dir, marker, and the guard that cleans up
// ---------------------------------------------------------------------------

static SEQ: AtomicUsize = AtomicUsize::new(0);

struct World {
    dir: PathBuf,
    marker: String,
}

/// What a client command did.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl World {
    fn new(tag: &str) -> World {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let marker = format!("{}-{n}-{nanos}", std::process::id());
        let dir = std::env::temp_dir().join(format!("hangar-d-{tag}-{marker}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        World { dir, marker }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn write(&self, name: &str, body: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    /// A configuration file: `body` plus the `[env]` table that marks every child.
    fn config(&self, name: &str, body: &str) -> PathBuf {
        self.write(
            name,
            &format!("{body}\n[env]\nHANGAR_TEST_MARKER = \"{}\"\n", self.marker),
        )
    }

    fn procs(&self) -> Vec<Proc> {
        marked(&self.marker)
    }

    /// Live marked processes per `HANGAR_PROCESS_NAME`.
    fn by_name(&self) -> BTreeMap<String, Vec<Proc>> {
        let mut m: BTreeMap<String, Vec<Proc>> = BTreeMap::new();
        for p in self.procs() {
            m.entry(p.name.clone().unwrap_or_default())
                .or_default()
                .push(p);
        }
        m
    }

    /// Run a client command against this world's data dir.
    fn cli(&self, args: &[&str]) -> Out {
        let out = hangar()
            .arg("--data-dir")
            .arg(self.data())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A client command that must succeed, its stdout parsed as JSON.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert_eq!(out.code, Some(0), "hangar {args:?}: {out:?}");
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("hangar {args:?}: not JSON ({e}): {out:?}"))
    }

    /// `ps --json` as name → entry.
    fn ps(&self) -> BTreeMap<String, Value> {
        self.json(&["ps", "--json"])
            .as_array()
            .expect("ps --json gives an array")
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_string(), p.clone()))
            .collect()
    }

    /// `ps` until `f` holds for it; panics with the last listing otherwise.
    fn wait_ps(&self, what: &str, f: impl Fn(&BTreeMap<String, Value>) -> bool) {
        let mut last = BTreeMap::new();
        let ok = wait_for(LONG, || {
            last = self.ps();
            f(&last)
        });
        assert!(ok, "timed out waiting for {what}; ps: {last:#?}");
    }

    fn pid_of(&self, name: &str) -> u32 {
        let ps = self.ps();
        let p = ps
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {ps:#?}"));
        p["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} has no pid: {p}")) as u32
    }

    /// Boot `hangar serve` on this world's data dir; returns once it is ready.
    fn serve(&self, config: &Path) -> Daemon {
        self.serve_with(config, &["--http", "127.0.0.1:0"])
    }

    fn serve_with(&self, config: &Path, extra: &[&str]) -> Daemon {
        let mut child = hangar()
            .args(["--log-format", "json", "--data-dir"])
            .arg(self.data())
            .arg("serve")
            .arg("-c")
            .arg(config)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut d = Daemon {
            child,
            log,
            http: None,
            tcp: None,
        };
        let mut ready = None;
        let ok = wait_for(LONG, || {
            ready = d
                .log()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["message"] == "hangar daemon ready");
            ready.is_some() || d.child.try_wait().unwrap().is_some()
        });
        let Some(ready) = ready else {
            panic!(
                "daemon not ready (ok={ok}, exit {:?}); its log:\n{}",
                d.child.try_wait(),
                d.log()
            );
        };
        // "127.0.0.1:41271", or no field where there is no listener.
        let addr = |k: &str| -> Option<SocketAddr> { ready[k].as_str()?.parse().ok() };
        d.http = addr("http");
        d.tcp = addr("tcp");
        assert_eq!(
            ready["socket"].as_str(),
            Some(self.data().join("hangar.sock").to_str().unwrap()),
            "{ready}"
        );
        d
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Daemons and clients of this world name its dir on their command line;
        // everything they started carries the marker.
        let dir = self.dir.display().to_string();
        for _ in 0..50 {
            let mut left: Vec<u32> = with_cmdline(&dir);
            left.extend(self.procs().iter().map(|p| p.pid));
            if left.is_empty() {
                break;
            }
            for pid in left {
                send(pid, Signal::KILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    http: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn signal(&self, sig: Signal) {
        send(self.pid(), sig);
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `kill -9`, and reap it.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(Signal::TERM);
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                self.kill9();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP on loopback, std only
// ---------------------------------------------------------------------------

/// The Prometheus text format, minimally: `name{labels}` → value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let v = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")),
            };
            (series.to_string(), v)
        })
        .collect()
}

/// A webhook: answers 503 to the first `fail_first` requests, then 200, and
/// keeps the bodies it accepted.
struct Hook {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Hook {
    fn start(fail_first: usize) -> Hook {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (rq, bd) = (Arc::clone(&requests), Arc::clone(&bodies));
        // Lives until the test binary exits; it only ever blocks in accept.
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let Some((path, body)) = read_request(&conn) else {
                    continue;
                };
                let n = rq.fetch_add(1, Ordering::SeqCst);
                let status = if path != "/hook" {
                    "404 Not Found"
                } else if n < fail_first {
                    "503 Service Unavailable"
                } else {
                    bd.lock().unwrap().push(body);
                    "200 OK"
                };
                let mut w = &conn;
                let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Hook {
            addr,
            requests,
            bodies,
        }
    }
}

/// One HTTP/1.1 request with a Content-Length body: (path, body).
fn read_request(conn: &TcpStream) -> Option<(String, String)> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((path, String::from_utf8_lossy(&body).into_owned()))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn api_round_trip_over_the_socket() {
    let w = World::new("api");
    let cfg = w.config(
        "hangar.toml",
        r#"
[daemon]
reconcile_interval = "200ms"

[[process]]
name = "web"
command = "sleep"
args = ["1000"]
instances = 3

[[process]]
name = "talker"
command = "sh"
args = ["-c", "for i in 1 2 3 4 5; do echo line$i; done; exec sleep 1000"]

[[process]]
name = "stubborn"
command = "sh"
args = ["-c", "trap '' TERM; sleep 1000"]
"#,
    );
    let _d = w.serve(&cfg);
    let names = ["stubborn", "talker", "web-1", "web-2", "web-3"];
    w.wait_ps("everything running", |ps| {
        ps.len() == 5 && ps.values().all(|p| p["state"] == "running")
    });
    let ps = w.ps();
    assert_eq!(ps.keys().map(String::as_str).collect::<Vec<_>>(), names);
    for (name, p) in &ps {
        assert_eq!(p["source"], "config", "{p}");
        assert_eq!(p["desired"], "running", "{p}");
        // The pid ps shows is the live process of that name, leading its group.
        let pid = p["pid"].as_u64().unwrap() as u32;
        let procs = w.by_name();
        let mine = procs
            .get(name)
            .unwrap_or_else(|| panic!("{name}: {procs:?}"));
        assert!(
            mine.iter().any(|x| x.pid == pid && x.pgid == pid),
            "{name}: {mine:?}"
        );
    }
    assert_eq!(ps["web-2"]["args"], serde_json::json!(["1000"]));

    // The human table too.
    let table = w.cli(&["ps", "web-*"]);
    assert_eq!(table.code, Some(0), "{table:?}");
    assert!(table.stdout.starts_with("NAME"), "{table:?}");
    assert_eq!(table.stdout.lines().count(), 4, "{table:?}");

    // status counts.
    let st = w.json(&["status", "--json"]);
    assert_eq!(st["processes"], serde_json::json!({"running": 5}), "{st}");
    assert_eq!(st["recovered_killed"], 0, "{st}");
    assert_eq!(
        st["data_dir"].as_str(),
        Some(w.data().to_str().unwrap()),
        "{st}"
    );

    // stop by glob: only those stop, the others keep their pids.
    let before = w.ps();
    let r = w.json(&["stop", "web-[12]", "--json"]);
    assert_eq!(r["stopped"], serde_json::json!(["web-1", "web-2"]), "{r}");
    let ps = w.ps();
    for n in ["web-1", "web-2"] {
        assert_eq!(ps[n]["state"], "stopped", "{}", ps[n]);
        assert_eq!(ps[n]["desired"], "stopped", "{}", ps[n]);
        assert!(!w.by_name().contains_key(n), "{n} still has processes");
    }
    for n in ["web-3", "talker", "stubborn"] {
        assert_eq!(ps[n]["pid"], before[n]["pid"], "{n} was touched");
    }
    // The reconciler leaves a stopped process stopped.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(w.ps()["web-1"]["state"], "stopped");

    // start by glob: the stopped ones run again with new pids.
    let r = w.json(&["start", "web-*", "--json"]);
    assert_eq!(
        r["started"],
        serde_json::json!(["web-1", "web-2", "web-3"]),
        "{r}"
    );
    w.wait_ps("web-* running again", |ps| {
        ["web-1", "web-2", "web-3"]
            .iter()
            .all(|n| ps[*n]["state"] == "running")
    });
    let ps = w.ps();
    assert_eq!(
        ps["web-3"]["pid"], before["web-3"]["pid"],
        "web-3 was running"
    );
    assert_ne!(ps["web-1"]["pid"], before["web-1"]["pid"]);
    assert_eq!(ps["web-1"]["desired"], "running");

    // restart: a new pid, the old process gone.
    let old = w.pid_of("web-3");
    let old_proc = w.by_name()["web-3"][0].clone();
    let r = w.cli(&["restart", "web-3"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("restarted web-3"), "{r:?}");
    w.wait_ps("web-3 restarted", |ps| {
        ps["web-3"]["state"] == "running" && ps["web-3"]["pid"].as_u64() != Some(u64::from(old))
    });
    assert!(!alive(&old_proc), "the old web-3 survived its restart");

    // stop --timeout: a process that ignores SIGTERM is killed after the given
    // grace period, not after its stop_timeout (10s by default).
    let t = Instant::now();
    let r = w.cli(&["stop", "stubborn", "--timeout", "300ms"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        wait_for(Duration::from_secs(5), || !w
            .by_name()
            .contains_key("stubborn")),
        "{:?}",
        w.by_name().get("stubborn")
    );
    assert_eq!(w.ps()["stubborn"]["state"], "stopped");

    // logs -n: the last lines of a process's output.
    assert!(
        wait_for(LONG, || w.cli(&["logs", "talker"]).stdout.contains("line5")),
        "{:?}",
        w.cli(&["logs", "talker"])
    );
    let all = w.cli(&["logs", "talker", "-n", "100"]);
    assert_eq!(all.code, Some(0), "{all:?}");
    assert_eq!(all.stdout, "line1\nline2\nline3\nline4\nline5\n");
    let two = w.cli(&["logs", "talker", "-n", "2"]);
    assert_eq!(two.stdout, "line4\nline5\n", "{two:?}");

    // add a process file, then remove it.
    let extra = w.write(
        "extra.toml",
        "[[process]]\nname = \"extra\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ninstances = 2\n",
    );
    let added = w.json(&["add", extra.to_str().unwrap(), "--json"]);
    let added: Vec<&str> = added
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["extra-1", "extra-2"]);
    w.wait_ps("extra-* running", |ps| {
        ps.get("extra-1").is_some_and(|p| p["state"] == "running")
            && ps.get("extra-2").is_some_and(|p| p["state"] == "running")
    });
    assert_eq!(w.ps()["extra-1"]["source"], "api");
    // Added processes get the global [env] too.
    assert!(w.by_name().contains_key("extra-1"), "{:?}", w.by_name());
    // Adding the same names again is refused as invalid input.
    let dup = w.cli(&["add", extra.to_str().unwrap()]);
    assert_eq!(dup.code, Some(2), "{dup:?}");
    assert!(dup.stderr.contains("DUPLICATE_NAME"), "{dup:?}");
    // So is an invalid file, and nothing is added.
    let bad = w.write("bad.toml", "[[process]]\nname = \"nocmd\"\n");
    let r = w.cli(&["add", bad.to_str().unwrap()]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("CONFIG_INVALID"), "{r:?}");
    assert!(!w.ps().contains_key("nocmd"));
    // A process that cannot start takes the whole add back: nothing stays.
    let broken = w.write(
        "broken.toml",
        "[[process]]\nname = \"ok-one\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n\
         [[process]]\nname = \"no-such\"\ncommand = \"/nonexistent/hangar-test-binary\"\n",
    );
    let r = w.cli(&["add", broken.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("PROCESS_START_FAILED"), "{r:?}");
    assert!(r.stderr.contains("nothing was added"), "{r:?}");
    let ps = w.ps();
    assert!(
        !ps.contains_key("ok-one") && !ps.contains_key("no-such"),
        "{ps:?}"
    );
    assert!(!w.by_name().contains_key("ok-one"), "ok-one still runs");
    let r = w.cli(&["remove", "extra-1"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("removed extra-1"), "{r:?}");
    let ps = w.ps();
    assert!(!ps.contains_key("extra-1") && ps.contains_key("extra-2"));
    assert!(!w.by_name().contains_key("extra-1"), "extra-1 still runs");

    // events: state events, in id order, filterable.
    let ev = w.cli(&["events", "--json", "-n", "1000", "--kind", "state"]);
    assert_eq!(ev.code, Some(0), "{ev:?}");
    let events: Vec<Value> = ev
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 20, "{}", ev.stdout);
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|p| p[0] < p[1]), "{ids:?}");
    assert!(events.iter().all(|e| e["kind"] == "state"));
    let web1: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["name"] == "web-1")
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    for want in [
        pair("stopped", "starting"),
        pair("starting", "running"),
        pair("running", "stopping"),
        pair("stopping", "stopped"),
    ] {
        assert!(web1.contains(&want), "web-1 events: {web1:?}");
    }
    let first_running = events
        .iter()
        .find(|e| e["name"] == "talker" && e["to"] == "running")
        .unwrap();
    assert!(first_running["pid"].as_u64().is_some(), "{first_running}");
    let only = w.cli(&["events", "--json", "--name", "web-*", "-n", "1000"]);
    assert!(
        only.stdout.lines().all(|l| l.contains("\"name\":\"web-")),
        "{only:?}"
    );
    let after = ids[ids.len() - 3];
    let tail = w.cli(&[
        "events",
        "--json",
        "--after",
        &after.to_string(),
        "--kind",
        "state",
    ]);
    let tail_ids: Vec<i64> = tail
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(
        tail_ids.len() >= 2 && tail_ids.iter().all(|&i| i > after),
        "{tail:?}"
    );

    // Errors: unknown names, config processes, no daemon.
    for args in [
        &["stop", "nope"][..],
        &["start", "nope-*"],
        &["restart", "nope"],
        &["logs", "nope"],
        &["remove", "nope"],
    ] {
        let r = w.cli(args);
        assert_eq!(r.code, Some(4), "{args:?}: {r:?}");
        assert!(r.stderr.contains("error[PROCESS_NOT_FOUND]"), "{r:?}");
        assert!(r.stderr.contains("hint: `hangar ps`"), "{r:?}");
    }
    let r = w.cli(&["remove", "web-1"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("PROCESS_FROM_CONFIG"), "{r:?}");
    assert!(r.stderr.contains("hint:"), "{r:?}");
    assert!(w.ps().contains_key("web-1"));
    let r = w.cli(&["stop", "web-[", "--json"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("INVALID_PATTERN"), "{r:?}");

    let nowhere = World::new("nodaemon");
    let r = nowhere.cli(&["ps"]);
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(r.stderr.contains("DAEMON_NOT_RUNNING"), "{r:?}");
    assert!(r.stderr.contains("`hangar serve`"), "{r:?}");
}

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let w = World::new("pipe");
    let cfg = w.config(
        "hangar.toml",
        "[[process]]\nname = \"s\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ninstances = 20\n",
    );
    let _d = w.serve(&cfg);
    w.wait_ps("20 running", |ps| {
        ps.values().filter(|p| p["state"] == "running").count() == 20
    });
    // `hangar events | head -0`: the reader is gone before the first line.
    for args in [&["events", "-n", "1000"][..], &["ps"]] {
        let mut child = hangar()
            .arg("--data-dir")
            .arg(w.data())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn kill_9_of_the_daemon_leaves_no_process_behind_and_no_duplicates() {
    let w = World::new("crash");
    // 50 names: 40 that die with the daemon, 5 that do not, 5 whose forked
    // grandchild outlives its parent.
    let cfg = w.config(
        "hangar.toml",
        r#"
[[process]]
name = "s"
command = "sleep"
args = ["1000"]
instances = 40

[[process]]
name = "k"
command = "sleep"
args = ["1000"]
instances = 5
die_with_supervisor = false

[[process]]
name = "g"
command = "sh"
args = ["-c", "sleep 1000 & wait"]
instances = 5
"#,
    );
    let names: BTreeSet<String> = (1..=40)
        .map(|i| format!("s-{i}"))
        .chain((1..=5).map(|i| format!("k-{i}")))
        .chain((1..=5).map(|i| format!("g-{i}")))
        .collect();
    let per_name = |n: &str| if n.starts_with("g-") { 2 } else { 1 };
    // One group per name, led by the process ps shows; a g has its sleep too.
    let check_one_each = |what: &str| {
        let mut last = BTreeMap::new();
        let ok = wait_for(LONG, || {
            last = w.by_name();
            let ps = w.ps();
            last.keys().cloned().collect::<BTreeSet<_>>() == names
                && last.iter().all(|(n, procs)| {
                    let pid = ps.get(n).and_then(|p| p["pid"].as_u64());
                    procs.len() == per_name(n)
                        && procs.iter().filter(|p| p.pid == p.pgid).count() == 1
                        && procs.iter().all(|p| Some(u64::from(p.pgid)) == pid)
                        && ps[n]["state"] == "running"
                })
        });
        assert!(ok, "{what}: not one process (group) per name: {last:#?}");
    };

    let mut d = w.serve(&cfg);
    check_one_each("first boot");
    let before = w.procs();
    assert_eq!(before.len(), 55);

    d.kill9();
    // The children that die with their supervisor go; the others survive it.
    let mut survivors = Vec::new();
    let ok = wait_for(Duration::from_secs(10), || {
        survivors = w.procs();
        survivors.len() == 10
    });
    assert!(ok, "after kill -9: {survivors:#?}");
    for p in &survivors {
        let n = p.name.as_deref().unwrap_or_default();
        let leader = p.pid == p.pgid;
        assert!(
            (n.starts_with("k-") && leader) || (n.starts_with("g-") && !leader),
            "unexpected survivor {p:?}"
        );
    }
    // No daemon: the client says so (the socket file is left over).
    let r = w.cli(&["ps"]);
    assert_eq!(r.code, Some(3), "{r:?}");

    let _d = w.serve(&cfg);
    check_one_each("after the crash");
    for p in &before {
        assert!(!alive(p), "{p:?} from before the crash survived it");
    }
    assert_eq!(w.procs().len(), 55);
    let st = w.json(&["status", "--json"]);
    assert_eq!(
        st["recovered_killed"].as_u64(),
        Some(survivors.len() as u64),
        "{st}"
    );
    assert_eq!(st["processes"], serde_json::json!({"running": 50}), "{st}");
    // And the reconciler does not start a second copy of anything later.
    std::thread::sleep(Duration::from_secs(1));
    check_one_each("a second later");
}

#[test]
fn socket_is_private_and_a_second_daemon_is_refused() {
    let w = World::new("perm");
    // A data dir that exists with loose permissions is tightened.
    std::fs::create_dir_all(w.data()).unwrap();
    std::fs::set_permissions(w.data(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = w.config(
        "hangar.toml",
        "[[process]]\nname = \"a\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n",
    );
    let d = w.serve(&cfg);
    let sock = w.data().join("hangar.sock");
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir = std::fs::metadata(w.data()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    w.wait_ps("a running", |ps| ps["a"]["state"] == "running");
    let pid = w.pid_of("a");

    // The second daemon on the same data dir fails and leaves the first alone.
    let out = hangar()
        .args(["--log-format", "json", "--data-dir"])
        .arg(w.data())
        .args(["serve", "--http", "127.0.0.1:0", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("DAEMON_ALREADY_RUNNING"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert!(sock.exists(), "the second daemon removed the socket");
    assert_eq!(w.pid_of("a"), pid);
    assert_eq!(w.by_name()["a"].len(), 1);
    let st = w.json(&["status", "--json"]);
    assert_eq!(st["pid"].as_u64(), Some(u64::from(d.pid())), "{st}");
}

#[test]
fn tcp_needs_a_token() {
    let w = World::new("tcp");
    // Plain TCP without credentials is refused before anything starts.
    let insecure = w.config(
        "insecure.toml",
        "[daemon.grpc]\ntcp = \"127.0.0.1:0\"\n\n[[process]]\nname = \"a\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n",
    );
    let out = hangar()
        .arg("--data-dir")
        .arg(w.data())
        .args(["serve", "--http", "127.0.0.1:0", "-c"])
        .arg(&insecure)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("refused") && err.contains("credentials"),
        "{err}"
    );
    assert!(w.procs().is_empty(), "started: {:?}", w.procs());

    let port = free_port();
    let cfg = w.config(
        "hangar.toml",
        &format!(
            "[daemon.grpc]\ntcp = \"127.0.0.1:{port}\"\ntoken = \"s3cret\"\n\n[[process]]\nname = \"a\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n"
        ),
    );
    let d = w.serve(&cfg);
    let tcp = d.tcp.expect("the ready line names the TCP address");
    assert_eq!(tcp.port(), port);
    let addr = format!("http://{tcp}");
    // Not through the data dir: a client somewhere else.
    let elsewhere = World::new("tcpclient");
    let over_tcp = |token: Option<&str>, args: &[&str]| -> Out {
        let mut all = vec!["--addr", &addr];
        if let Some(t) = token {
            all.extend(["--token", t]);
        }
        all.extend(args);
        elsewhere.cli(&all)
    };
    assert!(
        wait_for(LONG, || over_tcp(Some("s3cret"), &["ps", "--json"])
            .stdout
            .contains("\"state\":\"running\"")),
        "{:?}",
        over_tcp(Some("s3cret"), &["ps", "--json"])
    );
    let st = over_tcp(Some("s3cret"), &["status", "--json"]);
    assert_eq!(st.code, Some(0), "{st:?}");
    let st: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(st["pid"].as_u64(), Some(u64::from(d.pid())));
    let r = over_tcp(Some("s3cret"), &["restart", "a"]);
    assert_eq!(r.code, Some(0), "{r:?}");

    for token in [None, Some("wrong"), Some("s3cret2"), Some("")] {
        for args in [&["ps"][..], &["stop", "a"], &["events"]] {
            let r = over_tcp(token, args);
            assert_eq!(r.code, Some(1), "{token:?} {args:?}: {r:?}");
            assert!(r.stderr.contains("UNAUTHENTICATED"), "{r:?}");
        }
    }
    // Nothing was stopped by the refused calls.
    assert_eq!(w.ps()["a"]["state"], "running");
    // The socket still needs no token.
    assert_eq!(w.cli(&["ps"]).code, Some(0));
    // Nobody at the address: "not running".
    let r = elsewhere.cli(&[
        "--addr",
        &format!("http://127.0.0.1:{}", free_port()),
        "--token",
        "s3cret",
        "ps",
    ]);
    assert_eq!(r.code, Some(3), "{r:?}");
}

#[test]
fn metrics_count_what_runs() {
    let w = World::new("metrics");
    let cfg = w.config(
        "hangar.toml",
        r#"
[[process]]
name = "m"
command = "sleep"
args = ["1000"]
instances = 4

[[process]]
name = "once"
command = "true"
[process.restart]
policy = "never"
"#,
    );
    let d = w.serve(&cfg);
    let http = d.http.expect("the ready line names the HTTP address");
    w.wait_ps("4 running, 1 exited", |ps| {
        ps.len() == 5
            && ps.values().filter(|p| p["state"] == "running").count() == 4
            && ps["once"]["state"] == "exited"
    });
    // Restart one so a counter goes past 1.
    assert_eq!(w.cli(&["restart", "m-1"]).code, Some(0));
    w.wait_ps("m-1 back", |ps| ps["m-1"]["state"] == "running");

    let (code, body) = http_get(http, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, _) = http_get(http, "/nope");
    assert_eq!(code, 404);

    let mut m = HashMap::new();
    // Events reach the metrics a moment after ps shows them.
    let ok = wait_for(LONG, || {
        let (code, text) = http_get(http, "/metrics");
        assert_eq!(code, 200, "{text}");
        m = parse_metrics(&text);
        m.get("hangar_process_starts_total{process=\"m-1\"}") == Some(&2.0)
    });
    assert!(ok, "{m:#?}");
    let running = w.ps().values().filter(|p| p["state"] == "running").count() as f64;
    assert_eq!(m["hangar_processes{state=\"running\"}"], running, "{m:#?}");
    assert_eq!(m["hangar_processes{state=\"exited\"}"], 1.0, "{m:#?}");
    assert_eq!(m["hangar_processes{state=\"failed\"}"], 0.0, "{m:#?}");
    for n in ["m-2", "m-3", "m-4", "once"] {
        let k = format!("hangar_process_starts_total{{process=\"{n}\"}}");
        assert!(m.get(&k).is_some_and(|v| *v >= 1.0), "{k}: {m:#?}");
    }
    // Every start of a process that reached running was timed: 5 at boot + 1.
    let launches = m["hangar_launch_duration_seconds_count"];
    assert!(launches >= 5.0, "{m:#?}");
    assert_eq!(
        m["hangar_launch_duration_seconds_bucket{le=\"+Inf\"}"],
        launches
    );
    assert!(m["hangar_launch_duration_seconds_sum"] >= 0.0);
    assert!(m["hangar_uptime_seconds"] > 0.0);
    assert!(m["hangar_events_total"] >= 12.0, "{m:#?}");

    let (code, body) = http_get(http, "/metrics.json");
    assert_eq!(code, 200);
    let j: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(
        j["launch_duration_seconds"]["p99"].as_f64().is_some(),
        "{j}"
    );
    assert!(
        j["launch_duration_seconds"]["count"].as_u64() >= Some(5),
        "{j}"
    );
    assert!(j["process_starts_total"].as_u64() >= Some(6), "{j}");
    assert_eq!(j["processes"]["running"], 4, "{j}");
}

/// `/metrics` until `done` holds for the parsed figures; panics with them otherwise.
fn wait_metrics(
    http: SocketAddr,
    what: &str,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let mut m = HashMap::new();
    let ok = wait_for(LONG, || {
        let (code, text) = http_get(http, "/metrics");
        assert_eq!(code, 200, "{text}");
        m = parse_metrics(&text);
        done(&m)
    });
    assert!(ok, "timed out waiting for {what}: {m:#?}");
    m
}

#[test]
fn metrics_count_every_restart_and_failure_with_or_without_backoff() {
    let w = World::new("restarts");
    // Each crashes until its circuit opens: 3 restarts, 4 failures; one
    // respawns at once (running -> starting), one waits in backoff.
    let crasher = |name: &str, interval: &str| {
        format!(
            r#"
[[process]]
name = "{name}"
command = "sh"
args = ["-c", "sleep 0.1; exit 1"]
[process.restart]
policy = "always"
initial_interval = "{interval}"
max_interval = "{interval}"
max_retries = 3
"#
        )
    };
    let cfg = w.config(
        "hangar.toml",
        &(crasher("zero", "0s") + &crasher("waits", "20ms")),
    );
    let d = w.serve(&cfg);
    let http = d.http.expect("the ready line names the HTTP address");
    w.wait_ps("both circuits open", |ps| {
        ps.len() == 2 && ps.values().all(|p| p["state"] == "failed")
    });
    let ps = w.ps();
    let m = wait_metrics(http, "every failure counted", |m| {
        ["zero", "waits"].iter().all(|n| {
            m.get(&format!("hangar_process_failures_total{{process=\"{n}\"}}")) == Some(&4.0)
        })
    });
    for n in ["zero", "waits"] {
        let restarts = m.get(&format!("hangar_process_restarts_total{{process=\"{n}\"}}"));
        assert_eq!(restarts, Some(&3.0), "{n}: {m:#?}");
        assert_eq!(ps[n]["restarts"], 3, "ps agrees: {:#?}", ps[n]);
        let starts = m.get(&format!("hangar_process_starts_total{{process=\"{n}\"}}"));
        assert_eq!(starts, Some(&4.0), "{n}: {m:#?}");
    }
    let (_, body) = http_get(http, "/metrics.json");
    let j: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(j["process_restarts_total"], 6, "{j}");
    assert_eq!(j["process_failures_total"], 8, "{j}");
}

/// A real tool from the Debian package that `.ci/run` installs, or `None`
/// (the caller says it skipped).
fn tool(path: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    p.is_file().then_some(p)
}

/// `GET path` with an `Accept` header over HTTP/1.0: (status, content type, body).
fn http_get_accept(addr: SocketAddr, path: &str, accept: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, ctype, body.to_string())
}

/// A daemon running everything the metrics describe: an HTTP server behind
/// readiness and liveness probes, a process that crashes with no backoff until
/// its circuit opens (2 restarts), sleepers, and an instance of the bundled demo
/// feature. Returns once all of it is settled and counted.
/// A daemon with probes, a crashing process, sleepers and a demo instance.
/// `range`: its own port range. Two such daemons run at once in this test
/// binary; sharing a range, both handed out the same free port, and one
/// instance's binary could not bind it.
fn busy_daemon(w: &World, range: &str) -> (Daemon, SocketAddr) {
    let cfg = w.config(
        "hangar.toml",
        &format!(
            r#"
[daemon]
port_range = "{range}"

[[process]]
name = "web"
command = "python3"
args = ["-m", "http.server", "{{port.http}}", "--bind", "127.0.0.1"]
ports = ["http"]
[process.readiness]
http = "http://127.0.0.1:{{port.http}}/"
[process.liveness]
http = "http://127.0.0.1:{{port.http}}/"
interval = "200ms"

[[process]]
name = "crash"
command = "sh"
args = ["-c", "sleep 0.1; exit 3"]
[process.restart]
initial_interval = "0s"
max_retries = 2

[[process]]
name = "sleeper"
command = "sleep"
args = ["1000"]
instances = 2
"#
        ),
    );
    let d = w.serve(&cfg);
    let http = d.http.expect("the ready line names the HTTP address");
    let out = w.cli(&["instance", "create", "demo", "inst", "--json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    w.wait_ps("web healthy, crash failed, the instance running", |ps| {
        ps.get("web").is_some_and(|p| p["state"] == "running")
            && ps.get("crash").is_some_and(|p| p["state"] == "failed")
            && ps.values().filter(|p| p["state"] == "running").count() >= 4
    });
    // ps shows a state before its event reaches the metrics: wait for both.
    wait_metrics(http, "the crash counted, a liveness check passed", |m| {
        m.get("hangar_process_restarts_total{process=\"crash\"}") == Some(&2.0)
            && m.get("hangar_process_failures_total{process=\"crash\"}") == Some(&3.0)
            && m.keys().any(|k| {
                k.starts_with("hangar_health_checks_total{process=\"web\"")
                    && k.contains("result=\"success\"")
            })
    });
    (d, http)
}

#[test]
fn promtool_accepts_both_exposition_formats_of_a_busy_daemon() {
    let Some(promtool) = tool("/usr/bin/promtool") else {
        eprintln!(
            "skipped: no /usr/bin/promtool (Debian's prometheus package; .ci/run installs it)"
        );
        return;
    };
    let w = World::new("promtool");
    let (_d, http) = busy_daemon(&w, "21500-21549");
    let check = |body: &str| -> Out {
        let mut c = std::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        Out {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    };

    // Anyone not asking for OpenMetrics (curl, promtool, an old scraper) gets 0.0.4.
    let (code, ctype, text) = http_get_accept(http, "/metrics", "*/*");
    assert_eq!(code, 200, "{text}");
    let o = check(&text);
    assert!(
        o.code == Some(0) && o.stdout.trim().is_empty() && o.stderr.trim().is_empty(),
        "promtool check metrics: {o:?}\n{text}"
    );
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("# EOF"), "{text}");
    let m = parse_metrics(&text);
    for family in [
        "hangar_events_total",
        "hangar_health_checks_total",
        "hangar_process_failures_total",
        "hangar_process_starts_total",
        "hangar_process_restarts_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} has no HELP:\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {family} counter\n")),
            "{family}:\n{text}"
        );
    }
    assert_eq!(
        m.get("hangar_process_failures_total{process=\"crash\"}"),
        Some(&3.0)
    );

    // A scraper that asks for OpenMetrics gets it, with the same series.
    let (code, ctype, om) = http_get_accept(
        http,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    );
    assert_eq!(code, 200, "{om}");
    assert_eq!(
        ctype,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE hangar_events counter\n"), "{om}");
    let keys = |t: &str| -> BTreeSet<String> { parse_metrics(t).into_keys().collect() };
    let (k004, kom) = (keys(&text), keys(&om));
    let differ: Vec<_> = k004.symmetric_difference(&kom).collect();
    // Scrapes a moment apart may see a health check more or less, nothing else.
    assert!(
        differ
            .iter()
            .all(|k| k.starts_with("hangar_health_checks_total")),
        "{differ:#?}"
    );
}

#[test]
fn metrics_expose_the_build_the_daemon_itself_and_each_process_usage() {
    let w = World::new("usage");
    let cfg = w.config(
        "hangar.toml",
        r#"
[[process]]
name = "sleeper"
command = "sleep"
args = ["1000"]
instances = 2

[[process]]
name = "once"
command = "true"
[process.restart]
policy = "never"
"#,
    );
    let d = w.serve(&cfg);
    let http = d.http.expect("the ready line names the HTTP address");
    w.wait_ps("2 running, 1 exited", |ps| {
        ps.len() == 3
            && ps.values().filter(|p| p["state"] == "running").count() == 2
            && ps["once"]["state"] == "exited"
    });
    let m = wait_metrics(http, "both sleepers' usage", |m| {
        ["sleeper-1", "sleeper-2"]
            .iter()
            .all(|p| m.contains_key(&format!("hangar_process_memory_bytes{{process=\"{p}\"}}")))
    });
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        m.get(&format!("hangar_build_info{{version=\"{version}\"}}")),
        Some(&1.0),
        "{m:#?}"
    );
    // The daemon's own process metrics, under their standard names.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = m["process_start_time_seconds"];
    assert!(start <= now && start > now - 3600.0, "{start} vs {now}");
    assert!(m["process_cpu_seconds_total"] > 0.0, "{m:#?}");
    assert!(m["process_resident_memory_bytes"] > 1e6, "{m:#?}");
    assert!(m["process_open_fds"] >= 3.0, "{m:#?}");
    assert!(m["process_max_fds"] >= m["process_open_fds"], "{m:#?}");
    // Each running process's CPU and memory; one without a pid has none.
    for p in ["sleeper-1", "sleeper-2"] {
        let mem = m[&format!("hangar_process_memory_bytes{{process=\"{p}\"}}")];
        assert!(mem > 0.0, "{p}: {m:#?}");
        let cpu = m.get(&format!(
            "hangar_process_cpu_seconds_total{{process=\"{p}\"}}"
        ));
        assert!(cpu.is_some_and(|v| *v >= 0.0), "{p}: {m:#?}");
    }
    assert!(!m
        .keys()
        .any(|k| k.contains("process=\"once\"") && k.contains("memory")));
}

/// How long a real Prometheus server may take to start, scrape and answer: a
/// Go server of some size, on a machine busy with other tests.
const PROMETHEUS_LIMIT: Duration = Duration::from_secs(120);

/// A real Prometheus server on loopback, with its own config and storage,
/// killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(bin: &Path, dir: &Path, target: SocketAddr) -> Prometheus {
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: hangar\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        // A free port may be taken between finding and binding it: try a few.
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut child = std::process::Command::new(bin)
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.try_clone().unwrap())
                .spawn()
                .unwrap();
            let up = wait_for(PROMETHEUS_LIMIT, || {
                child.try_wait().unwrap().is_some()
                    || TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                        .is_ok_and(|_| http_get(addr, "/-/ready").0 == 200)
            });
            if up && child.try_wait().unwrap().is_none() {
                return Prometheus { child, addr };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "prometheus did not come up; its log:\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
    }

    /// `GET /api/v1/…` as JSON.
    fn api(&self, path_and_query: &str) -> Value {
        let (code, body) = http_get(self.addr, path_and_query);
        assert_eq!(code, 200, "{path_and_query}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }
}

/// Percent-encoding for a PromQL query in a URL.
fn query_escape(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_daemon_and_answers_a_restart_count() {
    let Some(bin) = tool("/usr/bin/prometheus") else {
        eprintln!(
            "skipped: no /usr/bin/prometheus (Debian's prometheus package; .ci/run installs it)"
        );
        return;
    };
    let w = World::new("prometheus");
    let (_d, http) = busy_daemon(&w, "21550-21599");
    let pdir = w.dir.join("prometheus");
    std::fs::create_dir_all(&pdir).unwrap();
    let p = Prometheus::start(&bin, &pdir, http);

    let q = format!(
        "/api/v1/query?query={}",
        query_escape("hangar_process_restarts_total{job=\"hangar\",process=\"crash\"}")
    );
    let mut last = Value::Null;
    let ok = wait_for(PROMETHEUS_LIMIT, || {
        last = p.api(&q);
        last["data"]["result"][0]["value"][1] == "2"
    });
    assert!(ok, "no restart count from Prometheus: {last}");
    assert_eq!(last["status"], "success", "{last}");

    // The scrape itself was healthy: Prometheus negotiated OpenMetrics and
    // parsed every family without error.
    let t = p.api("/api/v1/targets");
    let target = &t["data"]["activeTargets"][0];
    assert_eq!(target["health"], "up", "{t}");
    assert_eq!(target["lastError"], "", "{t}");
    let q = format!(
        "/api/v1/query?query={}",
        query_escape(
            "process_start_time_seconds{job=\"hangar\"} > 0 and on() hangar_build_info == 1"
        )
    );
    let v = p.api(&q);
    assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(1), "{v}");
}

#[test]
fn http_sink_retries_until_the_hook_takes_the_events() {
    let w = World::new("sink");
    let hook = Hook::start(2);
    let cfg = w.config(
        "hangar.toml",
        &format!(
            r#"
[[daemon.sink]]
type = "http"
url = "http://{}/hook"
format = "json"
flush_interval_ms = 50

[[process]]
name = "p"
command = "sleep"
args = ["1000"]
instances = 3
"#,
            hook.addr
        ),
    );
    let _d = w.serve(&cfg);
    w.wait_ps("3 running", |ps| {
        ps.values().filter(|p| p["state"] == "running").count() == 3
    });
    // Every p-N gets to running in what the hook accepted.
    let delivered = || -> Vec<Value> {
        hook.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| {
                let v: Value = serde_json::from_str(b).unwrap_or_else(|e| panic!("{e}: {b}"));
                v.as_array().expect("a JSON array").clone()
            })
            .collect()
    };
    let ok = wait_for(LONG, || {
        let evs = delivered();
        ["p-1", "p-2", "p-3"].iter().all(|n| {
            evs.iter()
                .any(|e| e["name"] == *n && e["kind"] == "state" && e["to"] == "running")
        })
    });
    assert!(ok, "delivered: {:#?}", delivered());
    for e in delivered() {
        for k in ["id", "at_ms", "name", "kind", "from", "to"] {
            assert!(!e[k].is_null(), "{k} missing in {e}");
        }
    }
    assert!(hook.requests.load(Ordering::SeqCst) >= 3);

    // A new event after recovery goes through too.
    assert_eq!(w.cli(&["stop", "p-1"]).code, Some(0));
    assert!(
        wait_for(LONG, || delivered()
            .iter()
            .any(|e| e["name"] == "p-1" && e["to"] == "stopped")),
        "{:#?}",
        delivered()
    );

    let st = w.json(&["status", "--json"]);
    let sinks = st["sinks"].as_array().unwrap();
    assert_eq!(sinks.len(), 1, "{st}");
    let s = &sinks[0];
    assert_eq!(s["kind"], "http", "{s}");
    assert!(s["failed_attempts"].as_u64() >= Some(2), "{s}");
    assert!(s["delivered"].as_u64() > Some(0), "{s}");
    assert_eq!(s["dropped"], 0, "{s}");
    // The human status names the sink as well.
    let human = w.cli(&["status"]);
    assert!(human.stdout.contains("failed attempts"), "{human:?}");
}

#[test]
fn reload_applies_only_the_difference() {
    let w = World::new("reload");
    let v1 = r#"
[daemon]
reconcile_interval = "200ms"

[[process]]
name = "keep"
command = "sleep"
args = ["1000"]

[[process]]
name = "drop"
command = "sleep"
args = ["1000"]

[[process]]
name = "change"
command = "sleep"
args = ["1000"]
"#;
    let cfg = w.config("hangar.toml", v1);
    let d = w.serve(&cfg);
    w.wait_ps("3 running", |ps| {
        ps.len() == 3 && ps.values().all(|p| p["state"] == "running")
    });
    let keep = w.pid_of("keep");
    let change = w.pid_of("change");
    let keep_proc = w.by_name()["keep"][0].clone();

    let v2 = r#"
[daemon]
reconcile_interval = "200ms"

[[process]]
name = "keep"
command = "sleep"
args = ["1000"]

[[process]]
name = "change"
command = "sleep"
args = ["999"]

[[process]]
name = "new"
command = "sleep"
args = ["1000"]
"#;
    w.config("hangar.toml", v2);
    d.signal(Signal::HUP);
    w.wait_ps("the new set running", |ps| {
        ps.keys().map(String::as_str).collect::<Vec<_>>() == ["change", "keep", "new"]
            && ps.values().all(|p| p["state"] == "running")
            && ps["change"]["pid"].as_u64() != Some(u64::from(change))
    });
    let ps = w.ps();
    assert_eq!(ps["change"]["args"], serde_json::json!(["999"]));
    assert_eq!(w.pid_of("keep"), keep, "keep was restarted");
    assert!(alive(&keep_proc));
    assert!(
        wait_for(Duration::from_secs(5), || !w.by_name().contains_key("drop")),
        "drop still runs"
    );
    let names = w.by_name();
    assert!(
        names["change"][0].cmdline.contains("sleep 999"),
        "{names:?}"
    );
    assert_eq!(
        names.keys().map(String::as_str).collect::<Vec<_>>(),
        ["change", "keep", "new"]
    );
    assert!(d.log().contains("\"message\":\"reloaded\""), "{}", d.log());

    // The same file again: nothing to do.
    let r = w.json(&["reload", "--json"]);
    assert_eq!(
        r,
        serde_json::json!({"added": [], "removed": [], "changed": [],
                           "unchanged": ["change", "keep", "new"], "errors": []})
    );
    // A stopped process stays stopped across a reload that does not touch it.
    assert_eq!(w.cli(&["stop", "new"]).code, Some(0));
    let r = w.json(&["reload", "--json"]);
    assert_eq!(r["unchanged"], serde_json::json!(["change", "keep", "new"]));
    assert_eq!(w.ps()["new"]["state"], "stopped");

    // A broken file is refused whole, by the command and by SIGHUP.
    w.write("hangar.toml", "[[process]]\nname = \"keep\"\n");
    let r = w.cli(&["reload", "--json"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("CONFIG_INVALID"), "{r:?}");
    d.signal(Signal::HUP);
    assert!(
        wait_for(LONG, || d.log().contains("reload refused")),
        "{}",
        d.log()
    );
    assert_eq!(w.pid_of("keep"), keep);
    assert_eq!(w.ps().len(), 3);
}

#[test]
fn sigterm_stops_everything_and_the_next_boot_keeps_desired_states() {
    let w = World::new("term");
    let cfg = w.config(
        "hangar.toml",
        r#"
[daemon]
reconcile_interval = "200ms"

[[process]]
name = "a"
command = "sleep"
args = ["1000"]

[[process]]
name = "b"
command = "sleep"
args = ["1000"]
instances = 2

[[process]]
name = "c"
command = "sh"
args = ["-c", "sleep 1000 & wait"]
"#,
    );
    let extra = w.write(
        "extra.toml",
        "[[process]]\nname = \"api-on\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n\n[[process]]\nname = \"api-off\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n",
    );
    let mut d = w.serve(&cfg);
    w.wait_ps("4 running", |ps| {
        ps.len() == 4 && ps.values().all(|p| p["state"] == "running")
    });
    assert_eq!(w.cli(&["add", extra.to_str().unwrap()]).code, Some(0));
    assert_eq!(w.cli(&["stop", "api-off"]).code, Some(0));
    assert_eq!(w.cli(&["stop", "b-*"]).code, Some(0));
    w.wait_ps("api-on running", |ps| ps["api-on"]["state"] == "running");
    assert_eq!(w.procs().len(), 4, "{:?}", w.procs()); // a, c + its sleep, api-on

    let t = Instant::now();
    d.signal(Signal::TERM);
    let st = d.wait_exit(Duration::from_secs(10));
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", d.log());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert!(w.procs().is_empty(), "left running: {:?}", w.procs());
    assert!(d.log().contains("daemon stopped"), "{}", d.log());
    assert!(!w.data().join("hangar.sock").exists(), "socket left behind");
    assert_eq!(w.cli(&["ps"]).code, Some(3));

    let _d = w.serve(&cfg);
    let want = |ps: &BTreeMap<String, Value>| {
        ps.len() == 6
            && ["a", "c", "api-on"]
                .iter()
                .all(|n| ps[*n]["state"] == "running")
            && ["b-1", "b-2", "api-off"]
                .iter()
                .all(|n| ps[*n]["state"] == "stopped" && ps[*n]["desired"] == "stopped")
    };
    w.wait_ps("the same desired states", want);
    // Several reconciler passes later, still so.
    std::thread::sleep(Duration::from_millis(800));
    let ps = w.ps();
    assert!(want(&ps), "{ps:#?}");
    let names: Vec<String> = w.by_name().into_keys().collect();
    assert_eq!(names, ["a", "api-on", "c"]);
    let st = w.json(&["status", "--json"]);
    assert_eq!(st["recovered_killed"], 0, "{st}");
    assert_eq!(
        st["processes"],
        serde_json::json!({"running": 3, "stopped": 3}),
        "{st}"
    );
}

/// Zombie children of `parent`.
fn zombies_of(parent: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = s.rsplit_once(')') else {
                return false;
            };
            let mut f = rest.split_ascii_whitespace();
            f.next() == Some("Z") && f.next().and_then(|p| p.parse().ok()) == Some(parent)
        })
        .collect()
}

/// Descendants that left their process group (a setsid child, a
/// double-forked sleep, and redis-server --daemonize yes, a real daemon that
/// forks and setsids away from its parent) go with their process on restart
/// and on stop; what reparents to the daemon is reaped; and after kill -9 of
/// the daemon, the next boot's recovery ends them.
#[test]
fn descendants_that_left_the_group_go_on_restart_stop_and_crash() {
    let w = World::new("escape");
    // redis rewrites its process title over its environment, so no marker
    // can be read from it: only its cgroup ties it to its process once it
    // has left (root, or a delegated subtree).
    let redis = Path::new("/usr/bin/redis-server").exists() && rustix::process::geteuid().is_root();
    let port = free_port();
    let rdir = w.dir.join("redis");
    std::fs::create_dir_all(&rdir).unwrap();
    let mut body = r#"
[[process]]
name = "setsid"
command = "sh"
args = ["-c", "setsid sleep 1000 & sleep 1000"]

[[process]]
name = "double"
command = "sh"
args = ["-c", "(setsid sleep 1000 &); sleep 1000"]
"#
    .to_string();
    // sh, its sleep, and the one that left: 3 each; redis: sleep and the daemon.
    let mut want = BTreeMap::from([("double".to_string(), 3), ("setsid".to_string(), 3)]);
    if redis {
        body += &format!(
            r#"
[[process]]
name = "redis"
command = "sh"
args = ["-c", "redis-server --port {port} --bind 127.0.0.1 --daemonize yes --save '' --appendonly no --dir {d} --pidfile {d}/redis.pid --logfile {d}/redis.log && exec sleep 1000"]
"#,
            d = rdir.display()
        );
        // The title-rewritten daemon is counted through its pid file.
        want.insert("redis".to_string(), 1);
    } else {
        eprintln!("note: the redis-server part needs redis-server (Debian: redis-server; .ci/run installs it) and root (for cgroups): testing without the real daemon");
    }
    let cfg = w.config("hangar.toml", &body);
    let ping = || {
        TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 7];
            s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut buf).is_ok()
                && &buf == b"+PONG\r\n"
        })
    };
    let counts = |w: &World| -> BTreeMap<String, usize> {
        w.by_name().into_iter().map(|(n, p)| (n, p.len())).collect()
    };
    let redis_pid = || -> Option<Proc> {
        let pid: u32 = std::fs::read_to_string(rdir.join("redis.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let (state, pgid, start) = proc_stat(pid)?;
        (!matches!(state, 'Z' | 'X')).then(|| Proc {
            pid,
            pgid,
            start,
            name: Some("redis daemon".into()),
            cmdline: String::new(),
        })
    };
    let settled = |w: &World, what: &str| {
        let mut last = BTreeMap::new();
        let ok = wait_for(LONG, || {
            last = counts(w);
            last == want && (!redis || (ping() && redis_pid().is_some()))
        });
        assert!(ok, "{what}: want {want:?}, have {last:?}: {:#?}", w.procs());
    };
    let gone = |before: &[Proc], what: &str| {
        let mut left = Vec::new();
        let ok = wait_for(Duration::from_secs(10), || {
            left = before.iter().filter(|p| alive(p)).collect::<Vec<_>>();
            left.is_empty()
        });
        assert!(ok, "{what}: still alive: {left:#?}");
    };

    let mut d = w.serve(&cfg);
    settled(&w, "first start");
    let first: Vec<Proc> = w.procs().into_iter().chain(redis_pid()).collect();
    let r = w.cli(&["restart", "*"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    gone(&first, "after restart");
    settled(&w, "after restart");
    let zombies = |d: &Daemon| {
        let mut z = Vec::new();
        let ok = wait_for(Duration::from_secs(5), || {
            z = zombies_of(d.pid());
            z.is_empty()
        });
        assert!(ok, "zombies under the daemon: {z:?}");
    };
    zombies(&d);

    let second: Vec<Proc> = w.procs().into_iter().chain(redis_pid()).collect();
    let r = w.cli(&["stop", "*"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    gone(&second, "after stop");
    assert!(!redis || !ping(), "redis still answers after stop");
    zombies(&d);

    let r = w.cli(&["start", "*"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    settled(&w, "started again");
    let third: Vec<Proc> = w.procs().into_iter().chain(redis_pid()).collect();
    d.kill9();
    // The leaders die with the daemon; what left their groups does not, until
    // the next boot's recovery finds it by its marker.
    let _d = w.serve(&cfg);
    gone(&third, "after kill -9 and recovery");
    settled(&w, "after recovery");
}

/// `hangar serve` on a data dir, store or configuration file that another
/// user owns or may write: refused before anything is changed (as sshd
/// refuses such key files), so that user cannot plant what root runs.
#[test]
fn a_data_dir_someone_else_could_write_is_refused_untouched() {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to give files to another user (CI runs as root)");
        return;
    }
    let s = common::Scratch::new("unsafe-dir");
    let nobody = Some(65534);
    let serve = |data: &Path, extra: &[&str]| {
        let mut child = common::hangar()
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--http", ""])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hangar serve starts");
        let refused = common::wait_for(common::LONG, || matches!(child.try_wait(), Ok(Some(_))));
        if !refused {
            let _ = child.kill();
        }
        let out = child.wait_with_output().expect("waited");
        assert!(refused, "the daemon started on an unsafe data dir");
        out
    };

    // A data dir another user owns: refused, left as it was.
    let data = s.path().join("theirs");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&data, nobody, nobody).unwrap();
    let o = serve(&data, &[]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("DATA_DIR_UNSAFE") && err.contains("another user"),
        "{err}"
    );
    let md = std::fs::metadata(&data).unwrap();
    assert_eq!(
        (md.uid(), md.mode() & 0o777),
        (65534, 0o755),
        "changed anyway"
    );
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        0,
        "wrote into it"
    );

    // Our data dir with a store another user planted.
    let data = s.path().join("ours");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("hangar.db"), b"").unwrap();
    std::os::unix::fs::chown(data.join("hangar.db"), nobody, nobody).unwrap();
    let o = serve(&data, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("DATA_DIR_UNSAFE"));

    // A configuration file anyone may write.
    let data = s.path().join("cfg");
    let cfg = s.path().join("open.toml");
    std::fs::write(
        &cfg,
        "[[process]]\nname = \"x\"\ncommand = \"sleep\"\nargs = [\"100\"]\n",
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = serve(&data, &["-c", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("DATA_DIR_UNSAFE") && err.contains("writable"),
        "{err}"
    );

    // Group-writable but our own (a checkout under umask 002): accepted.
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o664)).unwrap();
    let ours = common::Served::start(&s.path().join("ok"), &["-c", cfg.to_str().unwrap()]);
    drop(ours);
}

/// Another user's client on the daemon's socket is told it is a permission
/// problem and whose socket it is, not that no daemon runs.
#[test]
fn another_users_client_hears_permission_denied_not_no_daemon() {
    if !rustix::process::geteuid().is_root() || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!(
            "skipped: needs root and setpriv to run a client as another user (CI runs as root)"
        );
        return;
    }
    let s = common::Scratch::new("perm-sock");
    let data = s.path().join("data");
    let _d = common::Served::start(&data, &[]);
    // The scratch dir's parents must let `nobody` reach the data dir.
    std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = std::process::Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_hangar"))
        .arg("--data-dir")
        .arg(&data)
        .arg("status")
        .env_remove("HANGAR_DATA_DIR")
        .output()
        .expect("setpriv runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("SOCKET_PERMISSION_DENIED") && err.contains("permission denied"),
        "{err}"
    );
    assert!(
        !err.contains("DAEMON_NOT_RUNNING") && !err.contains("start it with"),
        "{err}"
    );
    assert!(err.contains("owner_uid: 0"), "{err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
}

/// Descriptors the daemon holds now.
fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// How many of `conns` the daemon has closed (a read ends at once, with
/// end of file or a reset, instead of timing out).
fn closed_by_peer(conns: &[TcpStream]) -> usize {
    conns
        .iter()
        .filter(|c| {
            let _ = c.set_read_timeout(Some(Duration::from_millis(20)));
            let mut r: &TcpStream = c;
            let mut b = [0u8; 1];
            match r.read(&mut b) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            }
        })
        .count()
}

/// Idle connections from one client, on the metrics listener and on the
/// token-protected gRPC TCP listener, cannot take the daemon's descriptors:
/// past `max_per_client` they are closed at once, the rest once idle for
/// `idle_timeout`; meanwhile the daemon answers on its socket, and after it
/// answers on both listeners again.
#[test]
fn idle_connections_cannot_exhaust_the_daemon() {
    let s = common::Scratch::new("conn-flood");
    let http = common::free_port();
    let grpc = common::free_port();
    let cfg = s.path().join("hangar.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nhttp = \"127.0.0.1:{http}\"\n\
             [daemon.grpc]\ntcp = \"127.0.0.1:{grpc}\"\ntoken = \"flood-test-token\"\n\
             [daemon.connections]\nmax_per_client = 20\nidle_timeout = \"2s\"\n\
             [[process]]\nname = \"sleeper\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n"
        ),
    )
    .unwrap();
    let data = s.path().join("data");
    let child = common::hangar()
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hangar serve starts");
    let d = common::Served::adopt(child, &data);
    let pid = d.child.id();
    let http_addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    assert_eq!(http_get(http_addr, "/healthz").0, 200);
    let base = fds_of(pid);

    for port in [http, grpc] {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let conns: Vec<TcpStream> = (0..300)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok())
            .collect();
        assert_eq!(conns.len(), 300, "connects are accepted by the kernel");
        // Past the cap, closed as soon as accepted (the kernel's backlog is
        // drained as the daemon accepts, so this takes a moment under load);
        // the daemon holds at most the cap.
        assert!(
            wait_for(Duration::from_secs(20), || closed_by_peer(&conns) >= 280),
            "port {port}: only {} of 300 closed",
            closed_by_peer(&conns)
        );
        assert!(
            wait_for(Duration::from_secs(20), || fds_of(pid) <= base + 20 + 5),
            "port {port}: the daemon holds {} descriptors (base {base})",
            fds_of(pid)
        );
        // The supervisor and its socket are not starved.
        let ps = common::run(&data, &["ps", "--json"]);
        assert!(ps.status.success(), "{}", common::stderr(&ps));
        // Once idle past the timeout, the rest are closed too.
        assert!(
            wait_for(Duration::from_secs(30), || closed_by_peer(&conns) == 300),
            "port {port}: idle connections were kept"
        );
        drop(conns);
    }
    assert_eq!(http_get(http_addr, "/healthz").0, 200);
    let o = common::hangar()
        .args([
            "--addr",
            &format!("http://127.0.0.1:{grpc}"),
            "--token",
            "flood-test-token",
            "status",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A data dir on a full disk: a change the store refuses is not applied
/// (not now, not by the reconciler, not at the next start), and the events
/// of the full period are not lost without a trace (root: a small tmpfs).
#[test]
fn a_full_disk_refuses_changes_whole_and_keeps_count_of_events() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs (CI runs as root)");
        return;
    }
    let s = common::Scratch::new("full-disk");
    let data = s.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _u = Unmount(data.clone());
    let cfg = s.path().join("hangar.toml");
    std::fs::write(
        &cfg,
        "[daemon]\nreconcile_interval = \"500ms\"\n\
         [[process]]\nname = \"s-1\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n\
         [[process]]\nname = \"s-2\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n\
         [[process]]\nname = \"crasher\"\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 0.3; exit 3\"]\n\
         [process.restart]\npolicy = \"always\"\ninitial_interval = \"200ms\"\nmax_interval = \"200ms\"\nmax_retries = 0\n",
    )
    .unwrap();
    let mut d = common::Served::start(&data, &["-c", cfg.to_str().unwrap()]);
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let state = |name: &str| -> String {
        let o = common::run(&data, &["ps", "--json", name]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .ok()
            .and_then(|v| v[0]["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    assert!(wait_for(Duration::from_secs(30), || state("s-2") == "running"));
    assert!(common::run(&data, &["stop", "s-1"]).status.success());
    assert!(wait_for(Duration::from_secs(30), || state("s-1") == "stopped"));
    // Fill the disk. The store's reserve lets it record that, and then it
    // is filled too.
    let filler = data.join("filler");
    let fill = || {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&filler)
            .unwrap();
        for size in [1 << 16, 1 << 12, 1] {
            let chunk = vec![7u8; size];
            while f.write_all(&chunk).is_ok() {}
        }
        let _ = f.sync_all();
    };
    let full_from = now_ms();
    fill();
    assert!(
        wait_for(Duration::from_secs(30), || {
            let o = common::run(&data, &["events", "--json", "--name", "hangar"]);
            common::stdout(&o).contains("\"store.full\"")
        }),
        "the full disk was not recorded"
    );
    fill();
    let stop = common::run(&data, &["stop", "s-2"]);
    let start = common::run(&data, &["start", "s-1"]);
    // Whether refused or not, what the daemon answered is what it does.
    std::thread::sleep(Duration::from_secs(3));
    let (s1, s2) = (state("s-1"), state("s-2"));
    if stop.status.success() {
        assert_eq!(s2, "stopped", "stop answered ok but s-2 is {s2}");
    } else {
        assert!(
            common::stderr(&stop).contains("STORE"),
            "{}",
            common::stderr(&stop)
        );
        assert_eq!(s2, "running", "a refused stop was applied anyway");
    }
    if start.status.success() {
        assert_eq!(s1, "running", "start answered ok but s-1 is {s1}");
    } else {
        assert_eq!(s1, "stopped", "a refused start was applied anyway");
    }
    // Space back: the crasher's events of the full period reach history.
    let full_until = now_ms();
    std::fs::remove_file(&filler).unwrap();
    let history = || -> Vec<serde_json::Value> {
        let o = common::run(&data, &["events", "--json", "-n", "100000"]);
        common::stdout(&o)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    assert!(
        wait_for(Duration::from_secs(30), || {
            history().iter().any(|e| {
                e["name"] == "crasher"
                    && e["at_ms"]
                        .as_i64()
                        .is_some_and(|t| t > full_from + 500 && t < full_until - 500)
            })
        }),
        "no event of the full period reached history"
    );
    // The reserve let the store record the full disk itself, and it is made
    // again now that there is room.
    assert!(
        wait_for(Duration::from_secs(30), || history()
            .iter()
            .any(|e| e["kind"] == "store.reserve_restored")),
        "the reserve was not made again: {:?}",
        history()
    );
    let reserve = std::fs::metadata(data.join("hangar.db-reserve")).expect("reserve back");
    assert_eq!(reserve.len(), 4 << 20);
    let h = history();
    let full: Vec<&serde_json::Value> = h.iter().filter(|e| e["kind"] == "store.full").collect();
    assert_eq!(full.len(), 1, "{full:?}");
    assert!(
        full[0]["at_ms"]
            .as_i64()
            .is_some_and(|t| t >= full_from && t <= full_until),
        "{full:?}"
    );
    // Nothing went missing: ids have no gap, nothing is counted lost, and the
    // crasher's transitions join up (each starts where the last one ended).
    let ids: Vec<i64> = h.iter().filter_map(|e| e["id"].as_i64()).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "event ids jump: {ids:?}"
    );
    assert!(
        !h.iter().any(|e| e["kind"] == "events.lost"),
        "events were lost: {h:?}"
    );
    let crasher: Vec<&serde_json::Value> = h
        .iter()
        .filter(|e| e["name"] == "crasher" && e["kind"] == "state")
        .collect();
    for w in crasher.windows(2) {
        assert_eq!(
            w[1]["from"], w[0]["to"],
            "a transition of the crasher is missing between {} and {}",
            w[0], w[1]
        );
    }
    // A restart of the daemon keeps what was answered.
    d.kill9();
    drop(d);
    let _d = common::Served::start(&data, &["-c", cfg.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        state("s-2"),
        if stop.status.success() {
            "stopped"
        } else {
            "running"
        }
    );
    assert_eq!(
        state("s-1"),
        if start.status.success() {
            "running"
        } else {
            "stopped"
        }
    );
}
