//! Operating running processes through the daemon, with the real binary and
//! real processes: `hangar signal` (a real nginx reloading and reopening its
//! logs, shell traps, process groups), `kill_mode`, CPU and memory in
//! `hangar ps`, merged and timestamped `hangar logs`, `hangar instance logs`,
//! and one exit code for a selector that matches nothing.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::mpsc;

use common::{hangar, run, stderr, stdout, wait_for, Scratch, Served, LONG};
use serde_json::Value;

/// A daemon on a scratch dir with `config` as its configuration file.
fn daemon(s: &Scratch, config: &str) -> (PathBuf, Served) {
    let data = s.path().join("data");
    let file = s.path().join("hangar.toml");
    std::fs::write(&file, config).unwrap();
    let served = Served::start(&data, &["-c", file.to_str().unwrap()]);
    (data, served)
}

fn json(o: &Output) -> Value {
    serde_json::from_str(&stdout(o))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(o), stderr(o)))
}

/// `ps NAME --json`'s entry, once `f` holds for it.
fn wait_ps(data: &Path, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = wait_for(LONG, || {
        let o = run(data, &["ps", name, "--json"]);
        if !o.status.success() {
            return false;
        }
        last = json(&o)[0].clone();
        f(&last)
    });
    assert!(ok, "timed out waiting for {what}; ps: {last:#}");
    last
}

fn running(data: &Path, name: &str) -> u32 {
    wait_ps(data, name, &format!("{name} running"), |p| {
        p["state"] == "running"
    })["pid"]
        .as_u64()
        .expect("a pid") as u32
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with(['Z', 'X']))
    })
}

