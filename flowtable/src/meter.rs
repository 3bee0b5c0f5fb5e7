//! Transmit shaping meters (port-group shaping, guest → switch).
//!
//! The product semantics: an average bandwidth, a peak bandwidth (≥ average), a burst size and a
//! priority. With no burst, traffic settles at the average rate; a burst allows temporary excess
//! up to the peak. A [`Meter`] is two byte-based token buckets that must both hold enough tokens
//! for a packet to pass (a two-rate policer without colours):
//!
//! * the **committed** bucket fills at the average rate; its depth is the burst size, but at least
//!   [`MIN_DEPTH_NS`] of the average rate and [`MIN_DEPTH_BYTES`], so a sender paced at exactly
//!   the average rate (with the usual timing jitter) is not dropped;
//! * the **peak** bucket fills at the peak rate with a small depth ([`MIN_DEPTH_NS`] of the peak
//!   rate, at least [`MIN_DEPTH_BYTES`]); it caps the instantaneous rate.
//!
//! So a sender that was idle long enough to fill the committed bucket can then send at up to the
//! peak rate until it has used the burst plus what the average rate earned meanwhile, after which
//! it gets the average rate.
//!
//! # Arithmetic
//!
//! Integer only and exact: tokens are counted in *bit-ticks* (one bit = `ticks_per_sec` units),
//! so `elapsed_ticks × rate_bps` is the exact refill and `bytes × 8 × ticks_per_sec` the exact
//! cost, with no division and no rounding drift. Values are `i128`/`u128`, and the refill product
//! of a `u64` tick count and a `u64` rate cannot overflow `u128`, so any idle time is fine (the
//! refill then saturates at the depth).
//!
//! A packet larger than a bucket's depth (a jumbo frame under a small rate) passes when the
//! bucket is full and leaves it in debt (negative), which later refill repays: the long-run
//! rate stays exact and such a packet is never blocked for ever.
//!
//! # Clock
//!
//! The caller supplies `now` in ticks of a clock of `ticks_per_sec` (TSC hz, or 1e9 for ns). A
//! `now` earlier than the last one seen counts as no time passing. A small backward step (less
//! than one second, e.g. jitter between TSCs) leaves the reference point where it was, so no time
//! is credited twice; a larger backward jump (a clock reset) resynchronises on the new clock.

use model::{Priority, Shaping};

/// Minimum depth of both buckets, in bytes: a few full-size Ethernet frames.
pub const MIN_DEPTH_BYTES: u64 = 3 * 1518;
/// Minimum depth of both buckets in time at the bucket's rate: 2 ms.
pub const MIN_DEPTH_NS: u64 = 2_000_000;
/// Minimum depth of the committed (average-rate) bucket: 10 ms, so that a pause of the sender or
/// of the poll loop shorter than that does not lose the tokens it earned (the average is still
/// held; the peak bucket keeps the instantaneous rate capped).
pub const COMMITTED_MIN_DEPTH_NS: u64 = 10_000_000;

/// Minimum depth of the bucket that tells within-average from excess packets: two bursts of 32
/// full-size frames.
pub const AVERAGE_MIN_DEPTH_BYTES: u64 = 64 * 1518;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MeterConfig {
    /// Committed rate, bit/s. 0 passes nothing.
    pub average_bps: u64,
    /// Peak rate, bit/s; values below `average_bps` (0 included) mean `average_bps`.
    pub peak_bps: u64,
    /// Committed bucket depth beyond the average rate; 0 = settle at the average rate.
    pub burst_bytes: u64,
    pub priority: Priority,
}

