//! The switch as the dataplane sees it: a control-side [`Switch`] handle and one [`Worker`] per
//! forwarding thread.
//!
//! Per packet, [`Worker::process_burst`] does: parse → for each segment: exact-match cache, else
//! walk the tables ([`Pipeline::walk`]) and cache the result → run the segment's dynamic end
//! (conntrack, MAC learning, flood, output) → egress segments per output port → emits.
//! The forwarding side never takes a lock: it reads the current [`Pipeline`] through an
//! `ArcSwap` once per burst, and the MAC table and conntrack are built for concurrent use.

use crate::compiler::Compiler;
use crate::conntrack::{ConnTrack, CtConfig};
use crate::key::{ct, FlowKey};
use crate::mac_learning::{LearnOutcome, MacConfig, MacTable};
use crate::meter::{Meter, Verdict};
use crate::parse::parse_into;
use crate::pipeline::{Pipeline, Segment, Terminal};
use crate::trace::{self, Trace};
use crate::verdict::{BurstResult, DropReason, Emit, PacketResult, VlanEdit};
use crate::wire::Layout;
use arc_swap::ArcSwap;
use model::Mac;
use model::{Model, ModelError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Port ids are below this bound, so per-port counters are plain arrays.
pub const MAX_PORTS: usize = 4096;

/// Switch-wide settings that are not part of the operator's port model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchConfig {
    /// Seconds a learned MAC stays without traffic.
    pub mac_aging_secs: u64,
    /// Most MACs one port may have learned (0: no limit).
    pub mac_limit_per_port: u32,
    /// Capacity of the MAC table.
    pub mac_capacity: usize,
    /// Most tracked connections (all zones together).
    pub ct_max_entries: usize,
    /// Entries of each worker's exact-match cache (rounded up to a power of two).
    pub emc_entries: usize,
    /// Entries of each worker's wildcarded cache (rounded up to a power of two; 0 disables it).
    pub megaflow_entries: usize,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            mac_aging_secs: 300,
            mac_limit_per_port: 1024,
            mac_capacity: 65536,
            ct_max_entries: 1 << 20,
            emc_entries: 32768,
            megaflow_entries: 32768,
        }
    }
}

/// State shared by the control side and all workers.
pub struct Shared {
    pub cfg: SwitchConfig,
    pub pipeline: ArcSwap<Pipeline>,
    pub mac: MacTable,
    pub ct: ConnTrack,
}

/// Control-side handle; cheap to clone, shared with the control socket and the forwarding threads.
#[derive(Clone)]
pub struct Switch {
    shared: Arc<Shared>,
    control: Arc<Mutex<Compiler>>,
    /// The version before the current one, kept alive by the control side so that the last
    /// reference to an old version is never dropped by a forwarding thread (freeing tables of
    /// thousands of rules there would stall it). Dropped at the next update, long after readers
    /// have moved on.
    retired: Arc<Mutex<Option<Arc<Pipeline>>>>,
}

impl Switch {
    pub fn new(cfg: SwitchConfig, model: Model) -> Result<Switch, ModelError> {
        let mac = MacTable::new(MacConfig {
            capacity: cfg.mac_capacity,
            aging_ns: cfg.mac_aging_secs.saturating_mul(1_000_000_000),
            per_port_limit: cfg.mac_limit_per_port,
        });
        let ct = ConnTrack::new(CtConfig {
            max_entries: cfg.ct_max_entries,
            ..CtConfig::default()
        });
        let sw = Switch {
            shared: Arc::new(Shared {
                cfg,
                pipeline: ArcSwap::from_pointee(Pipeline::default()),
                mac,
                ct,
            }),
            control: Arc::new(Mutex::new(Compiler::new())),
            retired: Arc::new(Mutex::new(None)),
        };
        sw.apply(model)?;
        Ok(sw)
    }

