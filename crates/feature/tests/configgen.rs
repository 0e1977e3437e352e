//! Config generators against the real catalog manifests: option validation
//! (every error kind, merge order, `--set` parsing), each generator's output
//! parsed back, newline injection refused, the template generator with a real
//! template file, atomic writes, and the features' own checkers — Debian's
//! `tor --verify-config` and `v2ray -test` (Xray-compatible) — run for real.
//! Tests that need a checker skip with a printed reason when it is missing.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hangar_feature::catalog::manifest::{self, Manifest};
use hangar_feature::configgen::{
    self, check, check_with_timeout, parse_sets, stage, validate_options, write_atomic,
    GeneratorRegistry, InstanceContext, RenderInput, Rendered,
};
use serde_json::{json, Map, Value};

fn catalog_manifest(id: &str) -> Manifest {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../catalog")
        .join(id)
        .join("manifest.json");
    let text = std::fs::read_to_string(&path).expect("read manifest");
    manifest::parse(&text, false).unwrap_or_else(|p| panic!("{id}: {p:?}"))
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn ctx(dir: &Path, m: &Manifest, mode: Option<&str>, ports: &[(&str, u16)]) -> InstanceContext {
    let mut c = InstanceContext::new("inst1", "my-inst", &m.id, dir, &dir.join("bin"));
    c.mode = mode.map(str::to_string);
    c.ports = ports
        .iter()
        .map(|(n, p)| (n.to_string(), *p))
        .collect::<BTreeMap<_, _>>();
    c.create_dirs().expect("dirs");
    for d in [&c.data_dir, &c.log_dir, &c.config_dir] {
        let mode = std::fs::metadata(d).expect("dir").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
    c
}

/// Validate, then render, as the flow does.
fn render(
    m: &Manifest,
    dir: &Path,
    mode: Option<&str>,
    user: Value,
    ports: &[(&str, u16)],
) -> (InstanceContext, Rendered) {
    let reg = GeneratorRegistry::builtin();
    let merged = reg
        .validate_options(m, mode, &obj(user))
        .unwrap_or_else(|e| panic!("options: {e:?}"));
    let c = ctx(dir, m, mode, ports);
    let r = reg
        .render(&RenderInput {
            manifest: m,
            manifest_dir: dir,
            ctx: &c,
            options: &merged,
        })
        .unwrap_or_else(|e| panic!("render: {e:?}"));
    (c, r)
}

fn main_text(r: &Rendered) -> &str {
    &r.main_file().expect("main").contents
}

/// torrc lines as (key, value), comments skipped.
fn torrc(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once(' ').expect("key value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn get<'a>(lines: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn ctx_has(e: &hangar_feature::Error, key: &str, needle: &str) -> bool {
    e.context
        .iter()
        .any(|(k, v)| k == key && v.contains(needle))
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.is_file())
    })
}

// ---------------------------------------------------------------- options

#[test]
fn unknown_mode_lists_the_modes() {
    let m = catalog_manifest("tor");
    let e = validate_options(&m, Some("bridge"), &Map::new()).unwrap_err();
    assert_eq!(e.code(), "CONFIG_UNKNOWN_MODE");
    let hint = e.hint.clone().unwrap_or_default();
    assert!(hint.contains("client") && hint.contains("relay"), "{e:?}");
    assert!(ctx_has(&e, "mode", "bridge"));
}

#[test]
fn each_option_error_kind_names_the_key() {
    let m = catalog_manifest("tor");
    let cases: &[(Value, &str, &str)] = &[
        (
            json!({"nick_name": "x"}),
            "CONFIG_UNKNOWN_OPTION",
            "nick_name",
        ),
        (
            json!({"or_port": "9001"}),
            "CONFIG_BAD_OPTION_TYPE",
            "or_port",
        ),
        (
            json!({"strict_nodes": "yes"}),
            "CONFIG_BAD_OPTION_TYPE",
            "strict_nodes",
        ),
        (
            json!({"exit_nodes": "{de}"}),
            "CONFIG_BAD_OPTION_TYPE",
            "exit_nodes",
        ),
        (
            json!({"exit_nodes": ["{de}", 7]}),
            "CONFIG_BAD_OPTION_TYPE",
            "exit_nodes[1]",
        ),
        (
            json!({"or_port": 70000}),
            "CONFIG_OPTION_OUT_OF_RANGE",
            "or_port",
        ),
        (
            json!({"or_port": 0}),
            "CONFIG_OPTION_OUT_OF_RANGE",
            "or_port",
        ),
        (
            json!({"bandwidth_rate_kbytes": -1}),
            "CONFIG_OPTION_OUT_OF_RANGE",
            "bandwidth_rate_kbytes",
        ),
        (
            json!({"nickname": "abcdefghijklmnopqrstuvwxyz"}),
            "CONFIG_OPTION_OUT_OF_RANGE",
            "nickname",
        ),
        (
            json!({"log_level": "loud"}),
            "CONFIG_OPTION_NOT_IN_ENUM",
            "log_level",
        ),
        (json!({"role": "exit"}), "CONFIG_OPTION_NOT_IN_ENUM", "role"),
        (
            json!({"contact_info": "a\nb"}),
            "CONFIG_BAD_OPTION_VALUE",
            "contact_info",
        ),
    ];
    for (user, code, key) in cases {
        let e = validate_options(&m, Some("client"), &obj(user.clone())).unwrap_err();
        assert_eq!(e.code(), *code, "{user}: {e:?}");
        assert!(
            ctx_has(&e, "option", key),
            "{user}: key {key} not named: {e:?}"
        );
        assert!(e.message.contains(key), "{user}: {e:?}");
        assert!(e.hint.is_some());
    }
    // Did-you-mean for a near miss.
    let e = validate_options(&m, None, &obj(json!({"nicknme": "x"}))).unwrap_err();
    assert!(e.message.contains("\"nickname\""), "{e:?}");
}

#[test]
fn missing_required_options_per_mode() {
    let m = catalog_manifest("xray");
    let e = validate_options(&m, Some("vmess-client"), &Map::new()).unwrap_err();
    assert_eq!(e.code(), "CONFIG_MISSING_OPTION");
    for k in ["uuid", "server_address", "server_port"] {
        assert!(ctx_has(&e, "option", k), "{k}: {e:?}");
    }
    // The generator's own checks run too: a malformed UUID.
    let reg = GeneratorRegistry::builtin();
    let e = reg
        .validate_options(
            &m,
            Some("vmess-server"),
            &obj(json!({"uuid": "not-a-uuid"})),
        )
        .unwrap_err();
    assert_eq!(e.code(), "CONFIG_BAD_OPTION_VALUE");
    assert!(ctx_has(&e, "option", "uuid"));
    // Shadowsocks client in sing-box needs the server and a password.
    let sb = catalog_manifest("sing-box");
    let e = reg
        .validate_options(&sb, Some("socks-proxy"), &obj(json!({"outbound": "socks"})))
        .unwrap_err();
    assert_eq!(e.code(), "CONFIG_MISSING_OPTION");
    assert!(ctx_has(&e, "option", "server_address") && ctx_has(&e, "option", "server_port"));
}

