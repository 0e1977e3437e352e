//! The process file read by `hangar run`: TOML with `[[process]]` tables (also
//! the processes of `hangar serve`'s configuration, see [`crate::config`]).
//!
//! The file is parsed once ([`Document`], toml_edit with spans) and each
//! `[[process]]` table is deserialized by serde into the supervisor's
//! [`ProcessSpec`], whose derive is the one description of the fields. A few
//! things are written differently in the file than in a stored spec; they are
//! rewritten first ([`Rewrite`]): a probe names its check directly
//! (`http = "…"` beside `interval`), limits are `memory` / `cpu` / `pids`,
//! `user` is a name, log sizes may be `"10MiB"`, and durations are text only (a
//! bare number would leave its unit to guess).
//!
//! Serde stops at the first mistake; that mistake's key is taken out and the
//! table read again, so every mistake of a file is listed at once. Then come
//! [`ProcessSpec::problems`] and the file's own checks (required keys, unique
//! names, dependencies and their cycles). Each error has its line and column
//! (the value's for a value serde refused, the key's otherwise), its key path,
//! and a did-you-mean for misspelt keys, values, dependency and port names.
//! Nothing starts until the file is clean.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use hangar_base::suggest::closest;
use hangar_supervisor::{ProcessSpec, RunAs};
use serde::de::{DeserializeOwned, IntoDeserializer};
use toml_edit::{Array, ImDocument, InlineTable, Item, TableLike, Value};

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

const TOP_KEYS: &[&str] = &["process", "env", "log_dir"];
/// A daemon configuration file may also hold `[daemon]` settings.
const DAEMON_TOP_KEYS: &[&str] = &["process", "env", "log_dir", "daemon"];

/// The check kinds a probe (or an entry of `all` / `any`) names directly.
const CHECK_KINDS: &[&str] = &["tcp", "http", "exec", "process", "all", "any"];
/// Options of an `http` check, written beside it.
const HTTP_OPTS: &[&str] = &["status", "headers", "body_contains"];
/// The file's names for the spec's `limits` fields.
const LIMIT_NAMES: &[(&str, &str)] = &[
    ("memory", "memory_max"),
    ("cpu", "cpu_max"),
    ("pids", "pids_max"),
];
/// Durations of a process table, written as text in the file (the stored spec
/// also takes milliseconds).
const DURATIONS: &[&str] = &[
    "stop_timeout",
    "start_timeout",
    "restart.initial_interval",
    "restart.max_interval",
    "restart.min_uptime",
    "log.max_age",
];
/// Durations of a probe table.
const PROBE_DURATIONS: &[&str] = &["initial_delay", "interval", "timeout"];
/// Sizes of a process table: bytes, or text like `"10MiB"`.
const SIZES: &[&str] = &["log.max_size", "log.tail_bytes"];

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
const MAX_INSTANCES: u32 = 100_000;

/// Most mistakes collected from one table before giving up on it.
const MAX_ERRORS: usize = 200;

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
    Document::parse(src)?.processes(default_log_dir, kind)
}

/// Where in the source a key path's error points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// The key (unknown keys, semantic problems).
    Key,
    /// The value (a value serde refused).
    Value,
}

#[derive(Debug, Clone, Default)]
struct Spans {
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
}

/// A TOML file parsed once, with the span of every key path, for every reader of
/// it: the processes here, `[daemon]` in [`crate::config`].
pub struct Document<'s> {
    src: &'s str,
    doc: ImDocument<&'s str>,
    spans: HashMap<String, Spans>,
}

