//! [`EventSink`]: how the daemon's own events (instances, installs) enter its
//! persist task, so they are stored before they are announced, like the
//! supervisor's.

use hangar_store::EventRecord;
use tokio::sync::mpsc;

use crate::util::now_ms;

/// A cloneable sender into the daemon's persist task.
#[derive(Clone)]
pub(crate) struct EventSink {
    tx: mpsc::UnboundedSender<EventRecord>,
}

impl EventSink {
    /// A sink and the receiving end the persist task drains.
    pub(crate) fn channel() -> (EventSink, mpsc::UnboundedReceiver<EventRecord>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (EventSink { tx }, rx)
    }

    /// Hand an event to the persist task (dropped once the daemon is gone).
    pub(crate) fn emit(
        &self,
        name: &str,
        kind: &str,
        from: &str,
        to: &str,
        detail: serde_json::Value,
    ) {
        let _ = self.tx.send(EventRecord {
            id: 0,
            at_ms: now_ms(),
            name: name.to_string(),
            pid: None,
            kind: kind.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            detail,
        });
    }
}