impl MeterConfig {
    /// From the operator's model: Mbit/s → bit/s (1 Mbit = 1 000 000 bits), burst Mbit → bytes.
    /// A missing peak is the average. Negative or non-finite values count as 0.
    pub fn from_shaping(s: &Shaping) -> MeterConfig {
        let bits = |mbit: f64| (mbit * 1e6).round() as u64; // `as` saturates; NaN → 0
        let average_bps = bits(s.average_mbps);
        MeterConfig {
            average_bps,
            peak_bps: s.peak_mbps.map_or(average_bps, bits).max(average_bps),
            burst_bytes: (s.burst_mbit * 1e6 / 8.0).round() as u64,
            priority: s.priority,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MeterStats {
    pub passed_pkts: u64,
    pub passed_bytes: u64,
    pub dropped_pkts: u64,
    pub dropped_bytes: u64,
}

/// One token bucket, in bit-ticks (or, for storm control's packet buckets, packet-ticks: the
/// arithmetic is the same whatever the unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    tokens: i128,
    depth: i128,
    /// bit/s = bit-ticks added per tick.
    rate: u128,
}

impl Bucket {
    pub(crate) fn new(rate_bps: u64, depth_bits: u64, tps: u64) -> Bucket {
        let depth = (depth_bits as u128 * tps as u128) as i128;
        Bucket {
            tokens: depth,
            depth,
            rate: rate_bps as u128,
        }
    }

    pub(crate) fn refill(&mut self, elapsed: u64) {
        if self.tokens >= self.depth {
            return;
        }
        let room = (self.depth - self.tokens) as u128;
        let add = elapsed as u128 * self.rate;
        self.tokens = if add >= room {
            self.depth
        } else {
            self.tokens + add as i128
        };
    }

    /// Enough tokens for a packet costing `cost` (or a full bucket for one larger than it).
    pub(crate) fn allows(&self, cost: i128) -> bool {
        self.rate > 0 && self.tokens >= cost.min(self.depth)
    }

    /// Takes `cost` (after [`Bucket::allows`] said yes; a cost above the depth leaves a debt).
    pub(crate) fn take(&mut self, cost: i128) {
        self.tokens -= cost;
    }
}

/// What a meter says of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Passes, within the port's average rate.
    Within,
    /// Passes, above the average rate (burst credit, up to the peak): when the uplink cannot
    /// carry everything, such packets go after every port's within-average traffic.
    Excess,
    /// Over the rate: dropped.
    Over,
}

/// A two-bucket shaping meter, owned by one forwarding thread, with a third bucket that only
/// colours: it fills at the average rate with a small depth, so the packets it cannot pay for are
/// the ones above the average.
#[derive(Debug, Clone)]
pub struct Meter {
    cfg: MeterConfig,
    tps: u64,
    last: u64,
    committed: Bucket,
    peak: Bucket,
    average: Bucket,
    stats: MeterStats,
}

impl Meter {
    /// A meter with both buckets full at `now`. Panics if `ticks_per_sec` is 0.
    pub fn new(cfg: MeterConfig, ticks_per_sec: u64, now: u64) -> Meter {
        assert!(ticks_per_sec > 0, "ticks_per_sec must be positive");
        let (committed, peak, average) = Self::buckets(&cfg, ticks_per_sec);
        Meter {
            cfg,
            tps: ticks_per_sec,
            last: now,
            committed,
            peak,
            average,
            stats: MeterStats::default(),
        }
    }

    fn buckets(cfg: &MeterConfig, tps: u64) -> (Bucket, Bucket, Bucket) {
        let avg = cfg.average_bps;
        let peak = cfg.peak_bps.max(avg);
        let min_bits = |rate: u64, ns: u64| {
            let t = (rate as u128 * ns as u128 / 1_000_000_000) as u64;
            t.max(MIN_DEPTH_BYTES * 8)
        };
        let burst_bits = cfg.burst_bytes.saturating_mul(8);
        let mut c = Bucket::new(
            avg,
            burst_bits.max(min_bits(avg, COMMITTED_MIN_DEPTH_NS)),
            tps,
        );
        let mut p = Bucket::new(peak, min_bits(peak, MIN_DEPTH_NS), tps);
        // As deep as the committed bucket would be without a burst, and at least two bursts of
        // full-size frames: a sender at its average rate (whose packets arrive a burst at a
        // time, with the usual jitter) stays within it.
        let a = Bucket::new(
            avg,
            min_bits(avg, COMMITTED_MIN_DEPTH_NS).max(AVERAGE_MIN_DEPTH_BYTES * 8),
            tps,
        );
        if avg == 0 {
            c.tokens = 0;
            p.tokens = 0;
        }
        (c, p, a)
    }

