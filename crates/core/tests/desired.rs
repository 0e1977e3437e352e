//! The desired set's readers never wait for a writer: a listing answers while
//! a change is stopping a process that ignores SIGTERM.

use std::time::{Duration, Instant};

use hangar_core::{BootOptions, Daemon};
use hangar_supervisor::State;

const GRACE: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_answers_while_apply_waits_out_a_stop_grace() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = Daemon::boot(BootOptions {
        data_dir: tmp.path().join("data"),
        ..BootOptions::default()
    })
    .await
    .expect("boot");
    // The shell says when its SIGTERM is ignored: "running" only means it was
    // spawned, and a TERM before the trap would end it at once.
    let trapped = tmp.path().join("trapped");
    let toml = format!(
        "[[process]]\nname = \"stubborn\"\ncommand = \"sh\"\n\
         args = [\"-c\", \"trap '' TERM; : > {}; sleep 3600\"]\nstop_timeout = \"{}s\"\n\n\
         [[process]]\nname = \"other\"\ncommand = \"sleep\"\nargs = [\"3600\"]\n",
        trapped.display(),
        GRACE.as_secs()
    );
    d.add(&toml, true).await.expect("add");
    let t0 = Instant::now();
    while d
        .manager()
        .status("stubborn")
        .map_or(true, |s| s.state != State::Running)
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while !trapped.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "never ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Removing it is a change of the desired set whose stop waits out the grace.
    let remover = {
        let d = d.clone();
        tokio::spawn(async move { d.remove("stubborn").await })
    };
    let stop_began = Instant::now();
    while d
        .manager()
        .status("stubborn")
        .is_ok_and(|s| s.state != State::Stopping)
    {
        assert!(stop_began.elapsed() < GRACE / 2, "the stop never began");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let t = Instant::now();
    let list = d.list("*").await.expect("list");
    let took = t.elapsed();
    assert!(
        !remover.is_finished(),
        "the change ended before the listing: nothing was measured"
    );
    assert!(
        took < GRACE / 10,
        "list took {took:?} while a stop with a {GRACE:?} grace was under way"
    );
    // The change published its new set before it began stopping.
    let names: Vec<&str> = list.iter().map(|p| p.want.spec.name.as_str()).collect();
    assert_eq!(names, ["other"]);
    let t = Instant::now();
    d.get("other").await.expect("get");
    d.info().await;
    assert!(t.elapsed() < GRACE / 10, "get/info waited for the change");

    remover.await.expect("join").expect("remove");
    assert!(
        stop_began.elapsed() >= GRACE / 2,
        "the process did not ignore SIGTERM: the test measured nothing"
    );
    d.shutdown().await;
}

/// An instance's process stays the instance's after the daemon restarts: it is
/// listed with its source, and `remove` refuses it (it would pull the process
/// out from under its instance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_process_keeps_its_source_across_a_restart() {
    use hangar_core::{CreateRequest, InstanceState};
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: the demo feature needs python3");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = || BootOptions {
        data_dir: tmp.path().join("data"),
        ..BootOptions::default()
    };
    let d = Daemon::boot(opts()).await.expect("boot");
    d.create_instance(CreateRequest {
        feature: "demo".into(),
        name: Some("kept".into()),
        mode: None,
        options: Default::default(),
        tenant: None,
        session: None,
        fleet: false,
    })
    .await
    .expect("create");
    let t0 = Instant::now();
    let process = loop {
        let i = d.instance("kept").expect("instance");
        if i.state == InstanceState::Running {
            break i.process;
        }
        assert!(
            i.state != InstanceState::Error && t0.elapsed() < Duration::from_secs(60),
            "never ran: {i:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    d.shutdown().await;
    drop(d);

    let d = Daemon::boot(opts()).await.expect("boot again");
    let view = d.get(&process).await.expect("listed after the restart");
    assert_eq!(view.want.source, hangar_store::Source::Instance);
    let e = d.remove(&process).await.expect_err("remove must refuse it");
    assert!(e.is(hangar_core::ErrorKind::ProcessOfInstance), "{e:?}");
    d.delete_instance("kept").await.expect("delete");
    d.shutdown().await;
}
