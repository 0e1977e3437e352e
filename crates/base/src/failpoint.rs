//! Crash points: places where a test may have the program killed with
//! SIGKILL, to prove that what it persisted up to there is enough for the
//! next start to recover from (`crates/cli/tests/crash_matrix.rs`).
//!
//! A point is written [`crash_point!`]`("instance.step.config.stored")` at
//! each step that persists something. Only with this crate's `failpoints`
//! feature is there any code behind it: `hangar-cli`'s tests turn the
//! feature on (through a dev-dependency), so `cargo test` builds a `hangar`
//! with the points and `cargo build --release` builds one without them (the
//! macro expands to nothing and [`setup`] does nothing).
//!
//! The points are fail points of the `fail` crate (tikv's fail-rs), armed by
//! the `FAILPOINTS` environment variable in fail-rs's syntax,
//! `NAME=ACTIONS;NAME=ACTIONS`. The action that kills is `return`:
//! `FAILPOINTS=instance.step.config.stored=return` SIGKILLs the process the
//! first time it gets there. `return(WORD)` kills only when the point's
//! context (what the caller passed as the second argument: for a change of
//! the desired set, the names of the processes it adds, changes or removes)
//! contains `WORD`, so a point on a shared path (every change of the desired
//! set goes through one) stops the operation a test means and not the boot
//! before it. The other fail-rs actions work as fail-rs defines them
//! (`off`, `sleep(MS)`, counts like `2*return`: a count counts every time
//! the point is reached, in any context); a `panic` is refused, because a
//! panic is not a crash.
//!
//! Before the kill a line `crash point NAME: SIGKILL` goes to standard error
//! (written directly: the logger may buffer), so a test can show where the
//! program died.

/// Marks a step that persisted something, where a crash test may kill the
/// program. `crash_point!(NAME)` or `crash_point!(NAME, CONTEXT)` with
/// `CONTEXT` a slice of strings (see the module docs). Without the
/// `failpoints` feature this is nothing at all: `CONTEXT` is not evaluated.
#[cfg(feature = "failpoints")]
#[macro_export]
macro_rules! crash_point {
    ($name:expr) => {
        $crate::failpoint::reached($name, &[] as &[&str])
    };
    ($name:expr, $context:expr) => {
        $crate::failpoint::reached($name, $context)
    };
}

/// Marks a step that persisted something, where a crash test may kill the
/// program. `crash_point!(NAME)` or `crash_point!(NAME, CONTEXT)` with
/// `CONTEXT` a slice of strings (see the module docs). Without the
/// `failpoints` feature (as here) this is nothing at all: `CONTEXT` is not
/// evaluated.
#[cfg(not(feature = "failpoints"))]
#[macro_export]
macro_rules! crash_point {
    ($name:expr $(, $context:expr)?) => {{}};
}

/// Whether this build has crash points.
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Arm the points `FAILPOINTS` names. Without the feature, or without the
/// variable, it does nothing. A malformed entry, or a `panic` action, is an
/// error naming it; the points named before it stay armed.
pub fn setup() -> Result<Vec<String>, String> {
    imp::setup()
}

#[cfg(feature = "failpoints")]
mod imp {
    pub(super) fn setup() -> Result<Vec<String>, String> {
        let Some(text) = std::env::var_os("FAILPOINTS") else {
            return Ok(Vec::new());
        };
        let text = text
            .into_string()
            .map_err(|_| "FAILPOINTS is not UTF-8".to_string())?;
        let mut armed = Vec::new();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((name, actions)) = entry.split_once('=') else {
                return Err(format!("{entry:?} is not NAME=ACTIONS"));
            };
            let (name, actions) = (name.trim(), actions.trim());
            if actions.contains("panic") {
                return Err(format!(
                    "{name}: a panic is not a crash; use return (a SIGKILL)"
                ));
            }
            fail::cfg(name, actions).map_err(|e| format!("{name}: {e}"))?;
            armed.push(name.to_string());
        }
        Ok(armed)
    }
}

#[cfg(not(feature = "failpoints"))]
mod imp {
    pub(super) fn setup() -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// The point `name` was reached with `context`: SIGKILL the program if it
/// is armed for that context. Called by [`crash_point!`].
#[cfg(feature = "failpoints")]
#[doc(hidden)]
pub fn reached<S: AsRef<str>>(name: &str, context: &[S]) {
    // fail_point! returns from the function it is in; this closure is that
    // function, so the caller goes on unless the program dies.
    let armed = (|| -> Option<Option<String>> {
        fail::fail_point!(name, Some);
        None
    })();
    let Some(filter) = armed else { return };
    let wanted = match filter.as_deref().map(str::trim) {
        None | Some("") => true,
        Some(f) => context.iter().any(|c| c.as_ref() == f),
    };
    if wanted {
        crash(name);
    }
}

/// SIGKILL this process: no destructor, no flush, no `atexit`, as a power
/// cut or the OOM killer would have it.
#[cfg(feature = "failpoints")]
fn crash(name: &str) -> ! {
    use std::io::Write;
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("crash point {name}: SIGKILL\n").as_bytes());
    // The one signal this crate sends, and only in builds with crash points
    // (crates/cli/tests/architecture.rs lists it as an exception).
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    loop {
        std::thread::park();
    }
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    #[test]
    fn a_point_that_is_not_armed_does_nothing() {
        super::reached("not.armed", &["x"]);
    }

    #[test]
    fn a_point_armed_for_another_context_does_nothing() {
        fail::cfg("armed.elsewhere", "return(other)").unwrap();
        super::reached("armed.elsewhere", &["x", "y"]);
        fail::remove("armed.elsewhere");
    }
}