impl<'s> Document<'s> {
    /// Parse TOML; a syntax error is the one error reported.
    pub fn parse(src: &'s str) -> Result<Self, Vec<FileError>> {
        let doc = ImDocument::parse(src).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(src, s.start)).unwrap_or((0, 0));
            vec![FileError {
                line,
                col,
                key: String::new(),
                message: format!("not valid TOML: {}", e.message().trim()),
            }]
        })?;
        let mut spans = HashMap::new();
        index_table(None, doc.as_table(), &mut spans);
        Ok(Document { src, doc, spans })
    }

    /// Deserialize the top-level item `key` (e.g. `daemon`) with serde, reporting
    /// every mistake in it. `None` when the file has no such key.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Vec<FileError>> {
        let Some(item) = self.doc.as_table().get(key) else {
            return Ok(None);
        };
        let Ok(value) = item.clone().into_value() else {
            return Ok(None);
        };
        let (t, errs) = read_all::<T>(value);
        let errs: Vec<FileError> = errs
            .iter()
            .map(|e| self.de_error(key, e, &Renames::default(), &HashMap::new()))
            .collect();
        match t {
            Some(t) if errs.is_empty() => Ok(Some(t)),
            _ => Err(sorted(errs)),
        }
    }

    /// The processes (and `[env]`, `log_dir`) of the file, validated.
    pub fn processes(
        &self,
        default_log_dir: Option<PathBuf>,
        kind: FileKind,
    ) -> Result<ProcessFile, Vec<FileError>> {
        let top_keys = match kind {
            FileKind::ProcessFile => TOP_KEYS,
            FileKind::DaemonConfig => DAEMON_TOP_KEYS,
        };
        let mut errors = Vec::new();
        let root = self.doc.as_table();
        for (key, _) in root.iter() {
            if !top_keys.contains(&key) {
                errors.push(self.at(key, At::Key, unknown_key(key, top_keys.iter().copied())));
            }
        }
        let mut env = Vec::new();
        if let Some(item) = root.get("env") {
            match item.as_table_like() {
                Some(t) => {
                    for (name, v) in t.iter() {
                        match v.as_str() {
                            Some(s) => env.push(format!("{name}={s}")),
                            None => errors.push(self.at(
                                &format!("env.{name}"),
                                At::Key,
                                "expected a string".into(),
                            )),
                        }
                    }
                }
                None => errors.push(self.at("env", At::Key, "expected a table of strings".into())),
            }
        }
        let mut log_dir = default_log_dir;
        if let Some(item) = root.get("log_dir") {
            match item.as_str() {
                Some(s) => log_dir = Some(PathBuf::from(s)),
                None => errors.push(self.at("log_dir", At::Key, "expected a path string".into())),
            }
        }

        let mut processes = Vec::new();
        // (path, name, instances) of every entry with a name, even one with errors.
        let mut names: Vec<(String, String, u32)> = Vec::new();
        match root.get("process") {
            None if kind == FileKind::DaemonConfig => {}
            None => errors.push(FileError {
                line: 1,
                col: 1,
                key: "process".into(),
                message: "no [[process]] tables: the file declares nothing to run".into(),
            }),
            Some(item) => match item.as_array_of_tables() {
                Some(arr) => {
                    for (i, t) in arr.iter().enumerate() {
                        let path = format!("process[{i}]");
                        let table = t.clone().into_inline_table();
                        let (spec, errs) = self.process(&path, table, log_dir.clone());
                        errors.extend(errs);
                        if !spec.name.is_empty() {
                            let n = if (1..=MAX_INSTANCES).contains(&spec.instances) {
                                spec.instances
                            } else {
                                1
                            };
                            names.push((path, spec.name.clone(), n));
                        }
                        processes.push(spec);
                    }
                }
                None => errors.push(self.at(
                    "process",
                    At::Key,
                    "expected [[process]] tables (an array of tables)".into(),
                )),
            },
        }
        self.check_names(&names, &mut processes, &mut errors);
        if errors.is_empty() {
            Ok(ProcessFile { processes, env })
        } else {
            Err(sorted(errors))
        }
    }

    /// One `[[process]]` table: rewritten, deserialized (every mistake), then
    /// its spec's problems. The spec is returned even with errors (a refused key
    /// keeps its default), for the file-level checks.
    fn process(
        &self,
        path: &str,
        table: InlineTable,
        log_dir: Option<PathBuf>,
    ) -> (ProcessSpec, Vec<FileError>) {
        let mut errors = Vec::new();
        for key in ["name", "command"] {
            if !table.contains_key(key) {
                errors.push(self.at_or(
                    &format!("{path}.{key}"),
                    path,
                    At::Value,
                    format!("missing required key `{key}`"),
                ));
            }
        }
        let had_max_interval = table
            .get("restart")
            .and_then(Value::as_inline_table)
            .is_some_and(|r| r.contains_key("max_interval"));
        let mut rw = Rewrite::default();
        let (table, user) = rw.process(table);
        let mut extra = HashMap::new();
        for (spec, file) in &rw.span_aliases {
            if let Some(s) = self.spans.get(&join(path, file)) {
                extra.insert(join(path, spec), s.clone());
            }
        }
        for (p, at, m) in &rw.errors {
            errors.push(self.at(&join(path, p), *at, m.clone()));
        }
        let (spec, de_errors) = read_all::<ProcessSpec>(Value::InlineTable(table));
        for e in &de_errors {
            errors.push(self.de_error(path, e, &rw.renames, &extra));
        }
        let read = spec.is_some();
        let mut spec = spec.unwrap_or_default();
        spec.user = user;
        if spec.log.dir.is_none() {
            spec.log.dir = log_dir;
        }
        // Intervals shorter than the default cap would be silently raised by it.
        let r = &mut spec.restart;
        if r.max_interval < r.initial_interval && !had_max_interval {
            r.max_interval = r.initial_interval;
        }
        if spec.instances > MAX_INSTANCES {
            errors.push(self.at(
                &format!("{path}.instances"),
                At::Value,
                format!("{} is out of range 1..={MAX_INSTANCES}", spec.instances),
            ));
        }
        // Semantic problems, except for keys already reported (a value that was
        // refused leaves a default behind that would be blamed twice).
        let reported: Vec<String> = errors.iter().map(|e| e.key.clone()).collect();
        for p in spec.problems().into_iter().filter(|_| read) {
            let key = join(path, &rw.renames.file_path(&p.field));
            let dup = reported
                .iter()
                .any(|r| r.starts_with(&key) || key.starts_with(r.as_str()));
            if !dup {
                let key_span = extra.get(&key).cloned();
                errors.push(self.at_spans(&key, key_span, At::Key, p.message));
            }
        }
        (spec, errors)
    }

    /// Unique names (once instances are expanded), dependencies that exist (one
    /// on a process with instances means all of them), no cycles.
    fn check_names(
        &self,
        names: &[(String, String, u32)],
        processes: &mut [ProcessSpec],
        errors: &mut Vec<FileError>,
    ) {
        let mut seen: HashMap<String, String> = HashMap::new();
        // Entries are named by their `name`, whatever their `instances`: a
        // dependency on a name means all of one entry's processes, so two
        // entries may not share one even when their expanded names differ
        // (`sleeper` and `sleeper` with `instances = 3`).
        let mut bases: HashMap<&str, &str> = HashMap::new();
        for (path, name, instances) in names {
            if let Some(first) = bases.insert(name, path) {
                let msg = format!(
                    "duplicate process name {name:?} (also the name of {first}); names must be unique"
                );
                errors.push(self.at(&format!("{path}.name"), At::Key, msg));
                continue;
            }
            for n in hangar_supervisor::expanded_names(name, *instances) {
                if let Some(first) = seen.get(&n) {
                    let msg = format!(
                        "duplicate process name {n:?} (also produced by {first}); names must be unique"
                    );
                    errors.push(self.at(&format!("{path}.name"), At::Key, msg));
                    break;
                }
                seen.insert(n, path.clone());
            }
        }

        let expanded: HashMap<&str, Vec<String>> = names
            .iter()
            .map(|(_, name, n)| (name.as_str(), hangar_supervisor::expanded_names(name, *n)))
            .collect();
        for (i, spec) in processes.iter_mut().enumerate() {
            let path = format!("process[{i}]");
            let deps = std::mem::take(&mut spec.depends_on);
            for (dep, cond) in deps {
                match expanded.get(dep.as_str()) {
                    Some(all) => {
                        for d in all {
                            spec.depends_on.insert(d.clone(), cond);
                        }
                    }
                    None => {
                        let mut msg =
                            format!("depends on {dep:?}, which this file does not declare");
                        let others = names
                            .iter()
                            .map(|(_, n, _)| n.as_str())
                            .filter(|n| *n != spec.name);
                        if let Some(best) = closest(&dep, others) {
                            msg.push_str(&format!("; did you mean `{best}`?"));
                        }
                        errors.push(self.at(&format!("{path}.depends_on.{dep}"), At::Key, msg));
                    }
                }
            }
        }
        if !errors.is_empty() {
            return;
        }
        let mut graph: HashMap<&str, Vec<&str>> = HashMap::new();
        for spec in processes.iter() {
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
            errors.push(self.at(
                &format!("{base}.depends_on"),
                At::Key,
                format!("dependency cycle: {}", cycle.join(" -> ")),
            ));
        }
    }

    /// An error at a key path of the file.
    fn at(&self, key: &str, at: At, message: String) -> FileError {
        self.at_spans(key, None, at, message)
    }

    /// An error at `key`, positioned at `fallback` when `key` is not in the file.
    fn at_or(&self, key: &str, fallback: &str, at: At, message: String) -> FileError {
        let spans = self
            .spans
            .get(key)
            .or_else(|| self.spans.get(fallback))
            .cloned();
        self.at_spans(key, spans, at, message)
    }

    /// An error at `key`, with its spans given or looked up (the nearest
    /// enclosing key's when the path itself is not in the file).
    fn at_spans(&self, key: &str, spans: Option<Spans>, at: At, message: String) -> FileError {
        let spans = spans.or_else(|| {
            let mut p = key;
            loop {
                if let Some(s) = self.spans.get(p) {
                    return Some(s.clone());
                }
                p = &p[..parent_end(p)?];
            }
        });
        let span = spans.and_then(|s| match at {
            At::Key => s.key.or(s.value),
            At::Value => s.value.or(s.key),
        });
        let (line, col) = span.map(|s| line_col(self.src, s.start)).unwrap_or((0, 0));
        FileError {
            line,
            col,
            key: key.to_string(),
            message,
        }
    }

    /// A serde error under `base`, its spec path turned back into the file's.
    fn de_error(
        &self,
        base: &str,
        e: &DeError,
        renames: &Renames,
        extra: &HashMap<String, Spans>,
    ) -> FileError {
        let file = renames.file_path(&e.path);
        if let Some((key, expected)) = &e.unknown_field {
            let known: Vec<&str> = expected.iter().flat_map(|f| file_names(f)).collect();
            return self.at(&join(base, &file), At::Key, unknown_key(key, known));
        }
        let path = join(base, &file);
        let mut message = plain_message(&e.message);
        if let Some((value, allowed)) = &e.unknown_variant {
            message = format!(
                "unknown value {value:?}; expected one of {}",
                allowed.join(", ")
            );
            if let Some(best) = closest(value, allowed.iter().map(String::as_str)) {
                message.push_str(&format!("; did you mean `{best}`?"));
            }
        }
        self.at_spans(&path, extra.get(&path).cloned(), At::Value, message)
    }
}

