//! Log capture: one thread drains every child's stdout and stderr.
//!
//! The pump thread owns an epoll set (mio) with every pipe read end. It reads
//! whatever is there, appends it to the process's log file (rotating by size) and to
//! an in-memory tail, and goes back to waiting. Children never block on a full pipe
//! because the pipe is drained whether or not the disk keeps up: a failed write
//! (a full disk, say) drops the bytes, counts them, and keeps the error for the
//! status view. Files are opened lazily, so a silent process costs no file
//! descriptor, and writes go straight to the file, so there is no buffer per
//! process either. At most [`max_open_log_files`] are open at once: past that,
//! the file written least recently is closed (a second-chance clock) and opened
//! again at its next write, so thousands of chatty processes cannot use up the
//! descriptors spawning needs.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use serde::{Deserialize, Serialize};

use crate::spec::LogSpec;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout.log",
            Stream::Stderr => "stderr.log",
        }
    }
}

/// One line of recent output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Where it came from.
    pub stream: Stream,
    /// The text, lossily decoded as UTF-8, without the newline.
    pub text: String,
    /// When the log thread read the chunk that completed the line from the
    /// pipe: within milliseconds of the write for a process that does not
    /// buffer its output. Log files keep the raw bytes, without it.
    pub at: SystemTime,
}

/// Capture state of one process: its log files, its tail and its write errors.
pub(crate) struct ProcessLog {
    name: Arc<str>,
    spec: LogSpec,
    inner: Mutex<LogInner>,
    dropped: AtomicU64,
    /// Woken after every chunk, for followers ([`crate::Manager::wait_output`]).
    pub(crate) more: tokio::sync::Notify,
    /// Set when the process is removed: followers stop waiting on this log.
    closed: std::sync::atomic::AtomicBool,
}

struct LogInner {
    files: [Option<LogFile>; 2],
    /// Written since the pool last looked (see `OpenLogs`).
    recent: [bool; 2],
    tail: Tail,
    last_error: Option<String>,
}

