//! `hangar plugin call` and `hangar plugin ls`: load a plugin manager
//! configuration (JSON or YAML, `hangar_plugin::config`) and call a plugin
//! through the whole stack (auth headers, rate limit, retry, breaker,
//! deadline, balancing with failover), or list every plugin with its health.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hangar_plugin::{ConfigErrors, ErrorKind, ExecOptions, LoadError, Manager, ManagerConfig};

use crate::exit;

/// The `plugin` subcommands.
#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Call a plugin (or a group of plugins sharing a `type`) once and print
    /// its JSON answer.
    ///
    /// Exit codes: 0 answered, 1 the call failed (the error and its code on
    /// stderr), 2 invalid configuration or --data, 4 no such plugin.
    Call {
        /// Plugin manager configuration (JSON, or YAML by .yaml/.yml).
        #[arg(long, short)]
        config: PathBuf,
        /// Plugin name, or a group (`type`) to balance over.
        name: String,
        /// Request payload (JSON).
        #[arg(long, short, default_value = "null")]
        data: String,
        /// Deadline for the whole call, retries included, e.g. `5s`.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Key for consistent hashing (group calls).
        #[arg(long)]
        key: Option<String>,
        /// Extra header sent to the plugin, `NAME=VALUE` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
    },
    /// List every plugin of a configuration with its health, checked now.
    #[command(visible_alias = "list")]
    Ls {
        /// Plugin manager configuration (JSON, or YAML by .yaml/.yml).
        #[arg(long, short)]
        config: PathBuf,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

fn print_config_errors(path: &Path, e: &ConfigErrors) {
    errln!(
        "error[{}]: {} has {} problem(s)",
        e.0.first().map(|x| x.code).unwrap_or("PLUGIN_1011"),
        path.display(),
        e.0.len()
    );
    for x in &e.0 {
        errln!(
            "  {} at {}: {}\n    hint: {}",
            x.code,
            x.path,
            x.message,
            x.hint
        );
    }
}

fn hint(kind: ErrorKind) -> Option<&'static str> {
    Some(match kind {
        ErrorKind::PluginNotFound => "check the name against `hangar plugin ls`",
        ErrorKind::PluginNotEnabled => {
            "the plugin is disabled in the configuration (enabled: false)"
        }
        ErrorKind::ExecutionFailed => "the plugin rejected the request; check --data",
        ErrorKind::Timeout => {
            "the plugin did not answer in time: raise --timeout or connection.request_timeout"
        }
        k if k == ErrorKind::ConnectionFailed || k.is_transport() => {
            "is the plugin running? check its endpoint"
        }
        ErrorKind::CircuitOpen => {
            "the plugin failed repeatedly; calls resume after circuit_breaker.recovery_timeout"
        }
        ErrorKind::RateLimited => "too many calls; see rate_limit in the configuration",
        ErrorKind::NoAvailablePlugins => "no enabled, healthy plugin in the group",
        _ => return None,
    })
}

/// Load the configuration and the manager; `Err` is the exit code, after
/// printing why.
async fn load(path: &Path) -> Result<Manager, u8> {
    let cfg = ManagerConfig::from_file(path).map_err(|e| {
        print_config_errors(path, &e);
        exit::USAGE
    })?;
    let m = Manager::new();
    match m.load(cfg).await {
        Ok(()) => Ok(m),
        Err(LoadError::Config(e)) => {
            print_config_errors(path, &e);
            Err(exit::USAGE)
        }
        Err(LoadError::Plugin(e)) => {
            errln!("error[{}]: {e}", e.code());
            Err(exit::FAILURE)
        }
    }
}

/// Run a `plugin` subcommand; the exit code.
pub fn run(cmd: Cmd) -> u8 {
    let rt = match crate::runtime(true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        match cmd {
            Cmd::Call {
                config,
                name,
                data,
                timeout,
                key,
                headers,
            } => call(&config, &name, &data, timeout, key, &headers).await,
            Cmd::Ls { config, json } => ls(&config, json).await,
        }
    })
}

async fn call(
    config: &Path,
    name: &str,
    data: &str,
    timeout: Option<Duration>,
    key: Option<String>,
    headers: &[String],
) -> u8 {
    let data: serde_json::Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(e) => {
            errln!("error[USAGE]: --data is not JSON: {e}");
            return exit::USAGE;
        }
    };
    let mut hs = HashMap::new();
    for h in headers {
        match h.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                hs.insert(k.to_string(), v.to_string());
            }
            _ => {
                errln!("error[USAGE]: --header {h:?} is not NAME=VALUE");
                return exit::USAGE;
            }
        }
    }
    let m = match load(config).await {
        Ok(m) => m,
        Err(code) => return code,
    };
    let opts = ExecOptions {
        timeout,
        headers: hs,
        key,
        ..ExecOptions::default()
    };
    let is_plugin = m.list().iter().any(|p| p.name == name);
    let r = if !is_plugin && m.is_group(name) {
        m.execute_group(name, data, opts).await
    } else {
        m.execute_with(name, data, opts).await
    };
    m.shutdown(Duration::from_secs(5)).await;
    match r {
        Ok(v) => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
            );
            exit::OK
        }
        Err(e) => {
            errln!("error[{}]: {e}", e.code());
            if let Some(h) = hint(e.kind) {
                errln!("  hint: {h}");
            }
            if e.kind == ErrorKind::PluginNotFound {
                exit::NOT_FOUND
            } else {
                exit::FAILURE
            }
        }
    }
}

async fn ls(config: &Path, json: bool) -> u8 {
    let m = match load(config).await {
        Ok(m) => m,
        Err(code) => return code,
    };
    m.check_health().await;
    let list = m.list();
    let overall = m.overall_health();
    m.shutdown(Duration::from_secs(1)).await;
    if json {
        let out = serde_json::json!({ "overall": overall, "plugins": list });
        outln!(
            "{}",
            serde_json::to_string_pretty(&out).unwrap_or_else(|_| out.to_string())
        );
        return exit::OK;
    }
    let rows: Vec<[String; 7]> = list
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.group.clone(),
                p.transport.clone(),
                p.endpoint.clone(),
                if p.enabled {
                    p.health.status.to_string()
                } else {
                    "disabled".into()
                },
                format!("{:.1}ms", p.health.response_time.as_secs_f64() * 1000.0),
                if p.enabled {
                    p.health.message.clone()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let head = [
        "NAME",
        "GROUP",
        "TRANSPORT",
        "ENDPOINT",
        "HEALTH",
        "CHECK",
        "MESSAGE",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        outln!("{}", s.trim_end());
    };
    line(head.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    outln!("overall: {}", overall.status);
    exit::OK
}
