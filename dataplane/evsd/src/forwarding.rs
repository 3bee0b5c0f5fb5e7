//! The poll-mode forwarding loop: one per forwarding thread.
//!
//! Each thread owns a [`Plan`]: the (port, rx queue) pairs it polls and, for every flowtable port
//! id, where to transmit (port, tx queue). The control thread replaces plans through a channel
//! that the loop checks once per iteration without blocking; the thread acknowledges by
//! publishing the plan's generation, after which the control thread may tear down ports the new
//! plan no longer names.

use crate::stats::ThreadStats;
use crossbeam_channel::{Receiver, TryRecvError};
use evs_dpdk::{self as dpdk, EthPort, Mbuf, MbufBurst, TxBuffer, TxLock, MAX_BURST};
use flowtable::datapath::Worker;
use flowtable::verdict::{BurstResult, DropReason, Emit, VlanEdit};
use model::Priority;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RxAssign {
    pub port: EthPort,
    pub queue: u16,
    /// The flowtable id of the port, given to the classifier as `in_port`.
    pub flow_id: u32,
}

#[derive(Debug, Clone)]
pub struct TxTarget {
    pub port: EthPort,
    pub queue: u16,
    /// Present when this tx queue is shared with other threads.
    pub lock: Option<Arc<TxLock>>,
    /// Maintained by the control thread from link polling: a port whose guest is not connected
    /// gets no traffic.
    pub link_up: Arc<AtomicBool>,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub gen: u64,
    pub rx: Vec<RxAssign>,
    /// Indexed by flowtable port id.
    pub tx: Vec<Option<TxTarget>>,
}

pub enum Command {
    Plan(Plan),
    Stop,
}

#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub burst: usize,
    /// Sleep this long after an iteration that received nothing (0: pure busy polling).
    pub idle_sleep_us: u64,
    pub tsc_hz: u64,
}

/// Transmit classes, served in this order: within their port's average rate, high, medium and
/// low priority (the port groups' shaping priority); then the traffic above the average (burst
/// credit), high, medium and low. So a congested uplink carries every port's average before any
/// port's excess, and serves higher priorities first within each.
const CLASSES: usize = 6;
const EXCESS: usize = 3;

fn class_of(p: Priority) -> usize {
    match p {
        Priority::High => 0,
        Priority::Medium => 1,
        Priority::Low => 2,
    }
}

/// Per-thread transmit side: per destination, one queue per class ([`CLASSES`]). Each destination
/// is served in class order, and a class is served only once the classes before it are empty:
/// when a port (an uplink above all) cannot take everything, the lower classes wait in their
/// queues and, once those are full, lose the new packets (tail drop), while the higher ones keep
/// their share.
struct Tx {
    bufs: Vec<TxBuffer>,
    queued: Vec<bool>,
    /// Destinations that refused a flush during this iteration: no more tries until the next
    /// one (a congested port would otherwise cost a transmit call per packet).
    refused: Vec<bool>,
    /// Destinations with packets queued (this iteration's or left over from earlier ones).
    dirty: Vec<u32>,
}

impl Tx {
    fn new() -> Tx {
        Tx {
            bufs: vec![],
            queued: vec![],
            refused: vec![],
            dirty: Vec::with_capacity(crate::stats::MAX_PORTS),
        }
    }

    fn resize(&mut self, n: usize) {
        self.bufs.resize_with(n * CLASSES, TxBuffer::default);
        self.queued.resize(n, false);
        self.refused.resize(n, false);
        // Destinations beyond the new size were dropped with their buffers.
        self.dirty.retain(|&p| (p as usize) < n);
    }

