//! The RouterOS backend against a protocol-level test router on loopback: a
//! real TCP (and TLS) server that speaks the API's word/sentence encoding,
//! checks the login, keeps the objects it was told to add, answers `print`
//! queries, records every command and can be told to refuse one.
//!
//! Its codec is written here independently of the library's, so an encoding
//! bug on one side shows up as a failure instead of cancelling out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hangar_net::{
    no_progress, NetErrorKind, NetRecord, NetSpec, NetState, NetworkBackend, NetworkConfig,
    RouterOsBackend, RouterOsConfig, ROUTEROS_STEPS,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

// ---- the test router -------------------------------------------------------

fn put_len(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0x3fff => {
            out.push(0x80 | (n >> 8) as u8);
            out.push(n as u8);
        }
        0x4000..=0x1f_ffff => {
            out.push(0xc0 | (n >> 16) as u8);
            out.push((n >> 8) as u8);
            out.push(n as u8);
        }
        _ => panic!("test router never sends words this long"),
    }
}

async fn get_len<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<usize> {
    let b0 = r.read_u8().await? as usize;
    Ok(if b0 < 0x80 {
        b0
    } else if b0 < 0xc0 {
        ((b0 & 0x3f) << 8) | r.read_u8().await? as usize
    } else if b0 < 0xe0 {
        let b1 = r.read_u8().await? as usize;
        let b2 = r.read_u8().await? as usize;
        ((b0 & 0x1f) << 16) | (b1 << 8) | b2
    } else {
        return Err(std::io::Error::other("test router: length too big"));
    })
}

async fn get_sentence<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<String>> {
    let mut words = Vec::new();
    loop {
        let n = get_len(r).await?;
        if n == 0 {
            return Ok(words);
        }
        let mut b = vec![0; n];
        r.read_exact(&mut b).await?;
        words.push(String::from_utf8(b).map_err(std::io::Error::other)?);
    }
}

fn sentence(words: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for w in words {
        put_len(&mut out, w.len());
        out.extend_from_slice(w.as_bytes());
    }
    out.push(0);
    out
}

#[derive(Debug, Clone)]
struct Obj {
    menu: String,
    id: String,
    props: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    objects: Vec<Obj>,
    next_id: u32,
    /// Every command after login, without its `.tag`.
    log: Vec<Vec<String>>,
    /// Refuse this command word (e.g. `/ip/route/add`).
    fail_on: Option<String>,
    logins: Vec<(String, String)>,
}

#[derive(Clone)]
struct Router {
    port: u16,
    st: Arc<Mutex<State>>,
}

