//! Per-call context: [`ExecutionContext`] (the seed's request id, timeout, max
//! retries, headers and metadata, plus a cancellation token) and W3C trace
//! context ([`TraceContext`], the `traceparent` header) propagated to plugins.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::transport::CallContext;

/// The header carrying trace context to plugins.
pub const TRACEPARENT: &str = "traceparent";
/// Length of a version-00 `traceparent` value.
pub(crate) const TRACEPARENT_LEN: usize = 55;
/// The HTTP header and gRPC metadata key carrying the request id. Every
/// transport's envelope carries it as `request_id` too (the plugin's
/// `Call::request_id`), so it is not added to a call's header map; the one
/// exception is a Unix or exec connection with the same id in flight twice,
/// whose second call goes out as `id#n` with the caller's id in this header.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Context of one call (seed `ExecutionContext`).
#[derive(Debug, Clone, Default)]
pub struct ExecutionContext {
    /// Correlates the call end to end; generated when empty.
    pub request_id: String,
    /// Deadline for the whole call, retries included; `None`: the plugin's
    /// `request_timeout × (max_retries + 1)`.
    pub timeout: Option<Duration>,
    /// Overrides the plugin's `retry.max_retries`.
    pub max_retries: Option<u32>,
    /// Sent to the plugin (trace context is added).
    pub headers: HashMap<String, String>,
    /// Kept with the call (logs, spans), not sent.
    pub metadata: HashMap<String, String>,
    /// Cancelling it ends the call at once (`PLUGIN_1204`, "cancelled by the
    /// caller"); dropping the call's future does too.
    pub cancel: CancellationToken,
}

impl ExecutionContext {
    /// A context with a fresh request id.
    pub fn new() -> ExecutionContext {
        ExecutionContext {
            request_id: new_request_id(),
            ..ExecutionContext::default()
        }
    }

    /// Set the overall deadline.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
}

static SEQ: AtomicU64 = AtomicU64::new(1);

/// A request id unique in this process and unlikely to collide across them.
pub fn new_request_id() -> String {
    let mut s = String::with_capacity(4 + 8 + 1 + 20);
    s.push_str("req-");
    push_hex(&mut s, u128::from(fastrand::u32(..)), 8);
    s.push('-');
    let mut n = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.extend(digits[at..].iter().map(|&d| char::from(d)));
    s
}

/// Append the low `width` hex digits of `v` (lower case, zero padded): what
/// `{:0width$x}` writes, without `core::fmt`, which costs ten times as much
/// here and runs on every call.
fn push_hex(s: &mut String, v: u128, width: u32) {
    let mut buf = [0u8; 32];
    let out = hex_into(&mut buf, v, width);
    s.push_str(out);
}

/// The low `width` (at most 32) hex digits of `v` in `buf`, as text.
fn hex_into(buf: &mut [u8; 32], v: u128, width: u32) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let width = width.min(32) as usize;
    for (i, b) in buf[..width].iter_mut().enumerate() {
        *b = HEX[((v >> (4 * (width - 1 - i))) & 0xf) as usize];
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(&buf[..width]).unwrap_or_default()
}

/// Displays an id as zero-padded lower-case hex of `width` digits, formatted
/// only when shown (a span field that no subscriber records costs nothing).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hex {
    /// The id.
    pub(crate) v: u128,
    /// Digits.
    pub(crate) width: u32,
}

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(hex_into(&mut [0u8; 32], self.v, self.width))
    }
}

/// W3C trace context (`traceparent: 00-<trace id>-<span id>-<flags>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes, not all zero.
    pub trace_id: u128,
    /// 8 bytes, not all zero: the caller's span.
    pub span_id: u64,
    /// Sampled flag and others.
    pub flags: u8,
}

