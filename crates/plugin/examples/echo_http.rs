//! An echo plugin served over HTTP with the server SDK, optionally requiring
//! an API key.
//!
//! ```text
//! cargo run -p hangar-plugin --example echo_http -- 127.0.0.1:8080 [API_KEY]
//! curl -s -H 'X-API-Key: KEY' -d '{"data":{"hi":1},"request_id":"r1"}' http://127.0.0.1:8080/
//! ```

use std::sync::Arc;

use hangar_plugin::http::{self, HttpServeOptions};
use hangar_plugin::{AuthConfig, Call, Handler, ServerAuth};
use serde_json::{json, Value};

struct Echo;

impl Handler for Echo {
    async fn execute(&self, call: Call) -> Result<Value, String> {
        Ok(json!({ "echo": call.data, "request_id": call.request_id }))
    }

    fn info(&self) -> Value {
        json!({ "name": "echo", "version": env!("CARGO_PKG_VERSION"), "transport": "http" })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()?;
    let mut opts = HttpServeOptions::new(addr);
    if let Some(key) = args.next() {
        opts.auth = ServerAuth::new(&AuthConfig::api_key(key)).map_err(|e| format!("{e:?}"))?;
    }
    let server = http::serve(Arc::new(Echo), opts).await?;
    eprintln!(
        "echo plugin on http://{}/",
        server.local_addr().ok_or("no address")?
    );
    server.wait().await;
    Ok(())
}
