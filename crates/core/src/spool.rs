//! [`Spool`]: events the store refused, kept in order until it takes them
//! again, and a count of those that did not fit or never reached the persist
//! task. The count is itself stored as an `events.lost` event, so a gap in
//! the history is never silent.

use std::collections::BTreeSet;

use hangar_store::EventRecord;
use serde_json::json;

use crate::util::now_ms;

/// Events held while the store refuses writes (a full disk); beyond this they
/// are counted as lost.
pub(crate) const SPOOL_MAX: usize = 16 * 1024;

/// The name daemon-wide events (the store, the event pipeline) carry.
pub(crate) const DAEMON: &str = "hangar";

/// Why events were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Loss {
    /// The store refused them and the spool was full.
    SpoolFull,
    /// The persist task fell behind the supervisor's event channel.
    Lagged,
}

impl Loss {
    fn as_str(self) -> &'static str {
        match self {
            Loss::SpoolFull => "the store refused them and the spool was full",
            Loss::Lagged => "the event pipeline fell behind",
        }
    }
}

/// Held events and the count of lost ones.
#[derive(Debug, Default)]
pub(crate) struct Spool {
    held: Vec<EventRecord>,
    lost: u64,
    /// When the first and last lost event happened, when known.
    lost_span: Option<(i64, i64)>,
    reasons: BTreeSet<Loss>,
}

impl Spool {
    /// Nothing held and nothing lost.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty() && self.lost == 0
    }

    /// Events held.
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// Keep `records` after those held, in order; those beyond [`SPOOL_MAX`]
    /// are counted as lost.
    pub(crate) fn hold(&mut self, records: impl IntoIterator<Item = EventRecord>) {
        for r in records {
            if self.held.len() < SPOOL_MAX {
                self.held.push(r);
            } else {
                self.lose(1, Some(r.at_ms), Loss::SpoolFull);
            }
        }
    }

    /// Count `n` events lost, at `at_ms` when known.
    pub(crate) fn lose(&mut self, n: u64, at_ms: Option<i64>, why: Loss) {
        if n == 0 {
            return;
        }
        self.lost += n;
        self.reasons.insert(why);
        if let Some(t) = at_ms {
            self.lost_span = Some(match self.lost_span {
                Some((a, b)) => (a.min(t), b.max(t)),
                None => (t, t),
            });
        }
    }

    /// What to write before `fresh`: the held events, then the record of the
    /// loss (if any), then `fresh`. Give the result to [`Spool::stored`] or
    /// [`Spool::refused`].
    pub(crate) fn take(&mut self, fresh: Vec<EventRecord>) -> Pending {
        let mut records = std::mem::take(&mut self.held);
        let loss_at = (self.lost > 0).then(|| {
            records.push(self.loss_record());
            records.len() - 1
        });
        records.extend(fresh);
        Pending { records, loss_at }
    }

    /// The write succeeded: the loss is on record.
    pub(crate) fn stored(&mut self, p: &Pending) {
        if p.loss_at.is_some() {
            self.lost = 0;
            self.lost_span = None;
            self.reasons.clear();
        }
    }

    /// The write failed: hold its events again (the loss record is made anew
    /// next time, with the count then).
    pub(crate) fn refused(&mut self, mut p: Pending) {
        if let Some(i) = p.loss_at {
            p.records.remove(i);
        }
        self.hold(p.records);
    }

    fn loss_record(&self) -> EventRecord {
        let reasons: Vec<&str> = self.reasons.iter().map(|r| r.as_str()).collect();
        let mut detail = json!({"count": self.lost, "reasons": reasons});
        if let Some((first, last)) = self.lost_span {
            detail["first_at_ms"] = first.into();
            detail["last_at_ms"] = last.into();
        }
        daemon_event("events.lost", &self.lost.to_string(), detail)
    }
}

/// Events to write, as [`Spool::take`] made them.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) records: Vec<EventRecord>,
    loss_at: Option<usize>,
}

/// An event of the daemon itself (not of one process or instance).
pub(crate) fn daemon_event(kind: &str, to: &str, detail: serde_json::Value) -> EventRecord {
    EventRecord {
        id: 0,
        at_ms: now_ms(),
        name: DAEMON.to_string(),
        pid: None,
        kind: kind.to_string(),
        from: String::new(),
        to: to.to_string(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: i64) -> EventRecord {
        EventRecord {
            at_ms: i,
            ..daemon_event("state", "x", json!({}))
        }
    }

    #[test]
    fn refused_writes_keep_order_and_a_full_spool_counts_what_it_drops() {
        let mut s = Spool::default();
        assert!(s.is_empty());
        let p = s.take((0..3).map(ev).collect());
        s.refused(p);
        assert_eq!(s.held(), 3);
        s.hold((3..(SPOOL_MAX as i64 + 5)).map(ev));
        assert_eq!(s.held(), SPOOL_MAX);
        s.lose(2, None, Loss::Lagged);
        let p = s.take(vec![ev(-1)]);
        let at: Vec<i64> = p.records.iter().map(|r| r.at_ms).collect();
        assert_eq!(&at[..3], &[0, 1, 2], "held events first, in order");
        let loss = &p.records[SPOOL_MAX];
        assert_eq!(loss.kind, "events.lost");
        assert_eq!(loss.detail["count"], 7, "5 that did not fit and 2 lagged");
        assert_eq!(loss.detail["first_at_ms"], SPOOL_MAX as i64);
        assert_eq!(loss.detail["last_at_ms"], SPOOL_MAX as i64 + 4);
        assert_eq!(p.records.last().map(|r| r.at_ms), Some(-1), "fresh last");
        // Refused again: the loss record is not held as an event, the count stays.
        s.refused(p);
        assert_eq!(s.held(), SPOOL_MAX);
        let p = s.take(Vec::new());
        assert_eq!(p.records.len(), SPOOL_MAX + 1);
        let loss = p.records.last().expect("loss record");
        assert_eq!(loss.detail["count"], 8, "the fresh event no longer fit");
        s.stored(&p);
        assert!(s.is_empty());
        assert!(s.take(Vec::new()).records.is_empty());
    }
}
