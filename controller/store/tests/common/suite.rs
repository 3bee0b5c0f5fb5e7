//! The store tests, written once against `dyn Store` and instantiated for each backend by
//! [`store_suite!`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dvs_store::{
    Change, Condition, Event, LeaseId, Reflector, Revision, StoreError, Txn, Watch, MAX_TXN_OPS,
};

use super::{bounded, Fixture};

/// Generates one `#[tokio::test]` per suite function, each with a fresh store from
/// `$fixture(test_name) -> Option<Fixture>` (`None`: skipped, and the fixture said so).
#[macro_export]
macro_rules! store_suite {
    ($fixture:path) => {
        $crate::store_suite!(@tests $fixture;
            revisions_advance_once_per_change,
            failed_condition_changes_nothing,
            concurrent_cas_has_one_winner,
            list_is_a_snapshot_of_a_prefix,
            watch_sees_every_change_in_order,
            compaction_forces_relist,
            lease_expiry_removes_keys,
            keep_alive_holds_and_revoke_removes,
            invalid_transactions_are_refused,
            delete_prefix_cascades,
        );
    };
    (@tests $fixture:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(fixture) = $fixture(stringify!($name)).await {
                    let started = std::time::Instant::now();
                    $crate::common::suite::$name(&fixture).await;
                    eprintln!("{} on {}: {:?}", stringify!($name), fixture.store.backend(),
                        started.elapsed());
                }
            }
        )*
    };
}

/// Reads batches until one reaches `until`; returns every event read.
pub async fn collect_until(watch: &mut Watch, until: Revision) -> Vec<Event> {
    let mut events = Vec::new();
    while events.last().is_none_or(|e: &Event| e.revision() < until) {
        match bounded(
            &format!("watch events up to revision {until}"),
            watch.next(),
        )
        .await
        {
            Some(Ok(batch)) => {
                assert!(!batch.is_empty(), "a watch batch is never empty");
                events.extend(batch);
            }
            Some(Err(e)) => panic!("watch failed before revision {until}: {e}"),
            None => panic!("watch ended before revision {until}"),
        }
    }
    events
}

