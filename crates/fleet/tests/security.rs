//! The fleet against an etcd that wants TLS with client certificates, and
//! one with users and passwords (Debian's `etcd-server`; skipped, saying
//! why, where there is none). Certificates are made here with rcgen.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hangar_core::config::FleetSettings;
use hangar_core::{BootOptions, Daemon};
use hangar_fleet::Fleet;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

mod common;

use common::{etcd_bin, free_port, start as etcd};

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("ca")
}

fn leaf(
    dir: &Path,
    name: &str,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    sans: &[&str],
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().expect("key");
    let p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("params");
    let cert = p.signed_by(&key, issuer).expect("sign");
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("write");
    std::fs::write(&k, key.serialize_pem()).expect("write");
    (c, k)
}

fn settings(endpoint: &str, node: &str) -> FleetSettings {
    let toml = format!(
        "[daemon.fleet]\nendpoints = [\"{endpoint}\"]\nnode = \"{node}\"\nlease_ttl = \"3s\"\ngrace = \"1s\"\n"
    );
    hangar_core::config::DaemonConfig::parse(&toml, None)
        .expect("a valid section")
        .settings
        .fleet
        .expect("a fleet section")
}

async fn daemon(dir: &Path) -> Daemon {
    Daemon::boot(BootOptions {
        data_dir: dir.to_path_buf(),
        config: None,
        catalogs: Vec::new(),
    })
    .await
    .expect("boot")
}

/// The fleet lists `node` as registered within `limit`.
async fn registers(f: &Fleet, node: &str, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(nodes) = f.nodes().await {
            if nodes.iter().any(|n| n.name == node && n.record.is_some()) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let Some(bin) = etcd_bin() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let authority = ca("etcd test CA");
    let (sc, sk) = leaf(dir, "server", &authority, &["localhost", "127.0.0.1"]);
    let (cc, ck) = leaf(dir, "client", &authority, &["node-a"]);
    let stranger = ca("someone else");
    let (xc, xk) = leaf(dir, "stranger", &stranger, &["node-x"]);
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, authority.pem()).expect("write");
    let url = format!("https://127.0.0.1:{}", free_port());
    let _etcd = etcd(
        &bin,
        dir,
        &url,
        &[
            format!("--cert-file={}", sc.display()),
            format!("--key-file={}", sk.display()),
            format!("--trusted-ca-file={}", ca_file.display()),
            "--client-cert-auth".into(),
        ],
    );

    let mut good = settings(&url, "a");
    good.ca_file = Some(ca_file.clone());
    good.cert_file = Some(cc);
    good.key_file = Some(ck);
    let da = daemon(&dir.join("a")).await;
    let a = Fleet::start(da.clone(), good).await.expect("start");
    assert!(
        registers(&a, "a", Duration::from_secs(30)).await,
        "a node with our certificate joins"
    );

    // A client certificate from another CA is refused by etcd: that node
    // never registers, and its calls say etcd is unavailable.
    let mut bad = settings(&url, "x");
    bad.ca_file = Some(ca_file);
    bad.cert_file = Some(xc);
    bad.key_file = Some(xk);
    let dx = daemon(&dir.join("x")).await;
    let x = Fleet::start(dx.clone(), bad).await.expect("start");
    let e = x.nodes().await.expect_err("refused");
    assert_eq!(e.code(), "FLEET_UNAVAILABLE", "{e:?}");
    assert!(!registers(&a, "x", Duration::from_secs(3)).await);
    assert!(!x.registered());
    x.stop().await;
    a.stop().await;
    dx.shutdown().await;
    da.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_passwords() {
    let Some(bin) = etcd_bin() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let url = format!("http://127.0.0.1:{}", free_port());
    let _etcd = etcd(&bin, dir, &url, &[]);
    // Turn on etcd's auth with a root user and a fleet user whose role may
    // use only the fleet's prefix.
    let mut c = common::client(&url).await;
    c.user_add("root", "root-pw", None).await.expect("root");
    c.user_grant_role("root", "root").await.expect("root role");
    c.role_add("fleet").await.expect("role");
    c.role_grant_permission(
        "fleet",
        etcd_client::Permission::read_write("/hangar/fleet/").with_prefix(),
    )
    .await
    .expect("grant");
    c.user_add("hangar", "s3cret", None).await.expect("user");
    c.user_grant_role("hangar", "fleet")
        .await
        .expect("user role");
    c.auth_enable().await.expect("auth on");

    let pw = dir.join("password");
    std::fs::write(&pw, "s3cret\n").expect("write");
    let mut good = settings(&url, "a");
    good.user = Some("hangar".into());
    good.password_file = Some(pw);
    let da = daemon(&dir.join("a")).await;
    let a = Fleet::start(da.clone(), good).await.expect("start");
    assert!(
        registers(&a, "a", Duration::from_secs(30)).await,
        "the user's node joins"
    );

    // A wrong password: the node never joins; its calls say why, with the
    // code, and never with the password.
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "n0pe-pw\n").expect("write");
    let mut bad = settings(&url, "x");
    bad.user = Some("hangar".into());
    bad.password_file = Some(wrong);
    let dx = daemon(&dir.join("x")).await;
    let x = Fleet::start(dx.clone(), bad)
        .await
        .expect("start (etcd need not answer yet)");
    let e = x.nodes().await.expect_err("refused");
    assert_eq!(e.code(), "FLEET_UNAVAILABLE", "{e:?}");
    assert!(e.message.contains("authentication failed"), "{e:?}");
    assert!(!format!("{e:?}").contains("n0pe-pw"), "{e:?}");
    assert!(!registers(&a, "x", Duration::from_secs(3)).await);
    x.stop().await;
    a.stop().await;
    dx.shutdown().await;
    da.shutdown().await;
}

/// A node whose etcd is not up yet still starts (the daemon boots), and
/// joins once etcd answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_etcd_joins_when_it_answers() {
    let Some(bin) = etcd_bin() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let url = format!("http://127.0.0.1:{}", free_port());
    let d = daemon(&dir.join("a")).await;
    let a = Fleet::start(d.clone(), settings(&url, "a"))
        .await
        .expect("starts without etcd");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!a.registered());
    assert_eq!(
        a.nodes().await.expect_err("no etcd").code(),
        "FLEET_UNAVAILABLE"
    );
    let _etcd = etcd(&bin, dir, &url, &[]);
    assert!(registers(&a, "a", Duration::from_secs(30)).await);
    // The record is written before the lease's renewals open, and only
    // then does the node count itself registered: wait for that too.
    let t0 = Instant::now();
    while !a.registered() && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.registered(), "the session follows its record");
    a.stop().await;
    d.shutdown().await;
}