#[test]
fn values_of_secret_options_never_show_in_errors() {
    let reg = GeneratorRegistry::builtin();
    let shown = |e: &hangar_feature::Error| format!("{e}\n{e:?}");
    // xray's uuid is the vmess credential: a malformed one is refused
    // without being repeated, by the option check and by the generator.
    let xray = catalog_manifest("xray");
    let bad_uuid = "6a1c2b3d-4e5f-4a6b-8c7d-5ECRE75ECRE7";
    let e = reg
        .validate_options(&xray, Some("vmess-server"), &obj(json!({"uuid": bad_uuid})))
        .unwrap_err();
    assert_eq!(e.code(), "CONFIG_BAD_OPTION_VALUE");
    assert!(ctx_has(&e, "option", "uuid"));
    assert!(!shown(&e).contains("5ECRE75ECRE7"), "{}", shown(&e));
    let tmp = tempfile::tempdir().expect("tmp");
    let mut merged = reg
        .validate_options(
            &xray,
            Some("vmess-server"),
            &obj(json!({"uuid": "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"})),
        )
        .expect("a good uuid");
    merged.insert("uuid".into(), json!(bad_uuid));
    let c = ctx(tmp.path(), &xray, Some("vmess-server"), &[("main", 21080)]);
    let e = reg
        .render(&RenderInput {
            manifest: &xray,
            manifest_dir: tmp.path(),
            ctx: &c,
            options: &merged,
        })
        .unwrap_err();
    assert!(!shown(&e).contains("5ECRE75ECRE7"), "{}", shown(&e));
    // A secret of the wrong type is refused without showing it.
    let sb = catalog_manifest("sing-box");
    let e = reg
        .validate_options(
            &sb,
            None,
            &obj(json!({"password": ["hunter2-in-a-list"], "api_secret": {"k": "hunter2-in-a-map"}, "auth_password": 31337})),
        )
        .unwrap_err();
    for key in ["password", "api_secret", "auth_password"] {
        assert!(ctx_has(&e, "option", key), "{key}: {e:?}");
    }
    for secret in ["hunter2", "31337"] {
        assert!(!shown(&e).contains(secret), "{}", shown(&e));
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let m = catalog_manifest("tor");
    let e = validate_options(
        &m,
        Some("relay"),
        &obj(json!({"bogus": 1, "or_port": "x", "log_level": "loud", "nickname": "a\r"})),
    )
    .unwrap_err();
    assert_eq!(e.code(), "CONFIG_OPTIONS_INVALID", "{e:?}");
    for (k, code) in [
        ("bogus", "CONFIG_UNKNOWN_OPTION"),
        ("or_port", "CONFIG_BAD_OPTION_TYPE"),
        ("log_level", "CONFIG_OPTION_NOT_IN_ENUM"),
        ("nickname", "CONFIG_BAD_OPTION_VALUE"),
    ] {
        assert!(ctx_has(&e, "option", k), "{k}: {e:?}");
        assert!(
            e.context
                .iter()
                .any(|(kk, v)| kk == "problem" && v.starts_with(k) && v.contains(code)),
            "{k} {code}: {e:?}"
        );
    }
    // Same kind twice: that kind's code.
    let e = validate_options(&m, None, &obj(json!({"a": 1, "b": 2}))).unwrap_err();
    assert_eq!(e.code(), "CONFIG_UNKNOWN_OPTION");
}

#[test]
fn merge_order_user_over_mode_over_option_defaults() {
    let m = catalog_manifest("tor");
    // Option defaults only (client mode sets role only).
    let merged = validate_options(&m, Some("client"), &Map::new()).expect("ok");
    assert_eq!(merged["role"], json!("client"));
    assert_eq!(merged["log_level"], json!("notice")); // option default
    assert_eq!(merged["or_port"], json!(9001));
    // Mode defaults over option defaults.
    let merged = validate_options(&m, Some("relay"), &Map::new()).expect("ok");
    assert_eq!(merged["role"], json!("relay"));
    // User over mode; a whole float is normalized; null means "the default".
    let merged = validate_options(
        &m,
        Some("relay"),
        &obj(json!({"or_port": 9443.0, "role": null, "exit_relay": true})),
    )
    .expect("ok");
    assert_eq!(merged["or_port"], json!(9443));
    assert_eq!(merged["role"], json!("relay"));
    assert_eq!(merged["exit_relay"], json!(true));
    // No mode given: the first mode.
    let merged = validate_options(&m, None, &Map::new()).expect("ok");
    assert_eq!(merged["role"], json!("client"));
}

#[test]
fn undeclared_options_are_inferred_from_mode_defaults() {
    // A manifest without config.options: the modes' default keys are the
    // options, typed by their defaults.
    let m = manifest::from_value(json!({
        "id": "p", "name": "P", "version": "1",
        "source": {"type": "file", "asset_pattern": "p.tgz", "verification": {"type": "none"}},
        "binary": {"path": "p"},
        "modes": [{"id": "a", "defaults": {"level": "info", "workers": 2, "fast": true}}]
    }))
    .expect("manifest");
    let merged = validate_options(&m, None, &obj(json!({"workers": 4}))).expect("ok");
    assert_eq!(merged["workers"], json!(4));
    assert_eq!(merged["level"], json!("info"));
    let e = validate_options(&m, None, &obj(json!({"workers": "4"}))).unwrap_err();
    assert_eq!(e.code(), "CONFIG_BAD_OPTION_TYPE");
    let e = validate_options(&m, None, &obj(json!({"other": 1}))).unwrap_err();
    assert_eq!(e.code(), "CONFIG_UNKNOWN_OPTION");
}

#[test]
fn set_strings_are_typed_by_the_schema() {
    let m = catalog_manifest("tor");
    let v = parse_sets(
        &m,
        &[
            "or_port=9443",
            "strict_nodes=yes",
            "safe_logging=off",
            "exit_nodes={de},{nl}",
            "exit_nodes={se}",
            "bridges=[\"192.0.2.1:443\"]",
            "contact_info=a=b c",
            "role=relay",
            "unknown=1",
        ],
    )
    .expect("parse");
    assert_eq!(v["or_port"], json!(9443));
    assert_eq!(v["strict_nodes"], json!(true));
    assert_eq!(v["safe_logging"], json!(false));
    assert_eq!(v["exit_nodes"], json!(["{de}", "{nl}", "{se}"]));
    assert_eq!(v["bridges"], json!(["192.0.2.1:443"]));
    assert_eq!(v["contact_info"], json!("a=b c"));
    assert_eq!(v["role"], json!("relay"));
    // Unknown keys pass through as strings for validation to name.
    assert_eq!(v["unknown"], json!("1"));
    let e = validate_options(&m, None, &v).unwrap_err();
    assert_eq!(e.code(), "CONFIG_UNKNOWN_OPTION");
    assert!(ctx_has(&e, "option", "unknown"));

    let e = parse_sets(&m, &["or_port=ninety", "strict_nodes=maybe"]).unwrap_err();
    assert_eq!(e.code(), "CONFIG_BAD_OPTION_TYPE");
    assert!(ctx_has(&e, "option", "or_port") && ctx_has(&e, "option", "strict_nodes"));
    let e = parse_sets(&m, &["or_port"]).unwrap_err();
    assert_eq!(e.code(), "CONFIG_BAD_SET");
    // A parsed but out-of-range port is refused by validation.
    let v = parse_sets(&m, &["or_port=99999"]).expect("parse");
    let e = validate_options(&m, None, &v).unwrap_err();
    assert_eq!(e.code(), "CONFIG_OPTION_OUT_OF_RANGE");
}

#[test]
fn manifest_option_schemas_are_checked_at_load() {
    let base = json!({
        "id": "p", "name": "P", "version": "1",
        "source": {"type": "file", "asset_pattern": "p.tgz", "verification": {"type": "none"}},
        "binary": {"path": "p"},
        "config": {"generator": "template", "template": "t.j2", "options": {
            "port": {"type": "port", "default": 70000},
            "level": {"type": "enum"},
            "n": {"type": "integer", "minimum": 5, "maximum": 1}
        }},
        "modes": [{"id": "a", "defaults": {"nope": 1, "n": "x"}, "required": ["ghost"]}]
    });
    let errs = manifest::from_value(base.clone()).unwrap_err();
    let text: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
    // enum without values is a schema error (reported before semantics).
    assert!(
        text.iter().any(|t| t.contains("/config/options/level")),
        "{text:?}"
    );
    let mut v = base;
    v["config"]["options"]["level"] = json!({"type": "enum", "enum": ["a"]});
    let errs = manifest::from_value(v.clone()).unwrap_err();
    let text: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
    for needle in [
        "/config/options/port/default",
        "/config/options/n/minimum",
        "/modes/0/defaults/nope",
        "/modes/0/defaults/n",
        "/modes/0/required/0",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(needle)),
            "{needle}: {text:?}"
        );
    }
    v["config"]["template"] = json!("../../etc/passwd");
    let errs = manifest::from_value(v).unwrap_err();
    assert!(
        errs.iter().any(|p| p.pointer == "/config/template"),
        "{errs:?}"
    );
}

