//! Downloads: HTTPS (plain HTTP only to loopback or when allowed), `file://`,
//! resume with `Range`, retry with backoff on transient failures, progress at
//! most every 100 ms, and the SHA-256 computed while the bytes arrive.
//!
//! The async task only moves bytes off the socket; a blocking thread writes them
//! to the `.part` file and hashes them, so neither the disk nor the hash holds up
//! the runtime. A resumed download hashes the part already on disk first.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::{Error, ErrorKind, Result};

/// Settings of a [`Downloader`].
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Allow plain `http://` to hosts that are not loopback.
    pub allow_http: bool,
    /// Most time to connect.
    pub connect_timeout: Duration,
    /// Most time without a byte (also for the response head).
    pub idle_timeout: Duration,
    /// Attempts per download (first try included).
    pub attempts: u32,
    /// Wait before the second attempt; doubles each time, capped at 5 s.
    pub backoff: Duration,
    /// Least time between two progress reports.
    pub progress_interval: Duration,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            allow_http: false,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            attempts: 5,
            backoff: Duration::from_millis(250),
            progress_interval: Duration::from_millis(100),
        }
    }
}

/// How far a download is.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Bytes on disk so far (a resumed part included).
    pub bytes: u64,
    /// Size of the whole file, when the server says.
    pub total: Option<u64>,
    /// Average rate of this transfer, bytes per second.
    pub bytes_per_sec: f64,
    /// The last report of this download.
    pub done: bool,
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Where the file is.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// Bytes that were already on disk from an earlier, interrupted try.
    pub resumed_from: u64,
    /// Attempts made.
    pub attempts: u32,
}

/// Downloads files. Holds one pooled HTTP client.
#[derive(Clone)]
pub struct Downloader {
    client: reqwest::Client,
    opts: DownloadOptions,
}

/// True for `localhost` and loopback addresses.
pub fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Parse a URL and check its scheme against the policy.
pub fn check_url(raw: &str, allow_http: bool) -> Result<reqwest::Url> {
    let url = reqwest::Url::parse(raw).map_err(|e| {
        Error::new(ErrorKind::InvalidUrl, format!("invalid URL {raw:?}: {e}"))
            .hint("write a full URL: https://…, or file:///absolute/path")
    })?;
    match url.scheme() {
        "https" | "file" => Ok(url),
        "http" if allow_http || is_loopback(&url) => Ok(url),
        "http" => Err(Error::new(
            ErrorKind::InsecureUrl,
            format!("refusing plain HTTP to {}", url.host_str().unwrap_or("?")),
        )
        .with("url", &url)
        .hint(
            "use https://, or allow plain HTTP explicitly (--allow-http) if you trust the network",
        )),
        s => Err(Error::new(
            ErrorKind::InvalidUrl,
            format!("unsupported URL scheme {s:?}"),
        )
        .with("url", &url)
        .hint("use https://, http:// (loopback only) or file://")),
    }
}

enum Chunk {
    Data(Bytes),
    /// The server ignored the range: start the file over.
    Reset,
}

/// The blocking side: owns the file and the hasher.
struct Sink {
    file: File,
    hasher: Sha256,
    len: u64,
}

impl Sink {
    fn open(path: &Path) -> std::io::Result<Sink> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        // Hash what an earlier try left.
        file.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok(Sink { file, hasher, len })
    }

    fn take(&mut self, c: Chunk) -> std::io::Result<()> {
        match c {
            Chunk::Data(b) => {
                self.file.write_all(&b)?;
                self.hasher.update(&b);
                self.len += b.len() as u64;
            }
            Chunk::Reset => {
                self.file.set_len(0)?;
                self.hasher = Sha256::new();
                self.len = 0;
            }
        }
        Ok(())
    }
}

fn digest(h: Sha256) -> [u8; 32] {
    h.finalize().into()
}

struct Reporter<'a> {
    every: Duration,
    last: Option<Instant>,
    start: Instant,
    start_bytes: u64,
    total: Option<u64>,
    cb: &'a (dyn Fn(&Progress) + Send + Sync),
}

