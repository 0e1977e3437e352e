//! The Linux backend against the real kernel: namespaces, veths, addresses,
//! tables and rules. Needs root; skips with a printed reason otherwise.
//!
//! Every test uses its own prefix, address pool, table range, mark range and
//! rule priority, so tests running in parallel never see each other's objects,
//! and a guard removes everything in its range when the test ends (even on a
//! panic). `ip` is used only to observe and to plant foreign objects.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_net::{
    in_netns, no_progress, LinuxBackend, LinuxConfig, NetAllocator, NetErrorKind, NetPool,
    NetRecord, NetSpec, NetState, NetworkBackend, LINUX_STEPS,
};
use serde_json::Value;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root (network namespaces, links, rules)");
            return;
        }
    };
}

/// A config whose every range is private to test number `t`.
fn cfg(t: u32, last: u32) -> LinuxConfig {
    LinuxConfig {
        prefix: format!("ht{t}-"),
        pool: NetPool::new(Ipv4Addr::new(10, 200 + t as u8, 0, 0), 1, last),
        table_base: 4_300_000 + t * 1000,
        fwmark_base: 0x0050_0000 + t * 0x1000,
        rule_priority: 9100 + t,
        uplink_gateway: None,
    }
}

/// Removes everything hangar-owned in the config's ranges when dropped, by
/// running recovery with no records on a fresh runtime.
struct Sweep(LinuxConfig, Vec<String>);

impl Drop for Sweep {
    fn drop(&mut self) {
        let c = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let b = LinuxBackend::new(c).unwrap();
            let _ = rt.block_on(b.recover(&[]));
        })
        .join();
        for cmd in &self.1 {
            let args: Vec<&str> = cmd.split_whitespace().collect();
            let _ = Command::new("ip").args(&args).output();
        }
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip_json(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let text = ip(&all);
    if text.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str::<Vec<Value>>(&text).unwrap_or_default()
}

fn table_of(v: &Value) -> Option<u32> {
    match v.get("table")? {
        Value::Number(n) => n.as_u64().map(|n| n as u32),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Every object in `c`'s ranges the kernel still has: namespaces, links,
/// addresses, rules and routes.
fn leftovers(c: &LinuxConfig) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&c.prefix) {
                out.push(format!("netns {n}"));
            }
        }
    }
    let base = c.pool.base.octets();
    for l in ip_json(&["addr", "show"]) {
        let name = l["ifname"].as_str().unwrap_or("").to_string();
        if name.starts_with(&c.prefix) {
            out.push(format!("link {name}"));
        }
        for a in l["addr_info"].as_array().cloned().unwrap_or_default() {
            if let Some(Ok(addr)) = a["local"].as_str().map(str::parse::<Ipv4Addr>) {
                if addr.octets()[..2] == base[..2] {
                    out.push(format!("address {addr} on {name}"));
                }
            }
        }
    }
    let tables = c.table_base + c.pool.first..=c.table_base + c.pool.last;
    for r in ip_json(&["rule", "show"]) {
        let prio = r["priority"].as_u64().unwrap_or(0) as u32;
        if prio == c.rule_priority || table_of(&r).is_some_and(|t| tables.contains(&t)) {
            out.push(format!("rule {r}"));
        }
    }
    for r in ip_json(&["route", "show", "table", "all"]) {
        let in_pool = r["dst"]
            .as_str()
            .and_then(|d| d.split('/').next())
            .and_then(|d| d.parse::<Ipv4Addr>().ok())
            .is_some_and(|a| a.octets()[..2] == base[..2]);
        if table_of(&r).is_some_and(|t| tables.contains(&t)) || in_pool {
            out.push(format!("route {r}"));
        }
    }
    out
}

/// A listener inside the record's namespace on the instance address that
/// answers one connection with `reply`.
fn serve_once(rec: &NetRecord, port: u16, reply: String) -> std::thread::JoinHandle<()> {
    let addr = SocketAddr::from((rec.instance_addr, port));
    let listener: TcpListener =
        in_netns(&rec.namespace_path, move || TcpListener::bind(addr)).expect("bind in netns");
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(reply.as_bytes());
        }
    })
}

