//! The store against real SQLite files in temporary directories.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hangar_store::{
    Desired, ErrorKind, EventQuery, EventRecord, Observation, ProcessRecord, Source, Store,
};
use serde_json::json;
use tempfile::TempDir;

fn db(dir: &TempDir) -> PathBuf {
    dir.path().join("hangar.db")
}

fn raw(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    c
}

fn user_version(path: &Path) -> i64 {
    raw(path)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

fn spec(cmd: &str) -> String {
    json!({ "command": cmd, "args": ["-v"] }).to_string()
}

fn ev(name: &str, at_ms: i64, kind: &str, from: &str, to: &str) -> EventRecord {
    EventRecord {
        id: 0,
        at_ms,
        name: name.to_string(),
        pid: Some(100),
        kind: kind.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        detail: json!({ "restarts": 1, "exit": { "code": 3 } }),
    }
}

fn obs(name: &str, state: &str, pid: u32, at_ms: i64) -> Observation {
    Observation {
        name: name.to_string(),
        state: state.to_string(),
        pid: Some(pid),
        pgid: Some(pid),
        pid_start: Some(987_654_321),
        restarts: 2,
        at_ms,
    }
}

fn all_events(store: &Store) -> Vec<EventRecord> {
    store
        .events(&EventQuery {
            limit: Some(EventQuery::MAX_LIMIT),
            ..Default::default()
        })
        .unwrap()
}

fn ids(events: &[EventRecord]) -> Vec<i64> {
    events.iter().map(|e| e.id).collect()
}

fn context<'a>(e: &'a hangar_store::Error, key: &str) -> Option<&'a str> {
    e.context()
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
}

#[test]
fn open_creates_the_file_in_wal_mode() {
    let dir = TempDir::new().unwrap();
    let path = db(&dir);
    assert!(!path.exists());
    let store = Store::open(&path).unwrap();
    assert!(path.exists());
    assert_eq!(store.path(), Some(path.as_path()));
    assert!(store.schema_version() >= 1);
    assert_eq!(user_version(&path), store.schema_version());

    let mode: String = raw(&path)
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");

    let id = store.supervisor_id();
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
}

#[test]
fn each_data_dir_gets_its_own_supervisor_id() {
    let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let a = Store::open(&db(&a)).unwrap();
    let b = Store::open(&db(&b)).unwrap();
    assert_ne!(a.supervisor_id(), b.supervisor_id());
}

#[test]
fn open_does_not_create_the_directory() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("missing").join("hangar.db");
    let err = Store::open(&path).unwrap_err();
    assert_eq!(err.code(), "STORE_OPEN_FAILED");
    assert_eq!(err.kind(), ErrorKind::OpenFailed);
    assert_eq!(
        context(&err, "path"),
        Some(path.display().to_string().as_str())
    );
    assert!(!path.parent().unwrap().exists());
    let text = err.to_string();
    assert!(text.starts_with("[STORE_OPEN_FAILED] "), "{text}");
    assert!(text.contains("hint: "), "{text}");
}

#[test]
fn open_refuses_a_file_that_is_not_a_database() {
    let dir = TempDir::new().unwrap();
    let path = db(&dir);
    let junk = b"this is not a database, it is a shopping list\n".repeat(200);
    std::fs::write(&path, &junk).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert_eq!(err.code(), "STORE_OPEN_FAILED", "{err}");
    assert!(err.hint().contains("not a SQLite database"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), junk);
}

#[test]
fn in_memory_store_works_without_a_path() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(store.path(), None);
    assert_eq!(store.supervisor_id().len(), 16);
    store
        .put_process("a", Source::Api, "{}", Desired::Running)
        .unwrap();
    let mut evs = [ev("a", 1, "state", "stopped", "starting")];
    store.apply(&[], &mut evs).unwrap();
    assert_eq!(all_events(&store), evs);
}

#[test]
fn reopen_keeps_id_records_and_events_without_reapplying_migrations() {
    let dir = TempDir::new().unwrap();
    let path = db(&dir);
    let (id, version, records, events) = {
        let store = Store::open(&path).unwrap();
        store
            .put_process("web", Source::Config, &spec("httpd"), Desired::Running)
            .unwrap();
        store
            .put_process("job", Source::Api, &spec("cron"), Desired::Stopped)
            .unwrap();
        let mut evs = vec![
            ev("web", 10, "state", "stopped", "starting"),
            ev("web", 11, "state", "starting", "running"),
        ];
        store
            .apply(&[obs("web", "running", 4242, 11)], &mut evs)
            .unwrap();
        (
            store.supervisor_id().to_string(),
            store.schema_version(),
            store.processes().unwrap(),
            evs,
        )
    };
    // Migrations create their tables with plain CREATE TABLE: were one applied
    // again, this open would fail with STORE_MIGRATION_FAILED.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.supervisor_id(), id);
    assert_eq!(store.schema_version(), version);
    assert_eq!(user_version(&path), version);
    assert_eq!(store.processes().unwrap(), records);
    assert_eq!(all_events(&store), events);
    assert_eq!(store.last_event_id().unwrap(), 2);
    let meta_rows: i64 = raw(&path)
        .query_row("SELECT count(*) FROM meta", [], |r| r.get(0))
        .unwrap();
    assert_eq!(meta_rows, 1);
}

