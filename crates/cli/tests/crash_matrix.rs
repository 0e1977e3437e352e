//! The crash matrix: `hangar serve` killed with SIGKILL at every persisted
//! step of instance create, update and delete, of an install and of a
//! reload, then started again and held to the same invariants each time.
//!
//! Each cell arms one crash point (`hangar_base::failpoint`, compiled into
//! the `hangar` that `cargo test` builds) through `FAILPOINTS`, runs its
//! operation until the daemon SIGKILLs itself there, starts a daemon again
//! without it, and checks:
//!
//! - the daemon really died of SIGKILL (so the point is on the operation's
//!   path);
//! - no orphan and no duplicate: every process carrying the data dir's
//!   `HANGAR_SUPERVISOR_ID` is a child of the new daemon, listed by `hangar
//!   ps` as that process, one per name;
//! - no leaked record: the store's process rows are the processes `hangar
//!   ps` lists; an instance's record has its directory exactly when it is
//!   made, and every directory under `instances/` is a made instance's;
//! - no leaked file: no `.staging-*`, `.trash-*`, `.current-*`,
//!   `.hangar-tmp-*` or `.tmp-*` anywhere in the data dir; a `.part`
//!   download stays only as long as its version is not installed (it is
//!   how a download resumes), and none is left once the cell's actions ran;
//! - no leaked cgroup: the supervisor group's cgroups are those of running
//!   processes, and none is left once the daemon stopped;
//! - the store passes `PRAGMA integrity_check`;
//! - the operation took effect whole or not at all: a create left a
//!   running instance or one in `error` (`INSTANCE_INTERRUPTED`); an update
//!   left a config file that says what the record says; a delete is
//!   finished; an install is current or absent, with `current` on a whole
//!   version; a reload's processes are the new file's;
//! - what is left can be acted on: `instance start`, `stop` and `delete`
//!   succeed, and a new instance takes the one port of the daemon's range
//!   (so no port leaked); `install` and `reload` succeed again.
//!
//! Cells run on a few worker threads, each with a port of its own
//! (23000-23199 is this file's). A cell that fails names itself and shows
//! every daemon's standard error.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The operations, each with a way to set up, run and check it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    /// `hangar instance create demo web` (the built-in catalog's demo).
    Create,
    /// `hangar instance update web --set greeting=second` of a running
    /// instance of `democonf` (the demo with a templated config file).
    Update,
    /// `hangar instance delete web` of a running demo instance.
    Delete,
    /// `hangar install demo@1.0.0` through the daemon, 1.1.0 current before.
    Install,
    /// `hangar reload` of a file that drops `gone`, changes `edit` and adds
    /// `fresh`.
    Reload,
}

/// The matrix: (operation, crash point, and the context it must be reached
/// in, when the point is on a shared path). One line per cell.
const MATRIX: &[(Op, &str, &str)] = &[
    (Op::Create, "instance.create.queued", ""),
    (Op::Create, "instance.step.install.stored", ""),
    (Op::Create, "install.downloaded", "demo@1.1.0"),
    (Op::Create, "install.verified", "demo@1.1.0"),
    (Op::Create, "install.extracted", "demo@1.1.0"),
    (Op::Create, "install.moved", "demo@1.1.0"),
    (Op::Create, "install.switched", "demo@1.1.0"),
    (Op::Create, "instance.step.install.done", ""),
    (Op::Create, "instance.step.ports.stored", ""),
    (Op::Create, "instance.step.ports.done", ""),
    (Op::Create, "instance.step.network.stored", ""),
    (Op::Create, "instance.step.network.done", ""),
    (Op::Create, "instance.step.config.stored", ""),
    (Op::Create, "instance.step.config.done", ""),
    (Op::Create, "instance.step.process.stored", ""),
    (Op::Create, "desired.apply.stored", "added:demo.web"),
    (Op::Create, "desired.apply.started", "added:demo.web"),
    (Op::Create, "instance.step.process.done", ""),
    (Op::Create, "instance.step.ready.stored", ""),
    (Op::Create, "instance.step.ready.done", ""),
    (Op::Create, "instance.create.running", ""),
    (Op::Update, "instance.update.saved", ""),
    (Op::Update, "instance.update.written", ""),
    (Op::Update, "desired.act.stored", "restart:democonf.web"),
    (Op::Update, "instance.update.restarted", ""),
    (Op::Delete, "instance.delete.marked", ""),
    (Op::Delete, "desired.apply.stored", "removed:demo.web"),
    (Op::Delete, "instance.undo.process.done", ""),
    (Op::Delete, "instance.undo.config.done", ""),
    (Op::Delete, "instance.undo.ports.done", ""),
    (Op::Delete, "instance.delete.removed", ""),
    (Op::Install, "install.downloaded", "demo@1.0.0"),
    (Op::Install, "install.verified", "demo@1.0.0"),
    (Op::Install, "install.extracted", "demo@1.0.0"),
    (Op::Install, "install.moved", "demo@1.0.0"),
    (Op::Install, "install.switched", "demo@1.0.0"),
    (Op::Reload, "desired.apply.put", "added:fresh"),
    (Op::Reload, "desired.apply.stored", "added:fresh"),
    (Op::Reload, "desired.apply.stopped", "added:fresh"),
    (Op::Reload, "desired.apply.started", "added:fresh"),
];