pub async fn revisions_advance_once_per_change(f: &Fixture) {
    let s = f.store.as_ref();
    let r0 = s.current_revision().await.unwrap();

    let r1 = s.put("/rev/a", b"1".to_vec()).await.unwrap();
    assert_eq!(r1, r0 + 1, "a put advances the revision by one");
    let a = s.get("/rev/a").await.unwrap().expect("a was put");
    assert_eq!(
        (
            a.create_revision,
            a.mod_revision,
            a.version,
            a.value.as_slice()
        ),
        (r1, r1, 1, &b"1"[..])
    );

    let r2 = s.put("/rev/a", b"2".to_vec()).await.unwrap();
    assert_eq!(r2, r1 + 1);
    let a = s.get("/rev/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (r1, r2, 2));

    // One transaction, one revision for all its changes.
    let t = s
        .txn(
            Txn::new()
                .put("/rev/b", "b")
                .put("/rev/c", "c")
                .delete("/rev/a"),
        )
        .await
        .unwrap();
    assert_eq!((t.revision, t.deleted), (r2 + 1, 1));
    let b = s.get("/rev/b").await.unwrap().unwrap();
    let c = s.get("/rev/c").await.unwrap().unwrap();
    assert_eq!((b.mod_revision, c.mod_revision), (t.revision, t.revision));
    assert!(s.get("/rev/a").await.unwrap().is_none());

    // A transaction that changes nothing takes no revision.
    let noop = s.txn(Txn::new().delete("/rev/missing")).await.unwrap();
    assert_eq!((noop.revision, noop.deleted), (t.revision, 0));
    assert!(!s.delete("/rev/missing").await.unwrap());
    assert_eq!(s.current_revision().await.unwrap(), t.revision);

    // Re-created: a new life, version 1 again.
    let r3 = s.put("/rev/a", b"3".to_vec()).await.unwrap();
    let a = s.get("/rev/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (r3, r3, 1));
    assert_eq!(r3, t.revision + 1);
}

pub async fn failed_condition_changes_nothing(f: &Fixture) {
    let s = f.store.as_ref();
    let base = s.put("/cas/x", b"1".to_vec()).await.unwrap();
    let before = s.current_revision().await.unwrap();
    let mut watch = s.watch("/cas/", before).await.unwrap();

    // The second compare fails; the error names that key, not the first one.
    let stale = base + 1000;
    let err = s
        .txn(
            Txn::new()
                .when_absent("/cas/new")
                .when_mod_revision("/cas/x", stale)
                .put("/cas/x", "2")
                .put("/cas/y", "y")
                .delete_prefix("/cas/z/"),
        )
        .await
        .unwrap_err();
    match &err {
        StoreError::Conflict {
            key,
            expected,
            actual,
        } => {
            assert_eq!(key, "/cas/x");
            assert_eq!(*expected, Condition::ModRevision(stale));
            assert_eq!(*actual, Some(base));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("/cas/x") && message.contains(&base.to_string()),
        "the error says which key and what it was: {message}"
    );

    let err = s
        .txn(Txn::new().when_absent("/cas/x").put("/cas/x", "3"))
        .await
        .unwrap_err();
    assert_eq!(err.conflict_key(), Some("/cas/x"));
    match s
        .txn(Txn::new().when_exists("/cas/nope").put("/cas/y", "y"))
        .await
    {
        Err(StoreError::Conflict { key, actual, .. }) => {
            assert_eq!((key.as_str(), actual), ("/cas/nope", None));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    // Nothing changed: revision, values, absent keys.
    assert_eq!(s.current_revision().await.unwrap(), before);
    assert_eq!(s.get("/cas/x").await.unwrap().unwrap().value, b"1");
    assert!(s.get("/cas/y").await.unwrap().is_none());

    // And no watcher saw anything: the first event is the next successful write.
    let ok = s
        .txn(
            Txn::new()
                .when_mod_revision("/cas/x", base)
                .put("/cas/x", "2"),
        )
        .await
        .unwrap();
    assert_eq!(ok.revision, before + 1);
    let events = collect_until(&mut watch, ok.revision).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].key(), "/cas/x");
    assert_eq!(events[0].revision(), ok.revision);
}

pub async fn concurrent_cas_has_one_winner(f: &Fixture) {
    let key = "/race/counter";
    f.store.put(key, b"0".to_vec()).await.unwrap();
    let read = f.store.get(key).await.unwrap().unwrap();

    // Eight writers that all read the same version: exactly one may win.
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (store, barrier) = (f.store.clone(), barrier.clone());
        let guard = read.mod_revision;
        tasks.spawn(async move {
            barrier.wait().await;
            store
                .txn(
                    Txn::new()
                        .when_mod_revision(key, guard)
                        .put(key, format!("writer {i}")),
                )
                .await
        });
    }
    let mut wins = 0;
    let mut conflicts = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { key: k, .. }) => {
                assert_eq!(k, key);
                conflicts += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((wins, conflicts), (1, 7));

    // No lost update: four writers each increment ten times, retrying on conflict.
    f.store.put(key, b"0".to_vec()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = f.store.clone();
        tasks.spawn(async move {
            let mut retries = 0;
            for _ in 0..10 {
                loop {
                    let kv = store.get(key).await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                    let txn = Txn::new()
                        .when_mod_revision(key, kv.mod_revision)
                        .put(key, (n + 1).to_string());
                    match store.txn(txn).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => retries += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            }
            retries
        });
    }
    let mut retries = 0;
    while let Some(r) = tasks.join_next().await {
        retries += r.unwrap();
    }
    let kv = f.store.get(key).await.unwrap().unwrap();
    assert_eq!(kv.value, b"40", "after {retries} retried conflicts");
}

pub async fn list_is_a_snapshot_of_a_prefix(f: &Fixture) {
    let s = f.store.as_ref();
    // 25 records: more than the etcd fixture's page size (7), so listing pages.
    for i in 0..25 {
        s.put(&format!("/list/a/{i:02}"), vec![i as u8])
            .await
            .unwrap();
    }
    s.put("/list/ab", b"sibling".to_vec()).await.unwrap();
    s.put("/list/b/1", b"other".to_vec()).await.unwrap();
    let current = s.current_revision().await.unwrap();

    let listed = s.list("/list/a/").await.unwrap();
    assert_eq!(listed.revision, current);
    let keys: Vec<&str> = listed.kvs.iter().map(|kv| kv.key.as_str()).collect();
    let want: Vec<String> = (0..25).map(|i| format!("/list/a/{i:02}")).collect();
    assert_eq!(keys, want, "exactly the prefix, sorted by key");
    assert!(listed
        .kvs
        .iter()
        .enumerate()
        .all(|(i, kv)| kv.value == vec![i as u8]));

    // A prefix is a byte prefix, not a path component.
    assert_eq!(s.list("/list/a").await.unwrap().kvs.len(), 26);
    let none = s.list("/list/none/").await.unwrap();
    assert!(none.kvs.is_empty());
    assert_eq!(none.revision, current);
    assert!(s.list("").await.unwrap().kvs.len() >= 27);
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    Put(Revision, String, Vec<u8>),
    Delete(Revision, String),
}

fn seen(e: &Event) -> Seen {
    match e {
        Event::Put(kv) => Seen::Put(kv.mod_revision, kv.key.clone(), kv.value.clone()),
        Event::Delete { key, revision } => Seen::Delete(*revision, key.clone()),
    }
}

pub async fn watch_sees_every_change_in_order(f: &Fixture) {
    let r0 = f.store.current_revision().await.unwrap();
    let mut live = f.store.watch("/w/", r0).await.unwrap();

    // Two writers interleave puts, two-key transactions, deletes, and writes outside the
    // prefix; each records what it did at which revision.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..2 {
        let store = f.store.clone();
        writers.spawn(async move {
            let mut did = Vec::new();
            for i in 0..120u32 {
                let key = format!("/w/{w}/{}", i % 20);
                if i % 10 == 0 {
                    let (k1, k2) = (format!("/w/{w}/t{i}a"), format!("/w/{w}/t{i}b"));
                    let r = store
                        .txn(Txn::new().put(&k1, i.to_string()).put(&k2, i.to_string()))
                        .await
                        .unwrap()
                        .revision;
                    did.push(Seen::Put(r, k1, i.to_string().into_bytes()));
                    did.push(Seen::Put(r, k2, i.to_string().into_bytes()));
                } else if i % 7 == 0 {
                    let r = store.txn(Txn::new().delete(&key)).await.unwrap();
                    if r.deleted == 1 {
                        did.push(Seen::Delete(r.revision, key));
                    }
                } else {
                    let r = store.put(&key, i.to_string().into_bytes()).await.unwrap();
                    did.push(Seen::Put(r, key, i.to_string().into_bytes()));
                }
                if i % 5 == 0 {
                    store
                        .put(&format!("/other/{w}/{i}"), b"x".to_vec())
                        .await
                        .unwrap();
                }
            }
            did
        });
    }
    let mut expected = Vec::new();
    while let Some(did) = writers.join_next().await {
        expected.extend(did.unwrap());
    }
    let last = expected
        .iter()
        .map(|s| match s {
            Seen::Put(r, ..) | Seen::Delete(r, _) => *r,
        })
        .max()
        .unwrap();

    let events = collect_until(&mut live, last).await;
    for pair in events.windows(2) {
        assert!(
            pair[0].revision() <= pair[1].revision(),
            "out of order: {pair:?}"
        );
    }
    assert!(events.iter().all(|e| e.key().starts_with("/w/")));
    let mut got: Vec<Seen> = events.iter().map(seen).collect();
    assert_eq!(got.len(), expected.len(), "no event lost or repeated");
    got.sort();
    expected.sort();
    assert_eq!(got, expected);

    // The same history replayed from the log, event for event.
    let mut replay = f.store.watch("/w/", r0).await.unwrap();
    let replayed = collect_until(&mut replay, last).await;
    assert_eq!(replayed, events);
}

pub async fn compaction_forces_relist(f: &Fixture) {
    let s = f.store.as_ref();
    for k in 1..=5 {
        s.put(&format!("/cmp/k{k}"), b"old".to_vec()).await.unwrap();
    }
    let mut reflector =
        Reflector::new(f.store.clone(), "/cmp/").with_relist_interval(Duration::ZERO);
    let first = bounded("initial list", reflector.next()).await.unwrap();
    assert!(first.resync);
    assert_eq!(first.changes.len(), 5);
    assert_eq!(reflector.items().len(), 5);
    let listed = first.revision;

    // Changes the reflector has not watched yet, then the history behind them goes.
    s.delete("/cmp/k1").await.unwrap();
    s.put("/cmp/k2", b"new".to_vec()).await.unwrap();
    s.put("/cmp/k6", b"new".to_vec()).await.unwrap();
    let current = s.current_revision().await.unwrap();
    assert_eq!(current, listed + 3);
    s.compact(current).await.unwrap();

    let mut old = s.watch("/cmp/", listed).await.unwrap();
    match bounded("compacted error", old.next()).await {
        Some(Err(StoreError::Compacted {
            after,
            compact_revision,
        })) => {
            assert_eq!((after, compact_revision), (listed, current));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    // The compaction revision itself is still watchable (after current - 1).
    let mut edge = s.watch("/cmp/", current - 1).await.unwrap();
    let at_edge = collect_until(&mut edge, current).await;
    assert_eq!(at_edge.len(), 1, "{at_edge:?}");
    assert_eq!(at_edge[0].key(), "/cmp/k6");

    // The reflector hits the compaction, re-lists, and reports the difference.
    let update = bounded("re-list", reflector.next()).await.unwrap();
    assert!(update.resync);
    assert_eq!(update.revision, current);
    let mut summary: Vec<(String, &str)> = update
        .changes
        .iter()
        .map(|c| match c {
            Change::Put { kv, prev: None } => (kv.key.clone(), "created"),
            Change::Put { kv, prev: Some(_) } => (kv.key.clone(), "updated"),
            Change::Delete { prev, .. } => (prev.key.clone(), "deleted"),
        })
        .collect();
    summary.sort();
    assert_eq!(
        summary,
        vec![
            ("/cmp/k1".to_string(), "deleted"),
            ("/cmp/k2".to_string(), "updated"),
            ("/cmp/k6".to_string(), "created"),
        ]
    );
    let listing: BTreeMap<_, _> = s
        .list("/cmp/")
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key.clone(), kv))
        .collect();
    assert_eq!(reflector.items(), &listing);

    // After the re-list it follows the watch again.
    let r = s.put("/cmp/k7", b"x".to_vec()).await.unwrap();
    let update = bounded("watched change", reflector.next()).await.unwrap();
    assert!(!update.resync);
    assert_eq!(update.revision, r);
    assert_eq!(update.changes.len(), 1);
    assert_eq!(update.changes[0].key(), "/cmp/k7");

    // Compacting again to the same point is a no-op; to the future, an error.
    s.compact(current).await.unwrap();
    match s.compact(r + 100).await {
        Err(StoreError::InvalidRequest(_)) => {}
        other => panic!("expected InvalidRequest for a future compaction, got {other:?}"),
    }
}

pub async fn lease_expiry_removes_keys(f: &Fixture) {
    let s = f.store.as_ref();
    let granted_at = Instant::now();
    let lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
    assert!(lease.ttl >= Duration::from_secs(1));
    let r = s
        .txn(
            Txn::new()
                .put_with_lease("/lease/h1/status", "up", lease.id)
                .put("/lease/h2/status", "up"),
        )
        .await
        .unwrap()
        .revision;
    let h1 = s.get("/lease/h1/status").await.unwrap().unwrap();
    assert_eq!(h1.lease, Some(lease.id));

    let mut watch = s.watch("/lease/", r).await.unwrap();
    let batch = bounded("the lease's keys to be deleted", watch.next())
        .await
        .unwrap()
        .unwrap();
    let expired_after = granted_at.elapsed();
    assert_eq!(
        batch,
        vec![Event::Delete {
            key: "/lease/h1/status".into(),
            revision: batch[0].revision()
        }]
    );
    assert!(
        expired_after >= lease.ttl,
        "expired after {expired_after:?}, before its TTL {:?}",
        lease.ttl
    );
    assert!(s.get("/lease/h1/status").await.unwrap().is_none());
    assert!(s.get("/lease/h2/status").await.unwrap().is_some());

    match s.keep_alive(lease.id).await {
        Err(StoreError::LeaseNotFound { lease: l }) => assert_eq!(l, lease.id),
        other => panic!("expected LeaseNotFound, got {other:?}"),
    }
    match s
        .txn(Txn::new().put_with_lease("/lease/h1/status", "up", lease.id))
        .await
    {
        Err(StoreError::LeaseNotFound { lease: l }) => assert_eq!(l, lease.id),
        other => panic!("expected LeaseNotFound, got {other:?}"),
    }
}

pub async fn keep_alive_holds_and_revoke_removes(f: &Fixture) {
    let s = f.store.as_ref();
    let lease = s.grant_lease(Duration::from_secs(2)).await.unwrap();
    let keys = ["/ka/h1/status", "/ka/h1/ports", "/ka/h1/stats"];
    let mut txn = Txn::new();
    for k in keys {
        txn = txn.put_with_lease(k, "x", lease.id);
    }
    let r = s.txn(txn).await.unwrap().revision;

    // Renewed at a quarter of the TTL for two and a half TTLs: the keys stay.
    let until = Instant::now() + lease.ttl * 5 / 2;
    while Instant::now() < until {
        let ttl = s.keep_alive(lease.id).await.unwrap();
        assert_eq!(ttl, lease.ttl);
        tokio::time::sleep(lease.ttl / 4).await;
    }
    for k in keys {
        assert!(s.get(k).await.unwrap().is_some(), "{k} outlived its TTL");
    }

    // Revoked: gone at once, all at one revision.
    let mut watch = s.watch("/ka/", r).await.unwrap();
    s.revoke_lease(lease.id).await.unwrap();
    for k in keys {
        assert!(s.get(k).await.unwrap().is_none(), "{k} survived the revoke");
    }
    let batch = bounded("revoke deletes", watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.len(), 3, "{batch:?}");
    assert!(batch.iter().all(|e| matches!(e, Event::Delete { .. })));
    assert!(batch.iter().all(|e| e.revision() == r + 1));

    assert!(matches!(
        s.revoke_lease(lease.id).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
    assert!(matches!(
        s.keep_alive(lease.id).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
    // A lease with no keys can be revoked too.
    let empty = s.grant_lease(Duration::from_secs(5)).await.unwrap();
    s.revoke_lease(empty.id).await.unwrap();
    assert!(matches!(
        s.keep_alive(empty.id).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
}

pub async fn invalid_transactions_are_refused(f: &Fixture) {
    let s = f.store.as_ref();
    s.put("/inv/a", b"1".to_vec()).await.unwrap();
    let before = s.current_revision().await.unwrap();
    let mut too_many = Txn::new();
    for i in 0..=MAX_TXN_OPS {
        too_many = too_many.put(format!("/inv/many/{i}"), "x");
    }
    let bad = [
        Txn::new().put("/inv/a", "2").put("/inv/a", "3"),
        Txn::new().put("/inv/a", "2").delete("/inv/a"),
        Txn::new().delete_prefix("/inv/").put("/inv/b", "x"),
        Txn::new().put("", "x"),
        too_many,
    ];
    for txn in bad {
        match s.txn(txn.clone()).await {
            Err(StoreError::InvalidRequest(why)) => assert!(!why.is_empty()),
            other => panic!("expected InvalidRequest for {txn:?}, got {other:?}"),
        }
    }
    match s
        .txn(Txn::new().put_with_lease("/inv/b", "x", LeaseId(0x7e57_0000_0001)))
        .await
    {
        Err(StoreError::LeaseNotFound { lease }) => assert_eq!(lease, LeaseId(0x7e57_0000_0001)),
        other => panic!("expected LeaseNotFound, got {other:?}"),
    }
    assert_eq!(s.current_revision().await.unwrap(), before);
    assert_eq!(s.get("/inv/a").await.unwrap().unwrap().value, b"1");
    assert!(s.get("/inv/b").await.unwrap().is_none());
}

pub async fn delete_prefix_cascades(f: &Fixture) {
    let s = f.store.as_ref();
    for k in [
        "/dvs/d1/portgroups/a",
        "/dvs/d1/portgroups/b",
        "/dvs/d1/uplinks/u",
        "/dvs/d10/portgroups/a",
    ] {
        s.put(k, b"{}".to_vec()).await.unwrap();
    }
    let r = s.current_revision().await.unwrap();
    let mut watch = s.watch("/dvs/", r).await.unwrap();
    let t = s
        .txn(
            Txn::new()
                .when_exists("/dvs/d1/portgroups/a")
                .delete_prefix("/dvs/d1/"),
        )
        .await
        .unwrap();
    assert_eq!((t.revision, t.deleted), (r + 1, 3));
    let left: Vec<String> = s
        .list("/dvs/")
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(left, vec!["/dvs/d10/portgroups/a".to_string()]);
    let events = collect_until(&mut watch, t.revision).await;
    let deleted: BTreeSet<&str> = events.iter().map(|e| e.key()).collect();
    assert_eq!(
        deleted,
        BTreeSet::from([
            "/dvs/d1/portgroups/a",
            "/dvs/d1/portgroups/b",
            "/dvs/d1/uplinks/u"
        ])
    );
    assert!(events
        .iter()
        .all(|e| matches!(e, Event::Delete { revision, .. } if *revision == t.revision)));
}
