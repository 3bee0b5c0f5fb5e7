//! Each controller replica's in-memory copy of the store: the desired state as a [`Cluster`]
//! (with every object's resource version) and the hosts' status, kept exact by list + watch
//! ([`dvs_store::Reflector`], which re-lists after compaction).
//!
//! Each new state is published as an immutable [`Snapshot`] on a `watch` channel; host streams
//! and handlers read the latest one without locks.
//!
//! A snapshot also carries every host's slice, serialized and fingerprinted once: an update
//! recomputes only the slices of the hosts it affects (in one pass over the ports), and every
//! host stream, `--wait=hosts` and `dvsctl status` read them from there. Without this, a change
//! that touches 1,000 hosts of a 100,000-port installation had each host's stream cut its own
//! slice out of every port (10^8 port visits), and `--wait=hosts` did it again on every status
//! report.

use crate::keys;
use api::dvs::{fingerprint_of_json, HostStatus};
use bytes::Bytes;
use dvs_store::{Change, LeaseId, Reflector, Store};
use model::{Cluster, HostSlice, Object, ObjectId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// The hosts one status update changed; `None`: unknown (a re-list), look at all.
pub type StatusChange = Option<Arc<Vec<String>>>;

/// The desired state as of one store revision.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Counts updates; a reader that sees it jump knows it missed one.
    pub seq: u64,
    /// The store revision the cache reflects.
    pub revision: u64,
    /// Revision of the last committed transaction (the [`keys::SEQ`] key), 0 before the first.
    pub txn_revision: u64,
    pub cluster: Arc<Cluster>,
    pub versions: Arc<Versions>,
    /// Hosts whose slice the update that made this snapshot may have changed.
    pub affected: BTreeSet<String>,
    /// Records the cache could not decode (written by a newer or broken writer): named, not
    /// hidden, and left out of the state.
    pub unreadable: Vec<String>,
    /// Every host's current slice.
    pub slices: BTreeMap<String, Arc<CachedSlice>>,
    /// Host by the SHA-256 of its token (rebuilt only when a host changes).
    pub host_by_token: Arc<HashMap<String, String>>,
}

/// One host's slice as the controller serves it.
#[derive(Debug)]
pub struct CachedSlice {
    pub slice: HostSlice,
    /// `api::dvs::fingerprint` of the slice.
    pub fingerprint: String,
    /// The slice as JSON (what the fingerprint is computed over).
    pub json: Bytes,
}

impl CachedSlice {
    pub fn new(slice: HostSlice) -> CachedSlice {
        let json = serde_json::to_vec(&slice).unwrap_or_default();
        CachedSlice {
            fingerprint: fingerprint_of_json(&json),
            json: Bytes::from(json),
            slice,
        }
    }
}

impl Snapshot {
    /// `host`'s slice (`None` for an unknown host); computed here if the cache lacks it, which
    /// only a snapshot built by hand does.
    pub fn slice(&self, host: &str) -> Option<Arc<CachedSlice>> {
        if let Some(c) = self.slices.get(host) {
            return Some(c.clone());
        }
        self.cluster
            .hosts
            .contains_key(host)
            .then(|| Arc::new(CachedSlice::new(self.cluster.host_slice(host))))
    }
}

fn tokens_of(c: &Cluster) -> HashMap<String, String> {
    c.hosts
        .values()
        .filter_map(|h| Some((h.token_sha256.clone()?, h.name.clone())))
        .collect()
}

/// One host's reported status and the lease it is held under.
#[derive(Debug, Clone)]
pub struct Reported {
    pub status: HostStatus,
    pub lease: Option<LeaseId>,
    /// The raw value, to skip rewriting an unchanged status.
    pub raw: Vec<u8>,
}

/// Each object's resource version (persistent, like the [`Cluster`]'s maps: a copy per update
/// is a pointer).
pub type Versions = imbl::OrdMap<ObjectId, u64>;

