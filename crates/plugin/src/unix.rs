//! The Unix-socket transport: client and server SDK.
//!
//! **Framing**: each message is a 4-byte big-endian length, then that many
//! bytes of JSON (at most [`MAX_FRAME`]). **Messages** follow the seed's
//! shapes: a request `{"type", "request_id", "data", "headers", "timeout_ms"}`
//! with type `execute`, `ping`, `info` or `health`; a response
//! `{"request_id", "success", "data", "error"}`. One connection carries many
//! calls at once: responses are matched to requests by `request_id`, so a slow
//! call does not hold up a fast one.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, ErrorKind};

/// Largest message accepted, either way.
pub const MAX_FRAME: usize = 16 << 20;

/// A request on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// `execute`, `ping`, `info` or `health`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Correlates the response.
    pub request_id: String,
    /// The call's payload.
    #[serde(default)]
    pub data: Value,
    /// Headers (auth, tracing).
    #[serde(default)]
    pub headers: HashMap<String, String>,
    /// The caller's deadline.
    #[serde(default)]
    pub timeout_ms: u64,
}

/// A response on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id.
    pub request_id: String,
    /// Whether the call succeeded.
    pub success: bool,
    /// The result.
    #[serde(default)]
    pub data: Value,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {n} bytes exceeds {MAX_FRAME}"),
        ));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// What a plugin served over a Unix socket does. Methods return futures so
/// implementations may await.
pub trait Handler: Send + Sync + 'static {
    /// Run one call.
    fn execute(&self, req: &Request) -> impl Future<Output = Result<Value, String>> + Send;
    /// Describe the plugin (name, version, capabilities).
    fn info(&self) -> Value;
    /// Whether the plugin is healthy.
    fn health(&self) -> impl Future<Output = bool> + Send {
        async { true }
    }
}

/// Serve `handler` on a Unix socket at `path` until the task is dropped.
/// Each connection is served on its own task; calls on one connection run
/// concurrently.
pub async fn serve<H: Handler>(
    path: &Path,
    handler: Arc<H>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_conn(stream, Arc::clone(&handler)));
        }
    }))
}

