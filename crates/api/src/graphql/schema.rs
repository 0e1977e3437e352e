//! The GraphQL schema: queries, mutations and subscriptions over the same
//! daemon calls and wire conversions the gRPC services use.

use async_graphql::connection::{Connection, Edge};
use async_graphql::futures_util::Stream;
use async_graphql::{ComplexObject, Context, ErrorExtensionValues, Json, Object, Subscription};
use hangar_core::{Daemon, Error};
use hangar_store::EventQuery;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::types::*;
use crate::convert;

/// The schema's type.
pub type HangarSchema = async_graphql::Schema<Query, Mutation, Subscription>;

/// Deepest query accepted.
pub const MAX_DEPTH: usize = 16;
/// Most fields a query may select (lists count once).
pub const MAX_COMPLEXITY: usize = 1000;

/// The schema over `d`; `stop` turns true when the listeners stop, ending
/// subscriptions.
pub fn build(d: Option<Daemon>, stop: watch::Receiver<bool>) -> HangarSchema {
    let b = async_graphql::Schema::build(Query, Mutation, Subscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .data(stop);
    match d {
        Some(d) => b.data(d).finish(),
        None => b.finish(),
    }
}

/// A hangar error as a GraphQL error: the message, and in `extensions` the
/// stable `code`, the `category`, the `hint` and the `context`.
pub(crate) fn gql(e: Error) -> async_graphql::Error {
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", e.code());
    ext.set("category", e.category().as_str());
    if let Some(h) = &e.hint {
        ext.set("hint", h.as_str());
    }
    let mut ctx = async_graphql::indexmap::IndexMap::new();
    for (k, v) in &e.context {
        ctx.insert(
            async_graphql::Name::new(k),
            async_graphql::Value::String(v.clone()),
        );
    }
    ext.set("context", async_graphql::Value::Object(ctx));
    async_graphql::Error {
        message: e.message,
        source: None,
        extensions: Some(ext),
    }
}

type Res<T> = async_graphql::Result<T>;

fn daemon<'a>(ctx: &Context<'a>) -> Res<&'a Daemon> {
    ctx.data::<Daemon>()
}

fn stop(ctx: &Context<'_>) -> watch::Receiver<bool> {
    ctx.data::<watch::Receiver<bool>>()
        .cloned()
        .unwrap_or_else(|_| watch::channel(false).1)
}

/// Options given as a GraphQL input: a JSON object.
fn options(v: Option<Json<serde_json::Value>>) -> Res<serde_json::Map<String, serde_json::Value>> {
    match v.map(|j| j.0) {
        None | Some(serde_json::Value::Null) => Ok(Default::default()),
        Some(serde_json::Value::Object(m)) => Ok(m),
        Some(_) => Err(gql(Error::new(
            hangar_feature::ErrorKind::ConfigBadOptions,
            "options must be a JSON object",
        )
        .with("field", "options")
        .hint("pass options as an object, e.g. {\"port\": 9050}"))),
    }
}

