//! The embedded backend: one redb file on the controller's disk.
//!
//! # Layout
//! Five tables in one file, all changed together in one redb write transaction per store
//! transaction, so a commit is all-or-nothing on disk:
//! - `kv`: key → record (resource versions, lease, value);
//! - `log`: (revision, index within the revision) → change; the bounded history watches read;
//! - `meta`: format version, current revision, compaction revision, last lease id;
//! - `leases`: lease id → TTL in seconds;
//! - `lease_keys`: (lease id, key) → (), the keys to delete when a lease ends.
//!
//! # Crash safety
//! Every commit uses redb's `Durability::Immediate`: `txn` returns only after redb's commit has
//! been fsynced, and redb's copy-on-write B-trees with a checksummed commit slot mean that
//! after `kill -9` or power loss the file opens at the last completed commit — every
//! acknowledged transaction is there, no partial one is.
//!
//! # Watches
//! Watchers read the durable log, not an in-memory broadcast: each committed revision bumps a
//! `tokio::sync::watch` counter, and each watcher, woken, reads the log after the last revision
//! it delivered. So a slow watcher cannot miss events (it reads them later from the log) and
//! cannot make the writer buffer them; if it falls behind the retained history it gets
//! [`StoreError::Compacted`], exactly as with etcd.
//!
//! # Leases
//! TTLs are durable; deadlines are not. Deadlines live in memory on the monotonic clock and a
//! background task (every [`EmbeddedOptions::lease_check_interval_ms`]) revokes the leases
//! past theirs, deleting their keys in one revision. On open every stored lease gets a full
//! TTL again, as etcd does on a leader change: a controller that was down for a while must not
//! declare every host dead the moment it starts, before the hosts had a chance to renew.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::{StoreError, StoreResult};
use crate::store::{Store, Watch, WATCH_QUEUE};
use crate::types::{
    ttl_seconds, Event, KeyValue, Lease, LeaseId, ListResult, Op, Revision, Txn, TxnResult,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases");
const LEASE_KEYS: TableDefinition<(i64, &str), ()> = TableDefinition::new("lease_keys");

const META_FORMAT: &str = "format";
const META_REVISION: &str = "revision";
const META_COMPACT: &str = "compact_revision";
const META_LAST_LEASE: &str = "last_lease_id";

/// Version of the layout above; a file of another version is refused rather than misread.
const FORMAT_VERSION: u64 = 1;

/// Most events a watcher reads from the log per wake-up (a revision is never split, so a
/// batch can exceed this by the size of one transaction).
const WATCH_BATCH_EVENTS: usize = 1024;

/// Tuning of the embedded store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmbeddedOptions {
    /// How many of the most recent revisions the change log keeps for watchers (at least 1).
    /// A watcher that falls further behind gets [`StoreError::Compacted`] and re-lists. Each
    /// kept revision costs its changed records once more on disk.
    pub history_revisions: u64,
    /// How often the lease expiry task looks for leases past their deadline; keys of an
    /// expired lease vanish within TTL + this.
    pub lease_check_interval_ms: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            history_revisions: 10_000,
            lease_check_interval_ms: 500,
        }
    }
}

/// The embedded store. Dropping it stops its tasks, waits for calls in flight, and closes the
/// file; watches then end (`None`).
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    sweeper: JoinHandle<()>,
}

struct Inner {
    path: PathBuf,
    history: u64,
    /// `None` once closed. Calls hold the read lock while they use the database so that
    /// closing (write lock) waits for them and then releases the file at a known moment.
    db: RwLock<Option<Database>>,
    /// Highest committed revision; watchers wait on it.
    revision: watch::Sender<Revision>,
    /// Deadlines of live leases (mirror of the `leases` table, plus time).
    leases: Mutex<HashMap<i64, LiveLease>>,
}

#[derive(Clone, Copy)]
struct LiveLease {
    ttl: Duration,
    deadline: Instant,
}

/// Open tables of one write transaction.
struct Tables<'t> {
    kv: Table<'t, &'static str, &'static [u8]>,
    log: Table<'t, (u64, u32), &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    leases: Table<'t, i64, u64>,
    lease_keys: Table<'t, (i64, &'static str), ()>,
}

/// The resource versions of a stored record, without its value.
#[derive(Clone, Copy)]
struct RecordHead {
    create_revision: Revision,
    mod_revision: Revision,
    version: u64,
    lease: Option<LeaseId>,
}

