//! The GraphQL API as a generic client nobody here wrote sees it: Python
//! `gql` (PyPI) over HTTP and over both WebSocket protocols
//! (`graphql-transport-ws` and the older `graphql-ws`), against a real daemon
//! installing and running the bundled demo feature. `.ci/run` installs gql
//! in a venv and names its Python in `$HANGAR_TEST_GQL_PYTHON`; where it is
//! missing the test says so and skips.

mod common;

use std::path::Path;
use std::process::Command;

use common::{free_port, Scratch, Served};
use serde_json::{json, Value};

const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/graphql_client.py"
);

fn python() -> Command {
    Command::new(std::env::var_os("HANGAR_TEST_GQL_PYTHON").unwrap_or_else(|| "python3".into()))
}

fn has_gql() -> bool {
    let ok = python()
        .args([
            "-c",
            "import gql.transport.websockets, gql.transport.requests",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "skipped: Python gql with websockets and requests is not installed \
             (pip install 'gql[websockets,requests]'; .ci/run does)"
        );
    }
    ok
}

/// A catalog with the demo feature and `broken`, whose release is missing.
fn catalog(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog/demo");
    let demo = dir.join("demo");
    std::fs::create_dir_all(demo.join("releases")).unwrap();
    std::fs::copy(src.join("manifest.json"), demo.join("manifest.json")).unwrap();
    for f in std::fs::read_dir(src.join("releases")).unwrap().flatten() {
        std::fs::copy(f.path(), demo.join("releases").join(f.file_name())).unwrap();
    }
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(src.join("manifest.json")).unwrap()).unwrap();
    m["id"] = "broken".into();
    m["name"] = "Broken".into();
    m["source"]["asset_pattern"] = "releases/missing-{{version}}-{{os}}-{{arch}}.tar.gz".into();
    let broken = dir.join("broken");
    std::fs::create_dir_all(broken.join("releases")).unwrap();
    std::fs::copy(
        src.join("releases/checksums.txt"),
        broken.join("releases/checksums.txt"),
    )
    .unwrap();
    std::fs::write(broken.join("manifest.json"), m.to_string()).unwrap();
}