impl ProcessLog {
    pub(crate) fn new(name: Arc<str>, spec: LogSpec) -> Arc<ProcessLog> {
        let tail = Tail::new(spec.tail_bytes);
        Arc::new(ProcessLog {
            name,
            spec,
            inner: Mutex::new(LogInner {
                files: [None, None],
                recent: [false, false],
                tail,
                last_error: None,
            }),
            dropped: AtomicU64::new(0),
            more: tokio::sync::Notify::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The path of a stream's live log file, when logging to files.
    pub(crate) fn path(&self, stream: Stream) -> Option<PathBuf> {
        self.spec
            .dir
            .as_ref()
            .map(|d| d.join(format!("{}.{}", self.name, stream.suffix())))
    }

    pub(crate) fn tail(&self, max_lines: usize) -> Vec<LogLine> {
        match self.inner.lock() {
            Ok(g) => g.tail.last(max_lines),
            Err(_) => Vec::new(),
        }
    }

    /// Complete lines kept after line number `after` (counting from 1 since the
    /// process was registered), with the number of the last line.
    pub(crate) fn since(&self, after: u64, max_lines: usize) -> (u64, Vec<LogLine>) {
        match self.inner.lock() {
            Ok(g) => g.tail.since(after, max_lines),
            Err(_) => (after, Vec::new()),
        }
    }

    /// The process was removed: wake every follower for good.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.more.notify_waiters();
    }

    /// Whether [`ProcessLog::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Number of the last complete line.
    pub(crate) fn last_line(&self) -> u64 {
        self.inner.lock().map(|g| g.tail.total).unwrap_or(0)
    }

    pub(crate) fn dropped_bytes(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.inner.lock().ok().and_then(|g| g.last_error.clone())
    }

    /// Append a chunk read from `stream`. Runs on the pump thread only.
    /// Returns whether a log file was opened for it.
    fn write(&self, stream: Stream, chunk: &[u8]) -> bool {
        let opened = self.write_locked(stream, chunk);
        self.more.notify_waiters();
        opened
    }

    fn write_locked(&self, stream: Stream, chunk: &[u8]) -> bool {
        let Ok(mut g) = self.inner.lock() else {
            return false;
        };
        g.tail.push(stream, chunk, SystemTime::now());
        let Some(path) = self.path(stream) else {
            return false;
        };
        let idx = stream.index();
        g.recent[idx] = true;
        let mut opened = false;
        if g.files[idx].is_none() {
            match LogFile::open(path, &self.spec) {
                Ok(f) => {
                    g.files[idx] = Some(f);
                    opened = true;
                }
                Err(e) => {
                    self.dropped
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    g.last_error = Some(format!("open log file: {e}"));
                    return false;
                }
            }
        }
        let res = match g.files[idx].as_mut() {
            Some(f) => f.write(chunk),
            None => Ok(()),
        };
        if let Err(e) = res {
            self.dropped
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            g.last_error = Some(format!("write log file: {e}"));
            // Reopen next time: the file may have been deleted or the disk freed.
            g.files[idx] = None;
        }
        opened
    }

    /// Close `stream`'s file unless it was written since the last look (then
    /// only forget that it was).
    fn evict(&self, stream: Stream) -> Evicted {
        let Ok(mut g) = self.inner.lock() else {
            return Evicted::NotOpen;
        };
        let idx = stream.index();
        if g.files[idx].is_none() {
            Evicted::NotOpen
        } else if std::mem::take(&mut g.recent[idx]) {
            Evicted::Recent
        } else {
            g.files[idx] = None;
            Evicted::Closed
        }
    }
}

enum Evicted {
    NotOpen,
    Recent,
    Closed,
}

/// Most log files open at once under a descriptor limit of `limit`: an eighth
/// of it, between 16 and 1024.
pub fn max_open_log_files(limit: u64) -> usize {
    usize::try_from((limit / 8).clamp(16, 1024)).unwrap_or(1024)
}

/// The open log files, oldest first, for the second-chance clock that keeps
/// them under `cap`.
struct OpenLogs {
    queue: VecDeque<(Weak<ProcessLog>, Stream)>,
    cap: usize,
}

impl OpenLogs {
    fn new(cap: usize) -> OpenLogs {
        OpenLogs {
            queue: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// `log` opened its `stream` file: close others while over the cap. A file
    /// written since it was last looked at goes round once more; entries of
    /// removed processes and closed files fall out.
    fn opened(&mut self, log: &Arc<ProcessLog>, stream: Stream) {
        self.queue.push_back((Arc::downgrade(log), stream));
        while self.queue.len() > self.cap {
            let Some((weak, s)) = self.queue.pop_front() else {
                break;
            };
            let Some(l) = weak.upgrade() else { continue };
            if let Evicted::Recent = l.evict(s) {
                self.queue.push_back((weak, s));
            }
        }
    }
}

/// A live log file with size-based rotation.
struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    keep: u32,
    compress: bool,
    max_age: Option<Duration>,
    seq: u32,
}

impl LogFile {
    fn open(path: PathBuf, spec: &LogSpec) -> io::Result<LogFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path,
            file,
            size,
            max_size: spec.max_size,
            keep: spec.keep,
            compress: spec.compress,
            max_age: spec.max_age,
            seq: 0,
        })
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.max_size > 0 && self.size > 0 && self.size + chunk.len() as u64 > self.max_size {
            // A failed rotation is not fatal: keep appending to the live file.
            let _ = self.rotate();
        }
        self.file.write_all(chunk)?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Move the live file aside under a name that sorts by time, start a new one, and
    /// hand compression and pruning to the maintenance thread.
    fn rotate(&mut self) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let stamp = humantime::format_rfc3339_millis(SystemTime::now());
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(format!(".{stamp}.{:04}", self.seq % 10_000));
        let rotated = PathBuf::from(rotated);
        std::fs::rename(&self.path, &rotated)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        maintenance().send(Maintenance {
            live: self.path.clone(),
            rotated,
            compress: self.compress,
            keep: self.keep,
            max_age: self.max_age,
        });
        Ok(())
    }
}

struct Maintenance {
    live: PathBuf,
    rotated: PathBuf,
    compress: bool,
    keep: u32,
    max_age: Option<Duration>,
}

/// One background thread compresses rotated files and prunes old ones, so the pump
/// thread never stalls on gzip.
struct MaintenanceQueue {
    tx: Mutex<mpsc::Sender<Maintenance>>,
}

