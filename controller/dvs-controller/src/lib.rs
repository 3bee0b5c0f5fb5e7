//! # dvs-controller
//!
//! The controller of a distributed virtual switch: it keeps the operator's desired state (DVSs,
//! hosts, uplink groups, port groups, security groups, ports: [`model::cluster`]) in a
//! [`dvs_store::Store`], validates every write against the whole installation, and streams to
//! each host agent only that host's slice ([`model::Cluster::host_slice`]).
//!
//! A config change's path: `dvsctl` → `POST /v1/txn` ([`txn::execute`]: ops applied to the
//! latest state, validated, committed in one store transaction guarded by the write sequence)
//! → the store's watch → every replica's cache ([`cache::follow_config`], which publishes a
//! [`cache::Snapshot`] and the hosts it affects) → each affected host's stream
//! ([`hosts::watch`]) sends its new slice → the agent applies it through evsd's atomic table
//! swap and reports under its own status key → `--wait=hosts` ([`hosts::wait`]) sees that.
//!
//! HTTP/JSON rather than gRPC: operators and scripts can use `curl`, the watch stream is plain
//! newline-delimited JSON, and the same serde types serve the store, the API and `dvsctl
//! --json`; nothing here is large or hot enough for protobuf to matter.
//!
//! Replicas share nothing but the store: any number can run against one etcd cluster, each
//! serving any host; a host whose replica dies reconnects to another and resumes from the
//! revision it has.

#![forbid(unsafe_code)]

pub mod cache;
pub mod cli;
pub mod error;
pub mod hosts;
pub mod http;
pub mod keys;
pub mod logging;
pub mod status_writer;
pub mod tls;
pub mod txn;

use cache::{Snapshot, StatusMap};
use dvs_store::{LeaseId, Store};
use error::ApiErr;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Store revisions of history kept for watchers that fall behind (older ones re-list).
pub const KEEP_REVISIONS: u64 = 10_000;

/// How long a host stays alive without reporting.
pub const HOST_LEASE_TTL: Duration = Duration::from_secs(10);

/// Who may do what.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// SHA-256 (hex) of each operator token. Empty: the operator API is open (a warning is logged).
    pub operator_token_hashes: Vec<String>,
}

/// Shared by every handler.
pub struct State {
    pub store: Arc<dyn Store>,
    pub auth: Auth,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub status: watch::Receiver<Arc<StatusMap>>,
    /// The hosts each status update changed (see [`cache::follow_status`]).
    pub status_changes: tokio::sync::broadcast::Sender<cache::StatusChange>,
    ready: watch::Receiver<bool>,
    /// This replica's lease per host (a host reporting through another replica gets that
    /// replica's; a key's lease is whichever wrote it last).
    pub leases: Mutex<HashMap<String, LeaseId>>,
    /// Host status reports, committed in groups.
    pub status_writer: status_writer::StatusWriter,
}

impl State {
    /// Starts the caches on `store`.
    pub fn new(store: Arc<dyn Store>, auth: Auth) -> Arc<State> {
        let (snap_tx, snapshot) = watch::channel(Arc::new(Snapshot::default()));
        let (ready_tx, ready) = watch::channel(false);
        let (status_tx, status) = watch::channel(Arc::new(StatusMap::new()));
        tokio::spawn(cache::follow_config(store.clone(), snap_tx, ready_tx));
        // Deep enough for a change reaching every host of a large installation between two
        // looks of a waiter; one that lags behind re-checks every host it waits for.
        let (status_changes, _) = tokio::sync::broadcast::channel(4096);
        tokio::spawn(cache::follow_status(
            store.clone(),
            status_tx,
            status_changes.clone(),
        ));
        tokio::spawn(compact(store.clone()));
        Arc::new(State {
            status_writer: status_writer::StatusWriter::start(store.clone()),
            store,
            auth,
            snapshot,
            status,
            status_changes,
            ready,
            leases: Mutex::new(HashMap::new()),
        })
    }

    /// The latest snapshot, once the first listing is in.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, ApiErr> {
        let mut r = self.ready.clone();
        tokio::time::timeout(Duration::from_secs(10), r.wait_for(|x| *x))
            .await
            .map_err(|_| ApiErr::unavailable("the controller has not read the store yet"))?
            .map_err(|_| ApiErr::internal("cache stopped"))?;
        Ok(self.snapshot.borrow().clone())
    }

    /// A snapshot that includes every transaction committed before the call, by any replica
    /// (read the write sequence's revision from the store, wait for the cache to reach it).
    pub async fn fresh_snapshot(&self) -> Result<Arc<Snapshot>, ApiErr> {
        self.snapshot().await?;
        let seq = self
            .store
            .get(keys::SEQ)
            .await?
            .map(|kv| kv.mod_revision)
            .unwrap_or(0);
        self.wait_for_txn(seq).await;
        let s = self.snapshot.borrow().clone();
        if s.txn_revision < seq {
            return Err(ApiErr::unavailable(format!(
                "this controller's cache is behind the store (at {}, store at {seq})",
                s.txn_revision
            )));
        }
        Ok(s)
    }

    /// Waits (bounded) until the cache holds transaction `revision`.
    pub async fn wait_for_txn(&self, revision: u64) {
        let mut r = self.snapshot.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            r.wait_for(|s| s.txn_revision >= revision),
        )
        .await;
    }
}

/// Keeps the store's history bounded: etcd keeps every revision until told otherwise (the
/// embedded store bounds its log itself; compacting it again is a no-op). Every replica does
/// it; compacting to a revision already compacted changes nothing.
async fn compact(store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let Ok(rev) = store.current_revision().await else {
            continue;
        };
        if rev > KEEP_REVISIONS {
            if let Err(e) = store.compact(rev - KEEP_REVISIONS).await {
                tracing::warn!(
                    target: "dvs-controller",
                    "compacting the store to {}: {e}",
                    rev - KEEP_REVISIONS
                );
            }
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves; HTTPS with `tls`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = http::router(state);
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(acceptor) => {
            let l = tls::TlsListener {
                tcp: listener,
                acceptor,
            };
            axum::serve(l, app).with_graceful_shutdown(shutdown).await
        }
    }
}