async fn serve_conn<H: Handler>(stream: UnixStream, handler: Arc<H>) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(buf) = rx.recv().await {
            if wr.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    while let Ok(Some(body)) = read_frame(&mut rd).await {
        let (handler, tx) = (Arc::clone(&handler), tx.clone());
        tokio::spawn(async move {
            let resp = match serde_json::from_slice::<Request>(&body) {
                Err(e) => Response {
                    request_id: String::new(),
                    success: false,
                    data: Value::Null,
                    error: Some(format!("malformed request: {e}")),
                },
                Ok(req) => {
                    let (success, data, error) = match req.kind.as_str() {
                        "ping" => (true, Value::String("pong".into()), None),
                        "info" => (true, handler.info(), None),
                        "health" => {
                            let ok = handler.health().await;
                            (
                                ok,
                                serde_json::json!({ "healthy": ok }),
                                (!ok).then(|| "unhealthy".to_string()),
                            )
                        }
                        "execute" => match handler.execute(&req).await {
                            Ok(v) => (true, v, None),
                            Err(e) => (false, Value::Null, Some(e)),
                        },
                        other => (
                            false,
                            Value::Null,
                            Some(format!("unknown request type {other:?}")),
                        ),
                    };
                    Response {
                        request_id: req.request_id,
                        success,
                        data,
                        error,
                    }
                }
            };
            if let Ok(bytes) = serde_json::to_vec(&resp) {
                let _ = tx.send(frame(&bytes)).await;
            }
        });
    }
    drop(tx);
    let _ = writer.await;
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Response>>>>;

/// A connection to a plugin's Unix socket, shared by concurrent callers.
#[derive(Debug, Clone)]
pub struct UnixClient {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next: Arc<AtomicU64>,
}

fn conn_err(msg: String) -> Error {
    Error::new(ErrorKind::ConnectionFailed, msg)
}

impl UnixClient {
    /// Connect to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<UnixClient, Error> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| conn_err(format!("cannot connect to {}: {e}", path.display())))?;
        let (mut rd, mut wr) = stream.into_split();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
        tokio::spawn(async move {
            while let Some(buf) = rx.recv().await {
                if wr.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
        let p = Arc::clone(&pending);
        tokio::spawn(async move {
            while let Ok(Some(body)) = read_frame(&mut rd).await {
                let Ok(resp) = serde_json::from_slice::<Response>(&body) else {
                    continue;
                };
                let waiter = p.lock().ok().and_then(|mut m| m.remove(&resp.request_id));
                if let Some(w) = waiter {
                    let _ = w.send(resp);
                }
            }
            // Connection gone: every waiter learns it (its sender is dropped).
            if let Ok(mut m) = p.lock() {
                m.clear();
            }
        });
        Ok(UnixClient {
            tx,
            pending,
            next: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Send one request and wait for its response, at most `timeout`.
    pub async fn call(
        &self,
        kind: &str,
        data: Value,
        headers: HashMap<String, String>,
        timeout: Duration,
    ) -> Result<Value, Error> {
        let id = format!("r{}", self.next.fetch_add(1, Ordering::Relaxed));
        let req = Request {
            kind: kind.to_string(),
            request_id: id.clone(),
            data,
            headers,
            timeout_ms: timeout.as_millis().min(u128::from(u64::MAX)) as u64,
        };
        let bytes = serde_json::to_vec(&req).map_err(|e| {
            Error::new(
                ErrorKind::ExecutionFailed,
                format!("cannot encode the request: {e}"),
            )
        })?;
        let (done, wait) = oneshot::channel();
        if let Ok(mut m) = self.pending.lock() {
            m.insert(id.clone(), done);
        }
        if self.tx.send(frame(&bytes)).await.is_err() {
            self.forget(&id);
            return Err(Error::new(ErrorKind::Transport, "the connection is closed"));
        }
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => {
                self.forget(&id);
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!("no answer within {timeout:?}"),
                ))
            }
            Ok(Err(_)) => Err(Error::new(
                ErrorKind::Transport,
                "the connection closed mid-call",
            )),
            Ok(Ok(resp)) if resp.success => Ok(resp.data),
            Ok(Ok(resp)) => Err(Error::new(
                ErrorKind::ExecutionFailed,
                resp.error
                    .unwrap_or_else(|| "the plugin reported a failure".into()),
            )),
        }
    }

    fn forget(&self, id: &str) {
        if let Ok(mut m) = self.pending.lock() {
            m.remove(id);
        }
    }

    /// Typed `execute`: `req` and the answer go through serde.
    pub async fn execute<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, Error> {
        let data = serde_json::to_value(req).map_err(|e| {
            Error::new(
                ErrorKind::ExecutionFailed,
                format!("cannot encode the request: {e}"),
            )
        })?;
        let out = self.call("execute", data, HashMap::new(), timeout).await?;
        serde_json::from_value(out).map_err(|e| {
            Error::new(
                ErrorKind::ExecutionFailed,
                format!("unexpected answer shape: {e}"),
            )
        })
    }
}

impl crate::transport::Transport for UnixClient {
    fn kind(&self) -> &'static str {
        "unix"
    }

    fn call(
        &self,
        kind: crate::transport::CallKind,
        data: Value,
        ctx: crate::transport::CallContext,
    ) -> crate::transport::BoxFuture<'_, Result<Value, Error>> {
        Box::pin(async move {
            UnixClient::call(self, kind.as_str(), data, ctx.headers, ctx.timeout).await
        })
    }

    fn close(&self) -> crate::transport::BoxFuture<'_, ()> {
        // The connection's tasks end when the last clone of the client drops;
        // pending callers learn it through their dropped senders.
        Box::pin(async {})
    }
}
