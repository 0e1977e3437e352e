//! Configuration: JSON and YAML read the same, default blocks merge field by
//! field, and validation reports every error at once, each seed code with its
//! field path.

use std::time::Duration;

use hangar_plugin::config::{parse_strategy, ConfigErrors};
use hangar_plugin::{Manager, ManagerConfig};

const YAML: &str = r#"
log_level: info
load_balancing: consistent-hash
default_retry:
  max_retries: 5
  initial_interval: 50ms
  random_jitter: false
default_circuit_breaker:
  failure_threshold: 7
default_health_check:
  interval: 10s
  timeout: 1s
default_connection:
  request_timeout: 2s
plugins:
  - name: echo
    type: echo
    transport: unix
    endpoint: /tmp/echo.sock
    retry:
      max_retries: 1
    labels:
      team: core
  - name: other
    transport: unix
    endpoint: /tmp/other.sock
    weight: 3
    priority: 2
    enabled: false
    circuit_breaker:
      enabled: false
"#;

const JSON: &str = r#"{
  "log_level": "info",
  "load_balancing": "consistent-hash",
  "default_retry": {"max_retries": 5, "initial_interval": 50, "random_jitter": false},
  "default_circuit_breaker": {"failure_threshold": 7},
  "default_health_check": {"interval": "10s", "timeout": "1s"},
  "default_connection": {"request_timeout": "2s"},
  "plugins": [
    {"name": "echo", "type": "echo", "transport": "unix", "endpoint": "/tmp/echo.sock",
     "retry": {"max_retries": 1}, "labels": {"team": "core"}},
    {"name": "other", "transport": "unix", "endpoint": "/tmp/other.sock", "weight": 3,
     "priority": 2, "enabled": false, "circuit_breaker": {"enabled": false}}
  ]
}"#;

#[test]
fn json_and_yaml_read_the_same_and_defaults_merge_field_by_field() {
    let y = ManagerConfig::from_yaml(YAML).expect("yaml");
    let j = ManagerConfig::from_json(JSON).expect("json");
    assert_eq!(y, j);
    y.validate(None).expect("valid");
    assert_eq!(y.strategy(), parse_strategy("consistent-hash").unwrap());

    let ps = y.resolved_plugins();
    let echo = &ps[0];
    let r = echo.retry.resolve();
    assert_eq!(r.max_retries, 1, "the plugin's own value wins");
    assert_eq!(
        r.initial_interval,
        Duration::from_millis(50),
        "the default block fills what the plugin leaves out"
    );
    assert_eq!(r.jitter, 0.0);
    assert_eq!(r.max_interval, Duration::from_secs(5), "built-in default");
    assert_eq!(echo.circuit_breaker.resolve().failure_threshold, 7);
    assert!(echo.circuit_breaker.resolve().enabled);
    assert_eq!(
        echo.health_check.resolve().interval,
        Duration::from_secs(10)
    );
    assert_eq!(echo.health_check.resolve().failure_limit, 3);
    assert_eq!(
        echo.connection.resolve().request_timeout,
        Duration::from_secs(2)
    );
    assert_eq!(echo.group(), "echo");

    let other = &ps[1];
    assert!(!other.is_enabled());
    assert_eq!(other.weight(), 3);
    assert_eq!(other.group(), "other");
    assert!(!other.circuit_breaker.resolve().enabled);
    assert_eq!(other.circuit_breaker.resolve().failure_threshold, 7);
    assert_eq!(other.retry.resolve().max_retries, 5);
}

#[test]
fn files_are_read_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let y = dir.path().join("m.yaml");
    let j = dir.path().join("m.json");
    std::fs::write(&y, YAML).unwrap();
    std::fs::write(&j, JSON).unwrap();
    assert_eq!(
        ManagerConfig::from_file(&y).unwrap(),
        ManagerConfig::from_file(&j).unwrap()
    );
    let e = ManagerConfig::from_file(&dir.path().join("missing.json")).unwrap_err();
    assert_eq!(e.codes(), ["PLUGIN_1011"]);
}

