//! Instance options: the schema a manifest declares (`config.options`), the
//! merge of the user's values over the mode's defaults over the option
//! defaults, every problem reported at once with the key named, and the parser
//! for the CLI's `--set key=value`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::manifest::{Manifest, Mode, OptionSpec, OptionType};
use crate::{Error, Result};

/// An unknown key.
pub const UNKNOWN_OPTION: crate::ErrorKind = crate::ErrorKind::ConfigUnknownOption;
/// A value of the wrong JSON type.
pub const BAD_OPTION_TYPE: crate::ErrorKind = crate::ErrorKind::ConfigBadOptionType;
/// A number or length outside its bounds.
pub const OPTION_OUT_OF_RANGE: crate::ErrorKind = crate::ErrorKind::ConfigOptionOutOfRange;
/// A value that is not one of the allowed values.
pub const OPTION_NOT_IN_ENUM: crate::ErrorKind = crate::ErrorKind::ConfigOptionNotInEnum;
/// A required option nobody set.
pub const MISSING_OPTION: crate::ErrorKind = crate::ErrorKind::ConfigMissingOption;
/// A value of the right type the feature cannot take (control characters, a
/// malformed UUID, …).
pub const BAD_OPTION_VALUE: crate::ErrorKind = crate::ErrorKind::ConfigBadOptionValue;
/// Several kinds of problems at once (each is in the context).
pub const OPTIONS_INVALID: crate::ErrorKind = crate::ErrorKind::ConfigOptionsInvalid;
/// A mode the manifest does not have.
pub const UNKNOWN_MODE: crate::ErrorKind = crate::ErrorKind::ConfigUnknownMode;
/// A `--set` argument without `=`.
pub const BAD_SET: crate::ErrorKind = crate::ErrorKind::ConfigBadSet;

/// One problem with one option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionProblem {
    /// The option's key (`exit_nodes`, or `exit_nodes[2]` for a list item).
    pub key: String,
    /// Stable code (`CONFIG_UNKNOWN_OPTION`, …).
    pub code: crate::ErrorKind,
    /// What is wrong and what is expected.
    pub message: String,
}

impl OptionProblem {
    /// A problem.
    pub fn new(key: impl Into<String>, code: crate::ErrorKind, message: impl Into<String>) -> Self {
        OptionProblem {
            key: key.into(),
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for OptionProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.key, self.code, self.message)
    }
}

/// A short rendering of a value for messages.
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn expected(spec: &OptionSpec) -> String {
    match spec.kind {
        OptionType::String => "a string".into(),
        OptionType::Integer => "an integer".into(),
        OptionType::Number => "a number".into(),
        OptionType::Boolean => "a boolean (true or false)".into(),
        OptionType::Port => "a port (an integer from 1 to 65535)".into(),
        OptionType::Enum => format!("one of {}", choices(spec)),
        OptionType::List => format!(
            "a list of {}",
            spec.items
                .as_deref()
                .map(|i| i.kind.as_str())
                .unwrap_or("string")
        ),
    }
}

fn choices(spec: &OptionSpec) -> String {
    spec.choices.iter().map(show).collect::<Vec<_>>().join(", ")
}

/// The first control character in `s` (tabs are allowed), if any. Values with
/// one are refused: line-based formats such as torrc must not get a second
/// line from an option.
pub fn control_char(s: &str) -> Option<char> {
    s.chars().find(|c| c.is_control() && *c != '\t')
}

fn in_range(key: &str, spec: &OptionSpec, x: f64, v: &Value) -> Option<OptionProblem> {
    let lo = spec.minimum;
    let hi = spec.maximum;
    let bad = lo.is_some_and(|lo| x < lo) || hi.is_some_and(|hi| x > hi);
    bad.then(|| {
        let range = match (lo, hi) {
            (Some(lo), Some(hi)) => format!("from {lo} to {hi}"),
            (Some(lo), None) => format!("at least {lo}"),
            (None, Some(hi)) => format!("at most {hi}"),
            (None, None) => String::new(),
        };
        OptionProblem::new(
            key,
            OPTION_OUT_OF_RANGE,
            format!("{} is out of range: must be {range}", show(v)),
        )
    })
}

