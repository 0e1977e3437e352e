//! What to run: [`ProcessSpec`] and its parts, validated before anything starts.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::deps::Condition;
use crate::error::{Error, ErrorKind};
use crate::health::ProbeSpec;

/// The longest process name accepted (names become file names).
pub const MAX_NAME_LEN: usize = 128;

/// Everything the supervisor needs to run one process (or `instances` copies of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessSpec {
    /// Unique name; `[A-Za-z0-9._-]`, at most [`MAX_NAME_LEN`] bytes.
    pub name: String,
    /// The executable: a path, or a bare name looked up in `PATH`.
    pub command: String,
    /// Arguments after the command.
    pub args: Vec<String>,
    /// Environment for this process, over the manager's global env.
    pub env: BTreeMap<String, String>,
    /// Whether the child inherits hangar's own environment (default true).
    pub inherit_env: bool,
    /// Working directory; hangar's own when unset.
    pub working_dir: Option<PathBuf>,
    /// How many copies [`crate::Manager::start_n`] runs: `name-1` … `name-N`.
    pub instances: u32,
    /// What to do when the process exits.
    pub restart: RestartPolicy,
    /// Signal sent to the process group to ask it to stop.
    pub stop_signal: StopSignal,
    /// How long to wait after the stop signal before SIGKILL to the group.
    #[serde(
        serialize_with = "hangar_base::duration::serialize_ms",
        deserialize_with = "hangar_base::duration::deserialize"
    )]
    pub stop_timeout: Duration,
    /// Where stdout and stderr go.
    pub log: LogSpec,
    /// Kill the child when the supervisor dies (PR_SET_PDEATHSIG). Turn off only
    /// when something else will adopt the child after a supervisor crash.
    pub die_with_supervisor: bool,
    /// Named ports allocated from the manager's port registry when the process is
    /// first started and released when it is removed. Each is given to the child as
    /// `HANGAR_PORT_<NAME>` and can be written `{port.NAME}` in args, env values and
    /// probes.
    pub ports: Vec<String>,
    /// Also give the first port as `HEALTH_PORT`.
    pub health_port: bool,
    /// Gates Starting → Running: the process is Running once this probe passes.
    pub readiness: Option<ProbeSpec>,
    /// Restarts the process (through its restart policy) when it fails.
    pub liveness: Option<ProbeSpec>,
    /// With a readiness probe: restart a process not ready after this long.
    #[serde(
        serialize_with = "hangar_base::duration::serialize_ms",
        deserialize_with = "hangar_base::duration::deserialize"
    )]
    pub start_timeout: Duration,
    /// Processes that must meet a condition before this one starts.
    pub depends_on: BTreeMap<String, Condition>,
    /// Resource limits, applied through a cgroup of the process's own (v2 where
    /// the host has it, v1 otherwise). `None` (the default): no cgroup at all.
    /// `Some` with every limit unset: a cgroup for accounting and clean-up only.
    pub limits: Option<Limits>,
    /// Run as this user instead of hangar's own (needs hangar to run as root).
    pub user: Option<RunAs>,
    /// Set `PR_SET_NO_NEW_PRIVS` in the child (default true): neither it nor
    /// anything it runs can gain privileges through set-user-ID binaries or file
    /// capabilities.
    pub no_new_privs: bool,
    /// A network namespace to run in (a path such as `/run/netns/NAME`), joined
    /// before exec.
    pub netns: Option<PathBuf>,
    /// Who gets the stop signal: the whole process group (default) or only
    /// the main process, with SIGKILL for the rest after the grace (systemd's
    /// `KillMode=mixed`).
    pub kill_mode: KillMode,
}

impl Default for ProcessSpec {
    fn default() -> Self {
        ProcessSpec {
            name: String::new(),
            command: String::new(),
            args: Vec::new(),
            env: BTreeMap::new(),
            inherit_env: true,
            working_dir: None,
            instances: 1,
            restart: RestartPolicy::default(),
            stop_signal: StopSignal::default(),
            stop_timeout: Duration::from_secs(10),
            log: LogSpec::default(),
            die_with_supervisor: true,
            ports: Vec::new(),
            health_port: false,
            readiness: None,
            liveness: None,
            start_timeout: Duration::from_secs(60),
            depends_on: BTreeMap::new(),
            limits: None,
            user: None,
            no_new_privs: true,
            netns: None,
            kill_mode: KillMode::Group,
        }
    }
}

