//! Storm control: per-port token buckets on the frames the switch floods, charged when the
//! interpreter is about to flood a frame received from the port (see `interp.rs`), so unicast to
//! a learned MAC never meets them and a cached path (whose terminal is `normal`) meets them on
//! every packet.
//!
//! Each class (broadcast, multicast, unknown unicast) of a port has a packet bucket (rate pps,
//! depth the burst) and optionally a byte bucket (kbit/s, a tenth of a second deep and at least
//! one full-size frame); a frame passes when both have tokens. The buckets are [`crate::meter`]'s,
//! counting packets instead of bits. Each forwarding thread has its own buckets (like meters: no
//! lock, no shared cache line), so with N threads receiving from one port its limit is up to N
//! times the configured one; a port's queue is served by one thread today (one queue per port).

use crate::key::MAX_PORTS;
use crate::meter::Bucket;
use crate::pipeline::Pipeline;
use crate::verdict::DropReason;
use model::{Mac, StormControl};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// What kind of flood a frame is, by its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StormClass {
    Broadcast = 0,
    Multicast = 1,
    UnknownUnicast = 2,
}

impl StormClass {
    /// The class of a frame to `dst` that is being flooded.
    #[inline(always)]
    pub fn of(dst: Mac) -> StormClass {
        if dst == Mac::BROADCAST {
            StormClass::Broadcast
        } else if dst.is_multicast() {
            StormClass::Multicast
        } else {
            StormClass::UnknownUnicast
        }
    }

    pub fn drop_reason(self) -> DropReason {
        match self {
            StormClass::Broadcast => DropReason::StormBroadcast,
            StormClass::Multicast => DropReason::StormMulticast,
            StormClass::UnknownUnicast => DropReason::StormUnknownUnicast,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StormClass::Broadcast => "broadcast",
            StormClass::Multicast => "multicast",
            StormClass::UnknownUnicast => "unknown unicast",
        }
    }
}

/// Depth of the byte bucket in time at its rate, and at least one full-size frame.
const BYTE_DEPTH_NS: u64 = 100_000_000;
const MIN_BYTE_DEPTH: u64 = 1518;
const NS: u64 = 1_000_000_000;

/// One class's buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClassBuckets {
    packets: Bucket,
    bits: Option<Bucket>,
}

impl ClassBuckets {
    fn new(l: &model::StormLimit) -> ClassBuckets {
        let bits = l.kbps.map(|k| {
            let bps = k.saturating_mul(1000);
            let depth = (bps as u128 * BYTE_DEPTH_NS as u128 / NS as u128) as u64;
            Bucket::new(bps, depth.max(MIN_BYTE_DEPTH * 8), NS)
        });
        ClassBuckets {
            packets: Bucket::new(l.pps, l.burst(), NS),
            bits,
        }
    }

    fn refill(&mut self, elapsed: u64) {
        self.packets.refill(elapsed);
        if let Some(b) = &mut self.bits {
            b.refill(elapsed);
        }
    }

    fn admit(&mut self, len: u32) -> bool {
        let one = NS as i128;
        let bits = len as i128 * 8 * NS as i128;
        let ok = self.packets.allows(one) && self.bits.is_none_or(|b| b.allows(bits));
        if ok {
            self.packets.take(one);
            if let Some(b) = &mut self.bits {
                b.take(bits);
            }
        }
        ok
    }
}

/// One port's storm control in one forwarding thread.
#[derive(Debug, Clone)]
pub struct PortStorm {
    cfg: StormControl,
    classes: [Option<ClassBuckets>; 3],
    /// Time (ns) of the last refill.
    last: u64,
}

impl PortStorm {
    /// Every bucket full at `now`.
    pub fn new(cfg: StormControl, now: u64) -> PortStorm {
        let [b, m, u] = cfg.limits().map(|(_, l)| l.map(ClassBuckets::new));
        PortStorm {
            cfg,
            classes: [b, m, u],
            last: now,
        }
    }

    /// Whether a flooded frame of `len` bytes and class `c` passes at `now` (tokens taken).
    /// A clock that goes back less than a second counts as no time passing; a larger jump back
    /// (a reset) restarts time from there, as the meters do.
    pub fn admit(&mut self, c: StormClass, len: u32, now: u64) -> bool {
        if self.classes[c as usize].is_none() {
            return true;
        }
        if now >= self.last {
            let elapsed = now - self.last;
            // Refill every class up to now, so that `last` means the same for all of them.
            for x in self.classes.iter_mut().flatten() {
                x.refill(elapsed);
            }
            self.last = now;
        } else if self.last - now > NS {
            self.last = now;
        }
        self.classes[c as usize]
            .as_mut()
            .is_some_and(|b| b.admit(len))
    }
}