fn nonzero_u64() -> u64 {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

impl TraceContext {
    /// A new trace (sampled).
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: (u128::from(nonzero_u64()) << 64) | u128::from(fastrand::u64(..)),
            span_id: nonzero_u64(),
            flags: 1,
        }
    }

    /// Parse a `traceparent` header (version 00); `None` when malformed.
    pub fn parse(h: &str) -> Option<TraceContext> {
        let parts: Vec<&str> = h.trim().split('-').collect();
        if parts.len() != 4 || parts[0] != "00" {
            return None;
        }
        if parts[1].len() != 32 || parts[2].len() != 16 || parts[3].len() != 2 {
            return None;
        }
        // Hex digits only: `from_str_radix` also takes a leading `+`.
        if !parts[1..]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return None;
        }
        let trace_id = u128::from_str_radix(parts[1], 16).ok()?;
        let span_id = u64::from_str_radix(parts[2], 16).ok()?;
        let flags = u8::from_str_radix(parts[3], 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The same trace, a new span (the call's, as parent of the plugin's work).
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: nonzero_u64(),
            ..*self
        }
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        self.header_in(&mut [0u8; TRACEPARENT_LEN]).to_string()
    }

    /// The header value, written into `buf` (no allocation).
    pub(crate) fn header_in<'b>(&self, buf: &'b mut [u8; TRACEPARENT_LEN]) -> &'b str {
        let mut hex = [0u8; 32];
        buf[..3].copy_from_slice(b"00-");
        buf[3..35].copy_from_slice(hex_into(&mut hex, self.trace_id, 32).as_bytes());
        buf[35] = b'-';
        buf[36..52].copy_from_slice(hex_into(&mut hex, u128::from(self.span_id), 16).as_bytes());
        buf[52] = b'-';
        buf[53..55].copy_from_slice(hex_into(&mut hex, u128::from(self.flags), 2).as_bytes());
        // Only ASCII was written.
        std::str::from_utf8(buf).unwrap_or_default()
    }

    /// The trace context of a call about to go out, set as its
    /// `ctx.trace`: a child of the caller's (`ctx.trace`, else a
    /// `traceparent` among its headers, which is taken out of the map), or a
    /// new trace.
    pub fn start_call(ctx: &mut CallContext) -> TraceContext {
        let parent = ctx.trace.or_else(|| {
            let key = ctx
                .headers
                .keys()
                .find(|k| k.eq_ignore_ascii_case(TRACEPARENT))?
                .clone();
            ctx.headers
                .remove(&key)
                .and_then(|v| TraceContext::parse(&v))
        });
        let tc = parent.map_or_else(TraceContext::new_root, |p| p.child());
        ctx.trace = Some(tc);
        tc
    }

    /// From the headers' `traceparent` (a child of it), or a new root; the
    /// result is written back into `headers`.
    pub fn propagate(headers: &mut HashMap<String, String>) -> TraceContext {
        let tc = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT))
            .and_then(|(_, v)| TraceContext::parse(v))
            .map(|t| t.child())
            .unwrap_or_else(TraceContext::new_root);
        headers.retain(|k, _| !k.eq_ignore_ascii_case(TRACEPARENT));
        headers.insert(TRACEPARENT.to_string(), tc.to_header());
        tc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_continues_the_callers_trace_and_sends_it_once() {
        let parent = TraceContext::new_root();
        let mut ctx = CallContext {
            headers: HashMap::from([
                ("TraceParent".to_string(), parent.to_header()),
                ("x-a".to_string(), "1".to_string()),
            ]),
            ..CallContext::default()
        };
        let tc = TraceContext::start_call(&mut ctx);
        assert_eq!(tc.trace_id, parent.trace_id);
        assert_ne!(tc.span_id, parent.span_id);
        assert_eq!(ctx.trace, Some(tc));
        assert!(!ctx
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case(TRACEPARENT)));
        // A map that still holds one (set after) loses it to the typed one.
        ctx.headers
            .insert("traceparent".into(), TraceContext::new_root().to_header());
        let wire = serde_json::to_value(crate::transport::WireHeaders::of(&ctx)).unwrap();
        assert_eq!(wire["traceparent"], tc.to_header());
        assert_eq!(wire["x-a"], "1");
        assert_eq!(wire.as_object().map(|o| o.len()), Some(2));
        // None given: a new trace.
        let mut fresh = CallContext::default();
        let root = TraceContext::start_call(&mut fresh);
        assert_ne!(root.trace_id, parent.trace_id);
        assert_eq!(TraceContext::parse(&root.to_header()), Some(root));
    }

    #[test]
    fn hex_and_request_ids_match_what_fmt_writes() {
        for v in [0u128, 1, 0xabc, u128::from(u64::MAX), u128::MAX] {
            let mut s = String::new();
            push_hex(&mut s, v, 32);
            assert_eq!(s, format!("{v:032x}"));
            assert_eq!(Hex { v, width: 32 }.to_string(), s);
        }
        let mut s = String::new();
        push_hex(&mut s, 0x1f, 2);
        assert_eq!(s, "1f");
        let t = TraceContext {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0xf067aa0ba902b7,
            flags: 1,
        };
        assert_eq!(
            t.to_header(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        for id in [a, b] {
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(parts.len(), 3, "{id}");
            assert_eq!(parts[0], "req");
            assert_eq!(parts[1].len(), 8, "{id}");
            assert!(parts[1].bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
            let n: u64 = parts[2].parse().expect("a decimal sequence number");
            assert_eq!(parts[2], n.to_string(), "{id}");
        }
    }

    #[test]
    fn traceparent_round_trips_and_children_keep_the_trace() {
        let t = TraceContext::new_root();
        let h = t.to_header();
        assert_eq!(h.len(), 55);
        assert_eq!(TraceContext::parse(&h), Some(t));
        let c = t.child();
        assert_eq!(c.trace_id, t.trace_id);
        assert_ne!(c.span_id, t.span_id);
        assert!(TraceContext::parse("00-0000-00-01").is_none());
        assert!(
            TraceContext::parse("00-00000000000000000000000000000000-0000000000000001-01")
                .is_none()
        );
        let mut hs = HashMap::from([("TraceParent".to_string(), h)]);
        let p = TraceContext::propagate(&mut hs);
        assert_eq!(p.trace_id, t.trace_id);
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[TRACEPARENT], p.to_header());
    }

    /// Found with the fuzz target `plugin_frames` (a parsed `traceparent`
    /// must write back as read): a `+` in place of a hex digit was taken as
    /// a sign, so a malformed header became a different trace.
    #[test]
    fn traceparent_with_a_sign_is_malformed() {
        for h in [
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
        ] {
            assert_eq!(TraceContext::parse(h), None, "{h}");
        }
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            TraceContext::parse(ok).map(|t| t.to_header()).as_deref(),
            Some(ok)
        );
    }
}