impl ProcessSpec {
    /// A spec with defaults for everything but name, command and args.
    pub fn new(name: impl Into<String>, command: impl Into<String>) -> Self {
        ProcessSpec {
            name: name.into(),
            command: command.into(),
            ..ProcessSpec::default()
        }
    }

    /// Builder-style: set the arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Builder-style: set the restart policy.
    pub fn restart(mut self, restart: RestartPolicy) -> Self {
        self.restart = restart;
        self
    }

    /// Every problem with this spec, each naming the field (dotted path) it is about.
    /// Empty when the spec is valid.
    pub fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        let mut p = |field: &str, message: String| {
            out.push(SpecProblem {
                field: field.to_string(),
                message,
            })
        };
        if let Err(m) = validate_name(&self.name) {
            p("name", m);
        }
        if self.command.trim().is_empty() {
            p("command", "command is empty".into());
        } else if self.command.contains('\0') {
            p("command", "command contains a NUL byte".into());
        }
        if self.args.iter().any(|a| a.contains('\0')) {
            p("args", "an argument contains a NUL byte".into());
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                p("env", format!("invalid environment variable {k:?}"));
            }
        }
        if self.instances == 0 {
            p("instances", "instances must be at least 1".into());
        }
        let r = &self.restart;
        if !(r.multiplier.is_finite() && r.multiplier >= 1.0) {
            p(
                "restart.multiplier",
                format!("multiplier must be >= 1, got {}", r.multiplier),
            );
        }
        if !(r.jitter.is_finite() && (0.0..=1.0).contains(&r.jitter)) {
            p(
                "restart.jitter",
                format!("jitter must be between 0 and 1, got {}", r.jitter),
            );
        }
        if r.max_interval < r.initial_interval {
            p(
                "restart.max_interval",
                format!(
                    "max_interval ({:?}) is below initial_interval ({:?})",
                    r.max_interval, r.initial_interval
                ),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for name in &self.ports {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                p(
                    "ports",
                    format!("port name {name:?}: use letters, digits, '_' and '-'"),
                );
            } else if !seen.insert(name.as_str()) {
                p("ports", format!("port {name:?} is listed twice"));
            }
        }
        if self.health_port && self.ports.is_empty() {
            p(
                "health_port",
                "health_port needs at least one entry in ports".into(),
            );
        }
        for (field, probe) in [("readiness", &self.readiness), ("liveness", &self.liveness)] {
            if let Some(probe) = probe {
                for (f, m) in probe.problems() {
                    p(&format!("{field}.{f}"), m);
                }
                for s in probe.check.strings() {
                    if let Err(m) = check_placeholders(s, &self.ports) {
                        p(&format!("{field}.check"), m);
                    }
                }
            }
        }
        for a in &self.args {
            if let Err(m) = check_placeholders(a, &self.ports) {
                p("args", m);
            }
        }
        for (k, v) in &self.env {
            if let Err(m) = check_placeholders(v, &self.ports) {
                p(&format!("env.{k}"), m);
            }
        }
        if self.depends_on.contains_key(&self.name) {
            p("depends_on", "a process cannot depend on itself".into());
        }
        if self.readiness.is_some() && self.start_timeout.is_zero() {
            p(
                "start_timeout",
                "start_timeout must be greater than zero".into(),
            );
        }
        if let Some(l) = &self.limits {
            for (f, m) in l.problems() {
                p(&format!("limits.{f}"), m);
            }
        }
        if let Some(u) = &self.user {
            if u.groups.len() > MAX_GROUPS {
                p(
                    "user.groups",
                    format!("at most {MAX_GROUPS} supplementary groups"),
                );
            }
        }
        if let Some(ns) = &self.netns {
            if !ns.is_absolute() {
                p(
                    "netns",
                    format!("netns {} must be an absolute path", ns.display()),
                );
            } else if ns.as_os_str().as_encoded_bytes().contains(&0) {
                p("netns", "netns contains a NUL byte".into());
            }
        }
        if self.log.max_size != 0 && self.log.max_size < 4096 {
            p(
                "log.max_size",
                "max_size must be 0 (no rotation) or at least 4096 bytes".into(),
            );
        }
        if self.log.keep > 10_000 {
            p(
                "log.keep",
                format!("{} is out of range 0..=10000", self.log.keep),
            );
        }
        out
    }

    /// The processes this spec stands for: itself when `instances` is 1, else
    /// `instances` copies named `name-1` … `name-N`, each with `instances = 1`
    /// and its number in `HANGAR_INSTANCE`. Names, environment and everything
    /// else are otherwise the spec's own; each copy gets its own ports when
    /// started (ports are allocated per process).
    pub fn expand(&self) -> Vec<ProcessSpec> {
        if self.instances <= 1 {
            return vec![self.clone()];
        }
        expanded_names(&self.name, self.instances)
            .into_iter()
            .zip(1..)
            .map(|(name, i): (String, u32)| {
                let mut one = self.clone();
                one.instances = 1;
                one.name = name;
                one.env.insert("HANGAR_INSTANCE".into(), i.to_string());
                one
            })
            .collect()
    }

    /// Validate, turning every problem into one [`ErrorKind::InvalidSpec`] error.
    pub fn validate(&self) -> Result<(), Error> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        let list = problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let mut e = Error::of(ErrorKind::InvalidSpec, list).ctx("name", &self.name);
        let mut fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        fields.dedup();
        for f in fields {
            e = e.ctx("field", f);
        }
        Err(e
            .hint("fix the fields named above; nothing was started")
            .build())
    }
}

