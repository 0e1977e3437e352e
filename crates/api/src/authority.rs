//! What a Unix-socket gRPC client sends as `:authority`, made acceptable to h2.
//!
//! grpc-core (Python, C++, Ruby, PHP) and grpc-java put the socket path in
//! `:authority` on `unix:` channels (`/run/hangar/hangar.sock`). That is not a
//! valid URI authority, and the h2 server under tonic resets every such stream
//! with PROTOCOL_ERROR before hangar sees it; grpc-go sends `localhost` and
//! works. [`UnixAuthority`] sits between the accepted socket and h2 and, for
//! each request whose `:authority` h2 would refuse, puts `localhost` there, as
//! grpc-go and Kubernetes do for Unix sockets.
//!
//! HPACK makes that a decode and re-encode, not a byte patch: a header block
//! may name entries of the client's dynamic table, so the client's table is
//! tracked for the life of the connection. Blocks go through untouched until
//! the first rewrite. From then on every block is re-encoded as literals that
//! neither use nor change h2's table, so h2's table (which never saw the
//! rewritten block's insertions) is never consulted again. Every other frame
//! passes through as it comes, without being buffered whole.
//!
//! Only the client-to-server direction is touched; writes go straight through.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Re-encoded blocks are cut into frames no larger than the protocol's
/// minimum SETTINGS_MAX_FRAME_SIZE, which every server accepts.
const OUT_FRAME: usize = 16_384;
/// Bounds on what one header block may cost: its encoded size, and its
/// decoded size (index references can repeat a 4 KiB table entry cheaply).
/// Far above any gRPC metadata; a client over them loses its connection.
const MAX_BLOCK: usize = 1 << 20;
const MAX_DECODED: usize = 1 << 20;
/// Largest dynamic table a client may ask its decoder for.
const MAX_TABLE: usize = 1 << 16;
/// The authority put in place of one h2 refuses.
const LOCALHOST: &[u8] = b"localhost";

enum State {
    /// Bytes of the connection preface still to pass.
    Preface(usize),
    /// Between frames.
    Frame,
    /// Inside a frame that passes as it comes: bytes of it still to pass.
    Pass(usize),
}

/// A header block being collected: HEADERS and its CONTINUATIONs.
struct Block {
    stream: u32,
    end_stream: bool,
    /// The frames as received, for passing them on untouched.
    raw: BytesMut,
    /// The header block fragments, without padding or priority fields.
    fragment: Vec<u8>,
}

/// A connection's client-to-server bytes with invalid `:authority` values
/// replaced; see the module documentation.
pub struct UnixAuthority<S> {
    inner: S,
    state: State,
    /// Read from `inner`, not yet looked at.
    input: BytesMut,
    /// Ready for h2.
    output: BytesMut,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    /// A block has been rewritten, so every later block is re-encoded.
    rewriting: bool,
    eof: bool,
}

impl<S> UnixAuthority<S> {
    /// Wrap an accepted connection.
    pub fn new(inner: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(MAX_TABLE);
        Self {
            inner,
            state: State::Preface(PREFACE.len()),
            input: BytesMut::new(),
            output: BytesMut::new(),
            block: None,
            decoder,
            rewriting: false,
            eof: false,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Move what can be moved from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.state {
                State::Preface(left) => {
                    let n = left.min(self.input.len());
                    if n == 0 {
                        return Ok(());
                    }
                    let got = self.input.split_to(n);
                    let at = PREFACE.len() - left;
                    if got[..] != PREFACE[at..at + n] {
                        // Not HTTP/2 with prior knowledge: h2 says so itself.
                        self.output.extend_from_slice(&got);
                        self.output.extend_from_slice(&self.input.split());
                        self.state = State::Pass(usize::MAX);
                        return Ok(());
                    }
                    self.output.extend_from_slice(&got);
                    self.state = if left == n {
                        State::Frame
                    } else {
                        State::Preface(left - n)
                    };
                }
                State::Pass(0) => self.state = State::Frame,
                State::Pass(left) => {
                    let n = left.min(self.input.len());
                    if n == 0 {
                        return Ok(());
                    }
                    self.output.extend_from_slice(&self.input.split_to(n));
                    self.state = if left == n {
                        State::Frame
                    } else {
                        State::Pass(left - n)
                    };
                }
                State::Frame => {
                    if self.input.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let h = &self.input[..FRAME_HEADER];
                    let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    let kind = h[3];
                    if kind != HEADERS && kind != CONTINUATION {
                        if self.block.is_some() {
                            return Err(invalid("a header block was interrupted by another frame"));
                        }
                        self.output
                            .extend_from_slice(&self.input.split_to(FRAME_HEADER));
                        self.state = State::Pass(len);
                        continue;
                    }
                    if len > MAX_BLOCK {
                        return Err(invalid("header frame too large"));
                    }
                    if self.input.len() < FRAME_HEADER + len {
                        self.input.reserve(FRAME_HEADER + len - self.input.len());
                        return Ok(());
                    }
                    let frame = self.input.split_to(FRAME_HEADER + len);
                    self.header_frame(frame)?;
                }
            }
        }
    }

