//! Authentication: the seed's [`AuthConfig`] (client side: which credentials
//! to present; also a plugin's `auth` block in the configuration), its
//! validation with the `AUTH_11xx` codes, and [`ServerAuth`] (server side: the
//! same config checked against each call's headers, in constant time).
//!
//! | method    | client sends                               | server checks                 |
//! |-----------|--------------------------------------------|-------------------------------|
//! | `none`    | nothing                                    | nothing                       |
//! | `api-key` | `X-API-Key: <api_key>`                     | the header equals the key     |
//! | `bearer`  | `Authorization: Bearer <token>`            | the header equals it          |
//! | `basic`   | `Authorization: Basic base64(user:pass)`   | the header equals it          |
//! | `mtls`    | a client certificate in the TLS handshake  | the TLS layer, against its CA |
//! | `custom`  | every entry of `headers`                   | every entry present and equal |
//!
//! The entries of `headers` are sent with every method (for `custom` they are
//! the credential). A missing credential is refused with the code of its
//! method (`AUTH_1101` API key, `AUTH_1102` bearer, `AUTH_1103` basic,
//! `AUTH_1105` custom); a wrong one with `AUTH_1106`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::{Error, ErrorKind};
use crate::transport::TransportKind;

/// How a client proves who it is; the seed's `AuthMethod`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "Option<String>", into = "String")]
pub enum AuthMethod {
    /// `none`: no authentication.
    #[default]
    None,
    /// `api-key`: an `X-API-Key` header.
    ApiKey,
    /// `bearer`: `Authorization: Bearer`.
    Bearer,
    /// `basic`: `Authorization: Basic`.
    Basic,
    /// `mtls`: a client certificate.
    Mtls,
    /// `custom`: the configured headers.
    Custom,
    /// A name we do not know, the empty one included (refused by
    /// validation with `AUTH_1105`).
    Unsupported(String),
}

impl From<String> for AuthMethod {
    fn from(s: String) -> AuthMethod {
        match s.as_str() {
            "none" => AuthMethod::None,
            "api-key" => AuthMethod::ApiKey,
            "bearer" => AuthMethod::Bearer,
            "basic" => AuthMethod::Basic,
            "mtls" => AuthMethod::Mtls,
            "custom" => AuthMethod::Custom,
            _ => AuthMethod::Unsupported(s),
        }
    }
}

/// An absent (or null) method is `none`.
impl From<Option<String>> for AuthMethod {
    fn from(s: Option<String>) -> AuthMethod {
        s.map_or(AuthMethod::None, AuthMethod::from)
    }
}

impl From<AuthMethod> for String {
    fn from(m: AuthMethod) -> String {
        m.as_str().to_string()
    }
}

impl AuthMethod {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::ApiKey => "api-key",
            AuthMethod::Bearer => "bearer",
            AuthMethod::Basic => "basic",
            AuthMethod::Mtls => "mtls",
            AuthMethod::Custom => "custom",
            AuthMethod::Unsupported(s) => s,
        }
    }

    /// `none`.
    pub fn is_none(&self) -> bool {
        *self == AuthMethod::None
    }
}

/// The seed's `AuthConfig`: the method and its credentials, as a plugin's
/// `auth` block in the configuration and as the transports take it. Field
/// names are the seed's (`method`, `api_key`, `token`, `username`,
/// `password`, `cert_file`, `key_file`, `ca_file`, `headers`); every field is
/// optional, an unknown one is refused.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `none` (default), `api-key`, `bearer`, `basic`, `mtls`, `custom`.
    #[serde(skip_serializing_if = "AuthMethod::is_none")]
    pub method: AuthMethod,
    /// `api-key`: the key (sent as `X-API-Key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// `bearer`: the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `basic`: the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `basic`: the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `mtls`: the client certificate (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// `mtls`: the client key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The CA that signs the server's certificate (PEM); any method over TLS.
    /// Without it the system's roots are trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Extra headers sent with every call; the credential of `custom`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for AuthConfig {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |s: &Option<String>| match s {
            None => "",
            Some(_) => "<redacted>",
        };
        f.debug_struct("AuthConfig")
            .field("method", &self.method)
            .field("api_key", &redact(&self.api_key))
            .field("token", &redact(&self.token))
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("ca_file", &self.ca_file)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn bad_header_value(v: &str) -> bool {
    http::HeaderValue::from_str(v).is_err()
}

