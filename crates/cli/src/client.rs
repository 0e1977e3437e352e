//! Client commands: `ps`, `start`, `stop`, `restart`, `logs`, `signal`, `events`,
//! `status`, `reload`, `add`, `remove`. Each talks to the daemon over its
//! socket (or TCP with a token), prints a table for people or JSON for
//! scripts, and exits with a stable code.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hangar_api::client::Client;
use hangar_api::convert;
use hangar_api::pb;
use hangar_core::Error;
use serde_json::json;
use tokio_stream::StreamExt;

use crate::output::{paint, Paint};
use crate::{exit, render};

/// How to reach the daemon.
pub struct Target {
    pub data_dir: PathBuf,
    pub addr: Option<String>,
    pub token: Option<String>,
    pub tls: Option<hangar_api::client::TlsFiles>,
}

/// How `hangar logs` and `hangar instance logs` print.
#[derive(clap::Args, Clone, Debug)]
pub struct LogOpts {
    /// Keep printing new lines.
    #[arg(short, long)]
    pub follow: bool,
    /// Lines of recent output to show first, per process.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub lines: u32,
    /// Start each line with the time hangar read it (RFC 3339, UTC).
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// One JSON object per line: process, stream, time, line.
    #[arg(long)]
    pub json: bool,
}

/// A client command.
pub enum Cmd {
    Dashboard {
        open: bool,
    },
    Ps {
        pattern: String,
        json: bool,
    },
    Start {
        pattern: String,
        json: bool,
    },
    Stop {
        pattern: String,
        timeout: Option<Duration>,
        json: bool,
    },
    Restart {
        pattern: String,
        json: bool,
    },
    Logs {
        names: Vec<String>,
        opts: LogOpts,
    },
    Signal {
        pattern: String,
        signal: String,
        group: bool,
        json: bool,
    },
    Events {
        follow: bool,
        name: String,
        kinds: Vec<String>,
        last: u32,
        after: i64,
        json: bool,
    },
    Status {
        json: bool,
    },
    Reload {
        json: bool,
    },
    Add {
        file: PathBuf,
        no_start: bool,
        json: bool,
    },
    Remove {
        name: String,
        json: bool,
    },
}

pub fn run(target: Target, cmd: Cmd) -> u8 {
    block_on(go(target, cmd))
}

/// Run a client command on a one-thread runtime; an error is rendered and
/// mapped to its exit code by its category.
pub(crate) fn block_on(f: impl std::future::Future<Output = Result<u8, Error>>) -> u8 {
    let rt = match crate::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        match f.await {
            Ok(code) => code,
            Err(e) => {
                errln!("{}", render::core_error(&e));
                exit::code_for(&e)
            }
        }
    })
}

pub(crate) async fn connect(t: &Target) -> Result<Client, Error> {
    match &t.addr {
        Some(a) => Client::tcp(a, t.token.as_deref(), t.tls.as_ref()).await,
        None => Client::unix(&hangar_core::socket_path(&t.data_dir)).await,
    }
}

pub(crate) fn api(s: tonic::Status) -> Error {
    convert::error(&s)
}

