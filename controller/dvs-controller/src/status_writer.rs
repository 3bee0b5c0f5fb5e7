//! Host status writes, grouped into shared store transactions.
//!
//! A change that reaches 1,000 hosts brings 1,000 status reports within a few hundred
//! milliseconds. Written one transaction each, they queue behind each other in the store (one
//! durable commit each: an fsync on the embedded store, a raft round on etcd), and the last
//! host's acknowledgement, which `--wait=hosts` waits for, comes seconds after the host applied.
//! So reports are queued to one writer that commits whatever has gathered while the previous
//! commit ran, in one transaction (group commit). Each key is still the host's own (OVN's
//! `Chassis_Private` lesson holds: nothing every host watches is written); only the commit is
//! shared. A request is answered once its report is durable.

use dvs_store::{LeaseId, Store, StoreError, Txn};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Reports per transaction: under etcd's default `--max-txn-ops` (128), which the embedded
/// store enforces too.
const MAX_BATCH: usize = 100;

struct Pending {
    key: String,
    value: Vec<u8>,
    lease: LeaseId,
    done: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Clone)]
pub struct StatusWriter {
    tx: mpsc::Sender<Pending>,
}

impl StatusWriter {
    /// Starts the writer task on `store`.
    pub fn start(store: Arc<dyn Store>) -> StatusWriter {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(store, rx));
        StatusWriter { tx }
    }

    /// Writes `value` at `key` under `lease`, durably, in the next group commit.
    pub async fn put(&self, key: String, value: Vec<u8>, lease: LeaseId) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                key,
                value,
                lease,
                done,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        // One key at most once per transaction (etcd refuses duplicates): a second report of
        // the same host waits for the next commit.
        let mut keys: HashSet<String> = HashSet::from([batch[0].key.clone()]);
        let mut later = vec![];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) if keys.insert(p.key.clone()) => batch.push(p),
                Ok(p) => later.push(p),
                Err(_) => break,
            }
        }
        commit(&*store, std::mem::take(&mut batch)).await;
        for p in later {
            commit(&*store, vec![p]).await;
        }
    }
}

async fn commit(store: &dyn Store, batch: Vec<Pending>) {
    let txn = batch.iter().fold(Txn::new(), |t, p| {
        t.put_with_lease(p.key.clone(), p.value.clone(), p.lease)
    });
    match store.txn(txn).await {
        Ok(_) => {
            for p in batch {
                let _ = p.done.send(Ok(()));
            }
        }
        Err(e) if batch.len() == 1 => {
            let _ = batch.into_iter().next().map(|p| p.done.send(Err(e)));
        }
        // One report's lease expired (or the store refused one write): the others must not
        // fail with it, so each goes alone and gets its own answer.
        Err(_) => {
            for p in batch {
                let r = store
                    .txn(Txn::new().put_with_lease(p.key, p.value, p.lease))
                    .await
                    .map(|_| ());
                let _ = p.done.send(r);
            }
        }
    }
}