// ---------------------------------------------------------------- generators

#[test]
fn tor_client_torrc() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = catalog_manifest("tor");
    let (c, r) = render(
        &m,
        tmp.path(),
        Some("client"),
        json!({"exit_nodes": ["{de}", "{nl}"], "strict_nodes": true}),
        &[("socks", 19050), ("control", 19051)],
    );
    assert_eq!(r.main, "torrc");
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.files[0].format, "torrc");
    let l = torrc(main_text(&r));
    assert_eq!(get(&l, "RunAsDaemon"), ["0"]);
    assert_eq!(get(&l, "SocksPort"), ["127.0.0.1:19050"]);
    assert_eq!(get(&l, "ControlPort"), ["127.0.0.1:19051"]);
    assert_eq!(get(&l, "CookieAuthentication"), ["1"]);
    assert_eq!(get(&l, "DataDirectory"), [c.data_dir.to_str().unwrap()]);
    assert_eq!(
        get(&l, "Log"),
        [format!("notice file {}", c.log_dir.join("tor.log").display()).as_str()]
    );
    assert_eq!(get(&l, "ClientOnly"), ["1"]);
    assert_eq!(get(&l, "ExitNodes"), ["{de},{nl}"]);
    assert_eq!(get(&l, "StrictNodes"), ["1"]);
    assert!(get(&l, "ORPort").is_empty());
    assert!(get(&l, "DisableNetwork").is_empty());
    let (_, r) = render(
        &m,
        tmp.path(),
        Some("client"),
        json!({"disable_network": true}),
        &[("socks", 19050), ("control", 19051)],
    );
    assert_eq!(get(&torrc(main_text(&r)), "DisableNetwork"), ["1"]);
}

#[test]
fn tor_relay_torrc_and_ipv6_bind() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = catalog_manifest("tor");
    let reg = GeneratorRegistry::builtin();
    let merged = reg
        .validate_options(
            &m,
            Some("relay"),
            &obj(json!({"nickname": "HangarTest", "contact_info": "ops #1 <ops@example.org>", "or_port": 9443, "bandwidth_rate_kbytes": 512})),
        )
        .expect("options");
    let mut c = ctx(
        tmp.path(),
        &m,
        Some("relay"),
        &[("socks", 19050), ("control", 19051)],
    );
    c.bind = "::1".parse().unwrap();
    let r = reg
        .render(&RenderInput {
            manifest: &m,
            manifest_dir: tmp.path(),
            ctx: &c,
            options: &merged,
        })
        .expect("render");
    let l = torrc(main_text(&r));
    assert_eq!(get(&l, "SocksPort"), ["[::1]:19050"]);
    assert_eq!(get(&l, "ORPort"), ["9443"]);
    assert_eq!(get(&l, "Nickname"), ["HangarTest"]);
    // '#' would start a comment: quoted.
    assert_eq!(get(&l, "ContactInfo"), ["\"ops #1 <ops@example.org>\""]);
    assert_eq!(get(&l, "ExitRelay"), ["0"]);
    assert_eq!(get(&l, "ExitPolicy"), ["reject *:*"]);
    assert_eq!(get(&l, "RelayBandwidthRate"), ["512 KBytes"]);
    assert!(get(&l, "ClientOnly").is_empty());
}

