//! Counters shared between one forwarding thread (the only writer) and the control thread
//! (readers). Each thread owns its own block so the hot path never contends on a cache line; the
//! control side sums the blocks. Writes are Relaxed load+store (single writer, no RMW), readers
//! may see a burst's counters a little apart, never torn values.

use flowtable::verdict::DropReason;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Flowtable port ids index the per-port counters; ids are small and never reused.
pub use flowtable::key::MAX_PORTS;

#[inline(always)]
fn add(a: &AtomicU64, v: u64) {
    a.store(a.load(Relaxed).wrapping_add(v), Relaxed);
}

#[derive(Default)]
pub struct PortCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub drops: [AtomicU64; DropReason::COUNT],
}

impl PortCounters {
    #[inline]
    pub fn rx(&self, packets: u64, bytes: u64) {
        add(&self.rx_packets, packets);
        add(&self.rx_bytes, bytes);
    }
    #[inline]
    pub fn tx(&self, packets: u64, bytes: u64) {
        add(&self.tx_packets, packets);
        add(&self.tx_bytes, bytes);
    }
    #[inline]
    pub fn drop(&self, r: DropReason, n: u64) {
        add(&self.drops[r as usize], n);
    }
    fn read(&self) -> PortSnapshot {
        let mut s = PortSnapshot {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            drops: [0; DropReason::COUNT],
            egress_drops: [0; DropReason::COUNT],
        };
        for (d, a) in s.drops.iter_mut().zip(&self.drops) {
            *d = a.load(Relaxed);
        }
        s
    }
}

/// Plain copy of a port's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: [u64; DropReason::COUNT],
    pub egress_drops: [u64; DropReason::COUNT],
}

impl PortSnapshot {
    pub fn add(&mut self, o: &PortSnapshot) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        for (a, b) in self.drops.iter_mut().zip(&o.drops) {
            *a += b;
        }
        for (a, b) in self.egress_drops.iter_mut().zip(&o.egress_drops) {
            *a += b;
        }
    }
    pub fn sub(&self, base: &PortSnapshot) -> PortSnapshot {
        let mut s = PortSnapshot {
            rx_packets: self.rx_packets.saturating_sub(base.rx_packets),
            rx_bytes: self.rx_bytes.saturating_sub(base.rx_bytes),
            tx_packets: self.tx_packets.saturating_sub(base.tx_packets),
            tx_bytes: self.tx_bytes.saturating_sub(base.tx_bytes),
            drops: [0; DropReason::COUNT],
            egress_drops: [0; DropReason::COUNT],
        };
        for i in 0..DropReason::COUNT {
            s.drops[i] = self.drops[i].saturating_sub(base.drops[i]);
            s.egress_drops[i] = self.egress_drops[i].saturating_sub(base.egress_drops[i]);
        }
        s
    }
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// One forwarding thread's counters.
pub struct ThreadStats {
    pub core: usize,
    /// TSC cycles of loop iterations that received at least one packet.
    pub busy_cycles: AtomicU64,
    /// TSC cycles of iterations that found nothing (polling, sleeping).
    pub idle_cycles: AtomicU64,
    /// Packets received and processed.
    pub packets: AtomicU64,
    pub iterations: AtomicU64,
    /// The generation of the last forwarding plan this thread switched to.
    pub plan_gen: AtomicU64,
    /// Commands posted to this thread's channel (bumped by the control thread after each send):
    /// the loop polls this plain load instead of the channel, whose `try_recv` costs a fence.
    pub posted: AtomicU64,
    /// The worker's segment cache counters (absolute values copied now and then, like
    /// `egress`): exact-match hits, megaflow hits, and walks of the tables (misses of both).
    pub cache_exact_hits: AtomicU64,
    pub cache_megaflow_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub ports: Box<[PortCounters]>,
    /// Copies towards each port dropped by the flowtable's egress policy (absolute values copied
    /// from the thread's `Worker` now and then, not per packet).
    pub egress: Box<[[AtomicU64; DropReason::COUNT]]>,
}

impl ThreadStats {
    pub fn new(core: usize) -> ThreadStats {
        ThreadStats {
            core,
            busy_cycles: AtomicU64::new(0),
            idle_cycles: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            iterations: AtomicU64::new(0),
            plan_gen: AtomicU64::new(0),
            posted: AtomicU64::new(0),
            cache_exact_hits: AtomicU64::new(0),
            cache_megaflow_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            ports: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
            egress: (0..MAX_PORTS).map(|_| Default::default()).collect(),
        }
    }