/// Most supplementary groups a [`RunAs`] may carry (the kernel's NGROUPS_MAX).
const MAX_GROUPS: usize = 65536;

/// The smallest `memory_max` accepted: below this nothing can even exec.
pub const MIN_MEMORY_MAX: u64 = 1024 * 1024;

/// The smallest `cpu_max` accepted, in cores: the kernel's minimum quota of 1 ms
/// per 100 ms period.
pub const MIN_CPU_MAX: f64 = 0.01;

/// The largest `cpu_max` accepted, in cores (the kernel caps the quota too).
const MAX_CPU_MAX: f64 = 10_000.0;

/// Resource limits of one process (see [`ProcessSpec::limits`]).
///
/// In JSON/TOML, `memory_max` is bytes as a number or a string with a unit
/// (`"512Mi"`, `"1G"`, `"64MiB"`), `cpu_max` is cores as a number or a string
/// (`"1.5"`, `"500m"` for millicores). Serialized back as plain numbers.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most memory the process's cgroup may use, in bytes (swap is not used on
    /// top: the swap limit is set to match where the host has one). Beyond it the
    /// kernel's OOM killer kills a process of the cgroup.
    #[serde(deserialize_with = "de_memory")]
    pub memory_max: Option<u64>,
    /// Most CPU time, in cores (0.5 = half of one CPU), enforced per 100 ms period.
    #[serde(deserialize_with = "de_cpu")]
    pub cpu_max: Option<f64>,
    /// Most tasks (processes and threads) at once; forks beyond it fail (EAGAIN).
    pub pids_max: Option<u64>,
}

impl Limits {
    /// Every problem with these limits, as (field, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(m) = self.memory_max {
            if m < MIN_MEMORY_MAX {
                out.push((
                    "memory_max",
                    format!("memory_max must be at least {MIN_MEMORY_MAX} bytes (1Mi), got {m}"),
                ));
            }
        }
        if let Some(c) = self.cpu_max {
            if !(c.is_finite() && (MIN_CPU_MAX..=MAX_CPU_MAX).contains(&c)) {
                out.push((
                    "cpu_max",
                    format!(
                        "cpu_max must be between {MIN_CPU_MAX} and {MAX_CPU_MAX} cores, got {c}"
                    ),
                ));
            }
        }
        if self.pids_max == Some(0) {
            out.push(("pids_max", "pids_max must be at least 1".into()));
        }
        out
    }

    /// Parse a memory size: bytes (`"1048576"`), or a number with a unit: `k`,
    /// `M`, `G`, `T` (powers of 1000) or `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024),
    /// optionally followed by `B`. Fractions are allowed with a unit (`"1.5Gi"`).
    pub fn parse_memory(s: &str) -> Result<u64, String> {
        let t = s.trim();
        let t = t.strip_suffix('B').unwrap_or(t);
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mult: u64 = match unit.trim() {
            "" => 1,
            "k" | "K" => 1000,
            "Ki" | "KI" => 1 << 10,
            "M" => 1000 * 1000,
            "Mi" => 1 << 20,
            "G" => 1000 * 1000 * 1000,
            "Gi" => 1 << 30,
            "T" => 1000 * 1000 * 1000 * 1000,
            "Ti" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in memory size {s:?}; use k, M, G, T, Ki, Mi, Gi or Ti"
                ))
            }
        };
        let bad = || format!("invalid memory size {s:?}; write e.g. 512Mi, 1G or 1048576");
        if num.is_empty() {
            return Err(bad());
        }
        if let Ok(n) = num.parse::<u64>() {
            return n.checked_mul(mult).ok_or_else(bad);
        }
        let f: f64 = num.parse().map_err(|_| bad())?;
        let bytes = (f * mult as f64).round();
        if mult == 1 || !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(bytes as u64)
    }

    /// Parse a CPU amount: cores (`"2"`, `"0.5"`) or millicores (`"500m"`).
    pub fn parse_cpu(s: &str) -> Result<f64, String> {
        let t = s.trim();
        let bad = || format!("invalid cpu amount {s:?}; write cores (0.5, 2) or millicores (500m)");
        let cores = match t.strip_suffix('m') {
            Some(milli) => milli.trim().parse::<f64>().map_err(|_| bad())? / 1000.0,
            None => t.parse::<f64>().map_err(|_| bad())?,
        };
        if !cores.is_finite() || cores < 0.0 {
            return Err(bad());
        }
        Ok(cores)
    }

    /// The cgroup controllers these limits need.
    pub(crate) fn controllers(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.memory_max.is_some() {
            out.push("memory");
        }
        if self.cpu_max.is_some() {
            out.push("cpu");
        }
        if self.pids_max.is_some() {
            out.push("pids");
        }
        out
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    U(u64),
    F(f64),
    S(String),
}