fn sorted(mut errors: Vec<FileError>) -> Vec<FileError> {
    errors.sort_by_key(|e| (e.line, e.col));
    errors
}

/// `base` and a relative path (`x`, `x.y`, `[0].x`, or empty).
fn join(base: &str, rel: &str) -> String {
    if rel.is_empty() {
        base.to_string()
    } else if base.is_empty() {
        rel.to_string()
    } else if rel.starts_with('[') {
        format!("{base}{rel}")
    } else {
        format!("{base}.{rel}")
    }
}

/// Where the last segment of a key path starts (`a.b` → 1, `a[0]` → 1).
fn parent_end(p: &str) -> Option<usize> {
    p.rfind(['.', '['])
}

/// The message for an unknown key, with a did-you-mean among `known`.
fn unknown_key<'k>(key: &str, known: impl IntoIterator<Item = &'k str> + Clone) -> String {
    let mut msg = format!("unknown key `{key}`");
    match closest(key, known.clone()) {
        Some(best) => msg.push_str(&format!("; did you mean `{best}`?")),
        None => msg.push_str(&format!(
            "; known keys: {}",
            known.into_iter().collect::<Vec<_>>().join(", ")
        )),
    }
    msg
}

/// The file's names for a field of the spec (most are the same).
fn file_names(field: &str) -> Vec<&str> {
    if field == "check" {
        return CHECK_KINDS.iter().chain(HTTP_OPTS).copied().collect();
    }
    match LIMIT_NAMES.iter().find(|(_, spec)| *spec == field) {
        Some((file, _)) => vec![file],
        None => vec![field],
    }
}