impl Reporter<'_> {
    fn report(&mut self, bytes: u64, done: bool) {
        let now = Instant::now();
        if !done
            && self
                .last
                .is_some_and(|t| now.duration_since(t) < self.every)
        {
            return;
        }
        self.last = Some(now);
        let secs = now.duration_since(self.start).as_secs_f64();
        let rate = if secs > 0.0 {
            bytes.saturating_sub(self.start_bytes) as f64 / secs
        } else {
            0.0
        };
        (self.cb)(&Progress {
            bytes,
            total: self.total,
            bytes_per_sec: rate,
            done,
        });
    }
}

enum Attempt {
    Done,
    /// Worth trying again, with why.
    Retry(Error),
}

impl Downloader {
    /// Waits between attempts: from `backoff`, doubling, capped at 5 s.
    fn retry_backoff(&self) -> hangar_base::Backoff {
        hangar_base::Backoff::doubling(self.opts.backoff, Duration::from_secs(5))
    }

    /// A downloader with these options.
    pub fn new(opts: DownloadOptions) -> Result<Downloader> {
        // Redirects are followed only to URLs the policy allows: a mirror must
        // not be able to bounce a download (or its checksums) to plain HTTP.
        let allow_http = opts.allow_http;
        let policy = reqwest::redirect::Policy::custom(move |a| {
            if a.previous().len() >= 10 {
                a.error("too many redirects")
            } else if check_url(a.url().as_str(), allow_http).is_err() || a.url().scheme() == "file"
            {
                let msg = format!("refusing a redirect to {}", a.url());
                a.error(msg)
            } else {
                a.follow()
            }
        });
        let client = reqwest::Client::builder()
            .redirect(policy)
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.idle_timeout)
            .user_agent(concat!("hangar/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Io, format!("cannot set up the HTTP client: {e}"))
            })?;
        Ok(Downloader { client, opts })
    }

    /// The options.
    pub fn options(&self) -> &DownloadOptions {
        &self.opts
    }

    /// Download `url` into `dest` (a `.part` file of the caller's), resuming
    /// what an earlier try left there. Returns the size and SHA-256 of the
    /// whole file. On failure the part stays for the next try.
    pub async fn fetch_to(
        &self,
        url: &str,
        dest: &Path,
        progress: &(dyn Fn(&Progress) + Send + Sync),
    ) -> Result<Downloaded> {
        let url = check_url(url, self.opts.allow_http)?;
        if url.scheme() == "file" {
            return self.copy_file(&url, dest, progress).await;
        }
        let path = dest.to_path_buf();
        let (tx, mut rx) = mpsc::channel::<Chunk>(64);
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, Sha256, u64)> {
            let mut sink = Sink::open(&path)?;
            let mut resumed = sink.len;
            while let Some(c) = rx.blocking_recv() {
                if matches!(c, Chunk::Reset) {
                    // The earlier part was thrown away: nothing was resumed.
                    resumed = 0;
                }
                sink.take(c)?;
            }
            sink.file.flush()?;
            Ok((sink.len, sink.hasher, resumed))
        });
        let have0 = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        let mut have = have0;
        let mut rep = Reporter {
            every: self.opts.progress_interval,
            last: None,
            start: Instant::now(),
            start_bytes: have0,
            total: None,
            cb: progress,
        };
        let mut attempts = 0;
        let backoff = self.retry_backoff();
        let outcome = loop {
            attempts += 1;
            match self.attempt(&url, &tx, &mut have, &mut rep).await {
                Ok(Attempt::Done) => break Ok(()),
                Ok(Attempt::Retry(e)) if attempts < self.opts.attempts.max(1) => {
                    tracing::debug!(url = %url, attempt = attempts, "retrying download: {e}");
                    tokio::time::sleep(backoff.base_delay(attempts - 1)).await;
                }
                Ok(Attempt::Retry(e)) => break Err(e),
                Err(e) => break Err(e),
            }
        };
        drop(tx);
        let written = writer
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("writer thread failed: {e}")))?
            .map_err(|e| Error::io("cannot write the download", dest, e))?;
        outcome.map_err(|e| e.with("url", &url).with("attempts", attempts))?;
        let (bytes, hasher, resumed_from) = written;
        rep.report(bytes, true);
        Ok(Downloaded {
            path: dest.to_path_buf(),
            bytes,
            sha256: digest(hasher),
            resumed_from,
            attempts,
        })
    }

    async fn attempt(
        &self,
        url: &reqwest::Url,
        tx: &mpsc::Sender<Chunk>,
        have: &mut u64,
        rep: &mut Reporter<'_>,
    ) -> Result<Attempt> {
        let mut req = self.client.get(url.clone());
        if *have > 0 {
            req = req.header(RANGE, format!("bytes={have}-"));
        }
        let resp = match tokio::time::timeout(self.opts.idle_timeout, req.send()).await {
            Err(_) => return Ok(Attempt::Retry(timeout(self.opts.idle_timeout))),
            Ok(Err(e)) => return Ok(Attempt::Retry(net(&e))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        match status {
            StatusCode::PARTIAL_CONTENT if *have > 0 => {
                let (start, total) = content_range(resp.headers().get(CONTENT_RANGE));
                if start != Some(*have) {
                    // A range we did not ask for: start over.
                    reset(tx, have).await?;
                    return Ok(Attempt::Retry(Error::new(
                        ErrorKind::Network,
                        "server answered a different range; starting over",
                    )));
                }
                rep.total = total;
            }
            StatusCode::OK => {
                if *have > 0 {
                    reset(tx, have).await?;
                }
                rep.total = resp.content_length();
            }
            StatusCode::RANGE_NOT_SATISFIABLE if *have > 0 => {
                let (_, total) = content_range(resp.headers().get(CONTENT_RANGE));
                if total == Some(*have) {
                    rep.total = total;
                    return Ok(Attempt::Done); // the part was complete already
                }
                reset(tx, have).await?;
                return Ok(Attempt::Retry(Error::new(
                    ErrorKind::Network,
                    "stale partial download; starting over",
                )));
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => return Err(Error::new(
                ErrorKind::NotFound,
                format!("the server has no such file ({status})"),
            )
            .hint(
                "check the version and the asset pattern; `hangar catalog show ID` prints the URL",
            )),
            s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => {
                return Ok(Attempt::Retry(Error::new(
                    ErrorKind::HttpStatus,
                    format!("server answered {s}"),
                )))
            }
            s => {
                return Err(
                    Error::new(ErrorKind::HttpStatus, format!("server answered {s}"))
                        .hint("the URL may need credentials or may be wrong"),
                )
            }
        }
        let mut resp = resp;
        loop {
            match tokio::time::timeout(self.opts.idle_timeout, resp.chunk()).await {
                Err(_) => return Ok(Attempt::Retry(timeout(self.opts.idle_timeout))),
                Ok(Err(e)) => return Ok(Attempt::Retry(net(&e))),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(b))) => {
                    *have += b.len() as u64;
                    if tx.send(Chunk::Data(b)).await.is_err() {
                        return Err(Error::new(ErrorKind::Io, "the download writer stopped"));
                    }
                    rep.report(*have, false);
                }
            }
        }
        match rep.total {
            Some(t) if *have < t => Ok(Attempt::Retry(Error::new(
                ErrorKind::Network,
                format!("connection closed after {have} of {t} bytes"),
            ))),
            _ => Ok(Attempt::Done),
        }
    }

    async fn copy_file(
        &self,
        url: &reqwest::Url,
        dest: &Path,
        progress: &(dyn Fn(&Progress) + Send + Sync),
    ) -> Result<Downloaded> {
        let src = url.to_file_path().map_err(|()| {
            Error::new(
                ErrorKind::InvalidUrl,
                format!("not a local file URL: {url}"),
            )
            .hint("write file:///absolute/path")
        })?;
        let dst = dest.to_path_buf();
        let (ptx, mut prx) = mpsc::unbounded_channel::<(u64, Option<u64>)>();
        let every = self.opts.progress_interval;
        let job = tokio::task::spawn_blocking(move || -> Result<(u64, Sha256)> {
            let mut input = File::open(&src).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::new(
                        ErrorKind::NotFound,
                        format!("no such file: {}", src.display()),
                    )
                    .hint("check the catalog's release archives")
                } else {
                    Error::io("cannot open the source file", &src, e)
                }
            })?;
            let total = input.metadata().map(|m| m.len()).ok();
            let mut out =
                File::create(&dst).map_err(|e| Error::io("cannot create the download", &dst, e))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut n_total = 0u64;
            let mut last = Instant::now();
            loop {
                let n = input
                    .read(&mut buf)
                    .map_err(|e| Error::io("cannot read the source file", &src, e))?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])
                    .map_err(|e| Error::io("cannot write the download", &dst, e))?;
                hasher.update(&buf[..n]);
                n_total += n as u64;
                if last.elapsed() >= every {
                    last = Instant::now();
                    let _ = ptx.send((n_total, total));
                }
            }
            out.flush()
                .map_err(|e| Error::io("cannot write the download", &dst, e))?;
            Ok((n_total, hasher))
        });
        let start = Instant::now();
        let mut job = job;
        let (bytes, hasher) = loop {
            tokio::select! {
                Some((b, total)) = prx.recv() => {
                    let secs = start.elapsed().as_secs_f64().max(1e-9);
                    progress(&Progress { bytes: b, total, bytes_per_sec: b as f64 / secs, done: false });
                }
                r = &mut job => break r.map_err(|e| Error::new(ErrorKind::Io, format!("copy failed: {e}")))??,
            }
        };
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        progress(&Progress {
            bytes,
            total: Some(bytes),
            bytes_per_sec: bytes as f64 / secs,
            done: true,
        });
        Ok(Downloaded {
            path: dest.to_path_buf(),
            bytes,
            sha256: digest(hasher),
            resumed_from: 0,
            attempts: 1,
        })
    }

    /// Fetch a small text file (a checksums list, a signature) into memory.
    pub async fn fetch_text(&self, url: &str, max_bytes: usize) -> Result<String> {
        let url = check_url(url, self.opts.allow_http)?;
        if url.scheme() == "file" {
            let p = url.to_file_path().map_err(|()| {
                Error::new(
                    ErrorKind::InvalidUrl,
                    format!("not a local file URL: {url}"),
                )
            })?;
            let len = tokio::fs::metadata(&p).await.map(|m| m.len()).unwrap_or(0);
            if len > max_bytes as u64 {
                return Err(Error::new(
                    ErrorKind::ChecksumInvalid,
                    format!("file larger than {max_bytes} bytes"),
                )
                .with("path", p.display())
                .hint("the path does not point at a checksums or signature file"));
            }
            let text = tokio::fs::read_to_string(&p).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::new(
                        ErrorKind::NotFound,
                        format!("no such file: {}", p.display()),
                    )
                    .hint("check the catalog's release files")
                } else {
                    Error::io("cannot read", &p, e)
                }
            })?;
            return Ok(text);
        }
        let mut attempts = 0;
        let backoff = self.retry_backoff();
        loop {
            attempts += 1;
            let res = self.text_once(&url, max_bytes).await;
            match res {
                Err(e) if e.kind().is_retryable() && attempts < self.opts.attempts.max(1) => {
                    tokio::time::sleep(backoff.base_delay(attempts - 1)).await;
                }
                other => return other.map_err(|e| e.with("url", &url)),
            }
        }
    }

    async fn text_once(&self, url: &reqwest::Url, max: usize) -> Result<String> {
        let fut = async {
            let resp = self
                .client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| net(&e))?;
            let s = resp.status();
            if s == StatusCode::NOT_FOUND || s == StatusCode::GONE {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("the server has no such file ({s})"),
                )
                .hint("check the manifest's checksums_asset / signature_asset"));
            }
            if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() {
                return Err(Error::new(
                    ErrorKind::Network,
                    format!("server answered {s}"),
                ));
            }
            if !s.is_success() {
                return Err(Error::new(
                    ErrorKind::HttpStatus,
                    format!("server answered {s}"),
                ));
            }
            let mut resp = resp;
            let mut body = Vec::new();
            while let Some(c) = resp.chunk().await.map_err(|e| net(&e))? {
                body.extend_from_slice(&c);
                if body.len() > max {
                    return Err(Error::new(
                        ErrorKind::ChecksumInvalid,
                        format!("file larger than {max} bytes"),
                    )
                    .hint("the URL does not point at a checksums or signature file"));
                }
            }
            String::from_utf8(body).map_err(|_| {
                Error::new(ErrorKind::ChecksumInvalid, "not UTF-8 text")
                    .hint("the URL does not point at a text file")
            })
        };
        tokio::time::timeout(self.opts.idle_timeout * 2, fut)
            .await
            .unwrap_or_else(|_| Err(timeout(self.opts.idle_timeout * 2)))
    }
}