fn some(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Whether the query selects a field that needs the usage sample.
fn wants_usage(ctx: &Context<'_>) -> bool {
    let sel = ctx.look_ahead();
    sel.field("cpuSeconds").exists() || sel.field("memoryBytes").exists()
}

async fn processes(d: &Daemon, pattern: &str, with_usage: bool) -> Res<Vec<Process>> {
    let mut views = d.list(pattern).await.map_err(gql)?;
    views.sort_by(|a, b| a.want.spec.name.cmp(&b.want.spec.name));
    let ports = crate::server::instance_ports(d, &views);
    // A query that shows no CPU or memory does not wait for a sample.
    let usage = if with_usage {
        d.manager().usage_sample().await
    } else {
        hangar_supervisor::usage::UsageSample::empty()
    };
    Ok(views
        .iter()
        .map(|v| {
            Process::from(crate::server::with_instance_ports(
                &ports,
                crate::server::with_usage(&usage, convert::process(v)),
            ))
        })
        .collect())
}

fn instance(i: &hangar_core::Instance) -> Instance {
    Instance::from(convert::instance(i))
}

/// Read-only queries.
pub struct Query;

#[Object]
impl Query {
    /// The daemon itself.
    async fn status(&self, ctx: &Context<'_>) -> Res<DaemonStatus> {
        let i = daemon(ctx)?.info().await;
        Ok(DaemonStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: i.pid,
            started_at_ms: i
                .started_at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
                .into(),
            data_dir: i.data_dir.display().to_string(),
            config_file: i.config.map(|p| p.display().to_string()),
            supervisor_id: i.supervisor_id,
            processes: i
                .by_state
                .into_iter()
                .map(|(state, count)| StateCount { state, count })
                .collect(),
            last_event_id: i.last_event_id.into(),
            http_addr: i.http_addr.map(|a| a.to_string()),
        })
    }

    /// Processes whose name matches `pattern` (a glob), by name.
    async fn processes(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = "*")] pattern: String,
    ) -> Res<Vec<Process>> {
        processes(daemon(ctx)?, &pattern, wants_usage(ctx)).await
    }

    /// One process by name.
    async fn process(&self, ctx: &Context<'_>, name: String) -> Res<Process> {
        let d = daemon(ctx)?;
        let found = d.list(&name).await.map_err(gql)?;
        if found.len() != 1 || found[0].want.spec.name != name {
            return Err(gql(crate::server::not_found(&name)));
        }
        Ok(processes(d, &name, wants_usage(ctx)).await?.remove(0))
    }

    /// Every instance, by name.
    async fn instances(&self, ctx: &Context<'_>) -> Res<Vec<Instance>> {
        let mut all = daemon(ctx)?.instance_list();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all.iter().map(instance).collect())
    }

    /// One instance by id or name.
    async fn instance(&self, ctx: &Context<'_>, id_or_name: String) -> Res<Instance> {
        let i = daemon(ctx)?.instance(&id_or_name).map_err(gql)?;
        Ok(instance(&i))
    }

    /// An instance written for another scheduler (`format`: nomad or
    /// kubernetes): the Nomad job or the Kubernetes objects as text, secret
    /// options as references the target resolves.
    async fn export_instance(
        &self,
        ctx: &Context<'_>,
        id_or_name: String,
        format: String,
    ) -> Res<String> {
        let e = daemon(ctx)?
            .export_instance(&id_or_name, &format)
            .await
            .map_err(gql)?;
        Ok(e.text)
    }

    /// The catalog's features, or those matching every word of `query`, best
    /// first.
    async fn catalog(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] query: String,
    ) -> Res<Vec<Feature>> {
        let found = daemon(ctx)?.features(&query).await.map_err(gql)?;
        Ok(found
            .iter()
            .map(|e| Feature::from(convert::feature(e, None, &[])))
            .collect())
    }

    /// One feature: its options, modes, this machine's download and its
    /// installed versions.
    async fn feature(&self, ctx: &Context<'_>, id: String) -> Res<Feature> {
        let f = daemon(ctx)?.feature(&id).await.map_err(gql)?;
        Ok(Feature::from(convert::feature(
            &f.entry,
            Some(&f.resolved),
            &f.installed,
        )))
    }

    /// Every installed version of every feature.
    async fn installed(&self, ctx: &Context<'_>) -> Res<Vec<InstalledFeature>> {
        let all = daemon(ctx)?.installed_features().await.map_err(gql)?;
        Ok(all
            .iter()
            .map(|i| InstalledFeature::from(convert::installed(i)))
            .collect())
    }

    /// Stored events, oldest first, as a connection whose cursors are event
    /// ids: `first`/`after` pages forward, `last`/`before` back; with neither,
    /// the newest 50.
    #[allow(clippy::too_many_arguments)]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
        #[graphql(desc = "a glob over event names")] name: Option<String>,
        #[graphql(default)] kinds: Vec<String>,
    ) -> Res<Connection<String, Event>> {
        let d = daemon(ctx)?.clone();
        let id = |c: &Option<String>, which: &str| -> Res<Option<i64>> {
            c.as_deref()
                .map(|s| {
                    s.parse::<i64>().map_err(|_| {
                        gql(Error::new(
                            hangar_base::ErrorKind::Usage,
                            format!("{which} is not an event cursor: {s:?}"),
                        )
                        .with("field", which)
                        .hint("pass a cursor from an earlier page (an event id)"))
                    })
                })
                .transpose()
        };
        let (after, before) = (id(&after, "after")?, id(&before, "before")?);
        let count = |n: Option<i32>, which: &str| -> Res<Option<u32>> {
            match n {
                Some(n) if !(0..=10_000).contains(&n) => Err(gql(Error::new(
                    hangar_base::ErrorKind::Usage,
                    format!("{which} must be between 0 and 10000, not {n}"),
                )
                .with("field", which)
                .hint("page through longer histories with the cursors"))),
                n => Ok(n.map(|n| n as u32)),
            }
        };
        let (first, last) = (count(first, "first")?, count(last, "last")?);
        let forward = first.is_some() || (after.is_some() && last.is_none());
        let n = if forward {
            first.unwrap_or(50)
        } else {
            last.unwrap_or(50)
        };
        let mut rows = d
            .history(EventQuery {
                name_glob: some(name),
                kinds,
                after_id: after,
                before_id: before,
                limit: Some(n + 1),
                oldest: forward,
                ..EventQuery::default()
            })
            .await
            .map_err(gql)?;
        let more = rows.len() > n as usize;
        if more {
            if forward {
                rows.truncate(n as usize);
            } else {
                rows.remove(0);
            }
        }
        let (prev, next) = if forward {
            (after.is_some(), more)
        } else {
            (more, before.is_some())
        };
        let mut c = Connection::new(prev, next);
        c.edges.extend(
            rows.iter()
                .map(|r| Edge::new(r.id.to_string(), Event::of(r))),
        );
        Ok(c)
    }

    /// The last `lines` lines of each process `names` match (names or
    /// globs), merged by time.
    async fn logs(
        &self,
        ctx: &Context<'_>,
        names: Vec<String>,
        #[graphql(default = 100)] lines: u32,
    ) -> Res<Vec<LogLine>> {
        let mut rx = crate::watch::logs(daemon(ctx)?, &names, lines, false, stop(ctx))
            .await
            .map_err(gql)?;
        let mut out = Vec::new();
        while let Some(l) = rx.recv().await {
            out.push(LogLine::from(l.map_err(gql)?));
        }
        Ok(out)
    }
}

