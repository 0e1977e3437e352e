//! What a child sees right after exec: the spawner's guarantees, checked from inside.

mod common;

use std::time::Duration;

use common::*;
use hangar_supervisor::{Manager, State};

/// The descriptor count is the whole test process's: the tests of this file
/// run one at a time, each on a runtime made and dropped while it holds the
/// lock, so that no other test's runtime or manager is open while one counts.
/// (With `#[tokio::test]` the runtime was made before the lock was taken: a
/// waiting test's runtime showed up as a "leak" in a loaded run.)
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run `test` alone, on a runtime of its own.
fn serial<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    let _alone = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(test());
    // `rt` is dropped here, before the lock.
}

async fn run_and_read(m: &Manager, name: &str, script: &str) -> Vec<String> {
    let mut rx = m.subscribe();
    m.start(never(name, "sh", &["-c", script])).await.unwrap();
    wait_state(&mut rx, name, State::Exited).await;
    // Output is drained by the log thread; give it a moment after the exit.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = m
            .tail(name, 100)
            .unwrap()
            .into_iter()
            .map(|l| l.text)
            .collect();
        if lines.last().is_some_and(|l| l == "END") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lines.last().map(String::as_str), Some("END"), "{lines:?}");
    lines
}

#[test]
fn child_starts_clean() {
    serial(|| async {
        let m = Manager::new().unwrap();
        let lines = run_and_read(
            &m,
            "clean",
            // Signal mask and ignored set, open fds, session and group ids, stdin.
            "grep -E '^Sig(Blk|Ign)' /proc/self/status; \
             ls /proc/self/fd | sort -n | tr '\\n' ' '; echo; \
             cut -d' ' -f1,5,6 /proc/$$/stat; \
             readlink /proc/self/fd/0; echo END",
        )
        .await;
        assert_eq!(lines[0], "SigBlk:\t0000000000000000", "{lines:?}");
        assert_eq!(
            lines[1], "SigIgn:\t0000000000000000",
            "SIGPIPE must not stay ignored: {lines:?}"
        );
        // 0, 1, 2 and the fd `ls` itself opens for /proc/self/fd: nothing of hangar's,
        // nor what the test harness leaked to hangar without close-on-exec.
        assert_eq!(lines[2].trim(), "0 1 2 3", "{lines:?}");
        let ids: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(ids.len(), 3, "{lines:?}");
        assert!(
            ids[0] == ids[1] && ids[1] == ids[2],
            "own session and group: {lines:?}"
        );
        assert_eq!(lines[4], "/dev/null");
        m.shutdown().await;
    });
}

#[test]
fn path_search_uses_the_childs_path() {
    serial(|| async {
        let dir = std::env::temp_dir().join(format!("hangar-path-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tool = dir.join("hangar-test-tool");
        std::fs::write(&tool, "#!/bin/sh\necho found-me\necho END\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();

        let m = Manager::new().unwrap();
        let mut spec = never("tool", "hangar-test-tool", &[]);
        // A non-executable candidate earlier in PATH is skipped, as execvp does.
        let shadow =
            std::env::temp_dir().join(format!("hangar-path-shadow-{}", std::process::id()));
        std::fs::create_dir_all(&shadow).unwrap();
        std::fs::write(shadow.join("hangar-test-tool"), "not executable").unwrap();
        spec.env.insert(
            "PATH".into(),
            format!(
                "/nonexistent:{}:{}:/usr/bin:/bin",
                shadow.display(),
                dir.display()
            ),
        );
        let mut rx = m.subscribe();
        m.start(spec).await.unwrap();
        wait_state(&mut rx, "tool", State::Exited).await;
        assert!(
            eventually(Duration::from_secs(2), || m.tail("tool", 5).unwrap().len()
                == 2)
            .await
        );
        assert_eq!(m.tail("tool", 5).unwrap()[0].text, "found-me");

        // Only the non-executable one in PATH: permission denied, not "not found".
        let mut spec = never("shadowed", "hangar-test-tool", &[]);
        spec.env.insert("PATH".into(), shadow.display().to_string());
        let err = m.start(spec).await.unwrap_err();
        assert!(err.to_string().contains("ermission denied"), "{err}");
        m.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&shadow);
    });
}

#[test]
fn a_missing_working_dir_is_a_clear_start_error() {
    serial(|| async {
        let m = Manager::new().unwrap();
        let mut spec = never("nowhere", "true", &[]);
        spec.working_dir = Some("/nonexistent/hangar-dir".into());
        let err = m.start(spec).await.unwrap_err();
        assert_eq!(err.code(), "PROCESS_START_FAILED");
        assert!(err.to_string().contains("working directory"), "{err}");
        assert!(err.hint().unwrap().contains("does not exist"), "{err}");
        assert_eq!(m.status("nowhere").unwrap().state, State::Failed);
        m.shutdown().await;
    });
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What each open descriptor is, for the failure message.
fn fd_targets() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every spawn opens a pidfd and two pipes; once the children are gone and their
/// output drained, all of them must be closed again.
#[test]
fn no_descriptor_outlives_its_process() {
    serial(|| async {
        let m = Manager::new().unwrap();
        // Warm up: the log thread and spawner threads open what they keep.
        run_and_read(&m, "warm", "echo END").await;
        m.remove("warm", None).await.unwrap();
        let before = open_fds();
        let before_targets = fd_targets();
        let mut spec = never("brief", "sh", &["-c", "echo out; echo err >&2; echo END"]);
        spec.instances = 50;
        let mut rx = m.subscribe();
        assert!(m.start_n(spec).await.iter().all(|(_, r)| r.is_ok()));
        let mut exited = 0;
        while exited < 50 {
            let ev = rx.recv().await.unwrap();
            if let hangar_supervisor::EventKind::State {
                to: State::Exited, ..
            } = ev.kind
            {
                exited += 1;
            }
        }
        assert!(
            eventually(Duration::from_secs(5), || open_fds() <= before).await,
            "descriptors leaked: {} before, {} after: {:?} then {:?}",
            before,
            open_fds(),
            before_targets,
            fd_targets()
        );
        m.shutdown().await;
    });
}
