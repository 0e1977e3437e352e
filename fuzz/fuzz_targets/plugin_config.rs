//! The plugin manager's configuration (`ManagerConfig` from JSON or YAML):
//! any text is refused with `PLUGIN_1011` and a message, or parses; a
//! configuration that parses validates deterministically to problems (each
//! a documented code, a path and a message) or to a configuration whose
//! every resolved plugin is within the documented bounds, whose policies
//! (backoff, breaker, token bucket) work with its values, and that writes
//! out as JSON and as YAML and reads back equal. Credentials (`api_key`,
//! `token`, `password`, the values of `auth.headers`) never show in Debug
//! output, in validation problems or in authentication errors.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hangar_plugin::config::parse_strategy;
use hangar_plugin::{
    AuthConfig, AuthMethod, CircuitBreaker, ConfigErrors, ManagerConfig, ServerAuth, TokenBucket,
    TransportKind,
};
use libfuzzer_sys::fuzz_target;

/// The codes `hangar_plugin::config` documents for validation.
const CODES: &[&str] = &[
    "PLUGIN_1001",
    "PLUGIN_1002",
    "PLUGIN_1003",
    "PLUGIN_1004",
    "PLUGIN_1005",
    "PLUGIN_1006",
    "PLUGIN_1007",
    "PLUGIN_1008",
    "PLUGIN_1009",
    "PLUGIN_1010",
    "PLUGIN_1012",
    "AUTH_1101",
    "AUTH_1102",
    "AUTH_1103",
    "AUTH_1104",
    "AUTH_1105",
    "TRANSPORT_1301",
    "TRANSPORT_1302",
    "TRANSPORT_1303",
    "TRANSPORT_1304",
    "CIRCUIT_1401",
    "CIRCUIT_1402",
    "RATELIMIT_1501",
    "HEALTH_1601",
    "HEALTH_1602",
    "LOADBALANCER_1701",
    "LOADBALANCER_1702",
];

/// Marks a credential the target put in; inputs holding it are skipped.
const MARK: &str = "zQ9cred";

fn transports() -> Vec<String> {
    [
        TransportKind::Unix,
        TransportKind::Http,
        TransportKind::Https,
        TransportKind::Grpc,
        TransportKind::GrpcTls,
        TransportKind::Exec,
    ]
    .iter()
    .map(|k| k.to_string())
    .collect()
}

fn check_problems(e: &ConfigErrors) {
    assert!(!e.0.is_empty(), "refused without a problem");
    for p in &e.0 {
        assert!(CODES.contains(&p.code), "undocumented code: {p:?}");
        assert!(!p.message.is_empty(), "{p:?}");
        assert!(!p.hint.is_empty(), "{p:?}");
        assert!(
            p.path == "plugins" || p.path == "load_balancing" || p.path.starts_with("plugins["),
            "{p:?}"
        );
    }
}

/// The same configuration with every credential replaced by a marked one
/// (a header value the original could not carry keeps a line break, so
/// validation takes the same branch).
fn with_marked_credentials(c: &ManagerConfig) -> (ManagerConfig, Vec<String>) {
    let mut c = c.clone();
    let mut marks = Vec::new();
    let mut mark = |v: &mut String| {
        if v.is_empty() {
            return;
        }
        let bad = http_bad(v);
        *v = format!("{MARK}{}x", marks.len());
        marks.push(v.clone());
        if bad {
            v.push('\n');
        }
    };
    for p in &mut c.plugins {
        let a = &mut p.auth;
        for s in [&mut a.api_key, &mut a.token, &mut a.password]
            .into_iter()
            .flatten()
        {
            mark(s);
        }
        for v in a.headers.values_mut() {
            mark(v);
        }
    }
    (c, marks)
}

