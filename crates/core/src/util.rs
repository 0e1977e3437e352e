//! Small helpers the daemon and the instances share.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    ms(SystemTime::now())
}

/// Milliseconds since the epoch of `t` (0 before the epoch).
pub(crate) fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Run blocking work (SQLite, files, catalogs) on tokio's blocking threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::new(
            hangar_base::ErrorKind::Internal,
            format!("blocking task failed: {e}"),
        )
    })?
}

/// Run a change to its end even if the caller stops waiting. A gRPC client
/// that disconnects drops its request's future; a change cut short there
/// would leave the desired set published but not carried out (a removed
/// process still running, listed nowhere), or an instance half-deleted.
pub(crate) async fn detached<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(f).await.map_err(|e| {
        Error::new(
            hangar_base::ErrorKind::Internal,
            format!("change task failed: {e}"),
        )
    })?
}

/// Lock a std mutex, taking over a poisoned one (its holders never leave the
/// data half-changed). Never hold the guard across an await.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