/// Check one value against its spec; returns the normalized value (whole
/// numbers written as `5.0` become `5`).
pub fn check_value(
    key: &str,
    spec: &OptionSpec,
    v: &Value,
) -> std::result::Result<Value, OptionProblem> {
    // The value of a secret option (a password, a key) is never repeated.
    let shown = |v: &Value| {
        if spec.secret {
            "the value (secret, not shown)".to_string()
        } else {
            show(v)
        }
    };
    let bad_type = || {
        let mut m = format!("expected {}, got {}", expected(spec), type_name(v));
        if !spec.secret {
            m.push_str(&format!(" ({})", show(v)));
        }
        OptionProblem::new(key, BAD_OPTION_TYPE, m)
    };
    let out = match spec.kind {
        OptionType::String => {
            let Value::String(s) = v else {
                return Err(bad_type());
            };
            if let Some(c) = control_char(s) {
                return Err(OptionProblem::new(
                    key,
                    BAD_OPTION_VALUE,
                    format!("contains the control character {c:?}; newlines and other control characters are not allowed"),
                ));
            }
            if let Some(max) = spec.max_length {
                let n = s.chars().count();
                if n > max {
                    return Err(OptionProblem::new(
                        key,
                        OPTION_OUT_OF_RANGE,
                        format!("is {n} characters long; at most {max} allowed"),
                    ));
                }
            }
            v.clone()
        }
        OptionType::Integer | OptionType::Port => {
            let n = match v {
                Value::Number(n) => {
                    if let Some(i) = n.as_i64() {
                        i
                    } else if let Some(f) =
                        n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                    {
                        f as i64
                    } else {
                        return Err(bad_type());
                    }
                }
                _ => return Err(bad_type()),
            };
            let norm = Value::from(n);
            if spec.kind == OptionType::Port && !(1..=65535).contains(&n) {
                return Err(OptionProblem::new(
                    key,
                    OPTION_OUT_OF_RANGE,
                    format!("{n} is not a port: must be from 1 to 65535"),
                ));
            }
            if let Some(p) = in_range(key, spec, n as f64, &norm) {
                return Err(p);
            }
            norm
        }
        OptionType::Number => {
            let Some(x) = v.as_f64() else {
                return Err(bad_type());
            };
            if let Some(p) = in_range(key, spec, x, v) {
                return Err(p);
            }
            v.clone()
        }
        OptionType::Boolean => {
            if !v.is_boolean() {
                return Err(bad_type());
            }
            v.clone()
        }
        OptionType::Enum => {
            if !spec.choices.contains(v) {
                return Err(OptionProblem::new(
                    key,
                    OPTION_NOT_IN_ENUM,
                    format!(
                        "{} is not allowed: must be one of {}",
                        shown(v),
                        choices(spec)
                    ),
                ));
            }
            return Ok(v.clone());
        }
        OptionType::List => {
            let Value::Array(items) = v else {
                return Err(bad_type());
            };
            if let Some(max) = spec.max_length {
                if items.len() > max {
                    return Err(OptionProblem::new(
                        key,
                        OPTION_OUT_OF_RANGE,
                        format!("has {} items; at most {max} allowed", items.len()),
                    ));
                }
            }
            let mut item_spec = spec.items.as_deref().cloned().unwrap_or_else(string_spec);
            item_spec.secret |= spec.secret;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(check_value(&format!("{key}[{i}]"), &item_spec, item)?);
            }
            return Ok(Value::Array(out));
        }
    };
    if !spec.choices.is_empty() && !spec.choices.contains(&out) {
        return Err(OptionProblem::new(
            key,
            OPTION_NOT_IN_ENUM,
            format!(
                "{} is not allowed: must be one of {}",
                shown(&out),
                choices(spec)
            ),
        ));
    }
    Ok(out)
}