#[test]
fn syntax_and_schema_errors_are_plugin_1011_with_a_location() {
    let e = ManagerConfig::from_json("{\"plugins\": [").unwrap_err();
    assert_eq!(e.codes(), ["PLUGIN_1011"]);
    assert!(e.0[0].path.starts_with("line 1"), "{:?}", e.0[0]);
    let e = ManagerConfig::from_yaml("plugins:\n  - name: a\n    bogus_field: 1\n").unwrap_err();
    assert_eq!(e.codes(), ["PLUGIN_1011"]);
    assert!(e.0[0].message.contains("bogus_field"), "{}", e.0[0].message);
    let e =
        ManagerConfig::from_json(r#"{"default_retry": {"initial_interval": "soon"}}"#).unwrap_err();
    assert_eq!(e.codes(), ["PLUGIN_1011"]);
}

fn errors(json: &str) -> ConfigErrors {
    let cfg = ManagerConfig::from_json(json).expect("parses");
    cfg.validate(Some(&[
        "unix".to_string(),
        "http".into(),
        "https".into(),
        "grpc".into(),
        "grpc-tls".into(),
        "exec".into(),
    ]))
    .expect_err("invalid")
}

fn has(e: &ConfigErrors, code: &str, path: &str) {
    assert!(
        e.0.iter().any(|x| x.code == code && x.path == path),
        "expected {code} at {path}, got {e}"
    );
}

#[test]
fn an_empty_configuration_is_plugin_1009_unless_discovery_is_on() {
    let e = errors("{}");
    assert_eq!(e.codes(), ["PLUGIN_1009"]);
    let ok = ManagerConfig::from_json(r#"{"discovery": {"enabled": true, "directories": ["/x"]}}"#)
        .unwrap();
    ok.validate(None).expect("discovery may bring the plugins");
}

#[test]
fn every_plugin_error_code_is_reported_at_once_with_its_path() {
    let e = errors(
        r#"{
      "load_balancing": "fastest",
      "plugins": [
        {"name": "bad name!", "transport": "unix", "endpoint": "/s"},
        {"name": "no-transport"},
        {"name": "http-no-endpoint", "transport": "https"},
        {"name": "http-bad-url", "transport": "https", "endpoint": "http://wrong-scheme"},
        {"name": "grpc-bad", "transport": "grpc", "endpoint": "no-port-here"},
        {"name": "grpc-no-endpoint", "transport": "grpc-tls"},
        {"name": "unix-no-path", "transport": "unix"},
        {"name": "exec-no-exe", "transport": "exec", "env": ["NOEQUALS"]},
        {"name": "carrier-pigeon", "transport": "pigeon", "endpoint": "x"},
        {"name": "dup", "transport": "unix", "endpoint": "/a"},
        {"name": "dup", "transport": "unix", "endpoint": "/b"},
        {"name": "k1", "transport": "https", "endpoint": "https://h", "auth": {"method": "api-key"}},
        {"name": "k2", "transport": "https", "endpoint": "https://h", "auth": {"method": "bearer"}},
        {"name": "k3", "transport": "https", "endpoint": "https://h", "auth": {"method": "basic", "username": "u"}},
        {"name": "k4", "transport": "http", "endpoint": "http://h", "auth": {"method": "mtls", "cert_file": "/c"}},
        {"name": "k5", "transport": "https", "endpoint": "https://h", "auth": {"method": "kerberos"}},
        {"name": "k6", "transport": "https", "endpoint": "https://h", "auth": {"method": "custom"}},
        {"name": "k7", "transport": "grpc", "endpoint": "h:1", "auth": {"method": "mtls", "cert_file": "/c", "key_file": "/k"}},
        {"name": "c1", "transport": "unix", "endpoint": "/s", "connection": {"max_connections": 0, "request_timeout": 0}},
        {"name": "c2", "transport": "exec", "executable": "/bin/x", "connection": {"connection_timeout": "0s"}},
        {"name": "c3", "transport": "https", "endpoint": "https://h", "connection": {"max_connections": 2, "max_idle_connections": 5}},
        {"name": "cb", "transport": "unix", "endpoint": "/s", "circuit_breaker": {"failure_threshold": 0, "success_threshold": 0, "recovery_timeout": 0}},
        {"name": "rl", "transport": "unix", "endpoint": "/s", "rate_limit": {"enabled": true, "requests_per_second": 0, "burst_size": 0}},
        {"name": "hc", "transport": "unix", "endpoint": "/s", "health_check": {"interval": 0, "failure_limit": 0}},
        {"name": "hc2", "transport": "unix", "endpoint": "/s", "health_check": {"interval": "1s", "timeout": "5s"}},
        {"name": "w0", "transport": "unix", "endpoint": "/s", "weight": 0},
        {"name": "rt", "transport": "unix", "endpoint": "/s", "retry": {"multiplier": 0.5, "initial_interval": "10s", "max_interval": "1s"}}
      ]
    }"#,
    );
    has(&e, "LOADBALANCER_1702", "load_balancing");
    has(&e, "PLUGIN_1001", "plugins[0].name");
    has(&e, "PLUGIN_1002", "plugins[1].transport");
    has(&e, "PLUGIN_1003", "plugins[2].endpoint");
    has(&e, "PLUGIN_1004", "plugins[3].endpoint");
    has(&e, "PLUGIN_1005", "plugins[4].endpoint");
    has(&e, "PLUGIN_1003", "plugins[5].endpoint");
    has(&e, "PLUGIN_1006", "plugins[6].endpoint");
    has(&e, "PLUGIN_1007", "plugins[7].executable");
    has(&e, "TRANSPORT_1304", "plugins[7].env[0]");
    has(&e, "PLUGIN_1008", "plugins[8].transport");
    has(&e, "PLUGIN_1010", "plugins[10].name");
    has(&e, "AUTH_1101", "plugins[11].auth.api_key");
    has(&e, "AUTH_1102", "plugins[12].auth.token");
    has(&e, "AUTH_1103", "plugins[13].auth");
    has(&e, "AUTH_1104", "plugins[14].auth");
    has(&e, "TRANSPORT_1301", "plugins[14].transport");
    has(&e, "AUTH_1105", "plugins[15].auth.method");
    has(&e, "AUTH_1105", "plugins[16].auth.headers");
    has(&e, "TRANSPORT_1302", "plugins[17].transport");
    has(
        &e,
        "TRANSPORT_1303",
        "plugins[18].connection.max_connections",
    );
    has(
        &e,
        "TRANSPORT_1303",
        "plugins[18].connection.request_timeout",
    );
    has(
        &e,
        "TRANSPORT_1304",
        "plugins[19].connection.connection_timeout",
    );
    has(
        &e,
        "TRANSPORT_1301",
        "plugins[20].connection.max_idle_connections",
    );
    has(
        &e,
        "CIRCUIT_1401",
        "plugins[21].circuit_breaker.failure_threshold",
    );
    has(
        &e,
        "CIRCUIT_1401",
        "plugins[21].circuit_breaker.success_threshold",
    );
    has(
        &e,
        "CIRCUIT_1402",
        "plugins[21].circuit_breaker.recovery_timeout",
    );
    has(
        &e,
        "RATELIMIT_1501",
        "plugins[22].rate_limit.requests_per_second",
    );
    has(&e, "RATELIMIT_1501", "plugins[22].rate_limit.burst_size");
    has(&e, "HEALTH_1601", "plugins[23].health_check.interval");
    has(&e, "HEALTH_1601", "plugins[23].health_check.failure_limit");
    has(&e, "HEALTH_1602", "plugins[24].health_check.timeout");
    has(&e, "LOADBALANCER_1701", "plugins[25].weight");
    has(&e, "PLUGIN_1012", "plugins[26].retry.multiplier");
    has(&e, "PLUGIN_1012", "plugins[26].retry.initial_interval");
    // Every error carries a hint, and the rendering lists them all.
    assert!(e.0.iter().all(|x| !x.hint.is_empty()));
    let text = e.to_string();
    assert!(text.starts_with(&format!("{} configuration error(s)", e.0.len())));
    // The good plugins of the file raised nothing.
    assert!(!e.0.iter().any(|x| x.path.starts_with("plugins[9]")), "{e}");
}

#[test]
fn valid_endpoints_pass() {
    let cfg = ManagerConfig::from_json(
        r#"{"plugins": [
        {"name": "a", "transport": "https", "endpoint": "https://api.example.com:8443/v1/x"},
        {"name": "b", "transport": "http", "endpoint": "http://127.0.0.1:80"},
        {"name": "c", "transport": "grpc", "endpoint": "localhost:50051"},
        {"name": "d", "transport": "grpc-tls", "endpoint": "[::1]:443", "auth": {"method": "mtls", "cert_file": "/c", "key_file": "/k"}},
        {"name": "e", "transport": "exec", "executable": "/bin/true", "env": ["A=1", "B="]},
        {"name": "f", "transport": "https", "endpoint": "https://h", "auth": {"method": "basic", "username": "u", "password": "p"}},
        {"name": "g", "transport": "https", "endpoint": "https://h", "auth": {"method": "custom", "headers": {"X-K": "v"}}}
    ]}"#,
    )
    .unwrap();
    cfg.validate(None).unwrap();
}

#[tokio::test]
async fn the_manager_refuses_an_invalid_configuration_whole_and_unknown_factories() {
    let m = Manager::new();
    let cfg = ManagerConfig::from_json(
        r#"{"plugins": [
          {"name": "ok", "transport": "unix", "endpoint": "/nonexistent/ok.sock"},
          {"name": "web", "transport": "carrier-pigeon", "endpoint": "https://h"}
        ]}"#,
    )
    .unwrap();
    let e = m.load(cfg).await.unwrap_err();
    assert!(
        e.code() == "PLUGIN_1008" || e.code() == "PLUGIN_1002",
        "no factory for that transport: {e}"
    );
    assert!(m.names().is_empty(), "nothing half-loaded");
}
