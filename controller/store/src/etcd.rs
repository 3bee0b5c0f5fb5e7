//! The etcd backend, over etcd's v3 gRPC API (etcd 3.4 and later).
//!
//! Everything that must be correct across controller replicas comes from etcd itself: the
//! revision is etcd's, compares are evaluated by etcd inside its transaction, watches resume
//! from etcd's revision history, and lease expiry is etcd's. This process keeps no state that
//! another replica would need to agree with.
//!
//! Failure handling:
//! - reads (get, list, current revision, keep-alive) are retried a few times on
//!   [`StoreError::Unavailable`], so a killed member costs a read a retry, not an error;
//! - writes are never retried here: after a timeout or a broken connection the outcome is
//!   unknown, so the caller (which knows whether its compares make a retry safe) decides;
//! - a watch whose connection breaks re-opens itself from the last revision it delivered, on
//!   whichever member answers, until it is dropped; only compaction ends it;
//! - every request carries etcd's `hasleader` requirement, so a member cut off from the
//!   quorum refuses (and cancels watches) instead of serving stale data.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, PutOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tonic::Code;

use crate::error::{StoreError, StoreResult};
use crate::store::{Store, Watch, WATCH_QUEUE};
use crate::types::{
    ttl_seconds, Condition, Event, KeyValue, Lease, LeaseId, ListResult, Op, Revision, Txn,
    TxnResult,
};

/// How to reach etcd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EtcdOptions {
    /// Client URLs of the cluster's members, e.g. `http://10.0.0.1:2379`. Requests are
    /// balanced over them; give all members so that losing one is survivable.
    pub endpoints: Vec<String>,
    /// Deadline of one unary request (a watch stream has none).
    pub request_timeout_ms: u64,
    /// Deadline for establishing a connection to one member.
    pub connect_timeout_ms: u64,
    /// Records per range request when listing; a listing larger than this is read in pages,
    /// all at the first page's revision, so it stays one consistent snapshot without one
    /// response exceeding gRPC's message size limit.
    pub list_page_size: u32,
    /// How many times an idempotent read is tried when etcd is unavailable. The client
    /// balances requests over the members and keeps sending some to a dead member while it
    /// reconnects ("tcp connect error"): with three members and one down, three attempts in
    /// 150 ms all went to the dead one in a CI run, so reads try eight times over about 2.3 s.
    pub read_attempts: u32,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            request_timeout_ms: 5_000,
            connect_timeout_ms: 3_000,
            list_page_size: 1_000,
            read_attempts: 8,
        }
    }
}

/// The etcd store. Cheap to clone (one shared connection pool). A watch holds its own handle
/// on the connection: it keeps running after the store is dropped, until it is dropped.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    options: EtcdOptions,
    /// The endpoints as one string, for error messages.
    endpoints: String,
}

/// How long to wait before re-opening a broken watch: doubling from the first to the last.
const WATCH_RETRY_FIRST: Duration = Duration::from_millis(50);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(2);

