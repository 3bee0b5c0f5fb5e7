//! The shared suite on the embedded store, plus what only the embedded store has: a file that
//! must survive reopening and `kill -9`, a bounded change log, and a file lock.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bounded, Fixture};
use dvs_store::{EmbeddedOptions, EmbeddedStore, Event, Store, StoreConfig, StoreError, Txn};

fn fast_options() -> EmbeddedOptions {
    EmbeddedOptions {
        // Lease tests wait for expiry; check often so they do not wait long past the TTL.
        lease_check_interval_ms: 50,
        ..EmbeddedOptions::default()
    }
}

async fn embedded_fixture(_test: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("controller.redb"), fast_options())
        .await
        .unwrap();
    Some(Fixture {
        store: Arc::new(store),
        keep: Box::new(dir),
    })
}

store_suite!(embedded_fixture);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controller.redb");

    let store = EmbeddedStore::open(&path, fast_options()).await.unwrap();
    store
        .put("/dvs/d1/portgroups/web", b"{\"vlan\":10}".to_vec())
        .await
        .unwrap();
    store
        .txn(
            Txn::new()
                .put("/dvs/d1/portgroups/db", "{}")
                .put("/dvs/d1/uplinks/u1", "{}"),
        )
        .await
        .unwrap();
    store.delete("/dvs/d1/uplinks/u1").await.unwrap();
    let long = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let short = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    store
        .txn(
            Txn::new()
                .put_with_lease("/hosts/h1/status", "up", long.id)
                .put_with_lease("/hosts/h2/status", "up", short.id),
        )
        .await
        .unwrap();
    let before = store.list("").await.unwrap();
    let mut history = store.watch("", 0).await.unwrap();
    let events_before = common::suite::collect_until(&mut history, before.revision).await;
    drop(history);
    drop(store);

    let reopened_at = Instant::now();
    let store = EmbeddedStore::open(&path, fast_options()).await.unwrap();
    let after = store.list("").await.unwrap();
    assert_eq!(after, before, "records and revision survive the reopen");
    assert_eq!(store.current_revision().await.unwrap(), before.revision);

    // The change log survived with them: the same history replays.
    let mut history = store.watch("", 0).await.unwrap();
    let events_after = common::suite::collect_until(&mut history, before.revision).await;
    assert_eq!(events_after, events_before);

    // Revisions continue; leases are still there, with a full TTL again.
    let r = store
        .put("/dvs/d1/portgroups/web", b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(r, before.revision + 1);
    assert_eq!(store.keep_alive(long.id).await.unwrap(), long.ttl);
    let mut watch = store.watch("/hosts/", r).await.unwrap();
    let batch = bounded("the short lease to expire", watch.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        reopened_at.elapsed() >= short.ttl,
        "a lease restarts its TTL on open"
    );
    assert!(matches!(&batch[..], [Event::Delete { key, .. }] if key == "/hosts/h2/status"));
    assert!(store.get("/hosts/h1/status").await.unwrap().is_some());
}

/// Set by `committed_writes_survive_kill_9` for its child process: the store file to write.
const CHILD_ENV: &str = "DVS_STORE_KILL9_CHILD";

