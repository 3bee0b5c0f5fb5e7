//! The records, transactions and events that every backend speaks.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use crate::error::{StoreError, StoreResult};

/// A store-wide, monotonically increasing change number.
///
/// Every committed transaction that changes at least one key advances the revision by exactly
/// one; all changes of that transaction carry the same revision. Revision 0 means "before the
/// first change" (a watch after 0 replays the whole retained history).
pub type Revision = u64;

/// A lease: keys attached to it are deleted when it expires or is revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // etcd tools (etcdctl) print lease ids in hex; do the same so ids can be matched.
        write!(f, "{:x}", self.0)
    }
}

/// A granted lease and the TTL the backend actually granted (etcd raises small TTLs to its
/// minimum; both backends round up to whole seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl: Duration,
}

/// One record with its resource versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// Revision of the transaction that last wrote the key: its resource version, the number to
    /// put in [`Condition::ModRevision`] for an optimistic update.
    pub mod_revision: Revision,
    /// Number of writes to the key since it was created (1 after the create).
    pub version: u64,
    pub lease: Option<LeaseId>,
}

/// A change delivered by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The key was created or overwritten; `kv.mod_revision` is the change's revision.
    Put(KeyValue),
    /// The key was deleted (directly, by a prefix delete, or by its lease ending).
    Delete { key: String, revision: Revision },
}

impl Event {
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> Revision {
        match self {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
}

/// A prefix listed at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResult {
    /// The store revision the listing reflects; watch after it to follow changes.
    pub revision: Revision,
    /// Records under the prefix, sorted by key (byte order).
    pub kvs: Vec<KeyValue>,
}

/// What a transaction requires of one key for it to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist (create).
    Absent,
    /// The key exists, whatever its revision.
    Exists,
    /// The key's mod revision is exactly this (update of what was read). `ModRevision(0)` is
    /// the same as [`Condition::Absent`], as in etcd.
    ModRevision(Revision),
}

impl Condition {
    /// Whether the condition holds for a key whose mod revision is `actual` (`None`: absent).
    pub fn holds(self, actual: Option<Revision>) -> bool {
        match self {
            Condition::Absent => actual.is_none(),
            Condition::Exists => actual.is_some(),
            Condition::ModRevision(want) => actual.unwrap_or(0) == want,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Absent => f.write_str("to be absent"),
            Condition::Exists => f.write_str("to exist"),
            Condition::ModRevision(0) => f.write_str("to be absent (mod revision 0)"),
            Condition::ModRevision(r) => write!(f, "to be at mod revision {r}"),
        }
    }
}

/// A guard on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub condition: Condition,
}

/// A write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    /// Deletes every key that starts with `prefix` (cascading delete of a DVS, say).
    DeletePrefix {
        prefix: String,
    },
}

/// Most compares and most operations one transaction may carry.
///
/// This is etcd's default `--max-txn-ops`; enforcing it for the embedded store too means code
/// that works on a laptop does not start failing when the operator moves to etcd.
pub const MAX_TXN_OPS: usize = 128;