fn de_memory<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<NumOrStr>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrStr::U(n)) => Ok(Some(n)),
        Some(NumOrStr::F(f)) => Err(serde::de::Error::custom(format!(
            "memory_max {f} is not a whole number of bytes; write e.g. \"512Mi\""
        ))),
        Some(NumOrStr::S(s)) => Limits::parse_memory(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

fn de_cpu<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<NumOrStr>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrStr::U(n)) => Ok(Some(n as f64)),
        Some(NumOrStr::F(f)) => Ok(Some(f)),
        Some(NumOrStr::S(s)) => Limits::parse_cpu(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// The user a process runs as (see [`ProcessSpec::user`]): numeric ids, resolved
/// from a name with [`RunAs::from_name`]. In the child, supplementary groups are
/// set first, then the group, then the user (real, effective and saved ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups; empty drops every supplementary group.
    #[serde(default)]
    pub groups: Vec<u32>,
}

/// Every `{port.NAME}` in `s` must name one of `ports`.
fn check_placeholders(s: &str, ports: &[String]) -> Result<(), String> {
    let mut rest = s;
    while let Some(i) = rest.find("{port.") {
        let after = &rest[i + "{port.".len()..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed placeholder in {s:?}"));
        };
        let name = &after[..end];
        if !ports.iter().any(|p| p == name) {
            let mut m = format!(
                "{{port.{name}}} in {s:?} names no port of this process (ports: [{}])",
                ports.join(", ")
            );
            if let Some(best) =
                hangar_base::suggest::closest(name, ports.iter().map(String::as_str))
            {
                m.push_str(&format!("; did you mean `{{port.{best}}}`?"));
            }
            return Err(m);
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// Replace every `{port.NAME}` by its number.
pub(crate) fn substitute_ports(s: &str, ports: &[(String, u16)]) -> String {
    if !s.contains("{port.") {
        return s.to_string();
    }
    let mut out = s.to_string();
    for (name, port) in ports {
        out = out.replace(&format!("{{port.{name}}}"), &port.to_string());
    }
    out
}

fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name is longer than {MAX_NAME_LEN} bytes"));
    }
    if name.starts_with('.') {
        return Err("name must not start with '.'".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name {name:?} contains {c:?}; use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// One problem found by [`ProcessSpec::problems`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Dotted path of the field, e.g. `restart.multiplier`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// When to restart a process that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// Restart after every exit, clean or not.
    Always,
    /// Restart only after a failure: non-zero exit code or death by signal.
    #[default]
    OnFailure,
    /// Never restart.
    Never,
}

impl std::str::FromStr for RestartMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(RestartMode::Always),
            "on-failure" | "on_failure" => Ok(RestartMode::OnFailure),
            "never" | "no" => Ok(RestartMode::Never),
            other => Err(format!(
                "unknown restart policy {other:?}; expected always, on-failure or never"
            )),
        }
    }
}

impl RestartMode {
    /// The names [`RestartMode`] is written with (`on_failure` and `no` are read too).
    pub const NAMES: &'static [&'static str] = &["always", "on-failure", "never"];

    /// The name as written in a process file: `on-failure`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RestartMode::Always => "always",
            RestartMode::OnFailure => "on-failure",
            RestartMode::Never => "never",
        }
    }
}

