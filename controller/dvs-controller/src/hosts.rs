//! Everything about hosts: each host's watch stream of its slice, the status it reports under its
//! lease, `dvsctl status`, and `--wait=hosts`.

use crate::cache::{CachedSlice, Snapshot};
use crate::error::ApiErr;
use crate::http::{caller, operator, Caller};
use crate::{keys, State, HOST_LEASE_TTL};
use api::dvs::{
    HostAck, HostReport, HostStatus, SliceDelta, StatusReport, WaitReport, WatchEvent, HEARTBEAT,
};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use dvs_store::StoreError;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

type St = axum::extract::State<Arc<State>>;

async fn host_or_operator(st: &State, headers: &HeaderMap, host: &str) -> Result<(), ApiErr> {
    match caller(st, headers).await? {
        Caller::Operator => Ok(()),
        Caller::Host(h) if h == host => Ok(()),
        Caller::Host(h) => Err(ApiErr::forbidden(format!(
            "the token of host {h:?} does not give access to host {host:?}"
        ))),
    }
}

#[derive(Deserialize)]
pub struct WatchQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    fingerprint: String,
}

/// What the stream sends next: the slice if it differs from what the agent has.
struct Follower {
    host: String,
    fingerprint: String,
    seq: u64,
}

impl Follower {
    fn event(&mut self, snap: &Snapshot, force_check: bool) -> Option<Bytes> {
        let missed = snap.seq != self.seq + 1;
        self.seq = snap.seq;
        if !(force_check || missed || snap.affected.contains(&self.host)) {
            return None;
        }
        let c = snap.slice(&self.host)?;
        if c.fingerprint == self.fingerprint {
            return None;
        }
        let line = match &c.delta {
            Some((base, d)) if *base == self.fingerprint => {
                delta_line(snap.txn_revision, base, &c.fingerprint, d)
            }
            _ => slice_line(snap.txn_revision, &c),
        };
        self.fingerprint = c.fingerprint.clone();
        Some(line)
    }
}

/// The stream line of a [`WatchEvent::Delta`].
fn delta_line(revision: u64, base: &str, fingerprint: &str, d: &SliceDelta) -> Bytes {
    let e = WatchEvent::Delta {
        revision,
        base: base.to_owned(),
        fingerprint: fingerprint.to_owned(),
        delta: d.clone(),
    };
    let mut v = serde_json::to_vec(&e).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// The stream line of a [`WatchEvent::Slice`], around the slice's JSON serialized once for all
/// streams (the fingerprint is hex, the revision a number: nothing to escape).
fn slice_line(revision: u64, c: &CachedSlice) -> Bytes {
    let head = format!(
        "{{\"type\":\"slice\",\"revision\":{revision},\"fingerprint\":\"{}\",\"slice\":",
        c.fingerprint
    );
    let json = &c.whole().json;
    let mut v = Vec::with_capacity(head.len() + json.len() + 2);
    v.extend_from_slice(head.as_bytes());
    v.extend_from_slice(json);
    v.extend_from_slice(b"}\n");
    Bytes::from(v)
}

fn line(e: &WatchEvent) -> Result<Bytes, std::io::Error> {
    let mut v = serde_json::to_vec(e).map_err(std::io::Error::other)?;
    v.push(b'\n');
    Ok(Bytes::from(v))
}

/// `GET /v1/hosts/{host}/watch`: newline-delimited [`WatchEvent`]s for ever. The first event is
/// the slice, unless the agent's fingerprint says it already runs it (then a heartbeat).
pub async fn watch(
    st: St,
    headers: HeaderMap,
    Path(host): Path<String>,
    Query(q): Query<WatchQuery>,
) -> Result<Response, ApiErr> {
    host_or_operator(&st, &headers, &host).await?;
    let snap = st.fresh_snapshot().await?;
    if !snap.cluster.hosts.contains_key(&host) {
        return Err(ApiErr::not_found(format!(
            "unknown host {host:?} (dvsctl host add {host})"
        )));
    }
    let mut f = Follower {
        host: host.clone(),
        fingerprint: q.fingerprint,
        seq: snap.seq,
    };
    let first = match f.event(&snap, true) {
        Some(l) => l,
        None => line(&WatchEvent::Heartbeat {
            revision: snap.txn_revision.max(q.after),
        })
        .map_err(|e| ApiErr::internal(e.to_string()))?,
    };
    let rx = st.snapshot.clone();
    // Each turn yields one line. A heartbeat goes out whenever nothing was sent for
    // HEARTBEAT, however busy the installation is with other hosts' changes.
    let stream = futures_util::stream::unfold(
        (Some(first), f, rx, Instant::now()),
        |(pending, mut f, mut rx, last)| async move {
            if let Some(l) = pending {
                return Some((Ok(l), (None, f, rx, Instant::now())));
            }
            loop {
                let deadline = tokio::time::Instant::from_std(last + HEARTBEAT);
                let woke = tokio::time::timeout_at(deadline, rx.changed()).await;
                if let Ok(Err(_)) = woke {
                    return None;
                }
                // Read (and mark seen) the latest snapshot whether the wait ended by a change or
                // by the heartbeat's deadline: one that arrived just as the deadline passed is
                // looked at here, never skipped (a heartbeat says "nothing for you up to this
                // revision", so it must not go out over an unexamined change).
                let snap = rx.borrow_and_update().clone();
                if !snap.cluster.hosts.contains_key(&f.host) {
                    // The host was removed: end the stream; its switch keeps what it has.
                    return None;
                }
                let examined = snap.seq == f.seq;
                if !examined {
                    if let Some(l) = f.event(&snap, false) {
                        return Some((Ok(l), (None, f, rx, Instant::now())));
                    }
                }
                if woke.is_err() {
                    let e = WatchEvent::Heartbeat {
                        revision: snap.txn_revision,
                    };
                    return Some((line(&e), (None, f, rx, Instant::now())));
                }
            }
        },
    );
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiErr::internal(e.to_string()))
}

