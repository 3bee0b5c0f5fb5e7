//! One [`Worker`] per forwarding thread: decides the fate of every frame of a burst.
//!
//! Per packet, [`Worker::process_burst`] does: parse → the pipeline interpreter
//! (`interp.rs`), with this worker as its `Mode`: segments come from the exact-match cache,
//! else the megaflow cache, else a walk of the tables (whose result is cached); meters are
//! charged, connections committed, MACs learned.

use crate::cache::emc::{Cursor, Emc, EmcSlot};
use crate::cache::megaflow::Megaflow;
use crate::conntrack::CtResult;
use crate::interp::{self, Cause, Ctx, Mode};
use crate::key::{FlowKey, MAX_PORTS};
use crate::mac_learning::LearnOutcome;
use crate::meter::{Meter, Verdict};
use crate::parse::parse_into;
use crate::pipeline::{Pipeline, Segment};
use crate::shared::Shared;
use crate::storm::{StormClass, StormState};
use crate::verdict::{BurstResult, DropReason, PacketResult};
use model::Mac;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Drops counted for one port by one worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortDrops {
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
    pub ports: Vec<PortDrops>,
}

/// An exact-match cache entry is made for one megaflow hit in this many, so that a flood of
/// short flows does not keep rewriting the exact-match cache (Open vSwitch's
/// `emc-insert-inv-prob` idea).
const EMC_INSERT_EVERY: u32 = 8;

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
    /// The last MAC table answer of this burst: (domain, MAC, port). The packets of a burst
    /// mostly go to one destination, and within a burst the answer cannot change but through
    /// this worker's own learning (which clears it; the time is the burst's); another thread's
    /// change is seen from the next burst, as if it had come a burst later.
    mac_memo: Option<(u32, u64, Option<u32>)>,
    /// The last source of this burst that `learn` found or put in `recent`: (tag, port).
    /// A repeat in the same burst would find that entry again (same time), or, had another
    /// source taken its slot since, refresh a shared entry that was refreshed at this very time.
    learn_memo: (u64, u32),
    meters: BTreeMap<u32, Meter>,
    meter_version: u64,
    /// This thread's storm control buckets, synced with the meters.
    storm: StormState,
    stats: WorkerStats,
}

impl Worker {
    pub(crate) fn new(shared: Arc<Shared>) -> Worker {
        let emc = Emc::new(shared.cfg.emc_entries);
        let megaflow = Megaflow::new(shared.cfg.megaflow_entries);
        Worker {
            shared,
            emc,
            megaflow,
            emc_insert_tick: 0,
            recent: vec![(u64::MAX, 0, 0); RECENT_SLOTS],
            mac_memo: None,
            learn_memo: (u64::MAX, 0),
            meters: BTreeMap::new(),
            meter_version: u64::MAX,
            storm: StormState::default(),
            stats: WorkerStats {
                ports: vec![PortDrops::default(); MAX_PORTS],
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
        self.mac_memo = None;
        self.learn_memo = (u64::MAX, 0);
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
                interp::run(self, &mut cx, key, false, &mut out.emits);
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
        self.storm.sync(pl, now);
        self.meter_version = pl.version;
    }
}

/// Forwarding: the caches, and every side effect.
impl Mode for Worker {
    #[inline(always)]
    fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Exact-match cache, else megaflow cache, else a walk of the tables (whose result goes into
    /// both caches). Inlined into the interpreter even where that repeats it: as a call, the
    /// spills around it cost every packet more than the extra code (callgrind: 557 instead of
    /// 600 instructions per packet on one cached flow).
    #[inline(always)]
    fn segment(&mut self, pl: &Pipeline, k: &FlowKey, _egress: bool) -> (Segment, EmcSlot) {
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

    #[inline]
    fn chain_hit(&mut self, version: u64, cur: &mut Cursor, outcome: u32) -> Option<Segment> {
        self.emc.follow(version, cur, outcome)
    }

    /// The segment from the caches or the tables, recorded as the chain step of `cur` for
    /// `outcome`.
    fn chain_miss(
        &mut self,
        pl: &Pipeline,
        cur: &mut Cursor,
        outcome: u32,
        key: &FlowKey,
        egress: bool,
    ) -> Segment {
        let (seg, slot) = self.segment(pl, key, egress);
        self.emc.record(pl.version, cur, outcome, seg, slot);
        seg
    }

    #[inline(always)]
    fn meter(&mut self, _pl: &Pipeline, id: u32, len: u32, now: u64, _egress: bool) -> Verdict {
        match self.meters.get_mut(&id) {
            Some(meter) => meter.judge(len, now),
            None => Verdict::Within,
        }
    }

    #[inline(always)]
    fn mac_lookup(&mut self, domain: u32, dst: u64, now: u64) -> Option<u32> {
        if let Some((d, mac, port)) = self.mac_memo {
            if d == domain && mac == dst {
                return port;
            }
        }
        let port = self.shared.mac.lookup(domain, Mac::from_u64(dst), now);
        self.mac_memo = Some((domain, dst, port));
        port
    }

    /// Charged here; a drop is also signalled to traces.
    #[inline(always)]
    fn storm(&mut self, cx: &Ctx, c: StormClass) -> bool {
        let ok = self
            .storm
            .admit(cx.in_port, c, cx.frame.len() as u32, cx.now);
        if !ok {
            self.shared.storm.dropped(cx.in_port, c, cx.now);
        }
        ok
    }

    #[inline(always)]
    fn ct(&mut self, zone: u16, key: &FlowKey, cx: &Ctx, commit: bool, _egress: bool) -> CtResult {
        let (frame, layout) = (cx.frame, &cx.layout);
        self.shared
            .ct
            .process(zone, key, frame, layout, commit, cx.now)
    }

    #[inline(always)]
    fn learn(&mut self, domain: u32, src: u64, port: u32, now: u64) -> bool {
        let tag = ((domain as u64) << 48) | src;
        if self.learn_memo == (tag, port) {
            return true;
        }
        let slot = (tag ^ (tag >> 29) ^ (tag >> 47)) as usize & (RECENT_SLOTS - 1);
        let r = self.recent[slot];
        if r.0 == tag && r.1 == port && now.wrapping_sub(r.2) < RELEARN_NS {
            self.learn_memo = (tag, port);
            return true;
        }
        self.mac_memo = None;
        match self.shared.mac.learn(domain, Mac::from_u64(src), port, now) {
            LearnOutcome::LimitReached => return false,
            LearnOutcome::New | LearnOutcome::Refreshed | LearnOutcome::Moved { .. } => {
                self.recent[slot] = (tag, port, now);
                self.learn_memo = (tag, port);
            }
            _ => {}
        }
        true
    }

    #[inline(always)]
    fn dropped(&mut self, key: &FlowKey, egress: bool, r: DropReason, _why: Cause) {
        if egress {
            let p = (key.out_port() as usize).min(MAX_PORTS - 1);
            self.stats.ports[p].tx_drops[r as usize] += 1;
        }
    }
}
