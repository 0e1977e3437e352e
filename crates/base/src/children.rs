//! Children that some part of this program waits for itself.
//!
//! A program that is a child subreaper (`PR_SET_CHILD_SUBREAPER`: `hangar run`
//! and `hangar serve`) inherits every orphan of its descendants and must reap
//! them, or they stay zombies. But it also has children it waits for by pid or
//! pidfd (the supervisor's processes, an exec plugin): reaping one of those
//! steals its exit status from the task that waits for it. So whoever spawns
//! a child it will wait for [`claim`]s its pid, and the orphan sweep skips
//! claimed pids.
//!
//! The claim must exist before a sweep can see the child. A spawner holds a
//! [`spawning`] guard from before the fork until the claim is made; a sweep
//! holds [`Sweep`], which excludes every spawner for its (short) duration. Many
//! spawners can hold their guards at once.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

static SPAWN: RwLock<()> = RwLock::new(());
/// Claims per pid: counted, so a late drop of an old claim (its child reaped
/// and the pid reused for a new child claimed meanwhile) leaves the new one.
static CLAIMED: OnceLock<Mutex<HashMap<u32, u32>>> = OnceLock::new();

fn claimed() -> std::sync::MutexGuard<'static, HashMap<u32, u32>> {
    let m = CLAIMED.get_or_init(|| Mutex::new(HashMap::new()));
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Held by a spawner from before it forks until it has claimed the child.
pub struct Spawning(#[allow(dead_code)] RwLockReadGuard<'static, ()>);

/// Taken before forking a child that will be claimed.
pub fn spawning() -> Spawning {
    Spawning(SPAWN.read().unwrap_or_else(|p| p.into_inner()))
}

/// A claimed child: the orphan sweep leaves it alone until this is dropped.
/// Drop it once the child is reaped: whoever claims a child reaps it.
#[derive(Debug)]
pub struct Claim(u32);

impl Claim {
    /// The claimed pid.
    pub fn pid(&self) -> u32 {
        self.0
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut c = claimed();
        if let Some(n) = c.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.0);
            }
        }
    }
}

/// Claim `pid`, a child this program just spawned and will wait for itself.
pub fn claim(pid: u32) -> Claim {
    *claimed().entry(pid).or_insert(0) += 1;
    Claim(pid)
}

/// An orphan sweep in progress: no spawner is between fork and claim.
pub struct Sweep(#[allow(dead_code)] RwLockWriteGuard<'static, ()>);

impl Sweep {
    /// Someone waits for this child itself: do not reap it.
    pub fn is_claimed(&self, pid: u32) -> bool {
        claimed().contains_key(&pid)
    }
}

/// Begin a sweep; waits for spawners between fork and claim.
pub fn sweep() -> Sweep {
    Sweep(SPAWN.write().unwrap_or_else(|p| p.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_lasts_until_dropped() {
        let c = claim(4_000_001);
        assert_eq!(c.pid(), 4_000_001);
        assert!(sweep().is_claimed(4_000_001));
        drop(c);
        assert!(!sweep().is_claimed(4_000_001));
    }

    #[test]
    fn an_old_claim_dropped_late_leaves_the_new_one() {
        let old = claim(4_000_003);
        let new = claim(4_000_003);
        drop(old);
        assert!(sweep().is_claimed(4_000_003));
        drop(new);
        assert!(!sweep().is_claimed(4_000_003));
    }

    #[test]
    fn a_sweep_waits_for_a_spawner_between_fork_and_claim() {
        let g = spawning();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let s = sweep();
            tx.send(s.is_claimed(4_000_002)).unwrap();
        });
        // The sweep cannot begin while the spawner holds its guard.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        let c = claim(4_000_002);
        drop(g);
        assert!(rx.recv().unwrap(), "the sweep saw the claim");
        t.join().unwrap();
        drop(c);
    }
}