#[test]
fn a_newer_schema_is_refused_and_the_file_left_untouched() {
    let dir = TempDir::new().unwrap();
    let path = db(&dir);
    {
        let c = raw(&path);
        c.execute_batch("CREATE TABLE future (x); INSERT INTO future VALUES (1);")
            .unwrap();
        c.pragma_update(None, "user_version", 1000).unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let listing = |p: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let files_before = listing(dir.path());

    let err = Store::open(&path).unwrap_err();
    assert_eq!(err.code(), "STORE_SCHEMA_TOO_NEW", "{err}");
    assert_eq!(err.kind(), ErrorKind::SchemaTooNew);
    assert!(err.hint().contains("newer hangar"), "{err}");
    assert_eq!(context(&err, "found"), Some("1000"));
    assert_eq!(
        context(&err, "path"),
        Some(path.display().to_string().as_str())
    );

    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(listing(dir.path()), files_before, "no -wal/-shm files");
    assert_eq!(user_version(&path), 1000);
}

#[test]
fn a_failed_migration_is_reported_and_rolled_back() {
    let dir = TempDir::new().unwrap();
    let path = db(&dir);
    // A stray table in the way of migration 1.
    raw(&path).execute_batch("CREATE TABLE events (x)").unwrap();
    let err = Store::open(&path).unwrap_err();
    assert_eq!(err.code(), "STORE_MIGRATION_FAILED", "{err}");
    assert_eq!(context(&err, "version"), Some("1"));
    assert_eq!(
        context(&err, "path"),
        Some(path.display().to_string().as_str())
    );
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(user_version(&path), 0);
    let meta: i64 = raw(&path)
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('meta', 'processes')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(meta, 0, "the failed migration left tables behind");
}

#[test]
fn put_process_inserts_then_updates_without_touching_observed_columns() {
    let store = Store::open_in_memory().unwrap();
    store
        .put_process("web", Source::Config, &spec("httpd"), Desired::Running)
        .unwrap();
    let fresh = store.process("web").unwrap().unwrap();
    assert_eq!(
        fresh,
        ProcessRecord {
            name: "web".into(),
            source: Source::Config,
            spec_json: spec("httpd"),
            desired: Desired::Running,
            state: "stopped".into(),
            pid: None,
            pgid: None,
            pid_start: None,
            restarts: 0,
            updated_ms: 0,
        }
    );

    store
        .apply(&[obs("web", "running", 4242, 5000)], &mut [])
        .unwrap();
    store
        .put_process("web", Source::Api, &spec("nginx"), Desired::Stopped)
        .unwrap();
    let updated = store.process("web").unwrap().unwrap();
    assert_eq!(
        updated,
        ProcessRecord {
            name: "web".into(),
            source: Source::Api,
            spec_json: spec("nginx"),
            desired: Desired::Stopped,
            state: "running".into(),
            pid: Some(4242),
            pgid: Some(4242),
            pid_start: Some(987_654_321),
            restarts: 2,
            updated_ms: 5000,
        }
    );
}

#[test]
fn put_process_refuses_a_spec_that_is_not_json() {
    let store = Store::open_in_memory().unwrap();
    let err = store
        .put_process("web", Source::Api, "{command: httpd", Desired::Running)
        .unwrap_err();
    assert_eq!(err.code(), "STORE_INVALID_INPUT");
    assert_eq!(context(&err, "name"), Some("web"));
    assert_eq!(store.process("web").unwrap(), None);
}

#[test]
fn set_desired_and_remove_process() {
    let store = Store::open_in_memory().unwrap();
    assert!(!store.set_desired("ghost", Desired::Running).unwrap());
    assert_eq!(
        store.process("ghost").unwrap(),
        None,
        "set_desired created a row"
    );

    store
        .put_process("web", Source::Api, "{}", Desired::Running)
        .unwrap();
    assert!(store.set_desired("web", Desired::Stopped).unwrap());
    assert_eq!(
        store.process("web").unwrap().unwrap().desired,
        Desired::Stopped
    );

    let mut evs = [ev("web", 1, "state", "running", "stopped")];
    store.apply(&[], &mut evs).unwrap();
    assert!(store.remove_process("web").unwrap());
    assert!(!store.remove_process("web").unwrap());
    assert_eq!(store.process("web").unwrap(), None);
    assert!(store.processes().unwrap().is_empty());
    assert_eq!(all_events(&store), evs, "history outlives the record");
}

#[test]
fn processes_are_ordered_by_name() {
    let store = Store::open_in_memory().unwrap();
    for name in ["web-2", "api", "web-10", "Zeta", "db"] {
        store
            .put_process(name, Source::Config, "{}", Desired::Running)
            .unwrap();
    }
    let names: Vec<String> = store
        .processes()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["Zeta", "api", "db", "web-10", "web-2"]);
}