fn string_spec() -> OptionSpec {
    spec_of(OptionType::String)
}

fn spec_of(kind: OptionType) -> OptionSpec {
    OptionSpec {
        kind,
        description: String::new(),
        default: None,
        minimum: None,
        maximum: None,
        choices: Vec::new(),
        max_length: None,
        items: None,
        required: false,
        secret: false,
    }
}

/// The options of a manifest: those it declares in `config.options`, and for
/// manifests that declare none, the keys of its modes' defaults with the type
/// of their default value.
pub fn effective_specs(m: &Manifest) -> BTreeMap<String, OptionSpec> {
    let mut specs: BTreeMap<String, OptionSpec> = m
        .config
        .as_ref()
        .map(|c| c.options.clone())
        .unwrap_or_default();
    for mode in &m.modes {
        for (k, v) in &mode.defaults {
            if specs.contains_key(k) {
                continue;
            }
            let kind = match v {
                Value::String(_) => OptionType::String,
                Value::Bool(_) => OptionType::Boolean,
                Value::Number(n) if n.is_f64() => OptionType::Number,
                Value::Number(_) => OptionType::Integer,
                Value::Array(_) => OptionType::List,
                Value::Null | Value::Object(_) => continue,
            };
            let mut s = spec_of(kind);
            if let Value::Array(items) = v {
                if let Some(first) = items.first() {
                    let item = match first {
                        Value::Bool(_) => OptionType::Boolean,
                        Value::Number(n) if n.is_f64() => OptionType::Number,
                        Value::Number(_) => OptionType::Integer,
                        _ => OptionType::String,
                    };
                    s.items = Some(Box::new(spec_of(item)));
                }
            }
            specs.insert(k.clone(), s);
        }
    }
    specs
}

/// The mode asked for, or the manifest's first mode when none is asked for
/// (`None` when the manifest has no modes). An unknown mode is
/// `CONFIG_UNKNOWN_MODE`, with the modes listed in the hint.
pub fn resolve_mode<'m>(m: &'m Manifest, mode: Option<&str>) -> Result<Option<&'m Mode>> {
    match mode {
        None => Ok(m.modes.first()),
        Some(id) => match m.modes.iter().find(|x| x.id == id) {
            Some(x) => Ok(Some(x)),
            None => {
                let list: Vec<&str> = m.modes.iter().map(|x| x.id.as_str()).collect();
                let hint = if list.is_empty() {
                    format!("feature {} has no modes: leave the mode out", m.id)
                } else {
                    format!("modes of {}: {}", m.id, list.join(", "))
                };
                Err(
                    Error::new(UNKNOWN_MODE, format!("feature {} has no mode {id:?}", m.id))
                        .with("feature", &m.id)
                        .with("mode", id)
                        .hint(hint),
                )
            }
        },
    }
}