/// Serde's messages speak of Rust types; a file speaks of tables and arrays.
fn plain_message(m: &str) -> String {
    let m = m.trim();
    for (rust, toml) in [
        ("expected struct ", "expected a table"),
        ("expected a map", "expected a table"),
        ("expected a sequence", "expected an array"),
    ] {
        if let Some(i) = m.find(rust) {
            return format!("{}{toml}", &m[..i]);
        }
    }
    m.to_string()
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

/// Record the spans of every key path under a table.
fn index_table(path: Option<&str>, t: &dyn TableLike, out: &mut HashMap<String, Spans>) {
    for (k, item) in t.iter() {
        let p = match path {
            Some(base) => format!("{base}.{k}"),
            None => k.to_string(),
        };
        let key = t.get_key_value(k).and_then(|(k, _)| k.span());
        out.insert(
            p.clone(),
            Spans {
                key,
                value: item.span(),
            },
        );
        index_item(&p, item, out);
    }
}

fn index_item(path: &str, item: &Item, out: &mut HashMap<String, Spans>) {
    match item {
        Item::Table(t) => index_table(Some(path), t, out),
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                out.insert(
                    p.clone(),
                    Spans {
                        key: None,
                        value: t.span(),
                    },
                );
                index_table(Some(&p), t, out);
            }
        }
        Item::Value(v) => index_value(path, v, out),
        Item::None => {}
    }
}

fn index_value(path: &str, v: &Value, out: &mut HashMap<String, Spans>) {
    match v {
        Value::InlineTable(t) => index_table(Some(path), t, out),
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                out.insert(
                    p.clone(),
                    Spans {
                        key: None,
                        value: v.span(),
                    },
                );
                index_value(&p, v, out);
            }
        }
        _ => {}
    }
}