/// Cells at once: enough to overlap the waits, few enough for two cores.
const WORKERS: usize = 4;
/// This file's ports: one per worker, so a port a cell leaks cannot be
/// handed out and a new instance cannot be made.
const FIRST_PORT: u16 = 23000;

/// How long the daemon may take to reach the point and die.
const DIE_WITHIN: Duration = Duration::from_secs(30);

/// One cell being run: its scratch dir, data dir, files, and the standard
/// error of each daemon it started.
struct Cell {
    op: Op,
    point: &'static str,
    context: &'static str,
    port: u16,
    s: Scratch,
    data: PathBuf,
    cfg: PathBuf,
    catalog: Option<PathBuf>,
    logs: Mutex<Vec<PathBuf>>,
    /// (phase, seconds), for the cell's line.
    phases: Mutex<(Instant, Vec<(&'static str, f64)>)>,
}

/// How a cell is called in the output: `Create × install.moved (demo@1.1.0)`.
fn cell_name(op: Op, point: &str, context: &str) -> String {
    if context.is_empty() {
        format!("{op:?} × {point}")
    } else {
        format!("{op:?} × {point} ({context})")
    }
}

impl Cell {
    fn name(&self) -> String {
        cell_name(self.op, self.point, self.context)
    }

    fn armed(&self) -> String {
        if self.context.is_empty() {
            format!("{}=return", self.point)
        } else {
            format!("{}=return({})", self.point, self.context)
        }
    }

    /// The instance feature of this operation.
    fn feature(&self) -> &'static str {
        if self.op == Op::Update {
            "democonf"
        } else {
            "demo"
        }
    }

    /// `hangar serve`, its standard error in a file of its own.
    fn serve(&self, failpoints: Option<&str>) -> Served {
        let mut logs = self.logs.lock().unwrap();
        let log = self.s.path().join(format!("daemon-{}.log", logs.len() + 1));
        logs.push(log.clone());
        drop(logs);
        let mut cmd = hangar();
        cmd.arg("--data-dir")
            .arg(&self.data)
            .args(["serve", "--http", "", "-c"])
            .arg(&self.cfg)
            .env_remove("FAILPOINTS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(c) = &self.catalog {
            cmd.arg("--catalog").arg(c);
        }
        if let Some(f) = failpoints {
            cmd.env("FAILPOINTS", f);
        }
        Served::adopt(cmd.spawn().expect("hangar serve starts"), &self.data)
    }

    fn run(&self, args: &[&str]) -> Output {
        run(&self.data, args)
    }

    /// Run a command that must succeed; its JSON when it printed some.
    fn ok(&self, args: &[&str]) -> Value {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "`hangar {}`: exit {:?}\nstdout {}\nstderr {}",
            args.join(" "),
            o.status.code(),
            stdout(&o),
            stderr(&o)
        );
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    }