impl EtcdStore {
    /// Connects to the cluster and checks that it answers (a linearizable read, so a quorum
    /// with a leader), so that a wrong endpoint is reported at start-up, not at first use.
    pub async fn connect(options: EtcdOptions) -> StoreResult<Self> {
        let endpoints = options.endpoints.join(",");
        if options.endpoints.is_empty() {
            return Err(StoreError::InvalidRequest(
                "etcd store: no endpoints configured".into(),
            ));
        }
        let connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(options.connect_timeout_ms))
            // HTTP/2 pings find a dead member behind a silent network. Only while streams are
            // open: etcd answers idle pings more often than every 5 s with GOAWAY.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(false)
            .with_require_leader(true);
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(|e| StoreError::Etcd {
                op: "connect",
                endpoints: endpoints.clone(),
                source: Box::new(e),
            })?;
        let store = Self {
            client,
            options,
            endpoints,
        };
        store.current_revision().await?;
        Ok(store)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.options.request_timeout_ms)
    }

    /// One unary request under the request deadline.
    async fn call<T>(
        &self,
        op: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(self.timeout(), request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map_error(op, e)),
            Err(_) => Err(StoreError::Unavailable {
                op,
                endpoints: self.endpoints.clone(),
                detail: format!(
                    "no answer within {} ms (a write may or may not have applied)",
                    self.options.request_timeout_ms
                ),
            }),
        }
    }

    /// An idempotent request, tried again while etcd is unavailable.
    async fn read<T, F, Fut>(&self, op: &'static str, request: F) -> StoreResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let attempts = self.options.read_attempts.max(1);
        let mut pause = Duration::from_millis(50);
        let mut attempt = 1;
        loop {
            match self.call(op, request()).await {
                Err(e) if e.is_unavailable() && attempt < attempts => {
                    log::debug!("dvs-store: {e}; retrying (attempt {attempt} of {attempts})");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(400));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn map_error(&self, op: &'static str, e: etcd_client::Error) -> StoreError {
        map_error(op, &self.endpoints, e)
    }

    fn convert(&self, kv: &etcd_client::KeyValue) -> StoreResult<KeyValue> {
        convert(&self.endpoints, kv)
    }

    async fn list_once(&self, prefix: &str) -> StoreResult<ListResult> {
        let (start, end) = key_range(prefix);
        let page = i64::from(self.options.list_page_size.max(1));
        let mut from = start;
        let mut revision: i64 = 0;
        let mut kvs = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
            if revision > 0 {
                // Later pages at the first page's revision: one snapshot for the whole list.
                options = options.with_revision(revision);
            }
            let key = from.clone();
            let resp = self
                .read("list", || {
                    let mut kv = self.client.kv_client();
                    let (key, options) = (key.clone(), options.clone());
                    async move { kv.get(key, Some(options)).await }
                })
                .await?;
            if revision == 0 {
                revision = header_revision(resp.header());
            }
            for kv in resp.kvs() {
                kvs.push(self.convert(kv)?);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    // The smallest key after `last`.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(ListResult {
            revision: to_revision(revision),
            kvs,
        })
    }
}

/// Maps an etcd client error to the store's meaning of it.
fn map_error(op: &'static str, endpoints: &str, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    let unavailable = |detail: String| StoreError::Unavailable {
        op,
        endpoints: endpoints.to_string(),
        detail,
    };
    match &e {
        E::GRpcStatus(status) => {
            let message = status.message();
            match status.code() {
                // Unknown: what tonic reports for a connection torn down mid-request.
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                    unavailable(format!("{:?}: {message}", status.code()))
                }
                Code::OutOfRange if message.contains("compacted") => StoreError::Compacted {
                    // Filled in by the caller, which knows what it asked for.
                    after: 0,
                    compact_revision: 0,
                },
                Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                    StoreError::InvalidRequest(format!("etcd {op}: {message}"))
                }
                _ => StoreError::Etcd {
                    op,
                    endpoints: endpoints.to_string(),
                    source: Box::new(e),
                },
            }
        }
        E::TransportError(_) | E::IoError(_) => unavailable(e.to_string()),
        _ => StoreError::Etcd {
            op,
            endpoints: endpoints.to_string(),
            source: Box::new(e),
        },
    }
}

fn is_lease_not_found(e: &StoreError) -> bool {
    match e {
        StoreError::Etcd { source, .. } => match source.as_ref() {
            etcd_client::Error::GRpcStatus(s) => {
                s.code() == Code::NotFound && s.message().contains("lease not found")
            }
            etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
            _ => false,
        },
        _ => false,
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

/// etcd revisions are positive `i64`s.
fn to_revision(r: i64) -> Revision {
    r.max(0) as Revision
}

fn to_etcd_revision(r: Revision) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

fn convert(endpoints: &str, kv: &etcd_client::KeyValue) -> StoreResult<KeyValue> {
    let key = std::str::from_utf8(kv.key()).map_err(|_| StoreError::Corrupt {
        at: format!("etcd {endpoints}"),
        what: format!("key {:?} is not UTF-8", String::from_utf8_lossy(kv.key())),
    })?;
    Ok(KeyValue {
        key: key.to_string(),
        value: kv.value().to_vec(),
        create_revision: to_revision(kv.create_revision()),
        mod_revision: to_revision(kv.mod_revision()),
        version: to_revision(kv.version()),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    })
}

/// The etcd key range `[start, end)` of a prefix (`""`: every key).
fn key_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        // etcd's "from the smallest key to the end".
        return (vec![0], vec![0]);
    }
    let start = prefix.as_bytes().to_vec();
    let mut end = start.clone();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return (start, end);
        }
        end.pop();
    }
    (start, vec![0])
}

