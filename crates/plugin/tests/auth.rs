//! Auth and TLS on real servers: HTTPS and gRPC-TLS with certificates made
//! here (rcgen), mTLS accepting our client and refusing one without a
//! certificate or with one from another CA, and API key / bearer / basic /
//! custom credentials refused over HTTP and gRPC with their AUTH codes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hangar_plugin::grpc::{self, GrpcClient, GrpcOptions, GrpcServeOptions};
use hangar_plugin::http::{self, HttpClient, HttpOptions, HttpServeOptions};
use hangar_plugin::tls::ServerTls;
use hangar_plugin::{
    AuthConfig, Call, CallContext, CallKind, Error, Handler, ServerAuth, Transport,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{json, Value};

struct Echo;

impl Handler for Echo {
    async fn execute(&self, call: Call) -> Result<Value, String> {
        Ok(json!({ "echo": call.data }))
    }
    fn info(&self) -> Value {
        json!({ "name": "echo" })
    }
}

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("ca")
}

fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, sans: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("params");
    let cert = p.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

fn pki(dir: &Path) -> Pki {
    let ours = ca("hangar plugin test CA");
    let other = ca("someone else");
    let (sc, sk) = leaf(&ours, &["localhost", "127.0.0.1"]);
    let (cc, ck) = leaf(&ours, &["client"]);
    let (xc, xk) = leaf(&other, &["client"]);
    let w = |name: &str, s: &str| {
        let p = dir.join(name);
        std::fs::write(&p, s).expect("write pem");
        p
    };
    Pki {
        ca: w("ca.pem", &ours.pem()),
        server_cert: w("server.pem", &sc),
        server_key: w("server.key", &sk),
        client_cert: w("client.pem", &cc),
        client_key: w("client.key", &ck),
        stranger_cert: w("stranger.pem", &xc),
        stranger_key: w("stranger.key", &xk),
    }
}

fn ctx() -> CallContext {
    CallContext::with_timeout(Duration::from_secs(10))
}

async fn call(t: &dyn Transport) -> Result<Value, Error> {
    t.call(CallKind::Execute, json!({ "n": 1 }), ctx()).await
}

fn server_tls(p: &Pki, mtls: bool) -> ServerTls {
    ServerTls {
        cert_file: p.server_cert.clone(),
        key_file: p.server_key.clone(),
        client_ca_file: mtls.then(|| p.ca.clone()),
    }
}

fn mtls_auth(p: &Pki, cert: &Path, key: &Path) -> AuthConfig {
    AuthConfig::mtls(cert, key, Some(p.ca.clone()))
}

