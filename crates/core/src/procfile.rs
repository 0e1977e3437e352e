//! The process file read by `hangar run`: TOML with `[[process]]` tables.
//!
//! Parsing walks the TOML tree by hand (with spans) instead of deriving serde, so a
//! file with several mistakes gets all of them reported at once, each with its
//! line, column and key path, and nothing starts until the file is clean.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use hangar_supervisor::{Check, Condition, ProbeSpec, ProcessSpec, RestartMode, StopSignal};
use toml_edit::{ImDocument, Item, TableLike, Value};

/// A parsed, validated process file.
#[derive(Debug)]
pub struct ProcessFile {
    /// Processes in file order; `instances` not yet expanded.
    pub processes: Vec<ProcessSpec>,
    /// `[env]`: variables for every process.
    pub env: Vec<String>,
}

/// One mistake in a process file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// Key path, e.g. `process[1].restart.initial_interval`.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.line, self.col)?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

const PROCESS_KEYS: &[&str] = &[
    "name",
    "command",
    "args",
    "env",
    "inherit_env",
    "working_dir",
    "instances",
    "stop_signal",
    "stop_timeout",
    "die_with_supervisor",
    "restart",
    "log",
    "ports",
    "health_port",
    "readiness",
    "liveness",
    "start_timeout",
    "depends_on",
    "limits",
    "user",
    "no_new_privs",
    "netns",
];
const LIMIT_KEYS: &[&str] = &["memory", "cpu", "pids"];
const PROBE_KEYS: &[&str] = &[
    "tcp",
    "http",
    "exec",
    "process",
    "all",
    "any",
    "status",
    "headers",
    "body_contains",
    "initial_delay",
    "interval",
    "timeout",
    "success_threshold",
    "failure_threshold",
];
const CHECK_KINDS: &[&str] = &["tcp", "http", "exec", "process", "all", "any"];
const RESTART_KEYS: &[&str] = &[
    "policy",
    "initial_interval",
    "multiplier",
    "max_interval",
    "jitter",
    "min_uptime",
    "max_retries",
];
const LOG_KEYS: &[&str] = &[
    "dir",
    "max_size",
    "keep",
    "compress",
    "max_age",
    "tail_bytes",
];
const TOP_KEYS: &[&str] = &["process", "env", "log_dir"];
/// A daemon configuration file may also hold `[daemon]` settings.
const DAEMON_TOP_KEYS: &[&str] = &["process", "env", "log_dir", "daemon"];

/// What kind of file is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A process file for `hangar run`: at least one `[[process]]`, nothing else.
    ProcessFile,
    /// `hangar serve`'s configuration: `[[process]]` tables are optional and a
    /// `[daemon]` table is allowed (read by [`crate::config`]).
    DaemonConfig,
}

/// Most instances one entry may ask for.
const MAX_INSTANCES: i64 = 100_000;

/// Parse and validate a process file. `default_log_dir` applies to processes that
/// set no `log.dir` (after the file's own top-level `log_dir`).
pub fn parse(src: &str, default_log_dir: Option<PathBuf>) -> Result<ProcessFile, Vec<FileError>> {
    parse_as(src, default_log_dir, FileKind::ProcessFile)
}