/// An unset credential reads as empty.
fn text(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

fn base64(input: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(input)
}

impl AuthConfig {
    /// No authentication.
    pub fn none() -> AuthConfig {
        AuthConfig::default()
    }

    /// API key in `X-API-Key`.
    pub fn api_key(key: impl Into<String>) -> AuthConfig {
        AuthConfig {
            method: AuthMethod::ApiKey,
            api_key: Some(key.into()),
            ..AuthConfig::default()
        }
    }

    /// Bearer token.
    pub fn bearer(token: impl Into<String>) -> AuthConfig {
        AuthConfig {
            method: AuthMethod::Bearer,
            token: Some(token.into()),
            ..AuthConfig::default()
        }
    }

    /// HTTP basic.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> AuthConfig {
        AuthConfig {
            method: AuthMethod::Basic,
            username: Some(username.into()),
            password: Some(password.into()),
            ..AuthConfig::default()
        }
    }

    /// Mutual TLS with a client certificate and key, trusting `ca` for the server.
    pub fn mtls(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: Option<PathBuf>,
    ) -> AuthConfig {
        AuthConfig {
            method: AuthMethod::Mtls,
            cert_file: Some(cert.into()),
            key_file: Some(key.into()),
            ca_file: ca,
            ..AuthConfig::default()
        }
    }

    /// Custom headers.
    pub fn custom(headers: impl IntoIterator<Item = (String, String)>) -> AuthConfig {
        AuthConfig {
            method: AuthMethod::Custom,
            headers: headers.into_iter().collect(),
            ..AuthConfig::default()
        }
    }

    /// Every problem, each with its `AUTH_11xx` code: a method without its
    /// credentials, an unknown method, a header that cannot be sent.
    pub fn validate(&self) -> Result<(), Vec<Error>> {
        let mut errs = Vec::new();
        let mut push = |k: ErrorKind, msg: &str, hint: &str| {
            errs.push(Error::new(k, msg).with_hint(hint));
        };
        match &self.method {
            AuthMethod::None => {}
            AuthMethod::ApiKey if text(&self.api_key).is_empty() => push(
                ErrorKind::MissingApiKey,
                "auth method api-key without an api_key",
                "set auth.api_key",
            ),
            AuthMethod::ApiKey if bad_header_value(text(&self.api_key)) => push(
                ErrorKind::MissingApiKey,
                "the api_key holds characters a header cannot carry",
                "use printable ASCII without line breaks",
            ),
            AuthMethod::Bearer if text(&self.token).is_empty() => push(
                ErrorKind::MissingBearerToken,
                "auth method bearer without a token",
                "set auth.token",
            ),
            AuthMethod::Bearer if bad_header_value(text(&self.token)) => push(
                ErrorKind::MissingBearerToken,
                "the token holds characters a header cannot carry",
                "use printable ASCII without line breaks",
            ),
            AuthMethod::Basic
                if text(&self.username).is_empty() || text(&self.password).is_empty() =>
            {
                push(
                    ErrorKind::MissingBasicCredentials,
                    "auth method basic without both username and password",
                    "set auth.username and auth.password",
                )
            }
            AuthMethod::Basic if text(&self.username).contains(':') => push(
                ErrorKind::MissingBasicCredentials,
                "a basic-auth username cannot contain ':'",
                "pick a username without ':'",
            ),
            AuthMethod::Mtls if self.cert_file.is_none() || self.key_file.is_none() => push(
                ErrorKind::MissingMtlsCerts,
                "auth method mtls without both cert_file and key_file",
                "set auth.cert_file and auth.key_file (PEM), and auth.ca_file for a private CA",
            ),
            AuthMethod::Custom if self.headers.is_empty() => push(
                ErrorKind::UnsupportedAuthMethod,
                "auth method custom without headers",
                "set auth.headers to the headers the plugin expects",
            ),
            AuthMethod::Unsupported(m) => push(
                ErrorKind::UnsupportedAuthMethod,
                &format!("unknown auth method {m:?}"),
                "use none, api-key, bearer, basic, mtls or custom",
            ),
            _ => {}
        }
        for (k, v) in &self.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() || bad_header_value(v) {
                push(
                    ErrorKind::UnsupportedAuthMethod,
                    &format!("auth header {k:?} is not a valid HTTP header"),
                    "header names are tokens, values printable ASCII",
                );
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// Problems of this authentication as a plugin's `auth` block over
    /// transport `t` (`None`: not one of the library's): (code, field under
    /// the plugin, message, hint). A method
    /// without its credentials is refused (`AUTH_1101`..`1104`), an unknown
    /// one too (`AUTH_1105`), and mTLS needs a TLS transport
    /// (`TRANSPORT_1301`/`1302`).
    pub fn problems(
        &self,
        t: Option<TransportKind>,
    ) -> Vec<(&'static str, &'static str, String, &'static str)> {
        let a = self;
        let mut out = Vec::new();
        let missing = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
        let missing_file =
            |v: &Option<PathBuf>| v.as_deref().is_none_or(|p| p.as_os_str().is_empty());
        match &a.method {
            AuthMethod::None => {}
            AuthMethod::ApiKey if missing(&a.api_key) => out.push((
                "AUTH_1101",
                "auth.api_key",
                "method api-key without an api_key".into(),
                "set auth.api_key",
            )),
            AuthMethod::Bearer if missing(&a.token) => out.push((
                "AUTH_1102",
                "auth.token",
                "method bearer without a token".into(),
                "set auth.token",
            )),
            AuthMethod::Basic if missing(&a.username) || missing(&a.password) => out.push((
                "AUTH_1103",
                "auth",
                "method basic needs a username and a password".into(),
                "set auth.username and auth.password",
            )),
            AuthMethod::Mtls => {
                if missing_file(&a.cert_file) || missing_file(&a.key_file) {
                    out.push((
                        "AUTH_1104",
                        "auth",
                        "method mtls needs cert_file and key_file".into(),
                        "set auth.cert_file and auth.key_file (PEM)",
                    ));
                }
                if t == Some(TransportKind::Http) {
                    out.push((
                        "TRANSPORT_1301",
                        "transport",
                        "mTLS over plain http".into(),
                        "use transport https with method mtls",
                    ));
                }
                if t == Some(TransportKind::Grpc) {
                    out.push((
                        "TRANSPORT_1302",
                        "transport",
                        "mTLS over plain grpc".into(),
                        "use transport grpc-tls with method mtls",
                    ));
                }
            }
            AuthMethod::Custom if a.headers.is_empty() => out.push((
                "AUTH_1105",
                "auth.headers",
                "method custom without headers".into(),
                "set auth.headers to the headers to send",
            )),
            AuthMethod::ApiKey | AuthMethod::Bearer | AuthMethod::Basic | AuthMethod::Custom => {}
            AuthMethod::Unsupported(other) => out.push((
                "AUTH_1105",
                "auth.method",
                format!("unsupported auth method {other:?}"),
                "use none, api-key, bearer, basic, mtls or custom",
            )),
        }
        out
    }

    /// The headers a client sends for this config (none for `none` and
    /// `mtls`, besides `headers`).
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match self.method {
            AuthMethod::ApiKey => out.push(("X-API-Key".into(), text(&self.api_key).to_string())),
            AuthMethod::Bearer => out.push((
                "Authorization".into(),
                format!("Bearer {}", text(&self.token)),
            )),
            AuthMethod::Basic => out.push(("Authorization".into(), self.basic_value())),
            _ => {}
        }
        out
    }

    /// Add this config's headers to `headers` (client side).
    pub fn apply(&self, headers: &mut HashMap<String, String>) {
        headers.extend(self.header_pairs());
    }

    fn basic_value(&self) -> String {
        let raw = format!("{}:{}", text(&self.username), text(&self.password));
        format!("Basic {}", base64(raw.as_bytes()))
    }
}

/// Server-side check of a call's headers against an [`AuthConfig`], in
/// constant time. `mtls` is enforced by the TLS layer (the server refuses to
/// start it without a client CA), so its header check passes.
#[derive(Clone, Default)]
pub struct ServerAuth {
    expected: Vec<(String, Vec<u8>, ErrorKind)>,
    mtls: bool,
}

impl std::fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAuth")
            .field(
                "headers",
                &self.expected.iter().map(|e| &e.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ServerAuth {
    /// Accept every call.
    pub fn none() -> ServerAuth {
        ServerAuth::default()
    }

    /// Expect what a client configured with `cfg` sends. Refuses an invalid
    /// config with every problem.
    pub fn new(cfg: &AuthConfig) -> Result<ServerAuth, Vec<Error>> {
        cfg.validate()?;
        let missing = match cfg.method {
            AuthMethod::ApiKey => ErrorKind::MissingApiKey,
            AuthMethod::Bearer => ErrorKind::MissingBearerToken,
            AuthMethod::Basic => ErrorKind::MissingBasicCredentials,
            _ => ErrorKind::UnsupportedAuthMethod,
        };
        let mut expected: Vec<(String, Vec<u8>, ErrorKind)> = Vec::new();
        for (k, v) in cfg.header_pairs() {
            let kind = if cfg.headers.contains_key(&k) {
                ErrorKind::UnsupportedAuthMethod
            } else {
                missing
            };
            expected.push((k.to_ascii_lowercase(), v.into_bytes(), kind));
        }
        Ok(ServerAuth {
            expected,
            mtls: cfg.method == AuthMethod::Mtls,
        })
    }

    /// The method is `mtls`: a TLS server must require client certificates.
    pub fn requires_client_cert(&self) -> bool {
        self.mtls
    }

    /// Whether this checks anything.
    pub fn is_none(&self) -> bool {
        self.expected.is_empty()
    }

    /// Check the headers of a call; `get` looks a header up by its lowercase
    /// name. Every expected header is compared (no early exit on the first
    /// mismatch), each in constant time.
    pub fn check_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> Result<(), Error> {
        let mut first: Option<Error> = None;
        for (name, want, missing) in &self.expected {
            let e = match get(name) {
                None => Some(
                    Error::new(*missing, format!("the call has no {name} header"))
                        .with_hint("configure the client's auth to match the plugin's"),
                ),
                Some(got) => {
                    if bool::from(got.as_bytes().ct_eq(want)) {
                        None
                    } else {
                        Some(
                            Error::new(
                                ErrorKind::AuthFailed,
                                format!("the {name} credential is wrong"),
                            )
                            .with_hint("check the client's auth credentials"),
                        )
                    }
                }
            };
            if first.is_none() {
                first = e;
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Check a map of headers (names in any case).
    pub fn check(&self, headers: &HashMap<String, String>) -> Result<(), Error> {
        if self.expected.is_empty() {
            return Ok(());
        }
        self.check_with(|name| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(cfg: &AuthConfig) -> Vec<&'static str> {
        match cfg.validate() {
            Ok(()) => vec![],
            Err(v) => v.iter().map(|e| e.code()).collect(),
        }
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn a_method_without_its_credentials_is_refused_with_its_code() {
        let m = |m: &str| AuthConfig {
            method: AuthMethod::from(m.to_string()),
            ..AuthConfig::default()
        };
        assert_eq!(codes(&m("none")), Vec::<&str>::new());
        assert_eq!(codes(&m("api-key")), vec!["AUTH_1101"]);
        assert_eq!(codes(&m("bearer")), vec!["AUTH_1102"]);
        assert_eq!(codes(&m("basic")), vec!["AUTH_1103"]);
        assert_eq!(codes(&m("mtls")), vec!["AUTH_1104"]);
        assert_eq!(codes(&m("custom")), vec!["AUTH_1105"]);
        assert_eq!(codes(&m("kerberos")), vec!["AUTH_1105"]);
        let mut two = AuthConfig::basic("", "x");
        two.headers.insert("bad header".into(), "v".into());
        assert_eq!(codes(&two), vec!["AUTH_1103", "AUTH_1105"]);
        assert_eq!(codes(&AuthConfig::basic("u", "p")), Vec::<&str>::new());
    }

    #[test]
    fn the_seed_field_names_round_trip() {
        let j = r#"{"method":"basic","username":"u","password":"p","headers":{"X-T":"1"}}"#;
        let c: AuthConfig = serde_json::from_str(j).expect("parse");
        assert_eq!(c.method, AuthMethod::Basic);
        let back = serde_json::to_value(&c).expect("ser");
        assert_eq!(back["method"], "basic");
        assert_eq!(back["username"], "u");
        let u: AuthConfig = serde_json::from_str(r#"{"method":"nope"}"#).expect("parse");
        assert_eq!(u.method, AuthMethod::Unsupported("nope".into()));
        assert!(!format!("{:?}", AuthConfig::api_key("sekrit")).contains("sekrit"));
    }

    #[test]
    fn the_configuration_shape_is_the_seeds() {
        // Absent or null fields are unset, an empty method is an unknown one,
        // an unknown field is refused, and only what is set is written.
        let c: AuthConfig =
            serde_json::from_str(r#"{"method": null, "token": null}"#).expect("nulls");
        assert_eq!(c, AuthConfig::none());
        let empty: AuthConfig = serde_json::from_str(r#"{"method": ""}"#).expect("parse");
        let codes: Vec<_> = empty
            .problems(Some(TransportKind::Https))
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(codes, ["AUTH_1105"]);
        assert!(serde_json::from_str::<AuthConfig>(r#"{"methd": "bearer"}"#).is_err());
        assert_eq!(
            serde_json::to_value(AuthConfig::none()).expect("ser"),
            serde_json::json!({})
        );
        assert_eq!(
            serde_json::to_value(AuthConfig::bearer("t")).expect("ser"),
            serde_json::json!({"method": "bearer", "token": "t"})
        );
    }

    #[test]
    fn the_server_accepts_its_client_and_refuses_others_with_codes() {
        for cfg in [
            AuthConfig::api_key("k1"),
            AuthConfig::bearer("t1"),
            AuthConfig::basic("u", "p"),
            AuthConfig::custom(HashMap::from([("X-Tenant".to_string(), "a".to_string())])),
        ] {
            let server = ServerAuth::new(&cfg).expect("valid");
            let mut h = HashMap::new();
            cfg.apply(&mut h);
            assert_eq!(server.check(&h), Ok(()), "{cfg:?}");
            let empty = server.check(&HashMap::new()).expect_err("no headers");
            assert!(empty.kind.is_auth());
            assert_ne!(empty.kind, ErrorKind::AuthFailed);
            let wrong: HashMap<String, String> = h
                .keys()
                .map(|k| (k.to_uppercase(), "wrong".into()))
                .collect();
            assert_eq!(
                server.check(&wrong).expect_err("wrong").kind,
                ErrorKind::AuthFailed
            );
        }
        let e = ServerAuth::new(&AuthConfig::api_key("k"))
            .expect("valid")
            .check(&HashMap::new())
            .expect_err("missing");
        assert_eq!(e.code(), "AUTH_1101");
        assert!(ServerAuth::none().check(&HashMap::new()).is_ok());
    }
}