#[test]
fn apply_updates_observed_state_and_assigns_increasing_ids() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(store.last_event_id().unwrap(), 0);
    store
        .put_process("a", Source::Api, "{}", Desired::Running)
        .unwrap();
    store
        .put_process("b", Source::Api, "{}", Desired::Running)
        .unwrap();

    let mut first = vec![
        ev("a", 1, "state", "stopped", "starting"),
        ev("b", 1, "state", "stopped", "starting"),
        ev("a", 2, "state", "starting", "running"),
    ];
    store
        .apply(
            &[obs("a", "running", 10, 2), obs("b", "starting", 20, 1)],
            &mut first,
        )
        .unwrap();
    assert_eq!(ids(&first), [1, 2, 3]);

    let mut second = vec![
        ev("b", 3, "state", "starting", "running"),
        ev("b", 4, "health", "unknown", "healthy"),
    ];
    let mut exited = obs("a", "exited", 10, 4);
    exited.pid = None;
    exited.pgid = None;
    exited.pid_start = None;
    exited.restarts = 7;
    store.apply(&[exited], &mut second).unwrap();
    assert_eq!(ids(&second), [4, 5]);
    assert_eq!(store.last_event_id().unwrap(), 5);

    let a = store.process("a").unwrap().unwrap();
    assert_eq!(
        (
            a.state.as_str(),
            a.pid,
            a.pgid,
            a.pid_start,
            a.restarts,
            a.updated_ms
        ),
        ("exited", None, None, None, 7, 4)
    );
    let b = store.process("b").unwrap().unwrap();
    assert_eq!(
        (b.state.as_str(), b.pid, b.updated_ms),
        ("starting", Some(20), 1)
    );

    let mut expected = first;
    expected.extend(second);
    assert_eq!(all_events(&store), expected);

    // Nothing to do is not an error and stores nothing.
    store.apply(&[], &mut []).unwrap();
    assert_eq!(store.last_event_id().unwrap(), 5);
}

#[test]
fn apply_skips_observations_of_unknown_processes_but_stores_the_events() {
    let store = Store::open_in_memory().unwrap();
    let mut evs = [ev("ghost", 1, "state", "running", "stopped")];
    store
        .apply(&[obs("ghost", "stopped", 1, 1)], &mut evs)
        .unwrap();
    assert_eq!(evs[0].id, 1);
    assert_eq!(store.process("ghost").unwrap(), None);
    assert!(store.processes().unwrap().is_empty());
    assert_eq!(all_events(&store), evs);
}

#[test]
fn apply_is_all_or_nothing_when_an_observation_fails() {
    let dir = TempDir::new().unwrap();
    let path = db(&dir);
    let store = Store::open(&path).unwrap();
    store
        .put_process("a", Source::Api, "{}", Desired::Running)
        .unwrap();
    store
        .put_process("b", Source::Api, "{}", Desired::Running)
        .unwrap();
    let before = store.process("a").unwrap().unwrap();

    // The first update runs, the second cannot be stored.
    let mut bad = obs("b", "running", 2, 9);
    bad.restarts = u64::MAX;
    let mut evs = [ev("a", 9, "state", "starting", "running")];
    let err = store
        .apply(&[obs("a", "running", 1, 9), bad], &mut evs)
        .unwrap_err();
    assert_eq!(err.code(), "STORE_INVALID_INPUT", "{err}");
    assert_eq!(context(&err, "name"), Some("b"));
    assert_eq!(evs[0].id, 0, "id set although nothing was stored");

    assert_eq!(store.process("a").unwrap().unwrap(), before);
    let other = Store::open(&path).unwrap();
    assert_eq!(other.process("a").unwrap().unwrap(), before);
    assert!(all_events(&other).is_empty());
    assert_eq!(other.last_event_id().unwrap(), 0);
}

