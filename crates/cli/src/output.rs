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

use std::fmt;
use std::io::{ErrorKind, Write};

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
