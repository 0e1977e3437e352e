//! `hangar`: the one binary: `hangar serve` (the daemon), its client commands
//! (`ps`, `start`, `stop`, `restart`, `logs`, `signal`, `events`, `status`,
//! `reload`, `add`, `remove`), and `hangar run FILE` / `hangar check FILE` without a daemon.
//!
//! Only this crate renders errors and prints; the libraries return typed errors
//! with a code, context and hint.

#[macro_use]
mod output;

mod browser;
mod client;
mod fleet;
mod instance;
mod market;
mod plugin;
mod render;
mod run;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use output::ColorWhen;

/// Exit codes, stable for scripts.
pub mod exit {
    use hangar_core::{Category, Error};

    /// Everything went as asked.
    pub const OK: u8 = 0;
    /// A runtime failure (could not start the supervisor, a limit, a timeout, …).
    pub const FAILURE: u8 = 1;
    /// Not done as asked, and nothing changed: invalid input, a conflict with
    /// what exists, or a state that does not allow it.
    pub const USAGE: u8 = 2;
    /// Unavailable: no daemon answers at the socket (or address), or a server
    /// it needed did not answer; trying again later may work.
    pub const NOT_RUNNING: u8 = 3;
    /// No process (instance, feature, …) matched the name or pattern.
    pub const NOT_FOUND: u8 = 4;
    /// Stopped by a second SIGINT/SIGTERM before the graceful stop finished.
    pub const FORCED: u8 = 130;

    /// The exit code for an error: its category alone decides.
    pub fn code_for(e: &Error) -> u8 {
        match e.category() {
            Category::NotFound => NOT_FOUND,
            Category::Invalid | Category::Conflict | Category::Precondition => USAGE,
            Category::Unavailable => NOT_RUNNING,
            Category::Exhausted
            | Category::Timeout
            | Category::Unauthenticated
            | Category::Internal => FAILURE,
        }
    }
}

#[derive(Parser)]
#[command(
    name = "hangar",
    version,
    about = "Install, configure, supervise and call third-party services",
    long_about = "hangar runs service binaries supervised: each in its own process group, \
restarted with backoff behind a circuit breaker, stopped gracefully with its whole group, \
with its output captured to rotated log files.",
    after_help = "Exit codes: 0 ok, 1 runtime failure, 2 invalid input, conflict or wrong state \
(nothing changed), 3 daemon (or a server it needs) not answering, 4 no such process, instance \
or feature, 130 forced stop.\n\
Docs: README.md (process file format), ARCHITECTURE.md; `hangar man`, `hangar completions`."
)]
struct Cli {
    /// Format of hangar's own log lines (on stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Log filter, e.g. `info`, `debug`, `hangar=trace` (also $HANGAR_LOG).
    #[arg(long, global = true, env = "HANGAR_LOG", default_value = "info")]
    log_level: String,
    /// When to colour output and hangar's own log lines.
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto)]
    color: ColorWhen,
    // The options below are also accepted here, before the subcommand, as
    // they always were (`hangar --data-dir X ps`), and read the environment
    // here only. Each subcommand lists in its own help only those it uses
    // (`Conn`, `DataDir`, `CatalogDirs`); a value given after the subcommand
    // wins.
    /// The daemon's data dir: store, control socket, logs [default:
    /// $XDG_DATA_HOME/hangar, or /var/lib/hangar as root].
    #[arg(long, env = "HANGAR_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Client commands: reach the daemon over TCP instead of its socket, e.g.
    /// http://127.0.0.1:9471.
    #[arg(long, env = "HANGAR_ADDR")]
    addr: Option<String>,
    /// `serve`, `catalog`, `install`: catalog directory of `<id>/manifest.json`
    /// (repeatable). Also $HANGAR_CATALOG, `:`-separated.
    #[arg(long = "catalog", value_name = "DIR")]
    catalogs: Vec<PathBuf>,
    /// Client commands: bearer token for --addr.
    #[arg(long, env = "HANGAR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Client commands: CA (PEM) of the daemon's TLS certificate, for --addr https://...
    #[arg(long, env = "HANGAR_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client commands: client certificate (PEM) for mTLS.
    #[arg(long, env = "HANGAR_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Client commands: client key (PEM) for mTLS.
    #[arg(long, env = "HANGAR_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// The ids differ from the top-level options': clap copies the value of a
// global option to every level that has an option of the same id, which
// would drop a value given before the subcommand.

