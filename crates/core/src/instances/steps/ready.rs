//! Ready: wait until the process runs and its probe does not say unhealthy,
//! within `ready_timeout`. Woken by the supervisor's events for the process
//! (state and health changes), not by polling. Nothing to undo.

use std::time::Duration;

use hangar_supervisor::{Health as ProbeHealth, State};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::super::{Instance, Instances};
use crate::error::{Error, Result};

pub(in crate::instances) async fn apply(ins: &Instances, inst: &Instance) -> Result<()> {
    let deadline = Instant::now() + ins.s.settings.ready_timeout;
    // Subscribe before the first look, so no change between the look and
    // the wait goes unseen.
    let mut events = ins.s.manager.subscribe();
    loop {
        match ins.s.manager.status(&inst.process) {
            Ok(s) if s.state == State::Running && s.health.status != ProbeHealth::Unhealthy => {
                return Ok(())
            }
            Ok(s) if matches!(s.state, State::Failed | State::Exited) => {
                let why = s
                    .last_error
                    .map(|e| e.message().to_string())
                    .or_else(|| s.last_exit.map(|x| format!("it exited ({x})")))
                    .unwrap_or_else(|| "it stopped".into());
                return Err(Error::new(
                    crate::ErrorKind::InstanceStartFailed,
                    format!("{} did not stay up: {why}", inst.process),
                )
                .with("restarts", s.restarts)
                .hint(format!("see `hangar logs {}`", inst.process)));
            }
            Ok(_) => {}
            Err(e) if e.kind() == hangar_supervisor::ErrorKind::ProcessNotFound => {
                return Err(Error::new(
                    crate::ErrorKind::InstanceStartFailed,
                    format!("{} is gone", inst.process),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            return Err(Error::new(
                hangar_supervisor::ErrorKind::ReadinessTimeout,
                format!("{} was not healthy in time", inst.process),
            )
            .hint("raise [daemon.instances] ready_timeout, or check `hangar logs`"));
        }
        // Wait for a change of this process (or the deadline), then look
        // again. A lagged receiver may have missed one: look again at once.
        let process = inst.process.as_str();
        let _ = tokio::time::timeout_at(deadline, async {
            loop {
                match events.recv().await {
                    Ok(ev) if &*ev.name == process => return,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return,
                    // The supervisor is shutting down: no more events, so
                    // look at an interval until the deadline.
                    Err(RecvError::Closed) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return;
                    }
                }
            }
        })
        .await;
    }
}

pub(super) async fn undo(_ins: &Instances, _inst: &Instance) -> Result<()> {
    Ok(())
}
