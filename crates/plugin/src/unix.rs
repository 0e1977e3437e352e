//! The Unix-socket transport: a pooled, multiplexing client
//! ([`UnixClient`]) and the server side ([`serve`], [`serve_with`]).
//!
//! **Framing** (also used by the exec transport over stdin/stdout): each
//! message is a 4-byte big-endian unsigned length, then that many bytes of
//! UTF-8 JSON; at most [`MAX_FRAME`] bytes. **Messages** are the seed's
//! `UnixSocketMessage` (`{"type", "request_id", "data", "headers",
//! "timeout_ms"}`, type `execute`, `ping`, `info` or `health`) and
//! `UnixSocketResponse` (`{"type", "request_id", "success", "data", "error",
//! "headers"}`; a failure carries its stable code in `headers["X-Error-Code"]`).
//! One connection carries many calls at once: responses are matched to
//! requests by `request_id`, in any order. The full protocol is in
//! `docs/plugin-protocol.md`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, watch};

use crate::auth::{AuthConfig, ServerAuth};
use crate::error::{Error, ErrorKind};
pub use crate::server::Handler;
use crate::server::{stopped, Call, Served, Server};
use crate::transport::{
    BoxFuture, CallContext, CallKind, Payload, Transport, TransportKind, WireHeaders,
};

/// Largest message accepted, either way (16 MiB).
pub const MAX_FRAME: usize = 16 << 20;

/// The response header that carries a failure's stable code.
pub const ERROR_CODE_HEADER: &str = "X-Error-Code";

/// A request on the wire (the seed's `UnixSocketMessage`).
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
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub headers: HashMap<String, String>,
    /// The caller's deadline in milliseconds (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A response on the wire (the seed's `UnixSocketResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's type, echoed.
    #[serde(rename = "type", default)]
    pub kind: String,
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
    /// Metadata; `X-Error-Code` holds a failure's stable code.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub headers: HashMap<String, String>,
}

impl Response {
    /// The answer as a result: a failure keeps the kind its code names
    /// (`PLUGIN_1203` without one).
    pub fn into_result(self) -> Result<Value, Error> {
        answer_result(self.success, self.data, self.error, &self.headers)
    }
}

/// A response's outcome: its data, or its failure with the kind its
/// `X-Error-Code` names (`PLUGIN_1203` without one).
fn answer_result<D>(
    success: bool,
    data: D,
    error: Option<String>,
    headers: &HashMap<String, String>,
) -> Result<D, Error> {
    if success {
        return Ok(data);
    }
    let kind = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(ERROR_CODE_HEADER))
        .and_then(|(_, v)| ErrorKind::from_code(v))
        .unwrap_or(ErrorKind::ExecutionFailed);
    Err(Error::new(
        kind,
        error.unwrap_or_else(|| "the plugin reported a failure".into()),
    ))
}

/// A response as the client reads it: the id borrowed from the frame (it is
/// only looked up). The type is not used, but read as [`Response`] reads it,
/// so that both take the same frames (a type that is not UTF-8 is refused).
#[derive(Deserialize)]
struct ResponseIn<'a> {
    #[serde(rename = "type", default, borrow)]
    _kind: Cow<'a, str>,
    #[serde(borrow)]
    request_id: Cow<'a, str>,
    success: bool,
    /// Left as text: the waiter decides whether it is parsed.
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    headers: HashMap<String, String>,
}

/// A request as the server reads it: type and id borrowed from the frame.
#[derive(Deserialize)]
struct RequestIn<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    request_id: Cow<'a, str>,
    /// Left as text: the handler decides whether it is parsed.
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    timeout_ms: u64,
}

/// The wire form of a [`Response`] written from borrowed parts (the same
/// JSON as serializing the `Response` that [`Response::from_result`] builds).
#[derive(Serialize)]
struct ResponseOut<'a, D> {
    #[serde(rename = "type")]
    kind: &'a str,
    request_id: &'a str,
    success: bool,
    /// `null` for a failure.
    data: Option<&'a D>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<ErrorCodeHeader>,
}

struct ErrorCodeHeader(&'static str);

impl Serialize for ErrorCodeHeader {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(ERROR_CODE_HEADER, self.0)?;
        m.end()
    }
}

fn answer_out<'a, D: Serialize>(
    kind: &'a str,
    request_id: &'a str,
    r: &'a Result<D, Error>,
) -> ResponseOut<'a, D> {
    match r {
        Ok(data) => ResponseOut {
            kind,
            request_id,
            success: true,
            data: Some(data),
            error: None,
            headers: None,
        },
        Err(e) => ResponseOut {
            kind,
            request_id,
            success: false,
            data: None,
            error: Some(&e.message),
            headers: Some(ErrorCodeHeader(e.kind.code())),
        },
    }
}

/// The frame a server answers a call with: the request's type and id, and
/// the result (a failure carries its code in `X-Error-Code`).
pub fn encode_answer(
    kind: &str,
    request_id: &str,
    r: &Result<Value, Error>,
) -> Result<Vec<u8>, serde_json::Error> {
    encode_frame(&answer_out(kind, request_id, r))
}

/// Queue the answer to a call on `sink`: `false` where the sink is closed.
fn push_answer<D: Serialize>(
    sink: &FrameSink,
    kind: &str,
    request_id: &str,
    r: &Result<D, Error>,
) -> bool {
    match with_frame(&answer_out(kind, request_id, r), |f| sink.push(f)) {
        Ok(queued) => queued,
        Err(e) => {
            tracing::warn!("cannot encode a response: {e}");
            true
        }
    }
}