#[test]
fn newline_injection_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = catalog_manifest("tor");
    let reg = GeneratorRegistry::builtin();
    // At validation: before anything is allocated.
    for (k, v) in [
        ("contact_info", json!("me\nSocksPort 0.0.0.0:9999")),
        ("exit_nodes", json!(["{de}\nExitPolicy accept *:*"])),
        ("bridges", json!(["1.2.3.4:443\r\nControlPort 0.0.0.0:1"])),
    ] {
        let mut user = Map::new();
        user.insert(k.to_string(), v);
        let e = reg.validate_options(&m, Some("relay"), &user).unwrap_err();
        assert_eq!(e.code(), "CONFIG_BAD_OPTION_VALUE", "{k}: {e:?}");
        assert!(
            e.context
                .iter()
                .any(|(kk, vv)| kk == "option" && vv.starts_with(k)),
            "{e:?}"
        );
    }
    // And at render, for options that skipped validation.
    let mut merged = validate_options(&m, Some("relay"), &Map::new()).expect("ok");
    merged.insert("contact_info".into(), json!("me\nSocksPort 0.0.0.0:9999"));
    let c = ctx(
        tmp.path(),
        &m,
        Some("relay"),
        &[("socks", 1), ("control", 2)],
    );
    let e = reg
        .render(&RenderInput {
            manifest: &m,
            manifest_dir: tmp.path(),
            ctx: &c,
            options: &merged,
        })
        .unwrap_err();
    assert_eq!(e.code(), "CONFIG_BAD_OPTION_VALUE");
    // An instance name with a newline cannot reach the comment header either.
    let mut c2 = c.clone();
    c2.name = "x\nSocksPort 0.0.0.0:1".into();
    let merged = validate_options(&m, Some("relay"), &Map::new()).expect("ok");
    let e = reg
        .render(&RenderInput {
            manifest: &m,
            manifest_dir: tmp.path(),
            ctx: &c2,
            options: &merged,
        })
        .unwrap_err();
    assert_eq!(e.code(), "CONFIG_RENDER_FAILED");
}

#[test]
fn missing_port_is_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = catalog_manifest("tor");
    let merged = validate_options(&m, None, &Map::new()).expect("ok");
    let c = ctx(tmp.path(), &m, None, &[("socks", 1)]);
    let e = GeneratorRegistry::builtin()
        .render(&RenderInput {
            manifest: &m,
            manifest_dir: tmp.path(),
            ctx: &c,
            options: &merged,
        })
        .unwrap_err();
    assert_eq!(e.code(), "CONFIG_PORT_MISSING");
    assert!(e.message.contains("control"), "{e:?}");
}

#[test]
fn named_ports_follow_the_manifest() {
    let m = catalog_manifest("tor");
    assert_eq!(
        m.network.named_ports(),
        [("socks".to_string(), 9050), ("control".to_string(), 9051)]
    );
    let m = catalog_manifest("demo");
    assert_eq!(m.network.named_ports(), [("http".to_string(), 8080)]);
}

#[test]
fn sing_box_modes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = catalog_manifest("sing-box");
    let ports = [("proxy", 21080), ("api", 29090)];
    // socks-proxy: a mixed inbound with auth, direct out, the Clash API.
    let (c, r) = render(
        &m,
        tmp.path(),
        Some("socks-proxy"),
        json!({"auth_username": "u", "auth_password": "p\"w"}),
        &ports,
    );
    let v: Value = serde_json::from_str(main_text(&r)).expect("json");
    assert_eq!(r.main, "config.json");
    assert_eq!(v["inbounds"][0]["type"], "mixed");
    assert_eq!(v["inbounds"][0]["listen"], "127.0.0.1");
    assert_eq!(v["inbounds"][0]["listen_port"], 21080);
    assert_eq!(v["inbounds"][0]["users"][0]["password"], "p\"w");
    assert_eq!(v["outbounds"][0]["type"], "direct");
    assert_eq!(v["route"]["final"], "direct");
    assert_eq!(
        v["experimental"]["clash_api"]["external_controller"],
        "127.0.0.1:29090"
    );
    assert_eq!(
        v["log"]["output"],
        json!(c.log_dir.join("sing-box.log").to_str().unwrap())
    );
    assert_eq!(v["log"]["level"], "info");
    // shadowsocks-server needs a password (mode requirement).
    let e = GeneratorRegistry::builtin()
        .validate_options(&m, Some("shadowsocks-server"), &Map::new())
        .unwrap_err();
    assert_eq!(e.code(), "CONFIG_MISSING_OPTION");
    let (_, r) = render(
        &m,
        tmp.path(),
        Some("shadowsocks-server"),
        json!({"password": "secret", "method": "aes-256-gcm"}),
        &ports,
    );
    let v: Value = serde_json::from_str(main_text(&r)).expect("json");
    assert_eq!(v["inbounds"][0]["type"], "shadowsocks");
    assert_eq!(v["inbounds"][0]["method"], "aes-256-gcm");
    assert_eq!(v["inbounds"][0]["password"], "secret");
    // shadowsocks-client: mixed in, shadowsocks out, routed through it.
    let (_, r) = render(
        &m,
        tmp.path(),
        Some("shadowsocks-client"),
        json!({"password": "secret", "server_address": "192.0.2.7", "server_port": 8388}),
        &ports,
    );
    let v: Value = serde_json::from_str(main_text(&r)).expect("json");
    assert_eq!(v["outbounds"][0]["type"], "shadowsocks");
    assert_eq!(v["outbounds"][0]["server"], "192.0.2.7");
    assert_eq!(v["outbounds"][0]["server_port"], 8388);
    assert_eq!(v["route"]["final"], "proxy");
    // tun-vpn: a tun inbound beside the mixed one.
    let (_, r) = render(&m, tmp.path(), Some("tun-vpn"), json!({}), &ports);
    let v: Value = serde_json::from_str(main_text(&r)).expect("json");
    assert_eq!(v["inbounds"][0]["type"], "tun");
    assert_eq!(v["inbounds"][0]["auto_route"], true);
    assert_eq!(v["inbounds"][0]["address"], json!(["172.19.0.1/30"]));
    assert!(v["inbounds"][0]["interface_name"].as_str().unwrap().len() <= 15);
    assert_eq!(v["inbounds"][1]["type"], "mixed");
}

fn xray_renders() -> Vec<(&'static str, Value, Value)> {
    let uuid = "b831381d-6324-4d53-ad4f-8cda48b30811";
    let ports = json!([["main", 30808], ["http", 30809]]);
    vec![
        ("socks-proxy", json!({}), ports.clone()),
        (
            "socks-proxy",
            json!({"auth_username": "u", "auth_password": "p"}),
            ports.clone(),
        ),
        ("vmess-server", json!({"uuid": uuid}), ports.clone()),
        (
            "shadowsocks-server",
            json!({"password": "pw", "method": "aes-128-gcm"}),
            ports.clone(),
        ),
        (
            "vmess-client",
            json!({"uuid": uuid, "server_address": "192.0.2.1", "server_port": 443}),
            ports.clone(),
        ),
        (
            "socks-proxy",
            json!({"outbound": "shadowsocks", "password": "pw", "server_address": "192.0.2.1", "server_port": 8388}),
            ports,
        ),
    ]
}