/// [`parse`] for either kind of file.
pub fn parse_as(
    src: &str,
    default_log_dir: Option<PathBuf>,
    kind: FileKind,
) -> Result<ProcessFile, Vec<FileError>> {
    let top_keys = match kind {
        FileKind::ProcessFile => TOP_KEYS,
        FileKind::DaemonConfig => DAEMON_TOP_KEYS,
    };
    let doc = match ImDocument::parse(src) {
        Ok(d) => d,
        Err(e) => {
            let (line, col) = e.span().map(|s| line_col(src, s.start)).unwrap_or((0, 0));
            let msg = e.message().trim().to_string();
            return Err(vec![FileError {
                line,
                col,
                key: String::new(),
                message: format!("not valid TOML: {msg}"),
            }]);
        }
    };
    let mut w = Walker {
        src,
        errors: Vec::new(),
        spans: HashMap::new(),
    };
    let root = doc.as_table();
    for (key, item) in root.iter() {
        if !top_keys.contains(&key) {
            let span = root.get_key_value(key).and_then(|(k, _)| k.span());
            w.unknown(span, key, "", top_keys);
        } else {
            let _ = item;
        }
    }
    let mut env = Vec::new();
    if let Some((k, item)) = root.get_key_value("env") {
        match item.as_table_like() {
            Some(t) => {
                for (name, v) in t.iter() {
                    let span = t.get_key_value(name).and_then(|(k, _)| k.span());
                    match v.as_str() {
                        Some(s) => env.push(format!("{name}={s}")),
                        None => w.err(span, &format!("env.{name}"), "expected a string"),
                    }
                }
            }
            None => w.err(k.span(), "env", "expected a table of strings"),
        }
    }
    let mut log_dir = default_log_dir;
    if let Some((k, item)) = root.get_key_value("log_dir") {
        match item.as_str() {
            Some(s) => log_dir = Some(PathBuf::from(s)),
            None => w.err(k.span(), "log_dir", "expected a path string"),
        }
    }

    let mut processes = Vec::new();
    let mut names: Vec<(String, String, u32)> = Vec::new();
    match root.get_key_value("process") {
        None if kind == FileKind::DaemonConfig => {}
        None => w.err(
            Some(0..0),
            "process",
            "no [[process]] tables: the file declares nothing to run",
        ),
        Some((k, item)) => match item.as_array_of_tables() {
            Some(arr) => {
                for (i, t) in arr.iter().enumerate() {
                    let path = format!("process[{i}]");
                    // Names count for uniqueness even when the entry has other errors.
                    if let Some(name) = t.get("name").and_then(|n| n.as_str()) {
                        let n = t
                            .get("instances")
                            .and_then(|n| n.as_integer())
                            .filter(|n| (1..=MAX_INSTANCES).contains(n))
                            .unwrap_or(1) as u32;
                        names.push((path.clone(), name.to_string(), n));
                    }
                    processes.push(w.process(&path, t, t.span(), log_dir.clone()));
                }
            }
            None => w.err(
                k.span(),
                "process",
                "expected [[process]] tables (an array of tables)",
            ),
        },
    }

    // Names must be unique once instances are expanded.
    let mut seen: HashMap<String, String> = HashMap::new();
    for (path, name, instances) in &names {
        let expanded: Vec<String> = if *instances > 1 {
            (1..=*instances).map(|i| format!("{name}-{i}")).collect()
        } else {
            vec![name.clone()]
        };
        for n in expanded {
            if let Some(first) = seen.get(&n) {
                let msg = format!(
                    "duplicate process name {n:?} (also produced by {first}); names must be unique"
                );
                w.err_key(&format!("{path}.name"), msg);
                break;
            }
            seen.insert(n, path.clone());
        }
    }

    // Dependencies name processes of this file; one with instances means them all.
    let expanded: HashMap<&str, Vec<String>> = names
        .iter()
        .map(|(_, name, n)| {
            let v = if *n > 1 {
                (1..=*n).map(|i| format!("{name}-{i}")).collect()
            } else {
                vec![name.clone()]
            };
            (name.as_str(), v)
        })
        .collect();
    for (i, spec) in processes.iter_mut().enumerate() {
        let path = names
            .iter()
            .find(|(_, n, _)| *n == spec.name)
            .map(|(p, _, _)| p.clone())
            .unwrap_or_else(|| format!("process[{i}]"));
        let deps = std::mem::take(&mut spec.depends_on);
        for (dep, cond) in deps {
            match expanded.get(dep.as_str()) {
                Some(all) => {
                    for d in all {
                        spec.depends_on.insert(d.clone(), cond);
                    }
                }
                None => w.err_key(
                    &format!("{path}.depends_on.{dep}"),
                    format!("depends on {dep:?}, which this file does not declare"),
                ),
            }
        }
    }
    if w.errors.is_empty() {
        let mut graph: HashMap<&str, Vec<&str>> = HashMap::new();
        for spec in &processes {
            let deps: Vec<&str> = spec.depends_on.keys().map(String::as_str).collect();
            for n in expanded.get(spec.name.as_str()).into_iter().flatten() {
                graph.insert(n.as_str(), deps.clone());
            }
        }
        if let Some(cycle) = hangar_supervisor::find_cycle(&graph) {
            let first = cycle.first().cloned().unwrap_or_default();
            let base = names
                .iter()
                .find(|(_, n, _)| expanded.get(n.as_str()).is_some_and(|v| v.contains(&first)))
                .map(|(p, _, _)| p.clone())
                .unwrap_or_default();
            w.err_key(
                &format!("{base}.depends_on"),
                format!("dependency cycle: {}", cycle.join(" -> ")),
            );
        }
    }

    if w.errors.is_empty() {
        Ok(ProcessFile { processes, env })
    } else {
        w.errors.sort_by_key(|e| (e.line, e.col));
        Err(w.errors)
    }
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

struct Walker<'a> {
    src: &'a str,
    errors: Vec<FileError>,
    /// Span of every key seen, by path, so semantic errors found later point home.
    spans: HashMap<String, Range<usize>>,
}

