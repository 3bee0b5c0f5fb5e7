//! # dvs-store: the controller's storage layer
//!
//! The DVS controller keeps the cluster's desired state (DVSs, port groups, security groups,
//! ports, address assignments) and the hosts' status in a revisioned key-value store. This
//! crate is that store: one trait, [`Store`], and two backends the operator chooses between.
//! It is generic — keys are strings such as `/dvs/<dvs>/portgroups/<name>` or
//! `/hosts/<host>/status`, values are bytes (JSON, in practice); the typed model lives
//! elsewhere.
//!
//! ## The trait
//! - [`Store::get`] and [`Store::list`]: read one key, or every key under a prefix as of one
//!   revision, which the listing returns.
//! - [`Store::txn`]: a [`Txn`] of puts, deletes and prefix deletes applied atomically if all
//!   its compares hold ([`Condition::Absent`], [`Condition::Exists`],
//!   [`Condition::ModRevision`]). A failed compare returns [`StoreError::Conflict`] naming the
//!   key, and nothing changes. This is the optimistic concurrency of every write: read a
//!   record, then write it back guarded by the `mod_revision` read.
//! - [`Store::watch`]: the changes under a prefix after a revision.
//! - [`Store::grant_lease`], [`Store::keep_alive`], [`Store::revoke_lease`]: leases, for host
//!   liveness; keys put with a lease vanish when it ends.
//! - [`Store::compact`]: discard history.
//! - [`Reflector`]: the watch cache built on the above (list, watch, re-list on compaction).
//!
//! ## Revisions, resource versions, watches and compaction
//! The store has one revision counter. Each transaction that changes something advances it by
//! one, and every change in that transaction carries the new revision; a transaction that
//! changes nothing (a delete of a missing key) leaves it alone. Each [`KeyValue`] carries
//! `create_revision`, `mod_revision` (its resource version) and `version` (writes since
//! creation), with etcd's meanings.
//!
//! A watch after revision `R` yields every change under its prefix with revision `> R`, in
//! revision order, each exactly once, with a transaction's changes in one batch. List, then
//! watch after the listed revision, and the local copy is exact.
//!
//! History is finite. After compaction to revision `C`, a watch after `C - 1` or later still
//! works; one after an earlier revision yields [`StoreError::Compacted`] and ends. The
//! watcher must then re-list; [`Reflector`] does it and reports the difference (including
//! deletes for keys that vanished meanwhile), as Calico's watcher cache does.
//!
//! ## Backends, and how to choose
//! - **Embedded** ([`EmbeddedStore`], the default): one [redb](https://www.redb.org) file on
//!   the controller's disk; nothing else to install or run. One controller process at a time
//!   (the file is locked). The change log keeps the last
//!   [`EmbeddedOptions::history_revisions`] revisions and compacts older ones on each write.
//!   Leases expire by a background task (every
//!   [`EmbeddedOptions::lease_check_interval_ms`]); deadlines are in memory, so a restarted
//!   controller gives every lease a full TTL again (as etcd does on a leader change) instead
//!   of declaring all hosts dead before they could renew.
//! - **etcd** ([`EtcdStore`]): an etcd 3.4+ cluster through its v3 API. Choose it to run
//!   several controller replicas, or to survive the loss of the controller's disk. All
//!   correctness (revisions, compares, lease expiry, watch history) is etcd's, so replicas
//!   agree without talking to each other. Compaction is etcd's (by revision through
//!   [`Store::compact`], or etcd's own `--auto-compaction-*`).
//!
//! [`StoreConfig`] is the operator's choice, deserializable from the controller's
//! configuration:
//! ```toml
//! [store]
//! backend = "embedded"
//! path = "/var/lib/dvs/controller.redb"
//! # or:
//! # backend = "etcd"
//! # endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"]
//! ```
//!
//! ## What the embedded store promises on a crash
//! A transaction is acknowledged only after redb's commit is fsynced
//! (`Durability::Immediate`). After `kill -9`, or power loss on a disk that honours fsync,
//! the file reopens with every acknowledged transaction and no part of an unacknowledged one
//! (redb's copy-on-write pages and checksummed commit slots). The change log is in the same
//! file and transaction as the records, so watches resume across a restart from any revision
//! still in the log. Lease deadlines restart with a full TTL (above).
//!
//! ## Errors
//! [`StoreError`] is shared: `Conflict`, `Compacted`, `LeaseNotFound`, `InvalidRequest` mean
//! the same on both backends. `Unavailable` (etcd only) means unreachable, no leader, or no
//! answer in time; for a write the outcome is then unknown, so guard writes with compares
//! and they can be retried safely. Both backends refuse the same malformed transactions
//! ([`Txn::validate`]: a key written twice, a write inside a deleted prefix, more than
//! [`MAX_TXN_OPS`] operations).

#![forbid(unsafe_code)]

mod embedded;
mod error;
mod etcd;
mod reflector;
mod store;
mod types;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use error::{StoreError, StoreResult};
pub use etcd::{EtcdOptions, EtcdStore};
pub use reflector::{Change, Reflector, Update};
pub use store::{Store, Watch};
pub use types::{
    Compare, Condition, Event, KeyValue, Lease, LeaseId, ListResult, Op, Revision, Txn, TxnResult,
    MAX_TXN_OPS,
};

/// The operator's choice of backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum StoreConfig {
    Embedded {
        path: PathBuf,
        #[serde(flatten)]
        options: EmbeddedOptions,
    },
    Etcd {
        #[serde(flatten)]
        options: EtcdOptions,
    },
}

impl StoreConfig {
    /// The default: an embedded store at `path`.
    pub fn embedded(path: impl Into<PathBuf>) -> Self {
        StoreConfig::Embedded {
            path: path.into(),
            options: EmbeddedOptions::default(),
        }
    }
}

/// Opens the configured backend.
pub async fn open(config: &StoreConfig) -> StoreResult<Arc<dyn Store>> {
    Ok(match config {
        StoreConfig::Embedded { path, options } => {
            Arc::new(EmbeddedStore::open(path, options.clone()).await?)
        }
        StoreConfig::Etcd { options } => Arc::new(EtcdStore::connect(options.clone()).await?),
    })
}