    /// Validates `model`, compiles what changed and publishes the new tables atomically:
    /// forwarding threads see the old or the new version, never a mix. On error nothing changes.
    pub fn apply(&self, model: Model) -> Result<ApplyReport, ModelError> {
        let mut c = self.control.lock().unwrap();
        let report = c.update(&model)?;
        let p = c.pipeline();
        // Static MAC entries for bound ports, so a spoofer cannot steal a guest's MAC by learning.
        for (&id, info) in &p.ports {
            if let Some(mac) = c.bound_mac(&info.name) {
                for &d in c.domains_of(id).iter() {
                    self.shared.mac.set_static(d, mac, id);
                }
            }
        }
        for (d, mac) in &report.unbound_macs {
            self.shared.mac.remove_static(*d, *mac);
        }
        for id in &report.removed_ports {
            self.shared.mac.flush_port(*id);
        }
        let old = self.shared.pipeline.swap(Arc::new(p));
        // The version retired last time is surely unused by now: free it here, not in a reader.
        drop(self.retired.lock().unwrap().replace(old));
        // Connections a removed rule allowed are cut too (a documented choice): re-check each
        // connection of the affected zones against the new tables.
        if !report.sg_changed_zones.is_empty() {
            let pl = self.shared.pipeline.load();
            let zones = &report.sg_changed_zones;
            self.shared
                .ct
                .retain(|e| !zones.contains(&e.zone) || c.connection_allowed(&pl, e));
        }
        Ok(report)
    }

    pub fn model(&self) -> Model {
        self.control.lock().unwrap().model().clone()
    }

    /// The numeric id of a port or uplink, stable across `apply`.
    pub fn port_id(&self, name: &str) -> Option<u32> {
        self.control.lock().unwrap().port_id(name)
    }

    /// The current tables (for dumps and tests).
    pub fn pipeline(&self) -> Arc<Pipeline> {
        self.shared.pipeline.load_full()
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn worker(&self) -> Worker {
        Worker::new(self.shared.clone())
    }

    /// Explains what the switch does with `frame` arriving on port `in_port` (a name), without
    /// changing any state.
    pub fn trace(&self, in_port: &str, frame: &[u8], now_ns: u64) -> Result<Trace, String> {
        let id = self
            .port_id(in_port)
            .ok_or_else(|| format!("unknown port {in_port:?}"))?;
        Ok(trace::trace(&self.shared, id, frame, now_ns))
    }

    /// Every table, rule by rule, in the style of `ovs-ofctl dump-flows`.
    pub fn dump_tables(&self) -> String {
        use std::fmt::Write;
        let pl = self.pipeline();
        let mut out = format!("pipeline version {}\n", pl.version);
        for (i, t) in pl.tables.iter().enumerate() {
            if t.is_empty() {
                continue;
            }
            let name = pl.table_names.get(i).copied().unwrap_or("");
            let _ = writeln!(
                out,
                "table {i} ({name}): {} rules, {} masks",
                t.len(),
                t.subtable_count()
            );
            let mut rules: Vec<_> = t.rules().collect();
            rules.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
            for r in rules {
                let acts: Vec<String> = r.actions.iter().map(|a| a.to_string()).collect();
                let _ = writeln!(
                    out,
                    "  priority={} {} actions={}  # {}",
                    r.priority,
                    crate::matcher::describe(&r.m),
                    acts.join(","),
                    r.note
                );
            }
        }
        out
    }

    /// The MAC table, with port names.
    pub fn mac_entries(&self, now_ns: u64) -> Vec<(String, crate::mac_learning::MacEntry)> {
        let pl = self.pipeline();
        self.shared
            .mac
            .dump(now_ns)
            .into_iter()
            .map(|e| (pl.port_name(e.port), e))
            .collect()
    }

    /// Up to `limit` tracked connections, with the name of the port whose zone holds each.
    pub fn connections(
        &self,
        limit: usize,
        now_ns: u64,
    ) -> Vec<(String, crate::conntrack::CtEntryInfo)> {
        let pl = self.pipeline();
        self.shared
            .ct
            .dump_at(limit, now_ns)
            .into_iter()
            .map(|e| (pl.port_name(e.zone as u32), e))
            .collect()
    }

    /// Periodic housekeeping: ages MACs and expires connections. Call about once a second.
    pub fn housekeeping(&self, now_ns: u64) {
        self.shared.mac.age(now_ns);
        self.shared.ct.expire(now_ns);
    }
}

/// What an `apply` changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub rules_added: usize,
    pub rules_removed: usize,
    pub owners_recompiled: usize,
    pub removed_ports: Vec<u32>,
    pub unbound_macs: Vec<(u32, Mac)>,
    /// Conntrack zones whose security-group rules changed.
    pub sg_changed_zones: Vec<u16>,
}

