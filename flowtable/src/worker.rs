//! One [`Worker`] per forwarding thread: decides the fate of every frame of a burst.
//!
//! Per packet, [`Worker::process_burst`] does: parse → for each segment: exact-match cache, else
//! megaflow cache, else walk the tables ([`Pipeline::walk`]) and cache the result → run the
//! segment's dynamic end (conntrack, MAC learning, flood, output) → egress segments per output
//! port → emits.

use crate::cache::emc::{Cursor, Emc, EmcSlot};
use crate::cache::megaflow::Megaflow;
use crate::key::{FlowKey, MAX_PORTS};
use crate::mac_learning::LearnOutcome;
use crate::meter::{Meter, Verdict};
use crate::parse::parse;
use crate::pipeline::{Pipeline, Segment, Terminal};
use crate::shared::Shared;
use crate::verdict::{BurstResult, DropReason, Emit, PacketResult, VlanEdit};
use std::collections::BTreeMap;
use std::sync::Arc;

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
    now: u64,
    in_port: u32,
    first_drop: Option<DropReason>,
    /// A meter passed the packet above its port's average rate.
    excess: bool,
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
            let key = parse(in_port, frame);
            let mut cx = Ctx {
                pl: &pl,
                frame,
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
        self.emc.follow(version, cur, outcome)
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
        self.emc.record(pl.version, cur, outcome, seg, slot);
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
                    *cur = Cursor::at(slot);
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
                    let r = self.shared.ct.process(zone, &key, cx.frame, commit, cx.now);
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
