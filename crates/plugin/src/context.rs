//! Per-call context: [`ExecutionContext`] (the seed's request id, timeout, max
//! retries, headers and metadata, plus a cancellation token) and W3C trace
//! context ([`TraceContext`], the `traceparent` header) propagated to plugins.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The header carrying trace context to plugins.
pub const TRACEPARENT: &str = "traceparent";
/// The header carrying the request id to plugins.
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
    format!(
        "req-{:08x}-{}",
        fastrand::u32(..),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
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
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
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
