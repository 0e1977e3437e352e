//! The [`NetworkBackend`] trait every backend implements.

use std::future::Future;
use std::pin::Pin;

use crate::error::NetError;
use crate::record::{NetRecord, NetSpec, RecoveryReport};

/// A boxed, sendable future (the trait stays object safe without `async-trait`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Called with the record whenever it changes during [`NetworkBackend::create`]:
/// once before the first step (state CREATING, no steps), after every step,
/// and at the end (ACTIVE, or ERROR after rollback). Store it each time, so a
/// crash mid-create leaves a record that [`NetworkBackend::teardown`] (or
/// [`NetworkBackend::recover`]) undoes at the next start. It runs on the
/// creating task: keep it short.
pub type Progress<'a> = &'a (dyn Fn(&NetRecord) + Send + Sync);

/// A progress callback that stores nothing.
pub fn no_progress(_: &NetRecord) {}

/// One way of giving instances their own network: the Linux kernel (namespace,
/// veth, routing table, policy rule) or a RouterOS router (VLAN, address,
/// routing table, route). Object safe: the daemon holds an `Arc<dyn NetworkBackend>`.
pub trait NetworkBackend: Send + Sync {
    /// `linux` or `routeros`; stored in every record.
    fn name(&self) -> &'static str;

    /// The record `create` would make for `spec`, in state CREATING with no
    /// step done: names, addresses, table and mark. Checks the spec against
    /// the config (number in range). Does nothing on the host.
    fn plan(&self, spec: &NetSpec) -> Result<NetRecord, NetError>;

    /// Makes the network: runs the steps in order, reporting through `progress`.
    /// On a failure the steps done are undone newest first, `progress` sees the
    /// record in state ERROR (naming the failing step) and the error is returned.
    fn create<'a>(
        &'a self,
        spec: &'a NetSpec,
        progress: Progress<'a>,
    ) -> BoxFuture<'a, Result<NetRecord, NetError>>;

    /// Removes everything the record names, whatever its state and steps.
    /// Idempotent: objects already gone are fine.
    fn teardown<'a>(&'a self, rec: &'a NetRecord) -> BoxFuture<'a, Result<(), NetError>>;

    /// At daemon start, given every stored record of this backend: removes
    /// hangar-owned objects (by name prefix and number range) that no record
    /// holds, rolls back records left CREATING or ERROR, and makes again the
    /// ACTIVE records whose objects are missing. Never touches objects without
    /// hangar's prefix or outside its ranges. Run it before any `create`.
    fn recover<'a>(
        &'a self,
        known: &'a [NetRecord],
    ) -> BoxFuture<'a, Result<RecoveryReport, NetError>>;
}