impl Router {
    fn objects(&self, menu: &str) -> Vec<Obj> {
        self.st
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|o| o.menu == menu)
            .cloned()
            .collect()
    }
    fn all(&self) -> Vec<Obj> {
        self.st.lock().unwrap().objects.clone()
    }
    fn log(&self) -> Vec<Vec<String>> {
        self.st.lock().unwrap().log.clone()
    }
    fn clear_log(&self) {
        self.st.lock().unwrap().log.clear();
    }
    fn fail_on(&self, cmd: Option<&str>) {
        self.st.lock().unwrap().fail_on = cmd.map(str::to_string);
    }
    fn plant(&self, menu: &str, props: &[(&str, &str)]) {
        let mut st = self.st.lock().unwrap();
        st.next_id += 1;
        let id = format!("*{:X}", st.next_id);
        st.objects.push(Obj {
            menu: menu.into(),
            id,
            props: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
    }
}

fn answer(st: &mut State, words: &[String]) -> Vec<Vec<String>> {
    let tag = words.iter().find(|w| w.starts_with(".tag=")).cloned();
    let with_tag = |mut s: Vec<String>| {
        if let Some(t) = &tag {
            s.push(t.clone());
        }
        s
    };
    let trap = |msg: &str| {
        vec![
            with_tag(vec!["!trap".into(), format!("=message={msg}")]),
            with_tag(vec!["!done".into()]),
        ]
    };
    let cmd = words[0].clone();
    st.log.push(
        words
            .iter()
            .filter(|w| !w.starts_with(".tag="))
            .cloned()
            .collect(),
    );
    let attrs: BTreeMap<String, String> = words
        .iter()
        .filter_map(|w| w.strip_prefix('='))
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let queries: Vec<(String, String)> = words
        .iter()
        .filter_map(|w| w.strip_prefix('?'))
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if st.fail_on.as_deref() == Some(cmd.as_str()) {
        return trap("failure: refused by the test router");
    }
    let Some((menu, verb)) = cmd.rsplit_once('/') else {
        return trap("no such command");
    };
    match verb {
        "add" => {
            if let Some(name) = attrs.get("name") {
                if st
                    .objects
                    .iter()
                    .any(|o| o.menu == menu && o.props.get("name") == Some(name))
                {
                    return trap("failure: already have such name");
                }
            }
            st.next_id += 1;
            let id = format!("*{:X}", st.next_id);
            st.objects.push(Obj {
                menu: menu.into(),
                id: id.clone(),
                props: attrs,
            });
            vec![with_tag(vec!["!done".into(), format!("=ret={id}")])]
        }
        "print" => {
            let mut out = Vec::new();
            for o in st.objects.iter().filter(|o| o.menu == menu) {
                if queries.iter().all(|(k, v)| o.props.get(k) == Some(v)) {
                    let mut s = vec!["!re".to_string(), format!("=.id={}", o.id)];
                    for (k, v) in &o.props {
                        s.push(format!("={k}={v}"));
                    }
                    out.push(with_tag(s));
                }
            }
            if out.is_empty() {
                // As RouterOS 7.18+ does.
                out.push(with_tag(vec!["!empty".into()]));
            }
            out.push(with_tag(vec!["!done".into()]));
            out
        }
        "remove" => {
            let id = attrs.get(".id").cloned().unwrap_or_default();
            let before = st.objects.len();
            st.objects.retain(|o| !(o.menu == menu && o.id == id));
            if st.objects.len() == before {
                return trap("no such item");
            }
            vec![with_tag(vec!["!done".into()])]
        }
        _ => trap("no such command"),
    }
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, st: Arc<Mutex<State>>) {
    let mut logged_in = false;
    while let Ok(words) = get_sentence(&mut s).await {
        if words.is_empty() {
            continue;
        }
        let replies = if !logged_in {
            let tag = words
                .iter()
                .find(|w| w.starts_with(".tag="))
                .cloned()
                .unwrap_or_default();
            let get = |k: &str| {
                words
                    .iter()
                    .find_map(|w| w.strip_prefix(&format!("={k}=")))
                    .unwrap_or("")
                    .to_string()
            };
            if words[0] != "/login" {
                vec![vec!["!fatal".to_string(), "not logged in".into()]]
            } else {
                st.lock()
                    .unwrap()
                    .logins
                    .push((get("name"), get("password")));
                if get("name") == "admin" && get("password") == "s3cret" {
                    logged_in = true;
                    vec![vec!["!done".to_string(), tag]]
                } else {
                    vec![
                        vec![
                            "!trap".into(),
                            "=message=invalid user name or password (6)".into(),
                            tag.clone(),
                        ],
                        vec!["!done".into(), tag],
                    ]
                }
            }
        } else {
            answer(&mut st.lock().unwrap(), &words)
        };
        let fatal = replies.iter().any(|r| r[0] == "!fatal");
        for r in replies {
            if s.write_all(&sentence(&r)).await.is_err() {
                return;
            }
        }
        if fatal {
            return;
        }
    }
}

async fn start_router(tls: Option<tokio_rustls::TlsAcceptor>) -> Router {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let st = Arc::new(Mutex::new(State::default()));
    let st2 = st.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let st = st2.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_conn(tcp, st).await,
                    Some(acc) => {
                        if let Ok(s) = acc.accept(tcp).await {
                            serve_conn(s, st).await
                        }
                    }
                }
            });
        }
    });
    Router { port, st }
}

