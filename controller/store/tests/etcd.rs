//! The shared suite on a real etcd (one fresh member per test), plus what only etcd has:
//! several controller replicas on one cluster, and a member killed mid-test.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::etcd_cluster::{etcd_or_skip, EtcdCluster};
use common::suite::collect_until;
use dvs_store::{EtcdOptions, EtcdStore, Event, Revision, Store, StoreError, Txn};

store_suite!(common::etcd_cluster::etcd_fixture);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_through_etcd() {
    let Some(bin) = etcd_or_skip("replicas_agree_through_etcd") else {
        return;
    };
    let cluster = EtcdCluster::start(&bin, 1).await;
    // Two controller replicas: separate connections, nothing shared in process memory.
    let a = EtcdStore::connect(cluster.options()).await.unwrap();
    let b = EtcdStore::connect(cluster.options()).await.unwrap();

    let r = a
        .txn(Txn::new().when_absent("/dvs/d1").put("/dvs/d1", "{}"))
        .await
        .unwrap()
        .revision;
    let seen = b.get("/dvs/d1").await.unwrap().unwrap();
    assert_eq!(seen.mod_revision, r);
    assert_eq!(b.current_revision().await.unwrap(), r);
    // The create raced by the other replica conflicts.
    let err = b
        .txn(
            Txn::new()
                .when_absent("/dvs/d1")
                .put("/dvs/d1", "{\"other\":1}"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.conflict_key(), Some("/dvs/d1"));

    // Both update from the same read: one wins, whichever it is.
    let guard = seen.mod_revision;
    let (ra, rb) = tokio::join!(
        a.txn(
            Txn::new()
                .when_mod_revision("/dvs/d1", guard)
                .put("/dvs/d1", "a")
        ),
        b.txn(
            Txn::new()
                .when_mod_revision("/dvs/d1", guard)
                .put("/dvs/d1", "b")
        ),
    );
    assert!(
        ra.is_ok() != rb.is_ok(),
        "exactly one replica wins: {ra:?} / {rb:?}"
    );
    let winner = if ra.is_ok() { "a" } else { "b" };
    assert_eq!(
        a.get("/dvs/d1").await.unwrap().unwrap().value,
        winner.as_bytes()
    );

    // A lease granted through one replica is kept alive through the other.
    let lease = a.grant_lease(Duration::from_secs(5)).await.unwrap();
    assert_eq!(b.keep_alive(lease.id).await.unwrap(), lease.ttl);
    b.revoke_lease(lease.id).await.unwrap();
    assert!(matches!(
        a.keep_alive(lease.id).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
}

/// Writes `count` keys, each created under an absent-guard, retrying while etcd is
/// unavailable. A retry that conflicts means an earlier attempt applied although its answer
/// was lost: the key is read back to learn its revision. Returns (key, revision) of every
/// acknowledged write. Signals `at_half` once half are written.
async fn write_through_failures(
    store: EtcdStore,
    count: u32,
    at_half: tokio::sync::oneshot::Sender<()>,
    resume: tokio::sync::oneshot::Receiver<()>,
) -> (Vec<(String, Revision)>, u32) {
    let mut acked = Vec::new();
    let mut retries = 0u32;
    let mut at_half = Some(at_half);
    let mut resume = Some(resume);
    for i in 0..count {
        if i == count / 2 {
            at_half.take().unwrap().send(()).unwrap();
        }
        if i == count / 2 + 20 {
            // Keep going through the election, then wait for the test to restart the member.
            resume.take().unwrap().await.unwrap();
        }
        let key = format!("/kill/{i:04}");
        let value = format!("{i}");
        let mut tries = 0;
        loop {
            tries += 1;
            assert!(tries <= 200, "write of {key} kept failing");
            match store
                .txn(Txn::new().when_absent(&key).put(&key, value.clone()))
                .await
            {
                Ok(r) => {
                    acked.push((key, r.revision));
                    break;
                }
                Err(StoreError::Conflict { .. }) => {
                    let kv = store.get(&key).await.unwrap().unwrap();
                    assert_eq!(kv.value, value.as_bytes());
                    acked.push((key, kv.mod_revision));
                    break;
                }
                Err(e) if e.is_unavailable() => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("write of {key} failed: {e}"),
            }
        }
    }
    (acked, retries)
}

fn check_watch(name: &str, events: &[Event], acked: &[(String, Revision)]) {
    let mut seen: BTreeMap<&str, Revision> = BTreeMap::new();
    for pair in events.windows(2) {
        assert!(
            pair[0].revision() < pair[1].revision(),
            "{name}: one key per revision, strictly increasing: {pair:?}"
        );
    }
    for e in events {
        assert!(matches!(e, Event::Put(_)), "{name}: unexpected {e:?}");
        assert!(
            seen.insert(e.key(), e.revision()).is_none(),
            "{name}: {} delivered twice",
            e.key()
        );
    }
    for (key, revision) in acked {
        assert_eq!(
            seen.get(key.as_str()),
            Some(revision),
            "{name}: acknowledged {key} at {revision} not delivered"
        );
    }
    assert_eq!(seen.len(), acked.len(), "{name}: events nobody wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_killing_the_leader() {
    let Some(bin) = etcd_or_skip("acknowledged_writes_survive_killing_the_leader") else {
        return;
    };
    let started = Instant::now();
    let mut cluster = EtcdCluster::start(&bin, 3).await;
    let options = EtcdOptions {
        request_timeout_ms: 2_000,
        ..cluster.options()
    };
    let writer = EtcdStore::connect(options.clone()).await.unwrap();
    let r0 = writer.current_revision().await.unwrap();
    let leader = cluster.leader().await;

    // One watcher over all members (it lands on any of them), and one that can only reach
    // the member about to be killed, so that at least one watch certainly breaks and must
    // resume from its last revision once that member is back.
    let spread = EtcdStore::connect(options.clone()).await.unwrap();
    let mut spread_watch = spread.watch("/kill/", r0).await.unwrap();
    let pinned = EtcdStore::connect(EtcdOptions {
        endpoints: vec![cluster.members[leader].client_url.clone()],
        ..options.clone()
    })
    .await
    .unwrap();
    let mut pinned_watch = pinned.watch("/kill/", r0).await.unwrap();

    let (half_tx, half_rx) = tokio::sync::oneshot::channel();
    let (resume_tx, resume_rx) = tokio::sync::oneshot::channel();
    let writes = tokio::spawn(write_through_failures(writer, 300, half_tx, resume_rx));

    half_rx.await.unwrap();
    cluster.kill(leader);
    let killed_at = Instant::now();
    eprintln!("killed leader {} mid-write", cluster.members[leader].name);
    // Writes go on against the two survivors (after an election) ...
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    eprintln!(
        "new leader {} after {:?}",
        cluster.members[new_leader].name,
        killed_at.elapsed()
    );
    // ... then the killed member comes back and catches up.
    cluster.restart(leader).await;
    resume_tx.send(()).unwrap();
    let (acked, retries) = common::bounded("the writer", writes).await.unwrap();
    assert_eq!(acked.len(), 300);
    let last = acked.last().unwrap().1;
    eprintln!("300 writes acknowledged, {retries} retried while unavailable");

    // No acknowledged write was lost ...
    let listed = spread.list("/kill/").await.unwrap();
    let stored: BTreeMap<String, Revision> = listed
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.mod_revision))
        .collect();
    let want: BTreeMap<String, Revision> = acked.iter().cloned().collect();
    assert_eq!(stored, want);
    // ... also as read through the restarted member alone (a linearizable read).
    let restarted = EtcdStore::connect(EtcdOptions {
        endpoints: vec![cluster.members[leader].client_url.clone()],
        ..options.clone()
    })
    .await
    .unwrap();
    assert_eq!(restarted.list("/kill/").await.unwrap().kvs, listed.kvs);

    // ... and both watches delivered every one of them, once, in order.
    let spread_events = collect_until(&mut spread_watch, last).await;
    check_watch("watch over all members", &spread_events, &acked);
    let pinned_events = collect_until(&mut pinned_watch, last).await;
    check_watch("watch on the killed member", &pinned_events, &acked);
    eprintln!("3-member kill test: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_reported_with_its_endpoints() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let options = EtcdOptions {
        endpoints: vec![endpoint.clone()],
        request_timeout_ms: 1_000,
        connect_timeout_ms: 500,
        read_attempts: 2,
        ..EtcdOptions::default()
    };
    let started = Instant::now();
    match EtcdStore::connect(options).await {
        Err(e @ StoreError::Unavailable { .. }) => {
            assert!(e.to_string().contains(&endpoint), "{e}");
        }
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}
