//! Writing a rendered config atomically, and checking it with the feature's
//! own checker.
//!
//! [`stage`] writes every file to a temp file in its final directory (mode
//! 0600, fsynced); [`Staged::commit`] renames them into place and fsyncs the
//! directory; dropping a [`Staged`] without committing removes the temps. So an
//! update can check the new config before it replaces the old one, and a
//! failure leaves the old files as they were.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{safe_rel_path, Rendered};
use crate::catalog::manifest::Manifest;
use crate::{Error, Result};

/// A config the feature's checker rejected.
pub const CHECK_FAILED: crate::ErrorKind = crate::ErrorKind::ConfigCheckFailed;
/// The checker did not finish in time (its process group was killed).
pub const CHECK_TIMEOUT: crate::ErrorKind = crate::ErrorKind::ConfigCheckTimeout;
/// The checker could not be started.
pub const CHECKER_UNAVAILABLE: crate::ErrorKind = crate::ErrorKind::ConfigCheckerUnavailable;
/// A config file could not be written.
pub const WRITE_FAILED: crate::ErrorKind = crate::ErrorKind::ConfigWriteFailed;

/// How long a checker may run unless the manifest says otherwise.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of the checker's output an error keeps (the end of it).
const OUTPUT_TAIL: usize = 2048;

fn write_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(WRITE_FAILED, format!("{what}: {e}"))
        .with("path", path.display())
        .hint("check the instance directory exists, is writable and its disk is not full")
}

/// Files written to temp names beside their final paths, not yet in place.
#[derive(Debug)]
pub struct Staged {
    /// (temp, final) for each file; the main file first.
    files: Vec<(PathBuf, PathBuf)>,
    dirs: Vec<PathBuf>,
    committed: bool,
}

impl Staged {
    /// The staged main file (a temp name keeping the file's extension): give
    /// this to [`check`] before committing.
    pub fn main_path(&self) -> &Path {
        self.files
            .first()
            .map(|(t, _)| t.as_path())
            .unwrap_or(Path::new(""))
    }

    /// Where the main file will be after [`Staged::commit`].
    pub fn final_main_path(&self) -> &Path {
        self.files
            .first()
            .map(|(_, f)| f.as_path())
            .unwrap_or(Path::new(""))
    }

    /// Rename every file into place and fsync the directories; returns the main
    /// file's final path.
    pub fn commit(mut self) -> Result<PathBuf> {
        for (tmp, fin) in &self.files {
            std::fs::rename(tmp, fin)
                .map_err(|e| write_err("cannot move the config into place", fin, e))?;
        }
        self.committed = true;
        for d in &self.dirs {
            if let Ok(f) = File::open(d) {
                let _ = f.sync_all();
            }
        }
        Ok(self.final_main_path().to_path_buf())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            for (tmp, _) in &self.files {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
}

/// Write every file of `r` under `config_dir` (created 0700 if missing) to a
/// temp file in the same directory, mode 0600, fsynced; nothing is in place
/// until [`Staged::commit`].
pub fn stage(config_dir: &Path, r: &Rendered) -> Result<Staged> {
    let mut order: Vec<&super::RenderedFile> =
        r.files.iter().filter(|f| f.rel_path == r.main).collect();
    if order.is_empty() {
        return Err(Error::new(
            super::RENDER_FAILED,
            format!("the rendered config has no main file {:?}", r.main),
        ));
    }
    order.extend(r.files.iter().filter(|f| f.rel_path != r.main));
    let mut staged = Staged {
        files: Vec::new(),
        dirs: Vec::new(),
        committed: false,
    };
    for f in order {
        let rel = safe_rel_path(&f.rel_path)?;
        let fin = config_dir.join(rel);
        let dir = fin.parent().unwrap_or(config_dir).to_path_buf();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| write_err("cannot create the config dir", &dir, e))?;
        let name = fin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut tmp = None;
        for attempt in 0..16u32 {
            let cand = dir.join(format!(
                ".hangar-tmp-{}-{}-{attempt}-{name}",
                std::process::id(),
                fastrand_u32()
            ));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&cand)
            {
                Ok(file) => {
                    tmp = Some((cand, file));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(write_err("cannot create a temp file", &cand, e)),
            }
        }
        let Some((tmp_path, mut file)) = tmp else {
            return Err(write_err(
                "cannot create a temp file",
                &dir,
                std::io::Error::other("names taken"),
            ));
        };
        // Registered first, so a failure below removes it (Drop).
        staged.files.push((tmp_path.clone(), fin));
        file.write_all(f.contents.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| write_err("cannot write the config", &tmp_path, e))?;
        if !staged.dirs.contains(&dir) {
            staged.dirs.push(dir);
        }
    }
    Ok(staged)
}

fn fastrand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32
}