impl Walker<'_> {
    fn err(&mut self, span: Option<Range<usize>>, key: &str, message: impl Into<String>) {
        let (line, col) = span.map(|s| line_col(self.src, s.start)).unwrap_or((0, 0));
        self.errors.push(FileError {
            line,
            col,
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn err_key(&mut self, key: &str, message: impl Into<String>) {
        let span = self.spans.get(key).cloned();
        self.err(span, key, message);
    }

    fn unknown(&mut self, span: Option<Range<usize>>, key: &str, prefix: &str, known: &[&str]) {
        let path = format!("{prefix}{key}");
        let mut msg = format!("unknown key `{key}`");
        if let Some(best) = closest(key, known) {
            msg.push_str(&format!("; did you mean `{best}`?"));
        } else {
            msg.push_str(&format!("; known keys: {}", known.join(", ")));
        }
        self.err(span, &path, msg);
    }

    fn process(
        &mut self,
        path: &str,
        t: &dyn TableLike,
        header: Option<Range<usize>>,
        log_dir: Option<PathBuf>,
    ) -> ProcessSpec {
        let before = self.errors.len();
        let mut spec = ProcessSpec::default();
        spec.log.dir = log_dir;
        let mut has = (false, false);
        for (key, item) in t.iter() {
            let kspan = t.get_key_value(key).and_then(|(k, _)| k.span());
            let kp = format!("{path}.{key}");
            if let Some(s) = kspan.clone() {
                self.spans.insert(kp.clone(), s);
            }
            match key {
                "name" => {
                    has.0 = true;
                    if let Some(s) = self.string(item, &kp, kspan) {
                        spec.name = s;
                    }
                }
                "command" => {
                    has.1 = true;
                    if let Some(s) = self.string(item, &kp, kspan) {
                        spec.command = s;
                    }
                }
                "args" => match item.as_array() {
                    Some(a) => {
                        for (i, v) in a.iter().enumerate() {
                            match v.as_str() {
                                Some(s) => spec.args.push(s.to_string()),
                                None => self.err(
                                    v.span().or(kspan.clone()),
                                    &format!("{kp}[{i}]"),
                                    format!("expected a string, found {}", v.type_name()),
                                ),
                            }
                        }
                    }
                    None => self.err(kspan, &kp, "expected an array of strings"),
                },
                "env" => match item.as_table_like() {
                    Some(env) => {
                        for (k, v) in env.iter() {
                            match v.as_str() {
                                Some(s) => {
                                    spec.env.insert(k.to_string(), s.to_string());
                                }
                                None => self.err(
                                    env.get_key_value(k).and_then(|(k, _)| k.span()),
                                    &format!("{kp}.{k}"),
                                    "expected a string",
                                ),
                            }
                        }
                    }
                    None => self.err(kspan, &kp, "expected a table of strings"),
                },
                "inherit_env" => {
                    if let Some(b) = self.bool(item, &kp, kspan) {
                        spec.inherit_env = b;
                    }
                }
                "die_with_supervisor" => {
                    if let Some(b) = self.bool(item, &kp, kspan) {
                        spec.die_with_supervisor = b;
                    }
                }
                "working_dir" => {
                    if let Some(s) = self.string(item, &kp, kspan) {
                        spec.working_dir = Some(PathBuf::from(s));
                    }
                }
                "instances" => {
                    if let Some(n) = self.int(item, &kp, kspan, 1, MAX_INSTANCES) {
                        spec.instances = n as u32;
                    }
                }
                "stop_signal" => {
                    if let Some(s) = self.string(item, &kp, kspan.clone()) {
                        match s.parse::<StopSignal>() {
                            Ok(sig) => spec.stop_signal = sig,
                            Err(e) => self.err(kspan, &kp, e),
                        }
                    }
                }
                "stop_timeout" => {
                    if let Some(d) = self.duration(item, &kp, kspan) {
                        spec.stop_timeout = d;
                    }
                }
                "restart" => self.restart(&kp, item, kspan, &mut spec),
                "log" => self.log(&kp, item, kspan, &mut spec),
                "ports" => match item.as_array() {
                    Some(a) => {
                        for (i, v) in a.iter().enumerate() {
                            match v.as_str() {
                                Some(s) => spec.ports.push(s.to_string()),
                                None => self.err(
                                    v.span().or(kspan.clone()),
                                    &format!("{kp}[{i}]"),
                                    "expected a port name string",
                                ),
                            }
                        }
                    }
                    None => self.err(
                        kspan,
                        &kp,
                        "expected an array of port names, like [\"http\"]",
                    ),
                },
                "health_port" => {
                    if let Some(b) = self.bool(item, &kp, kspan) {
                        spec.health_port = b;
                    }
                }
                "start_timeout" => {
                    if let Some(d) = self.duration(item, &kp, kspan) {
                        spec.start_timeout = d;
                    }
                }
                "readiness" => spec.readiness = self.probe(&kp, item, kspan),
                "liveness" => spec.liveness = self.probe(&kp, item, kspan),
                "depends_on" => match item.as_table_like() {
                    Some(t) => {
                        for (dep, v) in t.iter() {
                            let dspan = t.get_key_value(dep).and_then(|(k, _)| k.span());
                            let dp = format!("{kp}.{dep}");
                            if let Some(s) = dspan.clone() {
                                self.spans.insert(dp.clone(), s);
                            }
                            match v.as_str().map(str::parse::<Condition>) {
                                Some(Ok(c)) => {
                                    spec.depends_on.insert(dep.to_string(), c);
                                }
                                Some(Err(e)) => self.err(dspan, &dp, e),
                                None => self.err(
                                    dspan,
                                    &dp,
                                    "expected a condition: started, healthy or completed_successfully",
                                ),
                            }
                        }
                    }
                    None => self.err(kspan, &kp, "expected a table like { web = \"healthy\" }"),
                },
                "no_new_privs" => {
                    if let Some(b) = self.bool(item, &kp, kspan) {
                        spec.no_new_privs = b;
                    }
                }
                "netns" => {
                    if let Some(s) = self.string(item, &kp, kspan) {
                        spec.netns = Some(PathBuf::from(s));
                    }
                }
                "user" => {
                    if let Some(s) = self.string(item, &kp, kspan.clone()) {
                        match hangar_supervisor::RunAs::from_name(&s) {
                            Ok(r) => spec.user = Some(r),
                            Err(e) => self.err(kspan, &kp, e.message()),
                        }
                    }
                }
                "limits" => match item.as_table_like() {
                    Some(t) => {
                        let mut l = hangar_supervisor::Limits::default();
                        for (k, v) in t.iter() {
                            let vspan = t.get_key_value(k).and_then(|(k, _)| k.span());
                            let lp = format!("{kp}.{k}");
                            let text = v
                                .as_str()
                                .map(str::to_string)
                                .or_else(|| v.as_integer().map(|n| n.to_string()))
                                .or_else(|| v.as_float().map(|n| n.to_string()));
                            let Some(text) = text else {
                                self.err(
                                    vspan,
                                    &lp,
                                    "expected a number or a string like \"512Mi\"",
                                );
                                continue;
                            };
                            match k {
                                "memory" => match hangar_supervisor::Limits::parse_memory(&text) {
                                    Ok(b) => l.memory_max = Some(b),
                                    Err(e) => self.err(vspan, &lp, e),
                                },
                                "cpu" => match hangar_supervisor::Limits::parse_cpu(&text) {
                                    Ok(c) => l.cpu_max = Some(c),
                                    Err(e) => self.err(vspan, &lp, e),
                                },
                                "pids" => match text.parse::<u64>() {
                                    Ok(n) => l.pids_max = Some(n),
                                    Err(_) => {
                                        self.err(vspan, &lp, "expected a whole number of processes")
                                    }
                                },
                                other => self.unknown(vspan, other, &format!("{kp}."), LIMIT_KEYS),
                            }
                        }
                        spec.limits = Some(l);
                    }
                    None => self.err(
                        kspan,
                        &kp,
                        "expected a table like { memory = \"256Mi\", cpu = 0.5, pids = 64 }",
                    ),
                },
                other => self.unknown(kspan, other, &format!("{path}."), PROCESS_KEYS),
            }
        }
        if !has.0 {
            self.err(
                header.clone(),
                &format!("{path}.name"),
                "missing required key `name`",
            );
        }
        if !has.1 {
            self.err(
                header,
                &format!("{path}.command"),
                "missing required key `command`",
            );
        }
        // Semantic problems, except for keys already reported (a value that did not
        // parse leaves a default behind that would be blamed twice).
        let reported: Vec<String> = self.errors[before..]
            .iter()
            .map(|e| e.key.clone())
            .collect();
        for p in spec.problems() {
            let key = format!("{path}.{}", p.field);
            let dup = reported
                .iter()
                .any(|r| r.starts_with(&key) || key.starts_with(r.as_str()));
            if !dup {
                self.err_key(&key, p.message);
            }
        }
        spec
    }

    fn restart(
        &mut self,
        kp: &str,
        item: &Item,
        kspan: Option<Range<usize>>,
        spec: &mut ProcessSpec,
    ) {
        let Some(t) = item.as_table_like() else {
            self.err(kspan, kp, "expected a table ([process.restart])");
            return;
        };
        let r = &mut spec.restart;
        for (key, item) in t.iter() {
            let span = t.get_key_value(key).and_then(|(k, _)| k.span());
            let p = format!("{kp}.{key}");
            if let Some(s) = span.clone() {
                self.spans.insert(p.clone(), s);
            }
            match key {
                "policy" => {
                    if let Some(s) = self.string(item, &p, span.clone()) {
                        match s.parse::<RestartMode>() {
                            Ok(m) => r.policy = m,
                            Err(e) => self.err(span, &p, e),
                        }
                    }
                }
                "initial_interval" => {
                    if let Some(d) = self.duration(item, &p, span) {
                        r.initial_interval = d;
                    }
                }
                "max_interval" => {
                    if let Some(d) = self.duration(item, &p, span) {
                        r.max_interval = d;
                    }
                }
                "min_uptime" => {
                    if let Some(d) = self.duration(item, &p, span) {
                        r.min_uptime = d;
                    }
                }
                "multiplier" => {
                    if let Some(f) = self.float(item, &p, span) {
                        r.multiplier = f;
                    }
                }
                "jitter" => {
                    if let Some(f) = self.float(item, &p, span) {
                        r.jitter = f;
                    }
                }
                "max_retries" => {
                    if let Some(n) = self.int(item, &p, span, 0, u32::MAX as i64) {
                        r.max_retries = n as u32;
                    }
                }
                other => self.unknown(span, other, &format!("{kp}."), RESTART_KEYS),
            }
        }
        // Intervals shorter than the default cap would be silently raised by it.
        if r.max_interval < r.initial_interval && !t.contains_key("max_interval") {
            r.max_interval = r.initial_interval;
        }
    }

    fn probe(&mut self, kp: &str, item: &Item, kspan: Option<Range<usize>>) -> Option<ProbeSpec> {
        let Some(t) = item.as_table_like() else {
            self.err(
                kspan,
                kp,
                "expected a table ([process.readiness] / [process.liveness])",
            );
            return None;
        };
        let before = self.errors.len();
        let mut probe = ProbeSpec::default();
        // The check: exactly one kind key, plus the HTTP options.
        let kinds: Vec<&str> = CHECK_KINDS
            .iter()
            .copied()
            .filter(|k| t.contains_key(k))
            .collect();
        match kinds.as_slice() {
            [kind] => {
                let (k, v) = t.get_key_value(kind).expect("present");
                if let Some(s) = k.span() {
                    self.spans.insert(format!("{kp}.check"), s);
                }
                let path = format!("{kp}.{kind}");
                if let Some(check) = self.check(&path, kind, v.as_value(), k.span(), Some(t)) {
                    probe.check = check;
                }
            }
            [] => self.err(
                kspan.clone(),
                kp,
                format!("no check: give one of {}", CHECK_KINDS.join(", ")),
            ),
            many => self.err(
                kspan.clone(),
                kp,
                format!(
                    "several checks ({}): give exactly one, or combine them with all/any",
                    many.join(", ")
                ),
            ),
        }
        for (key, item) in t.iter() {
            let span = t.get_key_value(key).and_then(|(k, _)| k.span());
            let p = format!("{kp}.{key}");
            if let Some(s) = span.clone() {
                self.spans.insert(p.clone(), s);
            }
            match key {
                k if CHECK_KINDS.contains(&k) => {}
                "status" | "headers" | "body_contains" => {
                    if !t.contains_key("http") {
                        self.err(span, &p, format!("`{key}` applies to http checks only"));
                    }
                }
                "initial_delay" => {
                    if let Some(d) = self.duration(item, &p, span) {
                        probe.initial_delay = d;
                    }
                }
                "interval" => {
                    if let Some(d) = self.duration(item, &p, span) {
                        probe.interval = d;
                    }
                }
                "timeout" => {
                    if let Some(d) = self.duration(item, &p, span) {
                        probe.timeout = d;
                    }
                }
                "success_threshold" => {
                    if let Some(n) = self.int(item, &p, span, 1, 1000) {
                        probe.success_threshold = n as u32;
                    }
                }
                "failure_threshold" => {
                    if let Some(n) = self.int(item, &p, span, 1, 1000) {
                        probe.failure_threshold = n as u32;
                    }
                }
                other => self.unknown(span, other, &format!("{kp}."), PROBE_KEYS),
            }
        }
        (self.errors.len() == before).then_some(probe)
    }

    /// One check of kind `kind` from its value; `opts` holds the HTTP options.
    fn check(
        &mut self,
        path: &str,
        kind: &str,
        v: Option<&Value>,
        span: Option<Range<usize>>,
        opts: Option<&dyn TableLike>,
    ) -> Option<Check> {
        let Some(v) = v else {
            self.err(span, path, "expected a value");
            return None;
        };
        let vspan = v.span().or(span.clone());
        match kind {
            "tcp" => match v.as_str() {
                Some(a) => Some(Check::Tcp {
                    address: a.to_string(),
                }),
                None => {
                    self.err(vspan, path, "expected \"host:port\"");
                    None
                }
            },
            "http" => {
                let Some(url) = v.as_str() else {
                    self.err(vspan, path, "expected a URL string");
                    return None;
                };
                let mut status = None;
                let mut headers = std::collections::BTreeMap::new();
                let mut body_contains = None;
                if let Some(t) = opts {
                    if let Some(s) = t.get("status") {
                        match s.as_integer() {
                            Some(n) if (100..=599).contains(&n) => status = Some(n as u16),
                            _ => self.err(
                                s.span().or(span.clone()),
                                &format!("{path}.status"),
                                "expected an HTTP status between 100 and 599",
                            ),
                        }
                    }
                    if let Some(h) = t.get("headers") {
                        match h.as_table_like() {
                            Some(h) => {
                                for (k, v) in h.iter() {
                                    match v.as_str() {
                                        Some(s) => {
                                            headers.insert(k.to_string(), s.to_string());
                                        }
                                        None => self.err(
                                            span.clone(),
                                            &format!("{path}.headers.{k}"),
                                            "expected a string",
                                        ),
                                    }
                                }
                            }
                            None => self.err(
                                span.clone(),
                                &format!("{path}.headers"),
                                "expected a table of strings",
                            ),
                        }
                    }
                    if let Some(b) = t.get("body_contains") {
                        match b.as_str() {
                            Some(s) => body_contains = Some(s.to_string()),
                            None => self.err(
                                span.clone(),
                                &format!("{path}.body_contains"),
                                "expected a string",
                            ),
                        }
                    }
                }
                Some(Check::Http {
                    url: url.to_string(),
                    status,
                    headers,
                    body_contains,
                })
            }
            "exec" => match v.as_array() {
                Some(a) => {
                    let cmd: Option<Vec<String>> =
                        a.iter().map(|x| x.as_str().map(str::to_string)).collect();
                    match cmd {
                        Some(c) => Some(Check::Exec { command: c }),
                        None => {
                            self.err(
                                vspan,
                                path,
                                "expected an array of strings, like [\"pg_isready\", \"-q\"]",
                            );
                            None
                        }
                    }
                }
                None => {
                    self.err(
                        vspan,
                        path,
                        "expected an array of strings, like [\"pg_isready\", \"-q\"]",
                    );
                    None
                }
            },
            "process" => match v.as_bool() {
                Some(true) => Some(Check::Process),
                _ => {
                    self.err(vspan, path, "write `process = true`");
                    None
                }
            },
            "all" | "any" => {
                let Some(a) = v.as_array() else {
                    self.err(vspan, path, "expected an array of checks, like [{ tcp = \"127.0.0.1:80\" }, { process = true }]");
                    return None;
                };
                let mut checks = Vec::new();
                for (i, c) in a.iter().enumerate() {
                    let cp = format!("{path}[{i}]");
                    let Some(t) = c.as_inline_table() else {
                        self.err(
                            c.span().or(span.clone()),
                            &cp,
                            "expected an inline table with one check",
                        );
                        continue;
                    };
                    let kinds: Vec<&str> = CHECK_KINDS
                        .iter()
                        .copied()
                        .filter(|k| t.contains_key(k))
                        .collect();
                    let [k] = kinds.as_slice() else {
                        self.err(
                            c.span().or(span.clone()),
                            &cp,
                            format!("give exactly one of {}", CHECK_KINDS.join(", ")),
                        );
                        continue;
                    };
                    for key in t.iter().map(|(k, _)| k) {
                        if !PROBE_KEYS[..9].contains(&key) {
                            self.unknown(
                                c.span().or(span.clone()),
                                key,
                                &format!("{cp}."),
                                &PROBE_KEYS[..9],
                            );
                        }
                    }
                    if let Some(check) =
                        self.check(&format!("{cp}.{k}"), k, t.get(k), c.span(), Some(t))
                    {
                        checks.push(check);
                    }
                }
                Some(if kind == "all" {
                    Check::All(checks)
                } else {
                    Check::Any(checks)
                })
            }
            _ => None,
        }
    }

    fn log(&mut self, kp: &str, item: &Item, kspan: Option<Range<usize>>, spec: &mut ProcessSpec) {
        let Some(t) = item.as_table_like() else {
            self.err(kspan, kp, "expected a table ([process.log])");
            return;
        };
        let l = &mut spec.log;
        for (key, item) in t.iter() {
            let span = t.get_key_value(key).and_then(|(k, _)| k.span());
            let p = format!("{kp}.{key}");
            if let Some(s) = span.clone() {
                self.spans.insert(p.clone(), s);
            }
            match key {
                "dir" => {
                    if let Some(s) = self.string(item, &p, span) {
                        l.dir = Some(PathBuf::from(s));
                    }
                }
                "max_size" => {
                    if let Some(n) = self.size(item, &p, span) {
                        l.max_size = n;
                    }
                }
                "keep" => {
                    if let Some(n) = self.int(item, &p, span, 0, 10_000) {
                        l.keep = n as u32;
                    }
                }
                "compress" => {
                    if let Some(b) = self.bool(item, &p, span) {
                        l.compress = b;
                    }
                }
                "max_age" => {
                    if let Some(d) = self.duration(item, &p, span) {
                        l.max_age = Some(d);
                    }
                }
                "tail_bytes" => {
                    if let Some(n) = self.size(item, &p, span) {
                        l.tail_bytes = n as usize;
                    }
                }
                other => self.unknown(span, other, &format!("{kp}."), LOG_KEYS),
            }
        }
    }

    fn value<'i>(
        &mut self,
        item: &'i Item,
        key: &str,
        span: Option<Range<usize>>,
        want: &str,
    ) -> Option<&'i Value> {
        match item.as_value() {
            Some(v) => Some(v),
            None => {
                self.err(
                    span,
                    key,
                    format!("expected {want}, found {}", item.type_name()),
                );
                None
            }
        }
    }

    fn string(&mut self, item: &Item, key: &str, span: Option<Range<usize>>) -> Option<String> {
        let v = self.value(item, key, span.clone(), "a string")?;
        match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.err(
                    v.span().or(span),
                    key,
                    format!("expected a string, found {}", v.type_name()),
                );
                None
            }
        }
    }

    fn bool(&mut self, item: &Item, key: &str, span: Option<Range<usize>>) -> Option<bool> {
        let v = self.value(item, key, span.clone(), "true or false")?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.err(
                    v.span().or(span),
                    key,
                    format!("expected true or false, found {}", v.type_name()),
                );
                None
            }
        }
    }

    fn int(
        &mut self,
        item: &Item,
        key: &str,
        span: Option<Range<usize>>,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let v = self.value(item, key, span.clone(), "an integer")?;
        match v.as_integer() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.err(
                    v.span().or(span),
                    key,
                    format!("{n} is out of range {min}..={max}"),
                );
                None
            }
            None => {
                self.err(
                    v.span().or(span),
                    key,
                    format!("expected an integer, found {}", v.type_name()),
                );
                None
            }
        }
    }

    fn float(&mut self, item: &Item, key: &str, span: Option<Range<usize>>) -> Option<f64> {
        let v = self.value(item, key, span.clone(), "a number")?;
        match (v.as_float(), v.as_integer()) {
            (Some(f), _) => Some(f),
            (None, Some(i)) => Some(i as f64),
            _ => {
                self.err(
                    v.span().or(span),
                    key,
                    format!("expected a number, found {}", v.type_name()),
                );
                None
            }
        }
    }

    fn duration(&mut self, item: &Item, key: &str, span: Option<Range<usize>>) -> Option<Duration> {
        let v = self.value(item, key, span.clone(), "a duration")?;
        let vspan = v.span().or(span);
        match v.as_str() {
            Some(s) => match humantime::parse_duration(s.trim()) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.err(vspan, key, format!("invalid duration {s:?} ({e}); write it like \"5s\", \"250ms\" or \"1m 30s\""));
                    None
                }
            },
            None => {
                self.err(
                    vspan,
                    key,
                    format!(
                        "expected a duration string like \"5s\", found {}",
                        v.type_name()
                    ),
                );
                None
            }
        }
    }

    fn size(&mut self, item: &Item, key: &str, span: Option<Range<usize>>) -> Option<u64> {
        let v = self.value(item, key, span.clone(), "a size")?;
        let vspan = v.span().or(span);
        if let Some(n) = v.as_integer() {
            if n >= 0 {
                return Some(n as u64);
            }
        }
        if let Some(s) = v.as_str() {
            if let Some(n) = parse_size(s) {
                return Some(n);
            }
        }
        self.err(
            vspan,
            key,
            "expected a size in bytes, or a string like \"10MiB\" or \"512K\"",
        );
        None
    }
}

