//! `hangar`: the one binary. Today: `hangar run FILE` and `hangar check FILE`.
//!
//! Only this crate renders errors and prints; the libraries return typed errors
//! with a code, context and hint.


mod render;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes, stable for scripts.
pub mod exit {
    /// Everything went as asked.
    pub const OK: u8 = 0;
    /// A runtime failure (could not start the supervisor, …).
    pub const FAILURE: u8 = 1;
    /// Bad input: the command line or a file was invalid; nothing was started.
    pub const USAGE: u8 = 2;
    /// Stopped by a second SIGINT/SIGTERM before the graceful stop finished.
    pub const FORCED: u8 = 130;
}

#[derive(Parser)]
#[command(
    name = "hangar",
    version,
    about = "Install, configure, supervise and call third-party services",
    long_about = "hangar runs service binaries supervised: each in its own process group, \
restarted with backoff behind a circuit breaker, stopped gracefully with its whole group, \
with its output captured to rotated log files.",
    after_help = "Exit codes: 0 ok, 1 runtime failure, 2 invalid input (nothing started), \
130 forced stop.\nDocs: README.md (process file format), ARCHITECTURE.md."
)]
struct Cli {
    /// Format of hangar's own log lines (on stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Log filter, e.g. `info`, `debug`, `hangar=trace` (also $HANGAR_LOG).
    #[arg(long, global = true, env = "HANGAR_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the processes of a TOML process file in the foreground.
    ///
    /// Starts every [[process]] of FILE, supervises them (restart policy, backoff,
    /// circuit breaker, logs) and, on SIGINT or SIGTERM, stops them all gracefully
    /// and exits 0. A second signal stops at once. A file with errors is refused
    /// with every error listed (exit code 2) and nothing started.
    Run(RunArgs),
    /// Check a process file and list what it would run, without starting anything.
    Check {
        /// The process file (TOML).
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The process file (TOML).
    file: PathBuf,
    /// Directory for process log files, for processes that set none
    /// [default: $XDG_STATE_HOME/hangar/logs, or ~/.local/state/hangar/logs].
    #[arg(long, conflicts_with = "no_log_files")]
    log_dir: Option<PathBuf>,
    /// Keep process output in memory only; write no log files.
    #[arg(long)]
    no_log_files: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_tracing(cli.log_format, &cli.log_level) {
        eprintln!("error[USAGE]: invalid --log-level {:?}: {e}", cli.log_level);
        return ExitCode::from(exit::USAGE);
    }
    raise_fd_limit();
    let code = match cli.command {
        Command::Run(args) => {
            let log_dir = if args.no_log_files {
                None
            } else {
                args.log_dir.or_else(default_log_dir)
            };
            run::run(&args.file, log_dir)
        }
        Command::Check { file } => run::check(&file),
    };
    ExitCode::from(code)
}

fn init_tracing(format: LogFormat, filter: &str) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

fn default_log_dir() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("hangar").join("logs"))
}

/// Each child costs a pidfd and two pipe ends: lift the soft fd limit to the hard
/// one so a thousand processes fit.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        );
    }
}