fn ports_of(v: &Value) -> Vec<(&str, u16)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap(), p[1].as_u64().unwrap() as u16))
        .collect()
}

#[test]
fn xray_modes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = catalog_manifest("xray");
    let out: Vec<Value> = xray_renders()
        .into_iter()
        .map(|(mode, user, ports)| {
            let (_, r) = render(&m, tmp.path(), Some(mode), user, &ports_of(&ports));
            serde_json::from_str(main_text(&r)).expect("json")
        })
        .collect();
    let s = &out[0];
    assert_eq!(s["inbounds"][0]["protocol"], "socks");
    assert_eq!(s["inbounds"][0]["listen"], "127.0.0.1");
    assert_eq!(s["inbounds"][0]["port"], 30808);
    assert_eq!(s["inbounds"][0]["settings"]["auth"], "noauth");
    assert_eq!(s["inbounds"][1]["protocol"], "http");
    assert_eq!(s["inbounds"][1]["port"], 30809);
    assert_eq!(s["outbounds"][0]["protocol"], "freedom");
    assert!(
        s.get("routing").is_none(),
        "a local proxy does not block private ranges"
    );
    assert_eq!(out[1]["inbounds"][0]["settings"]["auth"], "password");
    assert_eq!(
        out[1]["inbounds"][0]["settings"]["accounts"][0]["user"],
        "u"
    );
    let vm = &out[2];
    assert_eq!(
        vm["inbounds"].as_array().unwrap().len(),
        1,
        "no http inbound for a server"
    );
    assert_eq!(vm["inbounds"][0]["protocol"], "vmess");
    assert_eq!(
        vm["inbounds"][0]["settings"]["clients"][0]["id"],
        "b831381d-6324-4d53-ad4f-8cda48b30811"
    );
    assert_eq!(vm["routing"]["rules"][0]["outboundTag"], "block");
    let ss = &out[3];
    assert_eq!(ss["inbounds"][0]["protocol"], "shadowsocks");
    assert_eq!(ss["inbounds"][0]["settings"]["method"], "aes-128-gcm");
    let vc = &out[4];
    assert_eq!(vc["outbounds"][0]["protocol"], "vmess");
    assert_eq!(vc["outbounds"][0]["settings"]["vnext"][0]["port"], 443);
    assert_eq!(out[5]["outbounds"][0]["protocol"], "shadowsocks");
}

// ---------------------------------------------------------------- template

fn template_manifest(dir: &Path, template: &str, body: &str, extra: Value) -> Manifest {
    std::fs::write(dir.join(template), body).expect("write template");
    let mut v = json!({
        "id": "tpl", "name": "Templated", "version": "1",
        "source": {"type": "file", "asset_pattern": "x.tgz", "verification": {"type": "none"}},
        "binary": {"path": "x"},
        "config": {"generator": "template", "template": template, "options": {
            "greeting": {"type": "string", "default": "hello"},
            "workers": {"type": "integer", "minimum": 1, "default": 2},
            "tags": {"type": "list"}
        }},
        "network": {"default_ports": [8080, 8081], "port_names": ["web", "admin"]},
        "modes": [{"id": "default", "defaults": {"workers": 3}}]
    });
    if let (Some(c), Value::Object(x)) = (v["config"].as_object_mut(), extra) {
        c.extend(x);
    }
    manifest::from_value(v).unwrap_or_else(|p| panic!("{p:?}"))
}

#[test]
fn template_generator_renders_json_escaped() {
    let tmp = tempfile::tempdir().expect("tmp");
    let body = r#"{
  "instance": {{ instance.id }},
  "name": {{ instance.name }},
  "listen": {{ addr("web") }},
  "admin_port": {{ ports.admin }},
  "greeting": {{ options.greeting }},
  "workers": {{ options.workers }},
  "tags": {{ options.tags }},
  "data": {{ dirs.data }}
}"#;
    let m = template_manifest(tmp.path(), "app.json.j2", body, json!({"format": "json"}));
    let (c, r) = render(
        &m,
        tmp.path(),
        None,
        json!({"greeting": "say \"hi\", \\ and </script>", "tags": ["a", "b"]}),
        &[("web", 18080), ("admin", 18081)],
    );
    assert_eq!(r.main, "app.json");
    let v: Value = serde_json::from_str(main_text(&r)).expect("json");
    assert_eq!(v["instance"], "inst1");
    assert_eq!(v["name"], "my-inst");
    assert_eq!(v["listen"], "127.0.0.1:18080");
    assert_eq!(v["admin_port"], 18081);
    assert_eq!(v["greeting"], "say \"hi\", \\ and </script>");
    assert_eq!(v["workers"], 3, "mode default over option default");
    assert_eq!(v["tags"], json!(["a", "b"]));
    assert_eq!(v["data"], json!(c.data_dir.to_str().unwrap()));
}

/// The format is the output's, not the template file's: `app.json.j2` and a
/// `t.j2` written to `conf/app.toml` are JSON and TOML, escaped and parsed as
/// such, so an option cannot add a key by closing its quotes.
#[test]
fn template_format_follows_the_output_name_so_options_cannot_inject() {
    let tmp = tempfile::tempdir().expect("tmp");
    let reg = GeneratorRegistry::builtin();
    let hostile = json!({"greeting": "x\", \"admin\": true, \"z\": \""});
    let render_with = |template: &str, body: &str, extra: Value, user: &Value| {
        let m = template_manifest(tmp.path(), template, body, extra);
        let merged = reg.validate_options(&m, None, &obj(user.clone()))?;
        let c = ctx(tmp.path(), &m, None, &[("web", 18080), ("admin", 18081)]);
        reg.render(&RenderInput {
            manifest: &m,
            manifest_dir: tmp.path(),
            ctx: &c,
            options: &merged,
        })
    };
    // Quoted by the template author as if it were text: refused, not injected.
    let e = render_with(
        "app.json.j2",
        "{\"greeting\": \"{{ options.greeting }}\", \"admin\": false}",
        json!({}),
        &hostile,
    )
    .expect_err("an escaped value inside quotes is not JSON");
    assert_eq!(e.code(), "CONFIG_RENDER_FAILED", "{e:?}");
    // Written as the JSON template it is: the value stays a value.
    let r = render_with(
        "app.json.j2",
        "{\"greeting\": {{ options.greeting }}, \"admin\": false}",
        json!({}),
        &hostile,
    )
    .expect("renders");
    assert_eq!(r.files[0].format, "json");
    let v: Value = serde_json::from_str(main_text(&r)).expect("json");
    assert_eq!(v["admin"], false);
    assert_eq!(v["greeting"], "x\", \"admin\": true, \"z\": \"");
    // The output path names the format when the template's name does not.
    let r = render_with(
        "t.j2",
        "greeting = {{ options.greeting }}\nadmin = false\n",
        json!({"path": "conf/app.toml"}),
        &json!({"greeting": "a\"\nadmin = true\n#"}),
    );
    match r {
        Ok(r) => {
            assert_eq!(r.files[0].format, "toml");
            let v: toml_edit::DocumentMut = main_text(&r).parse().expect("toml");
            assert_eq!(v["admin"].as_bool(), Some(false));
        }
        // A newline in a value may be refused outright; never injected.
        Err(e) => assert!(e.code().starts_with("CONFIG_"), "{e:?}"),
    }
}