#[test]
fn apply_is_all_or_nothing_when_an_insert_fails() {
    let dir = TempDir::new().unwrap();
    let path = db(&dir);
    let store = Store::open(&path).unwrap();
    store
        .put_process("a", Source::Api, "{}", Desired::Running)
        .unwrap();
    let mut ok = [ev("a", 1, "state", "stopped", "starting")];
    store.apply(&[], &mut ok).unwrap();
    let before = store.process("a").unwrap().unwrap();

    // Another connection installs a trigger that refuses one event of the batch.
    raw(&path)
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.name = 'boom'
             BEGIN SELECT RAISE(ABORT, 'forced failure'); END;",
        )
        .unwrap();
    let mut evs = [
        ev("a", 2, "state", "starting", "running"),
        ev("a", 3, "health", "unknown", "healthy"),
        ev("boom", 4, "state", "x", "y"),
    ];
    let err = store
        .apply(&[obs("a", "running", 1, 4)], &mut evs)
        .unwrap_err();
    assert_eq!(err.code(), "STORE_IO", "{err}");
    assert_eq!(
        context(&err, "path"),
        Some(path.display().to_string().as_str())
    );
    assert_eq!(ids(&evs), [0, 0, 0]);

    let other = Store::open(&path).unwrap();
    assert_eq!(all_events(&other), ok);
    assert_eq!(other.process("a").unwrap().unwrap(), before);
    assert_eq!(other.last_event_id().unwrap(), 1);

    // The rolled-back batch consumed no ids: numbering stays contiguous.
    raw(&path).execute_batch("DROP TRIGGER refuse").unwrap();
    store.apply(&[obs("a", "running", 1, 4)], &mut evs).unwrap();
    assert_eq!(ids(&evs), [2, 3, 4]);
}

#[test]
fn ten_thousand_events_in_batches_come_back_in_order() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(&db(&dir)).unwrap();
    store
        .put_process("p", Source::Api, "{}", Desired::Running)
        .unwrap();
    let mut all = Vec::new();
    let started = Instant::now();
    for batch in 0..10 {
        let mut evs: Vec<EventRecord> = (0..1000)
            .map(|i| {
                let n = batch * 1000 + i;
                let mut e = ev(&format!("p{}", n % 7), n, "state", "a", "b");
                e.detail = json!({ "n": n });
                e
            })
            .collect();
        store
            .apply(&[obs("p", "running", 1, batch)], &mut evs)
            .unwrap();
        all.extend(evs);
    }
    eprintln!("10 batches of 1000 events: {:?}", started.elapsed());

    assert_eq!(ids(&all), (1..=10_000).collect::<Vec<i64>>());
    let back = all_events(&store);
    assert_eq!(back.len(), 10_000);
    assert_eq!(back, all);

    // Without a limit: the newest 1000, ascending.
    let default = store.events(&EventQuery::default()).unwrap();
    assert_eq!(ids(&default), (9001..=10_000).collect::<Vec<i64>>());
}

/// Events for the query tests: ids 1..=12, at_ms = 100 * id.
fn query_fixture() -> (Store, Vec<EventRecord>) {
    let store = Store::open_in_memory().unwrap();
    let names = ["web-1", "web-2", "db", "web-10"];
    let mut evs: Vec<EventRecord> = (0..12)
        .map(|i| {
            let kind = if i % 3 == 2 { "health" } else { "state" };
            ev(names[i % 4], 100 * (i as i64 + 1), kind, "x", "y")
        })
        .collect();
    store.apply(&[], &mut evs).unwrap();
    (store, evs)
}

fn query(store: &Store, q: EventQuery) -> Vec<i64> {
    ids(&store.events(&q).unwrap())
}

fn expect(evs: &[EventRecord], f: impl Fn(&EventRecord) -> bool) -> Vec<i64> {
    evs.iter().filter(|e| f(e)).map(|e| e.id).collect()
}

#[test]
fn query_by_name_glob() {
    let (store, evs) = query_fixture();
    let glob = |g: &str| {
        query(
            &store,
            EventQuery {
                name_glob: Some(g.into()),
                ..Default::default()
            },
        )
    };
    assert_eq!(glob("web-*"), expect(&evs, |e| e.name.starts_with("web-")));
    assert_eq!(
        glob("web-?"),
        expect(&evs, |e| e.name == "web-1" || e.name == "web-2")
    );
    assert_eq!(glob("web-[2]"), expect(&evs, |e| e.name == "web-2"));
    assert_eq!(glob("db"), expect(&evs, |e| e.name == "db"));
    assert_eq!(glob("*"), ids(&evs));
    assert!(glob("WEB-*").is_empty(), "GLOB is case-sensitive");
    assert!(glob("nothing").is_empty());
}