fn config(r: &Router) -> RouterOsConfig {
    let mut c = RouterOsConfig::new("127.0.0.1", "admin", "s3cret");
    c.port = Some(r.port);
    c.parent_interface = "ether2".into();
    c.timeout_secs = 30;
    c
}

fn words(ws: &[&str]) -> Vec<String> {
    ws.iter().map(|s| s.to_string()).collect()
}

// ---- the tests -------------------------------------------------------------

#[tokio::test]
async fn create_sends_the_seed_commands_in_order_and_teardown_removes_them() {
    let r = start_router(None).await;
    let b = RouterOsBackend::new(config(&r)).unwrap();
    let seen = Mutex::new(Vec::<NetRecord>::new());
    let progress = |rec: &NetRecord| seen.lock().unwrap().push(rec.clone());
    let rec = b
        .create(&NetSpec::new("tor-1", 42), &progress)
        .await
        .unwrap();
    assert_eq!(rec.state, NetState::Active);
    assert_eq!(rec.steps_done, ROUTEROS_STEPS.to_vec());
    assert_eq!(rec.host_if, "hg-42");
    assert_eq!(rec.routing_mark, "hg-42");
    assert_eq!(rec.host_addr.to_string(), "10.99.42.1");
    assert_eq!(rec.instance_addr.to_string(), "10.99.42.2");
    assert_eq!(seen.lock().unwrap().len(), ROUTEROS_STEPS.len() + 2);
    assert_eq!(
        r.st.lock().unwrap().logins,
        vec![("admin".to_string(), "s3cret".to_string())]
    );

    let c = "=comment=hangar:tor-1";
    assert_eq!(
        r.log(),
        vec![
            words(&[
                "/interface/vlan/add",
                "=name=hg-42",
                "=vlan-id=42",
                "=interface=ether2",
                c
            ]),
            words(&[
                "/ip/address/add",
                "=address=10.99.42.1/24",
                "=interface=hg-42",
                c
            ]),
            words(&["/routing/table/add", "=name=hg-42", "=fib=yes", c]),
            words(&[
                "/ip/route/add",
                "=dst-address=0.0.0.0/0",
                "=gateway=10.99.42.2",
                "=routing-table=hg-42",
                c
            ]),
        ]
    );
    assert_eq!(r.all().len(), 4);

    b.teardown(&rec).await.unwrap();
    assert!(r.all().is_empty(), "{:?}", r.all());
    // Removal is newest first: route, table, address, vlan.
    let removes: Vec<String> = r
        .log()
        .into_iter()
        .filter(|w| w[0].ends_with("/remove"))
        .map(|w| w[0].clone())
        .collect();
    assert_eq!(
        removes,
        [
            "/ip/route/remove",
            "/routing/table/remove",
            "/ip/address/remove",
            "/interface/vlan/remove"
        ]
    );
    // Twice is fine.
    b.teardown(&rec).await.unwrap();
}

#[tokio::test]
async fn a_refused_command_rolls_back_newest_first() {
    let r = start_router(None).await;
    r.fail_on(Some("/ip/route/add"));
    let b = RouterOsBackend::new(config(&r)).unwrap();
    let last = Mutex::new(None::<NetRecord>);
    let progress = |rec: &NetRecord| *last.lock().unwrap() = Some(rec.clone());
    let err = b
        .create(&NetSpec::new("x", 7), &progress)
        .await
        .unwrap_err();
    assert_eq!(err.kind, NetErrorKind::RouterCommand);
    assert!(err.message.contains("refused by the test router"), "{err}");
    let rec = last.lock().unwrap().clone().unwrap();
    assert!(
        matches!(&rec.state, NetState::Error { step, .. } if step == "route"),
        "{:?}",
        rec.state
    );
    assert!(rec.steps_done.is_empty());
    assert!(r.all().is_empty(), "left on the router: {:?}", r.all());
    let removes: Vec<String> = r
        .log()
        .into_iter()
        .filter(|w| w[0].ends_with("/remove"))
        .map(|w| w[0].clone())
        .collect();
    assert_eq!(
        removes,
        [
            "/routing/table/remove",
            "/ip/address/remove",
            "/interface/vlan/remove"
        ]
    );
}

