//! [`DesiredSet`]: what should run, and the one path that changes what runs.
//!
//! It owns the applied [`WantMap`]. Writers (boot, reload, API changes, the
//! instances' process steps, the reconciler) serialise on one async lock and
//! go through [`Writer::apply`]: [`plan`] diffs the new set against the
//! applied one, the store learns the new set, a snapshot is published, then
//! removed and changed processes stop (dependents first) and starts run
//! concurrently. Readers ([`DesiredSet::snapshot`]) never wait for a writer:
//! they clone an `Arc` of the last published set, which a change publishes
//! before it starts stopping or starting anything, so a listing does not
//! stall while a stop waits out a grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use hangar_store::{Desired, Source, Store};
use hangar_supervisor::{Manager, ProcessSpec};
use tokio::sync::watch;
use tracing::info;

use crate::error::{Error, Result};
use crate::util::blocking;

/// How long a change waits for its processes to start before returning.
const START_WAIT: Duration = Duration::from_secs(10);

/// One process the daemon keeps, as it wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    /// The spec (one instance; `instances` already expanded).
    pub spec: ProcessSpec,
    /// Configuration file or API.
    pub source: Source,
    /// Running or stopped.
    pub desired: Desired,
}

/// The desired set: name → what is wanted. Values are shared, so copying the
/// map (for a diff, or to answer a listing) never copies a spec.
pub type WantMap = BTreeMap<String, Arc<Want>>;

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReloadReport {
    /// Started for the first time.
    pub added: Vec<String>,
    /// Stopped and forgotten.
    pub removed: Vec<String>,
    /// Restarted with a new spec (or a new desired state).
    pub changed: Vec<String>,
    /// Not touched.
    pub unchanged: Vec<String>,
    /// Processes that failed to start or stop, with why.
    pub errors: Vec<(String, Error)>,
}

/// The result of start/stop/restart over a pattern.
#[derive(Debug, Clone, Default)]
pub struct ActionReport {
    /// Names acted on successfully.
    pub names: Vec<String>,
    /// Names that failed, with why.
    pub errors: Vec<(String, Error)>,
}

/// What start/stop/restart over a pattern does to each process.
#[derive(Clone, Copy)]
pub(crate) enum Action {
    Start,
    Stop(Option<Duration>),
    Restart,
}

impl Action {
    /// Lower-case name (a crash point's context).
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop(_) => "stop",
            Action::Restart => "restart",
        }
    }
}

/// The difference between the applied set and a new one, and what it takes
/// to get there. Computed by [`plan`] without touching anything.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Plan {
    /// Names new in the set.
    pub(crate) added: Vec<String>,
    /// Names gone from the set.
    pub(crate) removed: Vec<String>,
    /// Names whose spec, desired state or source changed.
    pub(crate) changed: Vec<String>,
    /// Names not touched.
    pub(crate) unchanged: Vec<String>,
    /// Removed from the supervisor: gone, or their spec changed.
    pub(crate) to_remove: Vec<String>,
    /// Kept, but their desired state became stopped.
    pub(crate) to_stop: Vec<String>,
    /// Started (changed specs and new entries that should run).
    pub(crate) to_start: Vec<ProcessSpec>,
    /// Written to the store.
    pub(crate) to_put: Vec<Arc<Want>>,
}

/// Diff `old` (applied) against `new` (desired): added / removed / changed /
/// unchanged, and the removes, stops, starts and store writes that follow.
/// Pure; every list is in name order.
pub(crate) fn plan(old: &WantMap, new: &WantMap) -> Plan {
    let mut p = Plan::default();
    for (name, old) in old.iter() {
        let Some(new) = new.get(name) else {
            p.removed.push(name.clone());
            p.to_remove.push(name.clone());
            continue;
        };
        if new.spec != old.spec {
            p.changed.push(name.clone());
            p.to_remove.push(name.clone());
            p.to_put.push(new.clone());
            if new.desired == Desired::Running {
                p.to_start.push(new.spec.clone());
            }
        } else if new.desired != old.desired || new.source != old.source {
            p.changed.push(name.clone());
            p.to_put.push(new.clone());
            match new.desired {
                Desired::Running => p.to_start.push(new.spec.clone()),
                Desired::Stopped => p.to_stop.push(name.clone()),
            }
        } else {
            p.unchanged.push(name.clone());
        }
    }
    for (name, new) in new.iter() {
        if !old.contains_key(name) {
            p.added.push(name.clone());
            p.to_put.push(new.clone());
            if new.desired == Desired::Running {
                p.to_start.push(new.spec.clone());
            }
        }
    }
    p
}

