//! Between the service layer's types and hangar.v1 messages, and between
//! [`hangar_core::Error`] and gRPC statuses.
//!
//! An error travels as a status whose code is the nearest gRPC code and whose
//! metadata keeps hangar's own: `hangar-code` and `hangar-category` (ASCII),
//! `hangar-hint-bin` and `hangar-context-bin` (UTF-8; context as a JSON array
//! of `[key, value]`). The category alone decides the gRPC code
//! ([`grpc_code`]). For generic clients the same error is also in
//! `grpc-status-details-bin` as `google.rpc.Status` details: `ErrorInfo`
//! (reason: the hangar code; domain `hangar`; metadata: the context and the
//! category), `BadRequest` when an invalid argument names its field (context
//! key `option` or `field`), and `Help` with the hint as a link's description.

use std::time::UNIX_EPOCH;

use hangar_core::{Category, Error, ProcessView};
use hangar_store::EventRecord;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, HelpLink, StatusExt};

use crate::pb;

/// The gRPC status code for a category: the one table that decides it.
pub fn grpc_code(c: Category) -> Code {
    match c {
        Category::NotFound => Code::NotFound,
        Category::Invalid => Code::InvalidArgument,
        Category::Conflict => Code::AlreadyExists,
        Category::Precondition => Code::FailedPrecondition,
        Category::Exhausted => Code::ResourceExhausted,
        Category::Unavailable => Code::Unavailable,
        Category::Timeout => Code::DeadlineExceeded,
        Category::Unauthenticated => Code::Unauthenticated,
        Category::Internal => Code::Internal,
    }
}

/// The category of a status that came without hangar's metadata (from a
/// proxy, or tonic itself), and the generic code it gets.
fn from_grpc_code(c: Code) -> (Category, &'static str) {
    match c {
        Code::NotFound => (Category::NotFound, "NOT_FOUND"),
        Code::InvalidArgument | Code::OutOfRange => (Category::Invalid, "API_ERROR"),
        Code::AlreadyExists | Code::Aborted => (Category::Conflict, "API_ERROR"),
        Code::FailedPrecondition => (Category::Precondition, "API_ERROR"),
        Code::ResourceExhausted => (Category::Exhausted, "API_ERROR"),
        Code::Unavailable => (Category::Unavailable, "DAEMON_UNAVAILABLE"),
        Code::DeadlineExceeded => (Category::Timeout, "TIMEOUT"),
        Code::Unauthenticated | Code::PermissionDenied => {
            (Category::Unauthenticated, "UNAUTHENTICATED")
        }
        Code::Unimplemented => (Category::Precondition, "UNSUPPORTED"),
        _ => (Category::Internal, "API_ERROR"),
    }
}

/// `google.rpc.ErrorInfo.domain` of every hangar error.
pub const ERROR_DOMAIN: &str = "hangar";

/// Context keys that name the field of the request an invalid-argument error
/// is about: each becomes a `google.rpc.BadRequest` field violation, described
/// by the `error` entry that names it (a process file's `line:col: key: what`)
/// or else by the message.
const FIELD_KEYS: [&str; 2] = ["option", "field"];

/// The `google.rpc.Status` details generic clients read: `ErrorInfo` (the
/// hangar code as reason, the category and context as metadata), `BadRequest`
/// for an invalid argument that names its field, `Help` for the hint.
fn details(e: &Error) -> ErrorDetails {
    let mut metadata = std::collections::HashMap::new();
    for (k, v) in &e.context {
        metadata
            .entry(k.clone())
            .and_modify(|have: &mut String| {
                have.push_str(", ");
                have.push_str(v);
            })
            .or_insert_with(|| v.clone());
    }
    metadata.insert("category".into(), e.category().as_str().into());
    let mut d = ErrorDetails::with_error_info(e.code(), ERROR_DOMAIN, metadata);
    if e.category() == Category::Invalid {
        let violations: Vec<FieldViolation> = e
            .context
            .iter()
            .filter(|(k, _)| FIELD_KEYS.contains(&k.as_str()))
            .map(|(_, field)| {
                // The `error` entry that names the field says what is wrong
                // with it; else the message does.
                let why = e
                    .context
                    .iter()
                    .find(|(k, v)| k == "error" && v.contains(field.as_str()))
                    .map_or(&e.message, |(_, v)| v);
                FieldViolation::new(field, why)
            })
            .collect();
        if !violations.is_empty() {
            d.set_bad_request(violations);
        }
    }
    if let Some(h) = &e.hint {
        d.set_help(vec![HelpLink::new(h, "")]);
    }
    d
}