/// Decode a response frame as the client does: `f` gets the request id it
/// answers and its outcome (see [`Response::into_result`]). `false` for a
/// frame that is not a response.
pub fn decode_answer(body: &[u8], f: impl FnOnce(&str, Result<Value, Error>)) -> bool {
    let Ok(resp) = serde_json::from_slice::<ResponseIn>(body) else {
        return false;
    };
    // Data the parser will not take as a `Value` (nested too deep, a lone
    // surrogate) makes the frame malformed, as it does for
    // [`decode_response`]. (The client's own
    // reader fails the waiting call with why instead.)
    let data = match resp.data.map(Value::from_raw) {
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
        None => Value::Null,
    };
    f(
        &resp.request_id,
        answer_result(resp.success, data, resp.error, &resp.headers),
    );
    true
}

/// [`decode_answer`] with the data left as the frame's JSON text.
fn decode_answer_raw(body: &[u8], f: impl FnOnce(&str, Result<&RawValue, Error>)) -> bool {
    let Ok(resp) = serde_json::from_slice::<ResponseIn>(body) else {
        return false;
    };
    f(
        &resp.request_id,
        answer_result(
            resp.success,
            resp.data.unwrap_or(RawValue::NULL),
            resp.error,
            &resp.headers,
        ),
    );
    true
}

// ---------------------------------------------------------------- framing

/// Read one frame's body from `r`: `None` where the stream ends before a
/// whole length prefix, an error for a length above [`MAX_FRAME`] or a stream
/// that ends inside a frame's body. Both transports (unix, exec) and both sides read
/// with it; the fuzz target `plugin_frames` drives it with arbitrary bytes.
pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
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

/// Reads frames from a stream through a buffer of its own, handing out each
/// body as a slice of that buffer: one `read` takes in as many frames as
/// the stream has ready, and no frame is copied or allocated on its own.
/// Cancel-safe: a `next` dropped mid-read loses nothing (what was read stays
/// buffered). Same limits and errors as [`read_frame`]; the fuzz target
/// `plugin_frames` drives both.
pub struct FrameReader<R> {
    r: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// What a [`FrameReader`] keeps between frames (it grows for a bigger frame
/// and shrinks back once that frame is consumed).
const READ_BUF: usize = 64 << 10;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Read frames from `r`.
    pub fn new(r: R) -> FrameReader<R> {
        FrameReader {
            r,
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// The body of the next whole frame in the buffer: `(start, len)`.
    fn buffered(&self) -> std::io::Result<Option<(usize, usize)>> {
        let avail = &self.buf[self.start..self.end];
        let Some(len) = avail.first_chunk::<4>() else {
            return Ok(None);
        };
        let n = u32::from_be_bytes(*len) as usize;
        if n > MAX_FRAME {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame of {n} bytes exceeds {MAX_FRAME}"),
            ));
        }
        Ok((avail.len() - 4 >= n).then_some((self.start + 4, n)))
    }

    /// Whether a whole frame is already buffered (so [`FrameReader::next`]
    /// returns without a read).
    pub fn has_frame(&self) -> bool {
        matches!(self.buffered(), Ok(Some(_)))
    }

    /// The next frame's body: `None` where the stream ends between frames,
    /// an error for a length above [`MAX_FRAME`] or a stream that ends
    /// inside a frame.
    pub async fn next(&mut self) -> std::io::Result<Option<&[u8]>> {
        loop {
            if let Some((at, n)) = self.buffered()? {
                self.start = at + n;
                return Ok(Some(&self.buf[at..at + n]));
            }
            // Make room: move what is left to the front, and grow for a
            // frame bigger than the buffer (its length is known by now).
            let need = match self.buf[self.start..self.end].first_chunk::<4>() {
                Some(len) => 4 + u32::from_be_bytes(*len) as usize,
                None => 4,
            };
            // Only when frames were consumed: a big frame arriving in many
            // reads is not moved again after each one.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let want = need.max(READ_BUF);
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            } else if self.end == 0 && self.buf.len() > READ_BUF.max(need) {
                self.buf.truncate(READ_BUF);
                self.buf.shrink_to_fit();
            }
            let n = self.r.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return if self.end == 0 {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
            self.end += n;
        }
    }
}

/// Serialize `v` as one frame (length prefix patched in place, no copy).
pub fn encode_frame(v: &impl Serialize) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    write_frame(&mut out, v)?;
    Ok(out)
}

fn write_frame(out: &mut Vec<u8>, v: &impl Serialize) -> Result<(), serde_json::Error> {
    out.clear();
    out.extend_from_slice(&[0u8; 4]);
    serde_json::to_writer(&mut *out, v)?;
    let n = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&n.to_be_bytes());
    Ok(())
}

/// Encode `v` as one frame in this thread's scratch buffer and hand it to
/// `f` (which copies it out, into a [`FrameSink`]): no allocation per frame
/// once the buffer has grown to the usual size. A frame over a megabyte
/// does not stay.
fn with_frame<R>(v: &impl Serialize, f: impl FnOnce(&[u8]) -> R) -> Result<R, serde_json::Error> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            write_frame(&mut buf, v)?;
            let r = f(&buf);
            if buf.capacity() > SINK_KEEP {
                *buf = Vec::new();
            }
            Ok(r)
        }
        // Not reached (neither `f` nor a `Serialize` here encodes a frame),
        // but a nested use would get a buffer of its own.
        Err(_) => encode_frame(v).map(|fr| f(&fr)),
    })
}

