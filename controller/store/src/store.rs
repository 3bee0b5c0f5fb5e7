//! The trait every backend implements, and the watch handle they return.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::StoreResult;
use crate::types::{Event, KeyValue, Lease, LeaseId, ListResult, Revision, Txn, TxnResult};

/// A revisioned key-value store: the controller's desired state and the hosts' status.
///
/// Object-safe (`Arc<dyn Store>`) so the operator's configuration picks the backend at run
/// time; every future is `Send` so it can run inside axum handlers.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"embedded"` or `"etcd"`, for logs and diagnostics.
    fn backend(&self) -> &'static str;

    /// The record under `key`, read linearizably.
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>>;

    /// Every record whose key starts with `prefix` (`""`: all), as of one revision, which is
    /// returned: watching after it misses nothing and repeats nothing.
    async fn list(&self, prefix: &str) -> StoreResult<ListResult>;

    /// Applies `txn` atomically if all its compares hold; otherwise returns
    /// [`StoreError::Conflict`](crate::StoreError::Conflict) naming a key whose compare failed, and changes nothing.
    async fn txn(&self, txn: Txn) -> StoreResult<TxnResult>;

    /// The store's current revision.
    async fn current_revision(&self) -> StoreResult<Revision>;

    /// Changes to keys under `prefix` with revision greater than `after`, in revision order,
    /// without gaps or repeats. If that history has been compacted, the watch yields
    /// [`StoreError::Compacted`](crate::StoreError::Compacted) and ends.
    async fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch>;

    /// Discards change history before `revision`: afterwards a watch after `revision - 1` or
    /// later still works, an earlier one gets [`StoreError::Compacted`](crate::StoreError::Compacted). Compacting to a
    /// revision already compacted is a no-op; to a future revision, an error.
    async fn compact(&self, revision: Revision) -> StoreResult<()>;

    /// Grants a lease of at least `ttl` (rounded up to whole seconds; etcd may raise it to its
    /// minimum). Keys put with it are deleted when it expires or is revoked.
    async fn grant_lease(&self, ttl: Duration) -> StoreResult<Lease>;

    /// Restarts the lease's TTL; returns the TTL. [`StoreError::LeaseNotFound`](crate::StoreError::LeaseNotFound) if it ended.
    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<Duration>;

    /// Ends the lease now, deleting its keys (one revision for all of them).
    async fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()>;

    /// Unconditional put; returns the revision of the write.
    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision> {
        Ok(self.txn(Txn::new().put(key, value)).await?.revision)
    }

    /// Unconditional delete; returns whether the key existed.
    async fn delete(&self, key: &str) -> StoreResult<bool> {
        Ok(self.txn(Txn::new().delete(key)).await?.deleted > 0)
    }
}

/// Bound of a watch's queue of undelivered batches. A watcher that stops reading stops its
/// producer (backpressure), it does not grow memory; if it falls behind compaction it gets
/// [`StoreError::Compacted`](crate::StoreError::Compacted) and re-lists.
pub(crate) const WATCH_QUEUE: usize = 16;

/// A stream of change batches from [`Store::watch`].
///
/// Each batch holds the events of one or more whole revisions (a transaction's changes are
/// never split across batches), in ascending revision order.
pub struct Watch {
    rx: mpsc::Receiver<StoreResult<Vec<Event>>>,
    /// The producer task; aborted when the watch is dropped so nothing keeps running (or keeps
    /// an etcd stream open) for a watcher that is gone.
    task: JoinHandle<()>,
}

impl Watch {
    pub(crate) fn new(rx: mpsc::Receiver<StoreResult<Vec<Event>>>, task: JoinHandle<()>) -> Self {
        Self { rx, task }
    }

    /// The next batch. `Some(Err(_))` is final (compaction, or the store failed); `None`
    /// means the store was closed.
    pub async fn next(&mut self) -> Option<StoreResult<Vec<Event>>> {
        self.rx.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}