enum Applied {
    Changed { revision: Revision, deleted: u64 },
    Unchanged { revision: Revision },
}

/// What one read of the log produced for a watcher.
struct Scan {
    events: Vec<Event>,
    /// Every revision up to here has been looked at (matching or not).
    scanned_to: Revision,
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`. Needs a tokio runtime: the lease expiry
    /// task runs on it. The file is locked: a second open, by this or another process, fails.
    pub async fn open(path: impl AsRef<Path>, options: EmbeddedOptions) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        if options.history_revisions == 0 {
            return Err(StoreError::InvalidRequest(format!(
                "embedded store {}: history_revisions must be at least 1",
                path.display()
            )));
        }
        let interval = Duration::from_millis(options.lease_check_interval_ms.max(1));
        let inner = tokio::task::spawn_blocking(move || Inner::open(path, &options))
            .await
            .map_err(join_error)??;
        let inner = Arc::new(inner);
        let sweeper = tokio::spawn(sweep_leases(Arc::downgrade(&inner), interval));
        Ok(Self { inner, sweeper })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The compaction revision: history before it is gone, so watches after
    /// `compact_revision() - 1` or later work and earlier ones get
    /// [`StoreError::Compacted`] (0: nothing compacted yet).
    pub async fn compact_revision(&self) -> StoreResult<Revision> {
        self.blocking(|inner| inner.read_meta(META_COMPACT)).await
    }

    /// Runs `f` on a blocking thread: redb calls do disk I/O and fsync.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(join_error)?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.sweeper.abort();
        // Waits for calls in flight (each holds the read lock), then closes the file, so that
        // once drop returns the file can be opened again.
        let db = self
            .inner
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(db);
    }
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    StoreError::Closed
}

impl Inner {
    fn open(path: PathBuf, options: &EmbeddedOptions) -> StoreResult<Inner> {
        let db = Database::create(&path).map_err(|e| StoreError::Embedded {
            path: path.clone(),
            op: "open",
            source: Box::new(e.into()),
        })?;
        let inner = Inner {
            path,
            history: options.history_revisions,
            db: RwLock::new(Some(db)),
            revision: watch::Sender::new(0),
            leases: Mutex::new(HashMap::new()),
        };
        let (revision, ttls) = inner.initialise()?;
        inner.revision.send_replace(revision);
        let now = Instant::now();
        *inner.lock_leases() = ttls
            .into_iter()
            .map(|(id, secs)| {
                let ttl = Duration::from_secs(secs);
                let deadline = now + ttl;
                (id, LiveLease { ttl, deadline })
            })
            .collect();
        Ok(inner)
    }

    /// Creates the tables of a new file, checks the format of an existing one, and reads the
    /// current revision and the stored leases.
    fn initialise(&self) -> StoreResult<(Revision, Vec<(i64, u64)>)> {
        self.with_db(|db| self.initialise_in(db))
    }

    fn initialise_in(&self, db: &Database) -> StoreResult<(Revision, Vec<(i64, u64)>)> {
        let wtx = db.begin_write().map_err(self.err("begin write"))?;
        let (revision, leases) = {
            let mut t = self.open_tables(&wtx)?;
            let format = t
                .meta
                .get(META_FORMAT)
                .map_err(self.err("read format"))?
                .map(|v| v.value());
            match format {
                Some(FORMAT_VERSION) => {}
                Some(other) => {
                    return Err(self.corrupt(format!(
                        "format version {other} (this build reads version {FORMAT_VERSION})"
                    )))
                }
                None => {
                    t.meta
                        .insert(META_FORMAT, FORMAT_VERSION)
                        .map_err(self.err("write format"))?;
                }
            }
            let revision = meta_value(&t.meta, META_REVISION).map_err(self.err("read revision"))?;
            let mut leases = Vec::new();
            for entry in t.leases.iter().map_err(self.err("read leases"))? {
                let (id, ttl) = entry.map_err(self.err("read leases"))?;
                leases.push((id.value(), ttl.value()));
            }
            (revision, leases)
        };
        wtx.commit().map_err(self.err("commit"))?;
        Ok((revision, leases))
    }

    /// Maps a redb error to one that says which file and which step.
    fn err<E: Into<redb::Error>>(&self, op: &'static str) -> impl FnOnce(E) -> StoreError + '_ {
        move |e| StoreError::Embedded {
            path: self.path.clone(),
            op,
            source: Box::new(e.into()),
        }
    }

    fn corrupt(&self, what: String) -> StoreError {
        StoreError::Corrupt {
            at: self.path.display().to_string(),
            what,
        }
    }

    /// Runs `f` with the database unless the store is closed.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> StoreResult<T>) -> StoreResult<T> {
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Closed),
        }
    }

    fn open_tables<'t>(&self, wtx: &'t WriteTransaction) -> StoreResult<Tables<'t>> {
        Ok(Tables {
            kv: wtx.open_table(KV).map_err(self.err("open table kv"))?,
            log: wtx.open_table(LOG).map_err(self.err("open table log"))?,
            meta: wtx.open_table(META).map_err(self.err("open table meta"))?,
            leases: wtx
                .open_table(LEASES)
                .map_err(self.err("open table leases"))?,
            lease_keys: wtx
                .open_table(LEASE_KEYS)
                .map_err(self.err("open table lease_keys"))?,
        })
    }

    fn read_meta(&self, name: &'static str) -> StoreResult<u64> {
        self.with_db(|db| {
            let rtx = db.begin_read().map_err(self.err("begin read"))?;
            let meta = rtx.open_table(META).map_err(self.err("open table meta"))?;
            meta_value(&meta, name).map_err(self.err("read meta"))
        })
    }

    fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.with_db(|db| {
            let rtx = db.begin_read().map_err(self.err("begin read"))?;
            let kv = rtx.open_table(KV).map_err(self.err("open table kv"))?;
            let found = kv.get(key).map_err(self.err("get"))?;
            found
                .map(|v| self.decode_record(key, v.value()))
                .transpose()
        })
    }

    fn list(&self, prefix: &str) -> StoreResult<ListResult> {
        self.with_db(|db| {
            // One read transaction: the records and the revision are one snapshot.
            let rtx = db.begin_read().map_err(self.err("begin read"))?;
            let meta = rtx.open_table(META).map_err(self.err("open table meta"))?;
            let revision = meta_value(&meta, META_REVISION).map_err(self.err("read revision"))?;
            let kv = rtx.open_table(KV).map_err(self.err("open table kv"))?;
            let mut kvs = Vec::new();
            for entry in kv.range::<&str>(prefix..).map_err(self.err("list"))? {
                let (k, v) = entry.map_err(self.err("list"))?;
                let key = k.value();
                if !key.starts_with(prefix) {
                    break;
                }
                kvs.push(self.decode_record(key, v.value())?);
            }
            Ok(ListResult { revision, kvs })
        })
    }

    fn txn(&self, txn: &Txn) -> StoreResult<TxnResult> {
        txn.validate()?;
        let applied = self.write(false, |inner, t, revision, events| {
            inner.apply(t, txn, revision, events)
        })?;
        Ok(match applied {
            Applied::Changed { revision, deleted } => TxnResult { revision, deleted },
            Applied::Unchanged { revision } => TxnResult {
                revision,
                deleted: 0,
            },
        })
    }

    /// One write transaction: `f` gets the tables and the revision its changes will carry,
    /// pushes its events and returns how many keys it deleted. If it pushed events, they are
    /// logged and committed at that revision. Otherwise the revision does not move, and the
    /// transaction is committed only if `commit_without_events` (a lease revoke with no keys
    /// still removes the lease); else it is dropped, which aborts it.
    fn write(
        &self,
        commit_without_events: bool,
        f: impl FnOnce(&Inner, &mut Tables<'_>, Revision, &mut Vec<Event>) -> StoreResult<u64>,
    ) -> StoreResult<Applied> {
        self.with_db(|db| {
            let wtx = db.begin_write().map_err(self.err("begin write"))?;
            let (revision, deleted) = {
                let mut t = self.open_tables(&wtx)?;
                let current =
                    meta_value(&t.meta, META_REVISION).map_err(self.err("read revision"))?;
                let revision = current + 1;
                let mut events = Vec::new();
                let deleted = f(self, &mut t, revision, &mut events)?;
                if events.is_empty() {
                    drop(t);
                    if commit_without_events {
                        wtx.commit().map_err(self.err("commit"))?;
                    }
                    // Otherwise dropping `wtx` aborts it: nothing was written.
                    return Ok(Applied::Unchanged { revision: current });
                }
                self.log_events(&mut t, revision, &events)?;
                (revision, deleted)
            };
            wtx.commit().map_err(self.err("commit"))?;
            // After the commit, never before: a woken watcher must find the events in the log.
            self.revision.send_if_modified(|r| {
                let newer = revision > *r;
                if newer {
                    *r = revision;
                }
                newer
            });
            Ok(Applied::Changed { revision, deleted })
        })
    }

    /// Checks the compares, then applies the operations; returns how many keys it deleted.
    fn apply(
        &self,
        t: &mut Tables<'_>,
        txn: &Txn,
        revision: Revision,
        events: &mut Vec<Event>,
    ) -> StoreResult<u64> {
        for c in &txn.compares {
            let actual = self.head(&t.kv, &c.key)?.map(|h| h.mod_revision);
            if !c.condition.holds(actual) {
                return Err(StoreError::Conflict {
                    key: c.key.clone(),
                    expected: c.condition,
                    actual,
                });
            }
        }
        let mut deleted = 0;
        for op in &txn.ops {
            match op {
                Op::Put { key, value, lease } => {
                    if let Some(lease) = lease {
                        let known = t.leases.get(lease.0).map_err(self.err("read lease"))?;
                        if known.is_none() {
                            return Err(StoreError::LeaseNotFound { lease: *lease });
                        }
                    }
                    let prev = self.head(&t.kv, key)?;
                    let prev_lease = prev.and_then(|p| p.lease);
                    if prev_lease != *lease {
                        if let Some(old) = prev_lease {
                            t.lease_keys
                                .remove((old.0, key.as_str()))
                                .map_err(self.err("detach lease"))?;
                        }
                        if let Some(new) = lease {
                            t.lease_keys
                                .insert((new.0, key.as_str()), ())
                                .map_err(self.err("attach lease"))?;
                        }
                    }
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: prev.map_or(revision, |p| p.create_revision),
                        mod_revision: revision,
                        version: prev.map_or(1, |p| p.version + 1),
                        lease: *lease,
                    };
                    t.kv.insert(key.as_str(), encode_record(&kv).as_slice())
                        .map_err(self.err("put"))?;
                    events.push(Event::Put(kv));
                }
                Op::Delete { key } => {
                    if self.delete_key(t, key, revision, events)? {
                        deleted += 1;
                    }
                }
                Op::DeletePrefix { prefix } => {
                    let mut keys = Vec::new();
                    for entry in
                        t.kv.range::<&str>(prefix.as_str()..)
                            .map_err(self.err("scan"))?
                    {
                        let (k, _) = entry.map_err(self.err("scan"))?;
                        if !k.value().starts_with(prefix.as_str()) {
                            break;
                        }
                        keys.push(k.value().to_string());
                    }
                    for key in keys {
                        if self.delete_key(t, &key, revision, events)? {
                            deleted += 1;
                        }
                    }
                }
            }
        }
        Ok(deleted)
    }

    fn delete_key(
        &self,
        t: &mut Tables<'_>,
        key: &str,
        revision: Revision,
        events: &mut Vec<Event>,
    ) -> StoreResult<bool> {
        let Some(prev) = self.head(&t.kv, key)? else {
            return Ok(false);
        };
        if let Some(lease) = prev.lease {
            t.lease_keys
                .remove((lease.0, key))
                .map_err(self.err("detach lease"))?;
        }
        t.kv.remove(key).map_err(self.err("delete"))?;
        events.push(Event::Delete {
            key: key.to_string(),
            revision,
        });
        Ok(true)
    }

    /// Appends `events` to the log, advances the revision, and trims the log to the configured
    /// number of revisions.
    fn log_events(
        &self,
        t: &mut Tables<'_>,
        revision: Revision,
        events: &[Event],
    ) -> StoreResult<()> {
        for (i, event) in events.iter().enumerate() {
            let index = u32::try_from(i).map_err(|_| {
                StoreError::InvalidRequest(format!("revision {revision} has too many changes"))
            })?;
            t.log
                .insert((revision, index), encode_event(event).as_slice())
                .map_err(self.err("append to log"))?;
        }
        t.meta
            .insert(META_REVISION, revision)
            .map_err(self.err("write revision"))?;
        // Keep revisions floor..=revision: one revision is trimmed per commit once the log is
        // full, so trimming costs the same small amount on every write.
        let floor = (revision + 1).saturating_sub(self.history);
        self.discard_history(t, floor)
    }

    /// Removes log entries before `floor` and records `floor` as the compaction revision.
    fn discard_history(&self, t: &mut Tables<'_>, floor: Revision) -> StoreResult<()> {
        let compacted = meta_value(&t.meta, META_COMPACT).map_err(self.err("read compaction"))?;
        if floor <= compacted {
            return Ok(());
        }
        t.log
            .retain_in((0u64, 0u32)..(floor, 0u32), |_, _| false)
            .map_err(self.err("compact log"))?;
        t.meta
            .insert(META_COMPACT, floor)
            .map_err(self.err("write compaction"))?;
        Ok(())
    }

    fn compact(&self, revision: Revision) -> StoreResult<()> {
        self.with_db(|db| {
            let wtx = db.begin_write().map_err(self.err("begin write"))?;
            {
                let mut t = self.open_tables(&wtx)?;
                let current =
                    meta_value(&t.meta, META_REVISION).map_err(self.err("read revision"))?;
                if revision > current {
                    return Err(StoreError::InvalidRequest(format!(
                        "cannot compact to revision {revision}: the current revision is {current}"
                    )));
                }
                self.discard_history(&mut t, revision)?;
            }
            wtx.commit().map_err(self.err("commit"))
        })
    }

    /// Reads the log after `after` for keys under `prefix`.
    fn scan(&self, prefix: &str, after: Revision) -> StoreResult<Scan> {
        self.with_db(|db| {
            let rtx = db.begin_read().map_err(self.err("begin read"))?;
            let meta = rtx.open_table(META).map_err(self.err("open table meta"))?;
            let compacted = meta_value(&meta, META_COMPACT).map_err(self.err("read meta"))?;
            let current = meta_value(&meta, META_REVISION).map_err(self.err("read meta"))?;
            // The log holds revisions >= `compacted`; the watcher needs `after + 1` onwards.
            if after + 1 < compacted {
                return Err(StoreError::Compacted {
                    after,
                    compact_revision: compacted,
                });
            }
            let log = rtx.open_table(LOG).map_err(self.err("open table log"))?;
            let mut events: Vec<Event> = Vec::new();
            let mut scanned_to = current.max(after);
            for entry in log
                .range((after + 1, 0u32)..)
                .map_err(self.err("read log"))?
            {
                let (k, v) = entry.map_err(self.err("read log"))?;
                let (revision, _) = k.value();
                if events.len() >= WATCH_BATCH_EVENTS
                    && events.last().is_some_and(|e| e.revision() != revision)
                {
                    scanned_to = revision - 1;
                    break;
                }
                let bytes = v.value();
                if !self.event_key(revision, bytes)?.starts_with(prefix) {
                    continue;
                }
                events.push(self.decode_event(revision, bytes)?);
            }
            Ok(Scan { events, scanned_to })
        })
    }

    fn grant(&self, ttl: Duration) -> StoreResult<Lease> {
        let secs = ttl_seconds(ttl);
        let id = self.with_db(|db| {
            let wtx = db.begin_write().map_err(self.err("begin write"))?;
            let id = {
                let mut t = self.open_tables(&wtx)?;
                let last =
                    meta_value(&t.meta, META_LAST_LEASE).map_err(self.err("read lease id"))?;
                let id = i64::try_from(last + 1)
                    .map_err(|_| self.corrupt(format!("last lease id {last}")))?;
                t.meta
                    .insert(META_LAST_LEASE, last + 1)
                    .map_err(self.err("write lease id"))?;
                t.leases.insert(id, secs).map_err(self.err("grant lease"))?;
                id
            };
            // Granting does not change any key, so it takes no revision (as in etcd).
            wtx.commit().map_err(self.err("commit"))?;
            Ok(id)
        })?;
        let ttl = Duration::from_secs(secs);
        self.lock_leases().insert(
            id,
            LiveLease {
                ttl,
                deadline: Instant::now() + ttl,
            },
        );
        Ok(Lease {
            id: LeaseId(id),
            ttl,
        })
    }

    fn lock_leases(&self) -> std::sync::MutexGuard<'_, HashMap<i64, LiveLease>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn keep_alive(&self, lease: LeaseId) -> StoreResult<Duration> {
        self.with_db(|_| {
            let mut leases = self.lock_leases();
            let live = leases
                .get_mut(&lease.0)
                .ok_or(StoreError::LeaseNotFound { lease })?;
            live.deadline = Instant::now() + live.ttl;
            Ok(live.ttl)
        })
    }

    /// Revokes `lease` now (an operator's revoke).
    fn revoke(&self, lease: LeaseId) -> StoreResult<()> {
        // Out of the map first, so a concurrent keep-alive fails rather than renewing a lease
        // that is going away.
        let live = self.lock_leases().remove(&lease.0);
        match self.revoke_stored(lease) {
            Err(e) if !matches!(e, StoreError::LeaseNotFound { .. }) => {
                if let Some(live) = live {
                    self.lock_leases().insert(lease.0, live);
                }
                Err(e)
            }
            other => other,
        }
    }

    /// Revokes `lease` if its deadline has passed (the expiry task's revoke). A keep-alive that
    /// won the race keeps it.
    fn expire(&self, lease: i64, now: Instant) -> StoreResult<()> {
        let live = {
            let mut leases = self.lock_leases();
            match leases.get(&lease) {
                Some(l) if l.deadline <= now => leases.remove(&lease),
                _ => return Ok(()),
            }
        };
        match self.revoke_stored(LeaseId(lease)) {
            Ok(()) | Err(StoreError::LeaseNotFound { .. }) => Ok(()),
            Err(e) => {
                // Put it back, still expired, so the next sweep tries again.
                if let Some(live) = live {
                    self.lock_leases().insert(lease, live);
                }
                Err(e)
            }
        }
    }

    /// Deletes the lease and its keys from the file, the keys' deletes at one new revision.
    fn revoke_stored(&self, lease: LeaseId) -> StoreResult<()> {
        self.write(true, |inner, t, revision, events| {
            let known = t
                .leases
                .remove(lease.0)
                .map_err(inner.err("revoke lease"))?
                .is_some();
            if !known {
                return Err(StoreError::LeaseNotFound { lease });
            }
            let mut keys = Vec::new();
            let attached = t
                .lease_keys
                .range((lease.0, "")..)
                .map_err(inner.err("read lease keys"))?;
            for entry in attached {
                let (k, _) = entry.map_err(inner.err("read lease keys"))?;
                let (id, key) = k.value();
                if id != lease.0 {
                    break;
                }
                keys.push(key.to_string());
            }
            let mut deleted = 0u64;
            for key in keys {
                if inner.delete_key(t, &key, revision, events)? {
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
        .map(|_| ())
    }

    fn expired_leases(&self, now: Instant) -> Vec<i64> {
        self.lock_leases()
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    fn head(
        &self,
        kv: &Table<'_, &'static str, &'static [u8]>,
        key: &str,
    ) -> StoreResult<Option<RecordHead>> {
        let found = kv.get(key).map_err(self.err("get"))?;
        found.map(|v| self.decode_head(key, v.value())).transpose()
    }

    fn decode_head(&self, key: &str, bytes: &[u8]) -> StoreResult<RecordHead> {
        let word = |i: usize| -> StoreResult<[u8; 8]> {
            bytes
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    self.corrupt(format!("record of key `{key}` ({} bytes)", bytes.len()))
                })
        };
        let lease = i64::from_le_bytes(word(3)?);
        Ok(RecordHead {
            create_revision: u64::from_le_bytes(word(0)?),
            mod_revision: u64::from_le_bytes(word(1)?),
            version: u64::from_le_bytes(word(2)?),
            // Lease ids start at 1; 0 is "no lease", as in etcd.
            lease: (lease != 0).then_some(LeaseId(lease)),
        })
    }

    fn decode_record(&self, key: &str, bytes: &[u8]) -> StoreResult<KeyValue> {
        let head = self.decode_head(key, bytes)?;
        Ok(KeyValue {
            key: key.to_string(),
            value: bytes[RECORD_HEADER..].to_vec(),
            create_revision: head.create_revision,
            mod_revision: head.mod_revision,
            version: head.version,
            lease: head.lease,
        })
    }

    /// The key of a log entry, without decoding the rest (watch filtering).
    fn event_key<'b>(&self, revision: Revision, bytes: &'b [u8]) -> StoreResult<&'b str> {
        let bad = || self.corrupt(format!("log entry at revision {revision}"));
        let len = bytes
            .get(1..5)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(bad)? as usize;
        let key = bytes.get(5..5 + len).ok_or_else(bad)?;
        std::str::from_utf8(key).map_err(|_| bad())
    }

    fn decode_event(&self, revision: Revision, bytes: &[u8]) -> StoreResult<Event> {
        let key = self.event_key(revision, bytes)?;
        let rest = &bytes[5 + key.len()..];
        match bytes[0] {
            TAG_PUT => Ok(Event::Put(self.decode_record(key, rest)?)),
            TAG_DELETE => Ok(Event::Delete {
                key: key.to_string(),
                revision,
            }),
            tag => Err(self.corrupt(format!("log entry at revision {revision} (tag {tag})"))),
        }
    }
}

fn meta_value(
    meta: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> Result<u64, redb::StorageError> {
    Ok(meta.get(name)?.map_or(0, |v| v.value()))
}

/// Record: create revision, mod revision, version, lease (0: none), each u64/i64
/// little-endian, then the value.
const RECORD_HEADER: usize = 32;

fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.lease.map_or(0, |l| l.0).to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;

/// Log entry: tag, key length (u32 LE), key, then for a put the record. The revision is the
/// entry's table key.
fn encode_event(event: &Event) -> Vec<u8> {
    let key = event.key().as_bytes();
    let mut out = Vec::with_capacity(5 + key.len());
    out.push(match event {
        Event::Put(_) => TAG_PUT,
        Event::Delete { .. } => TAG_DELETE,
    });
    // Keys are limited far below 4 GiB by redb itself (a record must fit a page region).
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    if let Event::Put(kv) = event {
        out.extend_from_slice(&encode_record(kv));
    }
    out
}

/// The lease expiry task: see the module documentation.
async fn sweep_leases(inner: Weak<Inner>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let now = Instant::now();
        let expired = strong.expired_leases(now);
        if expired.is_empty() {
            continue;
        }
        let done = tokio::task::spawn_blocking(move || {
            for lease in expired {
                if let Err(e) = strong.expire(lease, now) {
                    log::warn!("dvs-store: expiring lease {:x} failed: {e}", lease);
                }
            }
        })
        .await;
        if let Err(e) = done {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            return;
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let key = key.to_string();
        self.blocking(move |inner| inner.get(&key)).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<ListResult> {
        let prefix = prefix.to_string();
        self.blocking(move |inner| inner.list(&prefix)).await
    }

    async fn txn(&self, txn: Txn) -> StoreResult<TxnResult> {
        self.blocking(move |inner| inner.txn(&txn)).await
    }

    async fn current_revision(&self) -> StoreResult<Revision> {
        self.blocking(|inner| inner.read_meta(META_REVISION)).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch> {
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let weak = Arc::downgrade(&self.inner);
        let mut committed = self.inner.revision.subscribe();
        let prefix = prefix.to_string();
        let task = tokio::spawn(async move {
            let mut after = after;
            loop {
                // Only a weak reference between reads: a watch must not keep the file open.
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let p = prefix.clone();
                let scan = tokio::task::spawn_blocking(move || inner.scan(&p, after))
                    .await
                    .map_err(join_error)
                    .and_then(|r| r);
                match scan {
                    Ok(scan) => {
                        if !scan.events.is_empty() && tx.send(Ok(scan.events)).await.is_err() {
                            return;
                        }
                        after = scan.scanned_to;
                    }
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                // Sleeps until a commit past what was scanned; errs once the store is gone.
                if committed.wait_for(|&r| r > after).await.is_err() {
                    return;
                }
            }
        });
        Ok(Watch::new(rx, task))
    }

    async fn compact(&self, revision: Revision) -> StoreResult<()> {
        self.blocking(move |inner| inner.compact(revision)).await
    }

    async fn grant_lease(&self, ttl: Duration) -> StoreResult<Lease> {
        self.blocking(move |inner| inner.grant(ttl)).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<Duration> {
        // Memory only: no need for a blocking thread.
        self.inner.keep_alive(lease)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()> {
        self.blocking(move |inner| inner.revoke(lease)).await
    }
}