/// One forwarding thread's storm control of every port, synced with each pipeline version.
pub struct StormState {
    /// Port id → index + 1 in `ports` (0: no storm control): one load on the flood path of a
    /// port without storm control, and nothing at all on other paths.
    slot: Vec<u16>,
    ports: Vec<PortStorm>,
}

impl Default for StormState {
    fn default() -> Self {
        StormState {
            slot: vec![0; MAX_PORTS],
            ports: vec![],
        }
    }
}

impl StormState {
    /// Takes `pl`'s storm control at `now`: ports whose configuration did not change keep their
    /// buckets (an unrelated update does not hand a storming guest a fresh burst).
    pub fn sync(&mut self, pl: &Pipeline, now: u64) {
        let mut old: BTreeMap<u32, PortStorm> = BTreeMap::new();
        for (id, s) in self.slot.iter_mut().enumerate() {
            if *s != 0 {
                old.insert(id as u32, self.ports[*s as usize - 1].clone());
                *s = 0;
            }
        }
        self.ports.clear();
        for (&id, cfg) in &pl.storm {
            if id as usize >= MAX_PORTS {
                continue;
            }
            let st = match old.remove(&id) {
                Some(s) if s.cfg == *cfg => s,
                _ => PortStorm::new(*cfg, now),
            };
            self.ports.push(st);
            self.slot[id as usize] = self.ports.len() as u16;
        }
    }

    /// Whether a frame of class `c` flooded from `port` passes.
    #[inline(always)]
    pub fn admit(&mut self, port: u32, c: StormClass, len: u32, now: u64) -> bool {
        match self.slot.get(port as usize) {
            Some(&s) if s != 0 => self.ports[s as usize - 1].admit(c, len, now),
            _ => true,
        }
    }
}

/// When each port's storm control last dropped a frame of each class, written by the forwarding
/// threads (rarely: at most once a millisecond per port and class) and read by traces, which
/// cannot see the threads' buckets: a trace says a frame would be dropped while its port is
/// storming.
pub struct StormSignals {
    last_drop: Box<[AtomicU64]>,
}

/// A drop this recent means the port is over its limit now.
pub const STORMING_NS: u64 = 1_000_000_000;
const SIGNAL_EVERY_NS: u64 = 1_000_000;

