//! Between the service layer's types and hangar.v1 messages, and between
//! [`hangar_core::Error`] and gRPC statuses.
//!
//! An error travels as a status whose code is the nearest gRPC code and whose
//! metadata keeps hangar's own: `hangar-code` (ASCII), `hangar-hint-bin` and
//! `hangar-context-bin` (UTF-8; context as a JSON array of `[key, value]`).

use std::time::UNIX_EPOCH;

use hangar_core::{Error, ProcessView};
use hangar_store::EventRecord;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::pb;

fn grpc_code(code: &str) -> Code {
    match code {
        "PROCESS_NOT_FOUND" => Code::NotFound,
        "DUPLICATE_NAME" => Code::AlreadyExists,
        "CONFIG_INVALID" | "INVALID_SPEC" | "INVALID_PATTERN" | "DEPENDENCY_CYCLE" => {
            Code::InvalidArgument
        }
        "PROCESS_FROM_CONFIG" | "SHUTTING_DOWN" | "CONFIG_UNREADABLE" => Code::FailedPrecondition,
        "UNAUTHENTICATED" => Code::Unauthenticated,
        _ => Code::Internal,
    }
}

/// A service-layer error as a gRPC status.
pub fn status(e: Error) -> Status {
    let mut st = Status::new(grpc_code(e.code), e.message.clone());
    let md = st.metadata_mut();
    if let Ok(v) = MetadataValue::try_from(e.code) {
        md.insert("hangar-code", v);
    }
    if let Some(h) = &e.hint {
        md.insert_bin("hangar-hint-bin", MetadataValue::from_bytes(h.as_bytes()));
    }
    if !e.context.is_empty() {
        if let Ok(json) = serde_json::to_vec(&e.context) {
            md.insert_bin("hangar-context-bin", MetadataValue::from_bytes(&json));
        }
    }
    st
}

/// A gRPC status back into a service-layer error (the client side).
pub fn error(st: &Status) -> Error {
    let md: &MetadataMap = st.metadata();
    let code: &'static str = match md.get("hangar-code").and_then(|v| v.to_str().ok()) {
        Some(c) => known_code(c),
        None => match st.code() {
            Code::Unavailable => "DAEMON_UNAVAILABLE",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::NotFound => "NOT_FOUND",
            Code::Unimplemented => "UNSUPPORTED",
            Code::DeadlineExceeded => "TIMEOUT",
            _ => "API_ERROR",
        },
    };
    let mut e = Error::new(code, st.message());
    if let Some(h) = md
        .get_bin("hangar-hint-bin")
        .and_then(|v| v.to_bytes().ok())
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
    {
        e = e.hint(h);
    }
    if let Some(ctx) = md
        .get_bin("hangar-context-bin")
        .and_then(|v| v.to_bytes().ok())
        .and_then(|b| serde_json::from_slice::<Vec<(String, String)>>(&b).ok())
    {
        e.context = ctx;
    }
    e
}

/// Codes are `&'static str` in [`Error`]. A code the daemon sends back is
/// interned: each distinct code is leaked once, so the set stays as small as
/// the daemon's vocabulary of codes. Text that does not look like a code (upper
/// case, digits and `_`, at most 64 bytes) becomes a generic one; the message
/// keeps the detail.
fn known_code(c: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static CODES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    if c.is_empty()
        || c.len() > 64
        || !c
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return "API_ERROR";
    }
    let set = CODES.get_or_init(Default::default);
    let mut set = set
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(k) = set.get(c) {
        return k;
    }
    if set.len() >= 4096 {
        return "API_ERROR";
    }
    let k: &'static str = Box::leak(c.to_string().into_boxed_str());
    set.insert(k);
    k
}

fn ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Error as a message.
pub fn error_info(e: &Error) -> pb::ErrorInfo {
    pb::ErrorInfo {
        code: e.code.to_string(),
        message: e.message.clone(),
        context: e
            .context
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        hint: e.hint.clone().unwrap_or_default(),
    }
}

/// Per-process failures as messages.
pub fn process_errors(errs: Vec<(String, Error)>) -> Vec<pb::ProcessError> {
    errs.into_iter()
        .map(|(name, e)| pb::ProcessError {
            name,
            error: Some(error_info(&e)),
        })
        .collect()
}

/// A process view as a message.
pub fn process(v: &ProcessView) -> pb::Process {
    let spec = &v.want.spec;
    let s = v.status.as_ref();
    let mut p = pb::Process {
        name: spec.name.clone(),
        state: s.map_or("stopped", |s| s.state.as_str()).into(),
        desired: v.want.desired.as_str().into(),
        source: v.want.source.as_str().into(),
        command: spec.command.clone(),
        args: spec.args.clone(),
        health: s.map_or("unknown", |s| s.health.status.as_str()).into(),
        ..Default::default()
    };
    if let Some(s) = s {
        p.pid = s.pid.unwrap_or(0);
        p.restarts = s.restarts;
        p.consecutive_failures = s.consecutive_failures;
        p.started_at_ms = s.started_at.map(ms).unwrap_or(0);
        p.since_ms = ms(s.since);
        if !s.ports.is_empty() {
            p.ports = s
                .ports
                .iter()
                .map(|(k, v)| (k.clone(), u32::from(*v)))
                .collect();
        }
        if let Some(x) = s.last_exit {
            p.last_exit = x.to_string();
        }
        p.last_error = s
            .last_error
            .as_ref()
            .map(|e| error_info(&Error::from(e.clone())));
        p.log_dropped_bytes = s.log_dropped_bytes;
    }
    p
}

/// A stored event as a message.
pub fn event(r: &EventRecord) -> pb::Event {
    pb::Event {
        id: r.id,
        at_ms: r.at_ms,
        name: r.name.clone(),
        pid: r.pid.unwrap_or(0),
        kind: r.kind.clone(),
        from: r.from.clone(),
        to: r.to.clone(),
        detail_json: r.detail.to_string(),
    }
}

/// An instance on the wire.
pub fn instance(i: &hangar_core::Instance) -> pb::Instance {
    pb::Instance {
        id: i.id.clone(),
        name: i.name.clone(),
        feature: i.feature.clone(),
        version: i.version.clone(),
        mode: i.mode.clone().unwrap_or_default(),
        state: i.state.as_str().to_string(),
        step: i.step.map(|s| s.as_str().to_string()).unwrap_or_default(),
        error: i.error.as_ref().map(|e| pb::ErrorInfo {
            code: e.code.clone(),
            message: e.message.clone(),
            context: e
                .step
                .map(|s| ("step".to_string(), s.as_str().to_string()))
                .into_iter()
                .chain(e.context.iter().cloned())
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
            hint: e.hint.clone().unwrap_or_default(),
        }),
        ports: i
            .ports
            .iter()
            .map(|(k, v)| (k.clone(), u32::from(*v)))
            .collect(),
        bind: i.bind.clone(),
        process: i.process.clone(),
        tenant: i.tenant.clone().unwrap_or_default(),
        session: i.session.clone().unwrap_or_default(),
        isolation: serde_json::to_value(i.isolation)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        config_file: i
            .config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        json: serde_json::to_string(i).unwrap_or_default(),
        created_ms: i.created_ms,
        updated_ms: i.updated_ms,
    }
}
