//! Each controller replica's in-memory copy of the store: the desired state as a [`Cluster`]
//! (with every object's resource version) and the hosts' status, kept exact by list + watch
//! ([`dvs_store::Reflector`], which re-lists after compaction).
//!
//! Each new state is published as an immutable [`Snapshot`] on a `watch` channel; host streams
//! and handlers read the latest one without locks.

use crate::keys;
use api::dvs::HostStatus;
use dvs_store::{Change, LeaseId, Reflector, Store};
use model::{Cluster, Object, ObjectId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The desired state as of one store revision.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Counts updates; a reader that sees it jump knows it missed one.
    pub seq: u64,
    /// The store revision the cache reflects.
    pub revision: u64,
    /// Revision of the last committed transaction (the [`keys::SEQ`] key), 0 before the first.
    pub txn_revision: u64,
    pub cluster: Cluster,
    pub versions: BTreeMap<ObjectId, u64>,
    /// Hosts whose slice the update that made this snapshot may have changed.
    pub affected: BTreeSet<String>,
    /// Records the cache could not decode (written by a newer or broken writer): named, not
    /// hidden, and left out of the state.
    pub unreadable: Vec<String>,
}

/// One host's reported status and the lease it is held under.
#[derive(Debug, Clone)]
pub struct Reported {
    pub status: HostStatus,
    pub lease: Option<LeaseId>,
    /// The raw value, to skip rewriting an unchanged status.
    pub raw: Vec<u8>,
}

pub type StatusMap = BTreeMap<String, Reported>;

fn log(msg: impl AsRef<str>) {
    eprintln!("dvs-controller: {}", msg.as_ref());
}

/// Follows [`keys::CFG`] for ever, publishing a snapshot per update.
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
        let mut next = Snapshot {
            seq: prev.seq + 1,
            revision: update.revision,
            txn_revision: prev.txn_revision,
            cluster: prev.cluster.clone(),
            versions: prev.versions.clone(),
            affected: BTreeSet::new(),
            unreadable: prev.unreadable.clone(),
        };
        let mut changed = vec![];
        for c in &update.changes {
            let key = c.key();
            if key == keys::SEQ {
                if let Change::Put { kv, .. } = c {
                    next.txn_revision = kv.mod_revision;
                }
                continue;
            }
            let Some(id) = keys::parse_object(key) else {
                continue;
            };
            next.unreadable.retain(|k| k != key);
            match c {
                Change::Put { kv, .. } => match serde_json::from_slice::<Object>(&kv.value) {
                    Ok(o) if o.id() == id => {
                        next.cluster.insert(o);
                        next.versions.insert(id.clone(), kv.mod_revision);
                    }
                    Ok(o) => {
                        log(format!("{key}: holds {} instead; ignored", o.id()));
                        next.unreadable.push(key.to_owned());
                    }
                    Err(e) => {
                        log(format!("{key}: unreadable ({e}); ignored"));
                        next.unreadable.push(key.to_owned());
                        next.cluster.remove(&id);
                        next.versions.remove(&id);
                    }
                },
                Change::Delete { .. } => {
                    next.cluster.remove(&id);
                    next.versions.remove(&id);
                }
            }
            changed.push(id);
        }
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
        let _ = tx.send(Arc::new(next));
        let _ = ready.send(true);
    }
}

/// Follows [`keys::STATUS`] for ever.
pub async fn follow_status(store: Arc<dyn Store>, tx: watch::Sender<Arc<StatusMap>>) {
    let mut r = Reflector::new(store, keys::STATUS);
    loop {
        if let Err(e) = r.next().await {
            log(format!("watching host status: {e}; retrying"));
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let mut m = StatusMap::new();
        for (k, kv) in r.items() {
            let Some(host) = k.strip_prefix(keys::STATUS) else {
                continue;
            };
            if let Ok(status) = serde_json::from_slice::<HostStatus>(&kv.value) {
                m.insert(
                    host.to_owned(),
                    Reported {
                        status,
                        lease: kv.lease,
                        raw: kv.value.clone(),
                    },
                );
            }
        }
        let _ = tx.send(Arc::new(m));
    }
}