    /// Publishes the worker's egress drop totals of `port` (single writer: plain stores).
    #[inline]
    pub fn publish_egress(&self, port: usize, totals: &[u64; DropReason::COUNT]) {
        if let Some(e) = self.egress.get(port) {
            for (a, &v) in e.iter().zip(totals) {
                a.store(v, Relaxed);
            }
        }
    }

    /// Publishes the worker's cache counters (single writer: plain stores).
    pub fn publish_cache(&self, exact_hits: u64, megaflow_hits: u64, misses: u64) {
        self.cache_exact_hits.store(exact_hits, Relaxed);
        self.cache_megaflow_hits.store(megaflow_hits, Relaxed);
        self.cache_misses.store(misses, Relaxed);
    }

    #[inline]
    pub fn port(&self, id: u32) -> Option<&PortCounters> {
        self.ports.get(id as usize)
    }

    #[inline]
    pub fn loop_done(&self, cycles: u64, packets: u64) {
        if packets > 0 {
            add(&self.busy_cycles, cycles);
            add(&self.packets, packets);
        } else {
            add(&self.idle_cycles, cycles);
        }
        add(&self.iterations, 1);
    }

    pub fn read_port(&self, id: u32) -> PortSnapshot {
        let mut s = self.port(id).map(PortCounters::read).unwrap_or_default();
        if let Some(e) = self.egress.get(id as usize) {
            for (d, a) in s.egress_drops.iter_mut().zip(e) {
                *d = a.load(Relaxed);
            }
        }
        s
    }

    pub fn read(&self) -> ThreadSnapshot {
        ThreadSnapshot {
            core: self.core,
            busy_cycles: self.busy_cycles.load(Relaxed),
            idle_cycles: self.idle_cycles.load(Relaxed),
            packets: self.packets.load(Relaxed),
            iterations: self.iterations.load(Relaxed),
            cache_exact_hits: self.cache_exact_hits.load(Relaxed),
            cache_megaflow_hits: self.cache_megaflow_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ThreadSnapshot {
    pub core: usize,
    pub busy_cycles: u64,
    pub idle_cycles: u64,
    pub packets: u64,
    pub iterations: u64,
    pub cache_exact_hits: u64,
    pub cache_megaflow_hits: u64,
    pub cache_misses: u64,
}

impl ThreadSnapshot {
    pub fn sub(&self, b: &ThreadSnapshot) -> ThreadSnapshot {
        ThreadSnapshot {
            core: self.core,
            busy_cycles: self.busy_cycles.saturating_sub(b.busy_cycles),
            idle_cycles: self.idle_cycles.saturating_sub(b.idle_cycles),
            packets: self.packets.saturating_sub(b.packets),
            iterations: self.iterations.saturating_sub(b.iterations),
            cache_exact_hits: self.cache_exact_hits.saturating_sub(b.cache_exact_hits),
            cache_megaflow_hits: self
                .cache_megaflow_hits
                .saturating_sub(b.cache_megaflow_hits),
            cache_misses: self.cache_misses.saturating_sub(b.cache_misses),
        }
    }
    /// Share of segment lookups answered by a cache (exact-match or megaflow), if any.
    pub fn cache_hit_rate(&self) -> Option<f64> {
        let hits = self.cache_exact_hits + self.cache_megaflow_hits;
        let all = hits + self.cache_misses;
        (all > 0).then(|| hits as f64 / all as f64)
    }
    pub fn cycles_per_packet(&self) -> Option<f64> {
        (self.packets > 0).then(|| self.busy_cycles as f64 / self.packets as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_and_reset_by_baseline() {
        let a = ThreadStats::new(1);
        let b = ThreadStats::new(2);
        a.port(3).unwrap().rx(2, 128);
        b.port(3).unwrap().rx(1, 64);
        b.port(3).unwrap().drop(DropReason::TxFull, 5);
        let mut s = a.read_port(3);
        s.add(&b.read_port(3));
        assert_eq!((s.rx_packets, s.rx_bytes), (3, 192));
        assert_eq!(s.drops[DropReason::TxFull as usize], 5);
        let base = s;
        a.port(3).unwrap().rx(1, 64);
        let mut now = a.read_port(3);
        now.add(&b.read_port(3));
        assert_eq!(now.sub(&base).rx_packets, 1);
        assert!(a.port(MAX_PORTS as u32).is_none());
    }
}
