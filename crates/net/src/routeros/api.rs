//! The RouterOS API protocol (the binary one on TCP 8728, or TLS on 8729).
//!
//! A *word* is a length followed by that many bytes; the length takes 1 to 5
//! bytes (`0xxxxxxx`, `10xxxxxx +1`, `110xxxxx +2`, `1110xxxx +3`, `11110000 +4`).
//! A *sentence* is words ended by an empty word. The client sends a command
//! sentence (`/ip/address/add`, then `=name=value` attributes, `?name=value`
//! queries and `.tag=N`); the router answers with `!re` sentences (one per
//! item printed), a `!trap` on an error, and `!done` at the end (with `=ret=ID`
//! after an `add`), each carrying the command's `.tag`; RouterOS 7.18 and
//! later also send `!empty` before `!done` when a `print` found nothing. `!fatal` means the
//! router closes the connection. Login (RouterOS 6.43 and later) is
//! `/login =name=U =password=P`.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{NetError, NetErrorKind};

/// Appends the encoded length of a word to `out`.
pub fn encode_len(len: usize, out: &mut Vec<u8>) {
    let l = len as u64;
    if l < 0x80 {
        out.push(l as u8);
    } else if l < 0x4000 {
        out.extend_from_slice(&((l as u16) | 0x8000).to_be_bytes());
    } else if l < 0x20_0000 {
        let v = (l as u32) | 0xC0_0000;
        out.extend_from_slice(&v.to_be_bytes()[1..]);
    } else if l < 0x1000_0000 {
        out.extend_from_slice(&((l as u32) | 0xE000_0000).to_be_bytes());
    } else {
        out.push(0xF0);
        out.extend_from_slice(&(l as u32).to_be_bytes());
    }
}

/// Encodes one sentence (words, then the empty word).
pub fn encode_sentence<S: AsRef<str>>(words: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for w in words {
        let b = w.as_ref().as_bytes();
        encode_len(b.len(), &mut out);
        out.extend_from_slice(b);
    }
    out.push(0);
    out
}

/// Longest word accepted from a peer (a guard against garbage lengths).
const MAX_WORD: usize = 16 << 20;

async fn read_len<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<usize> {
    let b = r.read_u8().await?;
    let extra = if b & 0x80 == 0 {
        return Ok(usize::from(b));
    } else if b & 0xC0 == 0x80 {
        1
    } else if b & 0xE0 == 0xC0 {
        2
    } else if b & 0xF0 == 0xE0 {
        3
    } else if b == 0xF0 {
        4
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad word length byte {b:#04x}"),
        ));
    };
    let mut v: u32 = match extra {
        1 => u32::from(b & 0x3F),
        2 => u32::from(b & 0x1F),
        3 => u32::from(b & 0x0F),
        _ => 0,
    };
    for _ in 0..extra {
        v = (v << 8) | u32::from(r.read_u8().await?);
    }
    Ok(v as usize)
}

/// Reads one sentence (without its terminating empty word).
pub async fn read_sentence<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Vec<String>> {
    let mut words = Vec::new();
    loop {
        let len = read_len(r).await?;
        if len == 0 {
            return Ok(words);
        }
        if len > MAX_WORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("word of {len} bytes"),
            ));
        }
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf).await?;
        words.push(String::from_utf8_lossy(&buf).into_owned());
    }
}

/// A byte stream the client talks over (plain TCP or TLS).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What a command returned: the attributes of each `!re`, and of the `!done`.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    pub re: Vec<BTreeMap<String, String>>,
    pub done: BTreeMap<String, String>,
}

/// Splits `=key=value` words into a map (other words are skipped).
fn attrs(words: &[String]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for w in words {
        if let Some(rest) = w.strip_prefix('=') {
            match rest.split_once('=') {
                Some((k, v)) => m.insert(k.to_string(), v.to_string()),
                None => m.insert(rest.to_string(), String::new()),
            };
        }
    }
    m
}

fn tag_of(words: &[String]) -> Option<&str> {
    words.iter().find_map(|w| w.strip_prefix(".tag="))
}

/// A logged-in API connection; one command at a time.
pub(crate) struct Client {
    io: Box<dyn Io>,
    next_tag: u64,
    timeout: Duration,
    peer: String,
}