impl MaintenanceQueue {
    fn send(&self, job: Maintenance) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(job);
        }
    }
}

fn maintenance() -> &'static MaintenanceQueue {
    static QUEUE: OnceLock<MaintenanceQueue> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Maintenance>();
        let _ = std::thread::Builder::new()
            .name("hangar-logrotate".into())
            // The deflate state lives on the stack in unoptimised builds.
            .stack_size(4 * 1024 * 1024)
            .spawn(move || {
                for job in rx {
                    if job.compress {
                        let _ = gzip_file(&job.rotated);
                    }
                    let _ = prune(&job.live, job.keep, job.max_age);
                }
            });
        MaintenanceQueue { tx: Mutex::new(tx) }
    })
}

fn gzip_file(path: &Path) -> io::Result<()> {
    let mut gz_path = path.as_os_str().to_owned();
    gz_path.push(".gz");
    let gz_path = PathBuf::from(gz_path);
    let mut tmp = gz_path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut src = File::open(path)?;
    let dst = File::create(&tmp)?;
    let mut enc = flate2::write::GzEncoder::new(dst, flate2::Compression::default());
    io::copy(&mut src, &mut enc)?;
    enc.finish()?.sync_all()?;
    std::fs::rename(&tmp, &gz_path)?;
    std::fs::remove_file(path)
}

/// Keep the newest `keep` rotated files of `live` and none older than `max_age`.
fn prune(live: &Path, keep: u32, max_age: Option<Duration>) -> io::Result<()> {
    let (Some(dir), Some(base)) = (live.parent(), live.file_name()) else {
        return Ok(());
    };
    let mut prefix = base.to_os_string();
    prefix.push(".");
    let prefix = prefix.to_string_lossy().into_owned();
    let mut rotated: Vec<(String, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with(&prefix) && !name.ends_with(".tmp")).then(|| (name, e.path()))
        })
        .collect();
    // Names carry an RFC 3339 stamp and a sequence number: lexical order is age order.
    rotated.sort();
    let excess = rotated.len().saturating_sub(keep as usize);
    let now = SystemTime::now();
    for (i, (_, path)) in rotated.iter().enumerate() {
        let too_old = max_age.is_some_and(|max| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > max)
        });
        if i < excess || too_old {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

/// The last few KiB of output, as lines, both streams interleaved in arrival order.
struct Tail {
    cap: usize,
    bytes: usize,
    /// Lines ever completed; the newest kept line has this number.
    total: u64,
    lines: VecDeque<LogLine>,
    partial: [Vec<u8>; 2],
}

impl Tail {
    fn new(cap: usize) -> Tail {
        Tail {
            cap,
            bytes: 0,
            total: 0,
            lines: VecDeque::new(),
            partial: [Vec::new(), Vec::new()],
        }
    }

    fn push(&mut self, stream: Stream, mut chunk: &[u8], at: SystemTime) {
        if self.cap == 0 {
            return;
        }
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            let partial = &mut self.partial[stream.index()];
            partial.extend_from_slice(&chunk[..nl]);
            let line = std::mem::take(partial);
            self.push_line(stream, &line, at);
            chunk = &chunk[nl + 1..];
        }
        let partial = &mut self.partial[stream.index()];
        partial.extend_from_slice(chunk);
        if partial.len() > self.cap {
            // A line longer than the whole tail: keep its end only.
            let cut = partial.len() - self.cap;
            partial.drain(..cut);
        }
    }

    fn push_line(&mut self, stream: Stream, line: &[u8], at: SystemTime) {
        let line = if line.len() > self.cap {
            &line[line.len() - self.cap..]
        } else {
            line
        };
        let text = String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_string();
        self.bytes += text.len() + 1;
        self.total += 1;
        self.lines.push_back(LogLine { stream, text, at });
        while self.bytes > self.cap {
            match self.lines.pop_front() {
                Some(l) => self.bytes -= l.text.len() + 1,
                None => break,
            }
        }
    }

    fn since(&self, after: u64, max: usize) -> (u64, Vec<LogLine>) {
        let first_kept = self.total - self.lines.len() as u64 + 1;
        let skip = after.saturating_add(1).saturating_sub(first_kept) as usize;
        let lines: Vec<LogLine> = self.lines.iter().skip(skip).take(max).cloned().collect();
        // Nothing new: the caller is up to date (or its number came from a log
        // that was replaced, and restarts from here).
        let last = if lines.is_empty() {
            self.total
        } else {
            first_kept + (skip + lines.len()) as u64 - 1
        };
        (last, lines)
    }

    fn last(&self, n: usize) -> Vec<LogLine> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }
}