/// Found by the fuzz target `configgen`: in a torrc template a value ending
/// with `\` made tor join the next line, the template's own directive, to it
/// (`Nickname x\` + `SocksPort 0` read as one `Nickname`). Refused now.
#[test]
fn template_torrc_value_cannot_swallow_the_next_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let reg = GeneratorRegistry::builtin();
    let m = template_manifest(
        tmp.path(),
        "torrc.j2",
        "Nickname {{ options.greeting }}\nSocksPort 0\n",
        json!({"format": "torrc"}),
    );
    let c = ctx(tmp.path(), &m, None, &[("web", 1), ("admin", 2)]);
    let render = |greeting: &str| {
        let merged = reg.validate_options(&m, None, &obj(json!({ "greeting": greeting })))?;
        reg.render(&RenderInput {
            manifest: &m,
            manifest_dir: tmp.path(),
            ctx: &c,
            options: &merged,
        })
    };
    let e = render("relay\\").expect_err("a trailing backslash is refused");
    assert_eq!(e.code(), "CONFIG_RENDER_FAILED", "{e:?}");
    assert!(e.message.contains("line 1"), "{e:?}");
    let r = render("re\\lay").expect("a backslash inside a value is fine");
    assert_eq!(main_text(&r), "Nickname re\\lay\nSocksPort 0\n");
}

#[test]
fn template_generator_yaml_keeps_values_in_place() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = template_manifest(
        tmp.path(),
        "app.yaml",
        "listen: {{ addr(\"web\") }}\ngreeting: {{ options.greeting }}\nworkers: {{ options.workers }}\ntags: {{ options.tags }}\n",
        json!({}),
    );
    let (_, r) = render(
        &m,
        tmp.path(),
        None,
        json!({"greeting": "a: b # c\\ \"d\"", "tags": ["x: y", "- z"]}),
        &[("web", 18080), ("admin", 18081)],
    );
    assert_eq!(r.files[0].format, "yaml");
    let v: Value = serde_yaml_ng::from_str(main_text(&r)).expect("yaml");
    assert_eq!(v["listen"], "127.0.0.1:18080");
    assert_eq!(v["greeting"], "a: b # c\\ \"d\"");
    assert_eq!(v["workers"], 3);
    assert_eq!(v["tags"], json!(["x: y", "- z"]));
}

#[test]
fn template_generator_text_and_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = template_manifest(
        tmp.path(),
        "app.conf",
        "listen {{ bind }}:{{ ports.web }}\n{% for t in options.tags %}tag {{ t }}\n{% endfor %}",
        json!({"path": "conf/app.conf"}),
    );
    let (_, r) = render(
        &m,
        tmp.path(),
        None,
        json!({"tags": ["x", "y"]}),
        &[("web", 1), ("admin", 2)],
    );
    assert_eq!(r.main, "conf/app.conf");
    assert_eq!(r.files[0].format, "text");
    assert_eq!(main_text(&r), "listen 127.0.0.1:1\ntag x\ntag y\n");

    let reg = GeneratorRegistry::builtin();
    let merged = validate_options(&m, None, &Map::new()).expect("ok");
    let c = ctx(tmp.path(), &m, None, &[("web", 1), ("admin", 2)]);
    let input = |m: &'static Manifest| RenderInput {
        manifest: m,
        manifest_dir: tmp.path(),
        ctx: &c,
        options: &merged,
    };
    // A typo in the template: strict undefined.
    let typo: &'static Manifest = Box::leak(Box::new(template_manifest(
        tmp.path(),
        "typo.txt",
        "{{ options.greting }}",
        json!({}),
    )));
    let e = reg.render(&input(typo)).unwrap_err();
    assert_eq!(e.code(), "CONFIG_TEMPLATE_ERROR", "{e:?}");
    // Output that is not JSON in a json template.
    let broken: &'static Manifest = Box::leak(Box::new(template_manifest(
        tmp.path(),
        "b.json",
        "{ \"a\": {{ options.workers }}, }",
        json!({}),
    )));
    let e = reg.render(&input(broken)).unwrap_err();
    assert_eq!(e.code(), "CONFIG_RENDER_FAILED", "{e:?}");
    // A missing template file.
    let gone: &'static Manifest = Box::leak(Box::new(template_manifest(
        tmp.path(),
        "gone.txt",
        "",
        json!({}),
    )));
    std::fs::remove_file(tmp.path().join("gone.txt")).expect("rm");
    let e = reg.render(&input(gone)).unwrap_err();
    assert_eq!(e.code(), "CONFIG_TEMPLATE_ERROR");
    // A syntax error.
    let syntax: &'static Manifest = Box::leak(Box::new(template_manifest(
        tmp.path(),
        "s.txt",
        "{% for %}",
        json!({}),
    )));
    assert_eq!(
        reg.render(&input(syntax)).unwrap_err().code(),
        "CONFIG_TEMPLATE_ERROR"
    );
    // A runaway loop runs out of fuel instead of hanging.
    let slow: &'static Manifest = Box::leak(Box::new(template_manifest(
        tmp.path(),
        "slow.txt",
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        json!({}),
    )));
    assert_eq!(
        reg.render(&input(slow)).unwrap_err().code(),
        "CONFIG_TEMPLATE_ERROR"
    );
}

#[test]
fn secrets_are_redacted_for_display() {
    let m = catalog_manifest("xray");
    let merged = configgen::validate_options(
        &m,
        Some("shadowsocks-server"),
        &obj(json!({"password": "hunter2"})),
    )
    .expect("ok");
    let shown = configgen::redact(&m, &merged);
    assert_eq!(shown["password"], "********");
    assert_eq!(shown["inbound"], "shadowsocks");
    assert_eq!(merged["password"], "hunter2");
}

#[test]
fn registry_errors() {
    let reg = GeneratorRegistry::builtin();
    assert_eq!(reg.ids(), ["sing-box", "template", "tor", "xray"]);
    let e = reg.get("nginx").err().expect("unknown");
    assert_eq!(e.code(), "CONFIG_UNKNOWN_GENERATOR");
    assert!(e.hint.unwrap_or_default().contains("template"));
    let demo = catalog_manifest("demo");
    let e = reg.for_manifest(&demo).err().expect("none");
    assert_eq!(e.code(), "CONFIG_NO_GENERATOR");
    // Options still validate for a feature without a generator.
    assert!(reg.validate_options(&demo, None, &Map::new()).is_ok());
}