#[async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let resp = self
            .read("get", || {
                let mut kv = self.client.kv_client();
                let key = key.to_string();
                async move { kv.get(key, None).await }
            })
            .await?;
        resp.kvs().first().map(|kv| self.convert(kv)).transpose()
    }

    async fn list(&self, prefix: &str) -> StoreResult<ListResult> {
        // A compaction between two pages makes the later pages unreadable at the first page's
        // revision; start again at the new current revision.
        let mut attempts = 0;
        loop {
            match self.list_once(prefix).await {
                Err(StoreError::Compacted { .. }) if attempts < 3 => attempts += 1,
                Err(StoreError::Compacted { .. }) => {
                    return Err(StoreError::Unavailable {
                        op: "list",
                        endpoints: self.endpoints.clone(),
                        detail: format!(
                            "prefix `{prefix}`: compaction overtook paging three times"
                        ),
                    })
                }
                other => return other,
            }
        }
    }

    async fn txn(&self, txn: Txn) -> StoreResult<TxnResult> {
        txn.validate()?;
        let compares: Vec<Compare> = txn
            .compares
            .iter()
            .map(|c| {
                let key = c.key.as_bytes();
                match c.condition {
                    // A missing key compares as version 0 in etcd.
                    Condition::Absent => Compare::version(key, CompareOp::Equal, 0),
                    Condition::Exists => Compare::version(key, CompareOp::Greater, 0),
                    Condition::ModRevision(r) => {
                        Compare::mod_revision(key, CompareOp::Equal, to_etcd_revision(r))
                    }
                }
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => TxnOp::put(
                    key.as_bytes(),
                    value.clone(),
                    lease.map(|l| PutOptions::new().with_lease(l.0)),
                ),
                Op::Delete { key } => TxnOp::delete(key.as_bytes(), None),
                Op::DeletePrefix { prefix } => {
                    let (start, end) = key_range(prefix);
                    TxnOp::delete(start, Some(DeleteOptions::new().with_range(end)))
                }
            })
            .collect();
        // If a compare fails, read the compared keys in the same atomic step: the error can
        // then name the key that failed and what it was, as of the evaluated revision.
        let on_failure: Vec<TxnOp> = txn
            .compares
            .iter()
            .map(|c| TxnOp::get(c.key.as_bytes(), Some(GetOptions::new().with_keys_only())))
            .collect();
        let request = EtcdTxn::new()
            .when(compares)
            .and_then(ops)
            .or_else(on_failure);
        let mut kv = self.client.kv_client();
        let resp = match self.call("txn", kv.txn(request)).await {
            Ok(resp) => resp,
            Err(e) if is_lease_not_found(&e) => {
                let lease = txn.ops.iter().find_map(|op| match op {
                    Op::Put { lease, .. } => *lease,
                    _ => None,
                });
                return Err(match lease {
                    Some(lease) => StoreError::LeaseNotFound { lease },
                    None => e,
                });
            }
            Err(e) => return Err(e),
        };
        let revision = to_revision(header_revision(resp.header()));
        let responses = resp.op_responses();
        if resp.succeeded() {
            let deleted = responses
                .iter()
                .map(|r| match r {
                    TxnOpResponse::Delete(d) => d.deleted().max(0) as u64,
                    _ => 0,
                })
                .sum();
            return Ok(TxnResult { revision, deleted });
        }
        for (compare, response) in txn.compares.iter().zip(&responses) {
            if let TxnOpResponse::Get(found) = response {
                let actual = found.kvs().first().map(|kv| to_revision(kv.mod_revision()));
                if !compare.condition.holds(actual) {
                    return Err(StoreError::Conflict {
                        key: compare.key.clone(),
                        expected: compare.condition,
                        actual,
                    });
                }
            }
        }
        Err(StoreError::Corrupt {
            at: format!("etcd {}", self.endpoints),
            what: format!(
                "transaction response: compares failed at revision {revision} but every \
                 compared key satisfies its condition"
            ),
        })
    }

    async fn current_revision(&self) -> StoreResult<Revision> {
        let resp = self
            .read("current revision", || {
                let mut kv = self.client.kv_client();
                // Any linearizable range answers with the current revision in its header.
                async move {
                    kv.get(vec![0], Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await?;
        Ok(to_revision(header_revision(resp.header())))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch> {
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let task = tokio::spawn(run_watch(
            self.client.clone(),
            self.endpoints.clone(),
            prefix.to_string(),
            after,
            tx,
        ));
        Ok(Watch::new(rx, task))
    }

    async fn compact(&self, revision: Revision) -> StoreResult<()> {
        let mut kv = self.client.kv_client();
        // Physical: return once etcd has removed the history, so that a watch from before
        // `revision` is refused from now on, not at some later moment.
        let options = CompactionOptions::new().with_physical();
        match self
            .call(
                "compact",
                kv.compact(to_etcd_revision(revision), Some(options)),
            )
            .await
        {
            Ok(_) | Err(StoreError::Compacted { .. }) => Ok(()),
            Err(StoreError::InvalidRequest(m)) if m.contains("future revision") => {
                Err(StoreError::InvalidRequest(format!(
                    "cannot compact to revision {revision}: it is past the current revision"
                )))
            }
            Err(e) => Err(e),
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> StoreResult<Lease> {
        let secs = i64::try_from(ttl_seconds(ttl)).unwrap_or(i64::MAX);
        let mut lease = self.client.lease_client();
        let resp = self.call("grant lease", lease.grant(secs, None)).await?;
        Ok(Lease {
            id: LeaseId(resp.id()),
            ttl: Duration::from_secs(resp.ttl().max(0) as u64),
        })
    }

    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<Duration> {
        let result = self
            .read("keep lease alive", || {
                let mut client = self.client.lease_client();
                async move {
                    // The client's keep_alive sends one renewal and checks its answer, but
                    // keeps only the id; a second renewal on the stream tells the TTL.
                    let (mut keeper, mut stream) = client.keep_alive(lease.0).await?;
                    keeper.keep_alive().await?;
                    Ok(stream.message().await?.map_or(0, |r| r.ttl()))
                }
            })
            .await;
        match result {
            Ok(ttl) if ttl > 0 => Ok(Duration::from_secs(ttl as u64)),
            Ok(_) => Err(StoreError::LeaseNotFound { lease }),
            Err(e) if is_lease_not_found(&e) => Err(StoreError::LeaseNotFound { lease }),
            Err(e) => Err(e),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()> {
        let mut client = self.client.lease_client();
        match self.call("revoke lease", client.revoke(lease.0)).await {
            Ok(_) => Ok(()),
            Err(e) if is_lease_not_found(&e) => Err(StoreError::LeaseNotFound { lease }),
            Err(e) => Err(e),
        }
    }
}

/// The watch task: streams events after `after`, re-opening the etcd watch from the last
/// delivered revision whenever the stream breaks, until the receiver is dropped or the
/// history it needs is compacted.
async fn run_watch(
    client: Client,
    endpoints: String,
    prefix: String,
    mut after: Revision,
    tx: mpsc::Sender<StoreResult<Vec<Event>>>,
) {
    let (start, end) = key_range(&prefix);
    let mut pause = WATCH_RETRY_FIRST;
    loop {
        let options = WatchOptions::new()
            .with_range(end.clone())
            .with_start_revision(to_etcd_revision(after + 1));
        let mut watch_client = client.watch_client();
        let opened = tokio::select! {
            _ = tx.closed() => return,
            opened = watch_client.watch(start.clone(), Some(options)) => opened,
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(e) => {
                log::warn!(
                    "dvs-store: watch of `{prefix}` after revision {after} on etcd {endpoints}: \
                     {e}; retrying in {pause:?}"
                );
                if !pause_or_closed(&tx, &mut pause).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                _ = tx.closed() => return,
                message = stream.message() => message,
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    log::warn!(
                        "dvs-store: watch of `{prefix}`: etcd closed the stream; re-opening"
                    );
                    break;
                }
                Err(e) => {
                    log::warn!(
                        "dvs-store: watch of `{prefix}` after revision {after} broke: {e}; \
                         re-opening"
                    );
                    break;
                }
            };
            if resp.compact_revision() > 0 {
                let _ = tx
                    .send(Err(StoreError::Compacted {
                        after,
                        compact_revision: to_revision(resp.compact_revision()),
                    }))
                    .await;
                return;
            }
            if resp.canceled() {
                log::warn!(
                    "dvs-store: etcd cancelled the watch of `{prefix}`: {}; re-opening",
                    resp.cancel_reason()
                );
                break;
            }
            pause = WATCH_RETRY_FIRST;
            if resp.events().is_empty() {
                // The "created" answer (or an empty one). Progress notifications are not
                // requested, and `after` only ever advances past delivered events: etcd 3.4
                // before 3.4.24 could send a watcher still catching up a progress notification
                // at the current revision ahead of its events (etcd #15220, fixed by #15237),
                // and resuming from such a revision would skip those events.
                continue;
            }
            let mut events = Vec::with_capacity(resp.events().len());
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let converted = match event.event_type() {
                    EventType::Put => convert(&endpoints, kv).map(Event::Put),
                    EventType::Delete => convert(&endpoints, kv).map(|kv| Event::Delete {
                        key: kv.key,
                        revision: kv.mod_revision,
                    }),
                };
                match converted {
                    Ok(e) => events.push(e),
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            // etcd never splits one revision's events across responses (we do not ask for
            // fragments), so resuming after the last one repeats and skips nothing.
            if let Some(last) = events.last() {
                after = last.revision();
            }
            if tx.send(Ok(events)).await.is_err() {
                return;
            }
        }
        if !pause_or_closed(&tx, &mut pause).await {
            return;
        }
    }
}

/// Waits the current retry pause (doubling it for next time); false if the watcher left.
async fn pause_or_closed(tx: &mpsc::Sender<StoreResult<Vec<Event>>>, pause: &mut Duration) -> bool {
    let wait = *pause;
    *pause = (*pause * 2).min(WATCH_RETRY_MAX);
    tokio::select! {
        _ = tx.closed() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::key_range;

    #[test]
    fn prefix_ranges() {
        assert_eq!(key_range("/a/"), (b"/a/".to_vec(), b"/a0".to_vec()));
        assert_eq!(key_range(""), (vec![0], vec![0]));
    }
}