/// The write side of a framed stream, shared by every task that calls or
/// answers on it. Frames are queued and written by whichever task holds the
/// writer role at the time (flat combining): concurrent frames leave in one
/// `write` without a hop through a writer task. Once closed (an I/O error, a
/// writer cancelled mid-write, or [`FrameSink::close`]) nothing more is
/// written and `on_close` is told.
pub(crate) struct FrameSink {
    queue: Mutex<Vec<u8>>,
    writing: AtomicBool,
    closed: AtomicBool,
    io: tokio::sync::Mutex<SinkIo>,
    on_close: Option<Arc<Pending>>,
}

/// The stream, and the buffer the writer swaps with the queue (both keep
/// their capacity, so a steady flow of frames allocates nothing).
struct SinkIo {
    w: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    spare: Vec<u8>,
}

/// What a sink's buffers keep between writes at most.
const SINK_KEEP: usize = 1 << 20;

struct WriterRole<'a> {
    sink: &'a FrameSink,
    done: bool,
}

impl Drop for WriterRole<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Cancelled or failed mid-write: the stream may hold half a
            // frame, so it cannot be used any more.
            self.sink.close();
        }
        self.sink.writing.store(false, Ordering::SeqCst);
    }
}

impl FrameSink {
    fn new(
        w: impl AsyncWrite + Send + Unpin + 'static,
        on_close: Option<Arc<Pending>>,
    ) -> FrameSink {
        FrameSink {
            queue: Mutex::new(Vec::with_capacity(16 << 10)),
            writing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            io: tokio::sync::Mutex::new(SinkIo {
                w: Some(Box::new(w)),
                spare: Vec::with_capacity(16 << 10),
            }),
            on_close,
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Queue a frame; `false` when the sink is closed.
    fn push(&self, frame: &[u8]) -> bool {
        if self.is_closed() {
            return false;
        }
        match self.queue.lock() {
            Ok(mut q) => {
                q.extend_from_slice(frame);
                true
            }
            Err(_) => false,
        }
    }

    fn queue_empty(&self) -> bool {
        self.queue.lock().map(|q| q.is_empty()).unwrap_or(true)
    }

    /// Write everything queued, unless another task is doing it (it will
    /// take our frames too).
    async fn flush(&self) -> std::io::Result<()> {
        loop {
            if self.is_closed() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "closed",
                ));
            }
            if self
                .writing
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                return Ok(());
            }
            let mut role = WriterRole {
                sink: self,
                done: false,
            };
            let mut io = self.io.lock().await;
            let SinkIo { w, spare } = &mut *io;
            loop {
                {
                    let Ok(mut q) = self.queue.lock() else { break };
                    if q.is_empty() {
                        break;
                    }
                    std::mem::swap(&mut *q, spare);
                }
                let Some(w) = w.as_mut() else {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotConnected,
                        "closed",
                    ));
                };
                w.write_all(spare).await?;
                w.flush().await?;
                spare.clear();
                if spare.capacity() > SINK_KEEP {
                    *spare = Vec::with_capacity(16 << 10);
                }
            }
            drop(io);
            role.done = true;
            drop(role);
            // A frame queued after our last look, by a task that saw us
            // writing, is ours to send.
            if self.queue_empty() {
                return Ok(());
            }
        }
    }

    /// Close now: queued frames are dropped, the stream is shut when the
    /// writer is free (at once if it is).
    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Ok(mut q) = self.queue.lock() {
            q.clear();
        }
        if let Some(p) = &self.on_close {
            p.fail_all();
        }
        if let Ok(mut g) = self.io.try_lock() {
            g.w.take();
        }
    }

    /// Close and make sure the stream is shut, waiting for a writer in progress.
    async fn close_wait(&self) {
        self.close();
        self.io.lock().await.w.take();
    }
}

/// Run `fut` right here if it completes without waiting (the common case of
/// a quick handler), else hand it to its own task, clearing `inline` first so
/// the future knows it must flush its own answer. Saves a task hop per call
/// without letting a slow call hold up the connection.
fn run_inline_or_spawn<F: Future<Output = ()> + Send + 'static>(fut: F, inline: &AtomicBool) {
    let mut fut = Box::pin(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if fut.as_mut().poll(&mut cx).is_pending() {
        inline.store(false, Ordering::SeqCst);
        // Polled once with a no-op waker; the task polls it again with its own.
        tokio::spawn(fut);
    }
}

/// Decode a frame's body as a [`Request`] (what a plugin server reads).
pub fn decode_request(body: &[u8]) -> Result<Request, serde_json::Error> {
    serde_json::from_slice(body)
}

/// Decode a frame's body as a [`Response`] (what a client reads).
pub fn decode_response(body: &[u8]) -> Result<Response, serde_json::Error> {
    serde_json::from_slice(body)
}

#[derive(Serialize)]
struct RequestRef<'a, D: ?Sized> {
    #[serde(rename = "type")]
    kind: &'a str,
    request_id: &'a str,
    data: &'a D,
    headers: WireHeaders<'a>,
    #[serde(skip_serializing_if = "is_zero")]
    timeout_ms: u64,
}

