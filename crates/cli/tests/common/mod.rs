//! Helpers shared by the tests that run the real `hangar` binary.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Generous: a 2-core machine may be building something else meanwhile.
pub const LONG: Duration = Duration::from_secs(60);

/// The binary, with the environment that would steer it cleared.
pub fn hangar() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hangar"));
    for v in [
        "HANGAR_LOG",
        "HANGAR_DATA_DIR",
        "HANGAR_ADDR",
        "HANGAR_TOKEN",
        "HANGAR_CATALOG",
    ] {
        c.env_remove(v);
    }
    c
}

pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over HTTP/1.0: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    (status, body.to_string())
}

/// A fresh directory under the temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("hangar-{tag}-{}-{nanos}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `hangar serve` on a data dir, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Served {
    pub child: Child,
    pub data: PathBuf,
}

impl Served {
    pub fn start(data: &Path, extra: &[&str]) -> Served {
        Served::start_http(data, "", extra)
    }

    /// The same with its HTTP listener on `http` (`""`: none).
    pub fn start_http(data: &Path, http: &str, extra: &[&str]) -> Served {
        let mut cmd = hangar();
        cmd.arg("--data-dir")
            .arg(data)
            .args(["serve", "--http", http])
            .args(extra)
            .stdout(Stdio::null());
        // Its stderr goes beside the data dir, to be shown if it does not come up.
        let log = data.with_extension("serve-stderr");
        match std::fs::File::create(&log) {
            Ok(f) => cmd.stderr(f),
            Err(_) => cmd.stderr(Stdio::null()),
        };
        let mut child = cmd.spawn().expect("hangar serve starts");
        let sock = data.join("hangar.sock");
        if !wait_for(LONG, || {
            sock.exists() && run(data, &["status"]).status.success()
        }) {
            let exited = child.try_wait().ok().flatten();
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the daemon did not come up (exited: {exited:?}); its stderr:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Served {
            child,
            data: data.to_path_buf(),
        }
    }

    /// A daemon the caller spawned (e.g. inside a namespace), once it answers.
    pub fn adopt(child: Child, data: &Path) -> Served {
        let served = Served {
            child,
            data: data.to_path_buf(),
        };
        let sock = data.join("hangar.sock");
        assert!(
            wait_for(LONG, || sock.exists()
                && run(data, &["status"]).status.success()),
            "the daemon did not come up"
        );
        served
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                if let Some(p) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
                }
            }
            if !wait_for(Duration::from_secs(10), || {
                matches!(self.child.try_wait(), Ok(Some(_)))
            }) {
                self.kill9();
            }
        }
    }
}

/// Run a client command against a data dir.
pub fn run(data: &Path, args: &[&str]) -> Output {
    hangar()
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .expect("hangar runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {:?} stderr {:?}",
            stdout(o),
            stderr(o)
        )
    })
}

/// Live (non-zombie) processes whose command line contains `needle`.
pub fn pids_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmd).contains(needle) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim().chars().next());
        if !matches!(state, Some('Z') | Some('X') | None) {
            out.push(pid);
        }
    }
    out
}