/// Counters of one port as seen by one worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortCounters {
    /// Drops decided while the packet came in through this port.
    pub rx_drops: [u64; DropReason::COUNT],
    /// Copies for this port dropped by its egress policy.
    pub tx_drops: [u64; DropReason::COUNT],
}

#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    pub packets: u64,
    /// Segment lookups answered by the exact-match cache.
    pub emc_hits: u64,
    /// Segment lookups the exact-match cache missed (answered by the megaflow cache or a walk).
    pub emc_misses: u64,
    /// Of `emc_misses`, those the megaflow cache answered.
    pub megaflow_hits: u64,
    pub ports: Vec<PortCounters>,
}

#[derive(Clone, Copy)]
struct EmcEntry {
    hash: u64,
    /// Table version the segment was computed from; 0 marks an empty slot (published versions
    /// start at 1).
    version: u64,
    /// Unique per inserted entry (see [`Emc::next_uid`]).
    uid: u64,
    key: FlowKey,
    seg: Segment,
    /// What followed this segment last time, up to [`CHAIN`] steps: each step is the dynamic
    /// outcome that led on (a `ct_state` after conntrack, an output port after the MAC table)
    /// and the segment it led to. The key of that next segment is a function of this entry's key
    /// and the outcomes, so a step is exact for as long as the entry is (same key, same version)
    /// and the outcomes repeat: the dynamic steps still run for every packet, and only when they
    /// give the same outcomes is the cached segment used. Step `i + 1` belongs to step `i`:
    /// rewriting a step clears the ones after it.
    chain: [(u32, Segment); CHAIN],
}

/// Steps of [`EmcEntry::chain`]: enough for a packet's whole path with one lookup when one side
/// has a stateful security group (ingress → conntrack → L2 → egress, or ingress → L2 → egress →
/// conntrack → emit).
const CHAIN: usize = 2;
const NO_OUTCOME: u32 = u32::MAX;

const EMPTY_SEGMENT: Segment = Segment {
    set_reg0: None,
    meters: [0; 2],
    n_meters: 0,
    terminal: Terminal::Drop(DropReason::NoMatch),
};

/// Where the segment [`Worker::segment`] just returned lives in the exact-match cache: (slot
/// index, entry uid).
type EmcSlot = Option<(usize, u64)>;

/// One packet's position along the chain of the exact-match entry its path started from.
#[derive(Default, Clone, Copy)]
struct Cursor {
    origin: EmcSlot,
    depth: usize,
}

const EMC_WAYS: usize = 2;

/// Per-thread exact-match cache: 2-way set-associative, keyed by the whole flow key (metadata
/// included), entries valid only for the table version they were computed from.
struct Emc {
    sets: Vec<[EmcEntry; EMC_WAYS]>,
    mask: usize,
    /// Number of the next entry inserted; never reused, so (slot, uid) names one entry exactly.
    next_uid: u64,
}