// ---------------------------------------------------------------- client mux

/// A call waiting for its answer, in the form it asked for.
pub(crate) enum Waiter {
    /// Parsed.
    Value(oneshot::Sender<Result<Value, Error>>),
    /// As JSON text.
    Raw(oneshot::Sender<Result<Box<RawValue>, Error>>),
}

impl Waiter {
    /// Whether its caller has gone.
    fn is_closed(&self) -> bool {
        match self {
            Waiter::Value(tx) => tx.is_closed(),
            Waiter::Raw(tx) => tx.is_closed(),
        }
    }

    fn send(self, answer: Result<&RawValue, Error>) {
        match self {
            Waiter::Value(tx) => {
                let _ = tx.send(answer.and_then(Value::from_raw));
            }
            Waiter::Raw(tx) => {
                let _ = tx.send(answer.map(RawValue::to_owned));
            }
        }
    }
}

/// A call waiting for its answer, until its deadline.
struct Waiting {
    waiter: Waiter,
    /// When the connection's sweeper answers it with a timeout (none:
    /// never).
    deadline: Option<tokio::time::Instant>,
    /// What the call was given, for that answer.
    timeout: Duration,
}

/// The calls of a connection waiting for answers, and the deadline its
/// sweeper sleeps until.
#[derive(Default)]
struct Calls {
    waiting: HashMap<String, Waiting>,
    /// The earliest deadline the sweeper knows of (none: it waits for a
    /// call). Only ever moved earlier by a caller, under the lock, so a
    /// deadline is never missed.
    next: Option<tokio::time::Instant>,
}

struct Pending {
    map: Mutex<Calls>,
    alive: AtomicBool,
    /// Wakes the sweeper for a deadline earlier than the one it sleeps to.
    sweep: tokio::sync::Notify,
}

impl Pending {
    fn fail_all(&self) {
        self.alive.store(false, Ordering::SeqCst);
        if let Ok(mut m) = self.map.lock() {
            m.waiting.clear();
        }
    }

    /// Answer every call past its deadline with a timeout, and set the next
    /// deadline to sleep until.
    fn expire(&self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        let mut late = Vec::new();
        let next = {
            let Ok(mut m) = self.map.lock() else {
                return None;
            };
            let ids: Vec<String> = m
                .waiting
                .iter()
                .filter(|(_, w)| w.deadline.is_some_and(|d| d <= now))
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                late.extend(m.waiting.remove(&id));
            }
            m.next = m.waiting.values().filter_map(|w| w.deadline).min();
            m.next
        };
        for w in late {
            w.waiter.send(Err(Error::new(
                ErrorKind::Timeout,
                format!("no answer within {:?}", w.timeout),
            )));
        }
        next
    }

    /// Time out the calls of this connection: one timer for all of them,
    /// set to the earliest deadline, rather than one per call.
    async fn sweep(self: Arc<Pending>) {
        loop {
            let woken = self.sweep.notified();
            let next = match self.map.lock() {
                Ok(m) => m.next,
                Err(_) => return,
            };
            match next {
                // Woken for an earlier deadline: sleep until it. Only a
                // deadline reached sends the sweeper through the calls, so
                // calls answered in time cost it nothing.
                None => {
                    woken.await;
                    continue;
                }
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(d) => {}
                        _ = woken => continue,
                    }
                }
            }
            self.expire(tokio::time::Instant::now());
        }
    }
}

/// Fails a connection's calls when dropped: a reader or sweeper task that
/// ends, however it ends, leaves no caller waiting.
struct FailAllOnDrop(Arc<Pending>);

impl Drop for FailAllOnDrop {
    fn drop(&mut self) {
        self.0.fail_all();
    }
}

/// One framed connection carrying many concurrent calls (Unix socket, or a
/// child's stdin/stdout for exec).
pub(crate) struct Mux {
    writer: Arc<FrameSink>,
    pending: Arc<Pending>,
    inflight: AtomicUsize,
    tasks: Vec<tokio::task::AbortHandle>,
    err: ErrorKind,
    seq: AtomicU64,
}

impl Drop for Mux {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.pending.fail_all();
        close_sink(&self.writer);
    }
}

/// Close a sink and make sure its stream is shut even if a writer holds it.
fn close_sink(sink: &Arc<FrameSink>) {
    sink.close();
    let s = Arc::clone(sink);
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        h.spawn(async move { s.close_wait().await });
    }
}