    /// Applies a new configuration at `now`: tokens earned so far under the old one are kept,
    /// clamped to the new depths. Statistics are kept.
    pub fn reconfigure(&mut self, cfg: MeterConfig, now: u64) {
        self.advance(now);
        let (mut c, mut p, mut a) = Self::buckets(&cfg, self.tps);
        c.tokens = self.committed.tokens.min(c.depth);
        p.tokens = self.peak.tokens.min(p.depth);
        a.tokens = self.average.tokens.min(a.depth);
        self.average = a;
        if cfg.average_bps == 0 {
            c.tokens = c.tokens.min(0);
        }
        self.committed = c;
        self.peak = p;
        self.cfg = cfg;
    }

    pub fn config(&self) -> &MeterConfig {
        &self.cfg
    }

    fn advance(&mut self, now: u64) {
        if now >= self.last {
            let elapsed = now - self.last;
            self.committed.refill(elapsed);
            self.peak.refill(elapsed);
            self.average.refill(elapsed);
            self.last = now;
        } else if self.last - now > self.tps {
            // A clock reset: no time passed, and time counts from here on.
            self.last = now;
        }
    }

    fn take(&mut self, bytes: u32) -> Verdict {
        let cost = (bytes as u128 * 8 * self.tps as u128) as i128;
        let ok = self.committed.allows(cost) && self.peak.allows(cost);
        if !ok {
            self.stats.dropped_pkts += 1;
            self.stats.dropped_bytes += bytes as u64;
            return Verdict::Over;
        }
        self.committed.tokens -= cost;
        self.peak.tokens -= cost;
        self.stats.passed_pkts += 1;
        self.stats.passed_bytes += bytes as u64;
        if self.average.allows(cost) {
            self.average.tokens -= cost;
            Verdict::Within
        } else {
            Verdict::Excess
        }
    }

    /// One packet of `bytes` at time `now`: true = passes (tokens taken), false = over rate (no
    /// tokens taken).
    pub fn admit(&mut self, bytes: u32, now: u64) -> bool {
        self.judge(bytes, now) != Verdict::Over
    }

    /// As [`Meter::admit`], and says whether a passing packet is within the average rate.
    pub fn judge(&mut self, bytes: u32, now: u64) -> Verdict {
        self.advance(now);
        self.take(bytes)
    }

    /// A burst: bit i of the returned mask set ⇔ packet i passes; packets are judged in order,
    /// exactly as `admit` would at the same `now`, with a single refill. `lens.len() <= 64`; an
    /// empty burst does nothing (not even reading the clock).
    pub fn admit_burst(&mut self, lens: &[u32], now: u64) -> u64 {
        assert!(lens.len() <= 64, "a burst is at most 64 packets");
        if lens.is_empty() {
            return 0;
        }
        self.advance(now);
        let mut mask = 0u64;
        for (i, &len) in lens.iter().enumerate() {
            if self.take(len) != Verdict::Over {
                mask |= 1 << i;
            }
        }
        mask
    }

    pub fn priority(&self) -> Priority {
        self.cfg.priority
    }

    pub fn stats(&self) -> MeterStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: u64 = 1_000_000_000;

    /// A sender at the peak rate with burst credit: about the average rate's worth of its
    /// packets are within the average, the rest is excess; without burst nothing is excess.
    #[test]
    fn packets_above_the_average_are_marked_excess() {
        let mut m = Meter::new(cfg(10, 100, 100), NS, 0);
        let (mut within, mut excess) = (0u64, 0u64);
        // 1000-byte packets every 80 µs = 100 Mbit/s for 0.5 s (the burst lasts longer).
        for i in 0..6250u64 {
            match m.judge(1000, i * 80_000) {
                Verdict::Within => within += 1,
                Verdict::Excess => excess += 1,
                Verdict::Over => panic!("within the burst and the peak"),
            }
        }
        // 10 Mbit/s for 0.5 s = 625 packets, plus the bucket's initial depth (97 packets).
        assert!((700..=740).contains(&within), "within {within}");
        assert_eq!(within + excess, 6250);
        let mut m = Meter::new(cfg(10, 10, 0), NS, 0);
        for i in 0..1000u64 {
            assert_ne!(m.judge(1000, i * 800_000), Verdict::Excess, "packet {i}");
        }
    }

