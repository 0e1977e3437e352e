//! The built-in config generators (`tor`, `sing-box`, `xray`) with the
//! built-in catalog's manifests and hostile option values: strings with
//! quotes, newlines, backslashes, NULs and any Unicode, huge and fractional
//! numbers, lists, wrong types, unknown keys, any mode.
//!
//! Invariants: options are refused with an error (a code and a message) or
//! render; a rendered torrc reads, as tor reads it, as directives the tor
//! generator writes (each once, `Bridge` once per bridge), and the values
//! that come from options read back as given; a rendered JSON config parses
//! and holds only the key paths its generator writes, with the option values
//! where they belong and enum options within their manifest's values; a value
//! the generator refuses is refused, not rendered. Values of options the
//! manifest marks `secret` never show in an error, and `redact` hides them.
#![no_main]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hangar_feature::catalog::manifest::{self, Manifest};
use hangar_feature::configgen::{
    redact, secret_keys, GeneratorRegistry, InstanceContext, RenderInput,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const MANIFESTS: [(&str, &str); 3] = [
    ("tor", include_str!("../../catalog/tor/manifest.json")),
    (
        "sing-box",
        include_str!("../../catalog/sing-box/manifest.json"),
    ),
    ("xray", include_str!("../../catalog/xray/manifest.json")),
];

/// Put before the values of secret options when the input asks; it must
/// never show in an error.
const MARK: &str = "Zq7secret";

struct Setup {
    dir: PathBuf,
    manifests: Vec<(Manifest, Vec<String>, BTreeSet<String>)>,
    ctx: InstanceContext,
    reg: GeneratorRegistry,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tmp").keep();
        let manifests = MANIFESTS
            .iter()
            .map(|(id, text)| {
                let m = manifest::parse(text, false).unwrap_or_else(|p| panic!("{id}: {p:?}"));
                let keys: Vec<String> = m
                    .config
                    .as_ref()
                    .map(|c| c.options.keys().cloned().collect())
                    .unwrap_or_default();
                let secrets = secret_keys(&m);
                (m, keys, secrets)
            })
            .collect();
        let ctx = InstanceContext::new("inst1", "my-inst", "x", &dir, &dir.join("bin"));
        ctx.create_dirs().expect("dirs");
        Setup {
            dir,
            manifests,
            ctx,
            reg: GeneratorRegistry::builtin(),
        }
    })
}

#[derive(Arbitrary, Debug)]
enum Key {
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<String>),
    Mixed(Vec<Val>),
    Null,
}

impl Val {
    fn json(&self, mark: bool) -> Value {
        let s = |s: &str| {
            Value::String(if mark {
                format!("{MARK}{s}")
            } else {
                s.to_string()
            })
        };
        match self {
            Val::Str(v) => s(v),
            Val::Int(i) => Value::from(*i),
            Val::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Val::Bool(b) => Value::Bool(*b),
            Val::List(l) => Value::Array(l.iter().map(|v| s(v)).collect()),
            Val::Mixed(l) => Value::Array(l.iter().map(|v| v.json(mark)).collect()),
            Val::Null => Value::Null,
        }
    }
}

/// An input: a byte for the generator, one for the mode (0: none given;
/// 1..: the modes, then a name of the input's own, `own_mode`), one of flags
/// (1: mark secrets, 2: a second port, 4 and 8: the bind address), then the
/// options: a JSON object (the seeds), or anything else read as arbitrary's
/// `(String mode, Vec<(Key, Val)>)`.
struct Input {
    generator: u8,
    mode: u8,
    own_mode: String,
    options: Vec<(Key, Val)>,
    json: Option<Map<String, Value>>,
    mark_secrets: bool,
    bind: u8,
    second_port: bool,
}

