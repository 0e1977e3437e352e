//! The allocator of per-instance network numbers (the seed's VLAN ids).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::error::{NetError, NetErrorKind};
use crate::record::{NetPool, NetRecord};

/// Hands out instance numbers from a [`NetPool`]'s range, one per owner;
/// safe to share between threads.
///
/// Allocation continues after the last number handed out rather than from the
/// start, so a just-released number (whose kernel objects may still be going
/// away) is not reused at once. Asking again for an owner that already holds a
/// number returns the same number.
///
/// ```
/// use hangar_net::{NetAllocator, NetPool};
///
/// let alloc = NetAllocator::new(NetPool::new("10.99.0.0".parse().unwrap(), 1, 2)).unwrap();
/// let a = alloc.allocate("a").unwrap();
/// let b = alloc.allocate("b").unwrap();
/// assert_ne!(a, b);
/// assert_eq!(alloc.allocate("c").unwrap_err().code(), "NET_RANGE_EXHAUSTED");
/// alloc.release(a);
/// assert_eq!(alloc.allocate("c").unwrap(), a);
/// ```
pub struct NetAllocator {
    pool: NetPool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    owner_of: BTreeMap<u32, String>,
    by_owner: HashMap<String, u32>,
    cursor: u32,
}

impl NetAllocator {
    /// An allocator over `pool`'s range (validated).
    pub fn new(pool: NetPool) -> Result<Self, NetError> {
        pool.validate()?;
        let cursor = pool.first;
        Ok(NetAllocator {
            pool,
            inner: Mutex::new(Inner {
                cursor,
                ..Inner::default()
            }),
        })
    }

    /// The pool.
    pub fn pool(&self) -> &NetPool {
        &self.pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // (every update is one insert/remove pair), so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free number for `owner` (or the one it already holds).
    pub fn allocate(&self, owner: &str) -> Result<u32, NetError> {
        let mut inner = self.lock();
        if let Some(n) = inner.by_owner.get(owner) {
            return Ok(*n);
        }
        let span = self.pool.last - self.pool.first + 1;
        let mut n = inner.cursor;
        for _ in 0..span {
            if !self.pool.contains(n) {
                n = self.pool.first;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = inner.owner_of.entry(n) {
                slot.insert(owner.to_string());
                inner.by_owner.insert(owner.to_string(), n);
                inner.cursor = if n == self.pool.last {
                    self.pool.first
                } else {
                    n + 1
                };
                return Ok(n);
            }
            n = if n == self.pool.last {
                self.pool.first
            } else {
                n + 1
            };
        }
        Err(NetError::new(
            NetErrorKind::Exhausted,
            format!(
                "no free network number for {owner:?}: all {span} of {}..={} are taken",
                self.pool.first, self.pool.last
            ),
        ))
    }

    /// Takes number `n` for `owner` (e.g. one read back from a record).
    /// Fine if `owner` already holds `n`.
    pub fn reserve(&self, n: u32, owner: &str) -> Result<(), NetError> {
        if !self.pool.contains(n) {
            return Err(NetError::new(
                NetErrorKind::NumberUnavailable,
                format!(
                    "network number {n} for {owner:?} is outside the configured range {}..={}",
                    self.pool.first, self.pool.last
                ),
            ));
        }
        let mut inner = self.lock();
        match inner.owner_of.get(&n) {
            Some(o) if o == owner => return Ok(()),
            Some(o) => {
                return Err(NetError::new(
                    NetErrorKind::NumberUnavailable,
                    format!("network number {n} is held by {o:?}, not {owner:?}"),
                ))
            }
            None => {}
        }
        if let Some(old) = inner.by_owner.get(owner).copied() {
            return Err(NetError::new(
                NetErrorKind::NumberUnavailable,
                format!(
                    "{owner:?} already holds network number {old}; release it before taking {n}"
                ),
            ));
        }
        inner.owner_of.insert(n, owner.to_string());
        inner.by_owner.insert(owner.to_string(), n);
        Ok(())
    }

    /// Frees `n`; returns its owner if it was held.
    pub fn release(&self, n: u32) -> Option<String> {
        let mut inner = self.lock();
        let owner = inner.owner_of.remove(&n)?;
        inner.by_owner.remove(&owner);
        Some(owner)
    }

    /// Frees whatever `owner` holds; returns the number.
    pub fn release_owner(&self, owner: &str) -> Option<u32> {
        let mut inner = self.lock();
        let n = inner.by_owner.remove(owner)?;
        inner.owner_of.remove(&n);
        Some(n)
    }

    /// The owner of `n`, if any.
    pub fn owner(&self, n: u32) -> Option<String> {
        self.lock().owner_of.get(&n).cloned()
    }

    /// The number `owner` holds, if any.
    pub fn number_of(&self, owner: &str) -> Option<u32> {
        self.lock().by_owner.get(owner).copied()
    }

    /// How many numbers are held.
    pub fn len(&self) -> usize {
        self.lock().owner_of.len()
    }

    /// Whether no number is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves the number of every stored record (at daemon start). Returns
    /// the records that could not be reserved (out of range, or a number two
    /// records claim) with the reason; the rest are held.
    pub fn restore<'a>(
        &self,
        records: impl IntoIterator<Item = &'a NetRecord>,
    ) -> Vec<(&'a NetRecord, NetError)> {
        let mut bad = Vec::new();
        for r in records {
            if let Err(e) = self.reserve(r.number, &r.instance_id) {
                bad.push((r, e));
            }
        }
        bad
    }
}