/// `PUT /v1/hosts/{host}/status`: the host's report, under its lease. An unchanged report only
/// renews the lease (no write, no revision), so 1,000 idle hosts cost the store nothing but
/// keep-alives.
pub async fn put_status(
    st: St,
    headers: HeaderMap,
    Path(host): Path<String>,
    Json(s): Json<HostStatus>,
) -> Result<Json<serde_json::Value>, ApiErr> {
    host_or_operator(&st, &headers, &host).await?;
    let raw = serde_json::to_vec(&s).map_err(|e| ApiErr::internal(e.to_string()))?;
    let (lease, fresh) = host_lease(&st, &host).await?;
    let current = st.status.borrow().get(&host).cloned();
    let unchanged = !fresh && current.is_some_and(|c| c.full_is(&raw) && c.lease == Some(lease));
    if !unchanged {
        st.status_writer
            .put(keys::status(&host), raw, lease)
            .await?;
    }
    Ok(Json(serde_json::json!({})))
}

/// `PUT /v1/hosts/{host}/applied`: the host applied a policy delta (its ports are as in its last
/// status); written beside the status, under the same lease.
pub async fn put_ack(
    st: St,
    headers: HeaderMap,
    Path(host): Path<String>,
    Json(a): Json<HostAck>,
) -> Result<Json<serde_json::Value>, ApiErr> {
    host_or_operator(&st, &headers, &host).await?;
    let raw = serde_json::to_vec(&a).map_err(|e| ApiErr::internal(e.to_string()))?;
    let (lease, fresh) = host_lease(&st, &host).await?;
    let current = st.status.borrow().get(&host).cloned();
    // Without a full report under this lease (it lapsed, or none was sent) the ports would be
    // unknown: the agent sends its full status instead.
    if fresh
        || !current
            .as_ref()
            .is_some_and(|c| c.has_full() && c.lease == Some(lease))
    {
        return Err(ApiErr::conflict(format!(
            "host {host:?} has no status under its lease: send the full status (PUT /v1/hosts/{host}/status)"
        )));
    }
    let unchanged = current.is_some_and(|c| c.ack_is(&raw));
    if !unchanged {
        st.status_writer.put(keys::ack(&host), raw, lease).await?;
    }
    Ok(Json(serde_json::json!({})))
}

/// The host's lease, renewed, or a new one (`true`) if it had none or it lapsed.
async fn host_lease(st: &State, host: &str) -> Result<(dvs_store::LeaseId, bool), ApiErr> {
    let held = st.leases.lock().expect("lease map").get(host).copied();
    let mut fresh = false;
    let lease = match held {
        Some(id) => match st.store.keep_alive(id).await {
            Ok(_) => id,
            Err(StoreError::LeaseNotFound { .. }) => {
                fresh = true;
                st.store.grant_lease(HOST_LEASE_TTL).await?.id
            }
            Err(e) => return Err(e.into()),
        },
        None => {
            fresh = true;
            st.store.grant_lease(HOST_LEASE_TTL).await?.id
        }
    };
    st.leases
        .lock()
        .expect("lease map")
        .insert(host.to_owned(), lease);
    Ok((lease, fresh))
}

fn report(snap: &Snapshot, status: &crate::cache::StatusMap, host: &str) -> HostReport {
    let r = status.get(host);
    // Fingerprints of slices made by deltas name their history, which another replica (or
    // this one after a restart) names differently: a host that runs the revision its slice
    // last changed at, or later, is in sync as well.
    let in_sync = r.is_some_and(|r| {
        snap.slice(host).is_some_and(|c| {
            r.fingerprint() == c.fingerprint || r.applied_revision() >= c.changed_at
        })
    });
    HostReport {
        host: host.into(),
        alive: r.is_some(),
        lease: r.and_then(|r| r.lease).map(|l| l.to_string()),
        in_sync,
        status: r.map(|r| r.status()),
    }
}