struct InflightGuard<'a>(&'a AtomicUsize);
impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Mux {
    pub(crate) fn new<R, W>(r: R, w: W, err: ErrorKind) -> Mux
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let pending = Arc::new(Pending {
            map: Mutex::new(Calls::default()),
            alive: AtomicBool::new(true),
            sweep: tokio::sync::Notify::new(),
        });
        let writer = Arc::new(FrameSink::new(w, Some(Arc::clone(&pending))));
        let p = Arc::clone(&pending);
        let reader = tokio::spawn(async move {
            // However the task ends (the stream closed, or its runtime shut
            // down under it), every waiter learns it (its sender is dropped)
            // and the connection counts as gone.
            let _fail = FailAllOnDrop(Arc::clone(&p));
            let mut r = FrameReader::new(r);
            while let Ok(Some(body)) = r.next().await {
                let ok = decode_answer_raw(body, |id, answer| {
                    let waiting = p.map.lock().ok().and_then(|mut m| m.waiting.remove(id));
                    if let Some(w) = waiting {
                        w.waiter.send(answer);
                    }
                });
                if !ok {
                    tracing::warn!("plugin sent a malformed response; ignored");
                }
            }
        });
        let sweeper = tokio::spawn({
            let p = Arc::clone(&pending);
            async move {
                // Without it no call would time out: the same as the reader.
                let _fail = FailAllOnDrop(Arc::clone(&p));
                p.sweep().await;
            }
        });
        Mux {
            writer,
            pending,
            inflight: AtomicUsize::new(0),
            tasks: vec![reader.abort_handle(), sweeper.abort_handle()],
            err,
            seq: AtomicU64::new(1),
        }
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.pending.alive.load(Ordering::SeqCst) && !self.writer.is_closed()
    }

    pub(crate) fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Close the connection now: waiters fail, later calls fail.
    pub(crate) fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
        self.pending.fail_all();
        close_sink(&self.writer);
    }

    pub(crate) async fn call<D: Serialize + ?Sized, A: Payload>(
        &self,
        kind: CallKind,
        data: &D,
        ctx: &CallContext,
        extra_headers: &[(String, String)],
        timeout: Duration,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<A, Error> {
        if !self.is_alive() {
            return Err(Error::new(self.err, "the connection is closed"));
        }
        let (done, wait) = oneshot::channel();
        let done = A::waiter(done);
        let mut id = if ctx.request_id.is_empty() {
            format!("r{}", self.seq.fetch_add(1, Ordering::Relaxed))
        } else {
            ctx.request_id.clone()
        };
        // The whole call, sending included, ends at `deadline` (the
        // caller's, counted from before it waited for a connection): a
        // plugin that stops reading must not hold its caller past it (the
        // manager adds no timer of its own over this transport). The wait
        // for the answer is timed by the connection's sweeper.
        let mut suffixed = false;
        let earlier = {
            let mut m = self
                .pending
                .map
                .lock()
                .map_err(|_| Error::new(self.err, "connection state poisoned"))?;
            if m.waiting.contains_key(&id) {
                // The same request id twice at once on one connection (a
                // retry racing its first attempt): keep them apart.
                id = format!("{id}#{}", self.seq.fetch_add(1, Ordering::Relaxed));
                suffixed = true;
            }
            m.waiting.insert(
                id.clone(),
                Waiting {
                    waiter: done,
                    deadline,
                    timeout,
                },
            );
            let earlier = deadline.is_some_and(|d| m.next.is_none_or(|n| d < n));
            if earlier {
                m.next = deadline;
            }
            earlier
        };
        if earlier {
            self.pending.sweep.notify_one();
        }
        if !self.is_alive() {
            self.forget(&id);
            return Err(Error::new(self.err, "the connection is closed"));
        }
        self.inflight.fetch_add(1, Ordering::Relaxed);
        let _g = InflightGuard(&self.inflight);
        let req = RequestRef {
            kind: kind.as_str(),
            request_id: &id,
            data,
            headers: WireHeaders {
                call: &ctx.headers,
                trace: ctx.trace,
                extra: extra_headers,
                // A suffixed id still tells the plugin the caller's.
                request_id: suffixed.then_some(ctx.request_id.as_str()),
            },
            timeout_ms: timeout.as_millis().min(u128::from(u64::MAX)) as u64,
        };
        let queued = with_frame(&req, |frame| {
            let n = frame.len() - 4;
            (n <= MAX_FRAME).then(|| self.writer.push(frame)).ok_or(n)
        });
        let refused = match queued {
            Ok(Ok(true)) => None,
            Ok(Ok(false)) => Some(Error::new(self.err, "the connection broke while sending")),
            Ok(Err(n)) => Some(Error::new(
                ErrorKind::ExecutionFailed,
                format!("request of {n} bytes exceeds {MAX_FRAME}"),
            )),
            Err(e) => Some(Error::new(
                ErrorKind::ExecutionFailed,
                format!("cannot encode the request: {e}"),
            )),
        };
        if let Some(e) = refused {
            self.forget(&id);
            return Err(e);
        }
        let timed_out = || Error::new(ErrorKind::Timeout, format!("no answer within {timeout:?}"));
        let flushed = crate::transport::within(|| deadline, self.writer.flush()).await;
        match flushed {
            Err(_) => {
                // A write cut short closes the connection (see `WriterRole`).
                self.forget(&id);
                return Err(timed_out());
            }
            Ok(Err(_)) => {
                self.forget(&id);
                self.pending.fail_all();
                return Err(Error::new(self.err, "the connection broke while sending"));
            }
            Ok(Ok(())) => {}
        }
        // Answered by the reader, timed out by the sweeper, or dropped with
        // the connection; a caller that gives up takes its entry with it.
        struct Forget<'a, T> {
            mux: &'a Mux,
            id: &'a str,
            wait: Option<oneshot::Receiver<T>>,
        }
        impl<T> Drop for Forget<'_, T> {
            fn drop(&mut self) {
                if self.wait.take().is_some() {
                    // Our receiver is gone now, so only our own entry (not
                    // a later call's under the same id) shows as closed.
                    self.mux.forget_closed(self.id);
                }
            }
        }
        let mut forget = Forget {
            mux: self,
            id: &id,
            wait: Some(wait),
        };
        let answer = match forget.wait.as_mut() {
            Some(w) => w.await,
            None => return Err(Error::new(self.err, "the connection closed mid-call")),
        };
        forget.wait = None;
        match answer {
            Err(_) => Err(Error::new(self.err, "the connection closed mid-call")),
            Ok(answer) => answer,
        }
    }

    fn forget(&self, id: &str) {
        if let Ok(mut m) = self.pending.map.lock() {
            m.waiting.remove(id);
        }
    }

    /// [`Mux::forget`] for a caller that gave up: its entry, if its
    /// receiver is gone.
    fn forget_closed(&self, id: &str) {
        if let Ok(mut m) = self.pending.map.lock() {
            if m.waiting.get(id).is_some_and(|w| w.waiter.is_closed()) {
                m.waiting.remove(id);
            }
        }
    }
}