/// As written in a process file (`on-failure`), for people.
impl fmt::Display for RestartMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RestartMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::unknown_variant(&s, RestartMode::NAMES))
    }
}

/// Restart policy: when to restart, how long to wait, when to give up.
///
/// The wait before restart `n` (0-based, counting restarts since the last run that
/// stayed up for `min_uptime`) is `min(initial_interval * multiplier^n, max_interval)`,
/// then scaled by a random factor in `1 ± jitter`. After `max_retries` consecutive
/// failed runs have each been retried, the next failure opens the circuit: the
/// process goes to `Failed` with `MAX_ERRORS_EXCEEDED` until started or reset by hand.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartPolicy {
    /// always / on-failure / never.
    pub policy: RestartMode,
    /// Wait before the first restart.
    #[serde(
        serialize_with = "hangar_base::duration::serialize_ms",
        deserialize_with = "hangar_base::duration::deserialize"
    )]
    pub initial_interval: Duration,
    /// Growth factor of the wait per consecutive restart (>= 1).
    pub multiplier: f64,
    /// Cap on the wait.
    #[serde(
        serialize_with = "hangar_base::duration::serialize_ms",
        deserialize_with = "hangar_base::duration::deserialize"
    )]
    pub max_interval: Duration,
    /// Random spread of the wait, as a fraction: 0.1 is ±10 %.
    pub jitter: f64,
    /// A run at least this long resets the backoff and the failure count.
    #[serde(
        serialize_with = "hangar_base::duration::serialize_ms",
        deserialize_with = "hangar_base::duration::deserialize"
    )]
    pub min_uptime: Duration,
    /// Consecutive failures retried before the circuit opens; 0 means retry forever.
    pub max_retries: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            policy: RestartMode::OnFailure,
            initial_interval: Duration::from_secs(1),
            multiplier: 2.0,
            max_interval: Duration::from_secs(30),
            jitter: 0.1,
            min_uptime: Duration::from_secs(10),
            max_retries: 5,
        }
    }
}

/// The names `instances` copies of `name` get (see [`ProcessSpec::expand`]):
/// `name` itself for one, else `name-1` … `name-N`.
pub fn expanded_names(name: &str, instances: u32) -> Vec<String> {
    if instances <= 1 {
        return vec![name.to_string()];
    }
    (1..=instances).map(|i| format!("{name}-{i}")).collect()
}

impl RestartPolicy {
    /// The backoff these settings describe.
    pub fn backoff(&self) -> hangar_base::Backoff {
        hangar_base::Backoff {
            initial: self.initial_interval,
            multiplier: self.multiplier,
            max: self.max_interval,
            jitter: self.jitter,
        }
    }

    /// The wait before restart number `attempt` (0-based), before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        self.backoff().base_delay(attempt)
    }

    /// The wait before restart number `attempt`, with jitter from `unit`, a sample
    /// uniformly distributed in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.backoff().delay(attempt, unit)
    }
}

/// The signal sent to ask a process group to stop (default SIGTERM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StopSignal(i32);

impl StopSignal {
    /// SIGTERM.
    pub const TERM: StopSignal = StopSignal(15);

    /// The raw signal number.
    pub fn raw(self) -> i32 {
        self.0
    }

    pub(crate) fn to_rustix(self) -> rustix::process::Signal {
        rustix::process::Signal::from_named_raw(self.0).unwrap_or(rustix::process::Signal::TERM)
    }

    /// The signal's name without the `SIG` prefix, e.g. `TERM`.
    pub fn name(self) -> &'static str {
        SIGNALS
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(s, _)| *s)
            .unwrap_or("?")
    }
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal::TERM
    }
}

impl StopSignal {
    /// The names a stop signal is written with (also read: without `SIG`, in
    /// any case, or as the number).
    pub const NAMES: &'static [&'static str] = &[
        "SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGWINCH",
    ];
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("TERM", 15),
    ("WINCH", 28),
];

impl std::str::FromStr for StopSignal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bare = s.strip_prefix("SIG").unwrap_or(s);
        if let Some((_, n)) = SIGNALS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(bare))
        {
            return Ok(StopSignal(*n));
        }
        if let Ok(n) = s.parse::<i32>() {
            if SIGNALS.iter().any(|(_, v)| *v == n) {
                return Ok(StopSignal(n));
            }
        }
        let names: Vec<_> = SIGNALS.iter().map(|(n, _)| format!("SIG{n}")).collect();
        Err(format!(
            "unknown stop signal {s:?}; expected one of {}",
            names.join(", ")
        ))
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

