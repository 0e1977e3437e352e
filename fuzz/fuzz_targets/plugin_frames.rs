//! The plugin wire (the unix and exec transports share it): 4-byte big-endian
//! length + JSON. Input: a byte stream as a plugin or a host would send it.
//! Frames read back to exactly the bytes they came from, never longer than
//! `MAX_FRAME`; a request or response that decodes encodes and decodes to the
//! same message; a call kind and a `traceparent` that parse write back as
//! read; a failed response keeps the code it names.
//!
//! The transports themselves read through `FrameReader` (buffered, the bytes
//! arriving in pieces of every size here) and decode with `decode_call` and
//! `decode_answer`, and answer with `encode_answer`: each must agree with the
//! reference functions above on every input.
#![no_main]

use hangar_plugin::unix::{
    decode_answer, decode_call, decode_request, decode_response, encode_answer, encode_frame,
    read_frame, FrameReader, ERROR_CODE_HEADER, MAX_FRAME,
};
use hangar_plugin::{CallKind, Error, ErrorKind, TraceContext, TRACEPARENT};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

/// Every frame of `data`, and whether the stream ended cleanly.
fn frames(mut data: &[u8]) -> (Vec<Vec<u8>>, usize, bool) {
    let total = data.len();
    runtime().block_on(async {
        let mut out = Vec::new();
        loop {
            match read_frame(&mut data).await {
                Ok(Some(body)) => out.push(body),
                Ok(None) => return (out, total - data.len(), true),
                Err(_) => return (out, total - data.len(), false),
            }
        }
    })
}

/// Hands out the bytes in pieces of 1 to 64 bytes, sizes drawn from a
/// generator seeded by the input's length.
struct Pieces<'a> {
    data: &'a [u8],
    seed: u64,
}

impl tokio::io::AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let want = 1 + (self.seed >> 58) as usize;
        let n = want.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

/// The frames as the transports read them, and how the stream ended.
fn frames_buffered(data: &[u8]) -> (Vec<Vec<u8>>, Result<(), std::io::ErrorKind>) {
    runtime().block_on(async {
        let mut r = FrameReader::new(Pieces {
            data,
            seed: data.len() as u64,
        });
        let mut out = Vec::new();
        loop {
            match r.next().await {
                Ok(Some(body)) => out.push(body.to_vec()),
                Ok(None) => return (out, Ok(())),
                Err(e) => return (out, Err(e.kind())),
            }
        }
    })
}

fn same_result(a: &Result<serde_json::Value, Error>, b: &Result<serde_json::Value, Error>) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => x == y,
        (Err(x), Err(y)) => x.kind == y.kind && x.message == y.message,
        _ => false,
    }
}

fn one_frame(frame: &[u8]) -> Vec<u8> {
    let (mut f, used, clean) = frames(frame);
    assert!(
        clean && used == frame.len() && f.len() == 1,
        "an encoded frame reads back"
    );
    f.remove(0)
}