fn ca_only(p: &Pki) -> AuthConfig {
    AuthConfig {
        ca_file: Some(p.ca.clone()),
        ..AuthConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_mtls_over_http() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = pki(tmp.path());
    let any = "127.0.0.1:0".parse().expect("addr");

    // HTTPS, server certificate checked against our CA.
    let mut o = HttpServeOptions::new(any);
    o.tls = Some(server_tls(&p, false));
    let s = http::serve(Arc::new(Echo), o).await.expect("serve https");
    let url = format!(
        "https://localhost:{}/",
        s.local_addr().expect("addr").port()
    );
    let mut co = HttpOptions::new(&url);
    co.auth = ca_only(&p);
    let c = HttpClient::new(co).expect("client");
    assert_eq!(c.kind(), "https");
    assert_eq!(call(&c).await.expect("https")["echo"]["n"], 1);
    // A client that does not trust our CA refuses the server.
    let mut co = HttpOptions::new(&url);
    co.auth = AuthConfig {
        ca_file: Some(p.stranger_cert.clone()),
        ..AuthConfig::default()
    };
    match HttpClient::new(co) {
        Err(_) => {}
        Ok(c) => assert!(call(&c).await.is_err(), "an untrusted server certificate"),
    }
    drop(s);

    // mTLS: our client in, no certificate or a stranger's out.
    let mut o = HttpServeOptions::new(any);
    o.tls = Some(server_tls(&p, true));
    o.auth = ServerAuth::new(&mtls_auth(&p, &p.client_cert, &p.client_key)).expect("auth");
    let s = http::serve(Arc::new(Echo), o).await.expect("serve mtls");
    let url = format!(
        "https://localhost:{}/",
        s.local_addr().expect("addr").port()
    );
    let client = |auth: AuthConfig| {
        let mut co = HttpOptions::new(&url);
        co.auth = auth;
        HttpClient::new(co).expect("client")
    };
    let good = client(mtls_auth(&p, &p.client_cert, &p.client_key));
    assert_eq!(call(&good).await.expect("mtls")["echo"]["n"], 1);
    let anon = client(ca_only(&p));
    let e = call(&anon).await.expect_err("no client certificate");
    assert!(e.is_retryable() || e.kind.is_transport(), "{e}");
    let stranger = client(mtls_auth(&p, &p.stranger_cert, &p.stranger_key));
    call(&stranger)
        .await
        .expect_err("a client certificate from another CA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_tls_and_mtls() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = pki(tmp.path());
    let any = "127.0.0.1:0".parse().expect("addr");

    let mut o = GrpcServeOptions::new(any);
    o.tls = Some(server_tls(&p, false));
    let s = grpc::serve(Arc::new(Echo), o).await.expect("serve tls");
    let ep = format!("localhost:{}", s.local_addr().expect("addr").port());
    let mut co = GrpcOptions::new(&ep);
    co.tls = true;
    co.auth = ca_only(&p);
    let c = GrpcClient::new(co).expect("client");
    assert_eq!(c.kind(), "grpc-tls");
    assert_eq!(call(&c).await.expect("grpc-tls")["echo"]["n"], 1);
    // Plain text to the TLS port gets nowhere.
    let plain = GrpcClient::new(GrpcOptions::new(&ep)).expect("client");
    assert!(call(&plain).await.is_err());
    drop(s);

    let mut o = GrpcServeOptions::new(any);
    o.tls = Some(server_tls(&p, true));
    o.auth = ServerAuth::new(&mtls_auth(&p, &p.client_cert, &p.client_key)).expect("auth");
    let s = grpc::serve(Arc::new(Echo), o).await.expect("serve mtls");
    let ep = format!("localhost:{}", s.local_addr().expect("addr").port());
    let client = |auth: AuthConfig| {
        let mut co = GrpcOptions::new(&ep);
        co.tls = true;
        co.auth = auth;
        GrpcClient::new(co).expect("client")
    };
    let good = client(mtls_auth(&p, &p.client_cert, &p.client_key));
    assert_eq!(call(&good).await.expect("mtls")["echo"]["n"], 1);
    call(&client(ca_only(&p)))
        .await
        .expect_err("no client certificate");
    call(&client(mtls_auth(&p, &p.stranger_cert, &p.stranger_key)))
        .await
        .expect_err("a client certificate from another CA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_without_a_client_ca_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = pki(tmp.path());
    let auth = ServerAuth::new(&mtls_auth(&p, &p.client_cert, &p.client_key)).expect("auth");
    let mut o = HttpServeOptions::new("127.0.0.1:0".parse().expect("addr"));
    o.tls = Some(server_tls(&p, false));
    o.auth = auth.clone();
    let e = http::serve(Arc::new(Echo), o)
        .await
        .expect_err("no client CA");
    assert_eq!(e.code(), "AUTH_1104");
    let mut o = GrpcServeOptions::new("127.0.0.1:0".parse().expect("addr"));
    o.auth = auth;
    let e = grpc::serve(Arc::new(Echo), o).await.expect_err("no TLS");
    assert_eq!(e.code(), "AUTH_1104");
    // And a client asked for mTLS over plain text is refused before any call.
    let mut co = HttpOptions::new("http://127.0.0.1:1/");
    co.auth = mtls_auth(&p, &p.client_cert, &p.client_key);
    assert_eq!(HttpClient::new(co).expect_err("plain").code(), "AUTH_1104");
    // Unreadable certificate files are refused at construction.
    let mut co = HttpOptions::new("https://127.0.0.1:1/");
    co.auth = mtls_auth(&p, &tmp.path().join("nope.pem"), &p.client_key);
    assert_eq!(
        HttpClient::new(co).expect_err("missing file").code(),
        "AUTH_1104"
    );
}

/// For each method: the right credential passes, none is refused with the
/// method's code, a wrong one with AUTH_1106; over HTTP and gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_with_their_codes_over_http_and_grpc() {
    let cases = [
        (
            AuthConfig::api_key("k-1"),
            AuthConfig::api_key("k-2"),
            "AUTH_1101",
        ),
        (
            AuthConfig::bearer("t-1"),
            AuthConfig::bearer("t-2"),
            "AUTH_1102",
        ),
        (
            AuthConfig::basic("u", "p"),
            AuthConfig::basic("u", "q"),
            "AUTH_1103",
        ),
        (
            AuthConfig::custom(HashMap::from([("X-Tenant".into(), "a".into())])),
            AuthConfig::custom(HashMap::from([("X-Tenant".into(), "b".into())])),
            "AUTH_1105",
        ),
    ];
    let any = "127.0.0.1:0".parse().expect("addr");
    for (right, wrong, missing_code) in cases {
        let sa = ServerAuth::new(&right).expect("server auth");
        let mut ho = HttpServeOptions::new(any);
        ho.auth = sa.clone();
        let hs = http::serve(Arc::new(Echo), ho).await.expect("http");
        let mut go = GrpcServeOptions::new(any);
        go.auth = sa;
        let gs = grpc::serve(Arc::new(Echo), go).await.expect("grpc");
        let url = format!("http://{}/", hs.local_addr().expect("addr"));
        let ep = gs.local_addr().expect("addr").to_string();
        for (auth, want) in [
            (right.clone(), None),
            (AuthConfig::none(), Some(missing_code)),
            (wrong.clone(), Some("AUTH_1106")),
        ] {
            let mut h = HttpOptions::new(&url);
            h.auth = auth.clone();
            let mut g = GrpcOptions::new(&ep);
            g.auth = auth.clone();
            let transports: Vec<Box<dyn Transport>> = vec![
                Box::new(HttpClient::new(h).expect("http client")),
                Box::new(GrpcClient::new(g).expect("grpc client")),
            ];
            for t in &transports {
                let r = call(t.as_ref()).await;
                match want {
                    None => assert_eq!(r.expect("authorised")["echo"]["n"], 1),
                    Some(code) => {
                        let e = r.expect_err("refused");
                        assert_eq!(e.code(), code, "{} with {auth:?}: {e}", t.kind());
                        assert!(!e.is_retryable());
                    }
                }
            }
        }
    }
}