#[test]
fn query_by_kinds() {
    let (store, evs) = query_fixture();
    let kinds = |k: &[&str]| {
        query(
            &store,
            EventQuery {
                kinds: k.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
    };
    assert_eq!(kinds(&["health"]), expect(&evs, |e| e.kind == "health"));
    assert_eq!(kinds(&["state"]), expect(&evs, |e| e.kind == "state"));
    assert_eq!(kinds(&["state", "health"]), ids(&evs));
    assert_eq!(kinds(&[]), ids(&evs), "empty means all");
    assert!(kinds(&["nope"]).is_empty());
}

#[test]
fn query_after_id() {
    let (store, evs) = query_fixture();
    let after = |id| {
        query(
            &store,
            EventQuery {
                after_id: Some(id),
                ..Default::default()
            },
        )
    };
    assert_eq!(after(5), expect(&evs, |e| e.id > 5));
    assert_eq!(after(0), ids(&evs));
    assert!(after(12).is_empty());
}

#[test]
fn query_since_and_until() {
    let (store, evs) = query_fixture();
    let range = |since, until| {
        query(
            &store,
            EventQuery {
                since_ms: since,
                until_ms: until,
                ..Default::default()
            },
        )
    };
    assert_eq!(range(Some(500), None), expect(&evs, |e| e.at_ms >= 500));
    assert_eq!(range(None, Some(500)), expect(&evs, |e| e.at_ms < 500));
    assert_eq!(range(Some(300), Some(700)), [3, 4, 5, 6]);
    assert!(range(Some(700), Some(700)).is_empty());
}

#[test]
fn query_limit_keeps_the_newest_matches_in_ascending_order() {
    let (store, evs) = query_fixture();
    let q = |limit, glob: Option<&str>| {
        query(
            &store,
            EventQuery {
                limit,
                name_glob: glob.map(str::to_string),
                ..Default::default()
            },
        )
    };
    assert_eq!(q(Some(3), None), [10, 11, 12]);
    let webs = expect(&evs, |e| e.name.starts_with("web-"));
    assert_eq!(q(Some(2), Some("web-*")), webs[webs.len() - 2..]);
    assert_eq!(q(Some(100), None), ids(&evs));
    assert!(q(Some(0), None).is_empty());
}

#[test]
fn oldest_first_pages_forward_without_skipping() {
    let (store, evs) = query_fixture();
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = query(
            &store,
            EventQuery {
                after_id: Some(after),
                limit: Some(5),
                oldest: true,
                ..Default::default()
            },
        );
        seen.extend(page.iter().copied());
        match page.last() {
            Some(last) if page.len() == 5 => after = *last,
            _ => break,
        }
    }
    assert_eq!(seen, ids(&evs));
}

#[test]
fn query_filters_combine() {
    let (store, evs) = query_fixture();
    let got = query(
        &store,
        EventQuery {
            name_glob: Some("web-*".into()),
            kinds: vec!["state".into()],
            after_id: Some(1),
            before_id: None,
            since_ms: Some(200),
            until_ms: Some(1200),
            limit: Some(3),
            oldest: false,
        },
    );
    let all = expect(&evs, |e| {
        e.name.starts_with("web-")
            && e.kind == "state"
            && e.id > 1
            && (200..1200).contains(&e.at_ms)
    });
    assert!(all.len() > 3, "fixture too small to exercise the limit");
    assert_eq!(got, all[all.len() - 3..]);
}

#[test]
fn before_id_pages_back_from_the_oldest_event_seen() {
    let store = Store::open_in_memory().unwrap();
    let mut evs: Vec<EventRecord> = (0..10).map(|i| ev("p", i, "state", "a", "b")).collect();
    store.apply(&[], &mut evs).unwrap();
    let page = |before: i64| {
        store
            .events(&EventQuery {
                before_id: Some(before),
                limit: Some(3),
                ..Default::default()
            })
            .unwrap()
    };
    let ids_of = |p: Vec<EventRecord>| p.iter().map(|e| e.id).collect::<Vec<_>>();
    let top = evs[6].id;
    assert_eq!(ids_of(page(top)), [top - 3, top - 2, top - 1]);
    assert_eq!(ids_of(page(evs[1].id)), [evs[0].id]);
}

#[test]
fn events_round_trip_every_field() {
    let store = Store::open_in_memory().unwrap();
    let mut evs = [
        EventRecord {
            id: 0,
            at_ms: -5,
            name: "ünï cödé".into(),
            pid: None,
            kind: "health".into(),
            from: "".into(),
            to: "unhealthy".into(),
            detail: json!({ "error": { "code": "HEALTH_CHECK_FAILED", "message": "x\ny" }, "n": [1, 2.5, null] }),
        },
        EventRecord {
            pid: Some(u32::MAX),
            detail: json!({}),
            ..ev("a", i64::MAX, "state", "a", "b")
        },
    ];
    store.apply(&[], &mut evs).unwrap();
    assert_eq!(all_events(&store), evs);
}

#[test]
fn prune_by_age() {
    let store = Store::open_in_memory().unwrap();
    let mut evs: Vec<EventRecord> = (0..10).map(|t| ev("a", t, "state", "x", "y")).collect();
    store.apply(&[], &mut evs).unwrap();

    // Older than now - max_age = 5 goes; an event exactly at the cutoff stays.
    assert_eq!(store.prune_events(Some(5), None, 10).unwrap(), 5);
    let left = all_events(&store);
    assert_eq!(
        left.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
        [5, 6, 7, 8, 9]
    );
    assert_eq!(store.prune_events(Some(5), None, 10).unwrap(), 0);
    assert_eq!(store.prune_events(None, None, 10).unwrap(), 0);
    assert_eq!(store.prune_events(Some(0), None, 100).unwrap(), 5);
    assert!(all_events(&store).is_empty());
}

#[test]
fn prune_by_rows_keeps_the_newest() {
    let store = Store::open_in_memory().unwrap();
    // at_ms decreasing: "newest" means highest id, not latest timestamp.
    let mut evs: Vec<EventRecord> = (0..10)
        .map(|i| ev("a", 100 - i, "state", "x", "y"))
        .collect();
    store.apply(&[], &mut evs).unwrap();

    assert_eq!(store.prune_events(None, Some(20), 0).unwrap(), 0);
    assert_eq!(store.prune_events(None, Some(u64::MAX), 0).unwrap(), 0);
    assert_eq!(store.prune_events(None, Some(4), 0).unwrap(), 6);
    assert_eq!(ids(&all_events(&store)), [7, 8, 9, 10]);

    // Both limits: ids 7..=10 hold at_ms 94..=91. Age (cutoff 93) takes ids 9
    // and 10, then rows keep the newest id left.
    assert_eq!(store.prune_events(Some(10), Some(1), 103).unwrap(), 3);
    assert_eq!(ids(&all_events(&store)), [8]);

    assert_eq!(store.prune_events(None, Some(0), 0).unwrap(), 1);
    assert!(all_events(&store).is_empty());
}

#[test]
fn ids_keep_increasing_after_prune_and_reopen() {
    let dir = TempDir::new().unwrap();
    let path = db(&dir);
    {
        let store = Store::open(&path).unwrap();
        let mut evs: Vec<EventRecord> = (0..5).map(|t| ev("a", t, "state", "x", "y")).collect();
        store.apply(&[], &mut evs).unwrap();
        assert_eq!(store.prune_events(None, Some(0), 0).unwrap(), 5);
        assert!(all_events(&store).is_empty());
        assert_eq!(store.last_event_id().unwrap(), 5);
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.last_event_id().unwrap(), 5);
    let mut evs = [ev("a", 9, "state", "x", "y")];
    store.apply(&[], &mut evs).unwrap();
    assert_eq!(evs[0].id, 6);
    assert_eq!(store.last_event_id().unwrap(), 6);
}

#[test]
fn two_handles_on_one_file() {
    let dir = TempDir::new().unwrap();
    let path = db(&dir);
    let writer = Store::open(&path).unwrap();
    let reader = Arc::new(Store::open(&path).unwrap());
    assert_eq!(writer.supervisor_id(), reader.supervisor_id());

    writer
        .put_process("p", Source::Api, "{}", Desired::Running)
        .unwrap();
    assert_eq!(reader.process("p").unwrap().unwrap().name, "p");

    // The reader polls while the writer commits batches of 100: it must only ever
    // see whole batches, and each batch's observation together with its events.
    let done = Arc::new(AtomicBool::new(false));
    let polls = {
        let (reader, done) = (reader.clone(), done.clone());
        std::thread::spawn(move || {
            let mut polls = 0;
            while !done.load(Ordering::Acquire) {
                let n = all_events(&reader).len();
                assert_eq!(n % 100, 0, "saw a partial batch of {n} events");
                polls += 1;
            }
            polls
        })
    };
    for batch in 1..=20 {
        let mut evs: Vec<EventRecord> = (0..100).map(|t| ev("p", t, "state", "x", "y")).collect();
        let mut o = obs("p", "running", 1, batch);
        o.restarts = batch as u64;
        writer.apply(&[o], &mut evs).unwrap();
    }
    done.store(true, Ordering::Release);
    assert!(polls.join().unwrap() > 0);

    let seen = all_events(&reader);
    assert_eq!(ids(&seen), (1..=2000).collect::<Vec<i64>>());
    assert_eq!(reader.process("p").unwrap().unwrap().restarts, 20);

    // Either handle can write; ids stay one sequence.
    let mut evs = [ev("p", 1, "state", "x", "y")];
    reader.apply(&[], &mut evs).unwrap();
    assert_eq!(evs[0].id, 2001);
    assert_eq!(writer.last_event_id().unwrap(), 2001);
    assert!(reader.set_desired("p", Desired::Stopped).unwrap());
    assert_eq!(
        writer.process("p").unwrap().unwrap().desired,
        Desired::Stopped
    );
}

#[test]
fn one_handle_shared_by_threads() {
    let store = Arc::new(Store::open_in_memory().unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let name = format!("t{t}-{i}");
                    store
                        .put_process(&name, Source::Api, "{}", Desired::Running)
                        .unwrap();
                    let mut evs = [ev(&name, i, "state", "x", "y")];
                    store.apply(&[], &mut evs).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.processes().unwrap().len(), 200);
    assert_eq!(ids(&all_events(&store)), (1..=200).collect::<Vec<i64>>());
}

#[test]
fn unreadable_rows_are_reported_as_corrupt() {
    let dir = TempDir::new().unwrap();
    let path = db(&dir);
    let store = Store::open(&path).unwrap();
    for name in ["a", "b"] {
        store
            .put_process(name, Source::Api, "{}", Desired::Running)
            .unwrap();
    }
    store
        .apply(&[], &mut [ev("a", 1, "state", "x", "y")])
        .unwrap();
    let tamper = |sql: &str| raw(&path).execute_batch(sql).unwrap();
    let corrupt = |r: hangar_store::Result<Option<ProcessRecord>>| {
        let err = r.unwrap_err();
        assert_eq!(err.code(), "STORE_CORRUPT", "{err}");
        assert_eq!(context(&err, "name"), Some("b"), "{err}");
        assert_eq!(
            context(&err, "path"),
            Some(path.display().to_string().as_str())
        );
        err
    };

    tamper("UPDATE processes SET desired = 'flying' WHERE name = 'b'");
    let err = corrupt(store.process("b"));
    assert_eq!(context(&err, "column"), Some("desired"));
    assert_eq!(store.processes().unwrap_err().code(), "STORE_CORRUPT");
    assert!(
        store.process("a").unwrap().is_some(),
        "other rows still read"
    );

    tamper("UPDATE processes SET desired = 'running', source = 'API' WHERE name = 'b'");
    corrupt(store.process("b"));
    tamper("UPDATE processes SET source = 'api', spec = '{not json' WHERE name = 'b'");
    corrupt(store.process("b"));
    tamper("UPDATE processes SET spec = '{}', pid = -1 WHERE name = 'b'");
    corrupt(store.process("b"));
    tamper("UPDATE processes SET pid = NULL, restarts = -3 WHERE name = 'b'");
    corrupt(store.process("b"));
    tamper("UPDATE processes SET restarts = 0, pid_start = 'soon' WHERE name = 'b'");
    assert_eq!(store.process("b").unwrap_err().code(), "STORE_CORRUPT");
    tamper("UPDATE processes SET pid_start = NULL WHERE name = 'b'");
    assert!(store.process("b").unwrap().is_some());

    tamper("UPDATE events SET detail = 'garbage'");
    let err = store.events(&EventQuery::default()).unwrap_err();
    assert_eq!(err.code(), "STORE_CORRUPT", "{err}");
    assert_eq!(context(&err, "id"), Some("1"));
    tamper("UPDATE events SET detail = '{}', pid = 99999999999");
    assert_eq!(
        store.events(&EventQuery::default()).unwrap_err().code(),
        "STORE_CORRUPT"
    );
}

#[test]
fn a_tampered_supervisor_id_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = db(&dir);
    drop(Store::open(&path).unwrap());
    raw(&path)
        .execute_batch("UPDATE meta SET value = 'not hex!' WHERE key = 'supervisor_id'")
        .unwrap();
    let err = Store::open(&path).unwrap_err();
    assert_eq!(err.code(), "STORE_CORRUPT", "{err}");
    assert_eq!(
        context(&err, "path"),
        Some(path.display().to_string().as_str())
    );
}

