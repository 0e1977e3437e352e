//! Benchmark of the Linux backend: create + teardown of one instance network
//! (median, p95 over N runs), N networks in parallel, and the same kernel work
//! done by the `ip` command as the baseline. Needs root.
//!
//! ```text
//! cargo run --release -p hangar-net --example net_bench -- [RUNS=50] [PARALLEL=100]
//! ```
//!
//! Uses prefix `hb-`, addresses 10.250.{n}.0/24, tables 4_400_000+n, marks
//! 0x600000+n and rule priority 9500, and removes all of them at the end.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_net::{no_progress, LinuxBackend, LinuxConfig, NetPool, NetSpec, NetworkBackend};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ip(args: &[String]) {
    let st = Command::new("ip").args(args).status();
    if !st.map(|s| s.success()).unwrap_or(false) {
        eprintln!("ip {} failed", args.join(" "));
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn summary(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let med = pct(&v, 0.5);
    println!(
        "{name:<44} median {:>7.2} ms   p95 {:>7.2} ms   min {:>7.2} ms   (n={})",
        ms(med),
        ms(pct(&v, 0.95)),
        ms(v[0]),
        v.len()
    );
    med
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("net_bench needs root (network namespaces); skipped");
        return;
    }
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let par: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let cfg = LinuxConfig {
        prefix: "hb-".into(),
        pool: NetPool::new(Ipv4Addr::new(10, 250, 0, 0), 1, par.max(2)),
        table_base: 4_400_000,
        fwmark_base: 0x0060_0000,
        rule_priority: 9500,
        uplink_gateway: None,
    };
    let backend = Arc::new(LinuxBackend::new(cfg.clone()).expect("config"));
    let _ = backend.recover(&[]).await;

    // Warm up (netlink thread, /run/netns mount).
    let r = backend
        .create(&NetSpec::new("warm", 1), &no_progress)
        .await
        .expect("create");
    backend.teardown(&r).await.expect("teardown");

    let mut one = Vec::new();
    let mut create_only = Vec::new();
    let mut teardown_only = Vec::new();
    for i in 0..runs {
        let n = 1 + (i as u32 % 2);
        let t = Instant::now();
        let r = backend
            .create(&NetSpec::new("one", n), &no_progress)
            .await
            .expect("create");
        create_only.push(t.elapsed());
        let t2 = Instant::now();
        backend.teardown(&r).await.expect("teardown");
        teardown_only.push(t2.elapsed());
        one.push(t.elapsed());
    }
    println!("hangar_net Linux backend ({runs} runs, all 8 steps: netns, veth, 2 addresses, links up, 2 default routes, rule)");
    let med = summary("create + teardown of one network", one);
    summary("  of which create", create_only);
    summary("  of which teardown", teardown_only);

    let t = Instant::now();
    let mut tasks = Vec::new();
    for n in 1..=par {
        let b = backend.clone();
        tasks.push(tokio::spawn(async move {
            b.create(&NetSpec::new(format!("p{n}"), n), &no_progress)
                .await
        }));
    }
    let mut recs = Vec::new();
    for t in tasks {
        recs.push(t.await.expect("join").expect("create"));
    }
    let created = t.elapsed();
    let t2 = Instant::now();
    let mut tasks = Vec::new();
    for r in recs {
        let b = backend.clone();
        tasks.push(tokio::spawn(async move { b.teardown(&r).await }));
    }
    for t in tasks {
        t.await.expect("join").expect("teardown");
    }
    let torn = t2.elapsed();
    println!(
        "{par} networks in parallel: create {:.0} ms, teardown {:.0} ms, total {:.0} ms ({:.2} ms per network)",
        ms(created),
        ms(torn),
        ms(created + torn),
        ms(created + torn) / f64::from(par)
    );

    // Baseline 1: what `ip` needs for a namespace and a veth into it.
    let mut base_min = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        ip(&s(&["netns", "add", "hb-ipb"]));
        ip(&s(&[
            "link", "add", "hb-ipb-h", "type", "veth", "peer", "name", "hb-ipb-i", "netns",
            "hb-ipb",
        ]));
        ip(&s(&["link", "del", "hb-ipb-h"]));
        ip(&s(&["netns", "del", "hb-ipb"]));
        base_min.push(t.elapsed());
    }
    println!("\n`ip` command baseline ({runs} runs)");
    let med_min = summary("ip netns add + veth add + link del + netns del", base_min);

    // The kernel's floor: deleting one veth (an RCU barrier inside the kernel).
    let mut del_only = Vec::new();
    let mut true_spawn = Vec::new();
    for _ in 0..runs {
        ip(&s(&[
            "link", "add", "hb-ipd-h", "type", "veth", "peer", "name", "hb-ipd-i",
        ]));
        let t = Instant::now();
        ip(&s(&["link", "del", "hb-ipd-h"]));
        del_only.push(t.elapsed());
        let t = Instant::now();
        let _ = Command::new("ip").arg("-V").output();
        true_spawn.push(t.elapsed());
    }
    summary("ip link del of one veth (kernel floor)", del_only);
    summary("  `ip -V` (process start cost, for scale)", true_spawn);

    // Baseline 2: the same 8 steps and teardown, one `ip` process each.
    let mut base_full = Vec::new();
    let (t, m, p) = ("4400099", "0x600063", "9500");
    for _ in 0..runs {
        let t0 = Instant::now();
        for cmd in [
            s(&["netns", "add", "hb-ipf"]),
            s(&[
                "link", "add", "hb-ipf-h", "type", "veth", "peer", "name", "hb-ipf-i", "netns",
                "hb-ipf",
            ]),
            s(&["addr", "add", "10.250.250.1/24", "dev", "hb-ipf-h"]),
            s(&["link", "set", "hb-ipf-h", "up"]),
            s(&[
                "-n",
                "hb-ipf",
                "addr",
                "add",
                "10.250.250.2/24",
                "dev",
                "hb-ipf-i",
            ]),
            s(&["-n", "hb-ipf", "link", "set", "lo", "up"]),
            s(&["-n", "hb-ipf", "link", "set", "hb-ipf-i", "up"]),
            s(&[
                "-n",
                "hb-ipf",
                "route",
                "add",
                "default",
                "via",
                "10.250.250.1",
            ]),
            s(&[
                "route",
                "add",
                "default",
                "via",
                "10.250.250.2",
                "dev",
                "hb-ipf-h",
                "table",
                t,
            ]),
            s(&["rule", "add", "priority", p, "fwmark", m, "table", t]),
            s(&["rule", "del", "priority", p, "fwmark", m, "table", t]),
            s(&["route", "del", "default", "table", t]),
            s(&["link", "del", "hb-ipf-h"]),
            s(&["netns", "del", "hb-ipf"]),
        ] {
            ip(&cmd);
        }
        base_full.push(t0.elapsed());
    }
    let med_full = summary("the same 8 steps + teardown by `ip` (14 runs)", base_full);
    println!(
        "\nratio hangar / ip (namespace + veth only): {:.2}\nratio hangar / ip (same work):             {:.2}\ntarget: median create + teardown <= 20 ms: {}",
        ms(med) / ms(med_min),
        ms(med) / ms(med_full),
        if ms(med) <= 20.0 { "met" } else { "NOT met" }
    );
    let _ = backend.recover(&[]).await;
}