#[ComplexObject]
impl Instance {
    /// Its main config file as written, with the values of secret options
    /// masked (at most 64 KiB).
    async fn config_preview(&self, ctx: &Context<'_>) -> Res<Option<String>> {
        let d = daemon(ctx)?;
        let Ok(full) = d.instance(&self.id) else {
            return Ok(None);
        };
        let Some(path) = full.config_file.clone() else {
            return Ok(None);
        };
        let text = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = Vec::new();
            std::fs::File::open(&path)
                .and_then(|f| f.take(64 << 10).read_to_end(&mut buf))
                .ok()
                .map(|_| String::from_utf8_lossy(&buf).into_owned())
        })
        .await
        .ok()
        .flatten();
        Ok(text.map(|t| mask(t, &full)))
    }
}

/// `text` with every secret option's value of `i` replaced.
fn mask(mut text: String, i: &hangar_core::Instance) -> String {
    let masked = i.redacted();
    for (k, v) in &i.options {
        if masked.options.get(k) == Some(v) {
            continue;
        }
        let plain = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => continue,
            other => other.to_string(),
        };
        if !plain.is_empty() {
            text = text.replace(&plain, hangar_core::instances::REDACTED);
        }
    }
    text
}

/// Changes.
pub struct Mutation;

#[allow(clippy::too_many_arguments)] // installFeature takes seed 004's six arguments.
#[Object]
impl Mutation {
    /// Create an instance of a feature (installing it first when needed).
    /// Answers at once with the queued instance; follow it with
    /// `installProgress(instanceId)`.
    async fn install_feature(
        &self,
        ctx: &Context<'_>,
        feature_id: String,
        name: Option<String>,
        mode: Option<String>,
        options: Option<Json<serde_json::Value>>,
        tenant: Option<String>,
        session: Option<String>,
    ) -> Res<InstallFeatureResult> {
        let c = daemon(ctx)?
            .create_instance(hangar_core::CreateRequest {
                feature: feature_id,
                name: some(name),
                mode: some(mode),
                options: self::options(options)?,
                tenant: some(tenant),
                session: some(session),
                fleet: false,
            })
            .await
            .map_err(gql)?;
        Ok(InstallFeatureResult {
            instance_id: c.instance.id.clone(),
            reused: c.reused,
            instance: instance(&c.instance),
        })
    }