    fn header_frame(&mut self, frame: BytesMut) -> io::Result<()> {
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        let fragment = if frame[3] == HEADERS {
            if self.block.is_some() {
                return Err(invalid("a header block was interrupted by another frame"));
            }
            let mut start = 0;
            let mut pad = 0;
            if flags & PADDED != 0 {
                pad = usize::from(*payload.first().ok_or_else(|| invalid("bad padding"))?);
                start = 1;
            }
            if flags & PRIORITY != 0 {
                start += 5;
            }
            if start + pad > payload.len() {
                return Err(invalid("padding or priority longer than the frame"));
            }
            self.block = Some(Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                raw: BytesMut::new(),
                fragment: Vec::new(),
            });
            &payload[start..payload.len() - pad]
        } else {
            match &self.block {
                Some(b) if b.stream == stream => payload,
                // A stray CONTINUATION: h2 answers it with a connection error.
                _ => {
                    self.output.extend_from_slice(&frame);
                    return Ok(());
                }
            }
        };
        let Some(block) = self.block.as_mut() else {
            return Err(invalid("no header block open"));
        };
        if block.fragment.len() + fragment.len() > MAX_BLOCK {
            return Err(invalid("header block too large"));
        }
        block.fragment.extend_from_slice(fragment);
        if !self.rewriting {
            block.raw.extend_from_slice(&frame);
        }
        if flags & END_HEADERS != 0 {
            let block = self
                .block
                .take()
                .ok_or_else(|| invalid("no header block open"))?;
            self.finish(block)?;
        }
        Ok(())
    }

    /// Decode a whole block and pass it on, rewritten if it must be.
    fn finish(&mut self, block: Block) -> io::Result<()> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        let mut bad_authority = false;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                size = size.saturating_add(name.len() + value.len() + 32);
                if size > MAX_DECODED {
                    return;
                }
                if &*name == b":authority" && http::uri::Authority::try_from(&*value).is_err() {
                    bad_authority = true;
                    fields.push((name.into_owned(), LOCALHOST.to_vec()));
                } else {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| invalid(&format!("header block does not decode: {e}")))?;
        if size > MAX_DECODED {
            return Err(invalid("header list too large"));
        }
        if bad_authority && !self.rewriting {
            tracing::debug!(
                "a client sent a Unix-socket :authority h2 refuses; serving it as localhost"
            );
            self.rewriting = true;
        }
        if !self.rewriting {
            self.output.extend_from_slice(&block.raw);
            return Ok(());
        }
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        for (name, value) in &fields {
            // Literal header field without indexing, new name (RFC 7541 6.2.2).
            encoded.push(0);
            string(&mut encoded, name);
            string(&mut encoded, value);
        }
        let mut chunks = encoded.chunks(OUT_FRAME).peekable();
        let mut first = true;
        // An empty block is still one HEADERS frame.
        let empty: &[u8] = &[];
        let mut next = chunks.next().unwrap_or(empty);
        loop {
            let last = chunks.peek().is_none();
            let mut flags = 0;
            if last {
                flags |= END_HEADERS;
            }
            if first && block.end_stream {
                flags |= END_STREAM;
            }
            let kind = if first { HEADERS } else { CONTINUATION };
            frame_header(&mut self.output, next.len(), kind, flags, block.stream);
            self.output.extend_from_slice(next);
            first = false;
            match chunks.next() {
                Some(c) => next = c,
                None => break,
            }
        }
        Ok(())
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 from client: {what}"),
    )
}

