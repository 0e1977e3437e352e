//! The API on TCP: a bearer token or mTLS, never plain. Real listeners on
//! loopback, real certificates (generated here with rcgen), a real daemon.

use std::path::{Path, PathBuf};

use hangar_api::client::{Client, TlsFiles};
use hangar_api::pb;
use hangar_api::server::{self, ServeOptions};
use hangar_core::{BootOptions, Daemon};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
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

fn pki(dir: &Path, client_ca: &str) -> Pki {
    let server_ca = ca("hangar test CA");
    let (sc, sk) = leaf(&server_ca, &["localhost", "127.0.0.1"]);
    // The client certificate comes from `client_ca`: the same CA, or a stranger.
    let other = ca("someone else");
    let issuer = if client_ca == "same" {
        &server_ca
    } else {
        &other
    };
    let (cc, ck) = leaf(issuer, &["client"]);
    let w = |name: &str, s: &str| {
        let p = dir.join(name);
        std::fs::write(&p, s).expect("write pem");
        p
    };
    Pki {
        ca: w("ca.pem", &server_ca.pem()),
        server_cert: w("server.pem", &sc),
        server_key: w("server.key", &sk),
        client_cert: w("client.pem", &cc),
        client_key: w("client.key", &ck),
    }
}

async fn daemon(dir: &Path) -> Daemon {
    Daemon::boot(BootOptions {
        catalogs: Vec::new(),
        data_dir: dir.join("data"),
        config: None,
    })
    .await
    .expect("boot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_accepts_our_client_and_refuses_others() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let good = pki(tmp.path(), "same");
    let d = daemon(tmp.path()).await;
    let serving = server::serve(
        d.clone(),
        ServeOptions {
            socket: tmp.path().join("data/hangar.sock"),
            tcp: Some("127.0.0.1:0".parse().expect("addr")),
            token: None,
            tls: Some((good.server_cert.clone(), good.server_key.clone())),
            client_ca: Some(good.ca.clone()),
            limits: Default::default(),
        },
    )
    .await
    .expect("serve");
    let addr = serving.tcp_addr.expect("tcp addr");
    let url = format!("https://localhost:{}", addr.port());

    // A client certificate signed by the trusted CA: accepted.
    let files = TlsFiles {
        ca: good.ca.clone(),
        cert: Some(good.client_cert.clone()),
        key: Some(good.client_key.clone()),
    };
    let mut c = Client::tcp(&url, None, Some(&files))
        .await
        .expect("connect with mTLS");
    let st = c
        .daemon
        .status(pb::StatusRequest {})
        .await
        .expect("status over mTLS");
    assert_eq!(st.into_inner().pid, std::process::id());

    // No client certificate: the handshake (or the first call) fails.
    let anon = TlsFiles {
        ca: good.ca.clone(),
        cert: None,
        key: None,
    };
    let refused = match Client::tcp(&url, None, Some(&anon)).await {
        Err(_) => true,
        Ok(mut c) => c.daemon.status(pb::StatusRequest {}).await.is_err(),
    };
    assert!(refused, "a client without a certificate must be refused");

    // A certificate from another CA: refused.
    let sub = tmp.path().join("stranger");
    std::fs::create_dir_all(&sub).expect("mkdir");
    let stranger = pki(&sub, "other");
    let bad = TlsFiles {
        ca: good.ca.clone(),
        cert: Some(stranger.client_cert),
        key: Some(stranger.client_key),
    };
    let refused = match Client::tcp(&url, None, Some(&bad)).await {
        Err(_) => true,
        Ok(mut c) => c.daemon.status(pb::StatusRequest {}).await.is_err(),
    };
    assert!(
        refused,
        "a client certificate from another CA must be refused"
    );

    // Plain HTTP/2 to the TLS port gets nowhere either.
    let plain = match Client::tcp(&format!("http://127.0.0.1:{}", addr.port()), None, None).await {
        Err(_) => true,
        Ok(mut c) => c.daemon.status(pb::StatusRequest {}).await.is_err(),
    };
    assert!(plain, "plain text to the TLS listener must fail");

    serving.stop().await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_without_credentials_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = daemon(tmp.path()).await;
    let res = server::serve(
        d.clone(),
        ServeOptions {
            socket: tmp.path().join("data/hangar.sock"),
            tcp: Some("127.0.0.1:0".parse().expect("addr")),
            token: None,
            tls: None,
            client_ca: None,
            limits: Default::default(),
        },
    )
    .await;
    let Err(e) = res else {
        panic!("plain TCP must be refused")
    };
    assert_eq!(e.code(), "API_INSECURE");
    assert!(e.hint.is_some());
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_checked_on_every_service() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = daemon(tmp.path()).await;
    let serving = server::serve(
        d.clone(),
        ServeOptions {
            socket: tmp.path().join("data/hangar.sock"),
            tcp: Some("127.0.0.1:0".parse().expect("addr")),
            token: Some("s3cret".into()),
            tls: None,
            client_ca: None,
            limits: Default::default(),
        },
    )
    .await
    .expect("serve");
    let url = format!("http://{}", serving.tcp_addr.expect("tcp addr"));
    let mut ok = Client::tcp(&url, Some("s3cret"), None)
        .await
        .expect("connect");
    ok.daemon
        .status(pb::StatusRequest {})
        .await
        .expect("status with the token");
    ok.processes
        .list(pb::ListRequest::default())
        .await
        .expect("list with the token");
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cretX")] {
        let mut c = Client::tcp(&url, token, None).await.expect("connect");
        for res in [
            c.daemon.status(pb::StatusRequest {}).await.map(drop),
            c.processes.list(pb::ListRequest::default()).await.map(drop),
            c.events
                .history(pb::HistoryRequest::default())
                .await
                .map(drop),
        ] {
            let st = res.expect_err("must be refused");
            assert_eq!(st.code(), tonic::Code::Unauthenticated, "token {token:?}");
            assert_eq!(hangar_api::convert::error(&st).code(), "UNAUTHENTICATED");
        }
    }
    // The socket needs no token: its 0600 mode and the 0700 data dir guard it.
    let mut local = Client::unix(&tmp.path().join("data/hangar.sock"))
        .await
        .expect("socket");
    local
        .daemon
        .status(pb::StatusRequest {})
        .await
        .expect("socket status");
    serving.stop().await;
    d.shutdown().await;
}