async fn go(t: Target, cmd: Cmd) -> Result<u8, Error> {
    let mut c = connect(&t).await?;
    match cmd {
        Cmd::Ps { pattern, json } => {
            let list = c
                .processes
                .list(pb::ListRequest {
                    pattern,
                    ..Default::default()
                })
                .await
                .map_err(api)?
                .into_inner()
                .processes;
            if json {
                print_processes_json(&list);
            } else {
                print_table(&list);
            }
            Ok(exit::OK)
        }
        Cmd::Start { pattern, json } => {
            let r = c
                .processes
                .start(select(pattern, None))
                .await
                .map_err(api)?;
            Ok(report_action("started", r.into_inner(), json))
        }
        Cmd::Stop {
            pattern,
            timeout,
            json,
        } => {
            let r = c
                .processes
                .stop(select(pattern, timeout))
                .await
                .map_err(api)?;
            Ok(report_action("stopped", r.into_inner(), json))
        }
        Cmd::Restart { pattern, json } => {
            let r = c
                .processes
                .restart(select(pattern, None))
                .await
                .map_err(api)?;
            Ok(report_action("restarted", r.into_inner(), json))
        }
        Cmd::Remove { name, json } => {
            let r = c
                .processes
                .remove(pb::NameRequest { name })
                .await
                .map_err(api)?;
            Ok(report_action("removed", r.into_inner(), json))
        }
        Cmd::Add {
            file,
            no_start,
            json,
        } => {
            let toml = std::fs::read_to_string(&file).map_err(|e| {
                Error::new(
                    hangar_core::ErrorKind::ConfigUnreadable,
                    format!("cannot read {}: {e}", file.display()),
                )
                .hint("check the path and its permissions")
            })?;
            let list = c
                .processes
                .add(pb::AddRequest { toml, no_start })
                .await
                .map_err(api)?
                .into_inner()
                .processes;
            if json {
                print_processes_json(&list);
            } else {
                print_table(&list);
            }
            Ok(exit::OK)
        }
        Cmd::Logs { names, opts } => logs(&mut c, names, &opts).await,
        Cmd::Signal {
            pattern,
            signal,
            group,
            json,
        } => {
            let r = c
                .processes
                .signal(pb::SignalRequest {
                    pattern,
                    signal: signal.clone(),
                    group,
                })
                .await
                .map_err(api)?;
            // `--json`: {"signalled": [names], "errors": [...]}.
            let verb = match (json, group) {
                (true, _) => "signalled".to_string(),
                (false, true) => format!("sent {signal} to the group of"),
                (false, false) => format!("sent {signal} to"),
            };
            Ok(report_action(&verb, r.into_inner(), json))
        }
        Cmd::Events {
            follow,
            name,
            kinds,
            last,
            after,
            json,
        } => {
            let mut newest = after;
            if !follow || after == 0 {
                let h = c
                    .events
                    .history(pb::HistoryRequest {
                        name: name.clone(),
                        kinds: kinds.clone(),
                        after_id: after,
                        limit: last,
                        ..Default::default()
                    })
                    .await
                    .map_err(api)?
                    .into_inner();
                for e in &h.events {
                    print_event(e, json);
                    newest = newest.max(e.id);
                }
            }
            if follow {
                // Resume from the newest printed, so nothing is missed or doubled.
                let mut s = c
                    .events
                    .stream(pb::EventFilter {
                        name,
                        kinds,
                        after_id: newest.max(1),
                    })
                    .await
                    .map_err(api)?
                    .into_inner();
                while let Some(e) = s.next().await {
                    print_event(&e.map_err(api)?, json);
                }
            }
            Ok(exit::OK)
        }
        Cmd::Dashboard { open } => {
            let s = c.daemon.status(pb::StatusRequest {}).await.map_err(api)?;
            let s = s.into_inner();
            let url = dashboard_url(&s)?;
            outln!("{url}");
            if open {
                crate::browser::open(&url);
            }
            Ok(exit::OK)
        }
        Cmd::Status { json } => {
            let s = c.daemon.status(pb::StatusRequest {}).await.map_err(api)?;
            let s = s.into_inner();
            if json {
                outln!(
                    "{}",
                    json!({
                        "version": s.version, "pid": s.pid, "started_at_ms": s.started_at_ms,
                        "data_dir": s.data_dir, "config_file": s.config_file,
                        "supervisor_id": s.supervisor_id, "processes": s.processes,
                        "last_event_id": s.last_event_id, "recovered_killed": s.recovered_killed,
                        "http_addr": s.http_addr,
                        "sinks": s.sinks.iter().map(|k| json!({
                            "name": k.name, "kind": k.kind, "delivered": k.delivered,
                            "dropped": k.dropped, "failed_attempts": k.failed_attempts,
                            "queued": k.queued, "last_error": k.last_error,
                        })).collect::<Vec<_>>(),
                    })
                );
            } else {
                let up = now_ms().saturating_sub(s.started_at_ms).max(0) as u64;
                outln!(
                    "hangar {} (pid {}), up {}",
                    s.version,
                    s.pid,
                    short(Duration::from_millis(up))
                );
                outln!("data dir:   {}", s.data_dir);
                if !s.config_file.is_empty() {
                    outln!("config:     {}", s.config_file);
                }
                let total: u32 = s.processes.values().sum();
                let mut by: Vec<_> = s.processes.iter().collect();
                by.sort();
                let parts: Vec<String> = by.iter().map(|(k, v)| format!("{v} {k}")).collect();
                outln!("processes:  {total} ({})", parts.join(", "));
                outln!("events:     last id {}", s.last_event_id);
                if !s.http_addr.is_empty() {
                    outln!("http:       http://{}/", s.http_addr);
                }
                if s.recovered_killed > 0 {
                    outln!(
                        "recovered:  {} leftover processes ended at start",
                        s.recovered_killed
                    );
                }
                for k in &s.sinks {
                    outln!(
                        "sink {}:  {} delivered, {} dropped, {} failed attempts, {} queued{}",
                        k.name,
                        k.delivered,
                        k.dropped,
                        k.failed_attempts,
                        k.queued,
                        if k.last_error.is_empty() {
                            String::new()
                        } else {
                            format!(" (last error: {})", k.last_error)
                        }
                    );
                }
            }
            Ok(exit::OK)
        }
        Cmd::Reload { json } => {
            let r = c
                .daemon
                .reload(pb::ReloadRequest {})
                .await
                .map_err(api)?
                .into_inner();
            if json {
                outln!(
                    "{}",
                    json!({"added": r.added, "removed": r.removed, "changed": r.changed,
                           "unchanged": r.unchanged, "errors": errors_json(&r.errors)})
                );
            } else {
                outln!(
                    "reloaded: {} added, {} removed, {} changed, {} unchanged",
                    r.added.len(),
                    r.removed.len(),
                    r.changed.len(),
                    r.unchanged.len()
                );
                for (what, names) in [
                    ("added", &r.added),
                    ("removed", &r.removed),
                    ("changed", &r.changed),
                ] {
                    for n in names {
                        outln!("  {what:8} {n}");
                    }
                }
                print_errors(&r.errors);
            }
            Ok(if r.errors.is_empty() {
                exit::OK
            } else {
                exit::FAILURE
            })
        }
    }
}