fn parse(data: &[u8]) -> Option<Input> {
    let [generator, mode, flags, rest @ ..] = data else {
        return None;
    };
    let mut input = Input {
        generator: *generator,
        mode: *mode,
        own_mode: String::new(),
        options: Vec::new(),
        json: None,
        mark_secrets: flags & 1 == 1,
        second_port: flags & 2 == 2,
        bind: (flags >> 2) & 3,
    };
    match serde_json::from_slice::<Value>(rest) {
        Ok(Value::Object(m)) => input.json = Some(m),
        _ => {
            let (own, opts) =
                <(String, Vec<(Key, Val)>)>::arbitrary_take_rest(Unstructured::new(rest)).ok()?;
            input.own_mode = own;
            input.options = opts;
        }
    }
    Some(input)
}

/// One directive of a torrc as tor reads it (`confline.c`), `None` where tor
/// refuses the file: a key, then the rest of the line (a `#` starts a
/// comment, `\` + newline continues the line, trailing blanks dropped), or a
/// C-quoted string (`cstring.c`: `\n`, `\t`, `\r`, `\\`, `\"`, `\'`, `\xHH`,
/// octal; nothing but blanks or a comment after it).
fn torrc(text: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    loop {
        while i < b.len() && space(b[i]) {
            i += 1;
        }
        if i == b.len() {
            return Some(out);
        }
        if b[i] == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while i < b.len() && !space(b[i]) && b[i] != b'#' {
            i += 1;
        }
        let key = text[start..i].to_string();
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        let mut value = Vec::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            loop {
                match *b.get(i)? {
                    b'\n' | 0 => return None,
                    b'"' => break,
                    b'\\' => {
                        let c = *b.get(i + 1)?;
                        match c {
                            b'x' | b'X' => {
                                let h = std::str::from_utf8(b.get(i + 2..i + 4)?).ok()?;
                                value.push(u8::from_str_radix(h, 16).ok()?);
                                i += 4;
                            }
                            b'0'..=b'7' => {
                                let mut n = 0u32;
                                let mut j = i + 1;
                                while j < i + 4 && j < b.len() && (b'0'..=b'7').contains(&b[j]) {
                                    n = n * 8 + u32::from(b[j] - b'0');
                                    j += 1;
                                }
                                value.push(u8::try_from(n).ok()?);
                                i = j;
                            }
                            b'n' | b'r' | b't' | b'\\' | b'"' | b'\'' => {
                                value.push(match c {
                                    b'n' => b'\n',
                                    b'r' => b'\r',
                                    b't' => b'\t',
                                    c => c,
                                });
                                i += 2;
                            }
                            _ => return None,
                        }
                    }
                    c => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            i += 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            if i < b.len() && b[i] == b'#' {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            if i < b.len() && b[i] != b'\n' {
                return None;
            }
        } else {
            while i < b.len() && b[i] != b'\n' {
                if b[i] == b'\\' && b.get(i + 1) == Some(&b'\n') {
                    i += 2;
                } else if b[i] == b'#' {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                } else {
                    value.push(b[i]);
                    i += 1;
                }
            }
            while value.last().is_some_and(|c| space(*c)) {
                value.pop();
            }
        }
        out.push((key, value));
    }
}

const TORRC_KEYS: &[&str] = &[
    "RunAsDaemon",
    "DataDirectory",
    "Log",
    "SafeLogging",
    "AvoidDiskWrites",
    "SocksPort",
    "ControlPort",
    "CookieAuthentication",
    "CookieAuthFile",
    "ExitNodes",
    "ExcludeNodes",
    "StrictNodes",
    "UseBridges",
    "Bridge",
    "DisableNetwork",
    "ClientOnly",
    "ORPort",
    "Nickname",
    "ContactInfo",
    "ExitRelay",
    "ExitPolicy",
    "IPv6Exit",
    "PublishServerDescriptor",
    "RelayBandwidthRate",
    "RelayBandwidthBurst",
];

fn strs(o: &Map<String, Value>, k: &str) -> Vec<String> {
    o.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn nonempty<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn check_tor(text: &str, o: &Map<String, Value>) {
    let lines = torrc(text).unwrap_or_else(|| panic!("tor refuses the rendered torrc:\n{text}"));
    let get = |k: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| String::from_utf8(v.clone()).expect("UTF-8 value"))
            .collect()
    };
    for (k, _) in &lines {
        assert!(
            TORRC_KEYS.contains(&k.as_str()),
            "directive {k:?} injected:\n{text}"
        );
        if k != "Bridge" {
            assert_eq!(get(k).len(), 1, "{k} twice:\n{text}");
        }
    }
    let joined = |k: &str| {
        let v = strs(o, k);
        if v.is_empty() {
            vec![]
        } else {
            vec![v.join(",")]
        }
    };
    assert_eq!(get("ExitNodes"), joined("exit_nodes"), "{text}");
    assert_eq!(get("ExcludeNodes"), joined("exclude_nodes"), "{text}");
    assert_eq!(get("Bridge"), strs(o, "bridges"), "{text}");
    assert_eq!(
        get("UseBridges").len(),
        usize::from(!strs(o, "bridges").is_empty())
    );
    let relay = !get("ORPort").is_empty();
    assert_eq!(get("ClientOnly").is_empty(), relay, "{text}");
    if relay {
        assert_eq!(
            get("Nickname"),
            [nonempty(o, "nickname").unwrap_or("hangar")],
            "{text}"
        );
        let contact: Vec<&str> = nonempty(o, "contact_info").into_iter().collect();
        assert_eq!(get("ContactInfo"), contact, "{text}");
    } else {
        for k in ["Nickname", "ContactInfo", "ExitRelay", "RelayBandwidthRate"] {
            assert!(get(k).is_empty(), "a client with {k}:\n{text}");
        }
    }
    let level = nonempty(o, "log_level").unwrap_or("notice");
    let log = get("Log");
    assert!(log[0].starts_with(&format!("{level} file ")), "{text}");
}

/// Every key path of a JSON value (`a.b[].c`).
fn paths(v: &Value, at: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                out.insert(p.clone());
                paths(v, &p, out);
            }
        }
        Value::Array(a) => {
            for v in a {
                paths(v, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

const SINGBOX_PATHS: &[&str] = &[
    "log",
    "log.level",
    "log.output",
    "log.timestamp",
    "inbounds",
    "inbounds[].type",
    "inbounds[].tag",
    "inbounds[].listen",
    "inbounds[].listen_port",
    "inbounds[].users",
    "inbounds[].users[].username",
    "inbounds[].users[].password",
    "inbounds[].method",
    "inbounds[].password",
    "inbounds[].interface_name",
    "inbounds[].address",
    "inbounds[].mtu",
    "inbounds[].auto_route",
    "inbounds[].strict_route",
    "inbounds[].stack",
    "outbounds",
    "outbounds[].type",
    "outbounds[].tag",
    "outbounds[].server",
    "outbounds[].server_port",
    "outbounds[].version",
    "outbounds[].method",
    "outbounds[].password",
    "route",
    "route.final",
    "route.auto_detect_interface",
    "experimental",
    "experimental.clash_api",
    "experimental.clash_api.external_controller",
    "experimental.clash_api.secret",
    "experimental.cache_file",
    "experimental.cache_file.enabled",
    "experimental.cache_file.path",
];

const XRAY_PATHS: &[&str] = &[
    "log",
    "log.loglevel",
    "log.access",
    "log.error",
    "inbounds",
    "inbounds[].tag",
    "inbounds[].protocol",
    "inbounds[].listen",
    "inbounds[].port",
    "inbounds[].settings",
    "inbounds[].settings.auth",
    "inbounds[].settings.udp",
    "inbounds[].settings.ip",
    "inbounds[].settings.accounts",
    "inbounds[].settings.accounts[].user",
    "inbounds[].settings.accounts[].pass",
    "inbounds[].settings.clients",
    "inbounds[].settings.clients[].id",
    "inbounds[].settings.method",
    "inbounds[].settings.password",
    "inbounds[].settings.network",
    "outbounds",
    "outbounds[].tag",
    "outbounds[].protocol",
    "outbounds[].settings",
    "outbounds[].settings.vnext",
    "outbounds[].settings.vnext[].address",
    "outbounds[].settings.vnext[].port",
    "outbounds[].settings.vnext[].users",
    "outbounds[].settings.vnext[].users[].id",
    "outbounds[].settings.vnext[].users[].security",
    "outbounds[].settings.servers",
    "outbounds[].settings.servers[].address",
    "outbounds[].settings.servers[].port",
    "outbounds[].settings.servers[].method",
    "outbounds[].settings.servers[].password",
    "routing",
    "routing.domainStrategy",
    "routing.rules",
    "routing.rules[].type",
    "routing.rules[].ip",
    "routing.rules[].outboundTag",
];

/// Every string at `path` (a key path as [`paths`] writes it).
fn strings_at<'a>(v: &'a Value, path: &str) -> Vec<&'a str> {
    fn walk<'a>(v: &'a Value, parts: &[&str], out: &mut Vec<&'a str>) {
        let Some((first, rest)) = parts.split_first() else {
            if let Some(s) = v.as_str() {
                out.push(s);
            }
            return;
        };
        let (name, arr) = match first.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (*first, false),
        };
        let Some(child) = v.get(name) else { return };
        if arr {
            for c in child.as_array().into_iter().flatten() {
                walk(c, rest, out);
            }
        } else {
            walk(child, rest, out);
        }
    }
    let parts: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    walk(v, &parts, &mut out);
    out
}