/// A service-layer error as a gRPC status.
pub fn status(e: Error) -> Status {
    let mut st =
        Status::with_error_details(grpc_code(e.category()), e.message.clone(), details(&e));
    let md = st.metadata_mut();
    if let Ok(v) = MetadataValue::try_from(e.code()) {
        md.insert("hangar-code", v);
    }
    md.insert(
        "hangar-category",
        MetadataValue::from_static(e.category().as_str()),
    );
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

/// A gRPC status back into a service-layer error (the client side). The code
/// and category are the daemon's (`hangar-code`, `hangar-category`); a status
/// without them gets a generic code and the category of its gRPC code.
pub fn error(st: &Status) -> Error {
    let md: &MetadataMap = st.metadata();
    let (fallback_cat, fallback_code) = from_grpc_code(st.code());
    let category = md
        .get("hangar-category")
        .and_then(|v| v.to_str().ok())
        .and_then(Category::parse)
        .unwrap_or(fallback_cat);
    let code = md
        .get("hangar-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(fallback_code);
    let mut e = Error::remote(code, category, st.message());
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

fn ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A JSON value as a `google.protobuf.Value`.
pub fn value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(value).collect(),
        }),
        serde_json::Value::Object(m) => Kind::StructValue(structure(m)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a `google.protobuf.Struct`.
pub fn structure(m: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m.iter().map(|(k, v)| (k.clone(), value(v))).collect(),
    }
}

/// A `google.protobuf.Value` as JSON. Whole numbers come back as integers
/// (Struct has only doubles), so a port stays `8080`, not `8080.0`.
pub fn json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => (*b).into(),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                (*n as i64).into()
            } else {
                serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into)
            }
        }
        Some(Kind::StringValue(s)) => s.clone().into(),
        Some(Kind::ListValue(l)) => l.values.iter().map(json).collect(),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(object(s)),
    }
}

/// A `google.protobuf.Struct` as a JSON object.
pub fn object(s: &prost_types::Struct) -> serde_json::Map<String, serde_json::Value> {
    s.fields.iter().map(|(k, v)| (k.clone(), json(v))).collect()
}

fn entries<'a>(ctx: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<pb::ContextEntry> {
    ctx.into_iter()
        .map(|(k, v)| pb::ContextEntry {
            key: k.to_string(),
            value: v.to_string(),
        })
        .collect()
}

/// An event's detail as a JSON object (null when it has none).
pub fn detail(e: &pb::Event) -> serde_json::Value {
    e.detail.as_ref().map_or(serde_json::Value::Null, |s| {
        serde_json::Value::Object(object(s))
    })
}

