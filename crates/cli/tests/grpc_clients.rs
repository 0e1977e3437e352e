//! The control socket as generic gRPC clients nobody here wrote see it.
//!
//! Python `grpcio` with default channel settings (grpc-core sends the socket
//! path as `:authority`), its message types learnt by server reflection
//! (`grpcio-reflection` speaks `grpc.reflection.v1alpha`), errors read from
//! `grpc-status-details-bin` with `grpcio-status`. `.ci/run` installs the
//! three from PyPI in a venv and names its Python in `$HANGAR_TEST_PYTHON`
//! (else `python3`); where they are missing the test says so and skips.

mod common;

use std::path::Path;
use std::process::Command;

use common::{run, stdout, wait_for, Scratch, Served, LONG};
use serde_json::Value;

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/grpc_client.py");

fn python() -> Command {
    Command::new(std::env::var_os("HANGAR_TEST_PYTHON").unwrap_or_else(|| "python3".into()))
}

fn python_grpc() -> bool {
    let ok = python()
        .args([
            "-c",
            "import grpc, grpc_reflection.v1alpha.proto_reflection_descriptor_database, grpc_status",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "skipped: Python grpcio, grpcio-reflection and grpcio-status are not installed \
             (pip install grpcio grpcio-reflection grpcio-status; .ci/run does)"
        );
    }
    ok
}

fn client(sock: &Path) -> Value {
    let o = python()
        .arg(CLIENT)
        .arg(sock)
        .output()
        .expect("python3 runs");
    assert!(
        o.status.success(),
        "the Python client failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

fn error<'a>(out: &'a Value, call: &str) -> &'a Value {
    out[call]
        .get("error")
        .unwrap_or_else(|| panic!("{call} should fail: {}", out[call]))
}

#[test]
fn python_grpcio_over_the_socket_with_default_settings() {
    if !python_grpc() {
        return;
    }
    let dir = Scratch::new("grpc-py");
    let conf = dir.path().join("hangar.toml");
    std::fs::write(
        &conf,
        "[[process]]\nname = \"sleeper\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n\
         [[process]]\nname = \"exits\"\ncommand = \"sh\"\nargs = [\"-c\", \"exit 3\"]\n\
         [process.restart]\npolicy = \"never\"\n",
    )
    .expect("config written");
    let data = dir.path().join("data");
    let conf = conf.display().to_string();
    let _d = Served::start(&data, &["-c", &conf]);
    // The exit of `exits` stored, with its detail, before the client looks.
    assert!(
        wait_for(LONG, || {
            let o = run(&data, &["events", "--json"]);
            stdout(&o).lines().any(|l| {
                serde_json::from_str::<Value>(l)
                    .is_ok_and(|e| e["name"] == "exits" && e["detail"]["exit"].is_string())
            })
        }),
        "the exit of `exits` never reached the history"
    );
    let out = client(&data.join("hangar.sock"));

    // Reflection in both versions, each listing everything.
    for key in ["services_v1alpha", "services_v1"] {
        let services: Vec<&str> = out[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {out}"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for s in [
            "hangar.v1.Processes",
            "hangar.v1.Instances",
            "hangar.v1.Daemon",
            "hangar.v1.Events",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(services.contains(&s), "{key} lacks {s}: {services:?}");
        }
    }

    // Plain calls work.
    assert!(
        out["status"]["ok"]["pid"].as_u64().is_some_and(|p| p > 0),
        "{}",
        out["status"]
    );
    let names: Vec<&str> = out["list"]["ok"]["processes"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["exits", "sleeper"], "{}", out["list"]);

    // Pages of one, by name, each process once; a token not ours is refused.
    assert_eq!(out["pages"], serde_json::json!([["exits"], ["sleeper"]]));
    let e = error(&out, "bad_page_token");
    assert_eq!(e["code"], "INVALID_ARGUMENT", "{e}");
    assert_eq!(e["bad_request"][0]["field"], "page_token", "{e}");

    // An event's detail is a structured object, numbers as numbers.
    let events = out["history"]["ok"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("history: {}", out["history"]));
    assert!(
        events
            .iter()
            .any(|e| e["name"] == "exits" && e["detail"]["exit"].is_string()),
        "no structured detail: {events:?}"
    );

    // NotFound, with the hangar code as ErrorInfo's reason and the hint as Help.
    for (call, reason, key, value) in [
        ("missing_instance", "INSTANCE_NOT_FOUND", "instance", "nope"),
        ("missing_process", "PROCESS_NOT_FOUND", "process", "nope"),
        (
            "unknown_feature",
            "FEATURE_NOT_FOUND",
            "category",
            "not_found",
        ),
    ] {
        let e = error(&out, call);
        assert_eq!(e["code"], "NOT_FOUND", "{call}: {e}");
        assert_eq!(e["error_info"]["reason"], reason, "{call}: {e}");
        assert_eq!(e["error_info"]["domain"], "hangar", "{call}: {e}");
        assert_eq!(e["error_info"]["metadata"][key], value, "{call}: {e}");
        assert!(
            e["help"][0].as_str().is_some_and(|h| !h.is_empty()),
            "{call}: {e}"
        );
    }

    // InvalidArgument, with a BadRequest violation naming the field.
    let e = error(&out, "invalid_spec");
    assert_eq!(e["code"], "INVALID_ARGUMENT", "{e}");
    assert_eq!(e["error_info"]["reason"], "CONFIG_INVALID", "{e}");
    let v = &e["bad_request"][0];
    assert_eq!(v["field"], "process[0].instances", "{e}");
    assert!(
        v["description"]
            .as_str()
            .is_some_and(|d| d.contains("at least 1")),
        "{e}"
    );
}

/// The `Catalog` service as a generic client sees it: listed by reflection,
/// `List` answering every built-in feature with structured fields, and `Get`
/// of a feature that is not there a NotFound with its code and hint.
#[test]
fn python_grpcio_browses_the_catalog() {
    if !python_grpc() {
        return;
    }
    let dir = Scratch::new("grpc-py-catalog");
    let data = dir.path().join("data");
    let _d = Served::start(&data, &[]);
    let out = client(&data.join("hangar.sock"));

    for key in ["services_v1alpha", "services_v1"] {
        let listed = out[key]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s == "hangar.v1.Catalog"));
        assert!(listed, "{key} lacks hangar.v1.Catalog: {}", out[key]);
    }
    let features = out["catalog_list"]["ok"]["features"]
        .as_array()
        .unwrap_or_else(|| panic!("Catalog.List: {}", out["catalog_list"]));
    let ids: Vec<&str> = features.iter().filter_map(|f| f["id"].as_str()).collect();
    assert_eq!(
        ids,
        ["demo", "sing-box", "tor", "xray"],
        "{}",
        out["catalog_list"]
    );
    let demo = &features[0];
    assert_eq!(demo["isolation"], "per-session", "{demo}");
    assert_eq!(demo["default_ports"][0], 8080, "{demo}");
    assert_eq!(demo["modes"][0]["id"], "default", "{demo}");
    let tor = &features[2];
    let opts = tor["options"].as_array().expect("tor declares options");
    assert!(
        opts.iter()
            .all(|o| o["name"].is_string() && o["type"].is_string()),
        "{tor}"
    );

    let e = error(&out, "missing_feature");
    assert_eq!(e["code"], "NOT_FOUND", "{e}");
    assert_eq!(e["error_info"]["reason"], "FEATURE_NOT_FOUND", "{e}");
    assert_eq!(e["error_info"]["domain"], "hangar", "{e}");
    assert!(
        e["help"][0].as_str().is_some_and(|h| h.contains("catalog")),
        "{e}"
    );
}
