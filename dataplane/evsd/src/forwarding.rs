//! The poll-mode forwarding loop: one per forwarding thread.
//!
//! The loop is generic over the [`crate::port`] seam: it receives from [`RxQueue`]s and transmits
//! to [`TxQueue`]s (statically dispatched; DPDK ethdev queues in evsd, plain-Rust fakes in the
//! tests). A queue value is the right to use that queue: the thread holds the queues of its
//! `Plan` and nobody else has them.
//!
//! The control thread changes a thread's plan with an [`Update`], which the loop checks for once
//! per iteration without blocking: it names the rx queues to keep (the thread has them), hands
//! over new rx queues and destinations, and names the destinations to give back. The thread
//! applies it, sends everything it let go back to the control thread ([`Returned`], on a second
//! channel, so queue tokens come home and nothing big is freed on a forwarding thread), then
//! acknowledges by publishing the update's generation. On [`Command::Stop`] it hands back all it
//! holds.

use crate::capture::{TapCmd, Taps};
use crate::port::{Burst, Packet, RxQueue, TxBuffer, TxQueue, VlanError, MAX_BURST};
use crate::stats::ThreadStats;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use evs_dpdk as dpdk;
use flowtable::verdict::{BurstResult, DropReason, Emit, VlanEdit};
use flowtable::worker::Worker;
use model::Priority;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An rx queue a thread polls, and the flowtable port it belongs to.
#[derive(Debug)]
pub struct RxAssign<R> {
    pub queue: R,
    /// The flowtable id of the port, given to the classifier as `in_port`. Ports have one rx
    /// queue, so it also names the queue in [`RxSlot::Keep`].
    pub flow_id: u32,
}

/// Where a thread transmits towards one flowtable port.
#[derive(Debug)]
pub struct TxTarget<T> {
    pub queue: T,
    /// Maintained by the control thread from link polling: a port whose guest is not connected
    /// gets no traffic.
    pub link_up: Arc<AtomicBool>,
}

/// What a thread forwards with.
struct Plan<R, T> {
    gen: u64,
    rx: Vec<RxAssign<R>>,
    /// Indexed by flowtable port id.
    tx: Vec<Option<TxTarget<T>>>,
}

impl<R, T> Default for Plan<R, T> {
    fn default() -> Self {
        Plan {
            gen: 0,
            rx: vec![],
            tx: vec![],
        }
    }
}

/// One entry of a thread's new rx list.
#[derive(Debug)]
pub enum RxSlot<R> {
    /// The rx queue of this flowtable port, which the thread already polls.
    Keep(u32),
    /// An rx queue handed to the thread now.
    Give(RxAssign<R>),
}

/// A change of a thread's plan.
#[derive(Debug)]
pub struct Update<R, T> {
    pub gen: u64,
    /// The rx queues to poll from now on, in order; queues the thread polls and that are not
    /// kept here are handed back.
    pub rx: Vec<RxSlot<R>>,
    /// Destinations handed to the thread now.
    pub tx_give: Vec<(u32, TxTarget<T>)>,
    /// Destinations to hand back.
    pub tx_take: Vec<u32>,
    /// Size of the destination table (highest flowtable id of an attached port + 1).
    pub tx_len: usize,
}

pub enum Command<R, T> {
    Update(Update<R, T>),
    /// Start or end a packet capture ([`crate::capture`]); not acknowledged.
    Tap(TapCmd),
    Stop,
    /// Test only (`EVS_TEST_STALL_THREAD`, see `watchdog.rs`): block for good, as a thread stuck
    /// in a deadlock would, so that the watchdog and the bounded shutdown can be tested.
    StallForTest,
}

/// What a thread let go of in an update (or everything, when it stops).
#[derive(Debug)]
pub struct Returned<R, T> {
    pub gen: u64,
    pub rx: Vec<RxAssign<R>>,
    pub tx: Vec<(u32, TxTarget<T>)>,
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
struct Tx<P> {
    bufs: Vec<TxBuffer<P>>,
    queued: Vec<bool>,
    /// Destinations that refused a flush during this iteration: no more tries until the next
    /// one (a congested port would otherwise cost a transmit call per packet).
    refused: Vec<bool>,
    /// Destinations with packets queued (this iteration's or left over from earlier ones).
    dirty: Vec<u32>,
    /// Packet captures of this thread (the transmit side's are checked once per flush).
    taps: Taps,
    /// Per buffer (as `bufs`), how many of its leading packets the capture has copied: a
    /// packet the port refuses stays queued and must not be captured again at the next flush.
    /// Kept only for tapped ports.
    tapped: Vec<u16>,
}

impl<P: Packet> Tx<P> {
    fn new() -> Tx<P> {
        Tx {
            bufs: vec![],
            queued: vec![],
            refused: vec![],
            dirty: Vec::with_capacity(crate::stats::MAX_PORTS),
            taps: Taps::default(),
            tapped: vec![],
        }
    }