    /// Serves `port`'s classes in priority order; stops at the first class the port does not
    /// fully take. Returns whether anything is still queued for `port`.
    fn flush_one(&mut self, plan: &Plan, stats: &ThreadStats, port: u32) -> bool {
        let bufs = &mut self.bufs[port as usize * CLASSES..][..CLASSES];
        let target = match plan.tx.get(port as usize) {
            Some(Some(t)) if t.link_up.load(Ordering::Relaxed) => t,
            // Gone or down: nothing queued for it will ever leave.
            other => {
                let reason = if other.is_some() {
                    DropReason::TxFull
                } else {
                    DropReason::NoPort
                };
                let n: u32 = bufs.iter_mut().map(TxBuffer::discard).sum();
                if let Some(c) = stats.port(port) {
                    c.drop(reason, n as u64);
                }
                return false;
            }
        };
        let (mut sent, mut bytes) = (0u64, 0u64);
        let mut pending = false;
        for buf in bufs.iter_mut().filter(|b| !b.is_empty()) {
            let out = buf.flush(target.port, target.queue, target.lock.as_deref());
            sent += out.sent as u64;
            bytes += out.sent_bytes;
            if out.left > 0 {
                // The port is full: the classes after this one must not overtake it.
                pending = true;
                break;
            }
        }
        if sent > 0 {
            if let Some(c) = stats.port(port) {
                c.tx(sent, bytes);
            }
        }
        pending
    }

    /// End of iteration: serves every destination with packets queued; those the ports could
    /// not take stay queued (and their destinations stay dirty) for the next iteration.
    fn flush_all(&mut self, plan: &Plan, stats: &ThreadStats) {
        let mut i = 0;
        while i < self.dirty.len() {
            let p = self.dirty[i];
            self.refused[p as usize] = false;
            if self.flush_one(plan, stats, p) {
                i += 1;
            } else {
                self.queued[p as usize] = false;
                self.dirty.swap_remove(i);
            }
        }
    }

    #[inline]
    fn enqueue(&mut self, plan: &Plan, stats: &ThreadStats, port: u32, class: usize, m: Mbuf) {
        let b = port as usize * CLASSES + class;
        if self.bufs[b].is_full() && !self.refused[port as usize] {
            self.flush_one(plan, stats, port);
            self.refused[port as usize] = self.bufs[b].is_full();
        }
        if let Err(m) = self.bufs[b].push(m) {
            // The port is congested and this class's queue is full.
            drop(m);
            if let Some(c) = stats.port(port) {
                c.drop(DropReason::TxFull, 1);
            }
            return;
        }
        let i = port as usize;
        if !self.queued[i] {
            self.queued[i] = true;
            self.dirty.push(port);
        }
    }
}

/// Why a destination cannot take a packet right now.
#[inline]
fn usable(plan: &Plan, port: u32) -> Result<(), DropReason> {
    match plan.tx.get(port as usize) {
        Some(Some(t)) if t.link_up.load(Ordering::Relaxed) => Ok(()),
        Some(Some(_)) => Err(DropReason::TxFull),
        _ => Err(DropReason::NoPort),
    }
}

/// The outer VLAN id of a frame, if it is tagged.
#[inline]
fn outer_vid(frame: &[u8]) -> Option<u16> {
    if frame.len() >= 18 {
        let t = u16::from_be_bytes([frame[12], frame[13]]);
        if t == 0x8100 || t == 0x88a8 {
            return Some(u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff);
        }
    }
    None
}

/// The flowtable states the tag a copy must leave with (`Strip`: untagged, `Set`: tagged with
/// that VLAN); edits that the frame already satisfies become `Keep`, so those copies can share
/// the buffer instead of being copied.
#[inline]
fn effective(edit: VlanEdit, vid: Option<u16>) -> VlanEdit {
    match (edit, vid) {
        (VlanEdit::Strip, None) => VlanEdit::Keep,
        (VlanEdit::Set(v), Some(w)) if v == w => VlanEdit::Keep,
        (e, _) => e,
    }
}