// ---------------------------------------------------------------- writing

fn leftovers(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in walk(dir) {
        let n = e.file_name().unwrap().to_string_lossy().to_string();
        if n.starts_with(".hangar-tmp") {
            v.push(n);
        }
    }
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn atomic_write_mode_0600_and_no_temp_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("config");
    let r = Rendered {
        main: "main.json".into(),
        files: vec![
            configgen::RenderedFile {
                rel_path: "main.json".into(),
                contents: "{\"v\":1}\n".into(),
                format: "json".into(),
            },
            configgen::RenderedFile {
                rel_path: "sub/extra.txt".into(),
                contents: "extra\n".into(),
                format: "text".into(),
            },
        ],
    };
    let main = write_atomic(&dir, &r).expect("write");
    assert_eq!(main, dir.join("main.json"));
    assert_eq!(std::fs::read_to_string(&main).unwrap(), "{\"v\":1}\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("sub/extra.txt")).unwrap(),
        "extra\n"
    );
    for f in [dir.join("main.json"), dir.join("sub/extra.txt")] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));

    // Staged but dropped: the old file stays and no temp is left.
    let mut r2 = r.clone();
    r2.files[0].contents = "{\"v\":2}\n".into();
    let staged = stage(&dir, &r2).expect("stage");
    assert!(staged.main_path().exists());
    assert!(
        staged.main_path().to_string_lossy().ends_with("main.json"),
        "keeps the extension"
    );
    assert_eq!(std::fs::read_to_string(&main).unwrap(), "{\"v\":1}\n");
    drop(staged);
    assert!(leftovers(&dir).is_empty());
    assert_eq!(std::fs::read_to_string(&main).unwrap(), "{\"v\":1}\n");
    // Committed: replaced.
    stage(&dir, &r2).expect("stage").commit().expect("commit");
    assert_eq!(std::fs::read_to_string(&main).unwrap(), "{\"v\":2}\n");
    assert!(leftovers(&dir).is_empty());

    // A path out of the dir is refused and nothing is written.
    let bad = Rendered::single("../escape.txt", "text", "x".into());
    assert_eq!(
        write_atomic(&dir, &bad).unwrap_err().code(),
        "CONFIG_BAD_PATH"
    );
    assert!(!tmp.path().join("escape.txt").exists());
    // A failure half way (a directory where a file's parent should be)
    // leaves no temp files behind.
    std::fs::write(dir.join("blocker"), "").unwrap();
    let half = Rendered {
        main: "ok.txt".into(),
        files: vec![
            configgen::RenderedFile {
                rel_path: "ok.txt".into(),
                contents: "x".into(),
                format: "text".into(),
            },
            configgen::RenderedFile {
                rel_path: "blocker/f.txt".into(),
                contents: "y".into(),
                format: "text".into(),
            },
        ],
    };
    assert_eq!(
        write_atomic(&dir, &half).unwrap_err().code(),
        "CONFIG_WRITE_FAILED"
    );
    assert!(leftovers(&dir).is_empty());
    assert!(!dir.join("ok.txt").exists());
}

// ---------------------------------------------------------------- checkers

fn skip(bin: &str) -> Option<PathBuf> {
    let found = which(bin);
    if found.is_none() {
        eprintln!("SKIP: {bin} is not on PATH (apt-get install -y {bin})");
    }
    found
}

/// Render, write and check with the real binary.
fn render_and_check(
    bin: &Path,
    m: &Manifest,
    mode: &str,
    user: Value,
    ports: &[(&str, u16)],
) -> hangar_feature::Result<()> {
    let tmp = tempfile::tempdir().expect("tmp");
    let (c, r) = render(m, tmp.path(), Some(mode), user, ports);
    let main = write_atomic(&c.config_dir, &r).expect("write");
    let res = check(m, &r, bin, &main);
    if let Err(e) = &res {
        eprintln!("{mode}: {e:?}\n{}", main_text(&r));
    }
    res
}

#[test]
fn tor_verify_config_accepts_both_modes() {
    let Some(tor) = skip("tor") else { return };
    let m = catalog_manifest("tor");
    let ports = [("socks", 39050), ("control", 39051)];
    render_and_check(
        &tor,
        &m,
        "client",
        json!({"exit_nodes": ["{de}"], "log_level": "info"}),
        &ports,
    )
    .expect("client accepted");
    render_and_check(
        &tor,
        &m,
        "relay",
        json!({"nickname": "HangarTest", "contact_info": "ops #1", "publish": false}),
        &ports,
    )
    .expect("relay accepted");
    render_and_check(
        &tor,
        &m,
        "relay",
        json!({"exit_relay": true, "bandwidth_rate_kbytes": 100, "bandwidth_burst_kbytes": 200}),
        &ports,
    )
    .expect("exit relay accepted");
    render_and_check(&tor, &m, "client", json!({"disable_network": true}), &ports)
        .expect("offline client accepted");
    // An IPv6 bind address (an instance network may give one).
    let tmp = tempfile::tempdir().expect("tmp");
    let merged = configgen::validate_options(&m, Some("client"), &Map::new()).expect("ok");
    let mut c = ctx(tmp.path(), &m, Some("client"), &ports);
    c.bind = "::1".parse().unwrap();
    let r = GeneratorRegistry::builtin()
        .render(&RenderInput {
            manifest: &m,
            manifest_dir: tmp.path(),
            ctx: &c,
            options: &merged,
        })
        .expect("render");
    let main = write_atomic(&c.config_dir, &r).expect("write");
    check(&m, &r, &tor, &main).expect("IPv6 client accepted");
}

#[test]
fn tor_rejection_carries_its_output() {
    let Some(tor) = skip("tor") else { return };
    let m = catalog_manifest("tor");
    // Valid for hangar's schema, refused by tor: a bridge line tor cannot read.
    let tmp = tempfile::tempdir().expect("tmp");
    let (c, r) = render(
        &m,
        tmp.path(),
        Some("client"),
        json!({"bridges": ["not-an-address"]}),
        &[("socks", 39050), ("control", 39051)],
    );
    let staged = stage(&c.config_dir, &r).expect("stage");
    let e = check(&m, &r, &tor, staged.main_path()).unwrap_err();
    assert_eq!(e.code(), "CONFIG_CHECK_FAILED", "{e:?}");
    let output = e
        .context
        .iter()
        .find(|(k, _)| k == "output")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(
        output.to_lowercase().contains("bridge"),
        "tor's own words: {output}"
    );
    assert!(output.len() <= 2100);
    assert!(ctx_has(&e, "checker", "--verify-config"));
    // The update flow keeps the old config: nothing was committed.
    drop(staged);
    assert!(!c.config_dir.join("torrc").exists());
    assert!(leftovers(&c.config_dir).is_empty());
}

