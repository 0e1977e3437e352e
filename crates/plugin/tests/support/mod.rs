//! Test plugins served with the server SDK on their own runtime, with knobs
//! for fault injection.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hangar_plugin::unix;
use hangar_plugin::ManagerConfig;
use hangar_plugin::{Call, Handler};
use serde_json::{json, Value};

/// A plugin with knobs for fault injection.
#[derive(Default)]
pub struct Knobs {
    pub name: String,
    pub calls: AtomicU32,
    /// Fail this many calls with a plugin error.
    pub fail_next: AtomicU32,
    /// Delay every call by this many ms.
    pub delay_ms: AtomicU64,
    /// Delay only the first call.
    pub delay_first_ms: AtomicU64,
    pub unhealthy: AtomicBool,
    /// Delay health answers by this many ms.
    pub health_delay_ms: AtomicU64,
    /// Health checks running now, and the most seen at once (shared across plugins).
    pub health_now: Arc<AtomicU32>,
    pub health_max: Arc<AtomicU32>,
}

pub struct TestPlugin(pub Arc<Knobs>);

impl Handler for TestPlugin {
    async fn execute(&self, req: Call) -> Result<Value, String> {
        let n = self.0.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut d = self.0.delay_ms.load(Ordering::SeqCst);
        if n == 1 {
            d += self.0.delay_first_ms.load(Ordering::SeqCst);
        }
        if let Some(ms) = req.data.get("sleep_ms").and_then(Value::as_u64) {
            d += ms;
        }
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        let left = self.0.fail_next.load(Ordering::SeqCst);
        if left > 0 {
            self.0.fail_next.store(left - 1, Ordering::SeqCst);
            return Err("injected failure".into());
        }
        Ok(json!({
            "plugin": self.0.name,
            "echo": req.data,
            "headers": req.headers,
            "request_id": req.request_id,
            "n": n,
        }))
    }

    fn info(&self) -> Value {
        json!({ "name": self.0.name, "version": "1.2.3" })
    }

    async fn health(&self) -> bool {
        let now = self.0.health_now.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.health_max.fetch_max(now, Ordering::SeqCst);
        let d = self.0.health_delay_ms.load(Ordering::SeqCst);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        self.0.health_now.fetch_sub(1, Ordering::SeqCst);
        !self.0.unhealthy.load(Ordering::SeqCst)
    }
}

/// A plugin server on its own runtime: `kill` drops every connection at once.
pub struct Server {
    rt: Option<tokio::runtime::Runtime>,
    pub knobs: Arc<Knobs>,
    pub path: PathBuf,
}

impl Server {
    pub async fn start(path: &Path, knobs: Arc<Knobs>) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (p, k) = (path.to_path_buf(), Arc::clone(&knobs));
        let (tx, rx) = tokio::sync::oneshot::channel();
        rt.spawn(async move {
            let h = unix::serve(&p, Arc::new(TestPlugin(k))).await;
            let _ = tx.send(h.is_ok());
            if let Ok(h) = h {
                h.wait().await;
            }
        });
        assert!(rx.await.unwrap(), "serve");
        Server {
            rt: Some(rt),
            knobs,
            path: path.to_path_buf(),
        }
    }

    pub fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn knobs(name: &str) -> Arc<Knobs> {
    Arc::new(Knobs {
        name: name.into(),
        ..Knobs::default()
    })
}

pub fn config(json: Value) -> ManagerConfig {
    serde_json::from_value(json).expect("config")
}

pub fn unix_plugin(name: &str, dir: &Path, extra: Value) -> Value {
    let mut p = json!({
        "name": name,
        "transport": "unix",
        "endpoint": dir.join(format!("{name}.sock")).display().to_string(),
        "health_check": {"interval": "1h", "timeout": "2s"},
    });
    if let (Some(o), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    p
}