// ---------------------------------------------------------------- client

/// How to reach a Unix-socket plugin.
#[derive(Debug, Clone)]
pub struct UnixOptions {
    /// The socket's path (the seed's `endpoint` for `unix`).
    pub path: PathBuf,
    /// Connections in the pool (the seed's `connection.max_connections`);
    /// each carries many concurrent calls. At least 1.
    pub max_connections: usize,
    /// How long to wait for a connection (`connection.connection_timeout`).
    pub connect_timeout: Duration,
    /// Deadline of a call whose context has none (`connection.request_timeout`).
    pub request_timeout: Duration,
    /// Credentials sent in every message's headers (`api-key`, `bearer`,
    /// `basic`, `custom`; `mtls` does not apply to a local socket).
    pub auth: AuthConfig,
}

impl UnixOptions {
    /// Defaults for a socket path: 4 connections, 5 s to connect, 30 s per call,
    /// no auth.
    pub fn new(path: impl Into<PathBuf>) -> UnixOptions {
        UnixOptions {
            path: path.into(),
            max_connections: 4,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            auth: AuthConfig::default(),
        }
    }
}

struct Slot {
    cur: Mutex<Option<Arc<Mux>>>,
    connecting: tokio::sync::Mutex<()>,
}

struct UnixInner {
    opts: UnixOptions,
    auth_headers: Vec<(String, String)>,
    slots: Vec<Slot>,
    next: AtomicUsize,
    closed: AtomicBool,
}

/// A pool of connections to a plugin's Unix socket, shared by concurrent
/// callers (cheap to clone). A call goes to the live connection with the
/// fewest calls in flight; a new connection is opened (up to
/// `max_connections`) when every live one is busy, and a broken one is
/// replaced on the next call.
#[derive(Clone)]
pub struct UnixClient {
    inner: Arc<UnixInner>,
}

impl std::fmt::Debug for UnixClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixClient")
            .field("path", &self.inner.opts.path)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

fn closed_err(kind: ErrorKind) -> Error {
    Error::new(kind, "the transport is closed").with_hint("create a new client")
}

impl UnixClient {
    /// Connect to the socket at `path` with [`UnixOptions::new`] defaults.
    pub async fn connect(path: &Path) -> Result<UnixClient, Error> {
        UnixClient::connect_with(UnixOptions::new(path)).await
    }

    /// Build the pool and open its first connection (so a wrong path fails
    /// here, with `PLUGIN_1205`).
    pub async fn connect_with(opts: UnixOptions) -> Result<UnixClient, Error> {
        let c = UnixClient::new(opts)?;
        c.slot_conn(0).await?;
        Ok(c)
    }