/// One decoded change of the desired state: the object as written (with its revision), or its
/// removal.
type Edit = (ObjectId, Option<(Object, u64)>);

fn replay(c: &mut Cluster, v: &mut Versions, edits: &[Edit]) {
    for (id, e) in edits {
        match e {
            Some((o, rev)) => {
                c.insert(o.clone());
                v.insert(id.clone(), *rev);
            }
            None => {
                c.remove(id);
                v.remove(id);
            }
        }
    }
}

/// Every host's reported status, in shards behind `Arc`s: each status write publishes a new
/// map, and copying one map of 10,000 hosts per write (10,000 writes when a change reaches
/// every host) would be quadratic; a write copies one shard.
#[derive(Debug, Clone)]
pub struct StatusMap {
    shards: Vec<Arc<BTreeMap<String, Arc<Reported>>>>,
}

const STATUS_SHARDS: usize = 64;

impl Default for StatusMap {
    fn default() -> Self {
        StatusMap {
            shards: (0..STATUS_SHARDS).map(|_| Arc::default()).collect(),
        }
    }
}

impl StatusMap {
    pub fn new() -> StatusMap {
        StatusMap::default()
    }

    fn shard(host: &str) -> usize {
        // FNV-1a: stable and cheap; the shards only need to be even.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in host.as_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % STATUS_SHARDS as u64) as usize
    }

    pub fn get(&self, host: &str) -> Option<&Arc<Reported>> {
        self.shards[Self::shard(host)].get(host)
    }

    pub fn insert(&mut self, host: String, r: Arc<Reported>) {
        Arc::make_mut(&mut self.shards[Self::shard(&host)]).insert(host, r);
    }

