//! After the create flow: a made instance's state follows its process. A
//! crash (backing off before the restart) or an unhealthy probe makes it
//! `degraded`; an open restart circuit, `failed`; running and not unhealthy
//! again, `running`. Each change is stored and announced as an
//! `instance.state` event, like every other. Woken by the supervisor's
//! events, never by polling. An instance in the middle of an operation (its
//! operation lock held) is left to that operation, which sets its state.

use hangar_supervisor::{Health, State};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use super::{Instance, InstanceState, Instances};

impl Instances {
    /// Follow the processes of made instances until `stop`.
    pub(crate) async fn watch_loop(self, mut stop: watch::Receiver<bool>) {
        let mut events = self.s.manager.subscribe();
        loop {
            let changed = tokio::select! {
                r = events.recv() => r,
                _ = stop.changed() => return,
            };
            // After a lag the missed events are unknown: look at every one.
            let process = match changed {
                Ok(ev) => Some(ev.name),
                Err(RecvError::Lagged(_)) => None,
                Err(RecvError::Closed) => return,
            };
            let targets: Vec<Instance> = self
                .table()
                .records
                .values()
                .filter(|i| i.state.is_up())
                .filter(|i| process.as_deref().is_none_or(|p| p == i.process))
                .cloned()
                .collect();
            for inst in targets {
                self.follow(&inst).await;
            }
        }
    }

    /// Bring one instance's state in line with its process's.
    async fn follow(&self, inst: &Instance) {
        let lock = self.op_lock(&inst.id);
        let Ok(_g) = lock.try_lock() else {
            return;
        };
        let Ok(s) = self.s.manager.status(&inst.process) else {
            return;
        };
        let next = match s.state {
            State::Running if s.health.status != Health::Unhealthy => InstanceState::Running,
            State::Running | State::Backoff | State::Starting => InstanceState::Degraded,
            State::Failed => InstanceState::Failed,
            // Stopping, stopped, exited, waiting: an operation is on its way
            // (it holds the lock, or is about to take it); leave it be.
            _ => return,
        };
        if next == inst.state {
            return;
        }
        let res = self
            .update(&inst.id, |i| {
                if i.state.is_up() {
                    i.state = next;
                }
            })
            .await;
        if let Err(e) = res {
            tracing::warn!(instance = %inst.name, code = e.code(), "cannot record the instance's state: {}", e.message);
        }
    }
}