/// [`stage`] then [`Staged::commit`]: every file replaced atomically (temp file
/// in the same dir, fsync, rename, mode 0600). Returns the main file's path.
pub fn write_atomic(config_dir: &Path, r: &Rendered) -> Result<PathBuf> {
    stage(config_dir, r)?.commit()
}

/// Run the feature's checker (`config.validate`: arguments to `binary`, with
/// `{{config}}` → `config_path` and `{{config_dir}}` → its directory) with the
/// manifest's timeout (`config.validate_timeout_seconds`, default 30 s).
/// Nothing to run is success. Blocks: call it from a blocking thread.
///
/// Exit 0 is success; otherwise `CONFIG_CHECK_FAILED` with the checker's
/// output (stdout and stderr interleaved, trimmed, the last ~2 KB) in the
/// context as `output`. A checker that runs too long has its process group
/// killed: `CONFIG_CHECK_TIMEOUT`. One that cannot start:
/// `CONFIG_CHECKER_UNAVAILABLE`.
pub fn check(m: &Manifest, r: &Rendered, binary: &Path, config_path: &Path) -> Result<()> {
    let timeout = m
        .config
        .as_ref()
        .and_then(|c| c.validate_timeout_seconds)
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_CHECK_TIMEOUT);
    check_with_timeout(m, r, binary, config_path, timeout)
}