fn check_json(id: &str, m: &Manifest, text: &str, o: &Map<String, Value>) {
    let v: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("rendered {id} JSON does not parse: {e}\n{text}"));
    let mut got = BTreeSet::new();
    paths(&v, "", &mut got);
    let allowed = if id == "sing-box" {
        SINGBOX_PATHS
    } else {
        XRAY_PATHS
    };
    for p in &got {
        assert!(
            allowed.contains(&p.as_str()),
            "{id}: key {p:?} injected:\n{text}"
        );
    }
    // Enum options are written only with their manifest's values.
    let specs = &m.config.as_ref().expect("config").options;
    let in_enum = |key: &str, s: &str| {
        let spec = &specs[key];
        assert!(
            spec.choices.contains(&Value::String(s.into())),
            "{id}: {key} {s:?} is not one of the manifest's values:\n{text}"
        );
    };
    let (level, types, methods) = if id == "sing-box" {
        (
            "log.level",
            "inbounds[].type",
            ["inbounds[].method", "outbounds[].method"],
        )
    } else {
        (
            "log.loglevel",
            "inbounds[].protocol",
            [
                "inbounds[].settings.method",
                "outbounds[].settings.servers[].method",
            ],
        )
    };
    for s in strings_at(&v, level) {
        in_enum("log_level", s);
    }
    for m in methods {
        for s in strings_at(&v, m) {
            in_enum("method", s);
        }
    }
    let inbound = strings_at(&v, types)[0];
    let wanted = nonempty(o, "inbound");
    if let Some(w) = wanted {
        assert_eq!(
            inbound, w,
            "{id}: the inbound is not the one asked for:\n{text}"
        );
    }
    // Credentials land where they belong, as given.
    let user_paths = if id == "sing-box" {
        ["inbounds[].users[].username", "inbounds[].users[].password"]
    } else {
        [
            "inbounds[].settings.accounts[].user",
            "inbounds[].settings.accounts[].pass",
        ]
    };
    for u in strings_at(&v, user_paths[0]) {
        assert_eq!(Some(u), nonempty(o, "auth_username"), "{text}");
    }
    for p in strings_at(&v, user_paths[1]) {
        assert_eq!(
            p,
            o.get("auth_password").and_then(Value::as_str).unwrap_or(""),
            "{text}"
        );
    }
    if id == "xray" {
        for path in [
            "inbounds[].settings.clients[].id",
            "outbounds[].settings.vnext[].users[].id",
        ] {
            for u in strings_at(&v, path) {
                assert_eq!(Some(u), nonempty(o, "uuid"), "{text}");
                assert!(is_uuid(u), "{u:?} is no UUID:\n{text}");
            }
        }
    }
}