#[test]
fn v2ray_accepts_the_xray_configs() {
    let Some(v2ray) = skip("v2ray") else { return };
    let m = catalog_manifest("xray");
    for (mode, user, ports) in xray_renders() {
        render_and_check(&v2ray, &m, mode, user.clone(), &ports_of(&ports))
            .unwrap_or_else(|e| panic!("{mode} {user}: {e:?}"));
    }
}

#[test]
fn v2ray_rejection_carries_its_output() {
    let Some(v2ray) = skip("v2ray") else { return };
    let m = catalog_manifest("xray");
    let tmp = tempfile::tempdir().expect("tmp");
    let (c, mut r) = render(
        &m,
        tmp.path(),
        Some("socks-proxy"),
        json!({}),
        &[("main", 30808), ("http", 30809)],
    );
    // A config v2ray cannot load: an unknown protocol.
    let mut v: Value = serde_json::from_str(main_text(&r)).unwrap();
    v["inbounds"][0]["protocol"] = json!("nosuchproto");
    r.files[0].contents = serde_json::to_string(&v).unwrap();
    let main = write_atomic(&c.config_dir, &r).expect("write");
    let e = check(&m, &r, &v2ray, &main).unwrap_err();
    assert_eq!(e.code(), "CONFIG_CHECK_FAILED", "{e:?}");
    let output = e
        .context
        .iter()
        .find(|(k, _)| k == "output")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(
        output.contains("nosuchproto"),
        "v2ray's own words: {output}"
    );
}

fn sh_manifest(validate: &[&str]) -> Manifest {
    manifest::from_value(json!({
        "id": "shck", "name": "sh", "version": "1",
        "source": {"type": "file", "asset_pattern": "x.tgz", "verification": {"type": "none"}},
        "binary": {"path": "sh"},
        "config": {"generator": "template", "template": "t", "validate": validate}
    }))
    .expect("manifest")
}

#[test]
fn checker_output_is_the_tail_and_substitutes_config() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = tmp.path().join("c.txt");
    std::fs::write(&cfg, "content-of-config").unwrap();
    let r = Rendered::single("c.txt", "text", String::new());
    // Prints a lot, then the config's contents to stderr, then fails.
    let m = sh_manifest(&[
        "-c",
        "i=0; while [ $i -lt 500 ]; do echo line-$i; i=$((i+1)); done; cat \"$1\" >&2; exit 3",
        "sh",
        "{{config}}",
    ]);
    let e = check(&m, &r, Path::new("/bin/sh"), &cfg).unwrap_err();
    assert_eq!(e.code(), "CONFIG_CHECK_FAILED");
    let output = e
        .context
        .iter()
        .find(|(k, _)| k == "output")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(output.ends_with("content-of-config"), "{output}");
    assert!(!output.contains("line-0\n"), "only the tail is kept");
    assert!(output.len() <= 2100, "{}", output.len());
    assert!(
        e.message.contains("content-of-config"),
        "last line in the message: {e:?}"
    );
    // Success and no checker at all.
    let ok = sh_manifest(&["-c", "test -s \"$1\"", "sh", "{{config}}"]);
    check(&ok, &r, Path::new("/bin/sh"), &cfg).expect("passes");
    let none = manifest::from_value(json!({
        "id": "n", "name": "n", "version": "1",
        "source": {"type": "file", "asset_pattern": "x.tgz", "verification": {"type": "none"}},
        "binary": {"path": "n"}
    }))
    .unwrap();
    check(&none, &r, Path::new("/nonexistent"), &cfg).expect("nothing to run");
    // A checker that cannot start.
    let e = check(&ok, &r, Path::new("/nonexistent/bin"), &cfg).unwrap_err();
    assert_eq!(e.code(), "CONFIG_CHECKER_UNAVAILABLE");
}

#[test]
fn checker_timeout_kills_its_process_group() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = tmp.path().join("c.txt");
    std::fs::write(&cfg, "x").unwrap();
    let r = Rendered::single("c.txt", "text", String::new());
    // A background sleeper in the checker's group, its pid written down, and
    // the checker itself hanging.
    let m = sh_manifest(&[
        "-c",
        "sleep 1000 & echo $! > {{config_dir}}/bg.pid; echo started; wait",
    ]);
    let t0 = Instant::now();
    let e =
        check_with_timeout(&m, &r, Path::new("/bin/sh"), &cfg, Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.code(), "CONFIG_CHECK_TIMEOUT", "{e:?}");
    assert!(t0.elapsed() >= Duration::from_secs(5));
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    assert!(ctx_has(&e, "output", "started"), "{e:?}");
    let pid: i32 = std::fs::read_to_string(tmp.path().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The sleeper is gone (or a zombie on its way, reaped by init).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let gone = stat.is_empty()
            || stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "background sleeper {pid} survived: {stat}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn checker_is_a_one_shot_child_of_the_supervisor() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = tmp.path().join("c.txt");
    std::fs::write(&cfg, "x").unwrap();
    let r = Rendered::single("c.txt", "text", String::new());
    let id = format!("configgen-test-{}", std::process::id());
    let marker = format!("HANGAR_SUPERVISOR_ID={id}");
    let manager = hangar_supervisor::Manager::with_options(hangar_supervisor::ManagerOptions {
        supervisor_id: Some(id),
        ..hangar_supervisor::ManagerOptions::default()
    })
    .expect("manager");
    // The checker writes down its own stat line, environment and status.
    let m = sh_manifest(&[
        "-c",
        "cat /proc/$$/stat > {{config_dir}}/stat; \
         tr '\\0' '\\n' < /proc/$$/environ > {{config_dir}}/env; \
         cat /proc/$$/status > {{config_dir}}/status",
    ]);
    hangar_feature::configgen::check_with(&manager, &m, &r, Path::new("/bin/sh"), &cfg)
        .expect("passes");
    let stat = std::fs::read_to_string(tmp.path().join("stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    let pid: u32 = stat.split_whitespace().next().unwrap().parse().unwrap();
    let (pgrp, session): (u32, u32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    assert_eq!(pgrp, pid, "leads its own process group");
    assert_eq!(session, pid, "and its own session");
    let env = std::fs::read_to_string(tmp.path().join("env")).unwrap();
    assert!(env.lines().any(|l| l == marker), "carries {marker}: {env}");
    let status = std::fs::read_to_string(tmp.path().join("status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')),
        "{status}"
    );
}