    /// Starts or ends a capture; a port newly tapped on its transmit side gets what is
    /// queued for it captured at its next flush.
    fn tap(&mut self, c: TapCmd) {
        if let Some(port) = self.taps.apply(c) {
            let at = port as usize * CLASSES;
            if let Some(t) = self.tapped.get_mut(at..at + CLASSES) {
                t.fill(0);
            }
        }
    }

    fn resize(&mut self, n: usize) {
        self.bufs.resize_with(n * CLASSES, TxBuffer::default);
        self.tapped.resize(n * CLASSES, 0);
        self.queued.resize(n, false);
        self.refused.resize(n, false);
        // Destinations beyond the new size were dropped with their buffers.
        self.dirty.retain(|&p| (p as usize) < n);
    }

    /// Serves `port`'s classes in priority order; stops at the first class the port does not
    /// fully take. Returns whether anything is still queued for `port`.
    fn flush_one<T: TxQueue<Packet = P>>(
        &mut self,
        dests: &mut [Option<TxTarget<T>>],
        stats: &ThreadStats,
        port: u32,
    ) -> bool {
        let bufs = &mut self.bufs[port as usize * CLASSES..][..CLASSES];
        let target = match dests.get_mut(port as usize) {
            Some(Some(t)) if t.link_up.load(Ordering::Relaxed) => t,
            // Gone or down: nothing queued for it will ever leave.
            other => {
                let reason = if other.is_some() {
                    DropReason::TxFull
                } else {
                    DropReason::NoPort
                };
                discard_all(bufs, stats, port, reason);
                if self.taps.any_tx {
                    self.tapped[port as usize * CLASSES..][..CLASSES].fill(0);
                }
                return false;
            }
        };
        let (mut sent, mut bytes) = (0u64, 0u64);
        let mut pending = false;
        // One test per flush while nobody captures.
        let mut tapped = if self.taps.tx_on(port) {
            Some(&mut self.tapped[port as usize * CLASSES..][..CLASSES])
        } else {
            None
        };
        for (c, buf) in bufs.iter_mut().enumerate().filter(|(_, b)| !b.is_empty()) {
            if let Some(t) = tapped.as_deref_mut() {
                self.taps.tx(port, buf, t[c] as usize);
            }
            let out = buf.flush(&mut target.queue);
            if let Some(t) = tapped.as_deref_mut() {
                // What is left was captured: it is the tail of what was there.
                t[c] = buf.len() as u16;
            }
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
    fn flush_all<T: TxQueue<Packet = P>>(
        &mut self,
        dests: &mut [Option<TxTarget<T>>],
        stats: &ThreadStats,
    ) {
        let mut i = 0;
        while i < self.dirty.len() {
            let p = self.dirty[i];
            self.refused[p as usize] = false;
            if self.flush_one(dests, stats, p) {
                i += 1;
            } else {
                self.queued[p as usize] = false;
                self.dirty.swap_remove(i);
            }
        }
    }

    #[inline]
    fn enqueue<T: TxQueue<Packet = P>>(
        &mut self,
        dests: &mut [Option<TxTarget<T>>],
        stats: &ThreadStats,
        port: u32,
        class: usize,
        m: P,
    ) {
        let b = port as usize * CLASSES + class;
        if self.bufs[b].is_full() && !self.refused[port as usize] {
            self.flush_one(dests, stats, port);
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

/// Drops everything queued for `port` in `bufs` (its classes), counted as `reason`. Out of line:
/// the flush path it leaves stays small.
#[cold]
#[inline(never)]
fn discard_all<P: Packet>(bufs: &mut [TxBuffer<P>], stats: &ThreadStats, port: u32, r: DropReason) {
    let n: u32 = bufs.iter_mut().map(TxBuffer::discard).sum();
    if let Some(c) = stats.port(port) {
        c.drop(r, n as u64);
    }
}

/// Why a destination cannot take a packet right now.
#[inline]
fn usable<T>(dests: &[Option<TxTarget<T>>], port: u32) -> Result<(), DropReason> {
    match dests.get(port as usize) {
        Some(Some(t)) if t.link_up.load(Ordering::Relaxed) => Ok(()),
        Some(Some(_)) => Err(DropReason::TxFull),
        _ => Err(DropReason::NoPort),
    }
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

fn apply_vlan<P: Packet>(m: &mut P, edit: VlanEdit) -> Result<(), VlanError> {
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
/// (refcount); each copy that needs its own VLAN edit or checksum fill is a private copy, except
/// that the last destination takes the original itself. Private copies are made first and shares
/// after, so every copy starts from the frame as received. Copies go into priority `class`.
///
/// A destination's link state is read once, when the walk reaches it: another thread may bring
/// a link up or down meanwhile, so nothing here depends on a count taken in an earlier pass.
/// Each usable destination is held back until the next one is found; the one still held at the
/// end is the last and gets the original.
#[inline]
fn fanout<P: Packet, T: TxQueue<Packet = P>>(
    tx: &mut Tx<P>,
    dests: &mut [Option<TxTarget<T>>],
    stats: &ThreadStats,
    m: P,
    vid: Option<u16>,
    emits: &[Emit],
    class: usize,
) {
    let mut held: Option<&Emit> = None;
    for edited in [true, false] {
        for e in emits.iter().filter(|e| private(e, vid) == edited) {
            if let Err(r) = usable(dests, e.port) {
                if let Some(c) = stats.port(e.port) {
                    c.drop(r, 1);
                }
                continue;
            }
            if let Some(prev) = held.replace(e) {
                let copy = if private(prev, vid) {
                    m.deep_copy()
                } else {
                    Some(m.share())
                };
                emit_one(tx, dests, stats, prev, vid, class, copy);
            }
        }
    }
    if let Some(last) = held {
        emit_one(tx, dests, stats, last, vid, class, Some(m));
    } // else `m` is freed here
}

/// Edits `c` as `e` asks (if it is a private copy) and queues it; `None` is a copy the pool
/// could not make, counted as if the queue were full.
#[inline]
fn emit_one<P: Packet, T: TxQueue<Packet = P>>(
    tx: &mut Tx<P>,
    dests: &mut [Option<TxTarget<T>>],
    stats: &ThreadStats,
    e: &Emit,
    vid: Option<u16>,
    class: usize,
    c: Option<P>,
) {
    let drop_on = |r: DropReason| {
        if let Some(c) = stats.port(e.port) {
            c.drop(r, 1);
        }
    };
    let Some(mut c) = c else {
        return drop_on(DropReason::TxFull);
    };
    if private(e, vid) {
        if apply_vlan(&mut c, effective(e.vlan, vid)).is_err() {
            return drop_on(DropReason::Malformed);
        }
        if e.fill_tcp_csum {
            // Not TCP, a fragment, or a chained mbuf (headers only in the first segment): the
            // frame goes out as it is.
            if let Some(d) = c.data_mut() {
                let _ = flowtable::checksum::fill_tcp_checksum(d);
            }
        }
    }
    tx.enqueue(dests, stats, e.port, class, c);
}

/// Applies `u` to the thread's plan (after serving what is queued under the old one) and returns
/// what the thread lets go of.
fn apply_update<P: Packet, R, T: TxQueue<Packet = P>>(
    plan: &mut Plan<R, T>,
    tx: &mut Tx<P>,
    stats: &ThreadStats,
    u: Update<R, T>,
) -> Returned<R, T> {
    tx.flush_all(&mut plan.tx, stats);
    let mut old = std::mem::take(&mut plan.rx);
    let mut rx = Vec::with_capacity(u.rx.len());
    for slot in u.rx {
        match slot {
            RxSlot::Keep(id) => {
                if let Some(i) = old.iter().position(|a| a.flow_id == id) {
                    rx.push(old.swap_remove(i));
                }
            }
            RxSlot::Give(a) => rx.push(a),
        }
    }
    plan.rx = rx;
    let mut back = Vec::with_capacity(u.tx_take.len());
    for id in u.tx_take {
        if let Some(t) = plan.tx.get_mut(id as usize).and_then(Option::take) {
            back.push((id, t));
        }
    }
    if plan.tx.len() > u.tx_len {
        for (i, t) in plan.tx.drain(u.tx_len..).enumerate() {
            if let Some(t) = t {
                back.push(((u.tx_len + i) as u32, t));
            }
        }
    }
    plan.tx.resize_with(u.tx_len, || None);
    for (id, t) in u.tx_give {
        let i = id as usize;
        if i >= plan.tx.len() {
            plan.tx.resize_with(i + 1, || None);
        }
        if let Some(prev) = plan.tx[i].replace(t) {
            back.push((id, prev));
        }
    }
    tx.resize(plan.tx.len());
    plan.gen = u.gen;
    Returned {
        gen: u.gen,
        rx: old,
        tx: back,
    }
}

/// The loop of one forwarding thread; returns when told to stop or when the control side hangs
/// up, after handing back every queue it holds on `rets`.
pub fn run<R, T>(
    cfg: LoopConfig,
    mut worker: Worker,
    cmds: Receiver<Command<R, T>>,
    rets: Sender<Returned<R, T>>,
    stats: Arc<ThreadStats>,
) where
    R: RxQueue,
    T: TxQueue<Packet = R::Packet>,
{
    let mut plan: Plan<R, T> = Plan::default();
    let mut tx = Tx::new();
    let mut result = BurstResult::with_capacity(MAX_BURST);
    let mut burst = Burst::default();
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
                Ok(Command::Update(u)) => {
                    taken += 1;
                    let gen = u.gen;
                    let back = apply_update(&mut plan, &mut tx, &stats, u);
                    // Before the acknowledgement: once the control thread sees `gen`, what
                    // this thread let go of is already on its way back.
                    let _ = rets.send(back);
                    stats.plan_gen.store(gen, Ordering::Release);
                }
                Ok(Command::Tap(c)) => {
                    taken += 1;
                    tx.tap(c);
                }
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => break,
                Ok(Command::StallForTest) => loop {
                    std::thread::park();
                },
                Err(TryRecvError::Empty) => {}
            }
        }
        let now_ns = clock.ns(t0);
        tx.taps.now_ns = now_ns;
        let mut got = 0usize;
        for a in plan.rx.iter_mut() {
            let n = burst.rx(&mut a.queue, burst_max);
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
            // One test per burst while nobody captures: frames as the guest sent them.
            if tx.taps.any_rx {
                tx.taps.rx(a.flow_id, &burst, now_ns);
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
                    // The parser's layout says whether the frame is tagged: no second walk.
                    let vid = result.packets[i].layout.vlan();
                    fanout(&mut tx, &mut plan.tx, &stats, m, vid, emits, class);
                }
            }
            burst.clear();
        }
        tx.flush_all(&mut plan.tx, &stats);
        let t1 = dpdk::rdtsc();
        stats.loop_done(t1.wrapping_sub(t0), got as u64);
        iterations = iterations.wrapping_add(1);
        if iterations & 1023 == 0 {
            publish_egress(&worker, plan.tx.len(), &stats);
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
    tx.flush_all(&mut plan.tx, &stats);
    publish_egress(&worker, plan.tx.len(), &stats);
    let tx_back = std::mem::take(&mut plan.tx)
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| t.map(|t| (i as u32, t)))
        .collect();
    // What is still queued goes with the thread (the destinations are gone or down).
    drop(tx);
    let _ = rets.send(Returned {
        gen: plan.gen,
        rx: std::mem::take(&mut plan.rx),
        tx: tx_back,
    });
}

/// Copies the worker's per-port egress-policy drop totals and cache counters to the shared
/// counters.
fn publish_egress(worker: &Worker, ports: usize, stats: &ThreadStats) {
    let w = worker.stats();
    for (p, c) in w.ports.iter().take(ports).enumerate() {
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
    //! The loop, the fan-out and the transmit classes over the plain-Rust fake port of
    //! [`crate::port::fake`]: no DPDK.

    use super::*;
    use crate::port::outer_vid;

    /// The fan-out as the loop calls it, with the frame's tag read from the frame.
    fn fan<P: Packet, T: TxQueue<Packet = P>>(
        tx: &mut Tx<P>,
        dests: &mut [Option<TxTarget<T>>],
        stats: &ThreadStats,
        m: P,
        emits: &[Emit],
        class: usize,
    ) {
        let vid = outer_vid(m.data());
        fanout(tx, dests, stats, m, vid, emits, class)
    }
    use crate::port::fake::*;
    use crate::port::TX_BUFFER_CAP;
    use flowtable::switch::{Switch, SwitchConfig};
    use std::time::Instant;

    type Dests = Vec<Option<TxTarget<FakeTx>>>;

    fn target(q: &FakeTx, up: bool) -> Option<TxTarget<FakeTx>> {
        Some(TxTarget {
            queue: q.clone(),
            link_up: Arc::new(AtomicBool::new(up)),
        })
    }

    fn emit(port: u32, vlan: VlanEdit) -> Emit {
        Emit {
            port,
            vlan,
            fill_tcp_csum: false,
        }
    }

    /// Ethernet (+ 802.1Q) + IPv4 + UDP from 02:00:00:00:00:`src` to `dst`, 64 bytes untagged.
    fn udp_frame(src: u8, dst: [u8; 6], vlan: Option<u16>) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend([2, 0, 0, 0, 0, src]);
        if let Some(v) = vlan {
            f.extend([0x81, 0x00]);
            f.extend(v.to_be_bytes());
        }
        f.extend([0x08, 0x00]);
        let payload = 18u8;
        let total = 20 + 8 + payload;
        f.extend([0x45, 0, 0, total, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend([10, 0, 0, src, 10, 0, 0, dst[5]]);
        f.extend([0x04, 0x00, 0x13, 0x89, 0, 8 + payload, 0, 0]);
        f.extend(std::iter::repeat_n(0, payload as usize));
        f
    }

    fn mac(n: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, n]
    }

    /// A packet marked `n` in its last byte, for following the order of a queue.
    fn marked(pool: &Pool, n: u8) -> FakePacket {
        let mut f = udp_frame(1, mac(2), None);
        *f.last_mut().unwrap() = n;
        pool.packet(&f)
    }

    fn marks(v: &[FakePacket]) -> Vec<u8> {
        v.iter().map(|p| *p.data().last().unwrap()).collect()
    }

    fn drops(stats: &ThreadStats, port: u32, r: DropReason) -> u64 {
        stats.read_port(port).drops[r as usize]
    }

    fn setup(n: usize) -> (Vec<FakeTx>, Dests, Tx<FakePacket>, ThreadStats) {
        let qs: Vec<FakeTx> = (0..n).map(|_| FakeTx::default()).collect();
        let dests: Dests = qs.iter().map(|q| target(q, true)).collect();
        let mut tx = Tx::new();
        tx.resize(dests.len());
        (qs, dests, tx, ThreadStats::new(0))
    }

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

    #[test]
    fn fanout_shares_unchanged_copies_and_copies_edited_ones() {
        let pool = Pool::default();
        let (qs, mut dests, mut tx, stats) = setup(4);
        let tagged = udp_frame(1, mac(2), Some(100));
        let untagged = udp_frame(1, mac(2), None);
        let emits = [
            emit(1, VlanEdit::Keep),
            // Already tagged 100: goes out unchanged, so it shares too.
            emit(2, VlanEdit::Set(100)),
            emit(3, VlanEdit::Strip),
        ];
        fan(&mut tx, &mut dests, &stats, pool.packet(&tagged), &emits, 1);
        tx.flush_all(&mut dests, &stats);
        let (p1, p2, p3) = (qs[1].take_sent(), qs[2].take_sent(), qs[3].take_sent());
        assert_eq!((p1.len(), p2.len(), p3.len()), (1, 1, 1));
        assert!(
            p1[0].shares_with(&p2[0]),
            "unchanged copies share one buffer"
        );
        assert!(!p3[0].shares_with(&p1[0]), "the edited copy is private");
        assert_eq!(p1[0].data(), &tagged[..]);
        assert_eq!(p3[0].data(), &untagged[..]);
        assert_eq!(pool.copies.load(Ordering::Relaxed), 1, "one deep copy");
        for p in 1..4 {
            let s = stats.read_port(p);
            assert_eq!((s.tx_packets, s.total_drops()), (1, 0));
        }
        assert_eq!(stats.read_port(3).tx_bytes, untagged.len() as u64);
    }

    /// A vhost link comes and goes on another thread while packets fan out (a guest's driver
    /// restarting): the walk must not depend on how many destinations were up a moment earlier.
    /// Once this overflowed a count and killed the forwarding thread.
    #[test]
    fn fanout_survives_a_link_flapping_under_it() {
        let pool = Pool::default();
        let (qs, mut dests, mut tx, stats) = setup(4);
        let flap = dests[2].as_ref().unwrap().link_up.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let flapper = {
            let (flap, stop) = (flap.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    flap.fetch_xor(true, Ordering::Relaxed);
                }
            })
        };
        let tagged = udp_frame(1, mac(2), Some(100));
        let emits = [
            emit(1, VlanEdit::Keep),
            emit(2, VlanEdit::Strip),
            emit(3, VlanEdit::Keep),
        ];
        const N: u64 = 200_000;
        for i in 0..N {
            fan(&mut tx, &mut dests, &stats, pool.packet(&tagged), &emits, 1);
            if i % 1024 == 0 {
                tx.flush_all(&mut dests, &stats);
                qs.iter().for_each(|q| drop(q.take_sent()));
            }
        }
        stop.store(true, Ordering::Relaxed);
        flapper.join().unwrap();
        flap.store(true, Ordering::Relaxed);
        tx.flush_all(&mut dests, &stats);
        for p in 1..4 {
            let s = stats.read_port(p);
            assert_eq!(
                s.tx_packets + s.total_drops(),
                N,
                "port {p}: every packet is sent or counted as dropped"
            );
        }
        let s = stats.read_port(2);
        assert!(
            s.tx_packets > 0,
            "the flapping port was up part of the time"
        );
    }

    #[test]
    fn fanout_edits_the_original_when_no_copy_goes_out_unchanged() {
        let pool = Pool::default();
        let (qs, mut dests, mut tx, stats) = setup(4);
        let tagged = udp_frame(1, mac(2), Some(100));
        let emits = [emit(1, VlanEdit::Strip), emit(2, VlanEdit::Set(200))];
        fan(&mut tx, &mut dests, &stats, pool.packet(&tagged), &emits, 1);
        // One packet alone, re-tagged: the original itself, no copy.
        fan(
            &mut tx,
            &mut dests,
            &stats,
            pool.packet(&udp_frame(1, mac(2), None)),
            &[emit(3, VlanEdit::Set(300))],
            1,
        );
        tx.flush_all(&mut dests, &stats);
        assert_eq!(
            pool.copies.load(Ordering::Relaxed),
            1,
            "two edited copies: one copy plus the original"
        );
        assert_eq!(qs[1].take_sent()[0].data(), &udp_frame(1, mac(2), None)[..]);
        assert_eq!(
            qs[2].take_sent()[0].data(),
            &udp_frame(1, mac(2), Some(200))[..],
            "each copy starts from the frame as received"
        );
        assert_eq!(
            qs[3].take_sent()[0].data(),
            &udp_frame(1, mac(2), Some(300))[..]
        );
    }

    #[test]
    fn classes_are_served_in_priority_order() {
        let pool = Pool::default();
        let (qs, mut dests, mut tx, stats) = setup(2);
        let q = &qs[1];
        q.allow(0);
        // Excess low priority first in time, then medium, then high: the port takes high first.
        for (class, n) in [(EXCESS + 2, 4), (1, 4), (0, 4)] {
            for _ in 0..n {
                tx.enqueue(&mut dests, &stats, 1, class, marked(&pool, class as u8));
            }
        }
        tx.flush_all(&mut dests, &stats);
        assert!(q.take_sent().is_empty());
        q.allow(6);
        tx.flush_all(&mut dests, &stats);
        assert_eq!(marks(&q.take_sent()), [0, 0, 0, 0, 1, 1]);
        q.allow(usize::MAX);
        tx.flush_all(&mut dests, &stats);
        assert_eq!(marks(&q.take_sent()), [1, 1, 5, 5, 5, 5]);
        assert_eq!(stats.read_port(1).tx_packets, 12);
        assert_eq!(stats.read_port(1).total_drops(), 0);
    }

    #[test]
    fn congested_destination_keeps_its_queue_and_tail_drops_count_tx_full() {
        let pool = Pool::default();
        let (qs, mut dests, mut tx, stats) = setup(3);
        let (slow, fine) = (&qs[1], &qs[2]);
        slow.allow(0);
        for i in 0..TX_BUFFER_CAP + 6 {
            tx.enqueue(&mut dests, &stats, 1, 1, marked(&pool, i as u8));
            tx.enqueue(&mut dests, &stats, 2, 1, marked(&pool, i as u8));
        }
        assert_eq!(drops(&stats, 1, DropReason::TxFull), 6, "tail drop");
        assert_eq!(
            slow.calls.load(Ordering::Relaxed),
            1,
            "a destination that refused is not retried within the iteration"
        );
        assert_eq!(fine.take_sent().len(), TX_BUFFER_CAP, "flushed when full");
        tx.flush_all(&mut dests, &stats);
        assert_eq!(
            fine.take_sent().len(),
            6,
            "the other destination is undisturbed"
        );
        assert_eq!(drops(&stats, 2, DropReason::TxFull), 0);
        // Still congested: everything stays queued, nothing more is lost.
        tx.flush_all(&mut dests, &stats);
        assert!(slow.take_sent().is_empty());
        slow.allow(usize::MAX);
        tx.flush_all(&mut dests, &stats);
        assert_eq!(
            marks(&slow.take_sent()),
            (0..TX_BUFFER_CAP as u8).collect::<Vec<_>>(),
            "the queue kept the oldest, in order"
        );
        assert_eq!(stats.read_port(1).tx_packets, TX_BUFFER_CAP as u64);
        assert_eq!(drops(&stats, 1, DropReason::TxFull), 6);
    }

    /// `--out` captures what a port is handed, after the VLAN edits, each packet once even
    /// when the port takes only part of a buffer; `--in` taps do not see transmits.
    #[test]
    fn capture_out_copies_each_sent_packet_once_after_the_vlan_edit() {
        use crate::capture::{Session, Tap, TapCmd};
        use api::capture::{CaptureSpec, Direction};
        let pool = Pool::default();
        let (qs, mut dests, mut tx, stats) = setup(3);
        let session = |d| {
            Arc::new(
                Session::new(CaptureSpec {
                    direction: d,
                    ..CaptureSpec::new("p")
                })
                .unwrap(),
            )
        };
        let (out, inn) = (session(Direction::Out), session(Direction::In));
        tx.tap(TapCmd::Add(Tap {
            flow_id: 1,
            session: out.clone(),
        }));
        tx.tap(TapCmd::Add(Tap {
            flow_id: 2,
            session: inn.clone(),
        }));
        qs[1].allow(3);
        for i in 0..5 {
            tx.enqueue(&mut dests, &stats, 1, 0, marked(&pool, i));
            tx.enqueue(&mut dests, &stats, 2, 0, marked(&pool, i));
        }
        tx.flush_all(&mut dests, &stats);
        assert_eq!(qs[1].take_sent().len(), 3, "two stay queued");
        let tagged = udp_frame(1, mac(2), None);
        fan(
            &mut tx,
            &mut dests,
            &stats,
            pool.packet(&tagged),
            &[emit(1, VlanEdit::Set(100))],
            0,
        );
        qs[1].allow(usize::MAX);
        tx.flush_all(&mut dests, &stats);
        tx.flush_all(&mut dests, &stats);
        let got = out.take_frames();
        let marks: Vec<u8> = got[..5].iter().map(|f| *f.last().unwrap()).collect();
        assert_eq!(marks, [0, 1, 2, 3, 4], "each once, in order");
        assert_eq!(got.len(), 6);
        assert_eq!(got[5], udp_frame(1, mac(2), Some(100)), "as sent: tagged");
        assert!(inn.take_frames().is_empty(), "an --in tap sees no transmit");
        tx.tap(TapCmd::Remove(out.id()));
        tx.tap(TapCmd::Remove(inn.id()));
        assert!(!tx.taps.any_tx && !tx.taps.any_rx);
        assert_eq!((Arc::strong_count(&out), Arc::strong_count(&inn)), (1, 1));
    }

    #[test]
    fn down_and_removed_destinations_drop() {
        let pool = Pool::default();
        let (qs, mut dests, mut tx, stats) = setup(4);
        dests[1]
            .as_ref()
            .unwrap()
            .link_up
            .store(false, Ordering::Relaxed);
        dests[2] = None;
        let emits = [
            emit(1, VlanEdit::Keep),
            emit(2, VlanEdit::Keep),
            emit(9, VlanEdit::Keep),
            emit(3, VlanEdit::Keep),
        ];
        fan(&mut tx, &mut dests, &stats, marked(&pool, 1), &emits, 1);
        tx.flush_all(&mut dests, &stats);
        assert_eq!(drops(&stats, 1, DropReason::TxFull), 1, "down: tx_full");
        assert_eq!(drops(&stats, 2, DropReason::NoPort), 1, "detached: no_port");
        assert_eq!(drops(&stats, 9, DropReason::NoPort), 1, "unknown: no_port");
        assert_eq!(qs[3].take_sent().len(), 1, "the others still get theirs");
        assert!(qs[1].take_sent().is_empty());

        // Packets waiting for a port that goes down are dropped as tx_full.
        qs[3].allow(0);
        for i in 0..3 {
            tx.enqueue(&mut dests, &stats, 3, 0, marked(&pool, i));
        }
        tx.flush_all(&mut dests, &stats);
        dests[3]
            .as_ref()
            .unwrap()
            .link_up
            .store(false, Ordering::Relaxed);
        tx.flush_all(&mut dests, &stats);
        assert_eq!(drops(&stats, 3, DropReason::TxFull), 3);
        qs[3].allow(usize::MAX);
        tx.flush_all(&mut dests, &stats);
        assert!(qs[3].take_sent().is_empty(), "nothing left queued");
    }

    const MODEL: &str = r#"
[[port_groups]]
name = "web"
type = "access"
vlan = 100

[[ports]]
name = "vm1"
mac = "02:00:00:00:00:01"
port_group = "web"

[[ports]]
name = "vm2"
mac = "02:00:00:00:00:02"
port_group = "web"

[[ports]]
name = "vm3"
mac = "02:00:00:00:00:03"
port_group = "web"
"#;

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The whole loop on a thread, over fake ports: plans arrive as updates, queues go back to
    /// the sender on every change and at the stop.
    #[test]
    fn loop_forwards_between_fake_ports_and_hands_queues_back() {
        let model: model::Model = toml::from_str(MODEL).unwrap();
        let sw = Switch::new(SwitchConfig::default(), model).unwrap();
        let ids: Vec<u32> = ["vm1", "vm2", "vm3"]
            .iter()
            .map(|n| sw.port_id(n).unwrap())
            .collect();
        let rxs: Vec<FakeRx> = ids.iter().map(|_| FakeRx::default()).collect();
        let txs: Vec<FakeTx> = ids.iter().map(|_| FakeTx::default()).collect();
        let tx_len = *ids.iter().max().unwrap() as usize + 1;
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let (ret_tx, ret_rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(ThreadStats::new(0));
        let cfg = LoopConfig {
            burst: 32,
            idle_sleep_us: 50,
            tsc_hz: 2_000_000_000,
        };
        let (worker, st) = (sw.worker(), stats.clone());
        let h = std::thread::spawn(move || run::<FakeRx, FakeTx>(cfg, worker, cmd_rx, ret_tx, st));
        let post = |c: Command<FakeRx, FakeTx>| {
            cmd_tx.send(c).unwrap();
            stats.posted.fetch_add(1, Ordering::Release);
        };
        let link = Arc::new(AtomicBool::new(true));

        post(Command::Update(Update {
            gen: 1,
            rx: (0..2)
                .map(|i| {
                    RxSlot::Give(RxAssign {
                        queue: rxs[i].clone(),
                        flow_id: ids[i],
                    })
                })
                .collect(),
            tx_give: (0..3)
                .map(|i| {
                    (
                        ids[i],
                        TxTarget {
                            queue: txs[i].clone(),
                            link_up: link.clone(),
                        },
                    )
                })
                .collect(),
            tx_take: vec![],
            tx_len,
        }));
        let back = ret_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((back.gen, back.rx.len(), back.tx.len()), (1, 0, 0));
        wait_until("gen 1", || stats.plan_gen.load(Ordering::Acquire) == 1);

        // A broadcast from vm1 floods to vm2 and vm3, as one shared buffer.
        let bcast = udp_frame(1, [0xff; 6], None);
        rxs[0].feed(Pool::default().packet(&bcast));
        wait_until("the flood", || {
            txs[1].sent.lock().unwrap().len() == 1 && txs[2].sent.lock().unwrap().len() == 1
        });
        let (a, b) = (txs[1].take_sent(), txs[2].take_sent());
        assert!(a[0].shares_with(&b[0]));
        assert_eq!(a[0].data(), &bcast[..]);
        // vm1 was learned: vm2's answer goes to vm1 only.
        rxs[1].feed(Pool::default().packet(&udp_frame(2, mac(1), None)));
        wait_until("the answer", || txs[0].sent.lock().unwrap().len() == 1);
        assert!(txs[2].take_sent().is_empty());

        // vm1's rx queue and vm3's destination go back; vm2 stays polled.
        post(Command::Update(Update {
            gen: 2,
            rx: vec![RxSlot::Keep(ids[1])],
            tx_give: vec![],
            tx_take: vec![ids[2]],
            tx_len,
        }));
        let back = ret_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(back.gen, 2);
        assert_eq!(
            back.rx.iter().map(|a| a.flow_id).collect::<Vec<_>>(),
            [ids[0]]
        );
        assert_eq!(back.tx.iter().map(|t| t.0).collect::<Vec<_>>(), [ids[2]]);
        wait_until("gen 2", || stats.plan_gen.load(Ordering::Acquire) == 2);
        rxs[0].feed(Pool::default().packet(&bcast));
        rxs[1].feed(Pool::default().packet(&udp_frame(2, [0xff; 6], None)));
        wait_until("vm2 still polled", || {
            txs[0].sent.lock().unwrap().len() == 2
        });
        assert_eq!(
            rxs[0].waiting.lock().unwrap().len(),
            1,
            "vm1 no longer polled"
        );
        assert!(
            txs[2].take_sent().is_empty(),
            "vm3 is no destination any more"
        );
        assert_eq!(drops(&stats, ids[2], DropReason::NoPort), 1);

        // Stop: everything else comes back.
        post(Command::Stop);
        h.join().unwrap();
        let back = ret_rx.recv_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!(
            back.rx.iter().map(|a| a.flow_id).collect::<Vec<_>>(),
            [ids[1]]
        );
        let mut tx_ids: Vec<u32> = back.tx.iter().map(|t| t.0).collect();
        tx_ids.sort();
        assert_eq!(tx_ids, [ids[0], ids[1]]);
        let s = stats.read_port(ids[0]);
        assert_eq!((s.rx_packets, s.tx_packets), (1, 2));
        assert_eq!(stats.read_port(ids[1]).rx_packets, 2);
    }
}