    /// Build the pool without connecting: the first call connects (a plugin
    /// that is not up yet fails that call with `PLUGIN_1205`, retryable).
    /// Refuses invalid auth with its `AUTH_11xx` code.
    pub fn new(opts: UnixOptions) -> Result<UnixClient, Error> {
        if let Err(mut errs) = opts.auth.validate() {
            return Err(errs.remove(0));
        }
        if opts.path.as_os_str().is_empty() {
            return Err(
                Error::new(ErrorKind::MissingSocketPath, "no socket path given")
                    .with_hint("set the endpoint to the plugin's socket path"),
            );
        }
        let n = opts.max_connections.max(1);
        let slots = (0..n)
            .map(|_| Slot {
                cur: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            })
            .collect();
        Ok(UnixClient {
            inner: Arc::new(UnixInner {
                auth_headers: opts.auth.header_pairs(),
                opts,
                slots,
                next: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.inner.opts.path
    }

    /// Live connections in the pool.
    pub fn connections(&self) -> usize {
        self.inner
            .slots
            .iter()
            .filter(|s| {
                s.cur
                    .lock()
                    .ok()
                    .and_then(|g| g.as_ref().map(|m| m.is_alive()))
                    .unwrap_or(false)
            })
            .count()
    }

    async fn slot_conn(&self, i: usize) -> Result<Arc<Mux>, Error> {
        let slot = &self.inner.slots[i];
        let _g = slot.connecting.lock().await;
        if let Some(m) = slot.cur.lock().ok().and_then(|g| g.clone()) {
            if m.is_alive() {
                return Ok(m);
            }
        }
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(closed_err(ErrorKind::UnixTransport));
        }
        let path = &self.inner.opts.path;
        let stream =
            tokio::time::timeout(self.inner.opts.connect_timeout, UnixStream::connect(path))
                .await
                .map_err(|_| {
                    Error::new(
                        ErrorKind::ConnectionFailed,
                        format!(
                            "no connection to {} within {:?}",
                            path.display(),
                            self.inner.opts.connect_timeout
                        ),
                    )
                })?
                .map_err(|e| {
                    Error::new(
                        ErrorKind::ConnectionFailed,
                        format!("cannot connect to {}: {e}", path.display()),
                    )
                    .with_hint("is the plugin running and listening on that socket?")
                })?;
        let (r, w) = stream.into_split();
        let m = Arc::new(Mux::new(r, w, ErrorKind::UnixTransport));
        if let Ok(mut g) = slot.cur.lock() {
            *g = Some(Arc::clone(&m));
        }
        if self.inner.closed.load(Ordering::SeqCst) {
            m.shutdown();
            return Err(closed_err(ErrorKind::UnixTransport));
        }
        Ok(m)
    }

    async fn pick(&self) -> Result<Arc<Mux>, Error> {
        let n = self.inner.slots.len();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<Arc<Mux>> = None;
        let mut empty: Option<usize> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let cur = self.inner.slots[i].cur.lock().ok().and_then(|g| g.clone());
            match cur {
                Some(m) if m.is_alive() => {
                    if m.inflight() == 0 {
                        return Ok(m);
                    }
                    if best.as_ref().is_none_or(|b| m.inflight() < b.inflight()) {
                        best = Some(m);
                    }
                }
                _ => {
                    if empty.is_none() {
                        empty = Some(i);
                    }
                }
            }
        }
        match (best, empty) {
            // Every live connection is busy: open another while we may.
            // (A plugin that takes fewer connections than our pool size
            // still gets the calls on the ones it has.)
            // (Connecting is boxed: it is rare, and its future kept inline
            // would grow every call's by half.)
            (best, Some(i)) => match Box::pin(self.slot_conn(i)).await {
                Ok(m) => Ok(m),
                Err(e) => best.ok_or(e),
            },
            (Some(b), None) => Ok(b),
            (None, None) => Box::pin(self.slot_conn(start % n)).await,
        }
    }

    /// Send one call and wait for its answer, at most `ctx.timeout` (the
    /// options' `request_timeout` when zero).
    pub async fn call(
        &self,
        kind: CallKind,
        data: impl std::borrow::Borrow<Value>,
        ctx: CallContext,
    ) -> Result<Value, Error> {
        self.call_any(kind, data.borrow(), ctx).await
    }

    /// [`UnixClient::call`] with the payload and the answer as JSON text
    /// (see [`Transport::call_raw`]).
    pub async fn call_raw(
        &self,
        kind: CallKind,
        data: &RawValue,
        ctx: CallContext,
    ) -> Result<Box<RawValue>, Error> {
        self.call_any(kind, data, ctx).await
    }

    async fn call_any<D: Serialize + ?Sized, A: Payload>(
        &self,
        kind: CallKind,
        data: &D,
        ctx: CallContext,
    ) -> Result<A, Error> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(closed_err(ErrorKind::UnixTransport));
        }
        let timeout = if ctx.timeout.is_zero() {
            self.inner.opts.request_timeout
        } else {
            ctx.timeout
        };
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let m = crate::transport::within(|| deadline, self.pick())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!("no connection within {timeout:?}"),
                )
            })??;
        m.call(
            kind,
            data,
            &ctx,
            &self.inner.auth_headers,
            timeout,
            deadline,
        )
        .await
    }

    /// Close every connection. Idempotent; calls in flight and later calls
    /// fail with `TRANSPORT_1303`.
    pub fn close_now(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        for s in &self.inner.slots {
            if let Some(m) = s.cur.lock().ok().and_then(|mut g| g.take()) {
                m.shutdown();
            }
        }
    }
}

impl Transport for UnixClient {
    fn kind(&self) -> &'static str {
        TransportKind::Unix.as_str()
    }

    fn call(
        &self,
        kind: CallKind,
        data: Value,
        ctx: CallContext,
    ) -> BoxFuture<'_, Result<Value, Error>> {
        Box::pin(UnixClient::call(self, kind, data, ctx))
    }

    fn ends_at_timeout(&self) -> bool {
        true
    }

    fn call_shared(
        &self,
        kind: CallKind,
        data: Arc<Value>,
        ctx: CallContext,
    ) -> BoxFuture<'_, Result<Value, Error>> {
        Box::pin(UnixClient::call(self, kind, data, ctx))
    }

    fn call_raw<'a>(
        &'a self,
        kind: CallKind,
        data: &'a RawValue,
        ctx: CallContext,
    ) -> BoxFuture<'a, Result<Box<RawValue>, Error>> {
        Box::pin(UnixClient::call_raw(self, kind, data, ctx))
    }

    fn writes_trace(&self) -> bool {
        true
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.close_now();
        Box::pin(async {})
    }
}

// ---------------------------------------------------------------- server

/// Serve `handler` on a Unix socket at `path` (replacing a stale socket file)
/// without auth. Each connection is served on its own task; calls on one
/// connection run concurrently. Dropping or shutting down the returned
/// [`Server`] closes every connection and removes the socket file.
pub async fn serve<H: Handler>(path: &Path, handler: Arc<H>) -> std::io::Result<Server> {
    serve_with(path, handler, ServerAuth::none()).await
}