const WAKER: Token = Token(0);
/// Reads per pipe per wake-up before others get a turn.
const READS_PER_TURN: usize = 16;

enum PumpMsg {
    Add {
        fd: OwnedFd,
        log: Arc<ProcessLog>,
        stream: Stream,
    },
}

/// Handle to the log pump thread. The thread ends when the last handle is dropped
/// and every pipe has reached end of file.
#[derive(Clone)]
pub(crate) struct LogPump {
    tx: mpsc::Sender<PumpMsg>,
    waker: Arc<Waker>,
}

impl LogPump {
    pub(crate) fn start() -> io::Result<LogPump> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let max_files = max_open_log_files(limit);
        std::thread::Builder::new()
            .name("hangar-logs".into())
            .stack_size(256 * 1024)
            .spawn(move || pump(poll, rx, max_files))?;
        Ok(LogPump { tx, waker })
    }

    /// Start draining `fd` (a pipe read end) into `log`.
    pub(crate) fn add(&self, fd: OwnedFd, log: Arc<ProcessLog>, stream: Stream) {
        if self.tx.send(PumpMsg::Add { fd, log, stream }).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

struct Pipe {
    file: File,
    log: Arc<ProcessLog>,
    stream: Stream,
}

fn pump(mut poll: Poll, rx: mpsc::Receiver<PumpMsg>, max_files: usize) {
    let mut events = Events::with_capacity(256);
    let mut open_logs = OpenLogs::new(max_files);
    let mut pipes: HashMap<Token, Pipe> = HashMap::new();
    let mut next = 1usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut again: Vec<Token> = Vec::new();
    let mut senders_gone = false;
    loop {
        if senders_gone && pipes.is_empty() {
            return;
        }
        let timeout = (!again.is_empty()).then_some(Duration::ZERO);
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let mut ready: Vec<Token> = std::mem::take(&mut again);
        for ev in events.iter() {
            if ev.token() == WAKER {
                loop {
                    match rx.try_recv() {
                        Ok(PumpMsg::Add { fd, log, stream }) => {
                            if rustix::io::ioctl_fionbio(&fd, true).is_err() {
                                continue;
                            }
                            let file = File::from(fd);
                            let token = Token(next);
                            next = next.wrapping_add(1).max(1);
                            use std::os::fd::AsRawFd;
                            let raw = file.as_raw_fd();
                            if poll
                                .registry()
                                .register(&mut SourceFd(&raw), token, Interest::READABLE)
                                .is_ok()
                            {
                                pipes.insert(token, Pipe { file, log, stream });
                            }
                        }
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            senders_gone = true;
                            break;
                        }
                    }
                }
            } else if !ready.contains(&ev.token()) {
                ready.push(ev.token());
            }
        }
        for token in ready {
            let Some(pipe) = pipes.get_mut(&token) else {
                continue;
            };
            let mut done = false;
            let mut turns = 0;
            loop {
                if turns == READS_PER_TURN {
                    again.push(token);
                    break;
                }
                turns += 1;
                match pipe.file.read(&mut buf) {
                    Ok(0) => {
                        done = true;
                        break;
                    }
                    Ok(n) => {
                        if pipe.log.write(pipe.stream, &buf[..n]) {
                            open_logs.opened(&pipe.log, pipe.stream);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        done = true;
                        break;
                    }
                }
            }
            if done {
                if let Some(pipe) = pipes.remove(&token) {
                    use std::os::fd::AsRawFd;
                    let raw = pipe.file.as_raw_fd();
                    let _ = poll.registry().deregister(&mut SourceFd(&raw));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_returns_lines_after_a_number() {
        let mut t = Tail::new(20);
        t.push(Stream::Stdout, b"a\nb\nc\n", SystemTime::UNIX_EPOCH);
        let (n, lines) = t.since(1, 10);
        assert_eq!(n, 3);
        assert_eq!(
            lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        let (n, lines) = t.since(3, 10);
        assert_eq!((n, lines.len()), (3, 0));
        let (n, lines) = t.since(0, 2);
        assert_eq!((n, lines.len()), (2, 2));
        // Older lines fall out of the 20-byte tail; numbering continues.
        t.push(
            Stream::Stdout,
            b"0123456789\n0123456789\n",
            SystemTime::UNIX_EPOCH,
        );
        let (n, lines) = t.since(1, 10);
        assert_eq!(n, 5);
        assert_eq!(lines.len(), 1);
        assert_eq!(t.total, 5);
    }

    #[test]
    fn open_log_files_stay_under_the_cap_and_every_write_lands() {
        let dir = std::env::temp_dir().join(format!("hangar-pool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = LogSpec {
            dir: Some(dir.clone()),
            ..LogSpec::default()
        };
        let logs: Vec<Arc<ProcessLog>> = (0..40)
            .map(|i| ProcessLog::new(Arc::from(format!("p{i}").as_str()), spec.clone()))
            .collect();
        let mut pool = OpenLogs::new(8);
        let open = |logs: &[Arc<ProcessLog>]| {
            logs.iter()
                .map(|l| l.inner.lock().expect("lock").files.iter().flatten().count())
                .sum::<usize>()
        };
        for round in 0..3 {
            for l in &logs {
                for stream in [Stream::Stdout, Stream::Stderr] {
                    if l.write(stream, format!("round {round}\n").as_bytes()) {
                        pool.opened(l, stream);
                    }
                    assert!(open(&logs) <= 8, "{} files open", open(&logs));
                }
            }
        }
        // A file that keeps being written is not the one closed.
        let hot = &logs[0];
        for i in 0..20 {
            if hot.write(Stream::Stdout, b"hot\n") {
                pool.opened(hot, Stream::Stdout);
            }
            let cold = &logs[1 + i];
            if cold.write(Stream::Stdout, b"cold\n") {
                pool.opened(cold, Stream::Stdout);
            }
        }
        for (i, l) in logs.iter().enumerate() {
            for stream in [Stream::Stdout, Stream::Stderr] {
                let text = std::fs::read_to_string(l.path(stream).expect("path")).expect("read");
                for round in 0..3 {
                    assert!(text.contains(&format!("round {round}\n")), "p{i}: {text:?}");
                }
            }
        }
        let hot_text =
            std::fs::read_to_string(hot.path(Stream::Stdout).expect("path")).expect("read");
        assert_eq!(hot_text.matches("hot").count(), 20);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tail_keeps_last_lines_within_cap() {
        let mut t = Tail::new(20);
        t.push(Stream::Stdout, b"hello\nwor", SystemTime::UNIX_EPOCH);
        t.push(Stream::Stderr, b"oops\n", SystemTime::UNIX_EPOCH);
        t.push(Stream::Stdout, b"ld\n", SystemTime::UNIX_EPOCH);
        let got: Vec<_> = t.last(10).into_iter().map(|l| l.text).collect();
        assert_eq!(got, ["hello", "oops", "world"]);
        t.push(Stream::Stdout, b"0123456789\n", SystemTime::UNIX_EPOCH);
        let got: Vec<_> = t.last(10).into_iter().map(|l| l.text).collect();
        assert_eq!(got, ["world", "0123456789"]);
        assert!(t.bytes <= 20);
    }

    #[test]
    fn rotation_keeps_newest_files() {
        let dir = std::env::temp_dir().join(format!("hangar-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = LogSpec {
            dir: Some(dir.clone()),
            max_size: 4096,
            keep: 2,
            ..LogSpec::default()
        };
        let path = dir.join("p.stdout.log");
        let mut f = LogFile::open(path.clone(), &spec).unwrap();
        let chunk = vec![b'x'; 3000];
        for _ in 0..6 {
            f.write(&chunk).unwrap();
        }
        // Let the maintenance thread prune.
        for _ in 0..200 {
            let n = std::fs::read_dir(&dir).unwrap().count();
            if n == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "p.stdout.log");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