fn apply_vlan(m: &mut Mbuf, edit: VlanEdit) -> Result<(), dpdk::VlanError> {
    match edit {
        VlanEdit::Keep => Ok(()),
        VlanEdit::Strip => m.vlan_pop(),
        VlanEdit::Set(vid) => m.vlan_set(vid),
    }
}

/// Whether the copy for `e` must be private (written to) rather than a shared reference.
#[inline]
fn private(e: &Emit, vid: Option<u16>) -> bool {
    e.fill_tcp_csum || effective(e.vlan, vid) != VlanEdit::Keep
}

/// Sends one packet to all its destinations. Copies that go out unchanged share the buffer
/// (refcount); each copy that needs its own VLAN edit or checksum fill is a private copy, except that the original
/// itself is edited when no unchanged copy needs it. Copies are made before the original is
/// edited, so every copy starts from the frame as received. Copies go into priority `class`.
#[inline]
fn fanout(tx: &mut Tx, plan: &Plan, stats: &ThreadStats, m: Mbuf, emits: &[Emit], class: usize) {
    let drop_on = |port: u32, r: DropReason| {
        if let Some(c) = stats.port(port) {
            c.drop(r, 1);
        }
    };
    let vid = outer_vid(m.data());
    let (mut keeps, mut edits) = (0usize, 0usize);
    for e in emits {
        match usable(plan, e.port) {
            Ok(()) if !private(e, vid) => keeps += 1,
            Ok(()) => edits += 1,
            Err(r) => drop_on(e.port, r),
        }
    }
    if keeps + edits == 0 {
        return; // `m` is freed here
    }
    let mut orig = Some(m);
    let mut edits_left = edits;
    for e in emits
        .iter()
        .filter(|e| private(e, vid) && usable(plan, e.port).is_ok())
    {
        edits_left -= 1;
        let copy = if keeps == 0 && edits_left == 0 {
            orig.take()
        } else {
            orig.as_ref().and_then(Mbuf::deep_copy)
        };
        let Some(mut c) = copy else {
            // Pool exhausted: the copy cannot exist, as if the queue were full.
            drop_on(e.port, DropReason::TxFull);
            continue;
        };
        if apply_vlan(&mut c, effective(e.vlan, vid)).is_err() {
            drop_on(e.port, DropReason::Malformed);
            continue;
        }
        if e.fill_tcp_csum {
            // Not TCP, a fragment, or a chained mbuf (headers only in the first segment): the
            // frame goes out as it is.
            if let Some(d) = c.data_mut() {
                let _ = flowtable::checksum::fill_tcp_checksum(d);
            }
        }
        tx.enqueue(plan, stats, e.port, class, c);
    }
    let mut keeps_left = keeps;
    for e in emits
        .iter()
        .filter(|e| !private(e, vid) && usable(plan, e.port).is_ok())
    {
        keeps_left -= 1;
        let c = if keeps_left == 0 {
            orig.take()
        } else {
            orig.as_ref().map(Mbuf::share)
        };
        if let Some(c) = c {
            tx.enqueue(plan, stats, e.port, class, c);
        }
    }
}