/// An atomic transaction: if every compare holds, all ops apply at one new revision; if any
/// compare fails, nothing changes and the call returns [`StoreError::Conflict`] naming the key.
///
/// Within one transaction a key may be written at most once, and no put or delete may fall
/// inside a deleted prefix (etcd refuses such transactions; the embedded store refuses them
/// the same way so both backends accept the same requests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, key: impl Into<String>, condition: Condition) -> Self {
        self.compares.push(Compare {
            key: key.into(),
            condition,
        });
        self
    }

    pub fn when_absent(self, key: impl Into<String>) -> Self {
        self.when(key, Condition::Absent)
    }

    pub fn when_exists(self, key: impl Into<String>) -> Self {
        self.when(key, Condition::Exists)
    }

    pub fn when_mod_revision(self, key: impl Into<String>, revision: Revision) -> Self {
        self.when(key, Condition::ModRevision(revision))
    }

    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        });
        self
    }

    pub fn put_with_lease(
        mut self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        });
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    pub fn delete_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.ops.push(Op::DeletePrefix {
            prefix: prefix.into(),
        });
        self
    }

    /// Checks the rules both backends share; called by each backend before it touches storage.
    pub fn validate(&self) -> StoreResult<()> {
        let invalid = |why: String| Err(StoreError::InvalidRequest(why));
        if self.compares.len() > MAX_TXN_OPS || self.ops.len() > MAX_TXN_OPS {
            return invalid(format!(
                "transaction has {} compares and {} operations; at most {MAX_TXN_OPS} of each",
                self.compares.len(),
                self.ops.len()
            ));
        }
        for c in &self.compares {
            if c.key.is_empty() {
                return invalid("transaction compares an empty key".into());
            }
        }
        let mut written: HashSet<&str> = HashSet::new();
        let mut prefixes: Vec<&str> = Vec::new();
        for op in &self.ops {
            match op {
                Op::Put { key, .. } | Op::Delete { key } => {
                    if key.is_empty() {
                        return invalid("transaction writes an empty key".into());
                    }
                    if !written.insert(key) {
                        return invalid(format!("transaction writes key `{key}` more than once"));
                    }
                }
                Op::DeletePrefix { prefix } => {
                    if prefix.is_empty() {
                        // Deleting every key of the store is never what a controller means.
                        return invalid("transaction deletes an empty prefix (every key)".into());
                    }
                    prefixes.push(prefix);
                }
            }
        }
        for (i, p) in prefixes.iter().enumerate() {
            if let Some(key) = written.iter().find(|k| k.starts_with(p)) {
                return invalid(format!(
                    "transaction writes key `{key}` inside deleted prefix `{p}`"
                ));
            }
            if let Some(q) = prefixes[i + 1..]
                .iter()
                .find(|q| q.starts_with(p) || p.starts_with(*q))
            {
                return invalid(format!(
                    "transaction deletes overlapping prefixes `{p}` and `{q}`"
                ));
            }
        }
        Ok(())
    }
}

/// The outcome of a transaction whose compares all held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// The revision of the transaction's changes; if it changed nothing (its deletes found
    /// nothing, or it had no operations) the store's current revision, unchanged.
    pub revision: Revision,
    /// How many keys its deletes removed.
    pub deleted: u64,
}

/// Rounds a requested lease TTL up to whole seconds, at least one: both backends count lease
/// time in seconds (etcd's API does).
pub(crate) fn ttl_seconds(ttl: Duration) -> u64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rejects_what_etcd_rejects() {
        assert!(Txn::new().put("a", "1").put("b", "2").validate().is_ok());
        let dup = Txn::new().put("a", "1").delete("a").validate();
        assert!(matches!(dup, Err(StoreError::InvalidRequest(m)) if m.contains("`a`")));
        let inside = Txn::new().delete_prefix("/d/").put("/d/x", "1").validate();
        assert!(matches!(inside, Err(StoreError::InvalidRequest(m)) if m.contains("/d/x")));
        let overlap = Txn::new()
            .delete_prefix("/d/")
            .delete_prefix("/d/e")
            .validate();
        assert!(matches!(overlap, Err(StoreError::InvalidRequest(_))));
        assert!(Txn::new().put("", "1").validate().is_err());
        assert!(Txn::new().delete_prefix("").validate().is_err());
        let mut big = Txn::new();
        for i in 0..=MAX_TXN_OPS {
            big = big.put(format!("k{i}"), "v");
        }
        assert!(big.validate().is_err());
    }

    #[test]
    fn conditions() {
        assert!(Condition::Absent.holds(None));
        assert!(!Condition::Absent.holds(Some(3)));
        assert!(Condition::Exists.holds(Some(3)));
        assert!(Condition::ModRevision(3).holds(Some(3)));
        assert!(!Condition::ModRevision(3).holds(Some(4)));
        assert!(Condition::ModRevision(0).holds(None));
    }

    #[test]
    fn ttl_rounds_up_to_seconds() {
        assert_eq!(ttl_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_seconds(Duration::from_secs(10)), 10);
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
    }
}