    fn cfg(avg_mbps: u64, peak_mbps: u64, burst_mbit: u64) -> MeterConfig {
        MeterConfig {
            average_bps: avg_mbps * 1_000_000,
            peak_bps: peak_mbps * 1_000_000,
            burst_bytes: burst_mbit * 1_000_000 / 8,
            priority: Priority::Medium,
        }
    }

    /// Sends `len`-byte packets back to back at `rate_bps` from `start` for `dur` ticks (ns);
    /// returns (send time, passed) per packet.
    fn offer(m: &mut Meter, len: u32, rate_bps: u64, start: u64, dur: u64) -> Vec<(u64, bool)> {
        let gap = len as u128 * 8 * NS as u128; // ns × bit/s
        let mut out = Vec::new();
        let mut i = 0u128;
        loop {
            let t = start + (i * gap / rate_bps as u128) as u64;
            if t >= start + dur {
                return out;
            }
            out.push((t, m.admit(len, t)));
            i += 1;
        }
    }

    fn bits_passed(v: &[(u64, bool)], len: u32, from: u64, to: u64) -> u64 {
        v.iter()
            .filter(|(t, ok)| *ok && *t >= from && *t < to)
            .count() as u64
            * len as u64
            * 8
    }

    fn within(x: f64, want: f64, pct: f64) -> bool {
        (x - want).abs() <= want * pct / 100.0
    }

    #[test]
    fn from_shaping_converts_units() {
        let s = Shaping {
            average_mbps: 100.0,
            peak_mbps: Some(200.0),
            burst_mbit: 10.0,
            priority: Priority::High,
        };
        assert_eq!(
            MeterConfig::from_shaping(&s),
            MeterConfig {
                average_bps: 100_000_000,
                peak_bps: 200_000_000,
                burst_bytes: 1_250_000,
                priority: Priority::High
            }
        );
        let s = Shaping {
            average_mbps: 2.5,
            peak_mbps: None,
            burst_mbit: 0.0,
            priority: Priority::Low,
        };
        let c = MeterConfig::from_shaping(&s);
        assert_eq!(
            (c.average_bps, c.peak_bps, c.burst_bytes),
            (2_500_000, 2_500_000, 0)
        );
        assert_eq!(Meter::new(c, NS, 0).priority(), Priority::Low);
    }

    #[test]
    fn long_run_overload_delivers_the_average() {
        for (peak, burst) in [(100, 0), (200, 0), (200, 5)] {
            let mut m = Meter::new(cfg(100, peak, burst), NS, 0);
            let v = offer(&mut m, 1500, 200_000_000, 0, 10 * NS);
            let rate = bits_passed(&v, 1500, 0, 10 * NS) as f64 / 10.0;
            assert!(
                within(rate, 100e6, 2.0),
                "peak {peak} burst {burst}: {rate}"
            );
            // And in steady state (after the first second) too.
            let rate = bits_passed(&v, 1500, 2 * NS, 10 * NS) as f64 / 8.0;
            assert!(within(rate, 100e6, 1.0), "{rate}");
            let st = m.stats();
            assert_eq!(st.passed_pkts + st.dropped_pkts, v.len() as u64);
            assert_eq!(st.passed_bytes, st.passed_pkts * 1500);
            assert_eq!(st.dropped_bytes, st.dropped_pkts * 1500);
        }
    }

