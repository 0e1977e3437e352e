//! The manager's bulk and concurrent operations against real processes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hangar_supervisor::{LogSpec, Manager, ProcessSpec, State, Stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_n_and_glob_operations() {
    let m = Manager::new().unwrap();
    let mk = marker();
    let mut web = never("web", "sleep", &[&mk]);
    web.instances = 5;
    let mut db = never("db", "sleep", &[&mk]);
    db.instances = 3;
    let started = m.start_n(web).await;
    assert_eq!(started.len(), 5);
    assert_eq!(started[0].0, "web-1");
    assert!(started.iter().all(|(_, r)| r.is_ok()));
    assert!(m.start_n(db).await.iter().all(|(_, r)| r.is_ok()));
    assert_eq!(pids_with(&mk).len(), 8);

    assert_eq!(m.count("*").unwrap(), 8);
    assert_eq!(m.count("web-*").unwrap(), 5);
    assert_eq!(m.count("db-[12]").unwrap(), 2);
    assert_eq!(m.count("db-3").unwrap(), 1);
    let names: Vec<_> = m
        .status_all("db-*")
        .unwrap()
        .into_iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(names, ["db-1", "db-2", "db-3"]);

    let stopped = m
        .stop_all("web-*", Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(stopped.len(), 5);
    assert_eq!(m.count("web-*").unwrap(), 0);
    assert_eq!(m.count("*").unwrap(), 3);
    assert!(m
        .status_all("web-*")
        .unwrap()
        .iter()
        .all(|s| s.state == State::Stopped && s.pid.is_none()));
    assert_eq!(pids_with(&mk).len(), 3);
    assert_eq!(m.status_all("[").unwrap_err().code(), "INVALID_PATTERN");

    // Each instance knows its number.
    let mut echo = never("n", "sh", &["-c", "echo $HANGAR_INSTANCE"]);
    echo.instances = 2;
    m.start_n(echo).await;
    assert!(
        eventually(Duration::from_secs(2), || m.tail("n-2", 1).unwrap().len()
            == 1)
        .await
    );
    assert_eq!(m.tail("n-2", 1).unwrap()[0].text, "2");

    m.shutdown().await;
    let left = pids_with(&mk);
    assert!(
        left.is_empty(),
        "{left:?} {:?}",
        left.iter()
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        m.start(never("late", "true", &[]))
            .await
            .unwrap_err()
            .code(),
        "SHUTTING_DOWN"
    );
}