/// "10MiB", "10MB", "512K", "4096": binary multiples (K = 1024).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The known key closest to a misspelt one, if close enough to be a typo.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_user_netns_and_no_new_privs_parse_and_mistakes_are_named() {
        let src = r#"
[[process]]
name = "boxed"
command = "sleep"
user = "root"
netns = "/run/netns/hg-1"
no_new_privs = false
limits = { memory = "64Mi", cpu = "500m", pids = 32 }
"#;
        let f = parse(src, None).unwrap();
        let p = &f.processes[0];
        let l = p.limits.as_ref().unwrap();
        assert_eq!(l.memory_max, Some(64 << 20));
        assert_eq!(l.cpu_max, Some(0.5));
        assert_eq!(l.pids_max, Some(32));
        assert_eq!(p.user.as_ref().map(|u| u.uid), Some(0));
        assert_eq!(
            p.netns.as_deref(),
            Some(std::path::Path::new("/run/netns/hg-1"))
        );
        assert!(!p.no_new_privs);

        let bad = r#"
[[process]]
name = "boxed"
command = "sleep"
user = "no-such-user-here"
limits = { memory = "lots", pid = 3 }
"#;
        let errs = parse(bad, None).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 3, "{text:?}");
        assert!(text.iter().any(|e| e.contains("user")), "{text:?}");
        assert!(text.iter().any(|e| e.contains("limits.memory")), "{text:?}");
        assert!(text.iter().any(|e| e.contains("limits.pid")), "{text:?}");
    }

    #[test]
    fn the_issue_example_parses() {
        let src = r#"
[[process]]
name = "sleeper"
command = "sleep"
args = ["3600"]
instances = 500            # sleeper-1 … sleeper-500

[process.restart]
policy = "always"          # always | on-failure | never
initial_interval = "0s"
"#;
        let f = parse(src, None).unwrap();
        assert_eq!(f.processes.len(), 1);
        let p = &f.processes[0];
        assert_eq!(p.instances, 500);
        assert_eq!(p.restart.policy, RestartMode::Always);
        assert_eq!(p.restart.initial_interval, Duration::ZERO);
        assert_eq!(p.args, ["3600"]);
    }

    #[test]
    fn every_error_is_listed_with_its_line() {
        let src = r#"[[process]]
name = "a"
command = "sleep"
instancs = 2

[process.restart]
initial_interval = "5 parsecs"

[[process]]
name = "a"
command = "true"

[[process]]
name = "b"
args = [1]
"#;
        let errs = parse(src, None).unwrap_err();
        let lines: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            lines,
            vec![
                (4, "process[0].instancs"),
                (7, "process[0].restart.initial_interval"),
                (10, "process[1].name"),
                (13, "process[2].command"),
                (15, "process[2].args[0]"),
            ],
            "{errs:#?}"
        );
        assert!(errs[0].message.contains("did you mean `instances`"));
        assert!(errs[2].message.contains("duplicate process name \"a\""));
        assert!(errs[3].message.contains("missing required key `command`"));
    }

    #[test]
    fn instance_names_collide_with_plain_names() {
        let src = "[[process]]\nname='w'\ncommand='x'\ninstances=2\n[[process]]\nname='w-2'\ncommand='x'\n";
        let errs = parse(src, None).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 6);
    }

    #[test]
    fn semantic_problems_point_at_their_key() {
        let src = "[[process]]\nname='bad name'\ncommand='x'\n[process.restart]\njitter=3\n";
        let errs = parse(src, None).unwrap_err();
        let keys: Vec<_> = errs.iter().map(|e| (e.line, e.key.clone())).collect();
        assert_eq!(
            keys,
            vec![
                (2, "process[0].name".to_string()),
                (5, "process[0].restart.jitter".to_string())
            ]
        );
    }

    #[test]
    fn sizes_durations_signals_and_env() {
        let src = r#"log_dir = "/tmp/x"
[env]
A = "1"
[[process]]
name = "p"
command = "x"
stop_signal = "SIGINT"
stop_timeout = "1m 30s"
env = { B = "2" }
[process.log]
max_size = "10MiB"
max_age = "7days"
compress = true
"#;
        let f = parse(src, None).unwrap();
        let p = &f.processes[0];
        assert_eq!(p.stop_signal.raw(), 2);
        assert_eq!(p.stop_timeout, Duration::from_secs(90));
        assert_eq!(p.log.max_size, 10 << 20);
        assert_eq!(p.log.max_age, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(p.log.dir.as_deref(), Some(std::path::Path::new("/tmp/x")));
        assert_eq!(f.env, ["A=1"]);
        assert_eq!(p.env.get("B").map(String::as_str), Some("2"));
    }

    #[test]
    fn the_issue_3_example_parses() {
        let src = r#"
[[process]]
name = "web"
command = "python3"
args = ["-m", "http.server", "{port.http}", "--bind", "127.0.0.1"]
ports = ["http"]

[process.readiness]
http = "http://127.0.0.1:{port.http}/"   # or tcp = "127.0.0.1:{port.http}", or exec = ["cmd", "arg"]
interval = "1s"

[process.liveness]
http = "http://127.0.0.1:{port.http}/"
interval = "1s"
failure_threshold = 3

[[process]]
name = "client"
command = "sh"
args = ["-c", "echo web is ready; sleep 3600"]
depends_on = { web = "healthy" }            # started | healthy | completed_successfully
"#;
        let f = parse(src, None).unwrap();
        let web = &f.processes[0];
        assert_eq!(web.ports, ["http"]);
        let r = web.readiness.as_ref().unwrap();
        assert_eq!(r.interval, Duration::from_secs(1));
        assert!(
            matches!(&r.check, Check::Http { url, .. } if url == "http://127.0.0.1:{port.http}/")
        );
        assert_eq!(web.liveness.as_ref().unwrap().failure_threshold, 3);
        assert_eq!(
            f.processes[1].depends_on.get("web"),
            Some(&Condition::Healthy)
        );
    }

    #[test]
    fn bad_probes_and_dependencies_are_named() {
        let src = r#"[[process]]
name = "a"
command = "x"
ports = ["http"]
[process.readiness]
htp = "http://x"
[process.liveness]
http = "ftp://127.0.0.1:{port.http}/"
interval = "0s"

[[process]]
name = "b"
command = "x"
depends_on = { a = "ready", ghost = "started" }
[process.readiness]
tcp = "127.0.0.1:{port.nope}"
"#;
        let errs = parse(src, None).unwrap_err();
        let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (5, "process[0].readiness"),
                (6, "process[0].readiness.htp"),
                (8, "process[0].liveness.check"),
                (9, "process[0].liveness.interval"),
                (14, "process[1].depends_on.a"),
                (14, "process[1].depends_on.ghost"),
                (16, "process[1].readiness.check"),
            ],
            "{errs:#?}"
        );
        assert!(errs[1].message.contains("did you mean `http`"));
        assert!(errs[2].message.contains("must start with http://"));
    }

    #[test]
    fn dependency_cycles_and_instances() {
        let src = "[[process]]\nname='a'\ncommand='x'\ndepends_on={b='started'}\n[[process]]\nname='b'\ncommand='x'\ndepends_on={a='healthy'}\n";
        let errs = parse(src, None).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("dependency cycle"), "{errs:?}");
        let src = "[[process]]\nname='w'\ncommand='x'\ninstances=2\n[[process]]\nname='c'\ncommand='x'\ndepends_on={w='started'}\n";
        let f = parse(src, None).unwrap();
        let deps: Vec<&String> = f.processes[1].depends_on.keys().collect();
        assert_eq!(deps, ["w-1", "w-2"]);
    }

    #[test]
    fn broken_toml_and_empty_files() {
        let errs = parse("[[process]\nname=", None).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.starts_with("not valid TOML"));
        assert_eq!(errs[0].line, 1);
        let errs = parse("", None).unwrap_err();
        assert!(errs[0].message.contains("no [[process]] tables"));
    }
}