/// The loop of one forwarding thread; returns when told to stop or when the control side hangs
/// up.
pub fn run(cfg: LoopConfig, mut worker: Worker, cmds: Receiver<Command>, stats: Arc<ThreadStats>) {
    let mut plan = Plan::default();
    let mut tx = Tx::new();
    let mut result = BurstResult::with_capacity(MAX_BURST);
    let mut burst = MbufBurst::default();
    let burst_max = cfg.burst.clamp(1, MAX_BURST);
    let clock = dpdk::TscClock::new(cfg.tsc_hz);
    let sleep = Duration::from_micros(cfg.idle_sleep_us);
    // One TSC read per iteration (the end of one is the start of the next): rdtsc costs ~60
    // cycles on these VMs, and two reads per iteration were 15% of a lightly loaded thread.
    let mut t0 = dpdk::rdtsc();
    let mut iterations = 0u64;
    let mut taken = 0u64;
    loop {
        if stats.posted.load(Ordering::Acquire) != taken {
            match cmds.try_recv() {
                Ok(Command::Plan(p)) => {
                    taken += 1;
                    tx.flush_all(&plan, &stats);
                    tx.resize(p.tx.len());
                    let gen = p.gen;
                    plan = p;
                    stats.plan_gen.store(gen, Ordering::Release);
                }
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {}
            }
        }
        let now_ns = clock.ns(t0);
        let mut got = 0usize;
        for a in &plan.rx {
            let n = burst.rx(a.port, a.queue, burst_max);
            if n == 0 {
                continue;
            }
            got += n;
            let mut bytes = 0u64;
            for i in 0..n {
                bytes += burst.pkt_len(i) as u64;
            }
            if let Some(c) = stats.port(a.flow_id) {
                c.rx(n as u64, bytes);
            }
            {
                let mut views: [&[u8]; MAX_BURST] = [&[]; MAX_BURST];
                let n = burst.frames(&mut views);
                worker.process_burst(a.flow_id, &views[..n], now_ns, &mut result);
            }
            let class = class_of(result.priority);
            for i in 0..n.min(result.packets.len()) {
                let class = if result.packets[i].excess {
                    class + EXCESS
                } else {
                    class
                };
                let emits = result.emits_of(i);
                if emits.is_empty() {
                    let r = result.packets[i].drop.unwrap_or(DropReason::NoMatch);
                    if let Some(c) = stats.port(a.flow_id) {
                        c.drop(r, 1);
                    }
                    continue; // freed by burst.clear()
                }
                if let Some(m) = burst.take(i) {
                    fanout(&mut tx, &plan, &stats, m, emits, class);
                }
            }
            burst.clear();
        }
        tx.flush_all(&plan, &stats);
        let t1 = dpdk::rdtsc();
        stats.loop_done(t1.wrapping_sub(t0), got as u64);
        iterations = iterations.wrapping_add(1);
        if iterations & 1023 == 0 {
            publish_egress(&worker, &plan, &stats);
        }
        t0 = t1;
        // Queued packets wait through the sleep too: the sleep is there to give a shared CPU to
        // others, the guest that is slow to take them among them.
        if got == 0 && !sleep.is_zero() {
            std::thread::sleep(sleep);
            // The sleep itself is neither busy nor polling time.
            t0 = dpdk::rdtsc();
        }
    }
    tx.flush_all(&plan, &stats);
    publish_egress(&worker, &plan, &stats);
}

/// Copies the worker's per-port egress-policy drop totals and cache counters to the shared
/// counters.
fn publish_egress(worker: &Worker, plan: &Plan, stats: &ThreadStats) {
    let w = worker.stats();
    for (p, c) in w.ports.iter().take(plan.tx.len()).enumerate() {
        stats.publish_egress(p, &c.tx_drops);
    }
    stats.publish_cache(
        w.emc_hits,
        w.megaflow_hits,
        w.emc_misses.saturating_sub(w.megaflow_hits),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_already_satisfied_become_keep() {
        let mut f = vec![0u8; 64];
        assert_eq!(outer_vid(&f), None);
        assert_eq!(effective(VlanEdit::Strip, outer_vid(&f)), VlanEdit::Keep);
        assert_eq!(effective(VlanEdit::Set(7), outer_vid(&f)), VlanEdit::Set(7));
        f[12..16].copy_from_slice(&[0x81, 0x00, 0xe0, 0x07]);
        assert_eq!(outer_vid(&f), Some(7));
        assert_eq!(effective(VlanEdit::Set(7), Some(7)), VlanEdit::Keep);
        assert_eq!(effective(VlanEdit::Set(8), Some(7)), VlanEdit::Set(8));
        assert_eq!(effective(VlanEdit::Strip, Some(7)), VlanEdit::Strip);
    }
}