    #[test]
    fn burst_after_idle_then_average() {
        // 10 Mbit/s average, 100 Mbit/s peak, 10 Mbit burst; idle 5 s, then 1 Gbit/s for 3 s.
        let mut m = Meter::new(cfg(10, 100, 10), NS, 0);
        let t0 = 5 * NS;
        let v = offer(&mut m, 1500, 1_000_000_000, t0, 3 * NS);
        // The burst is used at the peak rate: B / (peak - avg) ≈ 111 ms, delivering ≈ B + avg·t.
        let first = bits_passed(&v, 1500, t0, t0 + NS / 10) as f64;
        assert!(within(first, 10e6, 3.0), "first 100 ms: {first}");
        let cut = 10e6 / 90e6;
        let burst_phase = bits_passed(&v, 1500, t0, t0 + (cut * 1e9) as u64) as f64;
        assert!(within(burst_phase, 10e6 + 10e6 * cut, 3.0), "{burst_phase}");
        // Then the average.
        let later = bits_passed(&v, 1500, t0 + NS / 2, t0 + 3 * NS) as f64 / 2.5;
        assert!(within(later, 10e6, 2.0), "{later}");
        // In all: B + avg × 3 s.
        let total = bits_passed(&v, 1500, 0, u64::MAX) as f64;
        assert!(within(total, 10e6 + 30e6, 2.0), "{total}");
    }

    #[test]
    fn peak_caps_instantaneous_rate() {
        // A huge burst: only the peak bucket limits for the whole test.
        let c = cfg(50, 100, 1000);
        let mut m = Meter::new(c, NS, 0);
        let v = offer(&mut m, 1500, 1_000_000_000, NS, NS / 2);
        let peak_depth_bits = (100e6 * 0.002) as u64;
        let passed: Vec<u64> = v.iter().filter(|p| p.1).map(|p| p.0).collect();
        // Any window [a, b): at most peak × (b − a) + peak depth (+ one packet of rounding).
        for w in [NS / 1000, NS / 100, NS / 10] {
            for (i, &a) in passed.iter().enumerate().step_by(7) {
                let n = passed[i..].iter().take_while(|&&t| t < a + w).count() as u64;
                let max = 100_000_000 * w / NS + peak_depth_bits + 1500 * 8;
                assert!(n * 1500 * 8 <= max, "window {w} at {a}: {n} packets");
            }
        }
        let total = bits_passed(&v, 1500, 0, u64::MAX) as f64;
        assert!(within(total, 100e6 / 2.0, 1.0), "{total}");
    }

    #[test]
    fn pacing_at_exactly_the_average_passes() {
        // Integral interval: 1500 B at 10 Mbit/s = every 1.2 ms.
        let mut m = Meter::new(cfg(10, 10, 0), NS, 0);
        let v = offer(&mut m, 1500, 10_000_000, 0, 10 * NS);
        assert!(v.iter().all(|p| p.1));
        // Fractional interval (1000 B at 3 Mbit/s = 2.666… ms), rounded down.
        let mut m = Meter::new(cfg(3, 3, 0), NS, 0);
        let v = offer(&mut m, 1000, 3_000_000, 0, 10 * NS);
        assert!(v.iter().all(|p| p.1));
        // Jumbo frames larger than the minimum depth, at the average rate.
        let mut m = Meter::new(cfg(1, 1, 0), NS, 0);
        let v = offer(&mut m, 9000, 1_000_000, 0, 10 * NS);
        assert!(v.iter().all(|p| p.1));
        // Jitter of up to ±0.5 ms around the ideal send times: nearly everything passes.
        let mut m = Meter::new(cfg(10, 10, 0), NS, 0);
        let mut x = 12345u64;
        let mut passed = 0;
        let n = 10_000u64;
        for i in 0..n {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let jitter = (x >> 33) % 1_000_000;
            let t = (i + 1) * 1_200_000 + jitter - 500_000;
            passed += m.admit(1500, t) as u64;
        }
        assert!(passed >= n * 999 / 1000, "{passed}");
    }

