//! Writing a rendered config atomically, and checking it with the feature's
//! own checker.
//!
//! [`stage`] writes every file to a temp file in its final directory (mode
//! 0600, fsynced); [`Staged::commit`] renames them into place and fsyncs the
//! directory; dropping a [`Staged`] without committing removes the temps. So an
//! update can check the new config before it replaces the old one, and a
//! failure leaves the old files as they were.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hangar_supervisor::{ExitInfo, Manager, ManagerOptions, ProcessSpec};

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
const _: () = assert!(OUTPUT_TAIL * 2 <= hangar_supervisor::ONCE_OUTPUT_LIMIT);

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
                "{TEMP_PREFIX}{}-{}-{attempt}-{name}",
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

/// The prefix of [`stage`]'s temp files.
const TEMP_PREFIX: &str = ".hangar-tmp-";

/// Remove the temp files a [`stage`] left under `config_dir` (at any depth)
/// because the program died before it committed or dropped them. Only for
/// when no stage of this directory can be under way (a daemon's start).
/// Returns how many were removed.
pub fn remove_stale_temps(config_dir: &Path) -> usize {
    let mut n = 0;
    let Ok(entries) = std::fs::read_dir(config_dir) else {
        return 0;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            n += remove_stale_temps(&e.path());
        } else if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            && std::fs::remove_file(e.path()).is_ok()
        {
            n += 1;
        }
    }
    n
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

/// The manager checkers run through when the caller has none: one of this
/// module's own, made on first use. Either way a checker is a one-shot
/// command of the supervisor ([`Manager::run_once`]): its own session and
/// process group, `PR_SET_PDEATHSIG`, `no_new_privs`, the group killed on
/// timeout. The daemon passes its own manager ([`check_with`]), so its
/// checkers also carry its recovery marker.
static OWN_MANAGER: std::sync::OnceLock<Manager> = std::sync::OnceLock::new();

fn own_manager() -> std::result::Result<Manager, hangar_supervisor::Error> {
    if let Some(m) = OWN_MANAGER.get() {
        return Ok(m.clone());
    }
    let m = Manager::with_options(ManagerOptions {
        spawn_threads: 1,
        ..ManagerOptions::default()
    })?;
    Ok(OWN_MANAGER.get_or_init(|| m).clone())
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
    check_with_timeout(m, r, binary, config_path, timeout_of(m))
}

/// The manifest's checker timeout, or [`DEFAULT_CHECK_TIMEOUT`].
fn timeout_of(m: &Manifest) -> Duration {
    m.config
        .as_ref()
        .and_then(|c| c.validate_timeout_seconds)
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_CHECK_TIMEOUT)
}

/// [`check`] with an explicit timeout.
pub fn check_with_timeout(
    m: &Manifest,
    r: &Rendered,
    binary: &Path,
    config_path: &Path,
    timeout: Duration,
) -> Result<()> {
    if m.config.as_ref().is_none_or(|c| c.validate.is_empty()) {
        return Ok(());
    }
    let manager = own_manager().map_err(|e| unavailable(m, r, binary, config_path, &e))?;
    block_on_checker(m, r, binary, config_path, async {
        check_in(
            &manager,
            m,
            r,
            binary,
            config_path,
            timeout,
            &BTreeMap::new(),
        )
        .await
    })
}

/// [`check`] through `manager` (the daemon's). Blocks: call it from a
/// blocking thread.
pub fn check_with(
    manager: &Manager,
    m: &Manifest,
    r: &Rendered,
    binary: &Path,
    config_path: &Path,
) -> Result<()> {
    check_with_env(manager, m, r, binary, config_path, &BTreeMap::new())
}

/// [`check_with`] with the process environment the manifest asks for
/// (`binary.env` expanded by [`Manifest::env_for`], e.g. the bundle's
/// library directory in `LD_LIBRARY_PATH`): the checker is the feature's own
/// binary and needs what its process needs.
pub fn check_with_env(
    manager: &Manager,
    m: &Manifest,
    r: &Rendered,
    binary: &Path,
    config_path: &Path,
    env: &BTreeMap<String, String>,
) -> Result<()> {
    block_on_checker(m, r, binary, config_path, async {
        check_in(manager, m, r, binary, config_path, timeout_of(m), env).await
    })
}