/// An error message's context as `key=value, key=value`.
pub fn context_text(i: &pb::ErrorInfo) -> String {
    i.entries
        .iter()
        .map(|e| format!("{}={}", e.key, e.value))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Error as a message.
#[allow(deprecated)] // `context` is still filled for older clients.
pub fn error_info(e: &Error) -> pb::ErrorInfo {
    pb::ErrorInfo {
        code: e.code().to_string(),
        message: e.message.clone(),
        context: e
            .context
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        hint: e.hint.clone().unwrap_or_default(),
        entries: entries(e.context.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
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
#[allow(deprecated)] // `detail_json` is still filled for older clients.
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
        detail: match &r.detail {
            serde_json::Value::Object(m) => Some(structure(m)),
            _ => None,
        },
    }
}

/// An export as its reply.
pub fn export(e: hangar_core::Export) -> pb::ExportInstanceReply {
    pb::ExportInstanceReply {
        format: e.format.as_str().to_string(),
        text: e.text,
        file_name: e.file_name,
    }
}

/// An instance on the wire.
#[allow(deprecated)] // `json` and the error's `context` are still filled for older clients.
pub fn instance(i: &hangar_core::Instance) -> pb::Instance {
    // Secret options never leave the daemon.
    let redacted = i.redacted();
    let i: &hangar_core::Instance = &redacted;
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
            entries: entries(
                e.step
                    .map(|s| ("step", s.as_str()))
                    .into_iter()
                    .chain(e.context.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            ),
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
        options: Some(structure(&i.options)),
        desired: i.desired.as_str().to_string(),
        key: i.key.clone(),
        network: i.network.as_ref().map(|n| pb::InstanceNetwork {
            backend: n.backend.clone(),
            namespace: n.namespace.clone(),
            namespace_path: n.namespace_path.display().to_string(),
            host_if: n.host_if.clone(),
            instance_if: n.instance_if.clone(),
            host_addr: n.host_addr.to_string(),
            instance_addr: n.instance_addr.to_string(),
            prefix_len: u32::from(n.prefix_len),
            number: n.number,
        }),
        dir: i.dir.display().to_string(),
        binary: i
            .binary
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    }
}

/// An installed version on the wire.
pub fn installed(i: &hangar_fetch::Installed) -> pb::InstalledFeature {
    pb::InstalledFeature {
        id: i.id.clone(),
        version: i.version.clone(),
        dir: i.dir.display().to_string(),
        binary: i.binary.display().to_string(),
        url: i.url.clone(),
        sha256: i.sha256.clone(),
        verified: i.verified,
        signed: i.signed,
        bytes: i.bytes,
        installed_at: i.installed_at,
        current: i.current,
    }
}

/// An installed version from the wire (the client side).
pub fn installed_from(i: pb::InstalledFeature) -> hangar_fetch::Installed {
    hangar_fetch::Installed {
        id: i.id,
        version: i.version,
        dir: i.dir.into(),
        binary: i.binary.into(),
        url: i.url,
        sha256: i.sha256,
        verified: i.verified,
        signed: i.signed,
        bytes: i.bytes,
        installed_at: i.installed_at,
        current: i.current,
    }
}

/// An install step on the wire (`Step::Installed` carries no record: the
/// last message, with the record, is made from the result).
pub fn install_step(s: &hangar_fetch::Step) -> pb::InstallProgress {
    use hangar_fetch::Step;
    let step = |name: &str| pb::InstallProgress {
        step: name.into(),
        ..Default::default()
    };
    match s {
        Step::Download(p) => pb::InstallProgress {
            step: "download".into(),
            bytes: p.bytes,
            total: p.total,
            bytes_per_sec: p.bytes_per_sec,
            installed: None,
        },
        Step::Verify => step("verify"),
        Step::Extract => step("extract"),
        Step::Installed => step("installed"),
    }
}

/// Where a download's expected digest comes from, on the wire.
pub fn checksum(c: &hangar_fetch::Checksum) -> pb::AssetChecksum {
    use hangar_fetch::Checksum;
    match c {
        Checksum::Sha256(h) => pb::AssetChecksum {
            kind: "sha256".into(),
            sha256: h.clone(),
            verified_by: format!("sha256 {h} (the manifest's)"),
            ..Default::default()
        },
        Checksum::Pinned(h) => pb::AssetChecksum {
            kind: "pinned".into(),
            sha256: h.clone(),
            verified_by: format!("sha256 {h} (pinned for this version and platform)"),
            ..Default::default()
        },
        Checksum::File(u) => pb::AssetChecksum {
            kind: "file".into(),
            url: u.clone(),
            verified_by: format!("checksums file {u}"),
            ..Default::default()
        },
        Checksum::SignedFile(sc) => {
            let fp = hangar_fetch::verify::normalize_fingerprint(&sc.fingerprint);
            pb::AssetChecksum {
                kind: "signed-file".into(),
                url: sc.url.clone(),
                signature_url: sc.signature_url.clone(),
                verified_by: format!(
                    "checksums file {} signed ({}, OpenPGP key {fp})",
                    sc.url, sc.signature_url
                ),
                fingerprint: fp,
                ..Default::default()
            }
        }
        Checksum::GithubRelease(api) => pb::AssetChecksum {
            kind: "github-release".into(),
            url: api.clone(),
            verified_by: format!("GitHub's digest, from {api}"),
            ..Default::default()
        },
    }
}

/// Where a download's expected digest comes from, from the wire (the client
/// side; a signed file's public key is not sent, only its fingerprint).
pub fn checksum_from(c: pb::AssetChecksum) -> Option<hangar_fetch::Checksum> {
    use hangar_fetch::Checksum;
    Some(match c.kind.as_str() {
        "sha256" => Checksum::Sha256(c.sha256),
        "pinned" => Checksum::Pinned(c.sha256),
        "file" => Checksum::File(c.url),
        "signed-file" => Checksum::SignedFile(hangar_fetch::SignedChecksums {
            url: c.url,
            signature_url: c.signature_url,
            public_key: String::new(),
            fingerprint: c.fingerprint,
        }),
        "github-release" => Checksum::GithubRelease(c.url),
        _ => return None,
    })
}

/// A JSON value as text: a string as itself, anything else as JSON.
fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One option of a manifest's schema on the wire.
fn option(name: &str, o: &hangar_feature::catalog::manifest::OptionSpec) -> pb::FeatureOption {
    pb::FeatureOption {
        name: name.to_string(),
        r#type: o.kind.as_str().to_string(),
        default: o.default.as_ref().map(text).unwrap_or_default(),
        has_default: o.default.is_some(),
        description: o.description.clone(),
        secret: o.secret,
        required: o.required,
        enum_values: o.choices.iter().map(text).collect(),
        min: o.minimum,
        max: o.maximum,
        max_length: o.max_length.map(|n| n as u64),
        item_type: o
            .items
            .as_ref()
            .map(|i| i.kind.as_str().to_string())
            .unwrap_or_default(),
    }
}

/// A catalog entry on the wire, with its download and installs when known.
pub fn feature(
    e: &hangar_feature::catalog::Entry,
    resolved: Option<&Result<hangar_fetch::InstallRequest, Error>>,
    installed_versions: &[hangar_fetch::Installed],
) -> pb::Feature {
    let m = &e.manifest;
    pb::Feature {
        id: m.id.clone(),
        name: m.name.clone(),
        version: m.version.clone(),
        description: m.description.clone(),
        license: m.license.clone(),
        homepage: m.homepage.clone().unwrap_or_default(),
        isolation: m.isolation_level.as_str().to_string(),
        default_ports: m
            .network
            .default_ports
            .iter()
            .map(|p| u32::from(*p))
            .collect(),
        port_names: m.network.port_names.clone(),
        protocols: m.network.protocols.clone(),
        modes: m
            .modes
            .iter()
            .map(|md| pb::FeatureMode {
                id: md.id.clone(),
                name: md.name.clone(),
                description: md.description.clone(),
                required: md.required.clone(),
            })
            .collect(),
        options: hangar_feature::catalog::options::effective_specs(m)
            .iter()
            .map(|(k, o)| option(k, o))
            .collect(),
        asset: match resolved {
            Some(Ok(r)) => Some(pb::ResolvedAsset {
                version: r.version.clone(),
                url: r.url.clone(),
                asset: r.asset.clone(),
                binary: r.binary.clone(),
                checksum: r.checksum.as_ref().map(checksum),
                minisign_url: r
                    .signature
                    .as_ref()
                    .map(|s| s.url.clone())
                    .unwrap_or_default(),
            }),
            _ => None,
        },
        asset_error: match resolved {
            Some(Err(e)) => Some(error_info(e)),
            _ => None,
        },
        installed: installed_versions.iter().map(installed).collect(),
        manifest_file: e.file.display().to_string(),
        manifest_json: serde_json::to_string(m).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_core::ErrorKind;

    /// Every code the daemon makes leaves with the status its category names,
    /// and comes back on the client side as the same error.
    #[test]
    fn every_error_leaves_with_its_categorys_status_and_comes_back_whole() {
        let kinds: Vec<(&str, Category)> = ErrorKind::ALL
            .iter()
            .map(|k| (k.code(), k.category()))
            .chain(
                crate::ErrorKind::ALL
                    .iter()
                    .map(|k| (k.code(), k.category())),
            )
            .collect();
        for (code, category) in kinds {
            let e = Error::from_parts(
                code,
                category,
                "what happened",
                vec![("instance".into(), "web".into())],
                Some("do this".into()),
            );
            let st = status(e.clone());
            assert_eq!(st.code(), grpc_code(category), "{code}");
            assert_eq!(error(&st), e, "{code}");
        }
        let st = status(Error::new(ErrorKind::InstanceNotFound, "no instance \"x\""));
        assert_eq!(st.code(), Code::NotFound);
        let st = status(Error::new(
            hangar_feature::ErrorKind::FeatureNotFound,
            "no feature",
        ));
        assert_eq!(st.code(), Code::NotFound);
        let st = status(
            hangar_supervisor::Manager::new()
                .expect("manager")
                .status("nope")
                .map(drop)
                .map_err(Error::from)
                .expect_err("no such process"),
        );
        assert_eq!(st.code(), Code::NotFound);
    }

    /// Generic clients find the error in `grpc-status-details-bin`: the code
    /// as ErrorInfo's reason, the context as its metadata, the field of an
    /// invalid argument as a BadRequest violation, the hint as Help.
    #[test]
    fn the_error_travels_as_google_rpc_status_details() {
        let e = Error::new(
            hangar_feature::ErrorKind::ConfigUnknownOption,
            "unknown option \"colour\"",
        )
        .with("feature", "demo")
        .with("option", "colour")
        .hint("options of demo: greeting, port");
        let st = status(e);
        assert_eq!(st.code(), Code::InvalidArgument);
        let d = st.get_error_details();
        let info = d.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "CONFIG_UNKNOWN_OPTION");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            info.metadata.get("feature").map(String::as_str),
            Some("demo")
        );
        assert_eq!(
            info.metadata.get("category").map(String::as_str),
            Some("invalid")
        );
        let bad = d.bad_request().expect("BadRequest");
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "colour");
        let help = d.help().expect("Help");
        assert_eq!(help.links[0].description, "options of demo: greeting, port");

        // Not invalid: no BadRequest; no hint: no Help.
        let st = status(Error::new(ErrorKind::InstanceNotFound, "no instance").with("option", "x"));
        let d = st.get_error_details();
        assert_eq!(
            d.error_info().map(|i| i.reason.as_str()),
            Some("INSTANCE_NOT_FOUND")
        );
        assert!(d.bad_request().is_none() && d.help().is_none());
    }

    /// Options and event details cross as google.protobuf.Struct and come
    /// back as the same JSON: whole numbers stay integers, nesting stays.
    #[test]
    fn json_objects_cross_as_structs_unchanged() {
        let v = serde_json::json!({
            "port": 8080, "ratio": 0.25, "name": "web", "on": true, "none": null,
            "list": [1, "two", {"three": 3}], "nested": {"a": {"b": -7}}
        });
        let serde_json::Value::Object(m) = &v else {
            unreachable!("an object literal")
        };
        assert_eq!(serde_json::Value::Object(object(&structure(m))), v);
    }

    /// A status from something that is not hangar (a proxy, tonic itself) gets
    /// a generic code and the category of its gRPC code.
    #[test]
    fn a_foreign_status_gets_its_codes_category() {
        let e = error(&Status::unavailable("connection refused"));
        assert_eq!(
            (e.code(), e.category()),
            ("DAEMON_UNAVAILABLE", Category::Unavailable)
        );
        let e = error(&Status::new(Code::NotFound, "nope"));
        assert_eq!(e.category(), Category::NotFound);
        let mut st = Status::internal("x");
        st.metadata_mut()
            .insert("hangar-code", MetadataValue::from_static("no good"));
        assert_eq!(error(&st).code(), "API_ERROR");
    }
}