/// [`check`] with an explicit timeout.
pub fn check_with_timeout(
    m: &Manifest,
    r: &Rendered,
    binary: &Path,
    config_path: &Path,
    timeout: Duration,
) -> Result<()> {
    let Some(spec) = m.config.as_ref().filter(|c| !c.validate.is_empty()) else {
        return Ok(());
    };
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let args: Vec<String> = spec
        .validate
        .iter()
        .map(|a| substitute(a, config_path, dir))
        .collect();
    let shown = format!("{} {}", binary.display(), args.join(" "));
    let ctx = |e: Error| {
        e.with("feature", &m.id)
            .with("checker", &shown)
            .with("config", config_path.display())
            .with("main", &r.main)
    };
    let (reader, writer) = rustix::pipe::pipe().map_err(|e| {
        ctx(Error::new(
            CHECKER_UNAVAILABLE,
            format!("cannot make a pipe for the checker: {e}"),
        ))
    })?;
    let writer2 = writer.try_clone().map_err(|e| {
        ctx(Error::new(
            CHECKER_UNAVAILABLE,
            format!("cannot make a pipe for the checker: {e}"),
        ))
    })?;
    let mut cmd = Command::new(binary);
    cmd.args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        .process_group(0);
    let spawned = cmd.spawn();
    // The parent's copies of the write end go with `cmd`, so EOF comes when
    // the checker (and anything it left behind) is gone.
    drop(cmd);
    let mut child = spawned.map_err(|e| {
        ctx(
            Error::new(CHECKER_UNAVAILABLE, format!("cannot run the checker: {e}"))
                .hint("is the feature installed? the checker is the feature's own binary"),
        )
    })?;
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    {
        let buf = Arc::clone(&buf);
        let mut reader = File::from(reader);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                        b.extend_from_slice(&chunk[..n]);
                        // Keep a bounded tail.
                        if b.len() > 4 * OUTPUT_TAIL {
                            let cut = b.len() - 2 * OUTPUT_TAIL;
                            b.drain(..cut);
                        }
                    }
                }
            }
            let _ = done_tx.send(());
        });
    }
    let pid = rustix::process::Pid::from_child(&child);
    let start = Instant::now();
    let mut timed_out = false;
    loop {
        // Look without reaping, so the group id cannot be reused before the
        // group is killed below.
        match rustix::process::waitid(
            rustix::process::WaitId::Pid(pid),
            rustix::process::WaitIdOptions::EXITED
                | rustix::process::WaitIdOptions::NOHANG
                | rustix::process::WaitIdOptions::NOWAIT,
        ) {
            Ok(Some(_)) => break,
            Ok(None) => {}
            Err(_) => break,
        }
        if start.elapsed() >= timeout {
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10).min(timeout / 10 + Duration::from_millis(1)));
    }
    // Leftovers of the checker (or all of it, on timeout) go with its group.
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    let status = child.wait().map_err(|e| {
        ctx(Error::new(
            CHECKER_UNAVAILABLE,
            format!("cannot wait for the checker: {e}"),
        ))
    })?;
    let _ = done_rx.recv_timeout(Duration::from_secs(2));
    let output = tail(&buf.lock().unwrap_or_else(|p| p.into_inner()));
    if timed_out {
        return Err(ctx(Error::new(
            CHECK_TIMEOUT,
            format!("the checker did not finish in {:?}; it was killed", timeout),
        ))
        .with("output", &output)
        .hint("raise config.validate_timeout_seconds in the manifest, or check the binary works"));
    }
    if status.success() {
        return Ok(());
    }
    let last = output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    Err(ctx(Error::new(
        CHECK_FAILED,
        format!(
            "{} rejected the generated config ({status}){}",
            m.id,
            if last.is_empty() { String::new() } else { format!(": {last}") }
        ),
    ))
    .with("output", &output)
    .hint("the checker's output says what it refused: fix the options (or the template) and try again"))
}

/// [`check`] on a blocking thread, for async callers (the instance flow).
pub async fn check_async(
    m: Manifest,
    r: Rendered,
    binary: PathBuf,
    config_path: PathBuf,
) -> Result<()> {
    tokio::task::spawn_blocking(move || check(&m, &r, &binary, &config_path))
        .await
        .map_err(|e| Error::new(CHECKER_UNAVAILABLE, format!("the checker task failed: {e}")))?
}

fn substitute(arg: &str, config: &Path, dir: &Path) -> String {
    let mut out = arg.to_string();
    for (k, v) in [("config_dir", dir), ("config", config)] {
        let v = v.to_string_lossy();
        out = out
            .replace(&format!("{{{{{k}}}}}"), &v)
            .replace(&format!("{{{{ {k} }}}}"), &v);
    }
    out
}

/// The end of `b`, at most [`OUTPUT_TAIL`] bytes on a char boundary, trimmed.
fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    if s.len() <= OUTPUT_TAIL {
        return s.to_string();
    }
    let mut start = s.len() - OUTPUT_TAIL;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", s[start..].trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end() {
        let long = "x".repeat(5000) + "END";
        let t = tail(long.as_bytes());
        assert!(t.ends_with("END"));
        assert!(t.len() <= OUTPUT_TAIL + 4);
        assert_eq!(tail(b"  short \n"), "short");
    }

    #[test]
    fn substitution() {
        let p = Path::new("/c/d/torrc");
        assert_eq!(substitute("{{config}}", p, Path::new("/c/d")), "/c/d/torrc");
        assert_eq!(
            substitute("-D{{ config_dir }}", p, Path::new("/c/d")),
            "-D/c/d"
        );
    }
}