impl Serialize for StopSignal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for StopSignal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::unknown_variant(&s, StopSignal::NAMES))
    }
}

/// Who a stop reaches first (`kill_mode`).
///
/// Either way, when the grace ends (or the main process has exited) SIGKILL
/// goes to the whole group and to every descendant that left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KillMode {
    /// The stop signal goes to the whole process group (and to descendants
    /// that left it).
    #[default]
    Group,
    /// The stop signal goes to the main process only; the rest of its tree
    /// gets SIGKILL once the grace expires or the main process has exited
    /// (systemd's `KillMode=mixed`), so a main process can stop its own
    /// children in its own order.
    Mixed,
}

impl KillMode {
    /// The names a kill mode is written with.
    pub const NAMES: &'static [&'static str] = &["group", "mixed"];

    /// Its name in the process file.
    pub fn as_str(self) -> &'static str {
        match self {
            KillMode::Group => "group",
            KillMode::Mixed => "mixed",
        }
    }
}

/// A signal that `Manager::signal` sends to a running process: any standard
/// Linux signal (1 to 31), written `HUP`, `SIGHUP`, `hup` or `1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignalName(i32);

/// Every standard signal by name (without `SIG`), as `kill -l` lists them.
const ALL_SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];

impl SignalName {
    /// Read a signal: a name with or without `SIG` in any case, or its number.
    /// Anything else is `INVALID_SIGNAL`, with examples in the hint.
    pub fn parse(text: &str) -> Result<SignalName, Error> {
        let t = text.trim();
        let upper = t.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        let found = ALL_SIGNALS
            .iter()
            .find(|(n, _)| *n == bare)
            .map(|(_, v)| *v)
            .or_else(|| {
                t.parse::<i32>()
                    .ok()
                    .filter(|n| ALL_SIGNALS.iter().any(|(_, v)| v == n))
            })
            .filter(|n| rustix::process::Signal::from_named_raw(*n).is_some());
        match found {
            Some(n) => Ok(SignalName(n)),
            None => {
                let names: Vec<&str> = ALL_SIGNALS.iter().map(|(n, _)| *n).collect();
                let mut b = Error::of(ErrorKind::InvalidSignal, format!("unknown signal {t:?}"))
                    .ctx("signal", t);
                if let Some(near) = hangar_base::suggest::closest(bare, names.iter().copied()) {
                    b = b.ctx("did_you_mean", format!("SIG{near}"));
                }
                Err(b
                    .hint(
                        "name a signal as HUP, SIGHUP or its number 1 (others: INT, QUIT, \
                     USR1, USR2, TERM, KILL, WINCH, CONT, STOP; up to 31)",
                    )
                    .build())
            }
        }
    }

    /// The raw signal number.
    pub fn raw(self) -> i32 {
        self.0
    }

    /// Its name with `SIG`, e.g. `SIGHUP`.
    pub fn name(self) -> String {
        let n = ALL_SIGNALS
            .iter()
            .find(|(_, v)| *v == self.0)
            .map_or("?", |(n, _)| *n);
        format!("SIG{n}")
    }

    pub(crate) fn to_rustix(self) -> Option<rustix::process::Signal> {
        rustix::process::Signal::from_named_raw(self.0)
    }
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Where a process's stdout and stderr go.
///
/// Output is always drained (a chatty child never blocks on its pipe) and the last
/// `tail_bytes` are kept in memory for status views. With a `dir`, each stream is
/// also written to `{dir}/{name}.stdout.log` / `.stderr.log`, rotated by size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSpec {
    /// Directory for log files; no files when unset.
    pub dir: Option<PathBuf>,
    /// Rotate when a file would grow past this many bytes; 0 disables rotation.
    pub max_size: u64,
    /// Rotated files kept per stream.
    pub keep: u32,
    /// Gzip rotated files.
    pub compress: bool,
    /// Delete rotated files older than this.
    #[serde(
        serialize_with = "hangar_base::duration::serialize_ms",
        deserialize_with = "hangar_base::duration::deserialize"
    )]
    pub max_age: Option<Duration>,
    /// Bytes of recent output kept in memory per process (0: none).
    pub tail_bytes: usize,
}