/// Not a test on its own: the child process of `committed_writes_survive_kill_9` (this same
/// test binary, run with only this test). Without the environment variable it does nothing.
#[test]
fn kill9_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = EmbeddedStore::open(Path::new(&path), EmbeddedOptions::default())
            .await
            .unwrap();
        let mut out = std::io::stdout().lock();
        // Bounded in count and time, so an orphaned child stops by itself.
        let started = Instant::now();
        for i in 0..100_000u32 {
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
            let key = format!("/kill9/{i:06}");
            let value = format!("value {i}");
            let r = store
                .txn(Txn::new().when_absent(&key).put(&key, value))
                .await
                .unwrap();
            // Acknowledged only now, after the commit returned.
            writeln!(out, "acked {key} {}", r.revision).unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn committed_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kill9.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "kill9_child",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acked = Vec::new();
    while acked.len() < 300 {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the child writes and acknowledges");
        if let Some(rest) = line.strip_prefix("acked ") {
            let (key, revision) = rest.split_once(' ').unwrap();
            acked.push((key.to_string(), revision.parse::<u64>().unwrap()));
        }
    }
    // Mid-stream, with writes in flight: SIGKILL, no chance to close anything.
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines already written before the kill are acknowledgements too.
    while let Ok(line) = rx.try_recv() {
        if let Some(rest) = line.strip_prefix("acked ") {
            let (key, revision) = rest.split_once(' ').unwrap();
            acked.push((key.to_string(), revision.parse::<u64>().unwrap()));
        }
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = EmbeddedStore::open(&path, EmbeddedOptions::default())
            .await
            .expect("the file opens after kill -9");
        for (key, revision) in &acked {
            let kv = store
                .get(key)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged {key} (revision {revision}) was lost"));
            assert_eq!(kv.mod_revision, *revision);
            assert!(kv.value.starts_with(b"value "));
        }
        let last = acked.last().unwrap().1;
        let current = store.current_revision().await.unwrap();
        // At most the one write in flight at the kill got committed without its ack.
        assert!(
            current == last || current == last + 1,
            "current revision {current}, last acknowledged {last}"
        );
        let listed = store.list("/kill9/").await.unwrap();
        assert_eq!(listed.kvs.len() as u64, current);
        eprintln!(
            "kill -9 after {} acknowledged writes: all present",
            acked.len()
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_log_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        history_revisions: 20,
        ..fast_options()
    };
    let store = EmbeddedStore::open(dir.path().join("log.redb"), options)
        .await
        .unwrap();
    for i in 1..=100u32 {
        store
            .put(&format!("/h/{}", i % 7), i.to_string().into_bytes())
            .await
            .unwrap();
    }
    // Revisions 81..=100 are kept.
    assert_eq!(store.compact_revision().await.unwrap(), 81);
    let mut old = store.watch("/h/", 0).await.unwrap();
    match bounded("compacted", old.next()).await {
        Some(Err(StoreError::Compacted {
            after: 0,
            compact_revision: 81,
        })) => {}
        other => panic!("expected Compacted, got {other:?}"),
    }
    let mut kept = store.watch("/h/", 80).await.unwrap();
    let events = common::suite::collect_until(&mut kept, 100).await;
    let revisions: Vec<u64> = events.iter().map(Event::revision).collect();
    assert_eq!(revisions, (81..=100).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_open_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.redb");
    let first = EmbeddedStore::open(&path, fast_options()).await.unwrap();
    first.put("/k", b"v".to_vec()).await.unwrap();
    let mut watch = first.watch("/", 0).await.unwrap();
    match EmbeddedStore::open(&path, fast_options()).await {
        Err(e @ StoreError::Embedded { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("locked.redb") && message.contains("open"),
                "says what and where: {message}"
            );
        }
        Err(e) => panic!("expected an embedded store error, got {e}"),
        Ok(_) => panic!("a second open of a locked file succeeded"),
    }
    // Dropping the store closes the file at once, even with a watch still held, which ends.
    drop(first);
    let second = EmbeddedStore::open(&path, fast_options()).await.unwrap();
    assert_eq!(second.get("/k").await.unwrap().unwrap().value, b"v");
    let mut rest = Vec::new();
    while let Some(item) = bounded("the old watch to end", watch.next()).await {
        rest.push(item.unwrap());
    }
    assert!(
        rest.len() <= 1,
        "at most the batch already queued: {rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_selects_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("from-config.redb");
    let text = format!(
        "backend = \"embedded\"\npath = {:?}\nhistory_revisions = 50\n",
        path
    );
    let config: StoreConfig = toml::from_str(&text).unwrap();
    match &config {
        StoreConfig::Embedded { options, .. } => assert_eq!(options.history_revisions, 50),
        other => panic!("parsed as {other:?}"),
    }
    let store = dvs_store::open(&config).await.unwrap();
    assert_eq!(store.backend(), "embedded");
    assert_eq!(store.put("/k", b"v".to_vec()).await.unwrap(), 1);

    let etcd: StoreConfig = toml::from_str(
        "backend = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]\n",
    )
    .unwrap();
    match etcd {
        StoreConfig::Etcd { options } => {
            assert_eq!(options.endpoints.len(), 2);
            assert_eq!(options.request_timeout_ms, 5_000, "defaults fill the rest");
        }
        other => panic!("parsed as {other:?}"),
    }
}