/// One serde error: the path of the field (the spec's spelling), the message,
/// and what it says of an unknown field or value.
#[derive(Debug)]
struct DeError {
    path: String,
    message: String,
    /// An unknown field: its name and the fields expected there.
    unknown_field: Option<(String, Vec<String>)>,
    /// An unknown value: the value and the values allowed.
    unknown_variant: Option<(String, Vec<String>)>,
}

/// The names between backticks in a serde message.
fn ticked(m: &str) -> Vec<String> {
    m.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Deserialize `value` as a `T`, taking out each refused key and reading again
/// until it passes: every mistake is found, not just the first. `None` when a
/// mistake could not be taken out.
fn read_all<T: DeserializeOwned>(mut value: Value) -> (Option<T>, Vec<DeError>) {
    let mut errors = Vec::new();
    while errors.len() < MAX_ERRORS {
        let e = match serde_path_to_error::deserialize::<_, T>(value.clone().into_deserializer()) {
            Ok(t) => return (Some(t), errors),
            Err(e) => e,
        };
        let mut segs: Vec<Seg> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                _ => None,
            })
            .collect();
        let message = e.inner().message().to_string();
        let mut err = DeError {
            path: render(&segs),
            message: message.clone(),
            unknown_field: None,
            unknown_variant: None,
        };
        if message.starts_with("unknown field `") {
            let mut names = ticked(&message).into_iter();
            if let Some(key) = names.next() {
                // The path names the unknown key itself, or its table.
                if !matches!(segs.last(), Some(Seg::Key(k)) if *k == key) {
                    segs.push(Seg::Key(key.clone()));
                    err.path = render(&segs);
                }
                err.unknown_field = Some((key, names.collect()));
            }
        } else if message.starts_with("unknown variant `") {
            let mut names = ticked(&message).into_iter();
            if let Some(v) = names.next() {
                err.unknown_variant = Some((v, names.collect()));
            }
        }
        errors.push(err);
        if !remove(&mut value, &segs) {
            return (None, errors);
        }
    }
    (None, errors)
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render(segs: &[Seg]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Take the item at `segs` out of `value`; false when there is none.
fn remove(value: &mut Value, segs: &[Seg]) -> bool {
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut v = value;
    for s in parents {
        let next = match (s, v) {
            (Seg::Key(k), Value::InlineTable(t)) => t.get_mut(k),
            (Seg::Index(i), Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => v = n,
            None => return false,
        }
    }
    match (last, v) {
        (Seg::Key(k), Value::InlineTable(t)) => t.remove(k).is_some(),
        (Seg::Index(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// Spec paths made by a rewrite, each with the file path it came from.
#[derive(Debug, Default)]
struct Renames(Vec<(String, String)>);

impl Renames {
    /// The file's spelling of a spec path: the longest renamed prefix replaced.
    fn file_path(&self, spec: &str) -> String {
        let best = self
            .0
            .iter()
            .filter(|(s, _)| {
                spec == s
                    || spec
                        .strip_prefix(s.as_str())
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
            .max_by_key(|(s, _)| s.len());
        match best {
            Some((s, f)) => format!("{f}{}", &spec[s.len()..]),
            None => spec.to_string(),
        }
    }
}

/// The file's spellings turned into the spec's, before serde reads a process
/// table. Errors found on the way are the file's, at file paths.
#[derive(Default)]
struct Rewrite {
    errors: Vec<(String, At, String)>,
    renames: Renames,
    /// Spec paths whose key is another path's key (`readiness.check` is the
    /// `http` key that names it).
    span_aliases: Vec<(String, String)>,
}

impl Rewrite {
    fn err(&mut self, path: impl Into<String>, at: At, message: impl Into<String>) {
        self.errors.push((path.into(), at, message.into()));
    }

    fn rename(&mut self, spec: impl Into<String>, file: impl Into<String>) {
        self.renames.0.push((spec.into(), file.into()));
    }

    /// A process table; `user` is resolved here and handed back apart.
    fn process(&mut self, mut t: InlineTable) -> (InlineTable, Option<RunAs>) {
        let user = t.remove("user").and_then(|v| match v.as_str() {
            Some(name) => match RunAs::from_name(name) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.err("user", At::Key, e.message());
                    None
                }
            },
            None => {
                let found = v.type_name();
                self.err(
                    "user",
                    At::Value,
                    format!("expected a user name or uid string, found {found}"),
                );
                None
            }
        });
        for path in DURATIONS {
            self.duration(&mut t, path);
        }
        for path in SIZES {
            self.size(&mut t, path);
        }
        if let Some(Value::InlineTable(l)) = t.get_mut("limits") {
            self.limits(l);
        }
        for probe in ["readiness", "liveness"] {
            match t.get_mut(probe) {
                None => {}
                Some(Value::InlineTable(p)) => self.probe(probe, p),
                Some(_) => {
                    t.remove(probe);
                    self.err(
                        probe,
                        At::Key,
                        "expected a table ([process.readiness] / [process.liveness])",
                    );
                }
            }
        }
        (t, user)
    }

    /// The value at a dotted path of `t`, if every table on the way is there.
    fn slot<'t>(t: &'t mut InlineTable, path: &str) -> Option<(&'t mut InlineTable, String)> {
        let mut parts: Vec<&str> = path.split('.').collect();
        let last = parts.pop()?.to_string();
        let mut t = t;
        for p in parts {
            t = t.get_mut(p)?.as_inline_table_mut()?;
        }
        t.contains_key(&last).then_some((t, last))
    }

    /// A duration must be text the file can read (`"5s"`).
    fn duration(&mut self, t: &mut InlineTable, path: &str) {
        if let Some((table, key)) = Self::slot(t, path) {
            self.duration_at(table, &key, path);
        }
    }

    /// [`Rewrite::duration`] of `table.key`, reported at `path`.
    fn duration_at(&mut self, table: &mut InlineTable, key: &str, path: &str) {
        let problem = match table.get(key) {
            Some(Value::String(s)) => match humantime::parse_duration(s.value().trim()) {
                Ok(_) => return,
                Err(e) => format!(
                    "invalid duration {:?} ({e}); write it like \"5s\", \"250ms\" or \"1m 30s\"",
                    s.value()
                ),
            },
            Some(v) => format!(
                "expected a duration string like \"5s\", found {}",
                v.type_name()
            ),
            None => return,
        };
        table.remove(key);
        self.err(path, At::Value, problem);
    }

    /// A size is bytes, or text like `"10MiB"`; the spec takes bytes.
    fn size(&mut self, t: &mut InlineTable, path: &str) {
        let Some((table, key)) = Self::slot(t, path) else {
            return;
        };
        let bytes = match table.get(&key) {
            Some(Value::Integer(n)) if *n.value() >= 0 => return,
            Some(Value::String(s)) => parse_size(s.value()).and_then(|n| i64::try_from(n).ok()),
            _ => None,
        };
        match bytes {
            Some(n) => {
                table.insert(&key, Value::from(n));
            }
            None => {
                table.remove(&key);
                self.err(
                    path,
                    At::Value,
                    "expected a size in bytes, or a string like \"10MiB\" or \"512K\"",
                );
            }
        }
    }

    /// `memory`, `cpu`, `pids` are the spec's `memory_max`, `cpu_max`, `pids_max`.
    fn limits(&mut self, l: &mut InlineTable) {
        let old = std::mem::take(l);
        for (k, mut v) in old {
            let k = k.as_str();
            if let Some((file, spec)) = LIMIT_NAMES.iter().find(|(f, _)| *f == k) {
                if *file == "pids" {
                    // A whole number of processes may be written as text.
                    if let Some(n) = v.as_str().and_then(|s| s.trim().parse::<i64>().ok()) {
                        v = Value::from(n);
                    }
                }
                self.rename(format!("limits.{spec}"), format!("limits.{file}"));
                l.insert(*spec, v);
            } else if LIMIT_NAMES.iter().any(|(_, s)| *s == k) {
                let files = LIMIT_NAMES.iter().map(|(f, _)| *f);
                self.err(format!("limits.{k}"), At::Key, unknown_key(k, files));
            } else {
                l.insert(k, v);
            }
        }
    }

    /// A probe names its check directly; the spec has it under `check`.
    fn probe(&mut self, path: &str, p: &mut InlineTable) {
        if p.remove("check").is_some() {
            self.err(
                format!("{path}.check"),
                At::Key,
                format!(
                    "unknown key `check`; name the check itself: one of {}",
                    CHECK_KINDS.join(", ")
                ),
            );
        }
        for d in PROBE_DURATIONS {
            self.duration_at(p, d, &format!("{path}.{d}"));
        }
        let kinds: Vec<&str> = CHECK_KINDS
            .iter()
            .copied()
            .filter(|k| p.contains_key(k))
            .collect();
        let http = kinds == ["http"];
        for opt in HTTP_OPTS {
            if p.contains_key(opt) && !http && kinds.len() <= 1 {
                p.remove(opt);
                self.err(
                    format!("{path}.{opt}"),
                    At::Key,
                    format!("`{opt}` applies to http checks only"),
                );
            }
        }
        let check = match kinds.as_slice() {
            [kind] => {
                let opts: Vec<(String, Value)> = if http {
                    HTTP_OPTS
                        .iter()
                        .filter_map(|o| p.remove(o).map(|v| (o.to_string(), v)))
                        .collect()
                } else {
                    Vec::new()
                };
                let v = p.remove(kind);
                self.span_aliases
                    .push((format!("{path}.check"), format!("{path}.{kind}")));
                v.and_then(|v| self.check(&format!("{path}.check"), path, kind, v, opts))
            }
            [] => {
                self.err(
                    path,
                    At::Key,
                    format!("no check: give one of {}", CHECK_KINDS.join(", ")),
                );
                None
            }
            many => {
                self.err(
                    path,
                    At::Key,
                    format!(
                        "several checks ({}): give exactly one, or combine them with all/any",
                        many.join(", ")
                    ),
                );
                for k in many {
                    p.remove(k);
                }
                for o in HTTP_OPTS {
                    p.remove(o);
                }
                None
            }
        };
        // A check that was refused leaves a placeholder, so that the rest of
        // the probe is still read (its own mistakes are listed too).
        p.insert("check", check.unwrap_or_else(|| Value::from("process")));
    }

    /// One check of kind `kind` written `file.kind = v` (with `opts` for http),
    /// as the spec's `{ kind = … }` at `spec`.
    fn check(
        &mut self,
        spec: &str,
        file: &str,
        kind: &str,
        v: Value,
        opts: Vec<(String, Value)>,
    ) -> Option<Value> {
        let fk = format!("{file}.{kind}");
        let sk = format!("{spec}.{kind}");
        let mut inner = InlineTable::new();
        match kind {
            "tcp" => {
                if !v.is_str() {
                    self.err(fk, At::Value, "expected \"host:port\"");
                    return None;
                }
                inner.insert("address", v);
                self.rename(format!("{sk}.address"), fk);
            }
            "http" => {
                if !v.is_str() {
                    self.err(fk, At::Value, "expected a URL string");
                    return None;
                }
                inner.insert("url", v);
                self.rename(format!("{sk}.url"), fk);
                for (o, ov) in opts {
                    self.rename(format!("{sk}.{o}"), format!("{file}.{o}"));
                    inner.insert(&o, ov);
                }
                if !inner.contains_key("headers") {
                    inner.insert("headers", Value::InlineTable(InlineTable::new()));
                }
            }
            "exec" => {
                inner.insert("command", v);
                self.rename(format!("{sk}.command"), fk);
            }
            "process" => {
                if v.as_bool() != Some(true) {
                    self.err(fk, At::Value, "write `process = true`");
                    return None;
                }
                return Some(Value::from("process"));
            }
            _ => {
                // all / any: an array of inline tables with one check each.
                let Value::Array(a) = v else {
                    self.err(
                        fk,
                        At::Value,
                        "expected an array of checks, like [{ tcp = \"127.0.0.1:80\" }, { process = true }]",
                    );
                    return None;
                };
                let mut checks = Array::new();
                for (i, c) in a.into_iter().enumerate() {
                    let cf = format!("{fk}[{i}]");
                    let cs = format!("{sk}[{}]", checks.len());
                    let Value::InlineTable(mut t) = c else {
                        self.err(cf, At::Value, "expected an inline table with one check");
                        continue;
                    };
                    let kinds: Vec<&str> = CHECK_KINDS
                        .iter()
                        .copied()
                        .filter(|k| t.contains_key(k))
                        .collect();
                    let [k] = kinds.as_slice() else {
                        self.err(
                            cf,
                            At::Value,
                            format!("give exactly one of {}", CHECK_KINDS.join(", ")),
                        );
                        continue;
                    };
                    let known = || CHECK_KINDS.iter().chain(HTTP_OPTS).copied();
                    let keys: Vec<String> = t.iter().map(|(k, _)| k.to_string()).collect();
                    let mut bad = false;
                    for key in keys {
                        if !known().any(|k| k == key) {
                            self.err(format!("{cf}.{key}"), At::Key, unknown_key(&key, known()));
                            bad = true;
                        }
                    }
                    if bad {
                        continue;
                    }
                    let opts: Vec<(String, Value)> = HTTP_OPTS
                        .iter()
                        .filter_map(|o| t.remove(o).map(|v| (o.to_string(), v)))
                        .collect();
                    let Some(v) = t.remove(k) else { continue };
                    if let Some(c) = self.check(&cs, &cf, k, v, opts) {
                        checks.push(c);
                    }
                }
                let mut out = InlineTable::new();
                out.insert(kind, Value::Array(checks));
                self.rename(sk, fk);
                return Some(Value::InlineTable(out));
            }
        }
        let mut out = InlineTable::new();
        out.insert(kind, Value::InlineTable(inner));
        Some(Value::InlineTable(out))
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

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_supervisor::{Check, Condition, RestartMode};
    use std::time::Duration;

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
    fn thresholds_and_log_keep_have_upper_bounds() {
        let src = "[[process]]\nname='a'\ncommand='x'\n[process.log]\nkeep=10001\n\
                   [process.liveness]\ntcp='127.0.0.1:1'\nfailure_threshold=1001\n";
        let errs = parse(src, None).unwrap_err();
        let keys: Vec<_> = errs.iter().map(|e| (e.line, e.key.clone())).collect();
        assert_eq!(
            keys,
            vec![
                (5, "process[0].log.keep".to_string()),
                (8, "process[0].liveness.failure_threshold".to_string())
            ],
            "{errs:?}"
        );
        assert!(
            errs.iter().all(|e| e.message.contains("out of range")),
            "{errs:?}"
        );
    }

    #[test]
    fn the_brief_example_parses() {
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

    /// Found by the fuzz target `procfile`: an entry named `w` and one named `w`
    /// with `instances = 3` were accepted (their expanded names differ), and a
    /// dependency on `w` meant only the last entry's processes.
    #[test]
    fn a_name_with_and_without_instances_is_a_duplicate() {
        let src = "[[process]]\nname='w'\ncommand='x'\n[[process]]\nname='w'\ncommand='x'\ninstances=3\n[[process]]\nname='d'\ncommand='x'\ndepends_on={w='started'}\n";
        let errs = parse(src, None).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!((errs[0].line, errs[0].key.as_str()), (5, "process[1].name"));
        assert!(
            errs[0].message.contains("duplicate process name \"w\""),
            "{errs:#?}"
        );
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
    fn the_probe_example_parses() {
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
    fn values_dependencies_and_ports_get_a_did_you_mean() {
        let src = r#"[[process]]
name = "web"
command = "srv"
ports = ["http"]
stop_signal = "SIGTREM"
args = ["{port.htp}"]
[process.restart]
policy = "alwayz"
[process.log]
max_size = "lots"

[[process]]
name = "client"
command = "x"
depends_on = { wbe = "healthy", web = "helthy" }
"#;
        let errs = parse(src, None).unwrap_err();
        let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (5, "process[0].stop_signal"),
                (6, "process[0].args"),
                (8, "process[0].restart.policy"),
                (10, "process[0].log.max_size"),
                (15, "process[1].depends_on.wbe"),
                (15, "process[1].depends_on.web"),
            ],
            "{errs:#?}"
        );
        assert!(
            errs[0].message.contains("did you mean `SIGTERM`?"),
            "{errs:#?}"
        );
        assert!(
            errs[1].message.contains("did you mean `{port.http}`?"),
            "{errs:#?}"
        );
        assert!(
            errs[2].message.contains("did you mean `always`?"),
            "{errs:#?}"
        );
        assert!(errs[3].message.contains("\"10MiB\""), "{errs:#?}");
        assert!(errs[4].message.contains("did you mean `web`?"), "{errs:#?}");
        assert!(
            errs[5].message.contains("did you mean `healthy`?"),
            "{errs:#?}"
        );
    }

    #[test]
    fn the_file_keeps_its_own_spellings() {
        // Durations are text only; the stored spec's spellings are not the file's.
        let src = r#"[[process]]
name = "a"
command = "x"
stop_timeout = 5
limits = { memory_max = "64Mi", pids = "8" }
[process.readiness]
check = "process"
"#;
        let errs = parse(src, None).unwrap_err();
        let got: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            got,
            [
                "process[0].stop_timeout",
                "process[0].limits.memory_max",
                "process[0].readiness",
                "process[0].readiness.check",
            ],
            "{errs:#?}"
        );
        assert!(
            errs[0].message.contains("expected a duration string"),
            "{errs:#?}"
        );
        assert!(
            errs[1].message.contains("known keys: memory, cpu, pids"),
            "{errs:#?}"
        );
        let ok = "[[process]]\nname='a'\ncommand='x'\nlimits={pids='8'}\n[process.liveness]\nall=[{tcp='127.0.0.1:1'},{http='http://x/',status=204},{process=true}]\n";
        let f = parse(ok, None).unwrap();
        let p = &f.processes[0];
        assert_eq!(p.limits.and_then(|l| l.pids_max), Some(8));
        let Some(Check::All(checks)) = p.liveness.as_ref().map(|l| &l.check) else {
            panic!("{p:?}");
        };
        assert!(matches!(
            &checks[1],
            Check::Http {
                status: Some(204),
                ..
            }
        ));
        assert_eq!(checks[2], Check::Process);
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
