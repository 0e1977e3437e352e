//! CLI habits users of PM2, process-compose, systemctl and Nomad expect, each
//! checked on the real binary with real processes: colour only on a
//! terminal, shell completions and a man page, `ls`/`list` aliases, enums as
//! they are written, help that lists only the options a subcommand uses,
//! `hangar run` ending when nothing will run again, listeners bound before
//! anything starts, and a shutdown that does not wait for followers.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{hangar, run, stderr, stdout, wait_for, Scratch, Served, LONG};

const ESC: u8 = 0x1b;

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn sigterm(child: &Child) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
}

/// Wait for an exit; kill and return `None` after `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Everything a child writes to a pipe, collected on a thread as it comes.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<u8>>>);

impl Collected {
    fn from(r: impl std::io::Read + Send + 'static) -> Collected {
        let c = Collected::default();
        let sink = c.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                sink.0.lock().unwrap().extend_from_slice(&line);
                line.clear();
            }
        });
        c
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

/// `hangar [pre…] run FILE` with piped output: its log lines (stderr).
/// A long sleep keeps it running until SIGTERM, once everything launched.
fn run_log(dir: &Path, pre: &[&str], env: &[(&str, &str)]) -> Vec<u8> {
    let file = write(
        dir,
        "sleep.toml",
        "[[process]]\nname = \"nap\"\ncommand = \"sleep\"\nargs = [\"300\"]\n",
    );
    let mut cmd = hangar();
    cmd.env_remove("NO_COLOR")
        .args(pre)
        .args(["run", "--no-log-files"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let err = Collected::from(child.stderr.take().unwrap());
    assert!(
        wait_for(LONG, || err.text().contains("all processes launched")),
        "hangar run did not launch: {}",
        err.text()
    );
    sigterm(&child);
    let st = wait_exit(&mut child, LONG).expect("hangar run stops on SIGTERM");
    assert!(st.success(), "{st:?}: {}", err.text());
    // The pipe closes when hangar exits; the reader thread finishes with it.
    assert!(wait_for(LONG, || err
        .text()
        .contains("all processes stopped")));
    err.bytes()
}

#[test]
fn colour_only_on_a_terminal_unless_asked() {
    let s = Scratch::new("colour");
    // hangar's own log lines, into a pipe.
    let piped = run_log(s.path(), &[], &[]);
    assert!(
        !piped.contains(&ESC),
        "escape codes in a pipe: {}",
        String::from_utf8_lossy(&piped)
    );
    let always = run_log(s.path(), &["--color", "always"], &[]);
    assert!(always.contains(&ESC), "--color always gave no colour");
    let no_color = run_log(s.path(), &[], &[("NO_COLOR", "1")]);
    assert!(!no_color.contains(&ESC), "NO_COLOR=1 still coloured");
    // `always` wins over NO_COLOR; an empty NO_COLOR does not count.
    let both = run_log(s.path(), &["--color=always"], &[("NO_COLOR", "1")]);
    assert!(both.contains(&ESC), "--color always lost to NO_COLOR");
    let never = run_log(s.path(), &["--color", "never"], &[("NO_COLOR", "")]);
    assert!(!never.contains(&ESC), "--color never coloured");

    // `hangar ps`: the state in colour only when asked for (stdout is a pipe).
    let data = s.path().join("data");
    let cfg = write(
        s.path(),
        "d.toml",
        "[[process]]\nname = \"nap\"\ncommand = \"sleep\"\nargs = [\"300\"]\n",
    );
    let _d = Served::start(&data, &["-c", cfg.to_str().unwrap()]);
    assert!(wait_for(LONG, || stdout(&run(&data, &["ps"])).contains("running")));
    let plain = run(&data, &["ps"]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(!plain.stdout.contains(&ESC), "{}", stdout(&plain));
    let coloured = run(&data, &["ps", "--color", "always"]);
    assert!(coloured.status.success(), "{}", stderr(&coloured));
    assert!(
        stdout(&coloured).contains("\x1b[32mrunning"),
        "running is not green: {:?}",
        stdout(&coloured)
    );
    let no_color = hangar()
        .env("NO_COLOR", "1")
        .arg("--data-dir")
        .arg(&data)
        .args(["ps", "--color", "auto"])
        .output()
        .unwrap();
    assert!(no_color.status.success(), "{}", stderr(&no_color));
    assert!(!no_color.stdout.contains(&ESC), "{}", stdout(&no_color));
    // The columns still line up: escape codes take no width.
    let c = stdout(&coloured)
        .replace("\x1b[32m", "")
        .replace("\x1b[0m", "");
    let mut lines = c.lines();
    let head = lines.next().unwrap();
    let pid_at = head.find("PID").unwrap();
    for l in lines {
        assert_eq!(&l[pid_at - 2..pid_at], "  ", "{c}");
        assert!(
            l[pid_at..].starts_with(|ch: char| ch.is_ascii_digit()),
            "{c}"
        );
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run `prog args` with `input` on its stdin.
fn feed(prog: &str, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut c = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input).unwrap();
    c.wait_with_output().unwrap()
}

#[test]
fn completions_and_man_page_come_from_the_command_definitions() {
    let s = Scratch::new("complete");
    let subcommands = [
        "serve", "ps", "logs", "events", "catalog", "instance", "run",
    ];
    let bash = hangar().args(["completions", "bash"]).output().unwrap();
    assert!(bash.status.success(), "{}", stderr(&bash));
    let script = stdout(&bash);
    for sub in subcommands {
        assert!(script.contains(sub), "bash completion lacks {sub}");
    }
    let path = write(s.path(), "hangar.bash", &script);
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", stderr(&check));
    // Sourced, it completes a subcommand.
    let complete = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(hangar insta); COMP_CWORD=1; COMP_LINE='hangar insta'; \
             COMP_POINT=12; _hangar hangar insta hangar; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display()
        ))
        .output()
        .unwrap();
    assert!(
        stdout(&complete)
            .lines()
            .any(|l| l.trim() == "instance" || l.trim() == "installed" || l.trim() == "install"),
        "completing `hangar insta`: {:?} {:?}",
        stdout(&complete),
        stderr(&complete)
    );

    for (shell, check) in [("zsh", ["-n"]), ("fish", ["--no-execute"])] {
        let o = hangar().args(["completions", shell]).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("instance"), "{shell} completion");
        if !have(shell) {
            println!("skipped: `{shell}` is not installed, so its script is not parsed");
            continue;
        }
        let path = write(s.path(), &format!("hangar.{shell}"), &stdout(&o));
        let r = Command::new(shell).args(check).arg(&path).output().unwrap();
        assert!(r.status.success(), "{shell} {check:?}: {}", stderr(&r));
    }

    let man = hangar().arg("man").output().unwrap();
    assert!(man.status.success(), "{}", stderr(&man));
    let page = stdout(&man);
    assert!(page.contains(".TH hangar 1"), "not a roff man page");
    for sub in subcommands {
        assert!(page.contains(sub), "the man page lacks {sub}");
    }
    if have("man") {
        let path = write(s.path(), "hangar.1", &page);
        let r = Command::new("man")
            .env("MANWIDTH", "80")
            .args(["--warnings", "-l"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(r.status.success(), "man: {}", stderr(&r));
        assert!(stderr(&r).trim().is_empty(), "man warns: {}", stderr(&r));
        assert!(stdout(&r).contains("instance"));
    } else if have("groff") {
        let r = feed("groff", &["-man", "-Tutf8", "-ww", "-z"], page.as_bytes());
        assert!(r.status.success() && r.stderr.is_empty(), "{}", stderr(&r));
    } else if have("mandoc") {
        let r = feed("mandoc", &["-T", "lint", "-W", "warning"], page.as_bytes());
        assert!(r.status.success(), "{}", stdout(&r));
    } else {
        println!("skipped: neither man, groff nor mandoc is installed to check the page");
    }
}

#[test]
fn list_subcommands_take_ls_and_list() {
    let s = Scratch::new("aliases");
    let data = s.path().join("data");
    let a = run(&data, &["catalog", "list"]);
    let b = run(&data, &["catalog", "ls"]);
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "catalog ls: {}", stderr(&b));
    assert_eq!(stdout(&a), stdout(&b));
    assert!(stdout(&a).contains("demo"));

    let _d = Served::start(&data, &[]);
    // (A pattern that matches nothing is PROCESS_NOT_FOUND; none lists all.)
    let lists: [&[&str]; 5] = [
        &["instance", "ls", "--json"],
        &["instance", "list", "--json"],
        &["ps", "--json"],
        &["ls", "--json"],
        &["list", "--json"],
    ];
    for args in lists {
        let o = run(&data, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "[]", "{args:?}");
    }
    let help = hangar()
        .args(["plugin", "list", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success(), "plugin list: {}", stderr(&help));
    let help = stdout(&hangar().args(["instance", "--help"]).output().unwrap());
    assert!(
        help.contains("alias: list") || help.contains("aliases: list"),
        "{help}"
    );
}

#[test]
fn enums_print_as_they_are_written() {
    let s = Scratch::new("enums");
    let file = write(
        s.path(),
        "p.toml",
        "[[process]]\nname = \"a\"\ncommand = \"true\"\n\n\
         [[process]]\nname = \"b\"\ncommand = \"true\"\n[process.restart]\npolicy = \"always\"\n",
    );
    let o = hangar().arg("check").arg(&file).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("(restart on-failure)"), "{out}");
    assert!(out.contains("(restart always)"), "{out}");
    assert!(
        !out.contains("OnFailure") && !out.contains("Always"),
        "{out}"
    );

    let data = s.path().join("data");
    let o = run(&data, &["catalog", "show", "demo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("isolation:  per-session"),
        "{}",
        stdout(&o)
    );
    let o = run(&data, &["catalog", "show", "demo", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = common::json(&o);
    let checksum = &v["resolved"]["checksum"];
    assert!(
        checksum.is_object() && checksum["type"].is_string(),
        "checksum as Rust Debug text: {checksum}"
    );
}

/// The long option names a help text lists.
fn options_in_help(args: &[&str]) -> Vec<String> {
    let o = hangar().args(args).arg("--help").output().unwrap();
    assert!(o.status.success(), "{args:?} --help: {}", stderr(&o));
    stdout(&o)
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("-").and_then(|l| {
                // "-c, --config <CONFIG>" or "--json"
                l.split_once("--").map(|(_, r)| r).or(l.strip_prefix("-"))
            })?;
            Some(
                l.split([' ', '<', '='])
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn help_lists_only_the_options_a_subcommand_uses() {
    let remote = ["addr", "token", "tls-ca", "tls-cert", "tls-key"];
    let run_opts = options_in_help(&["run"]);
    for o in remote.iter().chain(&["catalog", "data-dir"]) {
        assert!(!run_opts.contains(&o.to_string()), "run --help lists --{o}");
    }
    assert!(run_opts.contains(&"log-dir".to_string()), "{run_opts:?}");
    assert!(run_opts.contains(&"color".to_string()), "{run_opts:?}");
    let check = options_in_help(&["check"]);
    assert!(!check.contains(&"addr".into()) && !check.contains(&"data-dir".into()));

    let ps = options_in_help(&["ps"]);
    assert!(
        !ps.contains(&"catalog".to_string()),
        "ps --help lists --catalog"
    );
    for o in remote.iter().chain(&["data-dir", "json"]) {
        assert!(ps.contains(&o.to_string()), "ps --help lacks --{o}: {ps:?}");
    }
    let serve = options_in_help(&["serve"]);
    for o in remote {
        assert!(!serve.contains(&o.to_string()), "serve --help lists --{o}");
    }
    for o in ["data-dir", "catalog", "config", "http"] {
        assert!(serve.contains(&o.to_string()), "serve --help lacks --{o}");
    }
    // The catalog commands use a daemon when one answers: they take both.
    let list = options_in_help(&["catalog", "list"]);
    assert!(list.contains(&"catalog".to_string()), "{list:?}");
    assert!(list.contains(&"addr".to_string()), "{list:?}");
    let inst = options_in_help(&["instance", "ls"]);
    assert!(inst.contains(&"addr".to_string()) && !inst.contains(&"catalog".to_string()));
    let plugin = options_in_help(&["plugin", "call"]);
    assert!(!plugin.contains(&"addr".to_string()) && !plugin.contains(&"data-dir".to_string()));

    // Command lines that worked keep working: the options before or after
    // the subcommand, and the environment.
    let s = Scratch::new("helpopts");
    let data = s.path().join("data");
    let _d = Served::start(&data, &[]);
    let d = data.to_str().unwrap();
    for args in [
        vec!["--data-dir", d, "ps"],
        vec!["ps", "--data-dir", d],
        vec!["--data-dir", d, "instance", "ls"],
        vec!["instance", "--data-dir", d, "ls"],
        vec!["instance", "ls", "--data-dir", d],
        vec!["--data-dir", d, "catalog", "list"],
        vec!["catalog", "list", "--data-dir", d],
    ] {
        let o = hangar().args(&args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    let o = hangar()
        .env("HANGAR_DATA_DIR", &data)
        .arg("status")
        .output()
        .unwrap();
    assert!(o.status.success(), "HANGAR_DATA_DIR: {}", stderr(&o));
    // After the subcommand wins over before it, and over the environment.
    let elsewhere = s.path().join("nobody");
    let o = hangar()
        .env("HANGAR_DATA_DIR", &elsewhere)
        .args(["--data-dir"])
        .arg(&elsewhere)
        .args(["status", "--data-dir", d])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = hangar()
        .arg("--data-dir")
        .arg(&data)
        .args(["status", "--data-dir"])
        .arg(&elsewhere)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // Catalogs given before and after the subcommand are all read.
    let catalog = |name: &str| {
        let dir = s.path().join(format!("cat-{name}"));
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(
            dir.join(name).join("manifest.yaml"),
            format!(
                "id: {name}\nname: {name}\nversion: '0.1'\ndescription: test feature\n\
                 source: {{type: file, asset_pattern: {name}.bin, verification: {{type: none}}}}\n\
                 binary: {{path: {name}}}\n"
            ),
        )
        .unwrap();
        dir
    };
    let (one, two) = (catalog("one"), catalog("two"));
    let o = hangar()
        .arg("--catalog")
        .arg(&one)
        .args(["catalog", "list", "--catalog"])
        .arg(&two)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<String> = stdout(&o)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert_eq!(ids, ["one", "two"], "{}", stdout(&o));
}

/// `hangar run FILE` to its end: (exit status, its log).
fn run_to_end(dir: &Path, body: &str) -> (Option<ExitStatus>, String) {
    let file = write(dir, "p.toml", body);
    let mut child = hangar()
        .args(["run", "--no-log-files"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Collected::from(child.stderr.take().unwrap());
    let st = wait_exit(&mut child, LONG);
    (st, err.text())
}

#[test]
fn run_ends_when_nothing_will_run_again_with_the_worst_exit() {
    let s = Scratch::new("runend");
    let never = "[process.restart]\npolicy = \"never\"\n";
    let (st, log) = run_to_end(
        s.path(),
        &format!(
            "[[process]]\nname = \"bad\"\ncommand = \"sh\"\nargs = [\"-c\", \"exit 3\"]\n{never}\n\
             [[process]]\nname = \"ok\"\ncommand = \"true\"\n"
        ),
    );
    let st = st.unwrap_or_else(|| panic!("hangar run did not end by itself:\n{log}"));
    assert_eq!(st.code(), Some(3), "{log}");

    // A death by signal is worse than any exit code: 128 + the signal.
    let (st, log) = run_to_end(
        s.path(),
        &format!(
            "[[process]]\nname = \"bad\"\ncommand = \"sh\"\nargs = [\"-c\", \"exit 3\"]\n{never}\n\
             [[process]]\nname = \"killed\"\ncommand = \"sh\"\nargs = [\"-c\", \"kill -TERM $$\"]\n{never}\n"
        ),
    );
    assert_eq!(st.and_then(|s| s.code()), Some(128 + 15), "{log}");

    // on-failure after a clean exit, and never: done, 0.
    let (st, log) = run_to_end(
        s.path(),
        &format!(
            "[[process]]\nname = \"a\"\ncommand = \"true\"\n\n\
             [[process]]\nname = \"b\"\ncommand = \"true\"\n{never}\n"
        ),
    );
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{log}");

    // A circuit that opened gives up: done, with the process's exit code.
    let (st, log) = run_to_end(
        s.path(),
        "[[process]]\nname = \"flaky\"\ncommand = \"sh\"\nargs = [\"-c\", \"exit 7\"]\n\
         [process.restart]\ninitial_interval = \"0s\"\nmax_retries = 2\n",
    );
    assert_eq!(st.and_then(|s| s.code()), Some(7), "{log}");
    assert!(log.contains("MAX_ERRORS_EXCEEDED"), "{log}");

    // A command that cannot start at all: 1.
    let (st, log) = run_to_end(
        s.path(),
        "[[process]]\nname = \"ghost\"\ncommand = \"/nonexistent/hangar-test-ghost\"\n",
    );
    assert_eq!(st.and_then(|s| s.code()), Some(1), "{log}");
}

#[test]
fn run_stays_while_a_process_will_restart() {
    let s = Scratch::new("runstays");
    let file = write(
        s.path(),
        "p.toml",
        "[[process]]\nname = \"loop\"\ncommand = \"true\"\n\
         [process.restart]\npolicy = \"always\"\ninitial_interval = \"20ms\"\nmax_interval = \"50ms\"\n\n\
         [[process]]\nname = \"once\"\ncommand = \"true\"\n[process.restart]\npolicy = \"never\"\n",
    );
    let mut child = hangar()
        .args(["run", "--no-log-files", "--log-format", "json"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Collected::from(child.stderr.take().unwrap());
    let restarts = |t: &str| {
        t.lines()
            .filter(|l| l.contains("\"process\":\"loop\"") && l.contains("restarting"))
            .count()
    };
    assert!(
        wait_for(LONG, || {
            let t = err.text();
            restarts(&t) >= 3 && t.contains("not restarted by policy")
        }),
        "{}",
        err.text()
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "hangar run ended while `loop` restarts: {}",
        err.text()
    );
    sigterm(&child);
    let st = wait_exit(&mut child, LONG).expect("stops on SIGTERM");
    assert_eq!(st.code(), Some(0), "{}", err.text());
}

/// `hangar serve` with a process that leaves `marker` when it starts, and
/// `extra` options: (exit status, stderr).
fn serve_once(dir: &Path, daemon: &str, extra: &[&str], marker: &Path) -> (ExitStatus, String) {
    serve_once_with(dir, daemon, extra, marker, None)
}

fn serve_once_with(
    dir: &Path,
    daemon: &str,
    extra: &[&str],
    marker: &Path,
    failpoints: Option<&str>,
) -> (ExitStatus, String) {
    let cfg = write(
        dir,
        "d.toml",
        &format!(
            "{daemon}\n[[process]]\nname = \"marker\"\ncommand = \"touch\"\nargs = [\"{}\"]\n\
             [process.restart]\npolicy = \"never\"\n",
            marker.display()
        ),
    );
    let mut child = hangar()
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["serve", "-c"])
        .arg(&cfg)
        .args(extra)
        .env_remove("FAILPOINTS")
        .envs(failpoints.map(|f| ("FAILPOINTS", f)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Collected::from(child.stderr.take().unwrap());
    let Some(st) = wait_exit(&mut child, LONG) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("hangar serve did not exit; its stderr:\n{}", err.text());
    };
    // The reader thread has read up to EOF once the pipe closes.
    wait_for(Duration::from_secs(5), || err.text().contains("error["));
    (st, err.text())
}

#[test]
fn serve_refuses_taken_addresses_before_starting_anything() {
    let s = Scratch::new("taken");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let marker = s.path().join("started");

    let (st, err) = serve_once(s.path(), "", &["--http", &addr], &marker);
    assert!(!st.success(), "{err}");
    assert!(err.contains("API_LISTEN_FAILED"), "{err}");
    assert!(err.contains(&addr), "the error does not name {addr}: {err}");
    assert!(
        !marker.exists(),
        "a process started although the HTTP port was taken"
    );
    assert!(
        !s.path().join("data/hangar.sock").exists(),
        "the socket was left behind"
    );

    // The same for the API's TCP listener.
    let daemon =
        format!("[daemon]\nhttp = \"\"\n[daemon.grpc]\ntcp = \"{addr}\"\ntoken = \"s3cret\"\n");
    let (st, err) = serve_once(s.path(), &daemon, &[], &marker);
    assert!(!st.success(), "{err}");
    assert!(err.contains(&addr), "the error does not name {addr}: {err}");
    assert!(
        !marker.exists(),
        "a process started although the API port was taken"
    );

    // Free, the same configuration starts the process.
    drop(taken);
    let data = s.path().join("data");
    let _d = Served::start(&data, &["-c", s.path().join("d.toml").to_str().unwrap()]);
    assert!(wait_for(LONG, || marker.exists()), "the process never ran");
}

/// A refused start shuts down the daemon it had opened at once, before its
/// background tasks may have run at all (a busy machine may not schedule
/// them for a while): they must still see the stop. The delay points hold
/// each task back until the stop was sent.
#[test]
fn a_refused_start_ends_even_before_the_daemons_tasks_have_run() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    // One at a time: with both held, the runtime's two workers would be
    // held too, and shutdown could not get as far as the stop.
    for point in ["daemon.persist.begin", "daemon.reconcile.begin"] {
        let s = Scratch::new("taken-early");
        let marker = s.path().join("started");
        let t = Instant::now();
        let (st, err) = serve_once_with(
            s.path(),
            "",
            &["--http", &addr],
            &marker,
            Some(&format!("{point}=sleep(1500)")),
        );
        assert!(!st.success(), "{point}: {err}");
        assert!(err.contains("API_LISTEN_FAILED"), "{point}: {err}");
        assert!(!marker.exists(), "{point}: a process started");
        eprintln!("{point}: refused in {:?}", t.elapsed());
    }
}

#[test]
fn shutdown_does_not_wait_for_followers() {
    let s = Scratch::new("followers");
    let data = s.path().join("data");
    let cfg = write(
        s.path(),
        "d.toml",
        "[[process]]\nname = \"talker\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo hello; exec sleep 300\"]\n",
    );
    let mut d = Served::start(&data, &["-c", cfg.to_str().unwrap()]);
    let follow = |args: &[&str]| {
        let mut c = hangar()
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Collected::from(c.stdout.take().unwrap());
        let err = Collected::from(c.stderr.take().unwrap());
        (c, out, err)
    };
    let (mut events, ev_out, ev_err) = follow(&["events", "-f"]);
    let (mut logs, log_out, log_err) = follow(&["logs", "talker", "-f"]);
    // Attached: each printed what there was, and follows.
    assert!(
        wait_for(LONG, || ev_out.text().contains("running")),
        "{} {}",
        ev_out.text(),
        ev_err.text()
    );
    assert!(
        wait_for(LONG, || log_out.text().contains("hello")),
        "{} {}",
        log_out.text(),
        log_err.text()
    );
    assert!(events.try_wait().unwrap().is_none() && logs.try_wait().unwrap().is_none());

    let t = Instant::now();
    sigterm(&d.child);
    let st = wait_exit(&mut d.child, LONG).expect("the daemon exits");
    let took = t.elapsed();
    assert!(st.success(), "{st:?}");
    // The old daemon waited 5 s for each followed stream before it gave up.
    assert!(
        took < Duration::from_secs(3),
        "the daemon took {took:?} to stop with followers attached"
    );
    for (name, c, err) in [
        ("events", &mut events, &ev_err),
        ("logs", &mut logs, &log_err),
    ] {
        let st = wait_exit(c, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("`{name} -f` still follows a stopped daemon"));
        assert!(!st.success(), "{name}: {st:?}");
        let e = err.text();
        assert!(
            e.contains("DAEMON_GONE") && e.contains("hint:"),
            "{name} -f: {e}"
        );
    }
    assert!(ev_err.text().contains("--after"), "{}", ev_err.text());
}

#[test]
fn the_quick_start_names_protoc_first_and_its_alias_works_anywhere() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let quick = readme
        .split("## Quick start")
        .nth(1)
        .and_then(|r| r.split("\n## ").next())
        .expect("a quick start section");
    let first_build = quick.find("cargo run").expect("the quick start builds");
    let protoc = quick.find("protoc").expect("the quick start names protoc");
    assert!(
        protoc < first_build,
        "protoc is named only after the first build command"
    );
    assert!(quick[..first_build].contains("protobuf-compiler"));
    let alias = quick
        .split("alias hangar=")
        .nth(1)
        .expect("the quick start suggests an alias");
    let target = alias.trim_start_matches(['"', '\'']);
    assert!(
        target.starts_with('/') || target.starts_with("$PWD") || target.starts_with("$(pwd)"),
        "the alias is relative to the current directory: {}",
        &alias[..alias.len().min(40)]
    );
}