/// The desired set. Cheap to clone: every clone is the same set.
#[derive(Clone)]
pub(crate) struct DesiredSet {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    manager: Manager,
    /// The applied set; held by every change from reading the current set to
    /// registering the new one, so two changes never build on the same stale
    /// copy.
    applied: tokio::sync::Mutex<WantMap>,
    /// What readers see: published by a change before it stops or starts.
    snapshot: watch::Sender<Arc<WantMap>>,
}

/// A change of the desired set under way: holds the writers' lock.
pub(crate) struct Writer<'a> {
    set: &'a DesiredSet,
    applied: tokio::sync::MutexGuard<'a, WantMap>,
}

pub(crate) fn not_found(name: &str) -> Error {
    Error::new(
        hangar_supervisor::ErrorKind::ProcessNotFound,
        format!("no process named {name:?}"),
    )
    .with("process", name)
    .hint("`hangar ps` lists the processes")
}

fn pattern(pattern: &str) -> Result<glob::Pattern> {
    glob::Pattern::new(pattern).map_err(|e| {
        Error::new(
            hangar_supervisor::ErrorKind::InvalidPattern,
            format!("invalid pattern {pattern:?}: {e}"),
        )
        .hint("use *, ? and [..] as in shell globs")
    })
}

impl DesiredSet {
    /// An empty set over the daemon's store and supervisor.
    pub(crate) fn new(store: Arc<Store>, manager: Manager) -> DesiredSet {
        DesiredSet {
            inner: Arc::new(Inner {
                store,
                manager,
                applied: tokio::sync::Mutex::new(BTreeMap::new()),
                snapshot: watch::Sender::new(Arc::new(BTreeMap::new())),
            }),
        }
    }

    /// The last published set. Never waits for a change under way.
    pub(crate) fn snapshot(&self) -> Arc<WantMap> {
        self.inner.snapshot.borrow().clone()
    }

    /// Begin a change: waits for the change under way, if any.
    pub(crate) async fn write(&self) -> Writer<'_> {
        Writer {
            set: self,
            applied: self.inner.applied.lock().await,
        }
    }

    /// Begin a change unless one is under way.
    pub(crate) fn try_write(&self) -> Option<Writer<'_>> {
        let applied = self.inner.applied.try_lock().ok()?;
        Some(Writer { set: self, applied })
    }

    /// Start / stop / restart the processes matching a name or glob; their
    /// desired state becomes `desired` (stored before anything moves).
    pub(crate) async fn act(
        &self,
        pattern_text: &str,
        desired: Desired,
        action: Action,
    ) -> Result<ActionReport> {
        let mut w = self.write().await;
        let m = pattern(pattern_text)?;
        let names: Vec<String> = w.applied.keys().filter(|n| m.matches(n)).cloned().collect();
        if names.is_empty() {
            return Err(not_found(pattern_text));
        }
        // Stored first: a failed write leaves memory, the snapshot and the
        // store as they were.
        let store = Arc::clone(&self.inner.store);
        let to_store = names.clone();
        blocking(move || {
            for n in &to_store {
                store.set_desired(n, desired)?;
            }
            Ok(())
        })
        .await?;
        hangar_base::crash_point!(
            "desired.act.stored",
            &names
                .iter()
                .map(|n| format!("{}:{n}", action.as_str()))
                .collect::<Vec<_>>()
        );
        for n in &names {
            if let Some(want) = w.applied.get_mut(n) {
                Arc::make_mut(want).desired = desired;
            }
        }
        w.publish();
        let mut jobs = tokio::task::JoinSet::new();
        for n in &names {
            let mgr = self.inner.manager.clone();
            let spec = w.applied.get(n).map(|w| w.spec.clone());
            let name = n.clone();
            jobs.spawn(async move {
                let res: Result<()> = match action {
                    Action::Start => match spec {
                        Some(spec) => start_one(&mgr, spec).await,
                        None => Err(not_found(&name)),
                    },
                    Action::Restart => match mgr.restart(&name).await {
                        Ok(_) => Ok(()),
                        Err(e) if e.kind() == hangar_supervisor::ErrorKind::ProcessNotFound => {
                            match spec {
                                Some(spec) => mgr.start(spec).await.map(drop).map_err(Error::from),
                                None => Err(not_found(&name)),
                            }
                        }
                        Err(e) => Err(e.into()),
                    },
                    Action::Stop(timeout) => match mgr.stop(&name, timeout).await {
                        Err(e) if e.kind() == hangar_supervisor::ErrorKind::ProcessNotFound => {
                            Ok(())
                        }
                        r => r.map_err(Error::from),
                    },
                };
                (name, res)
            });
        }
        let mut report = ActionReport::default();
        while let Some(j) = jobs.join_next().await {
            if let Ok((name, res)) = j {
                match res {
                    Ok(()) => report.names.push(name),
                    Err(e) => report.errors.push((name, e)),
                }
            }
        }
        drop(w);
        report.names.sort();
        report.errors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(report)
    }
}

