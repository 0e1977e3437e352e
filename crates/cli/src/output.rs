//! Printing that never panics: `println!` and friends panic when the reader
//! went away, and the release profile turns a panic into an abort.
//!
//! Standard output belongs to whoever reads it (`hangar ps | head -1`): when
//! a write fails the command stops at once: quietly with 0 for a closed pipe
//! (the reader had what it wanted, as `head` does), and 1 with a one-line
//! error otherwise (`> /dev/full`). Only client commands write to
//! standard output; the supervisors (`run`, `serve`) never do.
//!
//! Standard error is best effort: a failed write is dropped, so a supervisor
//! whose stderr went away keeps supervising and still stops gracefully.
//!
//! Colour (`--color`, `NO_COLOR`): decided once per stream at start, for
//! hangar's own log lines (stderr) and for what client commands print
//! (stdout); by default only a terminal gets escape codes, never a file, a
//! pipe or the journal.

use std::fmt;
use std::io::{ErrorKind, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// `print!` that stops the command when standard output is gone.
#[allow(unused_macros)]
macro_rules! out {
    ($($t:tt)*) => { $crate::output::out(format_args!($($t)*)) };
}

/// `println!` that stops the command when standard output is gone.
macro_rules! outln {
    () => { $crate::output::out(format_args!("\n")) };
    ($($t:tt)*) => { $crate::output::out(format_args!("{}\n", format_args!($($t)*))) };
}

/// `eprintln!` that drops what cannot be written.
macro_rules! errln {
    () => { $crate::output::err(format_args!("\n")) };
    ($($t:tt)*) => { $crate::output::err(format_args!("{}\n", format_args!($($t)*))) };
}

/// Write to standard output; on failure end the process (quietly with 0 for
/// a reader that went away, 1 with an error otherwise).
pub fn out(args: fmt::Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.flush()) {
        drop(o);
        gone(&e)
    }
}

/// Write to standard error; a failure is dropped.
pub fn err(args: fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args);
}

fn gone(e: &std::io::Error) -> ! {
    if e.kind() == ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    err(format_args!(
        "error[IO_ERROR]: cannot write to standard output: {e}\n"
    ));
    std::process::exit(1)
}

/// Write raw bytes to standard output, as [`out`] does.
pub fn out_bytes(bytes: &[u8]) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(bytes).and_then(|()| o.flush()) {
        drop(o);
        gone(&e)
    }
}

/// `--color`: when to colour output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    /// Only on a terminal, and not when `NO_COLOR` is set to anything.
    Auto,
    /// Always, even into files and pipes (and despite `NO_COLOR`).
    Always,
    /// Never.
    Never,
}

/// Whether a stream gets colour: `always` and `never` decide alone; `auto`
/// colours a terminal unless `NO_COLOR` is set and not empty.
pub fn colored(when: ColorWhen, is_terminal: bool) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    }
}

static STDOUT_COLOR: AtomicBool = AtomicBool::new(false);

/// Decide, once, whether standard output gets colour.
pub fn set_color(when: ColorWhen) {
    STDOUT_COLOR.store(
        colored(when, std::io::stdout().is_terminal()),
        Ordering::Relaxed,
    );
}

/// SGR colours [`paint`] uses.
#[derive(Clone, Copy)]
pub enum Paint {
    Green,
    Red,
    Yellow,
    Dim,
}

/// `text` in colour when standard output takes colour, else as it is.
/// The caller pads: escape codes have no width.
pub fn paint(text: &str, p: Paint) -> String {
    if !STDOUT_COLOR.load(Ordering::Relaxed) {
        return text.to_string();
    }
    let sgr = match p {
        Paint::Green => "32",
        Paint::Red => "31",
        Paint::Yellow => "33",
        Paint::Dim => "2",
    };
    format!("\x1b[{sgr}m{text}\x1b[0m")
}