/// An HPACK string literal, not Huffman coded (RFC 7541 5.2).
fn string(out: &mut Vec<u8>, s: &[u8]) {
    let start = out.len();
    // Writing to a Vec cannot fail.
    let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out);
    debug_assert!(out.len() > start);
    out.extend_from_slice(s);
}

fn frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= OUT_FRAME);
    out.put_uint(len as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

impl<S: AsyncRead + Unpin> AsyncRead for UnixAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // What is left in `input` is a partial frame: h2 sees the
                // connection end where it would have seen that frame.
                return Poll::Ready(Ok(()));
            }
            this.process()?;
            if !this.output.is_empty() {
                continue;
            }
            this.input.reserve(8192);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.input
            ))?;
            if n == 0 {
                this.eof = true;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for UnixAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for UnixAuthority<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A reader that hands out at most `step` bytes per read, as a slow
    /// socket would.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let n = this
                .step
                .min(this.data.len() - this.at)
                .min(buf.remaining());
            buf.put_slice(&this.data[this.at..this.at + n]);
            this.at += n;
            Poll::Ready(Ok(()))
        }
    }

    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut b = BytesMut::new();
        b.put_uint(payload.len() as u64, 3);
        b.put_u8(kind);
        b.put_u8(flags);
        b.put_u32(stream);
        out.extend_from_slice(&b);
        out.extend_from_slice(payload);
    }

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn request(authority: &[u8]) -> Fields {
        vec![
            (b":authority".to_vec(), authority.to_vec()),
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (b":path".to_vec(), b"/hangar.v1.Daemon/Status".to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (b"te".to_vec(), b"trailers".to_vec()),
        ]
    }

    /// Parsed frames: (type, flags, stream, payload).
    fn frames(mut b: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]);
            let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
            out.push((b[3], b[4], stream, b[9..9 + len].to_vec()));
            b = &b[9 + len..];
        }
        out
    }

    /// What h2 would decode from the shim's output: each header block in turn.
    fn blocks(out: &[u8]) -> Vec<(u32, bool, Fields)> {
        let mut dec = loona_hpack::Decoder::new();
        let mut res = Vec::new();
        let mut open: Option<(u32, bool, Vec<u8>)> = None;
        for (kind, flags, stream, payload) in frames(out) {
            match kind {
                HEADERS => {
                    assert!(open.is_none());
                    assert_eq!(
                        flags & (PADDED | PRIORITY),
                        0,
                        "no padding or priority left"
                    );
                    open = Some((stream, flags & END_STREAM != 0, payload));
                }
                CONTINUATION => open.as_mut().expect("open block").2.extend(payload),
                _ => continue,
            }
            if flags & END_HEADERS != 0 {
                let (stream, end, block) = open.take().expect("open block");
                res.push((stream, end, dec.decode(&block).expect("decodes")));
            }
        }
        res
    }

    async fn through(input: Vec<u8>, step: usize) -> io::Result<Vec<u8>> {
        let mut shim = UnixAuthority::new(Trickle {
            data: input,
            at: 0,
            step,
        });
        let mut out = Vec::new();
        shim.read_to_end(&mut out).await?;
        Ok(out)
    }

    /// grpc-core's first request puts the path in the client's dynamic table
    /// and the next one names it by index; both reach h2 as localhost, with
    /// everything else (headers, flags, a DATA frame, the preface) intact,
    /// however the bytes are cut.
    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_in_every_later_block() {
        let mut enc = loona_hpack::Encoder::new();
        let path = b"/run/hangar/hangar.sock";
        let rest = request(path).split_off(1);
        // :authority as grpc-core sends it: a literal with incremental
        // indexing of static name 1, then by index (62, then 63 once `te`
        // has been added after it).
        let mut first = vec![0x41, path.len() as u8];
        first.extend_from_slice(path);
        first.extend(enc.encode(rest.iter().map(|(n, v)| (&n[..], &v[..]))));
        let mut second = vec![0x80 | 63];
        second.extend(enc.encode(rest.iter().map(|(n, v)| (&n[..], &v[..]))));
        let mut input = PREFACE.to_vec();
        frame(&mut input, 0x4, 0, 0, &[]); // SETTINGS: an empty frame
        frame(&mut input, 0x4, 0x1, 0, &[]); // its ACK
                                             // First block: padded, with priority, split over a CONTINUATION.
        let (a, b) = first.split_at(first.len() / 2);
        let mut payload = vec![3u8, 0, 0, 0, 0, 16];
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        frame(&mut input, HEADERS, PADDED | PRIORITY, 1, &payload);
        frame(&mut input, CONTINUATION, END_HEADERS, 1, b);
        frame(&mut input, 0x0, END_STREAM, 1, b"\0\0\0\0\x05hello");
        frame(&mut input, HEADERS, END_HEADERS | END_STREAM, 3, &second);
        for step in [1, 7, 4096] {
            let out = through(input.clone(), step).await.expect("passes");
            assert_eq!(&out[..24], PREFACE);
            let got = blocks(&out[24..]);
            let want = request(b"localhost");
            assert_eq!(
                got,
                vec![(1, false, want.clone()), (3, true, want)],
                "step {step}"
            );
            let data: Vec<_> = frames(&out[24..])
                .into_iter()
                .filter(|f| f.0 == 0x0)
                .collect();
            assert_eq!(
                data,
                vec![(0x0, END_STREAM, 1, b"\0\0\0\0\x05hello".to_vec())]
            );
        }
    }

    /// A valid authority (grpc-go's `localhost`, a TCP `host:port`) passes
    /// byte for byte, dynamic table and all.
    #[tokio::test]
    async fn a_valid_authority_passes_untouched() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        for (stream, auth) in [
            (1, &b"localhost"[..]),
            (3, b"127.0.0.1:9471"),
            (5, b"localhost"),
        ] {
            let block = enc.encode(request(auth).iter().map(|(n, v)| (&n[..], &v[..])));
            frame(&mut input, HEADERS, END_HEADERS, stream, &block);
        }
        assert_eq!(through(input.clone(), 5).await.expect("passes"), input);
    }

    /// Broken or oversized input ends the connection instead of reaching h2
    /// half-read, and never grows memory past the bounds.
    #[tokio::test]
    async fn bad_header_blocks_end_the_connection() {
        let mut input = PREFACE.to_vec();
        frame(&mut input, HEADERS, END_HEADERS, 1, &[0x80 | 70]); // index past both tables
        let e = through(input, 4096).await.expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        let mut input = PREFACE.to_vec();
        frame(&mut input, HEADERS, PADDED | END_HEADERS, 1, &[9, 0x82]);
        assert!(through(input, 4096).await.is_err(), "padding past the end");

        let mut input = PREFACE.to_vec();
        frame(&mut input, HEADERS, 0, 1, &[0x82]);
        frame(&mut input, 0x0, 0, 1, b"x");
        assert!(through(input, 4096).await.is_err(), "interrupted block");

        // 4 KiB entry referenced over and over: decoded size is bounded.
        let mut enc = loona_hpack::Encoder::new();
        let big = vec![b'a'; 4000];
        let mut block = enc.encode([(&b"x-big"[..], &big[..])]);
        block.extend(std::iter::repeat_n(0x80 | 62, 2000));
        let mut input = PREFACE.to_vec();
        frame(&mut input, HEADERS, END_HEADERS, 1, &block);
        assert!(through(input, 4096).await.is_err(), "decoded size bounded");
    }

    /// A block re-encoded larger than one frame is cut into CONTINUATIONs.
    #[tokio::test]
    async fn a_large_rewritten_block_is_split_into_frames() {
        let mut enc = loona_hpack::Encoder::new();
        let mut h = request(b"/tmp/x.sock");
        h.push((b"x-big".to_vec(), vec![b'b'; 40_000]));
        let block = enc.encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut input = PREFACE.to_vec();
        let (a, b) = block.split_at(16_000);
        let (b, c) = b.split_at(16_000);
        frame(&mut input, HEADERS, END_STREAM, 1, a);
        frame(&mut input, CONTINUATION, 0, 1, b);
        frame(&mut input, CONTINUATION, END_HEADERS, 1, c);
        let out = through(input, 4096).await.expect("passes");
        let fs = frames(&out[24..]);
        assert!(fs.len() >= 3 && fs.iter().all(|f| f.3.len() <= OUT_FRAME));
        let mut want = request(b"localhost");
        want.push((b"x-big".to_vec(), vec![b'b'; 40_000]));
        assert_eq!(blocks(&out[24..]), vec![(1, true, want)]);
    }
}