impl Writer<'_> {
    /// The applied set.
    pub(crate) fn current(&self) -> &WantMap {
        &self.applied
    }

    /// Let readers see the applied set as it is now.
    fn publish(&self) {
        self.set
            .inner
            .snapshot
            .send_replace(Arc::new(self.applied.clone()));
    }

    /// Make what runs match `desired`; the one path for boot, reload and API
    /// changes. The store learns the new desired state before anything moves.
    pub(crate) async fn apply(&mut self, desired: WantMap) -> ReloadReport {
        self.apply_then(desired, None).await
    }

    /// [`Writer::apply`], telling `registered` once the new set is recorded
    /// and the old processes are gone, before the starts complete.
    pub(crate) async fn apply_then(
        &mut self,
        desired: WantMap,
        registered: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> ReloadReport {
        let Plan {
            added,
            removed,
            changed,
            unchanged,
            to_remove,
            to_stop,
            to_start,
            to_put,
        } = plan(&self.applied, &desired);
        let mut report = ReloadReport {
            added,
            removed,
            changed,
            unchanged,
            errors: Vec::new(),
        };
        // A set the descriptor limit or the kernel's pids cannot hold is
        // refused whole, before anything is stored or moves.
        if let Err(e) = self
            .set
            .inner
            .manager
            .check_capacity(desired.len(), report.added.len())
        {
            report.errors.push((String::new(), e.into()));
            return report;
        }

        // Persist first.
        let store = Arc::clone(&self.set.inner.store);
        let removed = report.removed.clone();
        let puts: Vec<(String, Source, String, Desired)> = to_put
            .iter()
            .filter_map(|w| {
                let json = serde_json::to_string(&w.spec).ok()?;
                Some((w.spec.name.clone(), w.source, json, w.desired))
            })
            .collect();
        // Which change this is, for the crash point between the writes.
        #[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
        let change = touched(&report);
        if let Err(e) = blocking(move || {
            for (name, source, json, desired) in &puts {
                store.put_process(name, *source, json, *desired)?;
            }
            hangar_base::crash_point!("desired.apply.put", &change);
            for name in &removed {
                store.remove_process(name)?;
            }
            Ok(())
        })
        .await
        {
            report.errors.push((String::new(), e));
            return report;
        }
        hangar_base::crash_point!("desired.apply.stored", &touched(&report));

        // Readers see the new set from here on, while the stops wait out
        // their grace periods.
        *self.applied = desired;
        self.publish();

        // Removed and changed processes go first, then those to stop; each set
        // dependents before their dependencies, as the supervisor orders them.
        let mgr = &self.set.inner.manager;
        let removing: BTreeSet<String> = to_remove.into_iter().collect();
        mgr.remove_many(&removing).await;
        let stopping: BTreeSet<String> = to_stop.into_iter().collect();
        mgr.stop_many(&stopping, None).await;
        hangar_base::crash_point!("desired.apply.stopped", &touched(&report));
        let mut jobs = tokio::task::JoinSet::new();
        if let Some(tx) = registered {
            let _ = tx.send(());
        }

        // Starts run concurrently: a process waiting for a dependency must not
        // hold up the dependency's own start. The caller hears about starts
        // that settle within START_WAIT; slower ones (a long readiness probe, a
        // dependency that is stopped) go on in the background and report
        // through events, so no caller (nor systemd's watchdog) waits forever.
        for spec in to_start {
            let mgr = mgr.clone();
            jobs.spawn(async move {
                let name = spec.name.clone();
                (name, start_one(&mgr, spec).await)
            });
        }
        let settled = tokio::time::timeout(START_WAIT, async {
            while let Some(j) = jobs.join_next().await {
                if let Ok((name, Err(e))) = j {
                    report.errors.push((name, e));
                }
            }
        })
        .await;
        if settled.is_err() {
            info!(
                starting = jobs.len(),
                "processes still starting; their events tell how it ends"
            );
            jobs.detach_all();
        }
        hangar_base::crash_point!("desired.apply.started", &touched(&report));
        for v in [
            &mut report.added,
            &mut report.removed,
            &mut report.changed,
            &mut report.unchanged,
        ] {
            v.sort();
        }
        report.errors.sort_by(|a, b| a.0.cmp(&b.0));
        report
    }
}