/// Live children of `pid` (from every thread's children list).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out.retain(|p| alive(*p));
    out.sort();
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// `hangar signal web HUP` reloads a real nginx (new workers, same master)
/// and `USR1` makes it reopen its log files; a name no process has is 4.
#[test]
fn signal_reloads_a_real_nginx_and_reopens_its_logs() {
    if !Path::new("/usr/sbin/nginx").exists() {
        eprintln!("skipped: needs nginx (Debian: nginx-light; .ci/run installs it)");
        return;
    }
    let s = Scratch::new("sig-nginx");
    let p = s.path().display().to_string();
    let port = common::free_port();
    std::fs::create_dir_all(s.path().join("logs")).unwrap();
    let conf = s.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 2;\npid {p}/nginx.pid;\n\
             error_log {p}/logs/error.log notice;\nevents {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
             fastcgi_temp_path {p}/fcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }} }}\n"
        ),
    )
    .unwrap();
    let (data, _d) = daemon(
        &s,
        &format!(
            "[[process]]\nname = \"web\"\ncommand = \"/usr/sbin/nginx\"\n\
             args = [\"-p\", \"{p}\", \"-c\", \"{}\"]\n\
             [process.readiness]\nhttp = \"http://127.0.0.1:{port}/\"\n",
            conf.display()
        ),
    );
    let master = running(&data, "web");
    let mut workers = Vec::new();
    assert!(
        wait_for(LONG, || {
            workers = children_of(master);
            workers.len() == 2
        }),
        "nginx {master} has workers {workers:?}"
    );

    let o = run(&data, &["signal", "web", "HUP"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("web"), "{}", stdout(&o));
    // A reload: the master starts new workers and the old ones leave.
    let mut now = Vec::new();
    assert!(
        wait_for(LONG, || {
            now = children_of(master);
            now.len() == 2 && now.iter().all(|w| !workers.contains(w))
        }),
        "workers before {workers:?}, now {now:?}"
    );
    assert!(alive(master));
    assert_eq!(running(&data, "web"), master, "the master stays");
    assert!(read(&s.path().join("logs/error.log")).contains("reconfiguring"));

    // USR1: the log files are reopened, so a rotated-away file comes back.
    let log = s.path().join("logs/error.log");
    std::fs::rename(&log, s.path().join("logs/error.log.1")).unwrap();
    let o = run(&data, &["signal", "web", "SIGUSR1"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        wait_for(LONG, || log.exists()),
        "nginx did not reopen its error log"
    );
    assert!(wait_for(LONG, || read(&s.path().join("logs/error.log.1"))
        .contains("reopening logs")));
    assert_eq!(running(&data, "web"), master);
    assert_eq!(children_of(master).len(), 2);
}

/// The main process alone by default, its whole group with `--group`; a
/// signal by number; an unknown signal refused with its code, context and a
/// hint; a process that is not running named as such.
#[test]
fn signal_reaches_the_main_process_or_its_group_and_refuses_unknown_signals() {
    let s = Scratch::new("sig-sh");
    let d = s.path().display().to_string();
    // The main shell traps USR1 and USR2; its background child traps both too.
    let script = format!(
        "sh -c 'trap \"echo usr1 >> {d}/child\" USR1; trap \"echo usr2 >> {d}/child\" USR2; \
         while :; do sleep 0.05; done' &\n\
         trap 'echo usr1 >> {d}/main' USR1\ntrap 'echo usr2 >> {d}/main' USR2\n\
         echo ready > {d}/ready\nwhile :; do sleep 0.05; done\n"
    );
    let (data, _d) = daemon(
        &s,
        &format!(
            "[[process]]\nname = \"trapper\"\ncommand = \"sh\"\nargs = [\"-c\", {script:?}]\n\
             [[process]]\nname = \"idle\"\ncommand = \"sleep\"\nargs = [\"3600\"]\n\
             restart = {{ policy = \"never\" }}\n"
        ),
    );
    running(&data, "trapper");
    assert!(wait_for(LONG, || s.path().join("ready").exists()));
    let (main, child) = (s.path().join("main"), s.path().join("child"));

    let o = run(&data, &["signal", "trap*", "USR1"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        wait_for(LONG, || read(&main) == "usr1\n"),
        "main: {:?}",
        read(&main)
    );
    // By number, to the whole group: both shells get it.
    let o = run(&data, &["signal", "--group", "trapper", "12"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        wait_for(LONG, || read(&main) == "usr1\nusr2\n"
            && read(&child) == "usr2\n"),
        "main: {:?}, child: {:?}",
        read(&main),
        read(&child)
    );
    // The first signal never reached the child: it only saw the group's.
    assert_eq!(read(&child), "usr2\n");

    // JSON for scripts.
    let o = run(&data, &["signal", "trapper", "usr1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        json(&o),
        serde_json::json!({"signalled": ["trapper"], "errors": []})
    );
    assert!(wait_for(LONG, || read(&main).lines().count() == 3));

    for bad in ["SIGFOO", "HUPP", "0", "99", ""] {
        let o = run(&data, &["signal", "trapper", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("error[INVALID_SIGNAL]"), "{bad}: {e}");
        assert!(e.contains("signal: "), "{bad}: context missing: {e}");
        assert!(e.contains("hint: ") && e.contains("SIGHUP"), "{bad}: {e}");
    }
    let o = run(&data, &["signal", "trapper", "HUPP"]);
    assert!(
        stderr(&o).contains("SIGHUP"),
        "did-you-mean: {}",
        stderr(&o)
    );

    // Stopped: nothing to signal, said per process (exit 1, nothing sent).
    let o = run(&data, &["stop", "idle"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&data, &["signal", "idle", "HUP"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("PROCESS_NOT_RUNNING"), "{}", stderr(&o));
}

/// `kill_mode = "group"` (the default) sends the stop signal to the whole
/// group; `"mixed"` sends it to the main process only, then SIGKILL to what
/// is left once the grace is over.
#[test]
fn kill_mode_mixed_stops_the_main_process_first_and_kills_the_rest() {
    let s = Scratch::new("killmode");
    let d = s.path().display().to_string();
    // Main traps TERM (notes it and waits for its child); the child notes TERM
    // and exits. Under `mixed` the child never sees TERM, so the main waits
    // until the grace ends and SIGKILL takes both. Each sets its trap before
    // the child writes its pid, so a stop never comes before a trap.
    let script = |n: &str| {
        format!(
            "trap 'echo term > {d}/{n}.main; wait $C; exit 0' TERM\n\
             sh -c 'trap \"echo term > {d}/{n}.child; exit 0\" TERM; \
             echo $$ > {d}/{n}.childpid; while :; do sleep 0.05; done' &\nC=$!\n\
             while :; do sleep 0.05; done\n"
        )
    };
    let (data, _d) = daemon(
        &s,
        &format!(
            "[[process]]\nname = \"grp\"\ncommand = \"sh\"\nargs = [\"-c\", {:?}]\n\
             stop_timeout = \"30s\"\n\
             [[process]]\nname = \"mix\"\ncommand = \"sh\"\nargs = [\"-c\", {:?}]\n\
             kill_mode = \"mixed\"\nstop_timeout = \"2s\"\n",
            script("grp"),
            script("mix")
        ),
    );
    let childpid = |n: &str| -> u32 {
        let f = s.path().join(format!("{n}.childpid"));
        assert!(wait_for(LONG, || read(&f).trim().parse::<u32>().is_ok()));
        read(&f).trim().parse().unwrap()
    };
    for n in ["grp", "mix"] {
        running(&data, n);
    }
    let (grp_child, mix_child) = (childpid("grp"), childpid("mix"));
    assert!(alive(grp_child) && alive(mix_child));

    let o = run(&data, &["stop", "grp"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&s.path().join("grp.main")), "term\n");
    assert_eq!(
        read(&s.path().join("grp.child")),
        "term\n",
        "group: the child got TERM"
    );
    assert!(wait_for(LONG, || !alive(grp_child)));

    let o = run(&data, &["stop", "mix"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        read(&s.path().join("mix.main")),
        "term\n",
        "mixed: the main got TERM"
    );
    assert!(
        !s.path().join("mix.child").exists(),
        "mixed: the child got TERM: {}",
        read(&s.path().join("mix.child"))
    );
    assert!(
        wait_for(LONG, || !alive(mix_child)),
        "mixed: the child {mix_child} outlived the stop"
    );
    let p = wait_ps(&data, "mix", "mix stopped", |p| p["state"] == "stopped");
    assert!(p["pid"].is_null(), "{p}");

    // A misspelt mode is refused with the names it may take.
    let bad = s.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[process]]\nname = \"x\"\ncommand = \"true\"\nkill_mode = \"mixd\"\n",
    )
    .unwrap();
    let o = hangar().arg("check").arg(&bad).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("kill_mode"), "{}", stderr(&o));
    assert!(stderr(&o).contains("mixed"), "{}", stderr(&o));
}

/// `ps` shows each running process's CPU time and memory (`--json`: the
/// numbers), from `/proc` or its cgroup.
#[test]
fn ps_shows_cpu_and_memory() {
    let s = Scratch::new("ps-usage");
    let (data, _d) = daemon(
        &s,
        "[[process]]\nname = \"hog\"\ncommand = \"python3\"\n\
         args = [\"-c\", \"import time\\nb = b'x' * (64 << 20)\\nprint('ready', flush=True)\\ntime.sleep(3600)\"]\n\
         [[process]]\nname = \"idle\"\ncommand = \"sleep\"\nargs = [\"3600\"]\n",
    );
    let p = wait_ps(&data, "hog", "hog to hold 50 MB", |p| {
        p["memory_bytes"].as_u64().is_some_and(|m| m >= 50 << 20)
    });
    assert!(p["cpu_seconds"].as_f64().is_some_and(|c| c >= 0.0), "{p}");
    let o = run(&data, &["ps"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    let head: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    let cpu = head.iter().position(|h| *h == "CPU").expect("a CPU column");
    let mem = head.iter().position(|h| *h == "MEM").expect("a MEM column");
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("hog "))
        .unwrap_or_else(|| panic!("{table}"))
        .split_whitespace()
        .collect();
    assert!(row[cpu].ends_with('s'), "{table}");
    let m = row[mem];
    let mb: f64 = m
        .strip_suffix('M')
        .unwrap_or_else(|| panic!("MiB expected: {table}"))
        .parse()
        .unwrap();
    assert!(mb >= 50.0, "{table}");
    // Not running: no figures.
    run(&data, &["stop", "idle"]);
    let p = wait_ps(&data, "idle", "idle stopped", |p| p["state"] == "stopped");
    assert!(
        p["memory_bytes"].is_null() && p["cpu_seconds"].is_null(),
        "{p}"
    );
}

/// A shell that writes `LINE` to `STREAM` each time the test creates the
/// file `go-LINE`, in the order the test asks.
fn talker(d: &str, name: &str, lines: &[(&str, &str)]) -> String {
    let mut script = String::new();
    for (line, stream) in lines {
        let redirect = if *stream == "stderr" { " >&2" } else { "" };
        script.push_str(&format!(
            "while [ ! -e {d}/go-{line} ]; do sleep 0.02; done; echo {line}{redirect}; "
        ));
    }
    script.push_str("exec sleep 3600");
    format!("[[process]]\nname = \"{name}\"\ncommand = \"sh\"\nargs = [\"-c\", {script:?}]\n")
}

/// Several names or a glob merge the lines in time order with the process
/// on each; `--timestamps`, `--json` and `-f` work with them.
#[test]
fn logs_merge_processes_in_time_order() {
    let s = Scratch::new("logs-merge");
    let d = s.path().display().to_string();
    let config = talker(&d, "a", &[("a1", "stdout"), ("a2", "stdout")])
        + &talker(&d, "b", &[("b1", "stderr"), ("b2", "stdout")]);
    let (data, _d) = daemon(&s, &config);
    running(&data, "a");
    running(&data, "b");
    let go = |line: &str, who: &str| {
        std::fs::write(s.path().join(format!("go-{line}")), "").unwrap();
        assert!(
            wait_for(LONG, || {
                let o = run(&data, &["logs", who]);
                stdout(&o).contains(line) || stderr(&o).contains(line)
            }),
            "{who} never wrote {line}"
        );
    };
    go("a1", "a");
    go("b1", "b");
    go("a2", "a");

    // Both, in the order written, each line with its process.
    let o = run(&data, &["logs", "a", "b"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "a | a1\na | a2\n");
    assert_eq!(stderr(&o), "b | b1\n");
    // JSON shows the order across streams.
    let o = run(&data, &["logs", "*", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["process"].as_str().unwrap(),
                r["stream"].as_str().unwrap(),
                r["line"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("a", "stdout", "a1"),
            ("b", "stderr", "b1"),
            ("a", "stdout", "a2")
        ]
    );
    let times: Vec<i64> = rows
        .iter()
        .map(|r| r["time_ms"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        times.iter().all(|t| now - t < 600_000 && *t <= now),
        "{times:?}"
    );
    assert!(
        rows[0]["time"].as_str().unwrap().ends_with('Z'),
        "{}",
        rows[0]
    );
    // Timestamps for one process: no process column.
    let o = run(&data, &["logs", "a", "--timestamps"]);
    let lines: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (l, want) in lines.iter().zip(["a1", "a2"]) {
        let (ts, text) = l.split_once(' ').unwrap();
        assert_eq!(text, want);
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{l}");
    }

    // Follow both: old lines, then a new one as it is written.
    let mut f = hangar()
        .arg("--data-dir")
        .arg(&data)
        .args(["logs", "-f", "a", "b", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = f.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let next = || -> Value {
        let l = rx.recv_timeout(LONG).expect("a followed line");
        serde_json::from_str(&l).unwrap()
    };
    for want in ["a1", "b1", "a2"] {
        assert_eq!(next()["line"], want);
    }
    std::fs::write(s.path().join("go-b2"), "").unwrap();
    let v = next();
    assert_eq!(
        (v["process"].as_str(), v["line"].as_str()),
        (Some("b"), Some("b2"))
    );
    let _ = f.kill();
    let _ = f.wait();
}

/// A selector that matches nothing is "not found" (4) for every command that
/// takes one, with the code and a hint.
#[test]
fn a_selector_matching_nothing_is_not_found_for_every_command() {
    let s = Scratch::new("notfound");
    let (data, _d) = daemon(
        &s,
        "[[process]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"3600\"]\n",
    );
    let pid = running(&data, "web");
    for sel in ["nope", "nope-*"] {
        for args in [
            vec!["ps", sel],
            vec!["ps", sel, "--json"],
            vec!["stop", sel],
            vec!["start", sel],
            vec!["restart", sel],
            vec!["logs", sel],
            vec!["logs", "web", sel],
            vec!["signal", sel, "HUP"],
        ] {
            let o = run(&data, &args);
            assert_eq!(o.status.code(), Some(4), "{args:?}: {}", stderr(&o));
            let e = stderr(&o);
            assert!(e.contains("error[PROCESS_NOT_FOUND]"), "{args:?}: {e}");
            assert!(e.contains("hint: "), "{args:?}: {e}");
            assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
        }
    }
    // A selector that matches still works.
    let o = run(&data, &["ps", "w*"]);
    assert!(
        o.status.success() && stdout(&o).contains("web"),
        "{}",
        stderr(&o)
    );
    assert_eq!(running(&data, "web"), pid, "nothing above touched web");
}

/// `hangar instance logs` shows the instance's process output, and `ps`
/// shows the ports the instance allocated for its process.
#[test]
fn instance_logs_and_ports_in_ps() {
    if which("python3").is_none() {
        eprintln!("skipped: the demo feature needs python3");
        return;
    }
    let s = Scratch::new("inst-logs");
    let data = s.path().join("data");
    let _d = Served::start(&data, &[]);
    let o = run(&data, &["instance", "create", "demo", "mine", "--json"]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), stdout(&o));
    let v = json(&o);
    let port = v["ports"]["http"].as_u64().expect("an http port");
    let process = v["process"].as_str().unwrap().to_string();
    let ps = wait_ps(&data, &process, "the instance running", |p| {
        p["state"] == "running"
    });
    assert_eq!(ps["ports"]["http"].as_u64(), Some(port), "{ps}");
    let o = run(&data, &["ps"]);
    assert!(
        stdout(&o).contains(&format!("http={port}")),
        "{}",
        stdout(&o)
    );
    let want = format!("starting on 127.0.0.1:{port}");
    assert!(
        wait_for(LONG, || {
            let o = run(&data, &["instance", "logs", "mine"]);
            o.status.success() && stdout(&o).contains(&want)
        }),
        "{}",
        stderr(&run(&data, &["instance", "logs", "mine"]))
    );
    let o = run(&data, &["instance", "logs", "nosuch"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let o = run(&data, &["instance", "delete", "mine"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// `logs -f` behind a flood: the lines its in-memory tail lost before the
/// follower read them are announced with their count, so every line the
/// process wrote is either shown or counted in a gap marker.
#[test]
fn a_follower_behind_a_flood_is_told_how_many_lines_it_missed() {
    const N: u64 = 200_000;
    let s = Scratch::new("logs-gap");
    let go = s.path().join("GO");
    let config = format!(
        "[[process]]\nname = \"flood\"\ncommand = \"sh\"\n\
         args = [\"-c\", \"while [ ! -e {go} ]; do sleep 0.05; done; seq 1 {N}; exec sleep 1000\"]\n\
         [process.log]\ntail_bytes = \"1KiB\"\n",
        go = go.display()
    );
    let (data, _d) = daemon(&s, &config);
    running(&data, "flood");
    let mut follower = hangar()
        .arg("--data-dir")
        .arg(&data)
        .args(["logs", "flood", "-f", "-n", "0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("logs -f starts");
    let out = follower.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let last = line.contains(&format!("\"line\":\"{N}\""));
            if tx.send(line).is_err() || last {
                return;
            }
        }
    });
    std::fs::write(&go, "").unwrap();
    let mut rows = Vec::new();
    let last = N.to_string();
    let deadline = std::time::Instant::now() + LONG;
    while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        rows.push(serde_json::from_str::<Value>(&l).expect("JSON"));
        if rows.last().is_some_and(|r| r["line"] == last.as_str()) {
            break;
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        rows.last().is_some_and(|r| r["line"] == last.as_str()),
        "the follower never saw line {N} ({} rows)",
        rows.len()
    );
    // From the first line shown on, each line is the next one, or the next
    // after a gap of exactly the lines the marker counts.
    let mut expect: Option<u64> = None;
    let mut gaps = 0;
    for r in &rows {
        if let Some(n) = r["skipped"].as_u64() {
            gaps += 1;
            expect = expect.map(|e| e + n);
            continue;
        }
        let v: u64 = r["line"]
            .as_str()
            .and_then(|l| l.parse().ok())
            .expect("a number");
        if let Some(e) = expect {
            assert_eq!(v, e, "line {v} after a gap the markers do not account for");
        }
        expect = Some(v + 1);
    }
    assert_eq!(expect, Some(N + 1));
    assert!(
        gaps > 0,
        "a 1 KiB tail cannot hold a 200,000-line flood: no gap announced"
    );
}
