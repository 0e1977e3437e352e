//! GraphQL object types, made from the same wire conversions the gRPC API
//! uses (`crate::convert`), so both show a process, an instance or a feature
//! alike (secret options masked, instance ports, usage).

use async_graphql::{
    InputValueError, InputValueResult, Json, Scalar, ScalarType, SimpleObject, Value,
};

use crate::pb;

/// A 64-bit integer (times in ms since the epoch, ids, byte counts): GraphQL's
/// `Int` is 32-bit. A JSON number, exact up to 2^53; given as a number or a
/// decimal string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Int64(pub i64);

#[Scalar(name = "Int64")]
impl ScalarType for Int64 {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::Number(n) => n
                .as_i64()
                .map(Int64)
                .ok_or_else(|| InputValueError::custom(format!("{n} is not a 64-bit integer"))),
            Value::String(s) => s
                .parse()
                .map(Int64)
                .map_err(|_| InputValueError::custom(format!("{s:?} is not a 64-bit integer"))),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}

impl From<i64> for Int64 {
    fn from(v: i64) -> Int64 {
        Int64(v)
    }
}

impl From<u64> for Int64 {
    fn from(v: u64) -> Int64 {
        Int64(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

/// A named port.
#[derive(SimpleObject, Clone, Debug)]
pub struct Port {
    /// The port's name (`socks`, `http`, …).
    pub name: String,
    /// The TCP or UDP port number.
    pub port: u32,
}

fn ports(m: &std::collections::HashMap<String, u32>) -> Vec<Port> {
    let mut v: Vec<Port> = m
        .iter()
        .map(|(name, port)| Port {
            name: name.clone(),
            port: *port,
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// One key and value of an error's context.
#[derive(SimpleObject, Clone, Debug)]
pub struct ContextEntry {
    /// The key (`process`, `path`, `option`, …).
    pub key: String,
    /// Its value.
    pub value: String,
}

/// A hangar error as data (an instance's failure, a process's last error).
#[derive(SimpleObject, Clone, Debug)]
pub struct ErrorInfo {
    /// The stable code, e.g. `FETCH_NOT_FOUND`.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
    /// Where it happened.
    pub context: Vec<ContextEntry>,
}

impl From<&pb::ErrorInfo> for ErrorInfo {
    fn from(e: &pb::ErrorInfo) -> ErrorInfo {
        ErrorInfo {
            code: e.code.clone(),
            message: e.message.clone(),
            hint: (!e.hint.is_empty()).then(|| e.hint.clone()),
            context: e
                .entries
                .iter()
                .map(|c| ContextEntry {
                    key: c.key.clone(),
                    value: c.value.clone(),
                })
                .collect(),
        }
    }
}

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// A supervised process: what is wanted and what runs.
#[derive(SimpleObject, Clone, Debug)]
pub struct Process {
    /// Unique name.
    pub name: String,
    /// The supervisor's state (`running`, `backoff`, `failed`, …).
    pub state: String,
    /// `running` or `stopped`: what it should be.
    pub desired: String,
    /// Where it comes from: `config`, `api` or `instance`.
    pub source: String,
    /// The program.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// `healthy`, `unhealthy`, `starting` or `unknown`.
    pub health: String,
    /// The running child's pid.
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: Int64,
    /// Failures in a row (the circuit breaker's count).
    pub consecutive_failures: u32,
    /// When the running child started (ms since the epoch).
    pub started_at_ms: Option<Int64>,
    /// When it entered its state (ms since the epoch).
    pub since_ms: Int64,
    /// Its ports (an instance's ports for an instance's process).
    pub ports: Vec<Port>,
    /// How the last child ended.
    pub last_exit: Option<String>,
    /// Why the last start failed.
    pub last_error: Option<ErrorInfo>,
    /// CPU time of the running child and its descendants, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Memory of the running child and its descendants, in bytes.
    pub memory_bytes: Option<Int64>,
    /// Output bytes dropped because the log could not be written.
    pub log_dropped_bytes: Int64,
}

impl From<pb::Process> for Process {
    fn from(p: pb::Process) -> Process {
        Process {
            ports: ports(&p.ports),
            last_error: p.last_error.as_ref().map(ErrorInfo::from),
            last_exit: some(&p.last_exit),
            pid: (p.pid > 0).then_some(p.pid),
            started_at_ms: (p.started_at_ms > 0).then_some(p.started_at_ms.into()),
            name: p.name,
            state: p.state,
            desired: p.desired,
            source: p.source,
            command: p.command,
            args: p.args,
            health: p.health,
            restarts: p.restarts.into(),
            consecutive_failures: p.consecutive_failures,
            since_ms: p.since_ms.into(),
            cpu_seconds: p.cpu_seconds,
            memory_bytes: p.memory_bytes.map(Int64::from),
            log_dropped_bytes: p.log_dropped_bytes.into(),
        }
    }
}

/// An instance's private network.
#[derive(SimpleObject, Clone, Debug)]
pub struct InstanceNetwork {
    /// `linux` (a network namespace) or `routeros`.
    pub backend: String,
    /// The namespace's name.
    pub namespace: String,
    /// The host side's interface.
    pub host_if: String,
    /// The instance side's interface.
    pub instance_if: String,
    /// The host side's address.
    pub host_addr: String,
    /// The instance's address.
    pub instance_addr: String,
    /// The prefix length of both.
    pub prefix_len: u32,
}

/// A feature instance. Secret options read `********`.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Instance {
    /// Stable id (`i-` and 12 hex digits).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The feature's catalog id.
    pub feature: String,
    /// The feature's version.
    pub version: String,
    /// The operation mode, if the feature has modes.
    pub mode: Option<String>,
    /// `queued`, `installing`, `creating`, `starting`, `running`, `degraded`,
    /// `failed`, `stopped`, `error` or `deleting`.
    pub state: String,
    /// `running` or `stopped`: what it should be.
    pub desired: String,
    /// The step under way or that failed (`install`, `ports`, `network`,
    /// `config`, `process`, `ready`).
    pub step: Option<String>,
    /// Why it is in the error state.
    pub error: Option<ErrorInfo>,
    /// Its ports.
    pub ports: Vec<Port>,
    /// The address it binds.
    pub bind: String,
    /// Its private network, when it has one.
    pub network: Option<InstanceNetwork>,
    /// The name of its supervised process.
    pub process: String,
    /// The options given (secret ones masked).
    pub options: Json<serde_json::Value>,
    /// Tenant key.
    pub tenant: Option<String>,
    /// Session key.
    pub session: Option<String>,
    /// `shared`, `per-tenant` or `per-session`.
    pub isolation: String,
    /// The isolation key.
    pub key: String,
    /// Its main config file.
    pub config_file: Option<String>,
    /// Created (ms since the epoch).
    pub created_ms: Int64,
    /// Last changed (ms since the epoch).
    pub updated_ms: Int64,
}

impl From<pb::Instance> for Instance {
    fn from(i: pb::Instance) -> Instance {
        Instance {
            mode: some(&i.mode),
            step: some(&i.step),
            error: i.error.as_ref().map(ErrorInfo::from),
            ports: ports(&i.ports),
            network: i.network.map(|n| InstanceNetwork {
                backend: n.backend,
                namespace: n.namespace,
                host_if: n.host_if,
                instance_if: n.instance_if,
                host_addr: n.host_addr,
                instance_addr: n.instance_addr,
                prefix_len: n.prefix_len,
            }),
            options: Json(serde_json::Value::Object(
                i.options
                    .as_ref()
                    .map(crate::convert::object)
                    .unwrap_or_default(),
            )),
            tenant: some(&i.tenant),
            session: some(&i.session),
            config_file: some(&i.config_file),
            id: i.id,
            name: i.name,
            feature: i.feature,
            version: i.version,
            state: i.state,
            desired: i.desired,
            bind: i.bind,
            process: i.process,
            isolation: i.isolation,
            key: i.key,
            created_ms: i.created_ms.into(),
            updated_ms: i.updated_ms.into(),
        }
    }
}

/// One option a feature's instances may set: enough to build a form.
#[derive(SimpleObject, Clone, Debug)]
pub struct FeatureOption {
    /// The option's name.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean`, `port`, `enum` or `list`.
    #[graphql(name = "type")]
    pub kind: String,
    /// The default, as text (JSON for lists).
    pub default: Option<String>,
    /// What it is for.
    pub description: String,
    /// A password field: its value is never shown back.
    pub secret: bool,
    /// Must be given.
    pub required: bool,
    /// The allowed values of an enum.
    pub enum_values: Vec<String>,
    /// Smallest number allowed.
    pub min: Option<f64>,
    /// Largest number allowed.
    pub max: Option<f64>,
    /// Longest string, or most items of a list.
    pub max_length: Option<Int64>,
    /// A list's item type.
    pub item_type: Option<String>,
}

/// An operation mode of a feature.
#[derive(SimpleObject, Clone, Debug)]
pub struct FeatureMode {
    /// Its id (what `mode` takes).
    pub id: String,
    /// Its display name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Options this mode requires.
    pub required: Vec<String>,
}

/// An installed version of a feature.
#[derive(SimpleObject, Clone, Debug)]
pub struct InstalledFeature {
    /// The feature's catalog id.
    pub id: String,
    /// The version.
    pub version: String,
    /// Where it is unpacked.
    pub dir: String,
    /// The binary's absolute path.
    pub binary: String,
    /// Where it was downloaded from.
    pub url: String,
    /// SHA-256 of the download.
    pub sha256: String,
    /// Its checksum was verified.
    pub verified: bool,
    /// Its signature was verified.
    pub signed: bool,
    /// Bytes downloaded.
    pub bytes: Int64,
    /// When it was installed (seconds since the epoch).
    pub installed_at: Int64,
    /// It is the `current` version.
    pub current: bool,
}

impl From<pb::InstalledFeature> for InstalledFeature {
    fn from(i: pb::InstalledFeature) -> InstalledFeature {
        InstalledFeature {
            id: i.id,
            version: i.version,
            dir: i.dir,
            binary: i.binary,
            url: i.url,
            sha256: i.sha256,
            verified: i.verified,
            signed: i.signed,
            bytes: i.bytes.into(),
            installed_at: i.installed_at.into(),
            current: i.current,
        }
    }
}

/// What this machine would download for a feature's version.
#[derive(SimpleObject, Clone, Debug)]
pub struct ResolvedAsset {
    /// The version.
    pub version: String,
    /// The download URL.
    pub url: String,
    /// The file name.
    pub asset: String,
    /// The binary inside it.
    pub binary: String,
}

/// A feature of the catalog.
#[derive(SimpleObject, Clone, Debug)]
pub struct Feature {
    /// Catalog id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The version installed when none is asked for.
    pub version: String,
    /// What it is.
    pub description: String,
    /// SPDX expression.
    pub license: String,
    /// Its home page.
    pub homepage: Option<String>,
    /// `shared`, `per-tenant` or `per-session`.
    pub isolation: String,
    /// Its default ports, by name.
    pub ports: Vec<Port>,
    /// Protocols it speaks.
    pub protocols: Vec<String>,
    /// Its operation modes.
    pub modes: Vec<FeatureMode>,
    /// The options an instance may set.
    pub options: Vec<FeatureOption>,
    /// Installed versions, oldest first (in `feature`; empty in `catalog`).
    pub installed: Vec<InstalledFeature>,
    /// What would be downloaded here (in `feature` only).
    pub asset: Option<ResolvedAsset>,
    /// Why nothing can be downloaded here (in `feature` only).
    pub asset_error: Option<ErrorInfo>,
}

impl From<pb::Feature> for Feature {
    fn from(f: pb::Feature) -> Feature {
        Feature {
            homepage: some(&f.homepage),
            ports: f
                .port_names
                .iter()
                .zip(&f.default_ports)
                .map(|(n, p)| Port {
                    name: n.clone(),
                    port: *p,
                })
                .collect(),
            modes: f
                .modes
                .into_iter()
                .map(|m| FeatureMode {
                    id: m.id,
                    name: m.name,
                    description: m.description,
                    required: m.required,
                })
                .collect(),
            options: f
                .options
                .into_iter()
                .map(|o| FeatureOption {
                    default: o.has_default.then_some(o.default),
                    item_type: some(&o.item_type),
                    name: o.name,
                    kind: o.r#type,
                    description: o.description,
                    secret: o.secret,
                    required: o.required,
                    enum_values: o.enum_values,
                    min: o.min,
                    max: o.max,
                    max_length: o.max_length.map(Int64::from),
                })
                .collect(),
            installed: f
                .installed
                .into_iter()
                .map(InstalledFeature::from)
                .collect(),
            asset: f.asset.map(|a| ResolvedAsset {
                version: a.version,
                url: a.url,
                asset: a.asset,
                binary: a.binary,
            }),
            asset_error: f.asset_error.as_ref().map(ErrorInfo::from),
            id: f.id,
            name: f.name,
            version: f.version,
            description: f.description,
            license: f.license,
            isolation: f.isolation,
            protocols: f.protocols,
        }
    }
}

/// A stored event.
#[derive(SimpleObject, Clone, Debug)]
pub struct Event {
    /// Its id: increasing, never reused; resume streams after it.
    pub id: Int64,
    /// When it happened (ms since the epoch).
    pub at_ms: Int64,
    /// The process, instance or feature it is about (`hangar` for the
    /// daemon's own).
    pub name: String,
    /// The pid it concerns.
    pub pid: Option<u32>,
    /// `state`, `health`, `instance.state`, `install.progress`, …
    pub kind: String,
    /// The state left.
    pub from: String,
    /// The state entered.
    pub to: String,
    /// What else is known (exit status, progress, error code).
    pub detail: Json<serde_json::Value>,
}

impl Event {
    /// A stored event as GraphQL shows it (not `From`: the `from` field's
    /// getter would shadow it).
    pub fn of(r: &hangar_store::EventRecord) -> Event {
        Event {
            id: r.id.into(),
            at_ms: r.at_ms.into(),
            name: r.name.clone(),
            pid: r.pid,
            kind: r.kind.clone(),
            from: r.from.clone(),
            to: r.to.clone(),
            detail: Json(r.detail.clone()),
        }
    }
}

/// Processes by state.
#[derive(SimpleObject, Clone, Debug)]
pub struct StateCount {
    /// The state.
    pub state: String,
    /// How many processes are in it.
    pub count: u32,
}

/// The daemon itself.
#[derive(SimpleObject, Clone, Debug)]
pub struct DaemonStatus {
    /// hangar's version.
    pub version: String,
    /// Its pid.
    pub pid: u32,
    /// When it started (ms since the epoch).
    pub started_at_ms: Int64,
    /// Its data dir.
    pub data_dir: String,
    /// Its configuration file.
    pub config_file: Option<String>,
    /// The data dir's identity.
    pub supervisor_id: String,
    /// Processes by state.
    pub processes: Vec<StateCount>,
    /// The newest stored event's id.
    pub last_event_id: Int64,
    /// Where the HTTP listener (metrics, GraphQL, the dashboard) listens.
    pub http_addr: Option<String>,
}

/// A process an action could not be carried out on.
#[derive(SimpleObject, Clone, Debug)]
pub struct ProcessError {
    /// The process.
    pub name: String,
    /// Why.
    pub error: ErrorInfo,
}

fn process_errors(errs: Vec<(String, hangar_core::Error)>) -> Vec<ProcessError> {
    errs.into_iter()
        .map(|(name, e)| ProcessError {
            name,
            error: ErrorInfo::from(&crate::convert::error_info(&e)),
        })
        .collect()
}

/// What a start, stop, restart or signal did.
#[derive(SimpleObject, Clone, Debug)]
pub struct ActionReport {
    /// Processes it acted on.
    pub names: Vec<String>,
    /// Processes it failed on, and why.
    pub errors: Vec<ProcessError>,
}

impl From<hangar_core::ActionReport> for ActionReport {
    fn from(r: hangar_core::ActionReport) -> ActionReport {
        ActionReport {
            names: r.names,
            errors: process_errors(r.errors),
        }
    }
}

/// What a reload changed.
#[derive(SimpleObject, Clone, Debug)]
pub struct ReloadReport {
    /// Processes added.
    pub added: Vec<String>,
    /// Processes removed.
    pub removed: Vec<String>,
    /// Processes changed (restarted).
    pub changed: Vec<String>,
    /// Processes left as they were.
    pub unchanged: Vec<String>,
    /// Processes that failed to start or stop, and why.
    pub errors: Vec<ProcessError>,
}

impl From<hangar_core::ReloadReport> for ReloadReport {
    fn from(r: hangar_core::ReloadReport) -> ReloadReport {
        ReloadReport {
            added: r.added,
            removed: r.removed,
            changed: r.changed,
            unchanged: r.unchanged,
            errors: process_errors(r.errors),
        }
    }
}

/// The answer to `installFeature`: the instance, at once (it is queued; its
/// progress streams through `installProgress`).
#[derive(SimpleObject, Clone, Debug)]
pub struct InstallFeatureResult {
    /// The instance's id.
    pub instance_id: String,
    /// An existing instance of the same isolation key was returned.
    pub reused: bool,
    /// The instance as it is now.
    pub instance: Instance,
}

/// One step of an instance's create, as it streams.
#[derive(SimpleObject, Clone, Debug)]
pub struct InstallProgress {
    /// The event this comes from (resume after it).
    pub event_id: Int64,
    /// The instance's id.
    pub instance_id: String,
    /// `queued`, `downloading`, `verifying`, `extracting`, `completed`, then
    /// the instance's states (`creating`, `starting`, `running`) or `error`.
    pub status: String,
    /// The step under way.
    pub step: Option<String>,
    /// Download progress, 0–100, when the size is known.
    pub percent: Option<f64>,
    /// Bytes downloaded so far.
    pub bytes: Option<Int64>,
    /// The download's size, when known.
    pub total: Option<Int64>,
    /// Why it failed (`status` is `error`).
    pub error: Option<ErrorInfo>,
}

/// A line a process wrote.
#[derive(SimpleObject, Clone, Debug)]
pub struct LogLine {
    /// The process.
    pub process: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line, without its newline.
    pub text: String,
    /// Its number in the process's output.
    pub number: Int64,
    /// When hangar read it (ms since the epoch).
    pub at_ms: Int64,
    /// Lines skipped before this one because the reader fell behind (then
    /// `text` is empty).
    pub skipped: Int64,
}

impl From<pb::LogLine> for LogLine {
    fn from(l: pb::LogLine) -> LogLine {
        LogLine {
            process: l.process,
            stream: l.stream,
            text: l.text,
            number: l.number.into(),
            at_ms: l.at_ms.into(),
            skipped: l.skipped.into(),
        }
    }
}
