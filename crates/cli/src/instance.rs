//! `hangar instance …`: feature instances through the daemon.
//!
//! `create` follows the instance's events until it is running or in error,
//! with an install progress bar when its feature is downloaded first;
//! `--detach` returns as soon as the daemon accepted it. `hangar export`
//! (a top-level command) prints or atomically writes an instance as a Nomad
//! job or Kubernetes objects.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use hangar_api::pb;
use hangar_core::Error;
use hangar_fetch::{Progress, Step};
use serde_json::{json, Map, Value};
use tokio_stream::StreamExt;

use crate::client::{api, connect, Target};
use crate::exit;
use crate::market::Bar;

/// The instance subcommands.
#[derive(Subcommand)]
pub enum InstanceCmd {
    /// Create an instance of a catalog feature (installing it first when needed)
    /// and wait until it runs.
    Create {
        /// Catalog id, e.g. `tor`.
        feature: String,
        /// Instance name (letters, digits, '-', '_', '.'). Without one, the
        /// instance already serving the isolation key is returned if there is
        /// one (a launch), else one named after the feature and keys is made.
        name: Option<String>,
        /// Operation mode (the feature's `modes`).
        #[arg(long)]
        mode: Option<String>,
        /// Option over the mode's defaults: `key=value` (value read as JSON when
        /// it parses, else as a string); repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Tenant key (per-tenant features share one instance per tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Session key (per-session features: one instance per session).
        #[arg(long)]
        session: Option<String>,
        /// Return once accepted; progress goes on in the daemon.
        #[arg(long)]
        detach: bool,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Start a stopped instance, or make a failed one again.
    Start {
        /// Id or name.
        instance: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Stop an instance (it keeps its ports, network and config).
    Stop {
        /// Id or name.
        instance: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Restart an instance's process.
    Restart {
        /// Id or name.
        instance: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Delete an instance and everything it owns.
    Delete {
        /// Id or name.
        instance: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Change an instance's mode or options (checked before it applies).
    Update {
        /// Id or name.
        instance: String,
        /// New operation mode.
        #[arg(long)]
        mode: Option<String>,
        /// `key=value`; repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// List instances.
    #[command(visible_alias = "list")]
    Ls {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show the output of an instance's process (as `hangar logs` does).
    Logs {
        /// Id or name.
        instance: String,
        #[command(flatten)]
        opts: crate::client::LogOpts,
    },
    /// Show one instance in full.
    Show {
        /// Id or name.
        instance: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(target: Target, cmd: InstanceCmd) -> u8 {
    crate::client::block_on(go(target, cmd))
}

/// `hangar export FORMAT INSTANCE [-o FILE]`: the daemon writes the export;
/// it goes to standard output, or whole into FILE.
pub fn export(target: Target, format: &str, instance: &str, output: Option<&Path>) -> u8 {
    crate::client::block_on(async move {
        // A format hangar does not write is refused before any daemon is asked.
        let format = hangar_core::ExportFormat::parse(format)?;
        let mut c = connect(&target).await?;
        let reply = c
            .instances
            .export(pb::ExportInstanceRequest {
                id_or_name: instance.to_string(),
                format: format.as_str().to_string(),
            })
            .await
            .map_err(api)?
            .into_inner();
        match output {
            Some(path) => {
                write_atomically(path, reply.text.as_bytes())?;
                errln!("wrote {} ({})", path.display(), reply.format);
            }
            None => out!("{}", reply.text),
        }
        Ok(exit::OK)
    })
}

/// Write `bytes` to `path` all at once: a temp file beside it, synced, then
/// renamed over it, so a reader never sees half an export and a failure
/// leaves what was there.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let failed = |what: &str, e: std::io::Error| {
        Error::new(
            hangar_core::ErrorKind::ExportWriteFailed,
            format!("cannot {what} {}: {e}", path.display()),
        )
        .with("path", path.display().to_string())
        .hint("write it where the directory exists and you may write, or leave out -o to print it")
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| failed("write", std::io::Error::other("the path names no file")))?;
    let tmp = dir.join(format!(".{name}.hangar-tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        failed("write", e)
    })
}

/// `key=value` pairs into a JSON object; values that parse as JSON keep their
/// type (`port=9050` is a number), others are strings.
pub fn parse_sets(sets: &[String]) -> Result<Map<String, Value>, Error> {
    let mut m = Map::new();
    for s in sets {
        let Some((k, v)) = s.split_once('=') else {
            return Err(Error::new(
                hangar_base::ErrorKind::Usage,
                format!("--set {s:?} is not key=value"),
            )
            .hint("write e.g. --set socks_port=9050"));
        };
        if k.trim().is_empty() {
            return Err(Error::new(
                hangar_base::ErrorKind::Usage,
                format!("--set {s:?} has no key"),
            )
            .hint("write e.g. --set socks_port=9050"));
        }
        let val = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.into()));
        m.insert(k.trim().to_string(), val);
    }
    Ok(m)
}

async fn go(t: Target, cmd: InstanceCmd) -> Result<u8, Error> {
    let mut c = connect(&t).await?;
    let cmd_is_stop = matches!(cmd, InstanceCmd::Stop { .. });
    match cmd {
        InstanceCmd::Create {
            feature,
            name,
            mode,
            set,
            tenant,
            session,
            detach,
            json,
        } => {
            let options = parse_sets(&set)?;
            // Events after this id are the create's own.
            let after = c
                .daemon
                .status(pb::StatusRequest {})
                .await
                .map_err(api)?
                .into_inner()
                .last_event_id;
            let reply = c
                .instances
                .create(pb::CreateInstanceRequest {
                    feature,
                    name: name.unwrap_or_default(),
                    mode: mode.unwrap_or_default(),
                    options: Some(hangar_api::convert::structure(&options)),
                    tenant: tenant.unwrap_or_default(),
                    session: session.unwrap_or_default(),
                    ..Default::default()
                })
                .await
                .map_err(api)?
                .into_inner();
            let inst = reply.instance.unwrap_or_default();
            if detach || (reply.reused && inst.state == "running") {
                print_one(&inst, json, reply.reused);
                return Ok(exit::OK);
            }
            let done = follow(&mut c, &inst, after, json).await?;
            print_one(&done, json, reply.reused);
            Ok(if done.state == "running" {
                exit::OK
            } else {
                exit::FAILURE
            })
        }
        InstanceCmd::Start { instance, json } => {
            let after = c
                .daemon
                .status(pb::StatusRequest {})
                .await
                .map_err(api)?
                .into_inner()
                .last_event_id;
            let i = c
                .instances
                .start(pb::InstanceRef {
                    id_or_name: instance,
                })
                .await
                .map_err(api)?
                .into_inner();
            let i = if i.state == "running" {
                i
            } else {
                follow(&mut c, &i, after, json).await?
            };
            print_one(&i, json, false);
            Ok(if i.state == "running" {
                exit::OK
            } else {
                exit::FAILURE
            })
        }
        InstanceCmd::Stop { instance, json } | InstanceCmd::Restart { instance, json } => {
            let r = pb::InstanceRef {
                id_or_name: instance,
            };
            let i = match cmd_is_stop {
                true => c.instances.stop(r).await,
                false => c.instances.restart(r).await,
            }
            .map_err(api)?
            .into_inner();
            print_one(&i, json, false);
            Ok(exit::OK)
        }
        InstanceCmd::Delete { instance, json } => {
            c.instances
                .delete(pb::InstanceRef {
                    id_or_name: instance.clone(),
                })
                .await
                .map_err(api)?;
            if json {
                outln!("{}", json!({"deleted": instance}));
            } else {
                outln!("deleted {instance}");
            }
            Ok(exit::OK)
        }
        InstanceCmd::Update {
            instance,
            mode,
            set,
            json,
        } => {
            let options = parse_sets(&set)?;
            let i = c
                .instances
                .update(pb::UpdateInstanceRequest {
                    id_or_name: instance,
                    mode: mode.unwrap_or_default(),
                    options: Some(hangar_api::convert::structure(&options)),
                    ..Default::default()
                })
                .await
                .map_err(api)?
                .into_inner();
            print_one(&i, json, false);
            Ok(exit::OK)
        }
        InstanceCmd::Ls { json } => {
            let list = c
                .instances
                .list(pb::ListInstancesRequest::default())
                .await
                .map_err(api)?
                .into_inner()
                .instances;
            if json {
                outln!("{}", json_array(&list));
            } else if list.is_empty() {
                outln!("no instances (create one with `hangar instance create FEATURE NAME`)");
            } else {
                use std::fmt::Write as _;
                let w = list.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
                // One write for the whole table, not one per line.
                let mut table = String::with_capacity(96 * (list.len() + 1));
                let _ = write!(
                    table,
                    "{:w$}  {:14}  {:10}  {:10}  {:24}  PROCESS",
                    "NAME", "ID", "FEATURE", "STATE", "PORTS"
                );
                for i in &list {
                    let ports: Vec<String> =
                        i.ports.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let state = match &i.error {
                        Some(e) if i.state == "error" => format!("error ({})", e.code),
                        _ => i.state.clone(),
                    };
                    let _ = write!(
                        table,
                        "\n{:w$}  {:14}  {:10}  {:10}  {:24}  {}",
                        i.name,
                        i.id,
                        i.feature,
                        state,
                        ports.join(","),
                        i.process
                    );
                }
                outln!("{table}");
            }
            Ok(exit::OK)
        }
        InstanceCmd::Logs { instance, opts } => {
            let i = c
                .instances
                .get(pb::InstanceRef {
                    id_or_name: instance,
                })
                .await
                .map_err(api)?
                .into_inner();
            crate::client::logs(&mut c, vec![i.process], &opts).await
        }
        InstanceCmd::Show { instance, json } => {
            let i = c
                .instances
                .get(pb::InstanceRef {
                    id_or_name: instance,
                })
                .await
                .map_err(api)?
                .into_inner();
            if json {
                outln!("{}", to_json(&i));
            } else {
                show(&i);
            }
            Ok(exit::OK)
        }
    }
}

/// Follow an instance's events until it settles (running or error), drawing
/// install progress; then return its record.
async fn follow(
    c: &mut hangar_api::client::Client,
    inst: &pb::Instance,
    after: i64,
    quiet: bool,
) -> Result<pb::Instance, Error> {
    let mut s = c
        .events
        .stream(pb::EventFilter {
            name: inst.name.clone(),
            kinds: Vec::new(),
            after_id: after.max(1),
        })
        .await
        .map_err(api)?
        .into_inner();
    let mut bar: Option<Bar> = None;
    let label = format!("{} {}", inst.feature, inst.version);
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), s.next()).await;
        let ev = match next {
            // Quiet for a while: look at the record (an event may have been
            // missed if the stream was cut).
            Err(_) => None,
            Ok(None) => {
                return Err(Error::new(
                    hangar_api::ErrorKind::DaemonGone,
                    "the daemon closed the event stream",
                )
                .hint("see `hangar instance show` once it is back"))
            }
            Ok(Some(e)) => Some(e.map_err(api)?),
        };
        if let Some(e) = &ev {
            let d = hangar_api::convert::detail(e);
            if d.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| id != inst.id)
            {
                continue;
            }
            match e.kind.as_str() {
                "install.progress" => {
                    let b = bar.get_or_insert_with(|| Bar::new(&label, quiet));
                    match d.get("status").and_then(Value::as_str) {
                        Some("downloading") => b.step(&Step::Download(Progress {
                            bytes: d["bytes"].as_u64().unwrap_or(0),
                            total: d["total"].as_u64(),
                            bytes_per_sec: d["bytes_per_sec"].as_f64().unwrap_or(0.0),
                            done: false,
                        })),
                        Some("verifying") => b.step(&Step::Verify),
                        Some("extracting") => b.step(&Step::Extract),
                        _ => {}
                    }
                    continue;
                }
                "install.done" => {
                    if let Some(b) = bar.take() {
                        b.finish(true);
                    }
                    if !quiet {
                        errln!("installed {label}");
                    }
                    continue;
                }
                "instance.state" if !quiet => {
                    let step = d.get("step").and_then(Value::as_str).unwrap_or("");
                    if e.to != "running" && e.to != "error" {
                        errln!(
                            "{}: {}{}",
                            inst.name,
                            e.to,
                            if step.is_empty() {
                                String::new()
                            } else {
                                format!(" ({step})")
                            }
                        );
                    }
                }
                _ => {}
            }
            if e.kind != "instance.state" {
                continue;
            }
        }
        let now = c
            .instances
            .get(pb::InstanceRef {
                id_or_name: inst.id.clone(),
            })
            .await
            .map_err(api)?
            .into_inner();
        if now.state == "running" || now.state == "error" || now.state == "stopped" {
            if let Some(b) = bar.take() {
                b.finish(now.state == "running");
            }
            return Ok(now);
        }
    }
}

/// The instances as one JSON array: each instance's JSON as the daemon wrote
/// it, checked but not rebuilt (parsing a thousand into values and writing
/// them again cost more than the daemon's whole answer); one that does not
/// parse (an older daemon's) is made as `to_json` makes it.
#[allow(deprecated)] // the record as one JSON text; its fields are typed too
fn json_array(list: &[pb::Instance]) -> String {
    let mut out = String::with_capacity(list.iter().map(|i| i.json.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (n, i) in list.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let raw = i.json.trim();
        if raw.starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(raw).is_ok() {
            out.push_str(raw);
        } else {
            out.push_str(&to_json(i).to_string());
        }
    }
    out.push(']');
    out
}

/// `--json`: the instance record as the daemon keeps it.
#[allow(deprecated)] // the record as one JSON text; its fields are typed too
fn to_json(i: &pb::Instance) -> Value {
    serde_json::from_str(&i.json)
        .unwrap_or_else(|_| json!({"id": i.id, "name": i.name, "state": i.state}))
}

fn print_one(i: &pb::Instance, json: bool, reused: bool) {
    if json {
        let mut v = to_json(i);
        if let Some(o) = v.as_object_mut() {
            o.insert("reused".into(), reused.into());
        }
        outln!("{v}");
        return;
    }
    let ports: Vec<String> = i.ports.iter().map(|(k, v)| format!("{k}={v}")).collect();
    match (&i.error, i.state.as_str()) {
        (Some(e), "error") => {
            errln!(
                "error[{}]: instance {} failed{}: {}",
                e.code,
                i.name,
                if e.entries.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", hangar_api::convert::context_text(e))
                },
                e.message
            );
            if !e.hint.is_empty() {
                errln!("  hint: {}", e.hint);
            }
        }
        _ => outln!(
            "{} {} ({} {}) {}{}{}",
            i.name,
            i.id,
            i.feature,
            i.version,
            i.state,
            if ports.is_empty() {
                String::new()
            } else {
                format!(" on {} {}", i.bind, ports.join(","))
            },
            if reused { " [reused]" } else { "" }
        ),
    }
}

fn show(i: &pb::Instance) {
    let v = to_json(i);
    let field = |k: &str| -> String {
        match v.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "-".into(),
            Some(x) => x.to_string(),
        }
    };
    outln!("name:      {}", i.name);
    outln!("id:        {}", i.id);
    outln!("feature:   {} {}", i.feature, i.version);
    outln!(
        "mode:      {}",
        if i.mode.is_empty() { "-" } else { &i.mode }
    );
    outln!(
        "state:     {}{}",
        i.state,
        if i.step.is_empty() {
            String::new()
        } else {
            format!(" (step {})", i.step)
        }
    );
    if let Some(e) = &i.error {
        outln!(
            "error:     [{}] {} {}",
            e.code,
            e.message,
            hangar_api::convert::context_text(e)
        );
        if !e.hint.is_empty() {
            outln!("hint:      {}", e.hint);
        }
    }
    outln!(
        "isolation: {} (tenant {}, session {})",
        i.isolation,
        field("tenant"),
        field("session")
    );
    outln!("process:   {}", i.process);
    outln!("bind:      {}", i.bind);
    for (k, p) in &i.ports {
        outln!("port:      {k} = {p}");
    }
    outln!(
        "config:    {}",
        if i.config_file.is_empty() {
            "-"
        } else {
            &i.config_file
        }
    );
    outln!("options:   {}", field("options"));
    outln!("directory: {}", field("dir"));
    if let Some(n) = v.get("network").filter(|n| !n.is_null()) {
        outln!("network:");
        if let Some(o) = n.as_object() {
            for (k, x) in o {
                outln!("  {k}: {x}");
            }
        } else {
            outln!("  {n}");
        }
    }
}