impl Default for StormSignals {
    fn default() -> Self {
        StormSignals {
            last_drop: (0..MAX_PORTS * 3).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl StormSignals {
    fn idx(port: u32, c: StormClass) -> usize {
        (port as usize).min(MAX_PORTS - 1) * 3 + c as usize
    }

    /// A frame of class `c` from `port` was dropped at `now` (ns, never 0 in practice).
    #[inline]
    pub fn dropped(&self, port: u32, c: StormClass, now: u64) {
        let a = &self.last_drop[Self::idx(port, c)];
        // Read first: under a storm the line stays shared instead of bouncing between threads.
        if now.wrapping_sub(a.load(Ordering::Relaxed)) >= SIGNAL_EVERY_NS {
            a.store(now, Ordering::Relaxed);
        }
    }

    /// How long before `now` the last drop was, if any within [`STORMING_NS`].
    pub fn storming(&self, port: u32, c: StormClass, now: u64) -> Option<u64> {
        let t = self.last_drop[Self::idx(port, c)].load(Ordering::Relaxed);
        (t != 0 && now >= t && now - t < STORMING_NS).then(|| now - t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::StormLimit;

    const MS: u64 = 1_000_000;

    fn limit(pps: u64, burst: u64) -> Option<StormLimit> {
        Some(StormLimit {
            pps,
            burst: Some(burst),
            kbps: None,
        })
    }

    fn passed(s: &mut PortStorm, c: StormClass, n: u32, now: u64) -> u32 {
        (0..n).filter(|_| s.admit(c, 64, now)).count() as u32
    }

    /// A burst of N at one instant lets exactly the bucket through; time refills it at the rate.
    #[test]
    fn burst_then_refill_at_the_rate() {
        let cfg = StormControl {
            broadcast: limit(1000, 50),
            ..Default::default()
        };
        let t0 = 5 * NS;
        let mut s = PortStorm::new(cfg, t0);
        assert_eq!(passed(&mut s, StormClass::Broadcast, 500, t0), 50);
        // 1000 pps: 10 ms earns 10 packets.
        assert_eq!(passed(&mut s, StormClass::Broadcast, 500, t0 + 10 * MS), 10);
        // A long pause refills to the burst, not beyond.
        assert_eq!(passed(&mut s, StormClass::Broadcast, 500, t0 + 60 * NS), 50);
        // Over one second of steady overload: the rate (to within one packet).
        let mut n = 0;
        for i in 1..=1000u64 {
            n += passed(&mut s, StormClass::Broadcast, 10, t0 + 60 * NS + i * MS);
        }
        assert_eq!(n, 1000);
        // Other classes have no limit here.
        assert_eq!(
            passed(&mut s, StormClass::Multicast, 500, t0 + 61 * NS),
            500
        );
        assert_eq!(
            passed(&mut s, StormClass::UnknownUnicast, 500, t0 + 61 * NS),
            500
        );
    }

    /// Each class has its own bucket.
    #[test]
    fn classes_are_separate() {
        let cfg = StormControl {
            broadcast: limit(100, 10),
            multicast: limit(100, 20),
            unknown_unicast: limit(0, 1),
        };
        let mut s = PortStorm::new(cfg, 0);
        assert_eq!(passed(&mut s, StormClass::Broadcast, 100, 0), 10);
        assert_eq!(passed(&mut s, StormClass::Multicast, 100, 0), 20);
        assert_eq!(
            passed(&mut s, StormClass::UnknownUnicast, 100, NS),
            0,
            "0 pps"
        );
        assert_eq!(StormClass::of(Mac::BROADCAST), StormClass::Broadcast);
        let mc: Mac = "01:00:5e:00:00:01".parse().unwrap();
        assert_eq!(StormClass::of(mc), StormClass::Multicast);
        let uc: Mac = "02:00:00:00:00:01".parse().unwrap();
        assert_eq!(StormClass::of(uc), StormClass::UnknownUnicast);
    }

    /// The byte rate holds large frames below the packet rate.
    #[test]
    fn kbps_limits_large_frames() {
        let cfg = StormControl {
            broadcast: Some(StormLimit {
                pps: 100_000,
                burst: Some(100_000),
                kbps: Some(1000), // 1 Mbit/s: 100 ms deep = 12 500 bytes
            }),
            ..Default::default()
        };
        let mut s = PortStorm::new(cfg, 0);
        let n = (0..1000)
            .filter(|_| s.admit(StormClass::Broadcast, 1250, 0))
            .count();
        assert_eq!(n, 10);
        // 1 s at 1 Mbit/s = 100 frames of 1250 bytes (the bucket starts empty after the burst).
        let mut n = 0;
        for ms in 1..=1000u64 {
            n += (0..10)
                .filter(|_| s.admit(StormClass::Broadcast, 1250, ms * MS))
                .count();
        }
        assert!((99..=101).contains(&n), "{n}");
    }

    /// Backward clock steps credit nothing twice.
    #[test]
    fn clock_going_back() {
        let cfg = StormControl {
            broadcast: limit(1000, 10),
            ..Default::default()
        };
        let mut s = PortStorm::new(cfg, 10 * NS);
        assert_eq!(passed(&mut s, StormClass::Broadcast, 20, 10 * NS), 10);
        assert_eq!(passed(&mut s, StormClass::Broadcast, 20, 10 * NS - MS), 0);
        assert_eq!(
            passed(&mut s, StormClass::Broadcast, 20, 10 * NS + 2 * MS),
            2
        );
    }

    #[test]
    fn signals_say_storming_for_a_second() {
        let sig = StormSignals::default();
        assert_eq!(sig.storming(3, StormClass::Broadcast, NS), None);
        sig.dropped(3, StormClass::Broadcast, NS);
        assert_eq!(sig.storming(3, StormClass::Broadcast, NS + MS), Some(MS));
        assert_eq!(sig.storming(3, StormClass::Multicast, NS + MS), None);
        assert_eq!(sig.storming(3, StormClass::Broadcast, 3 * NS), None);
    }
}