#[tokio::test]
async fn an_injected_fault_after_any_step_leaves_the_router_clean() {
    let r = start_router(None).await;
    for k in 0..ROUTEROS_STEPS.len() {
        let b = RouterOsBackend::new(config(&r)).unwrap().fail_after_step(k);
        let err = b
            .create(&NetSpec::new("f", 9), &no_progress)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "NET_INJECTED_FAULT");
        assert!(r.all().is_empty(), "after {k} steps: {:?}", r.all());
    }
}

#[tokio::test]
async fn a_wrong_password_is_a_login_error() {
    let r = start_router(None).await;
    let mut c = config(&r);
    c.password = "nope".into();
    let b = RouterOsBackend::new(c).unwrap();
    let err = b
        .create(&NetSpec::new("x", 3), &no_progress)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "NET_ROUTER_LOGIN_FAILED", "{err}");
    assert!(r.log().is_empty());
}

#[tokio::test]
async fn nothing_listening_is_an_unreachable_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let mut c = RouterOsConfig::new("127.0.0.1", "admin", "s3cret");
    c.port = Some(port);
    let b = RouterOsBackend::new(c).unwrap();
    let err = b
        .create(&NetSpec::new("x", 3), &no_progress)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "NET_ROUTER_UNREACHABLE", "{err}");
}

#[tokio::test]
async fn recovery_removes_leftovers_recreates_missing_and_spares_foreign() {
    let r = start_router(None).await;
    let b = RouterOsBackend::new(config(&r)).unwrap();
    let a = b
        .create(&NetSpec::new("a", 10), &no_progress)
        .await
        .unwrap();
    let gone = b
        .create(&NetSpec::new("gone", 11), &no_progress)
        .await
        .unwrap();
    let forgotten = b
        .create(&NetSpec::new("forgotten", 12), &no_progress)
        .await
        .unwrap();
    // "gone" lost its VLAN on the router (someone removed it by hand).
    r.st.lock()
        .unwrap()
        .objects
        .retain(|o| !(o.menu == "/interface/vlan" && o.props["name"] == "hg-11"));
    // Foreign objects: the user's own VLAN, table and route.
    r.plant("/interface/vlan", &[("name", "guest"), ("vlan-id", "300")]);
    r.plant("/routing/table", &[("name", "to-isp2")]);
    r.plant(
        "/ip/route",
        &[("dst-address", "0.0.0.0/0"), ("routing-table", "to-isp2")],
    );
    // A hangar-looking one outside the configured range is not ours either.
    r.plant("/interface/vlan", &[("name", "hg-999"), ("vlan-id", "999")]);

    let report = b.recover(&[a.clone(), gone.clone()]).await.unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.recreated.len(), 1);
    assert_eq!(report.recreated[0].instance_id, "gone");
    assert!(
        report.removed.iter().any(|s| s == "vlan hg-12"),
        "{report:?}"
    );
    assert_eq!(report.removed.len(), 4, "{report:?}");

    let vlans: Vec<String> = r
        .objects("/interface/vlan")
        .iter()
        .map(|o| o.props["name"].clone())
        .collect();
    let mut sorted = vlans.clone();
    sorted.sort();
    assert_eq!(sorted, ["guest", "hg-10", "hg-11", "hg-999"]);
    assert_eq!(r.objects("/routing/table").len(), 3); // hg-10, hg-11, to-isp2
    assert!(r
        .objects("/ip/route")
        .iter()
        .any(|o| o.props["routing-table"] == "to-isp2"));
    assert!(!r
        .objects("/ip/address")
        .iter()
        .any(|o| o.props["interface"] == forgotten.host_if));

    // Nothing to do the second time.
    r.clear_log();
    let again = b
        .recover(&[a.clone(), report.recreated[0].clone()])
        .await
        .unwrap();
    assert!(
        again.removed.is_empty() && again.recreated.is_empty(),
        "{again:?}"
    );
    assert!(
        r.log().iter().all(|w| w[0].ends_with("/print")),
        "{:?}",
        r.log()
    );
}

