//! The plugin wire (the unix and exec transports share it): 4-byte big-endian
//! length + JSON. Input: a byte stream as a plugin or a host would send it.
//! Frames read back to exactly the bytes they came from, never longer than
//! `MAX_FRAME`; a request or response that decodes encodes and decodes to the
//! same message; a call kind and a `traceparent` that parse write back as
//! read; a failed response keeps the code it names.
#![no_main]

use hangar_plugin::unix::{
    decode_request, decode_response, encode_frame, read_frame, ERROR_CODE_HEADER, MAX_FRAME,
};
use hangar_plugin::{CallKind, ErrorKind, TraceContext, TRACEPARENT};
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

    for body in &bodies {
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