/// 8-4-4-4-12 hex digits.
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|c| c.is_ascii_hexdigit()))
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = parse(data) else {
        return;
    };
    let s = setup();
    let g = usize::from(input.generator) % s.manifests.len();
    let (m, keys, secrets) = &s.manifests[g];
    let id = MANIFESTS[g].0;
    let mode: Option<String> = match usize::from(input.mode) % (m.modes.len() + 2) {
        0 => None,
        i => Some(
            m.modes
                .get(i - 1)
                .map_or(input.own_mode.clone(), |md| md.id.clone()),
        ),
    };
    let mut user = Map::new();
    for (k, v) in input.json.iter().flatten() {
        let mark = |v: &Value| -> Value {
            match v {
                Value::String(s) => Value::String(format!("{MARK}{s}")),
                Value::Array(a) => Value::Array(
                    a.iter()
                        .map(|x| match x {
                            Value::String(s) => Value::String(format!("{MARK}{s}")),
                            x => x.clone(),
                        })
                        .collect(),
                ),
                v => v.clone(),
            }
        };
        let v = if input.mark_secrets && secrets.contains(k) {
            mark(v)
        } else {
            v.clone()
        };
        user.insert(k.clone(), v);
    }
    for (k, v) in &input.options {
        let key = match k {
            Key::Known(i) => keys[usize::from(*i) % keys.len()].clone(),
            Key::Other(s) => s.clone(),
        };
        let mark = input.mark_secrets && secrets.contains(&key);
        user.insert(key, v.json(mark));
    }
    // The mark is only ever in values of secret options.
    let marked = input.mark_secrets
        && user
            .iter()
            .any(|(k, v)| secrets.contains(k) && !v.is_null());
    if input.own_mode.contains(MARK)
        || user.iter().any(|(k, v)| {
            k.contains(MARK) || (!secrets.contains(k) && v.to_string().contains(MARK))
        })
    {
        return;
    }
    let no_mark = |what: &str, text: &str| {
        if marked {
            assert!(
                !text.contains(MARK),
                "{what} shows a secret option's value:\n{text}"
            );
        }
    };
    let merged = match s.reg.validate_options(m, mode.as_deref(), &user) {
        Ok(merged) => merged,
        Err(e) => {
            assert!(e.code().starts_with("CONFIG_"), "{e}");
            assert!(!e.message.is_empty());
            no_mark("an options error", &format!("{e}\n{e:?}"));
            return;
        }
    };
    no_mark(
        "redact",
        &serde_json::to_string(&redact(m, &merged)).expect("JSON"),
    );
    let mut ctx = s.ctx.clone();
    ctx.feature = m.id.clone();
    ctx.mode = mode
        .clone()
        .or_else(|| m.modes.first().map(|md| md.id.clone()));
    ctx.bind = match input.bind {
        0 => IpAddr::from([127, 0, 0, 1]),
        1 => "::1".parse().expect("ip"),
        _ => IpAddr::from([10, 77, 0, 2]),
    };
    let names = &m.network.port_names;
    ctx.ports = names
        .iter()
        .take(if input.second_port { 2 } else { 1 })
        .enumerate()
        .map(|(i, n)| (n.clone(), 20000 + i as u16))
        .collect();
    let r = s.reg.render(&RenderInput {
        manifest: m,
        manifest_dir: Path::new(&s.dir),
        ctx: &ctx,
        options: &merged,
    });
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            assert!(e.code().starts_with("CONFIG_"), "{e}");
            assert!(!e.message.is_empty());
            no_mark("a render error", &format!("{e}\n{e:?}"));
            return;
        }
    };
    let text = &r.main_file().expect("a main file").contents;
    match id {
        "tor" => check_tor(text, &merged),
        _ => check_json(id, m, text, &merged),
    }
});