/// Merge and check: option defaults, then the mode's defaults, then the user's
/// values (a user `null` means "use the default"). Every problem is returned.
pub fn check_options(
    m: &Manifest,
    mode: Option<&Mode>,
    user: &Map<String, Value>,
) -> std::result::Result<Map<String, Value>, Vec<OptionProblem>> {
    let specs = effective_specs(m);
    let mut merged = Map::new();
    for (k, s) in &specs {
        if let Some(d) = &s.default {
            merged.insert(k.clone(), d.clone());
        }
    }
    if let Some(mode) = mode {
        for (k, v) in &mode.defaults {
            merged.insert(k.clone(), v.clone());
        }
    }
    let mut problems = Vec::new();
    for (k, v) in user {
        if v.is_null() {
            continue;
        }
        let Some(spec) = specs.get(k) else {
            let mut msg = format!("{} has no option {k:?}", m.id);
            if let Some(best) = did_you_mean(k, specs.keys()) {
                msg.push_str(&format!("; did you mean {best:?}?"));
            }
            problems.push(OptionProblem::new(k, UNKNOWN_OPTION, msg));
            continue;
        };
        match check_value(k, spec, v) {
            Ok(norm) => {
                merged.insert(k.clone(), norm);
            }
            Err(p) => problems.push(p),
        }
    }
    let bad: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();
    for (k, s) in &specs {
        if s.required && !merged.contains_key(k) && !bad.contains(k) {
            problems.push(OptionProblem::new(
                k,
                MISSING_OPTION,
                format!("{k} is required{}", describe(s)),
            ));
        }
    }
    if let Some(mode) = mode {
        for k in &mode.required {
            if !merged.contains_key(k) && !bad.contains(k) && !problems.iter().any(|p| &p.key == k)
            {
                let d = specs.get(k).map(describe).unwrap_or_default();
                problems.push(OptionProblem::new(
                    k,
                    MISSING_OPTION,
                    format!("mode {} needs {k}{d}", mode.id),
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(merged)
    } else {
        problems.sort_by(|a, b| a.key.cmp(&b.key));
        Err(problems)
    }
}

fn describe(s: &OptionSpec) -> String {
    if s.description.is_empty() {
        String::new()
    } else {
        format!(" ({})", s.description)
    }
}

fn did_you_mean<'a>(k: &str, keys: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    hangar_base::suggest::closest(k, keys.map(String::as_str))
}

/// Turn option problems into one error: the problem's own code when there is
/// one kind, `CONFIG_OPTIONS_INVALID` otherwise. Each problem is a
/// `problem` context entry (`key (CODE): message`) and each key an `option`.
pub fn options_error(m: &Manifest, problems: &[OptionProblem]) -> Error {
    let first = problems.first();
    let code = match first {
        Some(p) if problems.iter().all(|q| q.code == p.code) => p.code,
        _ => OPTIONS_INVALID,
    };
    let message = match (problems.len(), first) {
        (1, Some(p)) => format!("option {}: {}", p.key, p.message),
        (n, _) => format!(
            "{n} problems with the options for {}: {}",
            m.id,
            problems
                .iter()
                .map(|p| p.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut e = Error::new(code, message).with("feature", &m.id);
    for p in problems {
        e = e.with("option", &p.key);
    }
    for p in problems {
        e = e.with("problem", p);
    }
    let known: Vec<String> = effective_specs(m).keys().cloned().collect();
    let hint = if known.is_empty() {
        format!("{} takes no options", m.id)
    } else {
        format!(
            "fix the options named; {} takes: {}",
            m.id,
            known.join(", ")
        )
    };
    e.hint(hint)
}

/// Check the user's options for an instance of `m` in `mode` (the first mode
/// when `None`) and return them merged over the mode's defaults over the option
/// defaults. Runs before anything is allocated. Every problem is reported at
/// once (see [`options_error`]); an unknown mode is `CONFIG_UNKNOWN_MODE`.
pub fn validate_options(
    m: &Manifest,
    mode: Option<&str>,
    user: &Map<String, Value>,
) -> Result<Map<String, Value>> {
    let mode = resolve_mode(m, mode)?;
    check_options(m, mode, user).map_err(|p| options_error(m, &p))
}

/// The names of the options `m` marks `secret` (passwords, keys).
pub fn secret_keys(m: &Manifest) -> std::collections::BTreeSet<String> {
    effective_specs(m)
        .into_iter()
        .filter(|(_, s)| s.secret)
        .map(|(k, _)| k)
        .collect()
}

/// The options with every `secret` one (passwords, keys) replaced by
/// `"********"`, for showing an instance.
pub fn redact(m: &Manifest, options: &Map<String, Value>) -> Map<String, Value> {
    let specs = effective_specs(m);
    options
        .iter()
        .map(|(k, v)| {
            let secret = specs.get(k).is_some_and(|s| s.secret) && !v.is_null();
            let v = if secret {
                Value::String("********".into())
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn parse_scalar(
    key: &str,
    spec: &OptionSpec,
    raw: &str,
) -> std::result::Result<Value, OptionProblem> {
    let bad =
        |what: &str| OptionProblem::new(key, BAD_OPTION_TYPE, format!("{raw:?} is not {what}"));
    Ok(match spec.kind {
        OptionType::String => Value::String(raw.to_string()),
        OptionType::Integer => {
            Value::from(raw.trim().parse::<i64>().map_err(|_| bad("an integer"))?)
        }
        OptionType::Port => Value::from(
            raw.trim()
                .parse::<i64>()
                .map_err(|_| bad("a port (1-65535)"))?,
        ),
        OptionType::Number => {
            let x: f64 = raw.trim().parse().map_err(|_| bad("a number"))?;
            serde_json::Number::from_f64(x)
                .map(Value::Number)
                .ok_or_else(|| bad("a finite number"))?
        }
        OptionType::Boolean => Value::Bool(
            parse_bool(raw).ok_or_else(|| bad("a boolean (true/false, yes/no, on/off, 1/0)"))?,
        ),
        OptionType::Enum => {
            // A string choice as written, else a non-string choice by its JSON
            // text (`--set level=3` for a choice 3); otherwise the raw string,
            // for validation to refuse with the choices listed.
            let as_json = serde_json::from_str::<Value>(raw.trim())
                .ok()
                .filter(|v| !v.is_string() && spec.choices.contains(v));
            spec.choices
                .iter()
                .find(|c| c.as_str() == Some(raw))
                .cloned()
                .or(as_json)
                .unwrap_or_else(|| Value::String(raw.to_string()))
        }
        OptionType::List => {
            // Nested lists from the CLI: JSON only.
            serde_json::from_str(raw).map_err(|_| bad("a JSON list"))?
        }
    })
}

/// Parse the CLI's `--set key=value` arguments into typed values, guided by the
/// manifest's options: integers, ports and numbers are parsed, booleans take
/// true/false, yes/no, on/off, 1/0; lists take `a,b,c` or a JSON list, and a
/// list key given twice appends. Keys the manifest does not know are kept as
/// strings, for [`validate_options`] to refuse by name. Every problem is
/// reported at once.
pub fn parse_sets<S: AsRef<str>>(m: &Manifest, sets: &[S]) -> Result<Map<String, Value>> {
    let specs = effective_specs(m);
    let mut out = Map::new();
    let mut problems = Vec::new();
    for s in sets {
        let s = s.as_ref();
        let Some((k, raw)) = s.split_once('=') else {
            problems.push(OptionProblem::new(
                s,
                BAD_SET,
                format!("{s:?} is not key=value"),
            ));
            continue;
        };
        let k = k.trim();
        if k.is_empty() {
            problems.push(OptionProblem::new(
                s,
                BAD_SET,
                format!("{s:?} has no key before '='"),
            ));
            continue;
        }
        let Some(spec) = specs.get(k) else {
            out.insert(k.to_string(), Value::String(raw.to_string()));
            continue;
        };
        if spec.kind != OptionType::List {
            match parse_scalar(k, spec, raw) {
                Ok(v) => {
                    out.insert(k.to_string(), v);
                }
                Err(p) => problems.push(p),
            }
            continue;
        }
        let item = spec.items.as_deref().cloned().unwrap_or_else(string_spec);
        let parsed: std::result::Result<Vec<Value>, OptionProblem> =
            if raw.trim_start().starts_with('[') {
                match serde_json::from_str::<Value>(raw) {
                    Ok(Value::Array(a)) => Ok(a),
                    _ => Err(OptionProblem::new(
                        k,
                        BAD_OPTION_TYPE,
                        format!("{raw:?} is not a JSON list"),
                    )),
                }
            } else if raw.trim().is_empty() {
                Ok(Vec::new())
            } else {
                raw.split(',')
                    .map(|piece| parse_scalar(k, &item, piece.trim()))
                    .collect()
            };
        match parsed {
            Ok(items) => match out.get_mut(k) {
                Some(Value::Array(prev)) => prev.extend(items),
                _ => {
                    out.insert(k.to_string(), Value::Array(items));
                }
            },
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        let code = if problems.iter().all(|p| p.code == problems[0].code) {
            problems[0].code
        } else {
            OPTIONS_INVALID
        };
        let mut e = Error::new(
            code,
            format!(
                "cannot read --set: {}",
                problems
                    .iter()
                    .map(|p| p.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
        .with("feature", &m.id);
        for p in &problems {
            e = e.with("option", &p.key);
        }
        Err(e.hint("write --set KEY=VALUE, once per option (lists: a,b,c or a JSON list)"))
    }
}

/// Problems with the options a manifest declares, as (JSON pointer, message):
/// defaults that do not fit their own type, enums without values, bounds the
/// wrong way round, mode defaults and mode requirements naming unknown options
/// or of the wrong type, a template generator without a usable template path.
pub fn spec_problems(m: &Manifest) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let declared = m
        .config
        .as_ref()
        .map(|c| c.options.clone())
        .unwrap_or_default();
    fn one(ptr: &str, key: &str, s: &OptionSpec, out: &mut Vec<(String, String)>) {
        if s.kind == OptionType::Enum && s.choices.is_empty() {
            out.push((
                format!("{ptr}/enum"),
                format!("option {key} is an enum without values"),
            ));
        }
        if let (Some(lo), Some(hi)) = (s.minimum, s.maximum) {
            if lo > hi {
                out.push((
                    format!("{ptr}/minimum"),
                    format!("option {key}: minimum {lo} is above maximum {hi}"),
                ));
            }
        }
        if let Some(items) = &s.items {
            if s.kind != OptionType::List {
                out.push((
                    format!("{ptr}/items"),
                    format!("option {key}: items only applies to lists"),
                ));
            }
            one(&format!("{ptr}/items"), key, items, out);
        }
        if let Some(d) = &s.default {
            if let Err(p) = check_value(key, s, d) {
                out.push((
                    format!("{ptr}/default"),
                    format!("default does not fit: {}", p.message),
                ));
            }
        }
    }
    for (k, s) in &declared {
        one(&format!("/config/options/{k}"), k, s, &mut out);
    }
    for (i, mode) in m.modes.iter().enumerate() {
        for (k, v) in &mode.defaults {
            match declared.get(k) {
                Some(s) => {
                    if let Err(p) = check_value(k, s, v) {
                        out.push((
                            format!("/modes/{i}/defaults/{k}"),
                            format!("mode {}: {}", mode.id, p.message),
                        ));
                    }
                }
                None if !declared.is_empty() => out.push((
                    format!("/modes/{i}/defaults/{k}"),
                    format!(
                        "mode {} sets {k}, which config.options does not declare",
                        mode.id
                    ),
                )),
                None => {}
            }
        }
        for (j, k) in mode.required.iter().enumerate() {
            if !declared.contains_key(k) {
                out.push((
                    format!("/modes/{i}/required/{j}"),
                    format!(
                        "mode {} requires {k}, which config.options does not declare",
                        mode.id
                    ),
                ));
            }
        }
    }
    if let Some(c) = &m.config {
        if c.generator.as_deref() == Some("template") && c.template.is_none() {
            out.push((
                "/config/template".into(),
                "the template generator needs config.template (a file beside the manifest)".into(),
            ));
        }
        for (ptr, p) in [("/config/template", &c.template), ("/config/path", &c.path)] {
            if let Some(p) = p {
                if p.starts_with('/') || p.split('/').any(|c| c == "..") || p.is_empty() {
                    out.push((
                        ptr.to_string(),
                        format!("{p:?} must be a relative path that stays in its directory"),
                    ));
                }
            }
        }
    }
    out
}