    /// Install a version of a feature (the manifest's when none is given)
    /// and make it current.
    async fn install(
        &self,
        ctx: &Context<'_>,
        feature_id: String,
        version: Option<String>,
        #[graphql(default)] allow_unverified: bool,
    ) -> Res<InstalledFeature> {
        let i = daemon(ctx)?
            .install_feature(&feature_id, version.as_deref(), allow_unverified, |_| {})
            .await
            .map_err(gql)?;
        Ok(InstalledFeature::from(convert::installed(&i)))
    }

    /// Uninstall a version of a feature (every version when none is given);
    /// refused while an instance uses it. Answers the versions removed.
    async fn uninstall(
        &self,
        ctx: &Context<'_>,
        feature_id: String,
        version: Option<String>,
    ) -> Res<Vec<String>> {
        daemon(ctx)?
            .uninstall_feature(&feature_id, version.as_deref())
            .await
            .map_err(gql)
    }

    /// Start a stopped instance.
    async fn start_instance(&self, ctx: &Context<'_>, id_or_name: String) -> Res<Instance> {
        let i = daemon(ctx)?
            .start_instance(&id_or_name)
            .await
            .map_err(gql)?;
        Ok(instance(&i))
    }

    /// Stop an instance, keeping everything it owns.
    async fn stop_instance(&self, ctx: &Context<'_>, id_or_name: String) -> Res<Instance> {
        let i = daemon(ctx)?.stop_instance(&id_or_name).await.map_err(gql)?;
        Ok(instance(&i))
    }

    /// Restart an instance's process.
    async fn restart_instance(&self, ctx: &Context<'_>, id_or_name: String) -> Res<Instance> {
        let i = daemon(ctx)?
            .restart_instance(&id_or_name)
            .await
            .map_err(gql)?;
        Ok(instance(&i))
    }

    /// Change an instance's mode and options; its config is replaced only
    /// once the feature's checker accepts the new one.
    async fn update_instance(
        &self,
        ctx: &Context<'_>,
        id_or_name: String,
        mode: Option<String>,
        options: Option<Json<serde_json::Value>>,
    ) -> Res<Instance> {
        let i = daemon(ctx)?
            .update_instance(&id_or_name, some(mode), self::options(options)?)
            .await
            .map_err(gql)?;
        Ok(instance(&i))
    }

    /// Delete an instance and everything it owns.
    async fn delete_instance(&self, ctx: &Context<'_>, id_or_name: String) -> Res<bool> {
        daemon(ctx)?
            .delete_instance(&id_or_name)
            .await
            .map_err(gql)?;
        Ok(true)
    }

    /// Add processes from process-file TOML (`[[process]]` entries); started
    /// unless `start` is false.
    async fn add_processes(
        &self,
        ctx: &Context<'_>,
        toml: String,
        #[graphql(default = true)] start: bool,
    ) -> Res<Vec<Process>> {
        let d = daemon(ctx)?;
        let names = d.add(&toml, start).await.map_err(gql)?;
        let with_usage = wants_usage(ctx);
        let mut out = Vec::new();
        for n in names {
            out.extend(processes(d, &n, with_usage).await.unwrap_or_default());
        }
        Ok(out)
    }

    /// Stop and forget a process the API added.
    async fn remove_process(&self, ctx: &Context<'_>, name: String) -> Res<bool> {
        daemon(ctx)?.remove(&name).await.map_err(gql)?;
        Ok(true)
    }

    /// Start the processes `pattern` matches.
    async fn start_processes(&self, ctx: &Context<'_>, pattern: String) -> Res<ActionReport> {
        Ok(daemon(ctx)?.start(&pattern).await.map_err(gql)?.into())
    }

    /// Stop the processes `pattern` matches (each with its own stop
    /// settings, or within `timeoutMs`).
    async fn stop_processes(
        &self,
        ctx: &Context<'_>,
        pattern: String,
        timeout_ms: Option<u32>,
    ) -> Res<ActionReport> {
        let t = timeout_ms
            .filter(|t| *t > 0)
            .map(|t| std::time::Duration::from_millis(u64::from(t)));
        Ok(daemon(ctx)?.stop(&pattern, t).await.map_err(gql)?.into())
    }

    /// Restart the processes `pattern` matches.
    async fn restart_processes(&self, ctx: &Context<'_>, pattern: String) -> Res<ActionReport> {
        Ok(daemon(ctx)?.restart(&pattern).await.map_err(gql)?.into())
    }