    pub fn remove(&mut self, host: &str) {
        let shard = &mut self.shards[Self::shard(host)];
        if shard.contains_key(host) {
            Arc::make_mut(shard).remove(host);
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn log(msg: impl AsRef<str>) {
    eprintln!("dvs-controller: {}", msg.as_ref());
}

/// Follows [`keys::CFG`] for ever, publishing a snapshot per update. Copying the state for an
/// update is cheap (persistent maps), so each snapshot is the previous one with the update's
/// edits replayed.
pub async fn follow_config(
    store: Arc<dyn Store>,
    tx: watch::Sender<Arc<Snapshot>>,
    ready: watch::Sender<bool>,
) {
    let mut r = Reflector::new(store, keys::CFG);
    let mut backoff = Duration::from_millis(100);
    loop {
        let update = match r.next().await {
            Ok(u) => u,
            Err(e) => {
                log(format!(
                    "watching the desired state: {e}; retrying in {backoff:?}"
                ));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let prev = tx.borrow().clone();
        let mut txn_revision = prev.txn_revision;
        let mut unreadable = prev.unreadable.clone();
        let mut edits: Vec<Edit> = vec![];
        for c in &update.changes {
            let key = c.key();
            if key == keys::SEQ {
                if let Change::Put { kv, .. } = c {
                    txn_revision = kv.mod_revision;
                }
                continue;
            }
            let Some(id) = keys::parse_object(key) else {
                continue;
            };
            unreadable.retain(|k| k != key);
            match c {
                Change::Put { kv, .. } => match serde_json::from_slice::<Object>(&kv.value) {
                    Ok(o) if o.id() == id => edits.push((id, Some((o, kv.mod_revision)))),
                    Ok(o) => {
                        log(format!("{key}: holds {} instead; ignored", o.id()));
                        unreadable.push(key.to_owned());
                        // Not a change of the state, but affected hosts are re-checked.
                        edits.push((
                            id.clone(),
                            prev.cluster
                                .get(&id)
                                .map(|o| (o, prev.versions.get(&id).copied().unwrap_or(0))),
                        ));
                    }
                    Err(e) => {
                        log(format!("{key}: unreadable ({e}); ignored"));
                        unreadable.push(key.to_owned());
                        edits.push((id, None));
                    }
                },
                Change::Delete { .. } => edits.push((id, None)),
            }
        }
        let mut cluster = Cluster::clone(&prev.cluster);
        let mut versions = Versions::clone(&prev.versions);
        replay(&mut cluster, &mut versions, &edits);
        let (cluster, versions) = (Arc::new(cluster), Arc::new(versions));
        let changed: Vec<ObjectId> = edits.iter().map(|(id, _)| id.clone()).collect();
        let mut next = Snapshot {
            seq: prev.seq + 1,
            revision: update.revision,
            txn_revision,
            cluster,
            versions,
            affected: BTreeSet::new(),
            unreadable,
            slices: prev.slices.clone(),
            host_by_token: prev.host_by_token.clone(),
        };
        if update.resync {
            // A listing may have skipped states: every host is re-checked.
            next.affected = prev
                .cluster
                .hosts
                .keys()
                .chain(next.cluster.hosts.keys())
                .cloned()
                .collect();
        } else {
            next.affected = Cluster::affected_hosts(&prev.cluster, &next.cluster, &changed);
        }
        if update.resync || changed.iter().any(|id| id.kind == model::Kind::Host) {
            next.host_by_token = Arc::new(tokens_of(&next.cluster));
        }
        let fresh = next
            .cluster
            .host_slices(next.affected.iter().map(String::as_str));
        for h in &next.affected {
            if !fresh.contains_key(h) {
                // Removed hosts.
                next.slices.remove(h);
            }
        }
        for (h, slice) in fresh {
            next.slices.insert(h, Arc::new(CachedSlice::new(slice)));
        }
        let _ = tx.send(Arc::new(next));
        let _ = ready.send(true);
    }
}

/// Follows [`keys::STATUS`] for ever. Each update decodes only the statuses it changed (a change
/// applied by 1,000 hosts is 1,000 status writes; decoding every host's status on each of them
/// was 10^6 decodes per change).
///
/// Each update's changed hosts also go out on `changes` (`None` after a re-list: anything may
/// have changed), so a `--wait=hosts` looks again only at the hosts that reported.
pub async fn follow_status(
    store: Arc<dyn Store>,
    tx: watch::Sender<Arc<StatusMap>>,
    changes: broadcast::Sender<StatusChange>,
) {
    let mut r = Reflector::new(store, keys::STATUS);
    loop {
        let update = match r.next().await {
            Ok(u) => u,
            Err(e) => {
                log(format!("watching host status: {e}; retrying"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let decode = |kv: &dvs_store::KeyValue| {
            serde_json::from_slice::<HostStatus>(&kv.value)
                .ok()
                .map(|status| {
                    Arc::new(Reported {
                        status,
                        lease: kv.lease,
                        raw: kv.value.clone(),
                    })
                })
        };
        let changed: StatusChange = if update.resync {
            None
        } else {
            Some(Arc::new(
                update
                    .changes
                    .iter()
                    .filter_map(|c| c.key().strip_prefix(keys::STATUS).map(str::to_owned))
                    .collect(),
            ))
        };
        let m = if update.resync {
            let mut m = StatusMap::new();
            for (k, kv) in r.items() {
                if let (Some(host), Some(rep)) = (k.strip_prefix(keys::STATUS), decode(kv)) {
                    m.insert(host.to_owned(), rep);
                }
            }
            m
        } else {
            let mut m = StatusMap::clone(&tx.borrow());
            for c in &update.changes {
                let Some(host) = c.key().strip_prefix(keys::STATUS) else {
                    continue;
                };
                match c {
                    Change::Put { kv, .. } => match decode(kv) {
                        Some(rep) => m.insert(host.to_owned(), rep),
                        None => m.remove(host),
                    },
                    Change::Delete { .. } => m.remove(host),
                }
            }
            m
        };
        let _ = tx.send(Arc::new(m));
        let _ = changes.send(changed);
    }
}