#[tokio::test]
async fn the_same_flow_runs_over_tls() {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("router.pem");
    std::fs::write(&ca, key.cert.pem()).unwrap();

    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cert = rustls::pki_types::CertificateDer::from(key.cert.der().to_vec());
    let pk = rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], pk)
        .unwrap();
    let r = start_router(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))).await;

    let mut c = config(&r);
    c.tls = true;
    c.ca_file = Some(ca.clone());
    c.server_name = Some("localhost".into());
    let b = RouterOsBackend::new(c.clone()).unwrap();
    let rec = b
        .create(&NetSpec::new("tls", 5), &no_progress)
        .await
        .unwrap();
    assert_eq!(r.all().len(), 4);
    b.teardown(&rec).await.unwrap();
    assert!(r.all().is_empty());

    // A certificate that does not match the name is refused before login.
    c.server_name = Some("router.invalid".into());
    let b = RouterOsBackend::new(c).unwrap();
    let err = b
        .create(&NetSpec::new("tls", 5), &no_progress)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "NET_ROUTER_UNREACHABLE", "{err}");
    assert!(
        r.st.lock().unwrap().logins.len() == 2,
        "one login per operation, none for the bad name"
    );
}

#[test]
fn the_backend_is_picked_from_the_config() {
    let text = r#"
backend = "routeros"
address = "192.0.2.1"
username = "hangar"
password = "pw"
parent_interface = "bridge1"
pool = { base = "10.99.0.0", first = 100, last = 199 }
"#;
    let cfg: NetworkConfig = toml_edit::de::from_str(text).unwrap();
    let NetworkConfig::RouterOs(ros) = &cfg else {
        panic!("{cfg:?}")
    };
    assert_eq!(ros.parent_interface, "bridge1");
    assert_eq!(ros.pool.first, 100);
    assert!(
        !format!("{ros:?}").contains("\"pw\""),
        "password must not show in Debug"
    );
    assert_eq!(cfg.build().unwrap().name(), "routeros");

    let linux: NetworkConfig =
        toml_edit::de::from_str("backend = \"linux\"\nprefix = \"hx-\"\n").unwrap();
    let NetworkConfig::Linux(l) = &linux else {
        panic!("{linux:?}")
    };
    assert_eq!(l.prefix, "hx-");
    assert_eq!(l.pool.base.to_string(), "10.99.0.0");
    assert_eq!(linux.build().unwrap().name(), "linux");
    assert_eq!(NetworkConfig::default().build().unwrap().name(), "linux");

    // Out-of-range VLAN ids and TLS without a CA are refused.
    let bad: NetworkConfig = toml_edit::de::from_str(
        "backend = \"routeros\"\naddress = \"r\"\nusername = \"u\"\npool = { last = 5000 }\n",
    )
    .unwrap();
    assert_eq!(
        bad.build().err().map(|e| e.code()),
        Some("NET_CONFIG_INVALID")
    );
    let bad: NetworkConfig = toml_edit::de::from_str(
        "backend = \"routeros\"\naddress = \"r\"\nusername = \"u\"\ntls = true\n",
    )
    .unwrap();
    assert_eq!(
        bad.build().err().map(|e| e.code()),
        Some("NET_CONFIG_INVALID")
    );
    assert!(toml_edit::de::from_str::<NetworkConfig>("backend = \"carrier-pigeon\"\n").is_err());
}