    /// Send a signal (`HUP`, `SIGUSR1`, `15`, …) to the processes `pattern`
    /// matches; to their whole process groups when `group`.
    async fn signal_processes(
        &self,
        ctx: &Context<'_>,
        pattern: String,
        signal: String,
        #[graphql(default)] group: bool,
    ) -> Res<ActionReport> {
        Ok(daemon(ctx)?
            .signal(&pattern, &signal, group)
            .await
            .map_err(gql)?
            .into())
    }

    /// Read the configuration file again and apply what changed.
    async fn reload(&self, ctx: &Context<'_>) -> Res<ReloadReport> {
        Ok(daemon(ctx)?.reload().await.map_err(gql)?.into())
    }
}

/// Live streams.
pub struct Subscription;

fn events_stream(
    d: &Daemon,
    f: crate::watch::EventFilter,
    stop: watch::Receiver<bool>,
) -> async_graphql::Result<impl Stream<Item = Res<hangar_store::EventRecord>>> {
    let rx = crate::watch::events(d, f, stop).map_err(gql)?;
    Ok(ReceiverStream::new(rx).map(|r| r.map(|e| (*e).clone()).map_err(gql)))
}

#[Subscription]
impl Subscription {
    /// Events as they are stored, optionally only those whose name matches
    /// the glob `name` and whose kind is in `kinds`; with `afterId`, the
    /// stored ones after it first (no gap, none twice).
    async fn events(
        &self,
        ctx: &Context<'_>,
        name: Option<String>,
        #[graphql(default)] kinds: Vec<String>,
        #[graphql(default)] after_id: Int64,
    ) -> async_graphql::Result<impl Stream<Item = Res<Event>>> {
        let f = crate::watch::EventFilter {
            name: name.unwrap_or_default(),
            kinds,
            after_id: after_id.0,
            since_ms: 0,
        };
        Ok(events_stream(daemon(ctx)?, f, stop(ctx))?.map(|r| r.map(|e| Event::of(&e))))
    }

    /// Instance state changes (`instance.state` events), of the instances
    /// whose name matches `name` (a glob; all when absent).
    async fn instance_state(
        &self,
        ctx: &Context<'_>,
        name: Option<String>,
        #[graphql(default)] after_id: Int64,
    ) -> async_graphql::Result<impl Stream<Item = Res<Event>>> {
        let f = crate::watch::EventFilter {
            name: name.unwrap_or_default(),
            kinds: vec!["instance.state".into()],
            after_id: after_id.0,
            since_ms: 0,
        };
        Ok(events_stream(daemon(ctx)?, f, stop(ctx))?.map(|r| r.map(|e| Event::of(&e))))
    }

    /// One instance's create, from where it is now to `running` (or `error`,
    /// with the step and code): download progress at most every 100 ms,
    /// then each state. Ends when the instance is up, stopped, failed or
    /// gone.
    async fn install_progress(
        &self,
        ctx: &Context<'_>,
        instance_id: String,
    ) -> async_graphql::Result<std::pin::Pin<Box<dyn Stream<Item = Res<InstallProgress>> + Send>>>
    {
        let d = daemon(ctx)?;
        let i = d.instance(&instance_id).map_err(gql)?;
        let id = i.id.clone();
        let name = glob_literal(&i.name);
        let settled = !i.state.in_progress();
        // Everything about this instance since it was made, from history
        // first: a subscriber that comes after `installFeature` answered
        // misses nothing, and sees it in order.
        let f = crate::watch::EventFilter {
            name: name.clone(),
            kinds: vec!["install.progress".into(), "instance.state".into()],
            after_id: 0,
            since_ms: i.created_ms,
        };
        // A settled instance whose history was pruned: its state, and done.
        if settled {
            let told = d
                .history(EventQuery {
                    name_glob: Some(name),
                    kinds: vec!["instance.state".into()],
                    since_ms: Some(i.created_ms),
                    limit: Some(1),
                    ..EventQuery::default()
                })
                .await
                .map_err(gql)?;
            if told.is_empty() {
                let now = InstallProgress {
                    event_id: Int64(0),
                    instance_id: id,
                    status: i.state.as_str().to_string(),
                    step: i.step.map(|s| s.as_str().to_string()),
                    percent: None,
                    bytes: None,
                    total: None,
                    error: i.error.as_ref().map(|e| ErrorInfo {
                        code: e.code.clone(),
                        message: e.message.clone(),
                        hint: e.hint.clone(),
                        context: Vec::new(),
                    }),
                };
                let once: std::pin::Pin<Box<dyn Stream<Item = Res<InstallProgress>> + Send>> =
                    Box::pin(tokio_stream::once(Ok(now)));
                return Ok(once);
            }
        }
        let events = Box::pin(events_stream(d, f, stop(ctx))?);
        // Until (and with) the first settled state, or an error.
        let rest =
            futures_util::stream::unfold((events, id, false), |(mut s, id, done)| async move {
                if done {
                    return None;
                }
                loop {
                    match s.next().await? {
                        Ok(e) => {
                            if let Some(p) = progress(&id, &e) {
                                let end = matches!(
                                    p.status.as_str(),
                                    "running"
                                        | "degraded"
                                        | "failed"
                                        | "stopped"
                                        | "error"
                                        | "deleted"
                                );
                                return Some((Ok(p), (s, id, end)));
                            }
                        }
                        Err(e) => return Some((Err(e), (s, id, true))),
                    }
                }
            });
        Ok(Box::pin(rest))
    }

