//! The typed face of a plugin: [`Plugin`] is generic over its request and
//! response types (serde), like the seed's `Plugin[Req, Resp]`.
//! [`TransportPlugin`] implements it over any `Arc<dyn Transport>` (one
//! attempt, no policies); [`crate::Manager::plugin`] gives one that goes
//! through the manager's whole stack.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::context::ExecutionContext;
use crate::error::{Error, ErrorKind};
use crate::health::{HealthStatus, PluginStatus};
use crate::transport::{BoxFuture, CallContext, CallKind, Payload, Transport};

/// What a plugin says about itself (seed `PluginInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// What it does.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Who made it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub author: String,
    /// Operations it supports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Anything else.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// A plugin taking `Req` and answering `Resp` (seed `Plugin[Req, Resp]`).
pub trait Plugin<Req, Resp>: Send + Sync {
    /// Self-description.
    fn info(&self) -> PluginInfo;

    /// Run one request. Honours `ctx.timeout` (`PLUGIN_1204` past it) and
    /// `ctx.cancel`; dropping the future cancels the call too.
    fn execute<'a>(
        &'a self,
        ctx: &'a ExecutionContext,
        req: Req,
    ) -> BoxFuture<'a, Result<Resp, Error>>;

    /// A health check now.
    fn health(&self) -> BoxFuture<'_, HealthStatus>;

    /// Release resources. Idempotent.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// A typed request encoded straight to JSON text (no `Value` in between).
pub(crate) fn encode_raw<Req: Serialize>(req: &Req) -> Result<Box<RawValue>, Error> {
    <Box<RawValue> as Payload>::from_value(req)
}

/// A typed answer decoded straight from JSON text.
pub(crate) fn decode_raw<Resp: DeserializeOwned>(v: &RawValue) -> Result<Resp, Error> {
    serde_json::from_str(v.get()).map_err(shape_err)
}

fn shape_err(e: serde_json::Error) -> Error {
    Error::new(
        ErrorKind::ExecutionFailed,
        format!("the plugin's answer does not have the expected shape: {e}"),
    )
}

/// A typed plugin over a transport: one attempt per call, bounded by the
/// context's timeout (default 30 s) and cancellation.
pub struct TransportPlugin<Req, Resp> {
    name: String,
    transport: Arc<dyn Transport>,
    info: PluginInfo,
    closed: AtomicBool,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> TransportPlugin<Req, Resp> {
    /// Wrap `transport` under `name`.
    pub fn new(name: &str, transport: Arc<dyn Transport>) -> Self {
        TransportPlugin {
            name: name.to_string(),
            info: PluginInfo {
                name: name.to_string(),
                ..PluginInfo::default()
            },
            transport,
            closed: AtomicBool::new(false),
            _types: PhantomData,
        }
    }

    /// Ask the plugin for its info (`info` call) and keep it for [`Plugin::info`].
    pub async fn fetch_info(&mut self, timeout: Duration) -> Result<&PluginInfo, Error> {
        let v = self
            .transport
            .call(
                CallKind::Info,
                Value::Null,
                CallContext {
                    request_id: crate::context::new_request_id(),
                    headers: Default::default(),
                    trace: None,
                    timeout,
                },
            )
            .await?;
        let mut info: PluginInfo = serde_json::from_value(v).unwrap_or_default();
        if info.name.is_empty() {
            info.name = self.name.clone();
        }
        self.info = info;
        Ok(&self.info)
    }
}

/// Run `fut` under a context's timeout and cancellation.
pub(crate) async fn bounded<T>(
    ctx: &ExecutionContext,
    default_timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let t = ctx.timeout.unwrap_or(default_timeout);
    tokio::select! {
        r = tokio::time::timeout(t, fut) => match r {
            Ok(r) => r,
            Err(_) => Err(Error::new(ErrorKind::Timeout, format!("no answer within {t:?}"))),
        },
        _ = ctx.cancel.cancelled() => Err(Error::new(ErrorKind::Timeout, "cancelled by the caller")),
    }
}

impl<Req, Resp> Plugin<Req, Resp> for TransportPlugin<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    fn info(&self) -> PluginInfo {
        self.info.clone()
    }

    fn execute<'a>(
        &'a self,
        ctx: &'a ExecutionContext,
        req: Req,
    ) -> BoxFuture<'a, Result<Resp, Error>> {
        Box::pin(async move {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::new(ErrorKind::Transport, "the plugin is closed"));
            }
            let data = encode_raw(&req)?;
            let timeout = ctx.timeout.unwrap_or(Duration::from_secs(30));
            let mut call = CallContext {
                request_id: if ctx.request_id.is_empty() {
                    crate::context::new_request_id()
                } else {
                    ctx.request_id.clone()
                },
                headers: ctx.headers.clone(),
                trace: None,
                timeout,
            };
            crate::context::TraceContext::start_call(&mut call);
            let v = bounded(
                ctx,
                timeout,
                self.transport
                    .call_raw(CallKind::Execute, &data, call.trace_for(&*self.transport)),
            )
            .await
            .map_err(|mut e| {
                e.plugin.get_or_insert_with(|| self.name.clone());
                e
            })?;
            decode_raw(&v)
        })
    }

    fn health(&self) -> BoxFuture<'_, HealthStatus> {
        Box::pin(async move {
            let t0 = tokio::time::Instant::now();
            let r = self
                .transport
                .call(
                    CallKind::Health,
                    Value::Null,
                    CallContext {
                        request_id: crate::context::new_request_id(),
                        headers: Default::default(),
                        trace: None,
                        timeout: Duration::from_secs(5),
                    },
                )
                .await;
            let mut s = match r {
                Ok(v) if v.get("healthy") == Some(&Value::Bool(false)) => HealthStatus::new(
                    PluginStatus::Unhealthy,
                    "the plugin reports it is unhealthy",
                ),
                Ok(_) => HealthStatus::new(PluginStatus::Healthy, ""),
                Err(e) if e.kind == ErrorKind::ExecutionFailed => {
                    HealthStatus::new(PluginStatus::Unhealthy, e.to_string())
                }
                Err(e) => HealthStatus::new(PluginStatus::Offline, e.to_string()),
            };
            s.response_time = t0.elapsed();
            s
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if !self.closed.swap(true, Ordering::AcqRel) {
                self.transport.close().await;
            }
        })
    }
}
