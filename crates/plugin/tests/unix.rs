//! The Unix-socket transport against a real socket and a plugin served with
//! the server SDK: typed calls, ping/info/health, concurrent calls on one
//! connection answered out of order, timeouts, plugin errors, and a plugin
//! that goes away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_plugin::unix::{self, Handler, Request, UnixClient};
use hangar_plugin::ErrorKind;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Add {
    a: i64,
    b: i64,
    /// Milliseconds to take.
    #[serde(default)]
    delay_ms: u64,
}

struct Calc;

impl Handler for Calc {
    async fn execute(&self, req: &Request) -> Result<Value, String> {
        let add: Add = serde_json::from_value(req.data.clone()).map_err(|e| e.to_string())?;
        if add.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(add.delay_ms)).await;
        }
        if add.a < 0 {
            return Err("negative numbers are not supported".into());
        }
        Ok(json!(add.a + add.b))
    }

    fn info(&self) -> Value {
        json!({ "name": "calc", "version": "1.0.0" })
    }
}

async fn setup() -> (tempfile::TempDir, UnixClient, tokio::task::JoinHandle<()>) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("calc.sock");
    let server = unix::serve(&path, Arc::new(Calc)).await.expect("serve");
    let client = UnixClient::connect(&path).await.expect("connect");
    (dir, client, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_calls_and_control_messages() {
    let (_dir, c, _server) = setup().await;
    let sum: i64 = c
        .execute(
            &Add {
                a: 2,
                b: 40,
                delay_ms: 0,
            },
            Duration::from_secs(2),
        )
        .await
        .expect("execute");
    assert_eq!(sum, 42);
    let t = Duration::from_secs(2);
    assert_eq!(
        c.call("ping", Value::Null, HashMap::new(), t)
            .await
            .unwrap(),
        json!("pong")
    );
    assert_eq!(
        c.call("info", Value::Null, HashMap::new(), t)
            .await
            .unwrap()["name"],
        "calc"
    );
    assert_eq!(
        c.call("health", Value::Null, HashMap::new(), t)
            .await
            .unwrap()["healthy"],
        true
    );
    let e = c
        .call("reboot", Value::Null, HashMap::new(), t)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::ExecutionFailed);
    let e = c
        .execute::<_, i64>(
            &Add {
                a: -1,
                b: 1,
                delay_ms: 0,
            },
            t,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "PLUGIN_1203");
    assert!(e.message.contains("negative"), "{e}");
    assert!(!e.kind.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_one_connection_and_do_not_wait_for_each_other() {
    let (_dir, c, _server) = setup().await;
    let t0 = Instant::now();
    let slow = {
        let c = c.clone();
        tokio::spawn(async move {
            c.execute::<_, i64>(
                &Add {
                    a: 1,
                    b: 1,
                    delay_ms: 2_000,
                },
                Duration::from_secs(10),
            )
            .await
        })
    };
    let mut fast = Vec::new();
    for i in 0..50 {
        let c = c.clone();
        fast.push(tokio::spawn(async move {
            c.execute::<_, i64>(
                &Add {
                    a: i,
                    b: 1000,
                    delay_ms: 0,
                },
                Duration::from_secs(5),
            )
            .await
        }));
    }
    for (i, f) in fast.into_iter().enumerate() {
        assert_eq!(f.await.unwrap().unwrap(), i as i64 + 1000);
    }
    assert!(
        !slow.is_finished(),
        "fast calls waited for the slow one ({:?})",
        t0.elapsed()
    );
    assert_eq!(slow.await.unwrap().unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_plugin_times_out_and_a_gone_one_is_a_connection_error() {
    let (dir, c, server) = setup().await;
    let e = c
        .execute::<_, i64>(
            &Add {
                a: 1,
                b: 1,
                delay_ms: 2_000,
            },
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "PLUGIN_1204");
    assert!(e.kind.is_retryable());
    server.abort();
    let _ = server.await;
    drop(c);
    let e = UnixClient::connect(&dir.path().join("nope.sock"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "PLUGIN_1205");
    assert!(e.kind.is_retryable());
}