    /// The phase that just ended.
    fn phase(&self, what: &'static str) {
        let mut p = self.phases.lock().unwrap();
        let secs = p.0.elapsed().as_secs_f64();
        p.0 = Instant::now();
        p.1.push((what, secs));
    }

    fn timing(&self) -> String {
        let p = self.phases.lock().unwrap();
        p.1.iter()
            .map(|(w, s)| format!("{w} {s:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn daemon_logs(&self) -> String {
        let mut out = String::new();
        for l in self.logs.lock().unwrap().iter() {
            out.push_str(&format!(
                "--- {} ---\n{}\n",
                l.file_name().unwrap_or_default().to_string_lossy(),
                std::fs::read_to_string(l).unwrap_or_default()
            ));
        }
        out
    }
}

/// The built-in demo with an option and a templated config file, as
/// `democonf`, from the same release archives.
fn democonf_catalog(dir: &Path) -> PathBuf {
    let src = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../catalog/demo"));
    let cat = dir.join("catalog");
    let f = cat.join("democonf");
    std::fs::create_dir_all(f.join("releases")).unwrap();
    for e in std::fs::read_dir(src.join("releases")).unwrap().flatten() {
        std::fs::copy(e.path(), f.join("releases").join(e.file_name())).unwrap();
    }
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(src.join("manifest.json")).unwrap()).unwrap();
    let o = m.as_object_mut().unwrap();
    o.remove("$schema");
    o.insert("id".into(), json!("democonf"));
    o.insert(
        "config".into(),
        json!({"generator": "template", "template": "demo.conf.j2", "options": {
            "greeting": {"type": "string", "default": "hello"}
        }}),
    );
    std::fs::write(
        f.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    std::fs::write(f.join("demo.conf.j2"), "greeting {{ options.greeting }}\n").unwrap();
    cat
}

const RELOAD_BEFORE: &str = r#"
[[process]]
name = "keep"
command = "sleep"
args = ["1000"]

[[process]]
name = "gone"
command = "sleep"
args = ["1000"]

[[process]]
name = "edit"
command = "sleep"
args = ["1000"]
"#;

const RELOAD_AFTER: &str = r#"
[[process]]
name = "keep"
command = "sleep"
args = ["1000"]

[[process]]
name = "edit"
command = "sleep"
args = ["1001"]

[[process]]
name = "fresh"
command = "sleep"
args = ["1000"]
"#;

fn daemon_toml(port: u16, processes: &str) -> String {
    format!("[daemon]\nport_range = \"{port}-{port}\"\n{processes}")
}

/// The Python interpreter itself, found once: a version manager's shim in
/// front of it costs a third of a second a call.
fn python() -> &'static Path {
    static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(|| {
        let o = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 runs (it reads the store)");
        PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
    })
}

/// The store, read with Python's sqlite3: integrity, the supervisor id,
/// process rows and instance rows.
fn store(data: &Path) -> Value {
    let script = r#"
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(json.dumps({
    "integrity": [r[0] for r in c.execute("PRAGMA integrity_check")],
    "supervisor_id": c.execute("SELECT value FROM meta WHERE key = 'supervisor_id'").fetchone()[0],
    "processes": sorted(r[0] for r in c.execute("SELECT name FROM processes")),
    "instances": sorted([r[0], r[1], r[2]] for r in c.execute("SELECT id, name, state FROM instances")),
}))
"#;
    let o = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(data.join("hangar.db"))
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "reading the store: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A live process: pid, parent, and `HANGAR_PROCESS_NAME`.
#[derive(Debug)]
struct Marked {
    pid: u32,
    ppid: u32,
    name: String,
}

/// Live (not zombie) processes that carry `HANGAR_SUPERVISOR_ID=sid`.
fn marked(sid: &str) -> Vec<Marked> {
    let want = format!("HANGAR_SUPERVISOR_ID={sid}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = env
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.contains(&want) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        let ppid = fields.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        let name = vars
            .iter()
            .find_map(|v| v.strip_prefix("HANGAR_PROCESS_NAME="))
            .unwrap_or("")
            .to_string();
        out.push(Marked { pid, ppid, name });
    }
    out
}

/// The supervisor group's cgroup directories (`…/hangar/hangar-<sid>`) in
/// every hierarchy `pid` belongs to.
fn cgroup_groups(pid: u32, sid: &str) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        // v2 is mounted on /sys/fs/cgroup alone, or beside v1 as `unified`.
        let mounts = match ctrl {
            "" => vec![
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/sys/fs/cgroup"),
            ],
            c => vec![PathBuf::from("/sys/fs/cgroup").join(c.split(',').next().unwrap_or(c))],
        };
        for mount in mounts {
            let own = mount.join(path.trim_start_matches('/'));
            // The daemon may have moved itself into a leaf of its own cgroup.
            for base in [
                own.clone(),
                own.parent().map(Path::to_path_buf).unwrap_or(own),
            ] {
                let g = base.join("hangar").join(format!("hangar-{sid}"));
                if g.is_dir() && !out.contains(&g) {
                    out.push(g);
                }
            }
        }
    }
    out
}