    /// A process's output: the last `lines` lines, then new ones as they
    /// come. A line with `skipped` > 0 marks lines the reader fell behind on.
    async fn logs(
        &self,
        ctx: &Context<'_>,
        names: Vec<String>,
        #[graphql(default = 10)] lines: u32,
    ) -> async_graphql::Result<impl Stream<Item = Res<LogLine>>> {
        let rx = crate::watch::logs(daemon(ctx)?, &names, lines, true, stop(ctx))
            .await
            .map_err(gql)?;
        Ok(ReceiverStream::new(rx).map(|r| r.map(LogLine::from).map_err(gql)))
    }
}

/// `name` as a glob matching only itself.
fn glob_literal(name: &str) -> String {
    glob::Pattern::escape(name)
}

/// An instance's event as progress; `None` for another instance's.
fn progress(id: &str, e: &hangar_store::EventRecord) -> Option<InstallProgress> {
    let d = &e.detail;
    let mut p = InstallProgress {
        event_id: e.id.into(),
        instance_id: id.to_string(),
        status: String::new(),
        step: None,
        percent: d["percent"].as_f64(),
        bytes: d["bytes"].as_u64().map(Int64::from),
        total: d["total"].as_u64().map(Int64::from),
        error: None,
    };
    match e.kind.as_str() {
        "install.progress" => {
            p.status = d["status"].as_str().unwrap_or("installing").to_string();
            p.step = Some("install".into());
        }
        _ => {
            // instance.state carries the instance's id: a same-named
            // instance made earlier is not this one.
            if d["id"].as_str().is_some_and(|x| x != id) {
                return None;
            }
            p.status = e.to.clone();
            p.step = d["step"].as_str().map(str::to_string);
            if let Some(code) = d["error_code"].as_str() {
                p.error = Some(ErrorInfo {
                    code: code.to_string(),
                    message: d["error"].as_str().unwrap_or_default().to_string(),
                    hint: None,
                    context: Vec::new(),
                });
            }
        }
    }
    Some(p)
}

/// The schema as SDL, as committed in `crates/api/graphql/schema.graphql`.
pub fn sdl() -> String {
    build(None, watch::channel(false).1).sdl()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_preview_masks_every_secret_value_and_nothing_else() {
        let inst: hangar_core::Instance = serde_json::from_value(serde_json::json!({
            "id": "i-0123456789ab", "name": "x", "feature": "xray", "version": "1",
            "options": {"uuid": "0b5c4d1e-secret", "port": 1080, "pin": 4321, "label": "public"},
            "secret_options": ["uuid", "pin"],
            "isolation": "shared", "key": "xray", "state": "running", "desired": "running",
            "bind": "127.0.0.1", "process": "xray.x", "dir": "/tmp/x",
            "created_ms": 1, "updated_ms": 2
        }))
        .expect("an instance");
        let text =
            "{\"id\": \"0b5c4d1e-secret\", \"port\": 1080, \"pin\": 4321, \"label\": \"public\"}";
        let out = mask(text.to_string(), &inst);
        assert!(
            !out.contains("0b5c4d1e-secret") && !out.contains("4321"),
            "{out}"
        );
        assert!(out.contains("1080") && out.contains("public"), "{out}");
        assert_eq!(
            out.matches(hangar_core::instances::REDACTED).count(),
            2,
            "{out}"
        );
    }
}