/// What a change touches, as its crash points' context: `added:NAME`,
/// `changed:NAME`, `removed:NAME` (see `hangar_base::failpoint`).
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn touched(r: &ReloadReport) -> Vec<String> {
    let tag = |what: &'static str| move |n: &String| format!("{what}:{n}");
    r.added
        .iter()
        .map(tag("added"))
        .chain(r.changed.iter().map(tag("changed")))
        .chain(r.removed.iter().map(tag("removed")))
        .collect()
}

/// Start a process unless it is already active: by name when the supervisor
/// knows it, else by registering its spec. Losing a race with another starter
/// (the reconciler, an API call) is not an error.
pub(crate) async fn start_one(mgr: &Manager, spec: ProcessSpec) -> Result<()> {
    let res = match mgr.status(&spec.name) {
        Ok(s) if s.state.is_active() => return Ok(()),
        Ok(_) => mgr.start_name(&spec.name).await,
        Err(_) => mgr.start(spec).await,
    };
    match res {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == hangar_supervisor::ErrorKind::DuplicateName => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(name: &str, cmd: &str, source: Source, desired: Desired) -> (String, Arc<Want>) {
        (
            name.to_string(),
            Arc::new(Want {
                spec: ProcessSpec::new(name, cmd),
                source,
                desired,
            }),
        )
    }

    fn set(v: Vec<(String, Arc<Want>)>) -> WantMap {
        v.into_iter().collect()
    }

    fn names(specs: &[ProcessSpec]) -> Vec<&str> {
        specs.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn from_empty_everything_is_added_and_running_ones_start() {
        let new = set(vec![
            want("a", "sleep", Source::Config, Desired::Running),
            want("b", "sleep", Source::Api, Desired::Stopped),
        ]);
        let p = plan(&WantMap::new(), &new);
        assert_eq!(p.added, ["a", "b"]);
        assert!(p.removed.is_empty() && p.changed.is_empty() && p.unchanged.is_empty());
        assert_eq!(names(&p.to_start), ["a"]);
        assert_eq!(p.to_put.len(), 2);
        assert!(p.to_remove.is_empty() && p.to_stop.is_empty());
    }

    #[test]
    fn the_same_set_is_unchanged_and_moves_nothing() {
        let s = set(vec![
            want("a", "sleep", Source::Config, Desired::Running),
            want("b", "sleep", Source::Api, Desired::Stopped),
        ]);
        let p = plan(&s, &s.clone());
        assert_eq!(p.unchanged, ["a", "b"]);
        assert_eq!(
            p,
            Plan {
                unchanged: vec!["a".into(), "b".into()],
                ..Plan::default()
            }
        );
    }

    #[test]
    fn gone_entries_are_removed_and_not_stored() {
        let old = set(vec![
            want("a", "sleep", Source::Config, Desired::Running),
            want("b", "sleep", Source::Config, Desired::Running),
        ]);
        let new = set(vec![want("a", "sleep", Source::Config, Desired::Running)]);
        let p = plan(&old, &new);
        assert_eq!(p.removed, ["b"]);
        assert_eq!(p.to_remove, ["b"]);
        assert_eq!(p.unchanged, ["a"]);
        assert!(p.to_put.is_empty() && p.to_start.is_empty() && p.to_stop.is_empty());
    }

    #[test]
    fn a_new_spec_is_removed_then_started_again() {
        let old = set(vec![want("a", "sleep", Source::Config, Desired::Running)]);
        let new = set(vec![want("a", "true", Source::Config, Desired::Running)]);
        let p = plan(&old, &new);
        assert_eq!(p.changed, ["a"]);
        assert_eq!(p.to_remove, ["a"]);
        assert_eq!(names(&p.to_start), ["a"]);
        assert_eq!(p.to_put.len(), 1);
    }

    #[test]
    fn a_new_spec_that_should_not_run_is_removed_and_not_started() {
        let old = set(vec![want("a", "sleep", Source::Api, Desired::Running)]);
        let new = set(vec![want("a", "true", Source::Api, Desired::Stopped)]);
        let p = plan(&old, &new);
        assert_eq!(p.changed, ["a"]);
        assert_eq!(p.to_remove, ["a"]);
        assert!(p.to_start.is_empty() && p.to_stop.is_empty());
    }

    #[test]
    fn a_new_desired_state_stops_or_starts_without_removing() {
        let old = set(vec![
            want("a", "sleep", Source::Config, Desired::Running),
            want("b", "sleep", Source::Config, Desired::Stopped),
        ]);
        let new = set(vec![
            want("a", "sleep", Source::Config, Desired::Stopped),
            want("b", "sleep", Source::Config, Desired::Running),
        ]);
        let p = plan(&old, &new);
        assert_eq!(p.changed, ["a", "b"]);
        assert_eq!(p.to_stop, ["a"]);
        assert_eq!(names(&p.to_start), ["b"]);
        assert!(p.to_remove.is_empty());
        assert_eq!(p.to_put.len(), 2);
    }

    #[test]
    fn a_new_source_is_stored_and_started() {
        let old = set(vec![want("a", "sleep", Source::Api, Desired::Running)]);
        let new = set(vec![want("a", "sleep", Source::Config, Desired::Running)]);
        let p = plan(&old, &new);
        assert_eq!(p.changed, ["a"]);
        assert_eq!(p.to_put.len(), 1);
        assert_eq!(p.to_put[0].source, Source::Config);
        assert_eq!(names(&p.to_start), ["a"]);
        assert!(p.to_remove.is_empty() && p.to_stop.is_empty());
    }

    #[test]
    fn a_mixed_change_is_classified_in_name_order() {
        let old = set(vec![
            want("c", "sleep", Source::Config, Desired::Running),
            want("a", "sleep", Source::Config, Desired::Running),
            want("d", "sleep", Source::Config, Desired::Running),
        ]);
        let new = set(vec![
            want("a", "sleep", Source::Config, Desired::Running),
            want("b", "sleep", Source::Api, Desired::Running),
            want("d", "true", Source::Config, Desired::Running),
        ]);
        let p = plan(&old, &new);
        assert_eq!(p.added, ["b"]);
        assert_eq!(p.removed, ["c"]);
        assert_eq!(p.changed, ["d"]);
        assert_eq!(p.unchanged, ["a"]);
        assert_eq!(p.to_remove, ["c", "d"]);
    }
}