#[test]
fn errors_render_code_message_context_and_hint() {
    let store = Store::open_in_memory().unwrap();
    let err = store
        .put_process("web", Source::Api, "nope", Desired::Running)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("[STORE_INVALID_INPUT] the spec is not valid JSON: "),
        "{text}"
    );
    assert!(text.contains(r#"name="web""#), "{text}");
    assert!(text.ends_with(&format!("(hint: {})", err.hint())), "{text}");
    assert!(!err.hint().is_empty());
    assert_eq!(err.message(), "the spec is not valid JSON");
}

#[test]
fn instance_records_round_trip_keep_names_unique_and_survive_reopen() {
    use hangar_store::InstanceRow;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hangar.db");
    let row = |id: &str, name: &str| InstanceRow {
        id: id.into(),
        name: name.into(),
        feature: "tor".into(),
        state: "queued".into(),
        body: format!(r#"{{"id":"{id}","name":"{name}"}}"#),
        updated_ms: 7,
    };
    {
        let s = Store::open(&path).unwrap();
        s.put_instance(&row("i-1", "a")).unwrap();
        s.put_instance(&row("i-2", "b")).unwrap();
        // Another id under a taken name is refused, and nothing changes.
        let err = s.put_instance(&row("i-3", "a")).unwrap_err();
        assert_eq!(err.code(), "STORE_CONFLICT", "{err}");
        assert!(s.instance("i-3").unwrap().is_none());
        // Updating by id may keep or change the name.
        let mut r = row("i-1", "a");
        r.state = "running".into();
        s.put_instance(&r).unwrap();
        // A body that is not JSON is refused.
        let mut bad = row("i-4", "d");
        bad.body = "{".into();
        assert_eq!(
            s.put_instance(&bad).unwrap_err().code(),
            "STORE_INVALID_INPUT"
        );
        // The process of an instance is recorded with its own source.
        s.put_process("inst-a", Source::Instance, "{}", Desired::Running)
            .unwrap();
    }
    let s = Store::open(&path).unwrap();
    let all = s.instances().unwrap();
    assert_eq!(
        all.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(s.instance("i-1").unwrap().unwrap().state, "running");
    assert_eq!(
        s.process("inst-a").unwrap().unwrap().source,
        Source::Instance
    );
    assert!(s.remove_instance("i-2").unwrap());
    assert!(!s.remove_instance("i-2").unwrap());
    assert_eq!(s.instances().unwrap().len(), 1);
}

/// A file system of `size` mounted on a fresh dir (root only; `None`, with
/// the reason printed, elsewhere). Unmounted when dropped.
struct Tmpfs(TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to mount a small tmpfs (CI runs as root)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here");
            return None;
        }
        Some(Tmpfs(dir))
    }

    /// Write until the file system refuses another byte.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        for size in [1 << 16, 1 << 12, 1] {
            let chunk = vec![7u8; size];
            while f.write_all(&chunk).is_ok() {}
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_full_disk_releases_the_reserve_so_the_failure_can_be_recorded() {
    let Some(fs) = Tmpfs::mount("16m") else {
        return;
    };
    let path = fs.0.path().join("hangar.db");
    let reserve = fs.0.path().join("hangar.db-reserve");
    let store = Store::open(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&reserve).unwrap().len(),
        hangar_store::RESERVE_BYTES
    );
    assert!(!store.reserve_missing());
    let filler = fs.fill();
    // Enough events that the write needs new pages on the full disk.
    let mut batch: Vec<EventRecord> = (0..2000).map(|i| ev("p", i, "state", "a", "b")).collect();
    store
        .apply(&[], &mut batch)
        .expect("stored in the reserve's space");
    assert!(batch.iter().all(|e| e.id > 0));
    assert!(!reserve.exists(), "the reserve was released");
    assert!(store.reserve_missing());
    assert!(store.take_reserve_released(), "the release is reported");
    assert!(!store.take_reserve_released(), "once");
    // Without a reserve, the store refuses whole: nothing half-stored.
    let before = all_events(&store).len();
    let mut big: Vec<EventRecord> = (0..200_000)
        .map(|i| ev("q", i, "state", "a", "b"))
        .collect();
    let e = store.apply(&[], &mut big).unwrap_err();
    assert!(e.is_disk_full(), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(big.iter().all(|e| e.id == 0));
    assert_eq!(all_events(&store).len(), before);
    // No room yet: the reserve is not made again.
    assert!(!store.restore_reserve());
    std::fs::remove_file(filler).unwrap();
    assert!(store.restore_reserve());
    assert!(!store.reserve_missing());
    assert_eq!(
        std::fs::metadata(&reserve).unwrap().len(),
        hangar_store::RESERVE_BYTES
    );
}