/// `--data-dir`, for the commands that use the daemon's data dir.
#[derive(clap::Args, Default)]
struct DataDir {
    /// The daemon's data dir: store, control socket, logs (also
    /// $HANGAR_DATA_DIR) [default: $XDG_DATA_HOME/hangar, or /var/lib/hangar
    /// as root].
    #[arg(
        id = "sub_data_dir",
        long = "data-dir",
        global = true,
        value_name = "DIR"
    )]
    data_dir: Option<PathBuf>,
}

/// How a client command reaches the daemon.
#[derive(clap::Args, Default)]
#[command(next_help_heading = "Connection")]
struct Conn {
    #[command(flatten)]
    data: DataDir,
    /// Reach the daemon over TCP instead of its socket, e.g.
    /// http://127.0.0.1:9471 (also $HANGAR_ADDR).
    #[arg(id = "sub_addr", long = "addr", global = true, value_name = "ADDR")]
    addr: Option<String>,
    /// Bearer token for --addr (also $HANGAR_TOKEN).
    #[arg(id = "sub_token", long = "token", global = true, value_name = "TOKEN")]
    token: Option<String>,
    /// CA (PEM) of the daemon's TLS certificate, for --addr https://... (also
    /// $HANGAR_TLS_CA).
    #[arg(id = "sub_tls_ca", long = "tls-ca", global = true, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS (also $HANGAR_TLS_CERT).
    #[arg(
        id = "sub_tls_cert",
        long = "tls-cert",
        global = true,
        value_name = "FILE"
    )]
    tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mTLS (also $HANGAR_TLS_KEY).
    #[arg(
        id = "sub_tls_key",
        long = "tls-key",
        global = true,
        value_name = "FILE"
    )]
    tls_key: Option<PathBuf>,
}