/// Print the output of the processes `names` (names or globs) merged in time
/// order, each line prefixed with its process when there are several (as
/// `docker compose logs` does); with `follow`, then new lines as they come.
pub(crate) async fn logs(c: &mut Client, names: Vec<String>, o: &LogOpts) -> Result<u8, Error> {
    let several = names.len() > 1 || names.iter().any(|n| is_glob(n));
    let names_width = names
        .iter()
        .filter(|n| !is_glob(n))
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0);
    let mut names = names.into_iter();
    let first = names.next().unwrap_or_default();
    let mut s = c
        .processes
        .logs(pb::LogsRequest {
            name: first,
            names: names.collect(),
            lines: o.lines,
            follow: o.follow,
        })
        .await
        .map_err(api)?
        .into_inner();
    // The process column is as wide as the widest name asked for (or, for a
    // glob, seen so far).
    let mut width = names_width;
    while let Some(line) = s.next().await {
        let line = line.map_err(api)?;
        if line.skipped > 0 {
            // A gap marker: the follower fell behind a flood.
            if o.json {
                outln!(
                    "{}",
                    json!({"process": line.process, "skipped": line.skipped, "time_ms": line.at_ms})
                );
            } else {
                errln!(
                    "[hangar] {}: {} lines skipped (written faster than this client read; the log files keep them)",
                    line.process,
                    line.skipped
                );
            }
            continue;
        }
        if o.json {
            let at = UNIX_EPOCH + Duration::from_millis(line.at_ms.max(0) as u64);
            outln!(
                "{}",
                json!({
                    "process": line.process,
                    "stream": line.stream,
                    "time": humantime::format_rfc3339_millis(at).to_string(),
                    "time_ms": line.at_ms,
                    "line": line.text,
                })
            );
            continue;
        }
        let mut prefix = String::new();
        if o.timestamps {
            let at = UNIX_EPOCH + Duration::from_millis(line.at_ms.max(0) as u64);
            prefix.push_str(&format!("{} ", humantime::format_rfc3339_millis(at)));
        }
        if several {
            width = width.max(line.process.chars().count());
            prefix.push_str(&format!("{:<width$} | ", line.process));
        }
        if line.stream == "stderr" {
            errln!("{prefix}{}", line.text);
        } else {
            outln!("{prefix}{}", line.text);
        }
    }
    Ok(exit::OK)
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn select(pattern: String, timeout: Option<Duration>) -> pb::SelectRequest {
    pb::SelectRequest {
        pattern,
        timeout_ms: timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
    }
}

fn report_action(verb: &str, r: pb::ActionReply, json: bool) -> u8 {
    if json {
        outln!(
            "{}",
            json!({ verb: r.names, "errors": errors_json(&r.errors) })
        );
    } else {
        for n in &r.names {
            outln!("{verb} {n}");
        }
        print_errors(&r.errors);
    }
    if r.errors.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    }
}

