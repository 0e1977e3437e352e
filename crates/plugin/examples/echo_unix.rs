//! An echo plugin served over a Unix socket with the server SDK.
//!
//! ```text
//! cargo run -p hangar-plugin --example echo_unix -- /tmp/echo.sock
//! ```
//!
//! Without an argument it listens on `$TMPDIR/hangar-echo.sock`. Stop it with
//! Ctrl-C.

use std::sync::Arc;

use hangar_plugin::{unix, Call, Handler};
use serde_json::{json, Value};

struct Echo;

impl Handler for Echo {
    async fn execute(&self, call: Call) -> Result<Value, String> {
        Ok(json!({ "echo": call.data, "request_id": call.request_id }))
    }

    fn info(&self) -> Value {
        json!({ "name": "echo", "version": env!("CARGO_PKG_VERSION"), "transport": "unix" })
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("hangar-echo.sock"));
    let server = unix::serve(&path, Arc::new(Echo)).await?;
    eprintln!("echo plugin listening on {}", path.display());
    server.wait().await;
    Ok(())
}