#[test]
fn a_generic_graphql_client_installs_follows_and_is_refused_without_the_token() {
    if !has_gql() {
        return;
    }
    let s = Scratch::new("graphql");
    let data = s.path().join("data");
    let cat = s.path().join("catalog");
    catalog(&cat);
    let cfg = s.path().join("hangar.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nport_range = \"23200-23249\"\n[daemon.instances]\ncatalog = [{:?}]\n",
            cat.display().to_string()
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let _d = Served::start_http(&data, &addr, &["-c", cfg.to_str().unwrap()]);

    // The token: made at first start, 0600, never printed by the daemon.
    let token_file = data.join("api.token");
    let meta = std::fs::metadata(&token_file).expect("api.token made");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(token.len(), 64, "{token:?}");

    let o = python()
        .arg(CLIENT)
        .arg(format!("http://{addr}/graphql"))
        .arg(&token)
        .output()
        .expect("python runs");
    assert!(
        o.status.success(),
        "the gql client failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)));
    let code = |v: &Value| v["body"]["errors"][0]["extensions"]["code"].clone();

    // Refused before anything runs, with a code and a hint; never CORS.
    for (case, status, c) in [
        ("no_token", 401, "UNAUTHENTICATED"),
        ("wrong_token", 401, "UNAUTHENTICATED"),
        ("foreign_origin", 403, "FOREIGN_ORIGIN"),
        ("rebinding_host", 403, "FOREIGN_ORIGIN"),
        ("mutation_without_token", 401, "UNAUTHENTICATED"),
        ("bad_login", 401, "UNAUTHENTICATED"),
    ] {
        assert_eq!(
            out[case]["status"], status,
            "{case}: {}\nall: {out}",
            out[case]
        );
        assert_eq!(code(&out[case]), c, "{case}: {}", out[case]);
        assert!(
            out[case]["body"]["errors"][0]["extensions"]["hint"].is_string(),
            "{case}: {}",
            out[case]
        );
        assert!(out[case]["cors"].is_null(), "{case}: {}", out[case]);
    }
    assert!(
        !out.to_string().contains(&token),
        "the token came back in a reply"
    );
    // A login sets an HttpOnly, SameSite=Strict cookie and sends to the
    // dashboard; the cookie alone then answers.
    assert_eq!(out["login"]["status"], 303, "{}", out["login"]);
    assert_eq!(out["login"]["location"], "/");
    let set = out["login"]["set_cookie"].as_str().unwrap_or_default();
    assert!(
        set.starts_with("hangar_session=")
            && set.contains("HttpOnly")
            && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(&token), "the cookie is not the token");
    assert_eq!(out["with_cookie"]["status"], 200, "{}", out["with_cookie"]);
    assert!(out["with_cookie"]["body"]["data"]["status"]["pid"].is_u64());

    // Queries.
    let st = &out["status"]["data"]["status"];
    assert_eq!(st["dataDir"], data.display().to_string(), "{st}");
    let cat = out["catalog"]["data"]["catalog"]
        .as_array()
        .expect("catalog");
    assert!(cat.iter().any(|f| f["id"] == "demo"), "{cat:?}");
    // Errors carry the hangar code, hint and context in extensions.
    let nf = &out["not_found"]["errors"][0];
    assert_eq!(nf["extensions"]["code"], "INSTANCE_NOT_FOUND", "{nf}");
    assert_eq!(nf["extensions"]["category"], "not_found", "{nf}");
    assert!(nf["extensions"]["hint"].is_string(), "{nf}");
    let bc = &out["bad_cursor"]["errors"][0];
    assert_eq!(bc["extensions"]["code"], "USAGE", "{bc}");
    assert_eq!(bc["extensions"]["context"]["field"], "after", "{bc}");
    // The depth limit holds.
    assert!(out["deep"]["errors"].is_array(), "{}", out["deep"]);

    // installFeature answers at once; its progress streams from queued to
    // running over graphql-transport-ws.
    let created = &out["install_feature"];
    assert!(created["instanceId"]
        .as_str()
        .is_some_and(|i| i.starts_with("i-")));
    assert_eq!(created["instance"]["state"], "queued", "{created}");
    let progress = out["progress"].as_array().expect("progress");
    let statuses: Vec<&str> = progress
        .iter()
        .filter_map(|p| p["status"].as_str())
        .collect();
    assert_eq!(statuses.first(), Some(&"queued"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"running"), "{statuses:?}");
    for want in [
        "downloading",
        "verifying",
        "extracting",
        "completed",
        "starting",
    ] {
        assert!(statuses.contains(&want), "{want} missing: {statuses:?}");
    }
    let ids: Vec<i64> = progress
        .iter()
        .filter_map(|p| p["eventId"].as_i64())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order: {ids:?}");
    let inst = &out["instance"]["data"]["instance"];
    assert_eq!(inst["state"], "running", "{inst}");
    assert!(
        inst["ports"].as_array().is_some_and(|p| !p.is_empty()),
        "{inst}"
    );
    // Its output over graphql-ws.
    let logs = out["logs"].as_array().expect("logs");
    assert!(!logs.is_empty());
    assert_eq!(logs[0]["process"], inst["process"]);
    // State changes as they happen.
    let states = out["states"].as_array().expect("states");
    assert_eq!(
        states.last().map(|s| &s["to"]),
        Some(&Value::from("stopped")),
        "{states:?}"
    );
    assert!(states
        .iter()
        .all(|s| s["name"] == "g1" && s["kind"] == "instance.state"));
    // A failing install ends in error, naming its step and code.
    let failed = out["failed"].as_array().expect("failed");
    let last = failed.last().expect("a last message");
    assert_eq!(last["status"], "error", "{failed:?}");
    assert_eq!(last["step"], "install", "{failed:?}");
    assert!(
        last["error"]["code"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{failed:?}"
    );
    // History pages by cursor.
    let h = &out["history"]["data"]["events"];
    let edges = h["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 3, "{h}");
    assert_eq!(edges[2]["node"]["to"], "stopped", "{h}");
    assert_eq!(h["pageInfo"]["hasPreviousPage"], true, "{h}");

    // Every other query and mutation.
    let data = |k: &str| {
        let d = &out[k]["data"];
        assert!(d.is_object(), "{k}: {}", out[k]);
        d.clone()
    };
    let names = |v: &Value| v["names"].clone();
    assert!(
        data("instances")["instances"]
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i["name"] == "g1")),
        "{}",
        out["instances"]
    );
    let f = data("feature")["feature"].clone();
    assert_eq!(f["id"], "demo", "{f}");
    assert!(f["asset"]["url"].is_string(), "{f}");
    assert_eq!(
        data("install_old")["install"],
        json!({"version": "1.0.0", "current": true})
    );
    assert_eq!(
        data("install_back")["install"],
        json!({"version": "1.1.0", "current": true})
    );
    assert_eq!(data("uninstall_old")["uninstall"], json!(["1.0.0"]));
    let installed = data("installed")["installed"].clone();
    let demo: Vec<&Value> = installed
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["id"] == "demo")
        .collect();
    assert_eq!(demo.len(), 1, "{installed}");
    assert_eq!(demo[0]["version"], "1.1.0", "{installed}");
    assert_eq!(data("start_instance")["startInstance"]["state"], "running");
    assert_eq!(
        data("restart_instance")["restartInstance"]["state"],
        "running"
    );
    assert_eq!(
        data("update_instance")["updateInstance"],
        json!({"state": "running", "mode": "default"})
    );
    assert_eq!(
        data("add")["addProcesses"],
        json!([{"name": "gq", "source": "api"}])
    );
    assert_eq!(out["added_process"]["state"], "running", "{out}");
    // The event stream, filtered and resumed after an id, saw the restart.
    let after = out["gq_after"].as_i64().expect("an id");
    let evs = out["gq_events"].as_array().expect("events");
    assert!(
        evs.iter().all(|e| e["name"] == "gq"
            && e["kind"] == "state"
            && e["id"].as_i64().is_some_and(|i| i > after)),
        "{evs:?}"
    );
    assert!(
        evs.iter().any(|e| e["to"] == "stopping"),
        "no stop seen: {evs:?}"
    );
    assert_eq!(evs.last().map(|e| &e["to"]), Some(&json!("running")));
    assert_eq!(
        names(&data("restart_processes")["restartProcesses"]),
        json!(["gq"])
    );
    assert_eq!(
        names(&data("stop_processes")["stopProcesses"]),
        json!(["gq"])
    );
    assert_eq!(
        data("stopped_process")["process"],
        json!({"state": "stopped", "pid": null})
    );
    assert_eq!(
        names(&data("start_processes")["startProcesses"]),
        json!(["gq"])
    );
    assert_eq!(names(&data("signal")["signalProcesses"]), json!(["gq"]));
    assert_eq!(
        out["bad_signal"]["errors"][0]["extensions"]["code"], "INVALID_SIGNAL",
        "{}",
        out["bad_signal"]
    );
    assert_eq!(data("remove")["removeProcess"], true);
    assert_eq!(
        out["removed"]["errors"][0]["extensions"]["code"], "PROCESS_NOT_FOUND",
        "{}",
        out["removed"]
    );
    assert_eq!(
        out["delete"]["data"]["deleteInstance"], true,
        "{}",
        out["delete"]
    );
}