/// Drive a checker's future from a blocking thread.
fn block_on_checker(
    m: &Manifest,
    r: &Rendered,
    binary: &Path,
    config_path: &Path,
    checking: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    // On the caller's runtime when it has one (this is a blocking thread of
    // it), else on a small one of our own.
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt.block_on(checking),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                checker_ctx(m, r, binary, config_path)(Error::new(
                    CHECKER_UNAVAILABLE,
                    format!("cannot run the checker: {e}"),
                ))
            })?
            .block_on(checking),
    }
}

/// The checker's arguments with the paths substituted, and how to show the
/// command.
fn checker_args(m: &Manifest, binary: &Path, config_path: &Path) -> (Vec<String>, String) {
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let args: Vec<String> = m
        .config
        .iter()
        .flat_map(|c| c.validate.iter())
        .map(|a| substitute(a, config_path, dir))
        .collect();
    let shown = format!("{} {}", binary.display(), args.join(" "));
    (args, shown)
}

/// Adds the checker's context to an error.
fn checker_ctx<'a>(
    m: &'a Manifest,
    r: &'a Rendered,
    binary: &'a Path,
    config_path: &'a Path,
) -> impl Fn(Error) -> Error + 'a {
    move |e: Error| {
        let (_, shown) = checker_args(m, binary, config_path);
        e.with("feature", &m.id)
            .with("checker", &shown)
            .with("config", config_path.display())
            .with("main", &r.main)
    }
}

/// `CONFIG_CHECKER_UNAVAILABLE` for a checker the supervisor could not start.
fn unavailable(
    m: &Manifest,
    r: &Rendered,
    binary: &Path,
    config_path: &Path,
    e: &hangar_supervisor::Error,
) -> Error {
    // The I/O error underneath says it best ("No such file or directory").
    let why = match std::error::Error::source(e) {
        Some(src) => src.to_string(),
        None => e.message().to_string(),
    };
    checker_ctx(m, r, binary, config_path)(
        Error::new(
            CHECKER_UNAVAILABLE,
            format!("cannot run the checker: {why}"),
        )
        .hint("is the feature installed? the checker is the feature's own binary"),
    )
}

/// [`check`] through `manager` (a one-shot command of the supervisor, see
/// [`Manager::run_once`]), with an explicit timeout and extra environment.
pub async fn check_in(
    manager: &Manager,
    m: &Manifest,
    r: &Rendered,
    binary: &Path,
    config_path: &Path,
    timeout: Duration,
    env: &BTreeMap<String, String>,
) -> Result<()> {
    if m.config.as_ref().is_none_or(|c| c.validate.is_empty()) {
        return Ok(());
    }
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let (args, _) = checker_args(m, binary, config_path);
    let ctx = checker_ctx(m, r, binary, config_path);
    let Some(command) = binary.to_str() else {
        return Err(ctx(Error::new(
            CHECKER_UNAVAILABLE,
            format!("cannot run the checker: {} is not UTF-8", binary.display()),
        )
        .hint("install the feature under a path that is valid UTF-8")));
    };
    let mut spec = ProcessSpec::new("config-check", command).args(args);
    spec.working_dir = Some(dir.to_path_buf());
    spec.env
        .extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let out = manager
        .run_once(spec, timeout)
        .await
        .map_err(|e| unavailable(m, r, binary, config_path, &e))?;
    let output = tail(&out.output);
    if out.timed_out {
        return Err(ctx(Error::new(
            CHECK_TIMEOUT,
            format!("the checker did not finish in {:?}; it was killed", timeout),
        ))
        .with("output", &output)
        .hint("raise config.validate_timeout_seconds in the manifest, or check the binary works"));
    }
    if out.exit.success() {
        return Ok(());
    }
    let status = exit_status(&out.exit);
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

/// The exit as the standard library shows it ("exit status: 1", "signal: 9
/// (SIGKILL)"), as checker errors always said it.
fn exit_status(e: &ExitInfo) -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    let raw = match (e.code, e.signal) {
        (Some(code), _) => (code & 0xff) << 8,
        (None, Some(sig)) => (sig & 0x7f) | if e.core_dumped { 0x80 } else { 0 },
        (None, None) => 0xff << 8,
    };
    std::process::ExitStatus::from_raw(raw)
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
    fn exits_read_as_they_always_did() {
        assert_eq!(
            exit_status(&ExitInfo::code(3)).to_string(),
            "exit status: 3"
        );
        assert_eq!(
            exit_status(&ExitInfo::signal(9)).to_string(),
            "signal: 9 (SIGKILL)"
        );
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