/// Process cgroups under the group directories.
fn cgroups_in(groups: &[PathBuf]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for g in groups {
        for e in std::fs::read_dir(g).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Files a finished or rolled-back operation must not leave: temp and
/// staging names, and (`parts`) downloads.
fn leftovers(dir: &Path, parts: bool, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let temp = [".staging-", ".trash", ".current-", ".hangar-tmp-", ".tmp-"]
            .iter()
            .any(|t| name.starts_with(t));
        if temp || (parts && name.ends_with(".part")) {
            out.push(p.display().to_string());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) && !name.starts_with(".staging-") {
            leftovers(&p, parts, out);
        }
    }
}

/// `.part` downloads whose version is installed: those never resume and
/// nothing would remove them.
fn stale_parts(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let features = data.join("features");
    for f in std::fs::read_dir(&features).into_iter().flatten().flatten() {
        for p in std::fs::read_dir(f.path().join(".downloads"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = p.file_name().to_string_lossy().into_owned();
            let version = name.split('-').next().unwrap_or("");
            if f.path()
                .join(version)
                .join(".hangar-install.json")
                .is_file()
            {
                out.push(p.path().display().to_string());
            }
        }
    }
    out
}

/// Each installed feature's `current`: (versions, current), checked whole.
fn installs(data: &Path) -> BTreeMap<String, (Vec<String>, Option<String>)> {
    let mut out = BTreeMap::new();
    for f in std::fs::read_dir(data.join("features"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = f.path();
        let id = f.file_name().to_string_lossy().into_owned();
        let mut versions: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|v| v.file_name().to_string_lossy().into_owned())
            .filter(|v| !v.starts_with('.') && v != "current")
            .collect();
        versions.sort();
        for v in &versions {
            let rec = dir.join(v).join(".hangar-install.json");
            assert!(rec.is_file(), "{id} {v} has no install record: not whole");
            let r: Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
            let bin = PathBuf::from(r["binary"].as_str().unwrap());
            assert!(bin.is_file(), "{id} {v}: its binary {bin:?} is missing");
        }
        let current = std::fs::read_link(dir.join("current"))
            .ok()
            .map(|t| t.to_string_lossy().into_owned());
        if let Some(c) = &current {
            assert!(
                versions.contains(c),
                "{id}: current points at {c}, which is not a whole version ({versions:?})"
            );
        }
        assert!(
            versions.is_empty() || current.is_some(),
            "{id}: versions {versions:?} installed but no current"
        );
        out.insert(id, (versions, current));
    }
    out
}

/// The daemon was killed by SIGKILL within `DIE_WITHIN`.
fn dies_of_sigkill(d: &mut Served) {
    let t = Instant::now();
    loop {
        match d.child.try_wait() {
            Ok(Some(st)) => {
                assert_eq!(
                    st.signal(),
                    Some(9),
                    "the daemon ended, but not by SIGKILL: {st:?}"
                );
                return;
            }
            Ok(None) if t.elapsed() < DIE_WITHIN => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => panic!("the crash point was not reached within {DIE_WITHIN:?}"),
            Err(e) => panic!("waiting for the daemon: {e}"),
        }
    }
}

/// A client command left running while the daemon dies; ended once it does.
fn finish(mut c: Child) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn spawn_cli(cell: &Cell, args: &[&str]) -> Child {
    hangar()
        .arg("--data-dir")
        .arg(&cell.data)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hangar runs")
}

fn instance(cell: &Cell, name: &str) -> Option<Value> {
    let o = cell.run(&["instance", "show", name, "--json"]);
    o.status.success().then(|| json(&o))
}

/// Set up, crash, restart, check, act, stop, check again.
/// Cells whose processes had cgroups to check (none without root or a
/// delegated cgroup: the cgroup checks then have nothing to look at).
static CGROUPS_SEEN: AtomicUsize = AtomicUsize::new(0);

fn run_cell(cell: &Cell) {
    let feature = cell.feature();
    // Before: the state the operation starts from.
    let mut d = cell.serve(Some(&cell.armed()));
    cell.phase("serve");
    match cell.op {
        Op::Create => {}
        Op::Update => {
            cell.ok(&[
                "instance",
                "create",
                feature,
                "web",
                "--set",
                "greeting=first",
                "--json",
            ]);
        }
        Op::Delete => {
            cell.ok(&["instance", "create", feature, "web", "--json"]);
        }
        Op::Install => {
            cell.ok(&["install", "demo@1.1.0", "--json"]);
        }
        Op::Reload => {
            assert!(
                wait_for(LONG, || {
                    let ps = json(&cell.run(&["ps", "--json"]));
                    ps.as_array()
                        .is_some_and(|a| a.len() == 3 && a.iter().all(|p| p["state"] == "running"))
                }),
                "the reload's first processes run"
            );
        }
    }

    cell.phase("setup");
    // The operation, until the daemon kills itself at the point.
    let client = match cell.op {
        Op::Create => spawn_cli(cell, &["instance", "create", feature, "web", "--json"]),
        Op::Update => spawn_cli(
            cell,
            &[
                "instance",
                "update",
                "web",
                "--set",
                "greeting=second",
                "--json",
            ],
        ),
        Op::Delete => spawn_cli(cell, &["instance", "delete", "web"]),
        Op::Install => spawn_cli(cell, &["install", "demo@1.0.0", "--json"]),
        Op::Reload => {
            std::fs::write(&cell.cfg, daemon_toml(cell.port, RELOAD_AFTER)).unwrap();
            spawn_cli(cell, &["reload", "--json"])
        }
    };
    dies_of_sigkill(&mut d);
    finish(client);
    drop(d);
    cell.phase("crash");

    // After: a daemon without the point, and what it made of it.
    let d = cell.serve(None);
    cell.phase("restart");
    let daemon_pid = d.child.id();
    let sid = store(&cell.data)["supervisor_id"]
        .as_str()
        .unwrap()
        .to_string();
    check_consistent(cell, daemon_pid, &sid);
    check_outcome(cell);
    cell.phase("check");
    let groups = act(cell, daemon_pid, &sid);
    if !groups.is_empty() {
        CGROUPS_SEEN.fetch_add(1, Ordering::Relaxed);
    }
    cell.phase("act");
    check_consistent(cell, daemon_pid, &sid);
    cell.phase("check");
    drop(d);
    cell.phase("stop");

    // Stopped: nothing of it runs or stays.
    assert!(
        wait_for(LONG, || marked(&sid).is_empty()),
        "processes outlive the stopped daemon: {:?}",
        marked(&sid)
    );
    let left = cgroups_in(&groups);
    assert!(
        left.is_empty(),
        "cgroups outlive the stopped daemon: {left:?}"
    );
    let st = store(&cell.data);
    assert_eq!(st["integrity"], json!(["ok"]), "integrity_check");
    let mut files = Vec::new();
    leftovers(&cell.data, true, &mut files);
    assert!(files.is_empty(), "left behind: {files:?}");
    installs(&cell.data);
    cell.phase("final");
}

/// Wait until nothing is on its way: no process starting or stopping, no
/// instance being made or deleted (the boot applies the desired state after
/// the socket answers). Stuck is what the checks then report. Returns `ps`
/// and `instance ls`, as JSON, as they were then.
fn settle(cell: &Cell) -> (Value, Value) {
    let busy = |v: &Value, states: &[&str]| {
        v.as_array().is_none_or(|a| {
            a.iter()
                .any(|x| states.contains(&x["state"].as_str().unwrap_or("")))
        })
    };
    let mut seen = (Value::Null, Value::Null);
    wait_for(LONG, || {
        let ps = json(&cell.run(&["ps", "--json"]));
        let ls = json(&cell.run(&["instance", "ls", "--json"]));
        let quiet = !busy(&ps, &["starting", "stopping", "waiting"])
            && !busy(
                &ls,
                &["queued", "installing", "creating", "starting", "deleting"],
            );
        seen = (ps, ls);
        quiet
    });
    seen
}

/// The invariants that hold at any quiet moment of a daemon.
fn check_consistent(cell: &Cell, daemon_pid: u32, sid: &str) {
    let (ps, ls) = settle(cell);
    let st = &store(&cell.data);
    assert_eq!(st["integrity"], json!(["ok"]), "integrity_check");
    let listed: BTreeMap<String, Value> = ps
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p.clone()))
        .collect();
    // Records: one per process the daemon keeps, and no other.
    let rows: BTreeSet<String> = st["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let names: BTreeSet<String> = listed.keys().cloned().collect();
    assert_eq!(rows, names, "process records vs. the processes `ps` lists");

    // Processes: each marked one is the new daemon's child and the one
    // `ps` names; one per name.
    let procs = marked(sid);
    let mut per_name: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &procs {
        // A checker or probe (one-shot, unnamed) may come and go.
        if p.name.is_empty() {
            continue;
        }
        *per_name.entry(&p.name).or_default() += 1;
        assert_eq!(
            p.ppid, daemon_pid,
            "{p:?} is not the new daemon's ({daemon_pid}) child: an orphan"
        );
        let pid = listed.get(&p.name).and_then(|v| v["pid"].as_u64());
        assert_eq!(
            pid,
            Some(u64::from(p.pid)),
            "{p:?} is not what `ps` lists: {ps}"
        );
    }
    for (n, c) in &per_name {
        assert_eq!(*c, 1, "{c} processes named {n}: {procs:?}");
    }
    // Cgroups: only running processes have one.
    let groups = cgroup_groups(daemon_pid, sid);
    let active: BTreeSet<String> = listed
        .iter()
        .filter(|(_, v)| v["pid"].as_u64().is_some())
        .map(|(n, _)| n.clone())
        .collect();
    let cgs = cgroups_in(&groups);
    assert!(
        cgs.is_subset(&active),
        "cgroups {cgs:?} of no running process ({active:?})"
    );

    // Instances: listed once each, with a state; a directory exactly when made.
    let ls = ls.as_array().unwrap();
    let mut seen = BTreeSet::new();
    let mut made_dirs = BTreeSet::new();
    for i in ls {
        let name = i["name"].as_str().unwrap();
        assert!(seen.insert(name.to_string()), "{name} listed twice");
        let state = i["state"].as_str().unwrap_or("");
        assert!(!state.is_empty(), "{name} has no state: {i}");
        assert!(
            !matches!(
                state,
                "queued" | "installing" | "creating" | "starting" | "deleting"
            ),
            "{name} is stuck in {state}: {i}"
        );
        let dir = PathBuf::from(i["dir"].as_str().unwrap());
        let made = state != "error";
        assert_eq!(
            dir.is_dir(),
            made,
            "{name} is {state}; its directory exists: {}",
            dir.is_dir()
        );
        if made {
            made_dirs.insert(dir.file_name().unwrap().to_string_lossy().into_owned());
            let process = i["process"].as_str().unwrap();
            assert!(
                listed.contains_key(process),
                "{name} is {state} without its process"
            );
        } else {
            assert_eq!(
                i["ports"],
                json!({}),
                "{name} is {state} but holds ports: {i}"
            );
        }
        for p in i["ports"].as_object().into_iter().flatten() {
            let port = p.1.as_u64().unwrap() as u16;
            let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
            assert!(
                free || made,
                "{name}'s port {port} is taken, and it is {state}"
            );
        }
    }
    let records: BTreeSet<String> = st["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_str().unwrap().to_string())
        .collect();
    assert_eq!(records, seen, "instance records vs. `instance ls`");
    let dirs: BTreeSet<String> = std::fs::read_dir(cell.data.join("instances"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs, made_dirs, "instance directories vs. made instances");

    // Files: no temp or staging name; a download only while it can resume.
    let mut files = Vec::new();
    leftovers(&cell.data, false, &mut files);
    assert!(files.is_empty(), "left behind: {files:?}");
    let stale = stale_parts(&cell.data);
    assert!(
        stale.is_empty(),
        "downloads of installed versions: {stale:?}"
    );
    installs(&cell.data);
}

/// The operation took effect whole, or not at all.
fn check_outcome(cell: &Cell) {
    match cell.op {
        Op::Create => {
            let v = instance(cell, "web").expect("a create is recorded before anything");
            match v["state"].as_str().unwrap() {
                "running" => {}
                "error" => assert_eq!(v["error"]["code"], "INSTANCE_INTERRUPTED", "{v}"),
                s => panic!("web is {s}: {v}"),
            }
        }
        Op::Update => {
            let v = instance(cell, "web").expect("web is kept");
            let greeting = v["options"]["greeting"].as_str().unwrap().to_string();
            let file = PathBuf::from(v["config_file"].as_str().expect("a config file"));
            let text = std::fs::read_to_string(&file).unwrap();
            assert_eq!(
                text,
                format!("greeting {greeting}\n"),
                "the config file says other than the record: {v}"
            );
        }
        Op::Delete => {
            assert!(
                instance(cell, "web").is_none(),
                "a delete begun is finished"
            );
        }
        Op::Install => {
            let all = installs(&cell.data);
            let (versions, current) = all.get("demo").cloned().unwrap_or_default();
            let done = versions.iter().any(|v| v == "1.0.0");
            let want = if done { "1.0.0" } else { "1.1.0" };
            assert_eq!(
                current.as_deref(),
                Some(want),
                "demo 1.0.0 {} yet current is {current:?}",
                if done { "installed" } else { "not installed" }
            );
        }
        Op::Reload => {
            let ps = json(&cell.run(&["ps", "--json"]));
            let names: BTreeSet<&str> = ps
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, BTreeSet::from(["edit", "fresh", "keep"]), "{ps}");
        }
    }
}

/// Act on what is left; return the cgroup groups seen meanwhile.
fn act(cell: &Cell, daemon_pid: u32, sid: &str) -> Vec<PathBuf> {
    let mut groups = cgroup_groups(daemon_pid, sid);
    match cell.op {
        Op::Create | Op::Update | Op::Delete => {
            if cell.op == Op::Update {
                // An update restarts the process with the new config.
                let pid = |c: &Cell| {
                    let ps = json(&c.run(&["ps", "democonf.web", "--json"]));
                    ps[0]["pid"].as_u64()
                };
                let before = pid(cell);
                let v = cell.ok(&[
                    "instance",
                    "update",
                    "web",
                    "--set",
                    "greeting=third",
                    "--json",
                ]);
                assert_eq!(v["state"], "running", "{v}");
                let after = pid(cell);
                assert!(
                    after.is_some() && after != before,
                    "not restarted: {before:?} {after:?}"
                );
                let file = v["config_file"].as_str().unwrap();
                assert_eq!(std::fs::read_to_string(file).unwrap(), "greeting third\n");
            }
            // The range has one port: an instance made now (again, from
            // `error`, or a new one) gets it only if nothing holds it.
            let mut remade = false;
            let ls = json(&cell.run(&["instance", "ls", "--json"]));
            for i in ls.as_array().unwrap() {
                let name = i["name"].as_str().unwrap();
                let v = cell.ok(&["instance", "start", name, "--json"]);
                assert_eq!(v["state"], "running", "{v}");
                if i["state"] == "error" {
                    remade = true;
                    assert_eq!(v["ports"]["http"], cell.port, "{v}");
                }
                groups.extend(cgroup_groups(daemon_pid, sid));
                let v = cell.ok(&["instance", "stop", name, "--json"]);
                assert_eq!(v["state"], "stopped", "{v}");
                cell.ok(&["instance", "delete", name]);
            }
            if !remade {
                let v = cell.ok(&["instance", "create", cell.feature(), "probe", "--json"]);
                assert_eq!(v["state"], "running", "{v}");
                assert_eq!(v["ports"]["http"], cell.port, "{v}");
                groups.extend(cgroup_groups(daemon_pid, sid));
                cell.ok(&["instance", "delete", "probe"]);
            }
            assert!(
                wait_for(LONG, || std::net::TcpListener::bind((
                    "127.0.0.1",
                    cell.port
                ))
                .is_ok()),
                "port {} is still taken once every instance is gone",
                cell.port
            );
        }
        Op::Install => {
            cell.ok(&["install", "demo@1.0.0", "--json"]);
            let all = installs(&cell.data);
            assert_eq!(all["demo"].1.as_deref(), Some("1.0.0"));
        }
        Op::Reload => {
            cell.ok(&["reload", "--json"]);
            cell.ok(&["restart", "fresh", "--json"]);
            groups.extend(cgroup_groups(daemon_pid, sid));
        }
    }
    groups.sort();
    groups.dedup();
    groups
}

#[test]
fn every_persisted_step_survives_a_sigkill() {
    // `HANGAR_CRASH_CELLS=install.moved` runs only the cells whose name
    // has that in it.
    let only = std::env::var("HANGAR_CRASH_CELLS").unwrap_or_default();
    let matrix: Vec<(Op, &str, &str)> = MATRIX
        .iter()
        .copied()
        .filter(|(op, point, context)| cell_name(*op, point, context).contains(only.as_str()))
        .collect();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for w in 0..WORKERS {
            let (next, failures, matrix) = (&next, &failures, &matrix);
            sc.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(op, point, context)) = matrix.get(i) else {
                    return;
                };
                let port = FIRST_PORT + w as u16;
                let s = Scratch::new(&format!("crash-{i}"));
                let data = s.path().join("data");
                let cfg = s.path().join("hangar.toml");
                let processes = if op == Op::Reload { RELOAD_BEFORE } else { "" };
                std::fs::write(&cfg, daemon_toml(port, processes)).unwrap();
                let catalog = (op == Op::Update).then(|| democonf_catalog(s.path()));
                let cell = Cell {
                    op,
                    point,
                    context,
                    port,
                    s,
                    data,
                    cfg,
                    catalog,
                    logs: Mutex::new(Vec::new()),
                    phases: Mutex::new((Instant::now(), Vec::new())),
                };
                let t = Instant::now();
                println!("cell {:>2}/{}: {} …", i + 1, matrix.len(), cell.name());
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_cell(&cell)));
                match r {
                    Ok(()) => println!(
                        "cell {:>2}/{}: {} ok in {:.1}s ({})",
                        i + 1,
                        matrix.len(),
                        cell.name(),
                        t.elapsed().as_secs_f64(),
                        cell.timing()
                    ),
                    Err(e) => {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        println!(
                            "cell {:>2}/{}: {} FAILED: {msg}",
                            i + 1,
                            matrix.len(),
                            cell.name()
                        );
                        failures.lock().unwrap().push(format!(
                            "{}: {msg}\n{}",
                            cell.name(),
                            cell.daemon_logs()
                        ));
                    }
                }
            });
        }
    });
    println!(
        "{} cells in {:.1}s; cgroups checked in {} of them",
        matrix.len(),
        t0.elapsed().as_secs_f64(),
        CGROUPS_SEEN.load(Ordering::Relaxed)
    );
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cells failed:\n\n{}",
        failures.len(),
        matrix.len(),
        failures.join("\n\n")
    );
}