/// 100 tasks start, stop, restart, remove and query the same few names at once.
/// Nothing may deadlock or panic, and afterwards no process may be left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_tasks_hammering_the_same_names() {
    let m = Manager::new().unwrap();
    let mk = Arc::new(marker());
    let mut tasks = Vec::new();
    for t in 0..100u32 {
        let m = m.clone();
        let mk = Arc::clone(&mk);
        tasks.push(tokio::spawn(async move {
            let mut rng = t.wrapping_mul(2654435761);
            for _ in 0..20 {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                let name = format!("shared-{}", rng % 4);
                match rng % 7 {
                    0 | 1 => {
                        let _ = m.start(always_now(&name, "sleep", &[&mk])).await;
                    }
                    2 => {
                        let _ = m.stop(&name, Some(Duration::from_secs(2))).await;
                    }
                    3 => {
                        let _ = m.restart(&name).await;
                    }
                    4 => {
                        let _ = m.remove(&name, Some(Duration::from_secs(2))).await;
                    }
                    5 => {
                        let _ = m.stop_all("shared-*", Some(Duration::from_secs(2))).await;
                    }
                    _ => {
                        let _ = m.status_all("shared-*");
                        let _ = m.count("*");
                    }
                }
            }
        }));
    }
    let all = async {
        for t in tasks {
            t.await.expect("task panicked");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("deadlock: tasks did not finish");
    // At most one process per name.
    for s in m.status_all("*").unwrap() {
        assert!(s.state != State::Stopping, "{s:?}");
    }
    assert!(pids_with(&mk).len() <= 4, "{:?}", pids_with(&mk));
    m.shutdown().await;
    assert!(
        eventually(Duration::from_secs(2), || pids_with(&mk).is_empty()).await,
        "leaked: {:?}",
        pids_with(&mk)
    );
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("hangar-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_go_to_files_and_a_fast_writer_never_blocks() {
    let dir = temp_dir("logs");
    let m = Manager::new().unwrap();
    let mut rx = m.subscribe();
    let mut spec = never(
        "chatty",
        "sh",
        // 20 MB to stdout as fast as it can, a line to stderr, then exit.
        &[
            "-c",
            "head -c 20000000 /dev/zero | tr '\\0' 'x' | fold -w 99; echo done >&2",
        ],
    );
    spec.log = LogSpec {
        dir: Some(dir.clone()),
        max_size: 4 * 1024 * 1024,
        keep: 2,
        compress: true,
        ..LogSpec::default()
    };
    let t = std::time::Instant::now();
    m.start(spec).await.unwrap();
    wait_state(&mut rx, "chatty", State::Exited).await;
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(m.status("chatty").unwrap().last_exit.unwrap().code, Some(0));
    let (out, err) = m.log_paths("chatty").unwrap();
    let (out, err) = (out.unwrap(), err.unwrap());
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_to_string(&err)
            .is_ok_and(|s| s == "done\n"))
        .await
    );
    assert!(std::fs::metadata(&out).unwrap().len() <= 4 * 1024 * 1024);
    // Rotated and compressed, at most `keep` kept.
    let gz = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".gz"))
            .count()
    };
    assert!(
        eventually(Duration::from_secs(10), || gz() == 2).await,
        "gz files: {}",
        gz()
    );
    let tail = m.tail("chatty", 2).unwrap();
    assert_eq!(tail.last().unwrap().stream, Stream::Stderr);
    assert_eq!(tail.last().unwrap().text, "done");
    m.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_drops_output_but_keeps_the_process_running() {
    let dir = temp_dir("full");
    // /dev/full fails every write with ENOSPC, like a full disk.
    std::os::unix::fs::symlink("/dev/full", dir.join("full.stdout.log")).unwrap();
    let m = Manager::new().unwrap();
    let mut spec = always_now("full", "sh", &["-c", "while :; do echo line; done"]);
    spec.log.dir = Some(dir.clone());
    m.start(spec).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || m
            .status("full")
            .unwrap()
            .log_dropped_bytes
            > 100_000)
        .await
    );
    let st = m.status("full").unwrap();
    assert_eq!(st.state, State::Running);
    assert!(st.log_error.unwrap().contains("No space left"));
    // Output still reaches the tail.
    assert_eq!(m.tail("full", 1).unwrap()[0].text, "line");
    m.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_validation_lists_every_problem() {
    let mut spec = ProcessSpec::new("bad/name", " ");
    spec.restart.jitter = -1.0;
    let problems = spec.problems();
    assert_eq!(problems.len(), 3, "{problems:?}");
    let m = Manager::new().unwrap();
    let err = m.start(spec).await.unwrap_err();
    assert_eq!(err.code(), "INVALID_SPEC");
    assert!(err.message().contains("restart.jitter"));
    assert!(
        m.names().is_empty(),
        "an invalid spec must not be registered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_many_stops_dependents_first_and_forgets_them() {
    use hangar_supervisor::{Condition, EventKind};
    let m = Manager::new().unwrap();
    let mk = marker();
    let db = never("rm-db", "sleep", &[&mk]);
    let mut app = never("rm-app", "sleep", &[&mk]);
    app.depends_on.insert("rm-db".into(), Condition::Started);
    m.start(db).await.unwrap();
    m.start(app).await.unwrap();
    let mut events = m.subscribe();
    let names: std::collections::BTreeSet<String> = ["rm-db".to_string(), "rm-app".to_string()]
        .into_iter()
        .collect();
    m.remove_many(&names).await;
    assert!(m.names().is_empty(), "{:?}", m.names());
    assert!(eventually(Duration::from_secs(2), || pids_with(&mk).is_empty()).await);
    // The dependent stopped before its dependency was even asked to stop.
    let mut order = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let EventKind::State {
            to: State::Stopping,
            ..
        } = ev.kind
        {
            order.push(ev.name.to_string());
        }
    }
    assert_eq!(order, ["rm-app", "rm-db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_learns_that_its_process_was_removed() {
    let m = Manager::new().unwrap();
    let mk = marker();
    m.start(never("quiet", "sleep", &[&mk])).await.unwrap();
    let follower = {
        let m = m.clone();
        tokio::spawn(async move { m.wait_output("quiet", 0).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    m.remove("quiet", None).await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("the follower must wake up")
        .unwrap();
    assert_eq!(res.unwrap_err().code(), "PROCESS_NOT_FOUND");
}
