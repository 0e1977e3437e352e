//! Descendants that leave their process group, under a supervisor that is the
//! child subreaper (as `hangar run` and `hangar serve` are), without cgroups:
//! found by walking the tree and by the markers orphans inherit, reaped when
//! they die, ended with their process. This test binary is a subreaper; its
//! only children are the supervisor's.

mod common;

use std::time::Duration;

use common::*;
use hangar_supervisor::{Manager, ManagerOptions, ProcessSpec};

fn manager() -> Manager {
    Manager::with_options(ManagerOptions {
        subreaper: true,
        // The tree alone, as on a host that gives hangar no cgroups.
        cgroup_every_process: false,
        ..ManagerOptions::default()
    })
    .unwrap()
}

/// Zombie children of this test process.
fn zombies() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        if f.next() == Some("Z") && f.next().and_then(|p| p.parse().ok()) == Some(me) {
            out.push(pid);
        }
    }
    out
}

fn sh(name: &str, script: &str) -> ProcessSpec {
    always_now(name, "sh", &["-c", script])
}

/// Live `sleep ARG` processes (the exact command line, not the shell that
/// names it).
fn sleeps(arg: &str) -> Vec<u32> {
    let want = format!("sleep\0{arg}\0").into_bytes();
    pids_with(arg)
        .into_iter()
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_descendants_go_on_stop_restart_and_exit_and_none_is_a_zombie() {
    let m = manager();
    let mk = marker();
    let (a, b, c, d) = (
        format!("{mk}1"),
        format!("{mk}2"),
        format!("{mk}3"),
        format!("{mk}4"),
    );
    // setsid: another session, still sh's child while sh lives.
    m.start(sh("setsid", &format!("setsid sleep {a} & exec sleep {a}0")))
        .await
        .unwrap();
    // A double fork: the subshell exits at once and its sleep reparents to us.
    m.start(sh(
        "double",
        &format!("(setsid sleep {b} &); exec sleep {b}0"),
    ))
    .await
    .unwrap();
    // A wiped environment in a new session, still sh's child: only the walk
    // down the tree finds it.
    m.start(sh(
        "bare",
        &format!("env -i setsid sleep {c} & exec sleep {c}0"),
    ))
    .await
    .unwrap();
    // The shell exits; what it left behind goes with it, and it restarts.
    m.start(sh(
        "quitter",
        &format!("(setsid sleep {d} &); sleep 0.3; exit 1"),
    ))
    .await
    .unwrap();
    for (mk, what) in [(&a, "setsid"), (&b, "double"), (&c, "bare")] {
        assert!(
            eventually(Duration::from_secs(10), || sleeps(mk).len() == 1).await,
            "{what}: {:?}",
            sleeps(mk)
        );
    }
    // Each exit of the quitter ends its orphan; at most one lives at a time.
    assert!(eventually(Duration::from_secs(10), || sleeps(&d).len() == 1).await);
    assert!(
        !eventually(Duration::from_secs(3), || sleeps(&d).len() > 1).await,
        "a quitter's orphan outlived it: {:?}",
        sleeps(&d)
    );

    // Restart: the old escaped sleep goes, a new one comes.
    let old = sleeps(&a);
    m.restart("setsid").await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let now = sleeps(&a);
            now.len() == 1 && now.iter().all(|p| !old.contains(p))
        })
        .await,
        "after restart: before {old:?}, now {:?}",
        sleeps(&a)
    );

    // Stop: everything of each tree goes, whoever found it.
    for (name, mk) in [
        ("setsid", &a),
        ("double", &b),
        ("bare", &c),
        ("quitter", &d),
    ] {
        m.stop(name, Some(Duration::from_secs(5))).await.unwrap();
        assert!(
            eventually(Duration::from_secs(5), || sleeps(mk).is_empty()).await,
            "{name} left {:?}",
            sleeps(mk)
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || zombies().is_empty()).await,
        "zombies: {:?}",
        zombies()
    );
    m.shutdown().await;
}

/// What nobody can be told apart by (no markers, no session, its parent gone)
/// ends when the supervisor shuts down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_without_markers_ends_at_shutdown() {
    let m = manager();
    let mk = marker();
    m.start(sh(
        "anon",
        &format!("(env -i setsid sleep {mk}9 &); exec sleep {mk}8"),
    ))
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || sleeps(&format!("{mk}9")).len()
            == 1)
        .await
    );
    m.shutdown().await;
    assert!(
        eventually(Duration::from_secs(5), || sleeps(&format!("{mk}9"))
            .is_empty()
            && sleeps(&format!("{mk}8")).is_empty())
        .await,
        "outlived the supervisor: {:?}",
        pids_with(&mk)
    );
    assert!(
        eventually(Duration::from_secs(5), || zombies().is_empty()).await,
        "zombies: {:?}",
        zombies()
    );
}

/// Many processes stopped at once, each with a descendant in another session
/// under it and an orphan that reparented to us: the stops share the
/// subreaper's sweeps, and each still finds and ends its own, before the
/// supervisor shuts down (whose own sweep would hide a miss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_stop_ends_every_escaped_descendant() {
    const N: usize = 24;
    let m = manager();
    let mk = marker();
    // Digits only: each is a `sleep` argument.
    let (lead, under, orphan) = (format!("{mk}1"), format!("{mk}2"), format!("{mk}3"));
    for i in 0..N {
        m.start(sh(
            &format!("p{i}"),
            &format!(
                "(setsid sleep {orphan}{i:02} &); setsid sleep {under}{i:02} & exec sleep {lead}{i:02}"
            ),
        ))
        .await
        .unwrap();
    }
    let all = |p: &str| {
        (0..N)
            .map(|i| sleeps(&format!("{p}{i:02}")).len())
            .sum::<usize>()
    };
    for p in [&lead, &under, &orphan] {
        assert!(
            eventually(Duration::from_secs(20), || all(p) == N).await,
            "{p}: {} of {N} running",
            all(p)
        );
    }
    let stops = (0..N).map(|i| {
        let m = m.clone();
        tokio::spawn(async move { m.stop(&format!("p{i}"), Some(Duration::from_secs(5))).await })
    });
    for s in stops.collect::<Vec<_>>() {
        s.await.unwrap().unwrap();
    }
    for p in [&lead, &under, &orphan] {
        assert!(
            eventually(Duration::from_secs(5), || all(p) == 0).await,
            "{p}: {} of {N} outlived their stop",
            all(p)
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || zombies().is_empty()).await,
        "zombies: {:?}",
        zombies()
    );
    m.shutdown().await;
}
