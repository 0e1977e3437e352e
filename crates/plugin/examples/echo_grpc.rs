//! An echo plugin served over gRPC (PluginService plus grpc.health.v1) with
//! the server SDK.
//!
//! ```text
//! cargo run -p hangar-plugin --example echo_grpc -- 127.0.0.1:50051
//! ```

use std::sync::Arc;

use hangar_plugin::grpc::{self, GrpcServeOptions};
use hangar_plugin::{Call, Handler};
use serde_json::{json, Value};

struct Echo;

impl Handler for Echo {
    async fn execute(&self, call: Call) -> Result<Value, String> {
        Ok(json!({ "echo": call.data, "request_id": call.request_id }))
    }

    fn info(&self) -> Value {
        json!({ "name": "echo", "version": env!("CARGO_PKG_VERSION"), "transport": "grpc" })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".into())
        .parse()?;
    let server = grpc::serve(Arc::new(Echo), GrpcServeOptions::new(addr)).await?;
    eprintln!(
        "echo plugin on grpc://{}",
        server.local_addr().ok_or("no address")?
    );
    server.wait().await;
    Ok(())
}