fn proto_err(peer: &str, what: impl std::fmt::Display) -> NetError {
    NetError::new(
        NetErrorKind::RouterProtocol,
        format!("router {peer}: {what}"),
    )
}

impl Client {
    pub(crate) fn new(io: Box<dyn Io>, timeout: Duration, peer: String) -> Self {
        Client {
            io,
            next_tag: 1,
            timeout,
            peer,
        }
    }

    /// Runs one command: `words` are the command word, then `=attr=value` and
    /// `?query` words. A `!trap` becomes a [`NetErrorKind::RouterCommand`] error.
    pub(crate) async fn run(&mut self, words: &[String]) -> Result<Reply, NetError> {
        let tag = self.next_tag.to_string();
        self.next_tag += 1;
        let mut all: Vec<String> = words.to_vec();
        all.push(format!(".tag={tag}"));
        let bytes = encode_sentence(&all);
        let peer = self.peer.clone();
        let io_err = |e: io::Error| {
            NetError::new(
                NetErrorKind::RouterConnect,
                format!(
                    "router {peer}: connection broke during {}: {e}",
                    words.first().map(String::as_str).unwrap_or("?")
                ),
            )
        };
        let timeout = self.timeout;
        let fut = async {
            self.io.write_all(&bytes).await.map_err(io_err)?;
            self.io.flush().await.map_err(io_err)?;
            let mut reply = Reply::default();
            let mut trap: Option<BTreeMap<String, String>> = None;
            loop {
                let s = read_sentence(&mut self.io).await.map_err(io_err)?;
                let Some(kind) = s.first() else {
                    continue; // an empty sentence: nothing to do
                };
                if kind == "!fatal" {
                    let msg = s.get(1).cloned().unwrap_or_default();
                    return Err(NetError::new(
                        NetErrorKind::RouterCommand,
                        format!("router {} closed the connection: {msg}", self.peer),
                    ));
                }
                if tag_of(&s) != Some(tag.as_str()) {
                    // Not ours (an untagged or stale reply): skip it.
                    continue;
                }
                match kind.as_str() {
                    "!re" => reply.re.push(attrs(&s)),
                    // RouterOS 7.18+ says so when a print found nothing; `!done` follows.
                    "!empty" => {}
                    "!trap" => {
                        trap.get_or_insert_with(|| attrs(&s));
                    }
                    "!done" => {
                        reply.done = attrs(&s);
                        break;
                    }
                    other => {
                        return Err(proto_err(&self.peer, format!("unexpected reply {other:?}")))
                    }
                }
            }
            if let Some(t) = trap {
                let msg = t
                    .get("message")
                    .cloned()
                    .unwrap_or_else(|| "(no message)".into());
                return Err(NetError::new(
                    NetErrorKind::RouterCommand,
                    format!(
                        "router {} refused `{}`: {msg}",
                        self.peer,
                        words
                            .iter()
                            .filter(|w| !w.starts_with("=password="))
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                ));
            }
            Ok(reply)
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(NetError::new(
                NetErrorKind::RouterConnect,
                format!(
                    "router {}: no answer to {} within {timeout:?}",
                    self.peer,
                    words.first().map(String::as_str).unwrap_or("?")
                ),
            )),
        }
    }

    /// Logs in (RouterOS 6.43 and later: name and password in one step).
    pub(crate) async fn login(&mut self, user: &str, password: &str) -> Result<(), NetError> {
        let words = vec![
            "/login".to_string(),
            format!("=name={user}"),
            format!("=password={password}"),
        ];
        match self.run(&words).await {
            Ok(r) if r.done.contains_key("ret") => Err(proto_err(
                &self.peer,
                "the router asked for the pre-6.43 challenge login; upgrade RouterOS to 6.43 or newer",
            )),
            Ok(_) => Ok(()),
            Err(e) if e.kind == NetErrorKind::RouterCommand => Err(NetError::new(
                NetErrorKind::RouterLogin,
                format!("router {} refused the login of {user:?}", self.peer),
            )),
            Err(e) => Err(e),
        }
    }
}

/// Replays a router's bytes to a [`Client`] and swallows what it sends.
struct Replay {
    input: io::Cursor<Vec<u8>>,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.input).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The `!re` attribute maps and the `!done` attributes of a command's reply.
pub type ReplyMaps = (Vec<BTreeMap<String, String>>, BTreeMap<String, String>);

/// Runs the command `words` (tag `1`) against a router that answers with
/// `replies`, through the same [`Client::run`] the backend uses; for the fuzz
/// target `routeros`.
pub async fn replay_command(replies: &[u8], words: &[String]) -> Result<ReplyMaps, NetError> {
    let io = Replay {
        input: io::Cursor::new(replies.to_vec()),
    };
    let mut c = Client::new(Box::new(io), Duration::from_secs(5), "replay".into());
    let r = c.run(words).await?;
    Ok((r.re, r.done))
}

/// Logs in as `user` with `password` against a router that answers with
/// `replies` ([`Client::login`]); for the fuzz target `routeros`.
pub async fn replay_login(replies: &[u8], user: &str, password: &str) -> Result<(), NetError> {
    let io = Replay {
        input: io::Cursor::new(replies.to_vec()),
    };
    let mut c = Client::new(Box::new(io), Duration::from_secs(5), "replay".into());
    c.login(user, password).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        encode_len(len, &mut v);
        v
    }