fn errors_json(errs: &[pb::ProcessError]) -> serde_json::Value {
    errs.iter()
        .map(|e| {
            let i = e.error.clone().unwrap_or_default();
            json!({"name": e.name, "code": i.code, "message": i.message, "context": hangar_api::convert::context_text(&i), "hint": i.hint})
        })
        .collect()
}

fn print_errors(errs: &[pb::ProcessError]) {
    for e in errs {
        let i = e.error.clone().unwrap_or_default();
        errln!("error[{}]: {}: {}", i.code, e.name, i.message);
        if !i.hint.is_empty() {
            errln!("  hint: {}", i.hint);
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// CPU time as `ps` shows it: `0.42s`, `12.3s`, then `5m12s`, `3h4m`.
fn cpu(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.2}s")
    } else {
        short(Duration::from_secs_f64(secs))
    }
}

/// Bytes in binary units, one decimal: `512B`, `12.5K`, `52.3M`, `1.2G`.
fn bytes(n: u64) -> String {
    let mut v = n as f64;
    for unit in ["B", "K", "M", "G", "T"] {
        if v < 1024.0 || unit == "T" {
            return if unit == "B" {
                format!("{n}B")
            } else {
                format!("{v:.1}{unit}")
            };
        }
        v /= 1024.0;
    }
    format!("{n}B")
}

/// `3d4h`, `5m12s`, `42s`: two units at most.
fn short(d: Duration) -> String {
    let s = d.as_secs();
    let (d_, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d_ > 0 {
        format!("{d_}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

#[derive(serde::Serialize)]
struct ErrorOut<'a> {
    code: &'a str,
    message: &'a str,
    hint: &'a str,
}

/// A process as `--json` prints it: borrowed, so a thousand rows cost no copies.
#[derive(serde::Serialize)]
struct ProcessOut<'a> {
    name: &'a str,
    state: &'a str,
    desired: &'a str,
    source: &'a str,
    pid: Option<u32>,
    restarts: u64,
    consecutive_failures: u32,
    started_at_ms: Option<i64>,
    since_ms: i64,
    health: &'a str,
    ports: std::collections::BTreeMap<&'a str, u32>,
    last_exit: Option<&'a str>,
    last_error: Option<ErrorOut<'a>>,
    command: &'a str,
    args: &'a [String],
    log_dropped_bytes: u64,
    cpu_seconds: Option<f64>,
    memory_bytes: Option<u64>,
}

fn process_out(p: &pb::Process) -> ProcessOut<'_> {
    ProcessOut {
        name: &p.name,
        state: &p.state,
        desired: &p.desired,
        source: &p.source,
        pid: (p.pid > 0).then_some(p.pid),
        restarts: p.restarts,
        consecutive_failures: p.consecutive_failures,
        started_at_ms: (p.started_at_ms > 0).then_some(p.started_at_ms),
        since_ms: p.since_ms,
        health: &p.health,
        ports: p.ports.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
        last_exit: (!p.last_exit.is_empty()).then_some(p.last_exit.as_str()),
        last_error: p.last_error.as_ref().map(|e| ErrorOut {
            code: &e.code,
            message: &e.message,
            hint: &e.hint,
        }),
        command: &p.command,
        args: &p.args,
        log_dropped_bytes: p.log_dropped_bytes,
        cpu_seconds: p.cpu_seconds,
        memory_bytes: p.memory_bytes,
    }
}

/// Processes as one JSON array, written at once.
fn print_processes_json(list: &[pb::Process]) {
    let rows: Vec<ProcessOut<'_>> = list.iter().map(process_out).collect();
    match serde_json::to_string(&rows) {
        Ok(s) => outln!("{s}"),
        Err(e) => errln!("error[IO_ERROR]: cannot encode JSON: {e}"),
    }
}

fn print_table(list: &[pb::Process]) {
    let now = now_ms();
    let rows: Vec<[String; 9]> = list
        .iter()
        .map(|p| {
            let state = if p.desired == "stopped" && p.state != "stopped" {
                format!("{} (stopping)", p.state)
            } else {
                p.state.clone()
            };
            let uptime = if p.started_at_ms > 0 && p.state == "running" {
                short(Duration::from_millis(
                    now.saturating_sub(p.started_at_ms).max(0) as u64,
                ))
            } else {
                "-".into()
            };
            let mut ports: Vec<String> = p.ports.iter().map(|(k, v)| format!("{k}={v}")).collect();
            ports.sort();
            let note = match (&p.last_error, p.last_exit.is_empty()) {
                (Some(e), _) if p.state == "failed" || p.state == "backoff" => e.code.clone(),
                (_, false) if p.state != "running" => p.last_exit.clone(),
                _ => String::new(),
            };
            [
                p.name.clone(),
                state,
                if p.pid > 0 {
                    p.pid.to_string()
                } else {
                    "-".into()
                },
                uptime,
                p.restarts.to_string(),
                p.health.clone(),
                p.cpu_seconds.map_or("-".into(), cpu),
                p.memory_bytes.map_or("-".into(), bytes),
                if ports.is_empty() {
                    note
                } else {
                    format!("{} {note}", ports.join(","))
                },
            ]
        })
        .collect();
    let head = [
        "NAME",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "HEALTH",
        "CPU",
        "MEM",
        "PORTS/NOTE",
    ];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    // The whole table is written at once: stdout is line-buffered, and a
    // thousand rows would be a thousand writes.
    let mut out = String::with_capacity((rows.len() + 1) * 80);
    let mut line = |cells: [&str; 9], state: Option<Paint>| {
        use std::fmt::Write as _;
        let start = out.len();
        for (i, c) in cells.iter().enumerate() {
            if i == 8 {
                out.push_str(c);
            } else if let (1, Some(p)) = (i, state) {
                // Padded first: escape codes have no width.
                let _ = write!(out, "{}  ", paint(&format!("{c:<width$}", width = w[i]), p));
            } else {
                let _ = write!(out, "{c:<width$}  ", width = w[i]);
            }
        }
        let trimmed = out[start..].trim_end().len();
        out.truncate(start + trimmed);
        out.push('\n');
    };
    line(head, None);
    for (r, p) in rows.iter().zip(list) {
        line(r.each_ref().map(String::as_str), state_paint(&p.state));
    }
    out.pop();
    outln!("{out}");
}

/// The colour of a state in `hangar ps` on a terminal.
fn state_paint(state: &str) -> Option<Paint> {
    Some(match state {
        "running" => Paint::Green,
        "failed" => Paint::Red,
        "starting" | "stopping" | "backoff" | "waiting" => Paint::Yellow,
        "stopped" | "exited" => Paint::Dim,
        _ => return None,
    })
}

fn print_event(e: &pb::Event, json: bool) {
    if json {
        let detail = hangar_api::convert::detail(e);
        outln!(
            "{}",
            json!({"id": e.id, "at_ms": e.at_ms, "name": e.name, "pid": (e.pid > 0).then_some(e.pid),
                   "kind": e.kind, "from": e.from, "to": e.to, "detail": detail})
        );
        return;
    }
    let at = UNIX_EPOCH + Duration::from_millis(e.at_ms.max(0) as u64);
    let ts = humantime::format_rfc3339_millis(at);
    let mut extra = String::new();
    if let serde_json::Value::Object(d) = hangar_api::convert::detail(e) {
        for k in ["exit", "error_code", "error", "probe"] {
            if let Some(v) = d.get(k).and_then(|v| v.as_str()) {
                extra.push_str(&format!(" {k}={v:?}"));
            }
        }
    }
    let pid = if e.pid > 0 {
        format!(" pid={}", e.pid)
    } else {
        String::new()
    };
    outln!(
        "{ts} #{} {} {} {} -> {}{pid}{extra}",
        e.id,
        e.name,
        e.kind,
        e.from,
        e.to
    );
}

/// `http://ADDR/login?token=TOKEN` for the daemon `s` describes. The token is
/// read from the daemon's data dir: whoever may read it may log in.
fn dashboard_url(s: &pb::DaemonStatus) -> Result<String, Error> {
    let addr: std::net::SocketAddr = s.http_addr.parse().map_err(|_| {
        Error::new(
            hangar_api::ErrorKind::HttpOff,
            "the daemon serves no HTTP, so no dashboard",
        )
        .hint("set daemon.http (e.g. \"127.0.0.1:9470\") or pass --http to `hangar serve`")
    })?;
    // A listener on every address is reached on loopback (GraphQL answers
    // on loopback only).
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    let path = std::path::Path::new(&s.data_dir).join(hangar_api::graphql::TOKEN_FILE);
    let token = std::fs::read_to_string(&path).map_err(|e| {
        Error::new(
            hangar_api::ErrorKind::TokenUnusable,
            format!("cannot read the API token: {e}"),
        )
        .with("path", path.display())
        .hint("run this as the daemon's user (or root): the token file is theirs alone")
    })?;
    Ok(format!(
        "http://{host}:{}/login?token={}",
        addr.port(),
        token.trim()
    ))
}