fn check_trace(headers: &std::collections::HashMap<String, String>) {
    for (k, v) in headers {
        if !k.eq_ignore_ascii_case(TRACEPARENT) {
            continue;
        }
        if let Some(tc) = TraceContext::parse(v) {
            assert_eq!(
                tc.to_header(),
                v.trim().to_ascii_lowercase(),
                "traceparent {v:?} accepted but not as written"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (bodies, used, clean) = frames(data);
    // Frames are exactly the bytes they came from.
    let mut again = Vec::new();
    for b in &bodies {
        assert!(b.len() <= MAX_FRAME);
        again.extend_from_slice(&(b.len() as u32).to_be_bytes());
        again.extend_from_slice(b);
    }
    // Whole frames first; a failed read may have consumed part of one more.
    assert!(again.len() <= used && used <= data.len());
    assert_eq!(&data[..again.len()], &again[..]);
    if clean {
        // The end: whole frames, then at most a cut length prefix.
        assert_eq!(used, data.len(), "bytes left after the end");
        assert!(used - again.len() < 4, "a clean end inside a frame's body");
    }

    // The transports' reader: the same frames; bytes left after the last
    // whole frame (a cut length prefix, which read_frame takes for a clean
    // end) are an error.
    let (buffered, end) = frames_buffered(data);
    assert_eq!(buffered, bodies, "FrameReader and read_frame disagree");
    match end {
        Ok(()) => assert!(clean && used == again.len(), "FrameReader ended early"),
        Err(std::io::ErrorKind::InvalidData) => assert!(!clean, "an oversized length"),
        Err(std::io::ErrorKind::UnexpectedEof) => assert!(again.len() < data.len()),
        Err(k) => panic!("FrameReader failed with {k:?}"),
    }

    for body in &bodies {
        // The server's decoding agrees with the reference, and its answer
        // reads back.
        match (decode_request(body), decode_call(body)) {
            (Ok(req), Ok((kind, call))) => {
                assert_eq!(kind.as_str(), req.kind);
                assert_eq!(call.kind, kind);
                assert_eq!(call.request_id, req.request_id);
                assert_eq!(call.headers, req.headers);
                assert_eq!(call.data, req.data);
                assert_eq!(call.deadline.is_some(), req.timeout_ms > 0);
                for r in [
                    Ok(call.data.clone()),
                    Err(Error::new(ErrorKind::Timeout, req.request_id.clone())),
                ] {
                    let frame = encode_answer(kind.as_str(), &call.request_id, &r)
                        .expect("an answer encodes");
                    let back = decode_response(&one_frame(&frame)).expect("an answer decodes");
                    assert_eq!(back.kind, req.kind);
                    assert_eq!(back.request_id, req.request_id);
                    assert!(same_result(&back.into_result(), &r), "answer round trip");
                }
            }
            (Ok(req), Err(bad)) => {
                assert!(
                    CallKind::parse(&req.kind).is_none(),
                    "a good request refused: {}",
                    bad.error
                );
                assert_eq!(bad.kind, req.kind);
                assert_eq!(bad.request_id, req.request_id);
            }
            (Err(_), Ok(_)) => panic!("decode_call took what decode_request refuses"),
            // Refused unread, or read but for data the parser will not
            // take (nested too deep, a lone surrogate): then answered by
            // id, with why.
            (Err(_), Err(bad)) => assert!(
                (bad.kind.is_empty() && bad.request_id.is_empty())
                    || bad.error.message.starts_with("cannot parse the JSON payload"),
                "{}",
                bad.error
            ),
        }
        // The client's decoding agrees with the reference.
        let reference = decode_response(body).ok();
        let mut seen = None;
        let took = decode_answer(body, |id, r| seen = Some((id.to_string(), r)));
        assert_eq!(took, reference.is_some());
        if let (Some(resp), Some((id, r))) = (reference.clone(), seen) {
            assert_eq!(id, resp.request_id);
            assert!(
                same_result(&r, &resp.into_result()),
                "decode_answer disagrees"
            );
        }

        if let Ok(req) = decode_request(body) {
            let frame = encode_frame(&req).expect("a decoded request encodes");
            let back = decode_request(&one_frame(&frame)).expect("an encoded request decodes");
            assert_eq!(req, back, "request round trip");
            if let Some(kind) = CallKind::parse(&req.kind) {
                assert_eq!(kind.as_str(), req.kind);
            }
            check_trace(&req.headers);
        }
        if let Ok(resp) = decode_response(body) {
            let frame = encode_frame(&resp).expect("a decoded response encodes");
            let back = decode_response(&one_frame(&frame)).expect("an encoded response decodes");
            assert_eq!(resp, back, "response round trip");
            let codes: Vec<String> = resp
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(ERROR_CODE_HEADER))
                .map(|(_, v)| v.clone())
                .collect();
            let (success, data) = (resp.success, resp.data.clone());
            match resp.into_result() {
                Ok(v) => {
                    assert!(success);
                    assert_eq!(v, data);
                }
                Err(e) => {
                    assert!(!success);
                    let named: Vec<ErrorKind> = codes
                        .iter()
                        .filter_map(|c| ErrorKind::from_code(c))
                        .collect();
                    if named.is_empty() {
                        assert_eq!(e.kind, ErrorKind::ExecutionFailed);
                    } else {
                        assert!(named.contains(&e.kind), "{:?} not in {codes:?}", e.kind);
                    }
                }
            }
        }
    }
});