impl Emc {
    fn new(n: usize) -> Emc {
        let sets = (n / EMC_WAYS).max(8).next_power_of_two();
        let empty = EmcEntry {
            hash: 0,
            version: 0,
            uid: 0,
            key: FlowKey::ZERO,
            seg: EMPTY_SEGMENT,
            chain: [(NO_OUTCOME, EMPTY_SEGMENT); CHAIN],
        };
        Emc {
            sets: vec![[empty; EMC_WAYS]; sets],
            mask: sets - 1,
            next_uid: 0,
        }
    }
    /// The segment and its slot (set × ways + way).
    #[inline]
    fn lookup(&self, k: &FlowKey, h: u64, version: u64) -> Option<(Segment, (usize, u64))> {
        let si = h as usize & self.mask;
        for (w, e) in self.sets[si].iter().enumerate() {
            // The hash and version reject almost every non-matching entry before the key compare.
            if e.hash == h && e.version == version && key_eq(&e.key, k) {
                return Some((e.seg, (si * EMC_WAYS + w, e.uid)));
            }
        }
        None
    }
    /// Inserts in way 0, moving the previous way-0 entry to way 1 (so the older of the two goes);
    /// returns the slot.
    #[inline]
    fn insert(&mut self, k: FlowKey, h: u64, version: u64, seg: Segment) -> (usize, u64) {
        let si = h as usize & self.mask;
        self.next_uid += 1;
        let uid = self.next_uid;
        let set = &mut self.sets[si];
        set[1] = set[0];
        set[0] = EmcEntry {
            hash: h,
            version,
            uid,
            key: k,
            seg,
            chain: [(NO_OUTCOME, EMPTY_SEGMENT); CHAIN],
        };
        (si * EMC_WAYS, uid)
    }
    #[inline]
    fn slot(&mut self, (slot, uid): (usize, u64), version: u64) -> Option<&mut EmcEntry> {
        let e = &mut self.sets[slot / EMC_WAYS][slot % EMC_WAYS];
        (e.uid == uid && e.version == version).then_some(e)
    }
}

#[derive(Clone, Copy)]
struct MegaflowEntry {
    hash: u64,
    /// As in [`EmcEntry`]: 0 marks an empty slot.
    version: u64,
    /// Index of the mask in [`Megaflow::masks`].
    mask: u32,
    /// The key under that mask.
    key: FlowKey,
    seg: Segment,
}

/// Most distinct masks per worker; a walk whose mask would be one more is not cached here.
const MEGAFLOW_MASKS: usize = 64;
/// Stages (table ids) that start segments and have their own mask lists.
const MEGAFLOW_STAGES: usize = 16;

/// Per-thread wildcarded cache, in the spirit of Open vSwitch's megaflows: an entry holds a
/// segment for every key that agrees with the one that was walked on the bits the walk looked at
/// ([`Pipeline::walk_wc`]). Flows that differ only in fields no table consulted (L4 ports through
/// an L2 switch, say) share one entry, so many flows cost one walk, where the exact-match cache
/// would need an entry each. Lookup probes the masks seen for the key's stage, most recently
/// added last; entries are valid only for the table version they were computed from, and a new
/// version starts with no masks.
struct Megaflow {
    version: u64,
    masks: Vec<FlowKey>,
    /// Stage → indices into `masks`.
    by_stage: [Vec<u8>; MEGAFLOW_STAGES],
    sets: Vec<[MegaflowEntry; EMC_WAYS]>,
    mask: usize,
}

impl Megaflow {
    fn new(n: usize) -> Megaflow {
        let sets = if n == 0 {
            0
        } else {
            (n / EMC_WAYS).max(8).next_power_of_two()
        };
        let empty = MegaflowEntry {
            hash: 0,
            version: 0,
            mask: 0,
            key: FlowKey::ZERO,
            seg: EMPTY_SEGMENT,
        };
        Megaflow {
            version: 0,
            masks: Vec::with_capacity(MEGAFLOW_MASKS),
            by_stage: Default::default(),
            sets: vec![[empty; EMC_WAYS]; sets],
            mask: sets.wrapping_sub(1),
        }
    }