/// [`serve`], checking every call's headers with `auth` (a refusal answers
/// with its `AUTH_11xx` code).
pub async fn serve_with<H: Handler>(
    path: &Path,
    handler: Arc<H>,
    auth: ServerAuth,
) -> std::io::Result<Server> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    let (stop_tx, stop) = watch::channel(false);
    let auth = Arc::new(auth);
    let path = path.to_path_buf();
    let task = tokio::spawn(async move {
        let accept = async {
            while let Ok((stream, _)) = listener.accept().await {
                let (r, w) = stream.into_split();
                tokio::spawn(serve_stream(
                    r,
                    w,
                    Arc::clone(&handler),
                    Arc::clone(&auth),
                    stop.clone(),
                ));
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = stopped(stop.clone()) => {}
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(Server::new(stop_tx, task, None))
}

/// Serve framed calls read from `r`, answering on `w`, until EOF or `stop`.
/// Calls on one stream run concurrently; answers go out as they are ready.
pub(crate) async fn serve_stream<R, W, H>(
    r: R,
    w: W,
    handler: Arc<H>,
    auth: Arc<ServerAuth>,
    stop: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let sink = Arc::new(FrameSink::new(w, None));
    let read = async {
        let mut r = FrameReader::new(r);
        while let Ok(Some(body)) = r.next().await {
            let decoded = if H::RAW {
                decode_call_as::<Box<RawValue>>(body).map(|c| serve_call(&handler, &auth, &sink, c))
            } else {
                decode_call_as::<Value>(body).map(|c| serve_call(&handler, &auth, &sink, c))
            };
            match decoded {
                Ok(()) => {}
                // Malformed, or of an unknown type: answered at once.
                Err(bad) => {
                    let BadRequest {
                        kind,
                        request_id,
                        error,
                    } = *bad;
                    push_answer::<Value>(&sink, &kind, &request_id, &Err(error));
                }
            }
            if !r.has_frame() && sink.flush().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = read => {}
        _ = stopped(stop) => {
            // Stopped: the stream closes now, calls in flight or not.
            sink.close_wait().await;
        }
    }
}

/// Run one decoded call: inline while it does not wait, else on its own task.
fn serve_call<H: Handler, D: Served>(
    handler: &Arc<H>,
    auth: &Arc<ServerAuth>,
    sink: &Arc<FrameSink>,
    call: Call<D>,
) {
    let (handler, auth, sink) = (Arc::clone(handler), Arc::clone(auth), Arc::clone(sink));
    let inline = Arc::new(AtomicBool::new(true));
    let inl = Arc::clone(&inline);
    run_inline_or_spawn(
        async move {
            let kind = call.kind;
            let id = call.request_id.clone();
            let r = match auth.check(&call.headers) {
                Ok(()) => D::answer(&*handler, call).await,
                Err(e) => Err(e),
            };
            // Inline answers are flushed by the reader once it has no whole
            // frame left (one write for a batch); a spawned one flushes itself.
            if push_answer(&sink, kind.as_str(), &id, &r) && !inl.load(Ordering::SeqCst) {
                let _ = sink.flush().await;
            }
        },
        &inline,
    );
}

/// A request frame the server cannot take, and what to answer it with.
#[derive(Debug)]
pub struct BadRequest {
    /// The request's type as sent (empty where unreadable).
    pub kind: String,
    /// The request's id (empty where unreadable).
    pub request_id: String,
    /// Why it is refused (`PLUGIN_1203`).
    pub error: Error,
}

/// Decode a request frame as the server does: its kind and the [`Call`]
/// (deadline counted from now), or what to answer a malformed one with.
pub fn decode_call(body: &[u8]) -> Result<(CallKind, Call), Box<BadRequest>> {
    decode_call_as(body).map(|c: Call| (c.kind, c))
}

/// [`decode_call`] with the payload in the form the handler takes.
fn decode_call_as<D: Payload>(body: &[u8]) -> Result<Call<D>, Box<BadRequest>> {
    let malformed = |e: &dyn std::fmt::Display| {
        Box::new(BadRequest {
            kind: String::new(),
            request_id: String::new(),
            error: Error::new(
                ErrorKind::ExecutionFailed,
                format!("malformed request: {e}"),
            ),
        })
    };
    let req = serde_json::from_slice::<RequestIn>(body).map_err(|e| malformed(&e))?;
    // Data the parser will not take as a `Value` (nested too deep, a lone
    // surrogate; [`decode_request`] refuses the whole frame) is answered,
    // by id, with why.
    let data = match req.data {
        Some(d) => D::from_raw(d).map_err(|error| {
            Box::new(BadRequest {
                kind: req.kind.to_string(),
                request_id: req.request_id.to_string(),
                error,
            })
        })?,
        None => D::null(),
    };
    let Some(kind) = CallKind::parse(&req.kind) else {
        let msg = format!("unknown request type {:?}", req.kind);
        return Err(Box::new(BadRequest {
            kind: req.kind.into_owned(),
            request_id: req.request_id.into_owned(),
            error: Error::new(ErrorKind::ExecutionFailed, msg),
        }));
    };
    Ok(Call {
        kind,
        request_id: req.request_id.into_owned(),
        headers: req.headers,
        deadline: Call::deadline_in(req.timeout_ms),
        data,
    })
}