/// `GET /v1/status`.
pub async fn status_report(st: St, headers: HeaderMap) -> Result<Json<StatusReport>, ApiErr> {
    operator(&st, &headers).await?;
    let snap = st.fresh_snapshot().await?;
    let status = st.status.borrow().clone();
    let hosts = snap
        .cluster
        .hosts
        .keys()
        .map(|h| report(&snap, &status, h))
        .collect();
    Ok(Json(StatusReport {
        revision: snap.txn_revision,
        store: st.store.backend().into(),
        hosts,
    }))
}

/// Waits until every affected host that is alive runs a slice at least as new as `revision`
/// (or one equal to its current slice), at most `limit`.
///
/// After a first look at every affected host, each status update wakes the wait with the hosts
/// it changed, and only those are looked at again: a change reaching 1,000 hosts costs about
/// 1,000 lookups, not 1,000 × (hosts still pending).
pub async fn wait(st: &State, affected: &[String], revision: u64, limit: Duration) -> WaitReport {
    let start = Instant::now();
    // Subscribed before the first look, so that no report between the look and the wait is
    // missed.
    let mut changes = st.status_changes.subscribe();
    let mut waiting: HashSet<&str> = affected.iter().map(String::as_str).collect();
    let mut applied: HashSet<&str> = HashSet::new();
    let done = |h: &str, snap: &Snapshot, status: &crate::cache::StatusMap| {
        status.get(h).is_some_and(|r| {
            r.error().is_none()
                && (r.applied_revision() >= revision
                    || snap
                        .slice(h)
                        .is_some_and(|c| r.fingerprint() == c.fingerprint))
        })
    };
    let mut look_at: Option<Vec<String>> = None; // None: every host still waited for
    loop {
        {
            // Hold the snapshot only while counting, not across the wait below.
            let snap = st.snapshot.borrow().clone();
            let status = st.status.borrow().clone();
            let hosts: Vec<&str> = match &look_at {
                None => waiting.iter().copied().collect(),
                Some(v) => v
                    .iter()
                    .filter_map(|h| waiting.get(h.as_str()).copied())
                    .collect(),
            };
            for h in hosts {
                if done(h, &snap, &status) {
                    waiting.remove(h);
                    applied.insert(h);
                }
            }
        }
        let left = limit.saturating_sub(start.elapsed());
        let status = st.status.borrow().clone();
        let live_waiting = waiting.iter().any(|h| status.get(h).is_some());
        if !live_waiting || left.is_zero() {
            let pick = |set: &HashSet<&str>, alive: Option<bool>| -> Vec<String> {
                affected
                    .iter()
                    .filter(|h| set.contains(h.as_str()))
                    .filter(|h| alive.is_none_or(|a| status.get(h).is_some() == a))
                    .cloned()
                    .collect()
            };
            return WaitReport {
                waited_ms: start.elapsed().as_millis() as u64,
                applied: pick(&applied, None),
                down: pick(&waiting, Some(false)),
                pending: pick(&waiting, Some(true)),
            };
        }
        // A host whose lease lapses leaves no status update behind: look at every host at
        // least every 200 ms.
        look_at = match tokio::time::timeout(left.min(Duration::from_millis(200)), changes.recv())
            .await
        {
            Ok(Ok(Some(hosts))) => {
                let mut v: Vec<String> = hosts.to_vec();
                // Take whatever else is queued, in one look.
                loop {
                    match changes.try_recv() {
                        Ok(Some(h)) => v.extend(h.iter().cloned()),
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        // A re-list, or updates this waiter fell behind on: look at all.
                        Ok(None) | Err(_) => {
                            v.clear();
                            break;
                        }
                    }
                }
                if v.is_empty() {
                    None
                } else {
                    Some(v)
                }
            }
            _ => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Cluster;

    #[test]
    fn a_slice_line_is_the_slice_event_serde_writes() {
        let mut c = Cluster::default();
        c.insert(model::Object::Host(model::cluster::Host {
            name: "h1".into(),
            vhost_dir: None,
            token_sha256: None,
        }));
        let cached = CachedSlice::new(c.host_slice("h1"), 1);
        let l = slice_line(42, &cached);
        assert!(l.ends_with(b"\n"));
        let parsed: WatchEvent = serde_json::from_slice(&l).unwrap();
        let want = WatchEvent::Slice {
            revision: 42,
            fingerprint: api::dvs::fingerprint(&c.host_slice("h1")),
            slice: c.host_slice("h1"),
        };
        assert_eq!(parsed, want);
        assert_eq!(&l[..], &line(&want).unwrap()[..], "byte for byte");
    }
}