fn fetch(addr: Ipv4Addr, port: u16) -> String {
    let mut s =
        TcpStream::connect_timeout(&SocketAddr::from((addr, port)), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("connect to {addr}:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_networks_at_once_each_answers_from_the_host() {
    need_root!();
    let c = cfg(1, 60);
    let _sweep = Sweep(c.clone(), vec![]);
    let backend = Arc::new(LinuxBackend::new(c.clone()).unwrap());
    let alloc = NetAllocator::new(c.pool.clone()).unwrap();
    let route_before = ip(&["route", "get", "198.51.100.7"]);
    let fds_before = open_fds();

    let specs: Vec<NetSpec> = (0..50)
        .map(|i| {
            let id = format!("inst-{i}");
            let n = alloc.allocate(&id).unwrap();
            NetSpec::new(id, n)
        })
        .collect();
    let seen = Arc::new(Mutex::new(Vec::<NetRecord>::new()));
    let mut tasks = Vec::new();
    for spec in specs.clone() {
        let b = backend.clone();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let progress = move |r: &NetRecord| seen.lock().unwrap().push(r.clone());
            b.create(&spec, &progress).await
        }));
    }
    let mut recs = Vec::new();
    for t in tasks {
        recs.push(t.await.unwrap().expect("create"));
    }
    // Progress: plan, one per step, and the final ACTIVE, for each of the 50.
    assert_eq!(seen.lock().unwrap().len(), 50 * (LINUX_STEPS.len() + 2));
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.state == NetState::Creating && r.steps_done.is_empty()));

    for r in &recs {
        assert_eq!(r.state, NetState::Active);
        assert_eq!(r.steps_done, LINUX_STEPS.to_vec());
        assert_eq!(r.host_addr, c.pool.host_addr(r.number));
        assert!(r.namespace_path.exists(), "{}", r.namespace_path.display());
        // The stored form round-trips.
        assert_eq!(&NetRecord::from_json(&r.to_json()).unwrap(), r);
    }

    // Each instance address answers from the host, through the veth.
    let servers: Vec<_> = recs
        .iter()
        .map(|r| serve_once(r, 7001, r.instance_id.clone()))
        .collect();
    for r in &recs {
        assert_eq!(fetch(r.instance_addr, 7001), r.instance_id);
    }
    for s in servers {
        s.join().unwrap();
    }

    // Inside: lo up, default route via the host side.
    let r0 = &recs[0];
    let inner = ip_json(&["-n", &r0.namespace, "route", "show", "default"]);
    assert_eq!(
        inner[0]["gateway"].as_str(),
        Some(r0.host_addr.to_string().as_str()),
        "{inner:?}"
    );
    let lo = ip_json(&["-n", &r0.namespace, "link", "show", "lo"]);
    assert!(
        lo[0]["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{lo:?}"
    );

    // The rule matches only the instance's mark: the host's own traffic is
    // routed as before, marked traffic goes to the instance.
    assert_eq!(ip(&["route", "get", "198.51.100.7"]), route_before);
    let mark = r0.fwmark.to_string();
    let marked = ip_json(&["route", "get", "198.51.100.7", "mark", &mark]);
    assert_eq!(
        marked[0]["gateway"].as_str(),
        Some(r0.instance_addr.to_string().as_str()),
        "{marked:?}"
    );
    assert_eq!(marked[0]["dev"].as_str(), Some(r0.host_if.as_str()));
    let rules = ip_json(&["rule", "show", "fwmark", &mark]);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(table_of(&rules[0]), Some(r0.table));

    // Teardown, twice, leaves nothing.
    let mut tasks = Vec::new();
    for r in recs.clone() {
        let b = backend.clone();
        tasks.push(tokio::spawn(async move { b.teardown(&r).await }));
    }
    for t in tasks {
        t.await.unwrap().expect("teardown");
    }
    for r in &recs {
        backend.teardown(r).await.expect("second teardown");
    }
    assert_eq!(leftovers(&c), Vec::<String>::new());

    // No netlink socket is left open per network (one would also keep its
    // namespace alive): only the backend's own few descriptors remain.
    let mut fds = open_fds();
    for _ in 0..100 {
        if fds <= fds_before + 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds = open_fds();
    }
    assert!(
        fds <= fds_before + 8,
        "{fds_before} descriptors before, {fds} after"
    );
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_leaves_nothing_behind() {
    need_root!();
    let c = cfg(2, 20);
    let _sweep = Sweep(c.clone(), vec![]);
    for (k, failing) in LINUX_STEPS.into_iter().enumerate() {
        let backend = LinuxBackend::new(c.clone()).unwrap().fail_after_step(k);
        let last = Mutex::new(None::<NetRecord>);
        let progress = |r: &NetRecord| *last.lock().unwrap() = Some(r.clone());
        let spec = NetSpec::new(format!("fail-{k}"), 3);
        let err = backend.create(&spec, &progress).await.unwrap_err();
        assert_eq!(err.kind, NetErrorKind::InjectedFault, "{err}");
        let rec = last.lock().unwrap().clone().unwrap();
        assert_eq!(
            rec.state,
            NetState::Error {
                step: failing.to_string(),
                cause: format!("[NET_INJECTED_FAULT] {}", err.message)
            }
        );
        assert!(
            rec.steps_done.is_empty(),
            "rolled back: {:?}",
            rec.steps_done
        );
        assert_eq!(
            leftovers(&c),
            Vec::<String>::new(),
            "after a fault after {k} steps"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_kernel_refusal_rolls_back_too() {
    need_root!();
    let c = cfg(3, 20);
    let n = 4;
    let table = (c.table_base + n).to_string();
    let _sweep = Sweep(
        c.clone(),
        vec![format!("route del blackhole default table {table}")],
    );
    // Something already sits in the instance's table: the table route step
    // gets EEXIST from the kernel.
    ip(&["route", "add", "blackhole", "default", "table", &table]);
    let backend = LinuxBackend::new(c.clone()).unwrap();
    let last = Mutex::new(None::<NetRecord>);
    let progress = |r: &NetRecord| *last.lock().unwrap() = Some(r.clone());
    let err = backend
        .create(&NetSpec::new("clash", n), &progress)
        .await
        .unwrap_err();
    assert_eq!(err.kind, NetErrorKind::AlreadyExists, "{err}");
    assert_eq!(err.errno, Some(17));
    let rec = last.lock().unwrap().clone().unwrap();
    assert!(
        matches!(&rec.state, NetState::Error { step, .. } if step == "table_route"),
        "{:?}",
        rec.state
    );
    assert!(rec.steps_done.is_empty());
    // Only the planted route is left.
    let left = leftovers(&c);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contains("blackhole"), "{left:?}");
    ip(&["route", "del", "blackhole", "default", "table", &table]);
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_is_idempotent_and_works_on_a_bare_plan() {
    need_root!();
    let c = cfg(4, 20);
    let _sweep = Sweep(c.clone(), vec![]);
    let backend = LinuxBackend::new(c.clone()).unwrap();
    // Never created: nothing to remove, and no error.
    let plan = backend.plan(&NetSpec::new("ghost", 5)).unwrap();
    backend.teardown(&plan).await.unwrap();
    let rec = backend
        .create(&NetSpec::new("twice", 6), &no_progress)
        .await
        .unwrap();
    assert!(!leftovers(&c).is_empty());
    backend.teardown(&rec).await.unwrap();
    backend.teardown(&rec).await.unwrap();
    assert_eq!(leftovers(&c), Vec::<String>::new());
    // Same number again right away works.
    let again = backend
        .create(&NetSpec::new("twice", 6), &no_progress)
        .await
        .unwrap();
    backend.teardown(&again).await.unwrap();
    // A number outside the range is refused before anything is made.
    let err = backend.plan(&NetSpec::new("far", 21)).unwrap_err();
    assert_eq!(err.code(), "NET_NUMBER_UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_removes_leftovers_recreates_broken_and_leaves_foreign_alone() {
    need_root!();
    let c = cfg(5, 20);
    // A foreign interface (a bridge: this kernel has no `dummy` module).
    let dummy = "htfor5br";
    let foreign_ns = "htfor5-ns";
    let _sweep = Sweep(
        c.clone(),
        vec![
            format!("link del {dummy}"),
            format!("netns del {foreign_ns}"),
            format!(
                "rule del priority {} fwmark 0x77 table 77",
                c.rule_priority + 1
            ),
        ],
    );
    let backend = LinuxBackend::new(c.clone()).unwrap();
    let a = backend
        .create(&NetSpec::new("a", 1), &no_progress)
        .await
        .unwrap();
    let b = backend
        .create(&NetSpec::new("b", 2), &no_progress)
        .await
        .unwrap();
    let forgotten = backend
        .create(&NetSpec::new("forgotten", 3), &no_progress)
        .await
        .unwrap();
    let mut interrupted = backend
        .create(&NetSpec::new("interrupted", 4), &no_progress)
        .await
        .unwrap();
    interrupted.state = NetState::Creating;
    interrupted.steps_done.truncate(3);

    // Planted hangar-owned leftovers without a record: a bare namespace, a rule.
    let lone_ns = format!("{}7", c.prefix);
    ip(&["netns", "add", &lone_ns]);
    let t8 = (c.table_base + 8).to_string();
    let p = c.rule_priority.to_string();
    ip(&[
        "rule", "add", "priority", &p, "fwmark", "0x99", "table", &t8,
    ]);
    // Foreign objects: an interface, a namespace and a rule hangar did not make.
    ip(&["link", "add", dummy, "type", "bridge"]);
    ip(&["netns", "add", foreign_ns]);
    let p1 = (c.rule_priority + 1).to_string();
    ip(&[
        "rule", "add", "priority", &p1, "fwmark", "0x77", "table", "77",
    ]);
    // Break a: its veth is gone.
    ip(&["link", "del", &a.host_if]);
    let b_index = ip_json(&["link", "show", &b.host_if])[0]["ifindex"].clone();

    let known = vec![a.clone(), b.clone(), interrupted.clone()];
    let report = backend.recover(&known).await.unwrap();
    assert_eq!(report.failed, Vec::<(String, String)>::new());
    assert_eq!(report.recreated.len(), 1, "{report:?}");
    assert_eq!(report.recreated[0].instance_id, "a");
    assert_eq!(report.recreated[0].state, NetState::Active);
    assert_eq!(report.rolled_back.len(), 1);
    assert_eq!(report.rolled_back[0].instance_id, "interrupted");
    assert!(matches!(
        report.rolled_back[0].state,
        NetState::Error { .. }
    ));
    let removed = report.removed.join(", ");
    for what in [
        format!("netns {}", forgotten.namespace),
        format!("link {}", forgotten.host_if),
        format!("netns {lone_ns}"),
        format!("rule fwmark 0x99 lookup {t8}"),
    ] {
        assert!(removed.contains(&what), "{what} not in {removed}");
    }

    // a works again, b was not touched, the rest is gone.
    let srv = serve_once(&report.recreated[0], 7002, "a-again".into());
    assert_eq!(fetch(a.instance_addr, 7002), "a-again");
    srv.join().unwrap();
    assert_eq!(
        ip_json(&["link", "show", &b.host_if])[0]["ifindex"],
        b_index
    );
    assert!(!forgotten.namespace_path.exists());
    assert!(!interrupted.namespace_path.exists());
    assert!(ip_json(&["link", "show"])
        .iter()
        .all(|l| l["ifname"] != forgotten.host_if.as_str()));
    // Foreign objects untouched.
    assert_eq!(ip_json(&["link", "show", dummy]).len(), 1);
    assert!(std::path::Path::new("/run/netns").join(foreign_ns).exists());
    assert_eq!(ip_json(&["rule", "show", "priority", &p1]).len(), 1);

    // A second recovery with the same records has nothing to do.
    let known = vec![report.recreated[0].clone(), b.clone()];
    let again = backend.recover(&known).await.unwrap();
    assert!(
        again.removed.is_empty() && again.recreated.is_empty(),
        "{again:?}"
    );

    for r in &known {
        backend.teardown(r).await.unwrap();
    }
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uplink_gateway_becomes_the_tables_default_route() {
    need_root!();
    let mut c = cfg(6, 20);
    let up = "htup6";
    let _sweep = Sweep(c.clone(), vec![format!("link del {up}")]);
    // The uplink: a veth pair (carrier up once both ends are up).
    ip(&["link", "add", up, "type", "veth", "peer", "name", "htup6p"]);
    ip(&["addr", "add", "192.168.255.1/30", "dev", up]);
    ip(&["link", "set", up, "up"]);
    ip(&["link", "set", "htup6p", "up"]);
    c.uplink_gateway = Some(Ipv4Addr::new(192, 168, 255, 2));
    let backend = LinuxBackend::new(c.clone()).unwrap();
    let rec = backend
        .create(&NetSpec::new("up", 9), &no_progress)
        .await
        .unwrap();
    let routes = ip_json(&["route", "show", "table", &rec.table.to_string()]);
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["gateway"].as_str(), Some("192.168.255.2"));
    assert_eq!(routes[0]["dev"].as_str(), Some(up));
    backend.teardown(&rec).await.unwrap();
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_started_inside_the_namespace_binds_the_instance_address() {
    need_root!();
    let c = cfg(8, 20);
    let _sweep = Sweep(c.clone(), vec![]);
    let backend = LinuxBackend::new(c.clone()).unwrap();
    let rec = backend
        .create(&NetSpec::new("proc", 11), &no_progress)
        .await
        .unwrap();

    // What the supervisor does: open the namespace in the parent, setns in
    // the child before exec.
    let fd = hangar_net::open_netns(&rec.namespace_path).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let mut cmd = Command::new("ip");
    cmd.args(["-j", "addr", "show"]);
    // SAFETY: the closure only calls `enter_netns` (one setns syscall, no
    // allocation, no lock), which is async-signal-safe; `fd` outlives the
    // spawn because it is dropped after `output()` returns.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            hangar_net::enter_netns(std::os::fd::BorrowedFd::borrow_raw(raw))
        });
    }
    let out = cmd.output().unwrap();
    drop(fd);
    assert!(out.status.success());
    let links: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = links.iter().filter_map(|l| l["ifname"].as_str()).collect();
    assert_eq!(
        names,
        ["lo", rec.instance_if.as_str()],
        "the child sees only the namespace's links"
    );
    let addr = links[1]["addr_info"][0]["local"].as_str().unwrap();
    assert_eq!(addr, rec.instance_addr.to_string());

    // A server process inside binds the instance address; the host reaches it.
    if std::path::Path::new("/usr/bin/python3").exists() {
        let fd = hangar_net::open_netns(&rec.namespace_path).unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let script = format!(
            "import socket; s=socket.socket(); s.bind(('{}', 7003)); s.listen(1); print('ready', flush=True); \
             c,_=s.accept(); c.sendall(b'from-the-instance'); c.close()",
            rec.instance_addr
        );
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.args(["-c", &script])
            .stdout(std::process::Stdio::piped());
        // SAFETY: as above.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                hangar_net::enter_netns(std::os::fd::BorrowedFd::borrow_raw(raw))
            });
        }
        let mut child = cmd.spawn().unwrap();
        drop(fd);
        let mut ready = [0u8; 6];
        child.stdout.take().unwrap().read_exact(&mut ready).unwrap();
        assert_eq!(&ready, b"ready\n");
        assert_eq!(fetch(rec.instance_addr, 7003), "from-the-instance");
        assert!(child.wait().unwrap().success());
    } else {
        eprintln!("skipped the server part: /usr/bin/python3 is missing");
    }
    backend.teardown(&rec).await.unwrap();
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_create_is_undone_from_the_stored_record() {
    need_root!();
    let c = cfg(9, 20);
    let _sweep = Sweep(c.clone(), vec![]);
    for (use_recover, n) in [(false, 12), (true, 13)] {
        let backend = Arc::new(LinuxBackend::new(c.clone()).unwrap());
        // The "store": the last record the progress callback saw. The
        // callback dies after the fifth step is stored, like a daemon killed
        // mid-create: no rollback runs.
        let stored = Arc::new(Mutex::new(None::<NetRecord>));
        let (b, st) = (backend.clone(), stored.clone());
        let task = tokio::spawn(async move {
            let progress = move |r: &NetRecord| {
                *st.lock().unwrap() = Some(r.clone());
                if r.steps_done.len() == 5 {
                    panic!("daemon killed");
                }
            };
            b.create(&NetSpec::new("crashed", n), &progress).await
        });
        assert!(task.await.unwrap_err().is_panic());
        let rec = stored.lock().unwrap().clone().unwrap();
        assert_eq!(rec.state, NetState::Creating);
        assert_eq!(rec.steps_done.len(), 5);
        assert!(!leftovers(&c).is_empty(), "the crash left objects behind");
        // The next start: a fresh backend, the stored record.
        let next = LinuxBackend::new(c.clone()).unwrap();
        if use_recover {
            let report = next.recover(std::slice::from_ref(&rec)).await.unwrap();
            assert_eq!(report.rolled_back.len(), 1, "{report:?}");
        } else {
            next.teardown(&rec).await.unwrap();
        }
        assert_eq!(leftovers(&c), Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_used_from_inside_a_namespace_still_works_on_the_host() {
    need_root!();
    let c = cfg(10, 20);
    let _sweep = Sweep(c.clone(), vec![]);
    let outer = LinuxBackend::new(c.clone()).unwrap();
    let other = outer
        .create(&NetSpec::new("other", 1), &no_progress)
        .await
        .unwrap();
    // A fresh backend first used on a thread that sits in `other`'s
    // namespace: its netlink threads must still work on the host.
    let b = Arc::new(LinuxBackend::new(c.clone()).unwrap());
    let b1 = b.clone();
    let rec = in_netns(&other.namespace_path, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(b1.create(&NetSpec::new("inner", 2), &no_progress))
            .map_err(std::io::Error::other)
    })
    .unwrap();
    assert_eq!(
        ip_json(&["link", "show", &rec.host_if]).len(),
        1,
        "host side is on the host"
    );
    let b2 = b.clone();
    in_netns(&other.namespace_path, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(b2.teardown(&rec))
            .map_err(std::io::Error::other)
    })
    .unwrap();
    outer.teardown(&other).await.unwrap();
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

#[test]
fn configs_that_cannot_work_are_refused() {
    let mut c = cfg(7, 20);
    c.prefix = "much-too-long-".into();
    assert_eq!(
        LinuxBackend::new(c).unwrap_err().code(),
        "NET_CONFIG_INVALID"
    );
    let mut c = cfg(7, 20);
    c.rule_priority = 32766;
    assert_eq!(
        LinuxBackend::new(c).unwrap_err().code(),
        "NET_CONFIG_INVALID"
    );
    let mut c = cfg(7, 20);
    c.table_base = 0;
    assert_eq!(
        LinuxBackend::new(c).unwrap_err().code(),
        "NET_CONFIG_INVALID"
    );
    let mut c = cfg(7, 20);
    c.pool.base = Ipv4Addr::new(10, 99, 0, 1);
    assert_eq!(
        LinuxBackend::new(c).unwrap_err().code(),
        "NET_CONFIG_INVALID"
    );
}