impl Default for LogSpec {
    fn default() -> Self {
        LogSpec {
            dir: None,
            max_size: 10 * 1024 * 1024,
            keep: 5,
            compress: false,
            max_age: None,
            tail_bytes: 8 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_read_by_name_sig_name_or_number() {
        for (text, raw) in [
            ("HUP", 1),
            ("SIGHUP", 1),
            ("sighup", 1),
            ("1", 1),
            ("usr1", 10),
            ("SIGUSR2", 12),
            ("12", 12),
            (" TERM ", 15),
            ("IOT", 6),
            ("31", 31),
        ] {
            let s = SignalName::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s.raw(), raw, "{text}");
        }
        assert_eq!(
            SignalName::parse("hup").map(|s| s.name()).ok(),
            Some("SIGHUP".into())
        );
        for bad in ["", "0", "32", "64", "-1", "SIGFOO", "SIG", "HUPP", "1.5"] {
            let e = SignalName::parse(bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidSignal, "{bad}");
            assert!(e.context().iter().any(|(k, _)| *k == "signal"), "{bad}");
            assert!(e.hint().is_some_and(|h| h.contains("SIGHUP")), "{bad}");
        }
        let e = SignalName::parse("HUPP").expect_err("HUPP");
        assert!(
            e.context()
                .contains(&("did_you_mean", "SIGHUP".to_string())),
            "{:?}",
            e.context()
        );
    }

    #[test]
    fn kill_mode_defaults_to_group_and_reads_its_names() {
        assert_eq!(ProcessSpec::default().kill_mode, KillMode::Group);
        let spec: ProcessSpec =
            serde_json::from_str(r#"{"name": "a", "command": "true", "kill_mode": "mixed"}"#)
                .expect("mixed");
        assert_eq!(spec.kill_mode, KillMode::Mixed);
        // A spec stored before kill_mode existed reads as group.
        let spec: ProcessSpec =
            serde_json::from_str(r#"{"name": "a", "command": "true"}"#).expect("old spec");
        assert_eq!(spec.kill_mode, KillMode::Group);
        let e = serde_json::from_str::<ProcessSpec>(r#"{"name": "a", "kill_mode": "all"}"#)
            .expect_err("unknown mode");
        assert!(e.to_string().contains("`group` or `mixed`"), "{e}");
        assert_eq!(
            KillMode::NAMES,
            [KillMode::Group.as_str(), KillMode::Mixed.as_str()]
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        let p = RestartPolicy {
            initial_interval: Duration::from_millis(100),
            multiplier: 2.0,
            max_interval: Duration::from_millis(1000),
            jitter: 0.0,
            ..RestartPolicy::default()
        };
        let got: Vec<u128> = (0..6).map(|n| p.base_delay(n).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.base_delay(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = RestartPolicy {
            initial_interval: Duration::from_secs(1),
            jitter: 0.1,
            ..RestartPolicy::default()
        };
        assert_eq!(p.delay(0, 0.0), Duration::from_millis(900));
        assert_eq!(p.delay(0, 0.5), Duration::from_secs(1));
        let hi = p.delay(0, 0.999_999);
        assert!(hi < Duration::from_millis(1100) && hi > Duration::from_millis(1099));
    }

    #[test]
    fn problems_name_every_field() {
        let mut s = ProcessSpec::new("bad name", "");
        s.instances = 0;
        s.restart.multiplier = 0.5;
        s.restart.jitter = 2.0;
        s.restart.max_interval = Duration::ZERO;
        let fields: Vec<String> = s.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "name",
                "command",
                "instances",
                "restart.multiplier",
                "restart.jitter",
                "restart.max_interval"
            ]
        );
        let err = s.validate().unwrap_err();
        assert_eq!(err.code(), "INVALID_SPEC");
    }

    #[test]
    fn port_placeholders_must_name_declared_ports() {
        let mut s = ProcessSpec::new("web", "srv").args(["--port", "{port.http}"]);
        assert_eq!(s.problems()[0].field, "args");
        s.ports = vec!["http".into()];
        assert!(s.problems().is_empty());
        s.env.insert("ADMIN".into(), "{port.admin}".into());
        s.health_port = true;
        let fields: Vec<_> = s.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["env.ADMIN"]);
        assert_eq!(
            substitute_ports("a{port.http}b{port.http}", &[("http".into(), 80)]),
            "a80b80"
        );
    }

    #[test]
    fn limits_parse_units_and_validate() {
        assert_eq!(Limits::parse_memory("512Mi"), Ok(512 << 20));
        assert_eq!(Limits::parse_memory("64MiB"), Ok(64 << 20));
        assert_eq!(Limits::parse_memory("1G"), Ok(1_000_000_000));
        assert_eq!(Limits::parse_memory("1.5Gi"), Ok(3 << 29));
        assert_eq!(Limits::parse_memory("4096"), Ok(4096));
        assert!(Limits::parse_memory("12Q").is_err());
        assert!(Limits::parse_memory("Mi").is_err());
        assert!(Limits::parse_memory("1.5").is_err());
        assert!(Limits::parse_memory("99999999999Ti").is_err());
        assert_eq!(Limits::parse_cpu("500m"), Ok(0.5));
        assert_eq!(Limits::parse_cpu("2"), Ok(2.0));
        assert!(Limits::parse_cpu("-1").is_err());
        assert!(Limits::parse_cpu("lots").is_err());

        let l = Limits {
            memory_max: Some(1000),
            cpu_max: Some(0.001),
            pids_max: Some(0),
        };
        let fields: Vec<_> = l.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["memory_max", "cpu_max", "pids_max"]);
        let mut s = ProcessSpec::new("x", "true");
        s.limits = Some(l);
        s.netns = Some("relative/ns".into());
        let fields: Vec<_> = s.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "limits.memory_max",
                "limits.cpu_max",
                "limits.pids_max",
                "netns"
            ]
        );
    }

    #[test]
    fn expand_names_instances_and_numbers_them() {
        let one = ProcessSpec::new("web", "srv");
        assert_eq!(one.expand(), vec![one.clone()]);
        let mut three = ProcessSpec::new("web", "srv");
        three.instances = 3;
        three.env.insert("MODE".into(), "x".into());
        three.ports = vec!["http".into()];
        let got = three.expand();
        let names: Vec<_> = got.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web-1", "web-2", "web-3"]);
        for (i, s) in got.iter().enumerate() {
            assert_eq!(s.instances, 1);
            assert_eq!(s.env.get("HANGAR_INSTANCE"), Some(&(i + 1).to_string()));
            assert_eq!(s.env.get("MODE").map(String::as_str), Some("x"));
            assert_eq!(s.ports, ["http"]);
            assert_eq!(s.expand(), vec![s.clone()]);
        }
    }

    #[test]
    fn names_and_ports_get_a_did_you_mean() {
        let mut s = ProcessSpec::new("web", "srv").args(["{port.htp}"]);
        s.ports = vec!["http".into(), "admin".into()];
        let p = s.problems();
        assert!(
            p[0].message.contains("did you mean `{port.http}`?"),
            "{p:?}"
        );
        let e = serde_json::from_str::<RestartMode>("\"alwayz\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant `alwayz`"), "{e}");
        assert_eq!(
            serde_json::from_str::<RestartMode>("\"on_failure\"").ok(),
            Some(RestartMode::OnFailure)
        );
        let e = serde_json::from_str::<StopSignal>("\"SIGTREM\"").unwrap_err();
        assert!(e.to_string().contains("`SIGTERM`"), "{e}");
        assert_eq!(
            serde_json::from_str::<StopSignal>("\"int\"").ok(),
            Some(StopSignal(2))
        );
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!("SIGTERM".parse::<StopSignal>(), Ok(StopSignal(15)));
        assert_eq!("int".parse::<StopSignal>(), Ok(StopSignal(2)));
        assert_eq!("9".parse::<StopSignal>(), Ok(StopSignal(9)));
        assert!("SIGFOO".parse::<StopSignal>().is_err());
        assert_eq!(StopSignal(1).to_string(), "SIGHUP");
    }

    #[test]
    fn durations_are_stored_as_milliseconds_and_read_in_either_form() {
        // The daemon stores specs as JSON: durations stay integer milliseconds
        // so that rows written by earlier versions and by this one agree.
        let mut s = ProcessSpec::new("x", "true");
        s.stop_timeout = Duration::from_millis(1500);
        s.log.max_age = Some(Duration::from_secs(60));
        let v = serde_json::to_value(&s).expect("ser");
        assert_eq!(v["stop_timeout"], 1500);
        assert_eq!(v["restart"]["initial_interval"], 1000);
        assert_eq!(v["log"]["max_age"], 60_000);
        assert_eq!(serde_json::from_value::<ProcessSpec>(v).expect("back"), s);
        let r: RestartPolicy =
            serde_json::from_str(r#"{"initial_interval": "250ms", "max_interval": 2000}"#)
                .expect("parse");
        assert_eq!(r.initial_interval, Duration::from_millis(250));
        assert_eq!(r.max_interval, Duration::from_secs(2));
    }
}
