//! A local, always-complete copy of one prefix: list, then watch, and on compaction re-list
//! and report the difference — the pattern of Calico's watcher cache and Kubernetes'
//! reflector.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{StoreError, StoreResult};
use crate::store::{Store, Watch};
use crate::types::{Event, KeyValue, Revision};

/// One change to the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `kv` was created (`prev: None`) or replaced `prev`.
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// `prev` is gone; `revision` is when (for a re-list, the listed revision).
    Delete { prev: KeyValue, revision: Revision },
}

impl Change {
    pub fn key(&self) -> &str {
        match self {
            Change::Put { kv, .. } => &kv.key,
            Change::Delete { prev, .. } => &prev.key,
        }
    }
}

/// What one [`Reflector::next`] call changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// The cache now reflects the store as of this revision (for the prefix).
    pub revision: Revision,
    pub changes: Vec<Change>,
    /// True when the update came from a listing rather than the watch: the first update, and
    /// after the watch fell behind compaction. The changes are then the difference between
    /// the old cache and the listing, deletes included (nothing the consumer saw is left
    /// dangling), but intermediate states between the two were skipped.
    pub resync: bool,
}

/// Keeps a map of every record under a prefix up to date.
///
/// ```no_run
/// # async fn run(store: std::sync::Arc<dyn dvs_store::Store>) -> dvs_store::StoreResult<()> {
/// let mut hosts = dvs_store::Reflector::new(store, "/hosts/");
/// loop {
///     let update = hosts.next().await?; // first call: the initial listing
///     for change in &update.changes {
///         println!("{} changed at {}", change.key(), update.revision);
///     }
///     // hosts.items() is the complete state at update.revision
/// }
/// # }
/// ```
pub struct Reflector {
    store: Arc<dyn Store>,
    prefix: String,
    items: BTreeMap<String, KeyValue>,
    /// `None` until the first listing.
    revision: Option<Revision>,
    watch: Option<Watch>,
    /// Minimum time between two listings: if compaction keeps overtaking the watcher, listing
    /// in a tight loop would only add load to the store that is already too busy.
    relist_interval: Duration,
    last_list: Option<Instant>,
}

impl Reflector {
    /// A reflector of `prefix`; it reads nothing until [`Reflector::next`].
    pub fn new(store: Arc<dyn Store>, prefix: impl Into<String>) -> Self {
        Self {
            store,
            prefix: prefix.into(),
            items: BTreeMap::new(),
            revision: None,
            watch: None,
            relist_interval: Duration::from_secs(1),
            last_list: None,
        }
    }

    /// Sets the minimum time between two listings (default 1 s).
    pub fn with_relist_interval(mut self, interval: Duration) -> Self {
        self.relist_interval = interval;
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The records under the prefix, as of [`Reflector::revision`].
    pub fn items(&self) -> &BTreeMap<String, KeyValue> {
        &self.items
    }

    pub fn get(&self, key: &str) -> Option<&KeyValue> {
        self.items.get(key)
    }

    /// The revision the cache reflects; `None` before the first listing.
    pub fn revision(&self) -> Option<Revision> {
        self.revision
    }

    /// Waits for the next change and applies it to the cache. The first call lists. On
    /// [`StoreError::Compacted`] it re-lists by itself; any other error is returned, the
    /// cache is kept, and the next call watches again from the cache's revision.
    pub async fn next(&mut self) -> StoreResult<Update> {
        let Some(revision) = self.revision else {
            return self.relist().await;
        };
        let watch = match &mut self.watch {
            Some(w) => w,
            None => self
                .watch
                .insert(self.store.watch(&self.prefix, revision).await?),
        };
        match watch.next().await {
            Some(Ok(events)) => Ok(self.apply(events)),
            Some(Err(StoreError::Compacted {
                after,
                compact_revision,
            })) => {
                log::info!(
                    "dvs-store: reflector of `{}`: revision {after} compacted (history starts \
                     at {compact_revision}); re-listing",
                    self.prefix
                );
                self.watch = None;
                self.relist().await
            }
            Some(Err(e)) => {
                self.watch = None;
                Err(e)
            }
            None => {
                self.watch = None;
                Err(StoreError::Closed)
            }
        }
    }

    fn apply(&mut self, events: Vec<Event>) -> Update {
        let mut changes = Vec::with_capacity(events.len());
        let mut revision = self.revision.unwrap_or(0);
        for event in events {
            revision = revision.max(event.revision());
            match event {
                Event::Put(kv) => {
                    let prev = self.items.insert(kv.key.clone(), kv.clone());
                    changes.push(Change::Put { kv, prev });
                }
                Event::Delete { key, revision } => {
                    // A delete of a key the cache does not hold has nothing to report.
                    if let Some(prev) = self.items.remove(&key) {
                        changes.push(Change::Delete { prev, revision });
                    }
                }
            }
        }
        self.revision = Some(revision);
        Update {
            revision,
            changes,
            resync: false,
        }
    }

    async fn relist(&mut self) -> StoreResult<Update> {
        if let Some(last) = self.last_list {
            let since = last.elapsed();
            if since < self.relist_interval {
                tokio::time::sleep(self.relist_interval - since).await;
            }
        }
        self.last_list = Some(Instant::now());
        let listed = self.store.list(&self.prefix).await?;
        let mut fresh: BTreeMap<String, KeyValue> = listed
            .kvs
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        let mut changes = Vec::new();
        // Deletes for what did not come back, then puts for what is new or different.
        for (key, prev) in std::mem::take(&mut self.items) {
            match fresh.remove(&key) {
                None => changes.push(Change::Delete {
                    prev,
                    revision: listed.revision,
                }),
                Some(kv) if kv.mod_revision == prev.mod_revision => {
                    self.items.insert(key, kv);
                }
                Some(kv) => {
                    self.items.insert(key, kv.clone());
                    changes.push(Change::Put {
                        kv,
                        prev: Some(prev),
                    });
                }
            }
        }
        for (key, kv) in fresh {
            self.items.insert(key, kv.clone());
            changes.push(Change::Put { kv, prev: None });
        }
        self.revision = Some(listed.revision);
        Ok(Update {
            revision: listed.revision,
            changes,
            resync: true,
        })
    }
}