    #[test]
    fn lengths_match_the_protocol_examples() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(0x7F), [0x7F]);
        assert_eq!(enc(0x80), [0x80, 0x80]);
        assert_eq!(enc(0x3FFF), [0xBF, 0xFF]);
        assert_eq!(enc(0x4000), [0xC0, 0x40, 0x00]);
        assert_eq!(enc(0x1F_FFFF), [0xDF, 0xFF, 0xFF]);
        assert_eq!(enc(0x20_0000), [0xE0, 0x20, 0x00, 0x00]);
        assert_eq!(enc(0xFFF_FFFF), [0xEF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(enc(0x1000_0000), [0xF0, 0x10, 0x00, 0x00, 0x00]);
    }

    #[tokio::test]
    async fn lengths_round_trip() {
        for len in [
            0usize,
            1,
            0x7F,
            0x80,
            0x3FFF,
            0x4000,
            0x1F_FFFF,
            0x20_0000,
            0xFFF_FFFF,
            0x1000_0000,
        ] {
            let bytes = enc(len);
            let mut r = &bytes[..];
            assert_eq!(read_len(&mut r).await.unwrap(), len, "length {len:#x}");
            assert!(r.is_empty());
        }
    }

    #[tokio::test]
    async fn sentences_round_trip() {
        let long = "x".repeat(300);
        let words = vec![
            "/ip/address/add".to_string(),
            format!("=comment={long}"),
            ".tag=7".into(),
        ];
        let bytes = encode_sentence(&words);
        let mut r = &bytes[..];
        assert_eq!(read_sentence(&mut r).await.unwrap(), words);
        assert!(r.is_empty());
    }

    #[tokio::test]
    async fn a_replayed_reply_skips_stale_tags_and_keeps_attributes() {
        let mut wire = encode_sentence(&["!done", ".tag=9"]);
        wire.extend(encode_sentence(&["!re", "=address=10.99.1.1/24", ".tag=1"]));
        wire.extend(encode_sentence(&["!done", "=ret=*A", ".tag=1"]));
        let (re, done) = replay_command(&wire, &["/ip/address/print".to_string()])
            .await
            .unwrap();
        assert_eq!(re.len(), 1);
        assert_eq!(re[0]["address"], "10.99.1.1/24");
        assert_eq!(done["ret"], "*A");
        // A reply cut short is a broken connection, not a success.
        let cut = &wire[..wire.len() - 3];
        let e = replay_command(cut, &["/x".to_string()]).await.unwrap_err();
        assert_eq!(e.kind, NetErrorKind::RouterConnect);
        let trap = encode_sentence(&["!trap", "=message=bad", ".tag=1"]);
        let e = replay_login(
            &[trap, encode_sentence(&["!done", ".tag=1"])].concat(),
            "u",
            "pw",
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, NetErrorKind::RouterLogin);
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    #[tokio::test]
    async fn a_control_byte_is_refused() {
        let bytes = [0xF8u8, 0, 0, 0, 0];
        let mut r = &bytes[..];
        assert!(read_sentence(&mut r).await.is_err());
    }
}