    #[inline(always)]
    fn hash(masked: &FlowKey, mask: usize) -> u64 {
        masked.hash64() ^ (mask as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[inline]
    fn lookup(&mut self, k: &FlowKey, version: u64) -> Option<Segment> {
        if self.version != version {
            self.version = version;
            self.masks.clear();
            self.by_stage.iter_mut().for_each(Vec::clear);
            return None;
        }
        let stage = k.stage() as usize;
        let list = self.by_stage.get_mut(stage)?;
        for (i, &mi) in list.iter().enumerate() {
            let mk = k.masked(&self.masks[mi as usize]);
            let h = Megaflow::hash(&mk, mi as usize);
            let set = &self.sets[h as usize & self.mask];
            for e in set {
                if e.hash == h && e.version == version && e.mask == mi as u32 && key_eq(&e.key, &mk)
                {
                    // Masks that hit often drift to the front of their stage's list.
                    if i > 0 {
                        list.swap(i, i - 1);
                    }
                    return Some(e.seg);
                }
            }
        }
        None
    }

    fn insert(&mut self, k: &FlowKey, wc: &FlowKey, version: u64, seg: Segment) {
        let stage = k.stage() as usize;
        if self.sets.is_empty() || stage >= MEGAFLOW_STAGES || self.version != version {
            return;
        }
        let mi = match self.masks.iter().position(|m| m == wc) {
            Some(i) => i,
            None if self.masks.len() < MEGAFLOW_MASKS => {
                self.masks.push(*wc);
                self.masks.len() - 1
            }
            None => return,
        };
        if !self.by_stage[stage].contains(&(mi as u8)) {
            self.by_stage[stage].push(mi as u8);
        }
        let mk = k.masked(wc);
        let h = Megaflow::hash(&mk, mi);
        let set = &mut self.sets[h as usize & self.mask];
        set[1] = set[0];
        set[0] = MegaflowEntry {
            hash: h,
            version,
            mask: mi as u32,
            key: mk,
            seg,
        };
    }
}

/// An exact-match cache entry is made for one megaflow hit in this many, so that a flood of
/// short flows does not keep rewriting the exact-match cache (Open vSwitch's
/// `emc-insert-inv-prob` idea).
const EMC_INSERT_EVERY: u32 = 8;

/// The key the egress tables see for a copy of `key` towards `port`.
#[inline(always)]
fn egress_key(pl: &Pipeline, key: &FlowKey, port: u32) -> FlowKey {
    let mut k = *key;
    k.set_out_port(port);
    k.set_stage(pl.egress_table);
    k.set_ct_state(0);
    k
}

#[inline(always)]
fn key_eq(a: &FlowKey, b: &FlowKey) -> bool {
    let mut d = 0;
    for i in 0..crate::key::KEY_WORDS {
        d |= a.0[i] ^ b.0[i];
    }
    d == 0
}

const RECENT_SLOTS: usize = 256;
/// How often a steady source refreshes its shared MAC-table entry.
pub const RELEARN_NS: u64 = 100_000_000;

/// Per-forwarding-thread state: the cache, this thread's meters and counters. `Send`, not shared.
pub struct Worker {
    shared: Arc<Shared>,
    emc: Emc,
    megaflow: Megaflow,
    emc_insert_tick: u32,
    /// Sources this worker learned lately: (VLAN domain << 48 | MAC, port, time). A source seen
    /// again on the same port within [`RELEARN_NS`] skips the shared MAC table, whose entries live
    /// for minutes; a move to another port is always learned at once.
    recent: Vec<(u64, u32, u64)>,
    meters: BTreeMap<u32, Meter>,
    meter_version: u64,
    stats: WorkerStats,
}

/// Everything one packet's processing needs besides the worker.
struct Ctx<'a> {
    pl: &'a Pipeline,
    frame: &'a [u8],
    layout: Layout,
    now: u64,
    in_port: u32,
    first_drop: Option<DropReason>,
    /// A meter passed the packet above its port's average rate.
    excess: bool,
}

impl Worker {
    fn new(shared: Arc<Shared>) -> Worker {
        let emc = Emc::new(shared.cfg.emc_entries);
        let megaflow = Megaflow::new(shared.cfg.megaflow_entries);
        Worker {
            shared,
            emc,
            megaflow,
            emc_insert_tick: 0,
            recent: vec![(u64::MAX, 0, 0); RECENT_SLOTS],
            meters: BTreeMap::new(),
            meter_version: u64::MAX,
            stats: WorkerStats {
                ports: vec![PortCounters::default(); MAX_PORTS],
                ..Default::default()
            },
        }
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Decides the fate of every frame of a burst received on `in_port`; `now_ns` is a
    /// monotonic clock (conntrack and MAC timeouts, meters).
    pub fn process_burst(
        &mut self,
        in_port: u32,
        frames: &[&[u8]],
        now_ns: u64,
        out: &mut BurstResult,
    ) {
        out.clear();
        let pl = self.shared.pipeline.load();
        // One lookup per burst: every packet of it comes from the same port.
        out.priority = pl
            .meters
            .get(&in_port)
            .map(|m| m.priority)
            .unwrap_or_default();
        if pl.version != self.meter_version {
            self.sync_meters(&pl, now_ns);
        }
        let port = (in_port as usize).min(MAX_PORTS - 1);
        for frame in frames {
            let start = out.emits.len() as u32;
            let mut key = FlowKey::ZERO;
            let layout = parse_into(in_port, frame, &mut key);
            let mut cx = Ctx {
                pl: &pl,
                frame,
                layout,
                now: now_ns,
                in_port,
                first_drop: None,
                excess: false,
            };
            if key.is_invalid() {
                cx.first_drop = Some(DropReason::Malformed);
            } else {
                self.run(&mut cx, key, false, out);
            }
            let n = out.emits.len() as u32 - start;
            let drop = if n == 0 {
                Some(cx.first_drop.unwrap_or(DropReason::Loop))
            } else {
                None
            };
            if let Some(r) = drop {
                self.stats.ports[port].rx_drops[r as usize] += 1;
            }
            out.packets.push(PacketResult {
                emit_start: start,
                emit_len: n,
                drop,
                excess: cx.excess,
                layout,
            });
        }
        self.stats.packets += frames.len() as u64;
    }

    fn sync_meters(&mut self, pl: &Pipeline, now: u64) {
        self.meters.retain(|id, _| pl.meters.contains_key(id));
        for (id, cfg) in &pl.meters {
            match self.meters.get_mut(id) {
                Some(m) => m.reconfigure(*cfg, now),
                None => {
                    self.meters
                        .insert(*id, Meter::new(*cfg, 1_000_000_000, now));
                }
            }
        }
        self.meter_version = pl.version;
    }

    /// The segment for `k`: exact-match cache, else megaflow cache, else a walk of the tables
    /// (whose result goes into both caches). Also says where the segment sits in the exact-match
    /// cache, if it does.
    #[inline]
    fn segment(&mut self, pl: &Pipeline, k: &FlowKey) -> (Segment, EmcSlot) {
        let h = k.hash64();
        if let Some((s, slot)) = self.emc.lookup(k, h, pl.version) {
            self.stats.emc_hits += 1;
            return (s, Some(slot));
        }
        self.stats.emc_misses += 1;
        if let Some(s) = self.megaflow.lookup(k, pl.version) {
            self.stats.megaflow_hits += 1;
            self.emc_insert_tick = self.emc_insert_tick.wrapping_add(1);
            if self.emc_insert_tick.is_multiple_of(EMC_INSERT_EVERY) {
                let slot = self.emc.insert(*k, h, pl.version, s);
                return (s, Some(slot));
            }
            return (s, None);
        }
        let mut wc = FlowKey::ZERO;
        let s = pl.walk_wc(k, &mut wc);
        self.megaflow.insert(k, &wc, pl.version, s);
        let slot = self.emc.insert(*k, h, pl.version, s);
        (s, Some(slot))
    }

    /// Runs segments from `key` until the packet is emitted or dropped. `egress` is true once an
    /// output port is chosen (key.out_port set).
    #[inline]
    fn run(&mut self, cx: &mut Ctx, key: FlowKey, egress: bool, out: &mut BurstResult) {
        self.run_from(cx, key, egress, out, None, &mut Cursor::default())
    }

    /// The chain step of `cur` if it was taken with `outcome`; advances the cursor.
    #[inline]
    fn chain_hit(&mut self, version: u64, cur: &mut Cursor, outcome: u32) -> Option<Segment> {
        let o = cur.origin?;
        if cur.depth >= CHAIN {
            return None;
        }
        let e = self.emc.slot(o, version)?;
        let (tag, seg) = e.chain[cur.depth];
        if tag != outcome {
            return None;
        }
        cur.depth += 1;
        Some(seg)
    }

    /// After a [`Worker::chain_hit`] miss: the segment for `key` from the caches or the tables,
    /// recorded as the chain step of `cur` for `outcome`.
    fn chain_miss(
        &mut self,
        pl: &Pipeline,
        cur: &mut Cursor,
        outcome: u32,
        key: &FlowKey,
    ) -> Segment {
        let (seg, slot) = self.segment(pl, key);
        let depth = cur.depth;
        // The lookup above may have replaced the origin entry: `slot` checks it is still there.
        match cur.origin.and_then(|o| self.emc.slot(o, pl.version)) {
            Some(e) if depth < CHAIN => {
                e.chain[depth] = (outcome, seg);
                for step in &mut e.chain[depth + 1..] {
                    step.0 = NO_OUTCOME;
                }
                cur.depth += 1;
            }
            // No chain to extend: the path goes on from this segment's own entry.
            _ => {
                cur.origin = slot;
                cur.depth = 0;
            }
        }
        seg
    }

    /// Runs the segments from `key` until the packet is emitted or dropped; `first` is the first
    /// one when it is already known (else it is looked up, and the path's chain starts at its
    /// cache entry). `egress` is true once an output port is chosen (key.out_port set).
    fn run_from(
        &mut self,
        cx: &mut Ctx,
        mut key: FlowKey,
        egress: bool,
        out: &mut BurstResult,
        mut first: Option<Segment>,
        cur: &mut Cursor,
    ) {
        // Each round is one segment; conntrack recirculations are bounded by the table count.
        for _ in 0..8 {
            let seg = match first.take() {
                Some(s) => s,
                None => {
                    let (s, slot) = self.segment(cx.pl, &key);
                    *cur = Cursor {
                        origin: slot,
                        depth: 0,
                    };
                    s
                }
            };
            if let Some(r) = seg.set_reg0 {
                key.set_reg0(r);
            }
            for &m in &seg.meters[..seg.n_meters as usize] {
                if let Some(meter) = self.meters.get_mut(&m) {
                    match meter.judge(cx.frame.len() as u32, cx.now) {
                        Verdict::Over => return self.drop(cx, &key, egress, DropReason::Meter),
                        Verdict::Excess => cx.excess = true,
                        Verdict::Within => {}
                    }
                }
            }
            match seg.terminal {
                Terminal::Drop(r) => return self.drop(cx, &key, egress, r),
                Terminal::Ct {
                    zone,
                    commit,
                    table,
                } => {
                    let (f, l) = (cx.frame, &cx.layout);
                    let r = self.shared.ct.process(zone, &key, f, l, commit, cx.now);
                    if commit && r.full {
                        return self.drop(cx, &key, egress, DropReason::CtFull);
                    }
                    key.set_ct_state(r.state);
                    key.set_stage(table);
                    let outcome = r.state as u32;
                    first = Some(match self.chain_hit(cx.pl.version, cur, outcome) {
                        Some(s) => s,
                        None => self.chain_miss(cx.pl, cur, outcome, &key),
                    });
                }
                Terminal::Emit {
                    tagged,
                    fill_tcp_csum,
                } if egress => {
                    let vlan = if tagged {
                        VlanEdit::Set(key.reg0() as u16)
                    } else {
                        VlanEdit::Strip
                    };
                    out.emits.push(Emit {
                        port: key.out_port(),
                        vlan,
                        fill_tcp_csum,
                    });
                    return;
                }
                Terminal::Output(p) if !egress => return self.unicast(cx, &key, p, out, cur),
                Terminal::Normal if !egress => return self.normal(cx, &key, out, cur),
                Terminal::Flood if !egress => return self.flood(cx, &key, out),
                // Output from egress tables, or emit from ingress: a table bug, not a guest's.
                _ => return self.drop(cx, &key, egress, DropReason::Policy),
            }
        }
        self.drop(cx, &key, egress, DropReason::Policy)
    }

    fn drop(&mut self, cx: &mut Ctx, key: &FlowKey, egress: bool, r: DropReason) {
        if egress {
            let p = (key.out_port() as usize).min(MAX_PORTS - 1);
            self.stats.ports[p].tx_drops[r as usize] += 1;
        }
        cx.first_drop.get_or_insert(r);
    }

    fn egress(&mut self, cx: &mut Ctx, key: &FlowKey, port: u32, out: &mut BurstResult) {
        if port == cx.in_port {
            return self.drop(cx, key, false, DropReason::Loop);
        }
        self.run(cx, egress_key(cx.pl, key, port), true, out);
    }

    /// One copy to `port` (a port the MAC table named, or a static output), continuing the
    /// packet's chain: when the previous packets of this path went to the same port, the first
    /// egress segment comes from the chain, with no lookup at all; when that segment has no meter
    /// and no conntrack, the copy is emitted at once.
    #[inline]
    fn unicast(
        &mut self,
        cx: &mut Ctx,
        key: &FlowKey,
        port: u32,
        out: &mut BurstResult,
        cur: &mut Cursor,
    ) {
        if port == cx.in_port {
            return self.drop(cx, key, false, DropReason::Loop);
        }
        if let Some(seg) = self.chain_hit(cx.pl.version, cur, port) {
            if self.emit_plain(key, port, &seg, out) {
                return;
            }
            return self.run_from(cx, egress_key(cx.pl, key, port), true, out, Some(seg), cur);
        }
        let k = egress_key(cx.pl, key, port);
        let seg = self.chain_miss(cx.pl, cur, port, &k);
        self.run_from(cx, k, true, out, Some(seg), cur)
    }

    /// The most common egress of all: a segment with no meter and no conntrack that emits the
    /// copy straight away. Emits it and says so, or leaves it to the general path.
    #[inline(always)]
    fn emit_plain(&self, key: &FlowKey, port: u32, seg: &Segment, out: &mut BurstResult) -> bool {
        let (
            0,
            Terminal::Emit {
                tagged,
                fill_tcp_csum,
            },
        ) = (seg.n_meters, seg.terminal)
        else {
            return false;
        };
        out.emits.push(Emit {
            port,
            vlan: if tagged {
                VlanEdit::Set(seg.set_reg0.unwrap_or(key.reg0()) as u16)
            } else {
                VlanEdit::Strip
            },
            fill_tcp_csum,
        });
        true
    }

    #[inline]
    fn normal(&mut self, cx: &mut Ctx, key: &FlowKey, out: &mut BurstResult, cur: &mut Cursor) {
        let mac = &self.shared.mac;
        let domain = key.reg0();
        let src = key.eth_src();
        if !src.is_multicast() {
            let tag = ((domain as u64) << 48) | src.to_u64();
            let slot = (tag ^ (tag >> 29) ^ (tag >> 47)) as usize & (RECENT_SLOTS - 1);
            let r = self.recent[slot];
            if !(r.0 == tag && r.1 == cx.in_port && cx.now.wrapping_sub(r.2) < RELEARN_NS) {
                match mac.learn(domain, src, cx.in_port, cx.now) {
                    LearnOutcome::LimitReached => {
                        return self.drop(cx, key, false, DropReason::MacLimit)
                    }
                    LearnOutcome::New | LearnOutcome::Refreshed | LearnOutcome::Moved { .. } => {
                        self.recent[slot] = (tag, cx.in_port, cx.now)
                    }
                    _ => {}
                }
            }
        }
        let dst = key.eth_dst();
        if !dst.is_multicast() {
            if let Some(p) = mac.lookup(domain, dst, cx.now) {
                // Inline here (unicast() is recursive, so it is not): a repeat of the last
                // packet's path to a plain egress.
                if p != cx.in_port {
                    let mut probe = *cur;
                    if let Some(seg) = self.chain_hit(cx.pl.version, &mut probe, p) {
                        if self.emit_plain(key, p, &seg, out) {
                            return;
                        }
                    }
                }
                return self.unicast(cx, key, p, out, cur);
            }
        }
        self.flood(cx, key, out)
    }

    fn flood(&mut self, cx: &mut Ctx, key: &FlowKey, out: &mut BurstResult) {
        let pl = cx.pl;
        let Some(ports) = pl.flood.get(&key.reg0()) else {
            return self.drop(cx, key, false, DropReason::Loop);
        };
        let before = out.emits.len();
        for &p in ports {
            if p != cx.in_port {
                self.egress(cx, key, p, out);
            }
        }
        if out.emits.len() == before && cx.first_drop.is_none() {
            cx.first_drop = Some(DropReason::Loop);
        }
    }
}

/// The `ct_state` bits a security-group check table matches as "part of an allowed connection".
pub const CT_EST_OR_REL: [u8; 2] = [ct::TRACKED | ct::ESTABLISHED, ct::TRACKED | ct::RELATED];