/// `--catalog`, for the commands that read the catalog.
#[derive(clap::Args, Default)]
struct CatalogDirs {
    /// Catalog directory of `<id>/manifest.json` (repeatable; the first with an
    /// id wins). Also $HANGAR_CATALOG, `:`-separated. Default: the built-in catalog.
    #[arg(
        id = "sub_catalogs",
        long = "catalog",
        global = true,
        value_name = "DIR"
    )]
    catalogs: Vec<PathBuf>,
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
    /// Run the daemon in the foreground: supervise the configuration's processes
    /// and those added through the API, serve the control API on
    /// $DATA/hangar.sock and metrics on HTTP. SIGHUP reloads, SIGTERM stops.
    Serve {
        /// Configuration file: [daemon] settings and [[process]] tables.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// HTTP listener for /metrics (overrides daemon.http; '' turns it off).
        #[arg(long)]
        http: Option<String>,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        catalogs: CatalogDirs,
    },
    /// List processes (all, or those matching a glob).
    #[command(visible_alias = "ls", visible_alias = "list")]
    Ps {
        /// Name or glob, e.g. `web-*`.
        pattern: Option<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Start processes (desired state: running).
    Start(Select),
    /// Stop processes gracefully (desired state: stopped).
    Stop {
        #[command(flatten)]
        select: Select,
        /// Grace period before SIGKILL [default: each process's stop_timeout].
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Restart processes.
    Restart(Select),
    /// Show processes' recent output, merged in time order; with -f, follow it.
    ///
    /// Several names or a glob prefix each line with its process. Times are
    /// when hangar read the line from the process's pipe; the output kept is
    /// each process's in-memory tail (its `log.tail_bytes`), the log files
    /// hold the rest without times.
    Logs {
        /// Process names or globs, e.g. `web 'worker-*'`.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        opts: client::LogOpts,
        #[command(flatten)]
        conn: Conn,
    },
    /// Send a signal to processes: `hangar signal web HUP`.
    ///
    /// To each main process, or with --group to its whole process group.
    /// SIG is a name (`HUP`, `SIGHUP`, `usr1`) or a number (1 to 31).
    Signal {
        /// Name or glob, e.g. `web-*`.
        pattern: String,
        /// The signal: HUP, SIGHUP or 1.
        #[arg(value_name = "SIG")]
        signal: String,
        /// Signal the whole process group, not only the main process.
        #[arg(long)]
        group: bool,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show events from history; with -f, keep streaming new ones.
    Events {
        /// Keep streaming.
        #[arg(short, long)]
        follow: bool,
        /// Only processes matching this glob.
        #[arg(long, default_value = "")]
        name: String,
        /// Only these kinds (state, health); repeatable.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// How many past events to show.
        #[arg(short = 'n', long, default_value_t = 50)]
        last: u32,
        /// Only events after this id.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// JSON lines for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print the dashboard's login URL (and open it in a browser when one
    /// is at hand). The URL carries the API token: it logs in whoever opens it.
    Dashboard {
        /// Only print the URL.
        #[arg(long)]
        no_open: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show the daemon's status.
    Status {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Re-read the daemon's configuration file and apply the difference.
    Reload {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Add the processes of a process file to the running daemon.
    Add {
        /// Process file with one or more [[process]] tables.
        file: PathBuf,
        /// Register without starting.
        #[arg(long)]
        no_start: bool,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Browse the catalog of installable features.
    Catalog(CatalogArgs),
    /// Download, verify and install a feature: `hangar install ID[@VERSION]`.
    Install {
        /// Feature id, optionally with a version (`sing-box@1.12.8`).
        feature: String,
        /// Allow plain HTTP to hosts that are not loopback.
        #[arg(long)]
        allow_http: bool,
        /// Install even when the manifest gives nothing to verify against.
        #[arg(long)]
        allow_unverified: bool,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        catalogs: CatalogDirs,
    },
    /// Remove an installed feature: every version, or `ID@VERSION`.
    Uninstall {
        /// Feature id, optionally with a version.
        feature: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List installed features and versions.
    Installed {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Call plugins and list them with their health (`plugin call`, `plugin ls`).
    #[command(subcommand)]
    Plugin(plugin::Cmd),
    /// Stop a process added with `hangar add` and forget it.
    Remove {
        /// Process name.
        name: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Feature instances: create, start, stop, restart, delete, update, ls, show.
    Instance(InstanceArgs),
    /// The fleet of nodes sharing state on etcd ([daemon.fleet]): nodes,
    /// create, ls, delete, drain. Any node's daemon answers for the fleet.
    Fleet(FleetArgs),
    /// Write an instance as a Nomad job (HCL) or Kubernetes objects (YAML),
    /// for moving it to that scheduler. Secret options are never written:
    /// the output references them and says what to provide.
    Export {
        /// `nomad` or `kubernetes` (`k8s`).
        format: String,
        /// Instance id or name.
        instance: String,
        /// Write to FILE (atomically: all of it or nothing) instead of
        /// standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print a shell completion script: `hangar completions bash > /etc/bash_completion.d/hangar`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) made from these definitions: `hangar man > hangar.1`.
    Man,
}

#[derive(clap::Args)]
#[command(subcommand_required = true, arg_required_else_help = true)]
struct CatalogArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    catalogs: CatalogDirs,
    #[command(subcommand)]
    cmd: CatalogCmd,
}

#[derive(clap::Args)]
#[command(subcommand_required = true, arg_required_else_help = true)]
struct InstanceArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: instance::InstanceCmd,
}

#[derive(clap::Args)]
#[command(subcommand_required = true, arg_required_else_help = true)]
struct FleetArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: fleet::FleetCmd,
}

#[derive(Subcommand)]
enum CatalogCmd {
    /// Every feature in the catalog.
    #[command(visible_alias = "ls")]
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// One feature: manifest, resolved download for this machine, installs.
    Show {
        /// Feature id.
        id: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Features whose id, name, description or protocols match every word.
    Search {
        /// Words to look for.
        query: Vec<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct Select {
    /// Name or glob, e.g. `web-*`.
    pattern: String,
    /// JSON for scripts.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
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
    abort_on_panic();
    let cli = parse();
    output::set_color(cli.color);
    if let Err(e) = init_tracing(cli.log_format, &cli.log_level, cli.color) {
        errln!(
            "error[USAGE]: invalid --log-level {:?}: {e}\n  hint: write e.g. info, debug or hangar=trace",
            cli.log_level
        );
        return ExitCode::from(exit::USAGE);
    }
    // Crash points exist only in test builds (hangar_base::failpoint); in any
    // other build this reads nothing.
    match hangar_base::failpoint::setup() {
        Ok(armed) if !armed.is_empty() => {
            tracing::warn!(points = ?armed, "crash points armed (FAILPOINTS)");
        }
        Ok(_) => {}
        Err(e) => {
            errln!("error[USAGE]: FAILPOINTS: {e}");
            return ExitCode::from(exit::USAGE);
        }
    }
    raise_fd_limit();
    let top = Top {
        data_dir: cli.data_dir,
        addr: cli.addr,
        catalogs: cli.catalogs,
        token: cli.token,
        tls_ca: cli.tls_ca,
        tls_cert: cli.tls_cert,
        tls_key: cli.tls_key,
    };
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
        Command::Completions { shell } => completions(shell),
        Command::Man => man(),
        Command::Serve {
            config,
            http,
            data,
            catalogs,
        } => serve::serve(serve::ServeArgs {
            data_dir: top.data_dir(data),
            config,
            http,
            catalogs: market::catalogs_from_env(top.catalogs(catalogs)),
        }),
        Command::Catalog(CatalogArgs {
            conn,
            catalogs,
            cmd,
        }) => {
            let cmd = match cmd {
                CatalogCmd::List { json } => market::Cmd::List { json },
                CatalogCmd::Show { id, json } => market::Cmd::Show { id, json },
                CatalogCmd::Search { query, json } => market::Cmd::Search {
                    query: query.join(" "),
                    json,
                },
            };
            market_cmd(&top, conn, top.catalogs(catalogs), cmd)
        }
        Command::Install {
            feature,
            allow_http,
            allow_unverified,
            json,
            conn,
            catalogs,
        } => market_cmd(
            &top,
            conn,
            top.catalogs(catalogs),
            market::Cmd::Install {
                spec: feature,
                allow_http,
                allow_unverified,
                json,
            },
        ),
        Command::Uninstall {
            feature,
            json,
            conn,
        } => market_cmd(
            &top,
            conn,
            Vec::new(),
            market::Cmd::Uninstall {
                spec: feature,
                json,
            },
        ),
        Command::Installed { json, conn } => {
            market_cmd(&top, conn, Vec::new(), market::Cmd::Installed { json })
        }
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Instance(InstanceArgs { conn, cmd }) => match top.target(conn) {
            Ok(target) => instance::run(target, cmd),
            Err(code) => code,
        },
        Command::Fleet(FleetArgs { conn, cmd }) => match top.target(conn) {
            Ok(target) => fleet::run(target, cmd),
            Err(code) => code,
        },
        Command::Export {
            format,
            instance,
            output,
            conn,
        } => match top.target(conn) {
            Ok(target) => instance::export(target, &format, &instance, output.as_deref()),
            Err(code) => code,
        },
        Command::Ps {
            pattern,
            json,
            conn,
        } => client_cmd(
            &top,
            conn,
            client::Cmd::Ps {
                pattern: pattern.unwrap_or_default(),
                json,
            },
        ),
        Command::Start(s) => client_cmd(
            &top,
            s.conn,
            client::Cmd::Start {
                pattern: s.pattern,
                json: s.json,
            },
        ),
        Command::Stop { select, timeout } => client_cmd(
            &top,
            select.conn,
            client::Cmd::Stop {
                pattern: select.pattern,
                timeout,
                json: select.json,
            },
        ),
        Command::Restart(s) => client_cmd(
            &top,
            s.conn,
            client::Cmd::Restart {
                pattern: s.pattern,
                json: s.json,
            },
        ),
        Command::Logs { names, opts, conn } => {
            client_cmd(&top, conn, client::Cmd::Logs { names, opts })
        }
        Command::Signal {
            pattern,
            signal,
            group,
            json,
            conn,
        } => client_cmd(
            &top,
            conn,
            client::Cmd::Signal {
                pattern,
                signal,
                group,
                json,
            },
        ),
        Command::Events {
            follow,
            name,
            kinds,
            last,
            after,
            json,
            conn,
        } => client_cmd(
            &top,
            conn,
            client::Cmd::Events {
                follow,
                name,
                kinds,
                last,
                after,
                json,
            },
        ),
        Command::Status { json, conn } => client_cmd(&top, conn, client::Cmd::Status { json }),
        Command::Dashboard { no_open, conn } => {
            client_cmd(&top, conn, client::Cmd::Dashboard { open: !no_open })
        }
        Command::Reload { json, conn } => client_cmd(&top, conn, client::Cmd::Reload { json }),
        Command::Add {
            file,
            no_start,
            json,
            conn,
        } => client_cmd(
            &top,
            conn,
            client::Cmd::Add {
                file,
                no_start,
                json,
            },
        ),
        Command::Remove { name, json, conn } => {
            client_cmd(&top, conn, client::Cmd::Remove { name, json })
        }
    };
    ExitCode::from(code)
}

/// Parse the command line. `--color` also decides clap's own help and
/// errors, so it is looked for before clap renders anything.
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let mut cmd = Cli::command();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let value = match a.to_str() {
            Some("--") => break,
            Some("--color") => args.next(),
            Some(s) => match s.strip_prefix("--color=") {
                Some(v) => Some(v.into()),
                None => continue,
            },
            None => continue,
        };
        cmd = match value.as_ref().and_then(|v| v.to_str()) {
            Some("always") => cmd.color(clap::ColorChoice::Always),
            Some("never") => cmd.color(clap::ColorChoice::Never),
            _ => cmd,
        };
    }
    let matches = cmd.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The options given before the subcommand (and the environment): a value
/// given after the subcommand wins over them.
struct Top {
    data_dir: Option<PathBuf>,
    addr: Option<String>,
    catalogs: Vec<PathBuf>,
    token: Option<String>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

impl Top {
    fn data_dir(&self, sub: DataDir) -> PathBuf {
        sub.data_dir
            .or_else(|| self.data_dir.clone())
            .unwrap_or_else(hangar_core::default_data_dir)
    }

    /// Both lists, the ones before the subcommand first.
    fn catalogs(&self, sub: CatalogDirs) -> Vec<PathBuf> {
        self.catalogs.iter().cloned().chain(sub.catalogs).collect()
    }

    /// Where a client command finds the daemon. `Err` carries the exit code
    /// after printing why.
    fn target(&self, c: Conn) -> Result<client::Target, u8> {
        let cert = c.tls_cert.or_else(|| self.tls_cert.clone());
        let key = c.tls_key.or_else(|| self.tls_key.clone());
        if cert.is_some() != key.is_some() {
            errln!(
                "error[USAGE]: --tls-cert and --tls-key go together\n  hint: give both files for mTLS, or neither"
            );
            return Err(exit::USAGE);
        }
        Ok(client::Target {
            data_dir: self.data_dir(c.data),
            addr: c.addr.or_else(|| self.addr.clone()),
            token: c.token.or_else(|| self.token.clone()),
            tls: c
                .tls_ca
                .or_else(|| self.tls_ca.clone())
                .map(|ca| hangar_api::client::TlsFiles { ca, cert, key }),
        })
    }
}

fn client_cmd(top: &Top, conn: Conn, cmd: client::Cmd) -> u8 {
    match top.target(conn) {
        Ok(t) => client::run(t, cmd),
        Err(code) => code,
    }
}

/// `hangar completions SHELL`: the script on standard output.
fn completions(shell: clap_complete::Shell) -> u8 {
    use clap::CommandFactory;
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "hangar", &mut buf);
    output::out_bytes(&buf);
    exit::OK
}

/// `hangar man`: the manual page (roff) on standard output.
fn man() -> u8 {
    use clap::CommandFactory;
    let mut buf = Vec::new();
    if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut buf) {
        errln!("error[IO_ERROR]: cannot render the manual page: {e}\n  hint: this is a bug in hangar; please report it");
        return exit::FAILURE;
    }
    output::out_bytes(&buf);
    exit::OK
}

/// Raise the descriptor limit before anything opens one (see
/// `hangar_supervisor::fdlimit`): the supervising commands hold three per
/// process.
fn raise_fd_limit() {
    let l = hangar_supervisor::fdlimit::raise();
    if l.soft != l.original_soft {
        tracing::debug!(
            from = l.original_soft,
            to = l.soft,
            hard = l.hard,
            processes = hangar_supervisor::fdlimit::capacity(l.soft),
            "raised the descriptor limit; children get the original back"
        );
    }
}

/// The async runtime: two workers for the supervising commands, one thread
/// for the client commands. `Err` carries the exit code after printing why.
fn runtime(multi: bool) -> Result<tokio::runtime::Runtime, u8> {
    let mut b = if multi {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2).thread_name("hangar-rt");
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().map_err(|e| {
        errln!("error[IO_ERROR]: cannot start the async runtime: {e}");
        exit::FAILURE
    })
}

/// A marketplace command: through the daemon when one answers and no
/// catalog was given, else here.
fn market_cmd(top: &Top, conn: Conn, catalogs: Vec<PathBuf>, cmd: market::Cmd) -> u8 {
    match top.target(conn) {
        Ok(target) => {
            // uninstall and installed read no catalog: $HANGAR_CATALOG does
            // not keep them from the daemon.
            let reads_catalog = !matches!(
                cmd,
                market::Cmd::Uninstall { .. } | market::Cmd::Installed { .. }
            );
            let catalogs = if reads_catalog {
                market::catalogs_from_env(catalogs)
            } else {
                Vec::new()
            };
            market::run(
                market::Market {
                    data_dir: target.data_dir.clone(),
                    catalogs,
                    target,
                },
                cmd,
            )
        }
        Err(code) => code,
    }
}

/// Every build ends the process on a panic, as the release profile
/// (`panic = "abort"`) does: a debug build, which the tests run, would
/// otherwise lose only the panicking thread and hide what users would see.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

fn init_tracing(format: LogFormat, filter: &str, color: ColorWhen) -> Result<(), String> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(output::colored(color, std::io::stderr().is_terminal()))
        // A log line that cannot be written is dropped: the layer's own report
        // of it is an eprintln!, which panics when stderr is a closed pipe.
        .log_internal_errors(false)
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