fn http_bad(v: &str) -> bool {
    !v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fn assert_no_mark(what: &str, text: &str, marks: &[String]) {
    for m in marks {
        assert!(
            !text.contains(m.as_str()),
            "{what} shows a credential:\n{text}"
        );
    }
}

fn check_secrets(c: &ManagerConfig) {
    let (c, marks) = with_marked_credentials(c);
    if marks.is_empty() {
        return;
    }
    assert_no_mark("Debug of the config", &format!("{c:?}"), &marks);
    assert_no_mark(
        "Debug of the resolved plugins",
        &format!("{:?}", c.resolved_plugins()),
        &marks,
    );
    if let Err(e) = c.validate(Some(transports().as_slice())) {
        assert_no_mark("validation (Display)", &e.to_string(), &marks);
        assert_no_mark("validation (Debug)", &format!("{e:?}"), &marks);
    }
    for p in &c.plugins {
        check_auth_secrets(&p.auth, &marks);
    }
}

fn check_auth_secrets(a: &AuthConfig, marks: &[String]) {
    assert_no_mark("AuthConfig Debug", &format!("{a:?}"), marks);
    match ServerAuth::new(a) {
        Err(errs) => {
            for e in errs {
                assert_no_mark("auth validation", &e.to_string(), marks);
                assert_no_mark("auth validation (Debug)", &format!("{e:?}"), marks);
            }
        }
        Ok(server) => {
            assert_no_mark("ServerAuth Debug", &format!("{server:?}"), marks);
            // Wrong credentials and none: the errors name the header only.
            for headers in [
                HashMap::new(),
                a.header_pairs()
                    .into_iter()
                    .map(|(k, v)| (k, format!("{v}-wrong")))
                    .collect(),
            ] {
                if let Err(e) = server.check(&headers) {
                    assert_no_mark("a refused call", &e.to_string(), marks);
                    assert_no_mark("a refused call (Debug)", &format!("{e:?}"), marks);
                }
            }
            // What a client sends passes, unless the method's header is also
            // among the custom ones (then two values are expected for it).
            let pairs = a.header_pairs();
            let mut names: Vec<String> =
                pairs.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
            names.sort();
            names.dedup();
            if names.len() == pairs.len() {
                let sent: HashMap<String, String> = pairs.into_iter().collect();
                if let Err(e) = server.check(&sent) {
                    panic!("the client's own headers are refused: {e}");
                }
            }
        }
    }
}

/// Bounds of a configuration that validated, and its policies at work.
fn check_valid(c: &ManagerConfig) {
    if let Some(s) = &c.load_balancing {
        assert!(parse_strategy(s).is_some(), "{s:?}");
    }
    assert!(!c.plugins.is_empty() || c.discovery.enabled);
    let mut names = std::collections::HashSet::new();
    let now = Instant::now();
    for p in c.resolved_plugins() {
        assert!(names.insert(p.name.clone()), "duplicate {:?}", p.name);
        assert!(
            (1..=128).contains(&p.name.len())
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{:?}",
            p.name
        );
        assert!(!p.transport.is_empty());
        assert!(p.weight() >= 1);
        if let Some(k) = p.transport_kind() {
            match k {
                TransportKind::Exec => assert!(!p.executable.is_empty()),
                _ => assert!(!p.endpoint.is_empty()),
            }
        }
        match p.auth.method {
            AuthMethod::Unsupported(ref m) => panic!("unsupported method {m:?} accepted"),
            AuthMethod::ApiKey => assert!(!p.auth.api_key.clone().unwrap_or_default().is_empty()),
            AuthMethod::Bearer => assert!(!p.auth.token.clone().unwrap_or_default().is_empty()),
            _ => {}
        }
        let conn = p.connection.resolve();
        assert!(conn.max_connections >= 1);
        assert!(conn.max_idle_connections <= conn.max_connections);
        assert!(!conn.request_timeout.is_zero() && !conn.connection_timeout.is_zero());

        let r = p.retry.resolve();
        assert!(r.multiplier.is_finite() && r.multiplier >= 1.0, "{r:?}");
        assert!(r.initial_interval <= r.max_interval, "{r:?}");
        // The waits grow from the initial one and stay under the cap plus
        // the jitter.
        let cap = r.max_interval.as_secs_f64() * 1.1 + 1e-6;
        let mut last = Duration::ZERO;
        for n in (0..=r.max_retries.min(40)).chain([u32::MAX]) {
            let base = r.base_delay(n);
            assert!(
                base >= last,
                "{r:?}: retry {n} waits less than the one before"
            );
            assert!(base <= r.max_interval, "{r:?}: {base:?}");
            last = base;
            for unit in [0.0, 0.5, 0.999] {
                let d = r.delay(n, unit);
                assert!(d.as_secs_f64() <= cap, "{r:?}: retry {n} waits {d:?}");
            }
        }
        let _ = r.next(1, true);

        let b = p.circuit_breaker.resolve();
        if b.enabled {
            assert!(b.failure_threshold >= 1 && b.success_threshold >= 1);
            assert!(!b.recovery_timeout.is_zero());
        }
        let breaker = CircuitBreaker::new(b);
        for _ in 0..b.failure_threshold.max(b.min_request_threshold).min(64) + 1 {
            assert!(breaker.allow_at(now) || b.enabled);
            breaker.record_failure_at(now);
        }
        // Open (if it may open at all) until the recovery timeout is over.
        let _ = breaker.allow_at(now);
        if let Some(later) = now.checked_add(b.recovery_timeout) {
            let _ = breaker.allow_at(later);
        }

        let rl = p.rate_limit.resolve();
        if rl.enabled {
            assert!(rl.requests_per_second.is_finite() && rl.requests_per_second > 0.0);
            assert!(rl.burst >= 1);
        }
        let bucket = TokenBucket::new_at(rl, now);
        let mut admitted = 0u32;
        for _ in 0..rl.burst.min(64) + 1 {
            if bucket.try_acquire_at(now).is_ok() {
                admitted += 1;
            }
        }
        if rl.enabled {
            assert!(
                admitted <= rl.burst.max(1),
                "{rl:?} admitted {admitted} at once"
            );
        }
        let _ = bucket.try_acquire_at(now + Duration::from_secs(3600));

        let h = p.health_check.resolve();
        if h.enabled {
            assert!(!h.interval.is_zero() && h.failure_limit >= 1);
            assert!(!h.timeout.is_zero() && h.timeout <= h.interval);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if text.contains(MARK) {
        return;
    }
    let yaml = sel & 1 == 1;
    let parsed = if yaml {
        ManagerConfig::from_yaml(text)
    } else {
        ManagerConfig::from_json(text)
    };
    let c = match parsed {
        Ok(c) => c,
        Err(e) => {
            assert_eq!(e.codes(), ["PLUGIN_1011"], "{e:?}");
            assert!(!e.0[0].message.is_empty());
            return;
        }
    };
    check_secrets(&c);
    let ts = transports();
    let verdict = c.validate(Some(ts.as_slice()));
    assert_eq!(
        verdict,
        c.validate(Some(ts.as_slice())),
        "validation is not deterministic"
    );
    match verdict {
        Err(e) => check_problems(&e),
        Ok(()) => {
            // Without the factory check it is valid too.
            c.validate(None)
                .expect("valid with the factories, not without");
            check_valid(&c);
            let json = c.to_json();
            let again = ManagerConfig::from_json(&json)
                .unwrap_or_else(|e| panic!("written as JSON it is refused: {e}\n{json}"));
            assert_eq!(
                c, again,
                "JSON round trip changed the configuration\n{json}"
            );
            let y = serde_yaml_ng::to_string(&c).expect("writes as YAML");
            let again = ManagerConfig::from_yaml(&y)
                .unwrap_or_else(|e| panic!("written as YAML it is refused: {e}\n{y}"));
            assert_eq!(c, again, "YAML round trip changed the configuration\n{y}");
        }
    }
});
