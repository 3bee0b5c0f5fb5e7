//! One error type for both backends, so callers match on meaning (conflict, compacted, lease
//! gone, unavailable) rather than on which backend produced it.

use std::path::PathBuf;

use crate::types::{Condition, LeaseId, Revision};

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A transaction's compare failed; nothing was written.
    #[error(
        "conflict on key `{key}`: the transaction required it {expected}, but it {}",
        describe_actual(*actual)
    )]
    Conflict {
        key: String,
        expected: Condition,
        /// The key's mod revision when the transaction was evaluated (`None`: absent).
        actual: Option<Revision>,
    },

    /// A watch asked for history that compaction has discarded. The watcher must re-list and
    /// watch again from the listed revision (see [`crate::Reflector`]).
    #[error(
        "cannot watch after revision {after}: history before revision {compact_revision} has \
         been compacted; re-list and watch from the listed revision"
    )]
    Compacted {
        after: Revision,
        compact_revision: Revision,
    },

    /// The lease expired, was revoked, or never existed.
    #[error("lease {lease} not found (expired, revoked or never granted)")]
    LeaseNotFound { lease: LeaseId },

    /// The request breaks a rule of the store (see [`crate::Txn::validate`]); nothing was done.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// etcd could not be reached or did not answer in time, or has no leader. For a
    /// transaction the outcome is unknown: it may have applied. Guard writes with compares so
    /// that retrying them is safe.
    #[error("etcd unavailable during {op} (endpoints {endpoints}): {detail}")]
    Unavailable {
        op: &'static str,
        endpoints: String,
        detail: String,
    },

    /// etcd answered with an error this layer has no meaning for.
    #[error("etcd {op} (endpoints {endpoints}): {source}")]
    Etcd {
        op: &'static str,
        endpoints: String,
        #[source]
        source: Box<etcd_client::Error>,
    },

    /// The embedded database failed (I/O, lock held by another process, ...).
    #[error("embedded store {}: {op}: {source}", path.display())]
    Embedded {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Box<redb::Error>,
    },

    /// Stored bytes that do not decode: a damaged file, or keys written to etcd by something
    /// else that this layer cannot represent (keys must be UTF-8).
    #[error("{at}: corrupt {what}")]
    Corrupt { at: String, what: String },

    /// The store was dropped or shut down while the call (or watch) was outstanding.
    #[error("the store was closed")]
    Closed,
}

fn describe_actual(actual: Option<Revision>) -> String {
    match actual {
        None => "is absent".to_string(),
        Some(r) => format!("exists at mod revision {r}"),
    }
}

impl StoreError {
    /// The key a [`StoreError::Conflict`] names.
    pub fn conflict_key(&self) -> Option<&str> {
        match self {
            StoreError::Conflict { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Whether the same call may succeed if tried again later (the backend was unreachable).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}
