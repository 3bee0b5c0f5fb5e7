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
use api::dvs::{fingerprint_of_json, HostAck, HostStatus, SliceDelta};
use bytes::Bytes;
use dvs_store::{Change, LeaseId, Reflector, Store};
use model::{Cluster, HostSlice, Object, ObjectId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
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
///
/// A slice that a policy change (port groups, security groups) altered is kept as the previous
/// slice plus the delta, and only built whole when some stream needs it whole (an agent that
/// reconnects with another slice): a change reaching 1,000 hosts then costs 1,000 small deltas,
/// not 1,000 slices cut, serialized and fingerprinted (100,000 ports' worth).
#[derive(Debug)]
pub struct CachedSlice {
    /// `api::dvs::fingerprint` of a slice cut whole; chained through
    /// [`SliceDelta::fingerprint_after`] for one made by a delta.
    pub fingerprint: String,
    /// The transaction revision that last changed this slice.
    pub changed_at: u64,
    /// `(fingerprint of the host's previous slice, what changed)`, for a slice made by a delta.
    pub delta: Option<(String, Arc<SliceDelta>)>,
    /// Port groups of the slice, and security groups with a port in it (whose rules it holds):
    /// what a delta may replace.
    port_groups: Arc<BTreeSet<String>>,
    local_security_groups: Arc<BTreeSet<String>>,
    whole: OnceLock<Whole>,
    /// Until built whole: a slice built whole and the deltas since.
    chain: Mutex<Option<Chain>>,
}

/// A slice built whole, and the deltas made on it since, oldest first.
type Chain = (Arc<CachedSlice>, Vec<Arc<SliceDelta>>);

#[derive(Debug)]
pub struct Whole {
    pub slice: HostSlice,
    /// The slice as JSON.
    pub json: Bytes,
}

/// Deltas kept on top of a slice before it is built whole anyway (bounds the work of a
/// reconnect and the deltas kept in memory).
const MAX_CHAIN: usize = 32;

impl CachedSlice {
    pub fn new(slice: HostSlice, changed_at: u64) -> CachedSlice {
        let json = serde_json::to_vec(&slice).unwrap_or_default();
        let port_groups = slice
            .model
            .port_groups
            .iter()
            .map(|g| g.name.clone())
            .collect();
        let local_security_groups = slice
            .model
            .ports
            .iter()
            .filter_map(|p| p.security_group.clone())
            .collect();
        CachedSlice {
            fingerprint: fingerprint_of_json(&json),
            changed_at,
            delta: None,
            port_groups: Arc::new(port_groups),
            local_security_groups: Arc::new(local_security_groups),
            whole: OnceLock::from(Whole {
                slice,
                json: Bytes::from(json),
            }),
            chain: Mutex::new(None),
        }
    }

    /// `prev` with `delta` applied.
    pub fn after(prev: &Arc<CachedSlice>, delta: SliceDelta, changed_at: u64) -> CachedSlice {
        let delta = Arc::new(delta);
        let pending = prev.chain.lock().expect("slice chain").clone();
        let chain = match pending {
            Some((base, mut ds)) if ds.len() < MAX_CHAIN => {
                ds.push(delta.clone());
                (base, ds)
            }
            _ => {
                prev.whole();
                (prev.clone(), vec![delta.clone()])
            }
        };
        CachedSlice {
            fingerprint: delta.fingerprint_after(&prev.fingerprint),
            changed_at,
            delta: Some((prev.fingerprint.clone(), delta)),
            port_groups: prev.port_groups.clone(),
            local_security_groups: prev.local_security_groups.clone(),
            whole: OnceLock::new(),
            chain: Mutex::new(Some(chain)),
        }
    }

    /// The slice built whole (once; a chain is dropped then).
    pub fn whole(&self) -> &Whole {
        self.whole.get_or_init(|| {
            let (base, deltas) = self
                .chain
                .lock()
                .expect("slice chain")
                .take()
                .expect("a slice is whole or has a chain");
            let mut slice = base.whole().slice.clone();
            for d in &deltas {
                // Cut by `delta_for` from this very slice's objects: cannot miss.
                let _ = d.apply(&mut slice);
            }
            let json = Bytes::from(serde_json::to_vec(&slice).unwrap_or_default());
            Whole { slice, json }
        })
    }

    /// What a change of `changed` (port groups and security groups only, see
    /// [`policy_only`]) replaces in this slice, taken from `after`.
    fn delta_for(&self, after: &Cluster, changed: &[ObjectId]) -> SliceDelta {
        let mut d = SliceDelta::default();
        for id in changed {
            match id.kind {
                model::Kind::PortGroup if self.port_groups.contains(&id.id) => {
                    if let Some(g) = after.port_groups.get(&id.id) {
                        d.port_groups.push(model::PortGroup {
                            name: id.id.clone(),
                            ..g.group.clone()
                        });
                    }
                }
                model::Kind::SecurityGroup if self.local_security_groups.contains(&id.id) => {
                    if let Some(g) = after.security_groups.get(&id.id) {
                        d.security_groups.push(model::SecurityGroup {
                            name: id.id.clone(),
                            rules: g.rules.clone(),
                            allow_router_advertisements: g.allow_router_advertisements,
                        });
                    }
                }
                _ => {}
            }
        }
        d
    }
}

/// The remote groups a security group's rules name.
fn remotes(g: &model::SecurityGroup) -> BTreeSet<&str> {
    g.rules
        .iter()
        .filter_map(|r| match &r.remote {
            Some(model::Remote::Group(n)) => Some(n.as_str()),
            _ => None,
        })
        .collect()
}

/// Whether an update only changed port groups and security groups that exist before and after,
/// without changing which remote groups a security group names: then every slice changes only
/// in those objects (their placement and the remote-member lists stay as they were), and a
/// delta describes it exactly.
pub fn policy_only(before: &Cluster, after: &Cluster, changed: &[ObjectId]) -> bool {
    changed.iter().all(|id| match id.kind {
        model::Kind::PortGroup => {
            before.port_groups.contains_key(&id.id) && after.port_groups.contains_key(&id.id)
        }
        model::Kind::SecurityGroup => {
            match (
                before.security_groups.get(&id.id),
                after.security_groups.get(&id.id),
            ) {
                (Some(b), Some(a)) => remotes(b) == remotes(a),
                _ => false,
            }
        }
        _ => false,
    })
}

impl Snapshot {
    /// `host`'s slice (`None` for an unknown host); computed here if the cache lacks it, which
    /// only a snapshot built by hand does.
    pub fn slice(&self, host: &str) -> Option<Arc<CachedSlice>> {
        if let Some(c) = self.slices.get(host) {
            return Some(c.clone());
        }
        self.cluster.hosts.contains_key(host).then(|| {
            Arc::new(CachedSlice::new(
                self.cluster.host_slice(host),
                self.txn_revision,
            ))
        })
    }
}

fn tokens_of(c: &Cluster) -> HashMap<String, String> {
    c.hosts
        .values()
        .filter_map(|h| Some((h.token_sha256.clone()?, h.name.clone())))
        .collect()
}

/// One host's reported status and the lease it is held under: its last full report and its
/// last acknowledgement of a policy delta ([`HostAck`], its own key), the later of the two
/// giving the revision the host runs.
#[derive(Debug, Clone, Default)]
pub struct Reported {
    pub lease: Option<LeaseId>,
    full: Option<Arc<Stored<HostStatus>>>,
    ack: Option<Arc<Stored<HostAck>>>,
}

/// One of a host's status keys as stored: decoded, raw (to skip rewriting an unchanged one), and
/// the revision that wrote it (which of the two is newer).
#[derive(Debug)]
struct Stored<T> {
    value: T,
    raw: Vec<u8>,
    mod_revision: u64,
}

impl<T: serde::de::DeserializeOwned> Stored<T> {
    fn decode(kv: &dvs_store::KeyValue) -> Option<Arc<Stored<T>>> {
        let value = serde_json::from_slice(&kv.value).ok()?;
        Some(Arc::new(Stored {
            value,
            raw: kv.value.clone(),
            mod_revision: kv.mod_revision,
        }))
    }
}

impl Reported {
    /// A host's entry from its stored keys; `None` when neither decodes.
    fn new(full: Option<&dvs_store::KeyValue>, ack: Option<&dvs_store::KeyValue>) -> Option<Self> {
        Reported::default()
            .with(full.map(|kv| (kv, false)))?
            .with(ack.map(|kv| (kv, true)))
    }

    /// This entry with one key written (`Some((kv, is_ack))`); `None` when nothing is left.
    fn with(mut self, put: Option<(&dvs_store::KeyValue, bool)>) -> Option<Self> {
        if let Some((kv, is_ack)) = put {
            self.lease = kv.lease;
            if is_ack {
                self.ack = Stored::decode(kv);
            } else {
                self.full = Stored::decode(kv);
            }
        }
        (self.full.is_some() || self.ack.is_some()).then_some(self)
    }

    /// The ack, if it is newer than the full report.
    fn current_ack(&self) -> Option<&HostAck> {
        let a = self.ack.as_ref()?;
        match &self.full {
            Some(f)
                if (f.mod_revision, f.value.applied_revision)
                    >= (a.mod_revision, a.value.applied_revision) =>
            {
                None
            }
            _ => Some(&a.value),
        }
    }

    pub fn applied_revision(&self) -> u64 {
        match (self.current_ack(), &self.full) {
            (Some(a), _) => a.applied_revision,
            (None, Some(f)) => f.value.applied_revision,
            (None, None) => 0,
        }
    }

    pub fn fingerprint(&self) -> &str {
        match (self.current_ack(), &self.full) {
            (Some(a), _) => &a.fingerprint,
            (None, Some(f)) => &f.value.fingerprint,
            (None, None) => "",
        }
    }

    pub fn error(&self) -> Option<&str> {
        match (self.current_ack(), &self.full) {
            (Some(a), _) => a.error.as_deref(),
            (None, Some(f)) => f.value.error.as_deref(),
            (None, None) => None,
        }
    }

    /// The status as one report: the full one, with the ack's revision, fingerprint and error
    /// if the ack is newer.
    pub fn status(&self) -> HostStatus {
        let mut s = self
            .full
            .as_ref()
            .map(|f| f.value.clone())
            .unwrap_or(HostStatus {
                applied_revision: 0,
                fingerprint: String::new(),
                ports: vec![],
                error: None,
                agent: String::new(),
            });
        if let Some(a) = self.current_ack() {
            s.applied_revision = a.applied_revision;
            s.fingerprint = a.fingerprint.clone();
            s.error = a.error.clone();
        }
        s
    }

    pub fn has_full(&self) -> bool {
        self.full.is_some()
    }

    /// Whether writing `raw` as the full report would change nothing.
    pub fn full_is(&self, raw: &[u8]) -> bool {
        self.full.as_ref().is_some_and(|f| f.raw == raw) && self.current_ack().is_none()
    }

    /// Whether writing `raw` as the ack would change nothing.
    pub fn ack_is(&self, raw: &[u8]) -> bool {
        self.ack.as_ref().is_some_and(|a| a.raw == raw) && self.current_ack().is_some()
    }
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

/// What the cache could not use or reach (it retries or ignores, and says so).
fn log(msg: impl AsRef<str>) {
    tracing::warn!(target: "dvs-controller", "{}", msg.as_ref());
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
        // A policy change: each affected slice is the previous one and a delta. Otherwise (and
        // for hosts without a slice yet) the affected slices are cut afresh.
        let mut cut: Vec<&str> = vec![];
        if !update.resync && policy_only(&prev.cluster, &next.cluster, &changed) {
            for h in &next.affected {
                match prev.slices.get(h) {
                    Some(c) => {
                        let d = c.delta_for(&next.cluster, &changed);
                        if !d.is_empty() {
                            let c = Arc::new(CachedSlice::after(c, d, txn_revision));
                            next.slices.insert(h.clone(), c);
                        }
                    }
                    None => cut.push(h),
                }
            }
        } else {
            cut.extend(next.affected.iter().map(String::as_str));
        }
        let fresh = next.cluster.host_slices(cut.iter().copied());
        for h in &cut {
            if !fresh.contains_key(*h) {
                // Removed hosts.
                next.slices.remove(*h);
            }
        }
        for (h, slice) in fresh {
            next.slices
                .insert(h, Arc::new(CachedSlice::new(slice, txn_revision)));
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
        let changed: StatusChange = if update.resync {
            None
        } else {
            let hosts: BTreeSet<&str> = update
                .changes
                .iter()
                .filter_map(|c| keys::parse_status(c.key()).map(|(h, _)| h))
                .collect();
            Some(Arc::new(hosts.into_iter().map(str::to_owned).collect()))
        };
        let m = if update.resync {
            let mut keys_of: BTreeMap<&str, [Option<&dvs_store::KeyValue>; 2]> = BTreeMap::new();
            for (k, kv) in r.items() {
                if let Some((host, is_ack)) = keys::parse_status(k) {
                    keys_of.entry(host).or_default()[is_ack as usize] = Some(kv);
                }
            }
            let mut m = StatusMap::new();
            for (host, [full, ack]) in keys_of {
                if let Some(rep) = Reported::new(full, ack) {
                    m.insert(host.to_owned(), Arc::new(rep));
                }
            }
            m
        } else {
            let mut m = StatusMap::clone(&tx.borrow());
            for c in &update.changes {
                let Some((host, is_ack)) = keys::parse_status(c.key()) else {
                    continue;
                };
                let mut rep = m.get(host).map(|r| Reported::clone(r)).unwrap_or_default();
                let rep = match c {
                    Change::Put { kv, .. } => rep.with(Some((kv, is_ack))),
                    Change::Delete { .. } => {
                        if is_ack {
                            rep.ack = None;
                        } else {
                            rep.full = None;
                        }
                        rep.with(None)
                    }
                };
                match rep {
                    Some(rep) => m.insert(host.to_owned(), Arc::new(rep)),
                    None => m.remove(host),
                }
            }
            m
        };
        let _ = tx.send(Arc::new(m));
        let _ = changes.send(changed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::cluster::{Dvs, DvsPort, DvsPortGroup, Host};
    use model::{Direction, EtherType, Kind, Mac, Port, PortGroup, Protocol, Remote, SgRule};

    fn cluster() -> Cluster {
        let mut c = Cluster::default();
        c.insert(Object::Dvs(Dvs {
            name: "prod".into(),
            vlans: vec!["100-199".parse().unwrap()],
        }));
        let mut db = model::SecurityGroup::default_group("db");
        db.rules.push(SgRule {
            direction: Direction::Ingress,
            ethertype: EtherType::IPv4,
            protocol: Protocol::Tcp,
            port_min: Some(5432),
            port_max: Some(5432),
            icmp_type: None,
            icmp_code: None,
            remote: Some(Remote::Group("web".into())),
        });
        c.insert(Object::SecurityGroup(db));
        c.insert(Object::SecurityGroup(model::SecurityGroup::default_group(
            "web",
        )));
        for (g, vlan) in [("web", 100), ("db", 101)] {
            c.insert(Object::PortGroup(DvsPortGroup {
                dvs: "prod".into(),
                group: PortGroup::access(g, vlan),
            }));
        }
        for (i, (name, g, host)) in [
            ("web1", "web", "a"),
            ("web2", "web", "b"),
            ("db1", "db", "b"),
        ]
        .into_iter()
        .enumerate()
        {
            c.insert(Object::Host(Host {
                name: host.into(),
                vhost_dir: None,
                token_sha256: None,
            }));
            c.insert(Object::Port(DvsPort {
                dvs: "prod".into(),
                port: Port {
                    storm_control: None,
                    name: name.into(),
                    mac: Mac([2, 0, 0, 0, 0, i as u8 + 1]),
                    ips: vec![format!("10.0.0.{}", i + 1).parse().unwrap()],
                    port_group: g.into(),
                    security_group: Some(g.into()),
                },
                host: Some(host.into()),
                vhost: None,
                ethdev: None,
            }));
        }
        c.validate().unwrap();
        c
    }

    /// A policy change made as deltas gives every host the slice it would get cut afresh, for
    /// a long run of changes (past the chain's bound), and the agent's side of a delta (apply it,
    /// chain the fingerprint) arrives at the same slice and fingerprint.
    #[test]
    fn slices_made_by_deltas_are_the_slices_cut_afresh() {
        let mut c = cluster();
        let mut slices: BTreeMap<String, Arc<CachedSlice>> = c
            .host_slices(["a", "b"])
            .into_iter()
            .map(|(h, s)| (h, Arc::new(CachedSlice::new(s, 1))))
            .collect();
        // What each host's agent runs: slice and fingerprint.
        let mut agents: BTreeMap<String, (HostSlice, String)> = slices
            .iter()
            .map(|(h, s)| (h.clone(), (s.whole().slice.clone(), s.fingerprint.clone())))
            .collect();
        for round in 0..(2 * MAX_CHAIN as u16 + 3) {
            let before = c.clone();
            let changed = if round % 2 == 0 {
                let mut g = before.port_groups.get("prod/db").unwrap().clone();
                g.group.dhcp_isolation = !g.group.dhcp_isolation;
                c.insert(Object::PortGroup(g));
                vec![ObjectId::new(Kind::PortGroup, "prod/db")]
            } else {
                let mut g = before.security_groups.get("db").unwrap().clone();
                g.rules[2].port_max = Some(5432 + round);
                c.insert(Object::SecurityGroup(g));
                vec![ObjectId::new(Kind::SecurityGroup, "db")]
            };
            assert!(policy_only(&before, &c, &changed));
            for h in Cluster::affected_hosts(&before, &c, &changed) {
                let prev = slices[&h].clone();
                let d = prev.delta_for(&c, &changed);
                assert!(!d.is_empty(), "round {round}: host {h} is affected");
                let next = Arc::new(CachedSlice::after(&prev, d.clone(), round as u64 + 2));
                let (slice, fp) = agents.get_mut(&h).unwrap();
                assert_eq!(*fp, prev.fingerprint);
                d.apply(slice).unwrap();
                *fp = d.fingerprint_after(fp);
                assert_eq!(*fp, next.fingerprint, "round {round}, host {h}");
                slices.insert(h, next);
            }
            for (h, s) in &slices {
                let fresh = c.host_slice(h);
                assert_eq!(agents[h].0, fresh, "round {round}: agent of {h}");
                // Build every other round's slice whole, so that both a chain and a slice
                // built whole are extended.
                if round % 3 == 0 {
                    assert_eq!(s.whole().slice, fresh, "round {round}: host {h}");
                }
            }
        }
        // Host a has no db port: it never got a delta, and its slice is unchanged.
        assert_eq!(slices["a"].changed_at, 1);
        // A change of which groups a rule names is not a policy-only change.
        let before = c.clone();
        let mut g = before.security_groups.get("db").unwrap().clone();
        g.rules[2].remote = None;
        c.insert(Object::SecurityGroup(g));
        assert!(!policy_only(
            &before,
            &c,
            &[ObjectId::new(Kind::SecurityGroup, "db")]
        ));
    }
}
