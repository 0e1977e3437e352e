//! An exec plugin and its host in one program.
//!
//! Started by the library (it finds `HANGAR_PLUGIN_PROTOCOL=1` in its
//! environment), it is the plugin: it serves calls on stdin/stdout with
//! [`exec::serve_stdio`]. Started by hand, it is the host: it runs itself as
//! an exec plugin, makes a few calls and closes it.
//!
//! ```text
//! cargo run -p hangar-plugin --example echo_exec
//! ```

use std::sync::Arc;
use std::time::Duration;

use hangar_plugin::exec::{self, ExecClient, ExecOptions};
use hangar_plugin::{Call, CallContext, CallKind, Handler, Transport, TransportExt};
use serde_json::{json, Value};

struct Echo;

impl Handler for Echo {
    async fn execute(&self, call: Call) -> Result<Value, String> {
        // Logs go to stderr; the host forwards them to its tracing.
        eprintln!("executing {}", call.request_id);
        Ok(json!({ "echo": call.data, "request_id": call.request_id, "pid": std::process::id() }))
    }

    fn info(&self) -> Value {
        json!({ "name": "echo", "version": env!("CARGO_PKG_VERSION"), "transport": "exec" })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("HANGAR_PLUGIN_PROTOCOL").is_some() {
        exec::serve_stdio(Arc::new(Echo)).await;
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let plugin = ExecClient::start(ExecOptions::new(std::env::current_exe()?)).await?;
    let t = Duration::from_secs(10);
    println!("info: {}", plugin.info(t).await?);
    let mut ctx = CallContext::with_timeout(t);
    ctx.request_id = "demo-1".into();
    let r = plugin
        .call(CallKind::Execute, json!({ "hello": "exec" }), ctx)
        .await?;
    println!("execute: {r}");
    plugin.close().await;
    Ok(())
}