    #[test]
    fn reconfigure_clamps_and_changes_rate() {
        let mut m = Meter::new(cfg(100, 200, 100), NS, 0);
        assert_eq!(m.priority(), Priority::Medium);
        // Full 100 Mbit burst available; lower to 10 Mbit/s with no burst.
        let new = MeterConfig {
            priority: Priority::High,
            ..cfg(10, 10, 0)
        };
        m.reconfigure(new, NS);
        assert_eq!(m.priority(), Priority::High);
        assert_eq!(m.config(), &new);
        // At once, only the new (small) depth passes: max(2 ms × 10 Mbit/s, 3 × 1518 B).
        let mut n = 0;
        while m.admit(1500, NS) {
            n += 1;
        }
        assert_eq!(n, 3);
        let v = offer(&mut m, 1500, 100_000_000, NS, 10 * NS);
        let rate = bits_passed(&v, 1500, 0, u64::MAX) as f64 / 10.0;
        assert!(within(rate, 10e6, 2.0), "{rate}");
        // Raising the rate: tokens are not invented, the new rate applies from now.
        m.reconfigure(cfg(50, 50, 0), 11 * NS);
        let v = offer(&mut m, 1500, 100_000_000, 11 * NS, 10 * NS);
        let rate = bits_passed(&v, 1500, 0, u64::MAX) as f64 / 10.0;
        assert!(within(rate, 50e6, 2.0), "{rate}");
        // Average 0 blocks everything.
        m.reconfigure(cfg(0, 0, 0), 30 * NS);
        assert!(!m.admit(64, 40 * NS));
        assert!(!Meter::new(cfg(0, 0, 0), NS, 0).admit(64, NS));
    }

    #[test]
    fn admit_burst_equals_sequential_admit() {
        let c = cfg(20, 40, 1);
        let mut a = Meter::new(c, NS, 1000);
        let mut b = Meter::new(c, NS, 1000);
        let mut x = 99u64;
        let mut next = || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            x >> 33
        };
        let mut now = 1000u64;
        let mut some_dropped = false;
        for _ in 0..5000 {
            // Mostly forward, sometimes backward (ignored), irregular steps.
            let step = next() % 400_000;
            now = if next() % 20 == 0 {
                now.saturating_sub(step)
            } else {
                now + step
            };
            let n = (next() % 65) as usize;
            let lens: Vec<u32> = (0..n).map(|_| 60 + (next() % 9000) as u32).collect();
            let mask = a.admit_burst(&lens, now);
            let mut want = 0u64;
            for (i, &l) in lens.iter().enumerate() {
                if b.admit(l, now) {
                    want |= 1 << i;
                }
            }
            assert_eq!(mask, want, "now {now} lens {lens:?} a {a:?} b {b:?}");
            if n < 64 {
                assert_eq!(mask >> n, 0);
            }
            some_dropped |= mask.count_ones() < n as u32;
        }
        assert!(some_dropped);
        assert_eq!(a.stats(), b.stats());
        assert!(a.stats().passed_pkts > 0 && a.stats().dropped_pkts > 0);
    }

    #[test]
    fn clock_edge_cases() {
        // TSC-like clock, very long idle: no overflow, buckets just full.
        let tps = 3_000_000_000;
        let mut m = Meter::new(cfg(1000, 10_000, 100), tps, 5);
        assert!(m.admit(1500, u64::MAX - 10));
        assert!(m.admit(1500, u64::MAX));
        // Drain, then a small backward step gives nothing and does not move the reference.
        let mut m = Meter::new(cfg(10, 10, 0), NS, 10 * NS);
        while m.admit(1500, 10 * NS) {}
        assert!(!m.admit(1500, 10 * NS - 1_000_000));
        // 1.2 ms after the reference (not after the backward time) one packet is earned.
        assert!(!m.admit(1500, 10 * NS + 1_100_000));
        assert!(m.admit(1500, 10 * NS + 1_200_000));
        // A large backward jump resynchronises: time counts from the new clock.
        assert!(!m.admit(1500, NS));
        assert!(m.admit(1500, NS + 1_200_000));
        assert!(!m.admit(1500, NS + 1_200_000));
    }
}