async fn reset(tx: &mpsc::Sender<Chunk>, have: &mut u64) -> Result<()> {
    *have = 0;
    tx.send(Chunk::Reset)
        .await
        .map_err(|_| Error::new(ErrorKind::Io, "the download writer stopped"))
}

fn timeout(after: Duration) -> Error {
    Error::new(ErrorKind::Timeout, format!("no data for {after:?}"))
        .hint("the server is slow or unreachable; try again later or use a mirror")
}

fn net(e: &reqwest::Error) -> Error {
    if e.is_timeout() {
        return Error::new(ErrorKind::Timeout, "timed out")
            .hint("the server is slow or unreachable");
    }
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    Error::new(ErrorKind::Network, msg)
        .hint("check the network and the URL; the download resumes where it stopped")
}

/// `Content-Range: bytes START-END/TOTAL` → (START, TOTAL); `*/TOTAL` → (None, TOTAL).
fn content_range(v: Option<&reqwest::header::HeaderValue>) -> (Option<u64>, Option<u64>) {
    let Some(s) = v.and_then(|v| v.to_str().ok()) else {
        return (None, None);
    };
    let s = s.trim().strip_prefix("bytes").unwrap_or(s).trim();
    let (range, total) = s.split_once('/').unwrap_or((s, "*"));
    let total = total.trim().parse().ok();
    let start = range
        .split_once('-')
        .and_then(|(a, _)| a.trim().parse().ok());
    (start, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        let h = |s: &str| reqwest::header::HeaderValue::from_str(s).ok();
        assert_eq!(
            content_range(h("bytes 100-199/200").as_ref()),
            (Some(100), Some(200))
        );
        assert_eq!(content_range(h("bytes */200").as_ref()), (None, Some(200)));
        assert_eq!(content_range(h("bytes 5-9/*").as_ref()), (Some(5), None));
        assert_eq!(content_range(None), (None, None));
    }

    #[test]
    fn url_policy() {
        assert!(check_url("https://example.invalid/x", false).is_ok());
        assert!(check_url("http://127.0.0.1:8000/x", false).is_ok());
        assert!(check_url("http://[::1]:8000/x", false).is_ok());
        assert!(check_url("http://localhost/x", false).is_ok());
        assert_eq!(
            check_url("http://example.invalid/x", false)
                .map(drop)
                .unwrap_err()
                .kind(),
            ErrorKind::InsecureUrl
        );
        assert!(check_url("http://example.invalid/x", true).is_ok());
        assert_eq!(
            check_url("ftp://x/y", true).map(drop).unwrap_err().kind(),
            ErrorKind::InvalidUrl
        );
        assert_eq!(
            check_url("not a url", true).map(drop).unwrap_err().kind(),
            ErrorKind::InvalidUrl
        );
    }
}
