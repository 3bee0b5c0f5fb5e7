//! The MAC learning table: which port a (VLAN domain, MAC) was last seen on.
//!
//! One [`MacTable`] is shared (`&MacTable`, `Send + Sync`) by every forwarding thread; [`learn`]
//! (per received frame, source MAC) and [`lookup`] (per frame, destination MAC) take no lock and,
//! in the common case, write nothing shared.
//!
//! # Layout
//!
//! A fixed array of buckets (set-associative, [`WAYS`] slots each; the bucket count is a power of
//! two). A (domain, MAC) hashes — with a per-table random seed, so a flooder cannot aim at one
//! bucket — to exactly one bucket and lives in one of its slots; a bucket whose slots are all
//! taken by live entries refuses new MACs ([`LearnOutcome::TableFull`]) rather than evicting
//! entries that are in use. Each slot is three `AtomicU64`:
//!
//! | word | contents |
//! |---|---|
//! | `key` | bit 63 valid, bit 62 static, bits 0–47 the MAC; 0 = free slot |
//! | `dp` | domain:32 (high), port:32 (low) |
//! | `seen` | last refresh time in table time units (`now_ns >> shift`) |
//!
//! # Concurrency
//!
//! Each bucket has a sequence word. Writers that change which MAC a slot holds, or the port of a
//! MAC (insert, move, remove, static changes), take the bucket's lock by making the sequence odd,
//! write, and make it even again (a seqlock). Readers read the bucket's slots between two loads
//! of the sequence and retry a few times if it was odd or changed; if they never get a stable
//! view they report a miss. So a reader can never pair a MAC with the port of another MAC.
//!
//! The one unlocked write is the refresh of `seen` by [`learn`] for a MAC already on the same
//! port. It is done only when the time unit changed (at most about once a second per entry, see
//! below), so steady traffic keeps the cache line clean across threads; and it is a `fetch_max`,
//! which cannot lower the time and never touches the port. If the slot was reused for another MAC
//! in the meantime, the worst case is that entry's age being reset, never a wrong port.
//!
//! # Time
//!
//! Times are caller-supplied nanoseconds (any monotonic epoch). They are stored in units of
//! `2^shift` ns, with the unit chosen as the largest power of two at most `aging_ns / 64`, capped
//! at 2^30 ns (about 1.07 s). An entry expires after more than `aging_ns` and less than
//! `aging_ns` + 2 units without refresh: never early, at most ~3 % (or 2.1 s) late. An expired
//! entry is a miss at once, and is removed by [`age`] or reused by a later insert.
//! `aging_ns == 0` disables aging.
//!
//! # Per-port limits
//!
//! Learned (dynamic) entries are counted per port in a fixed array of [`MAX_PORTS`] counters;
//! static entries are not counted. Ports `>= MAX_PORTS` are neither counted nor limited.
//!
//! [`learn`]: MacTable::learn
//! [`lookup`]: MacTable::lookup
//! [`age`]: MacTable::age

use model::Mac;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Ports with an id below this have a learned-MAC counter and obey `per_port_limit`.
pub const MAX_PORTS: usize = 4096;
/// Slots per bucket: a (domain, MAC) can only live in the `WAYS` slots of its bucket.
pub const WAYS: usize = 8;

const VALID: u64 = 1 << 63;
const STATIC: u64 = 1 << 62;
const MAC_MASK: u64 = (1 << 48) - 1;
/// Largest time unit: 2^30 ns ≈ 1.07 s.
const MAX_SHIFT: u32 = 30;
/// Attempts of a packet-path reader to get a stable view of a bucket before reporting a miss.
const READ_TRIES: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacConfig {
    /// Number of slots, rounded up to a power of two and to at least [`WAYS`].
    pub capacity: usize,
    /// Time without traffic after which a learned entry expires; 0 = never.
    pub aging_ns: u64,
    /// Most learned MACs per port; 0 = unlimited.
    pub per_port_limit: u32,
}

impl Default for MacConfig {
    fn default() -> Self {
        MacConfig {
            capacity: 65536,
            aging_ns: 300_000_000_000,
            per_port_limit: 1024,
        }
    }
}

/// What [`MacTable::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnOutcome {
    /// The MAC was not in the table (or its entry had expired) and is now learned on the port.
    New,
    /// Already known on this port; its age was reset.
    Refreshed,
    /// Known on another port (a live entry): it now points to the new port.
    Moved { from: u32 },
    /// The port already has `per_port_limit` learned MACs: not learned (the caller decides
    /// whether to drop or flood). Also returned for a move onto a port at its limit; the entry
    /// then stays on its old port.
    LimitReached,
    /// The MAC's bucket holds only live entries: not learned.
    TableFull,
    /// The entry is static: not changed.
    Static,
    /// Multicast/broadcast or all-zero source MAC: never learned.
    Ignored,
}

/// One entry as shown by [`MacTable::dump`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacEntry {
    pub domain: u32,
    pub mac: Mac,
    pub port: u32,
    /// Time since the last refresh, at the table's time granularity; 0 for static entries.
    pub age_ns: u64,
    pub is_static: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MacStats {
    /// Occupied slots (including expired entries not yet removed).
    pub entries: u64,
    /// New learned entries.
    pub learned: u64,
    /// MAC moves between ports.
    pub moves: u64,
    /// Learns refused by the per-port limit.
    pub limit_drops: u64,
    /// Learns refused because the MAC's bucket was full.
    pub table_full: u64,
    /// Learned entries that expired (removed by `age` or replaced after expiring).
    pub aged_out: u64,
}

struct MacSlot {
    key: AtomicU64,
    dp: AtomicU64,
    seen: AtomicU64,
}

#[repr(align(64))]
struct MacBucket {
    /// Seqlock: odd while a writer holds the bucket.
    seq: AtomicU64,
    slots: [MacSlot; WAYS],
}

/// A consistent copy of one slot.
#[derive(Clone, Copy)]
struct Snap {
    key: u64,
    dp: u64,
    seen: u64,
}

impl Snap {
    fn valid(&self) -> bool {
        self.key & VALID != 0
    }
    fn is_static(&self) -> bool {
        self.key & STATIC != 0
    }
    fn domain(&self) -> u32 {
        (self.dp >> 32) as u32
    }
    fn port(&self) -> u32 {
        self.dp as u32
    }
    fn is(&self, domain: u32, mac: u64) -> bool {
        self.key & !STATIC == VALID | mac && self.domain() == domain
    }
}

impl MacSlot {
    fn snap(&self) -> Snap {
        Snap {
            key: self.key.load(Ordering::Relaxed),
            dp: self.dp.load(Ordering::Relaxed),
            seen: self.seen.load(Ordering::Relaxed),
        }
    }
}

/// Holds a bucket's seqlock; releases it on drop.
struct Locked<'a> {
    b: &'a MacBucket,
    seq: u64,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.b
            .seq
            .store(self.seq.wrapping_add(1), Ordering::Release);
    }
}

#[repr(align(64))]
#[derive(Default)]
struct MacCounters {
    entries: AtomicUsize,
    learned: AtomicU64,
    moves: AtomicU64,
    limit_drops: AtomicU64,
    table_full: AtomicU64,
    aged_out: AtomicU64,
}

/// The shared MAC table. See the module documentation.
pub struct MacTable {
    buckets: Box<[MacBucket]>,
    bucket_mask: usize,
    seed: u64,
    shift: u32,
    /// Expired when more than this many time units passed since the last refresh; 0 = never.
    aging_units: u64,
    limit: u32,
    counts: Box<[AtomicU32]>,
    c: MacCounters,
}

fn pause(i: u32) {
    if i < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl MacTable {
    pub fn new(cfg: MacConfig) -> Self {
        let slots = cfg.capacity.max(WAYS).next_power_of_two();
        let nb = slots / WAYS;
        let buckets = (0..nb)
            .map(|_| MacBucket {
                seq: AtomicU64::new(0),
                slots: std::array::from_fn(|_| MacSlot {
                    key: AtomicU64::new(0),
                    dp: AtomicU64::new(0),
                    seen: AtomicU64::new(0),
                }),
            })
            .collect();
        let shift = match cfg.aging_ns / 64 {
            0 if cfg.aging_ns == 0 => MAX_SHIFT,
            0 => 0,
            per => (63 - per.leading_zeros()).min(MAX_SHIFT),
        };
        MacTable {
            buckets,
            bucket_mask: nb - 1,
            seed: RandomState::new().hash_one(0x5eed_u64),
            shift,
            aging_units: cfg.aging_ns.div_ceil(1 << shift),
            limit: cfg.per_port_limit,
            counts: (0..MAX_PORTS).map(|_| AtomicU32::new(0)).collect(),
            c: MacCounters::default(),
        }
    }

    fn bucket(&self, domain: u32, mac: u64) -> &MacBucket {
        let h = mix(mac ^ (domain as u64).rotate_left(48) ^ self.seed);
        &self.buckets[h as usize & self.bucket_mask]
    }

    fn units(&self, now_ns: u64) -> u64 {
        now_ns >> self.shift
    }

    fn expired(&self, s: &Snap, now_u: u64) -> bool {
        !s.is_static() && self.aging_units != 0 && now_u.saturating_sub(s.seen) > self.aging_units
    }

    /// Runs `f` on a stable view of `b`; `None` if none was obtained in `tries` attempts.
    fn read<R>(b: &MacBucket, tries: u32, f: impl Fn(&MacBucket) -> R) -> Option<R> {
        for i in 0..tries {
            let s1 = b.seq.load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let r = f(b);
                fence(Ordering::Acquire);
                if b.seq.load(Ordering::Relaxed) == s1 {
                    return Some(r);
                }
            }
            pause(i);
        }
        None
    }

    /// A stable copy of a whole bucket (control path: retries until it gets one).
    fn read_all(b: &MacBucket) -> [Snap; WAYS] {
        Self::read(b, u32::MAX, |b| std::array::from_fn(|i| b.slots[i].snap()))
            .expect("bucket never stable")
    }

    fn lock(b: &MacBucket) -> Locked<'_> {
        let mut i = 0;
        loop {
            let s = b.seq.load(Ordering::Relaxed);
            if s & 1 == 0
                && b.seq
                    .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                // Orders the sequence bump before the slot writes, for readers (seqlock writer).
                fence(Ordering::Release);
                return Locked { b, seq: s + 1 };
            }
            pause(i);
            i = i.saturating_add(1);
        }
    }

    /// Takes one unit of `port`'s learned count, unless it is at the limit.
    fn reserve(&self, port: u32) -> bool {
        let Some(c) = self.counts.get(port as usize) else {
            return true;
        };
        if self.limit == 0 {
            c.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let limit = self.limit;
        c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
    }

    fn release(&self, port: u32) {
        if let Some(c) = self.counts.get(port as usize) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Learns that `mac` (a frame's source) was seen on `port` in `domain` at `now_ns`.
    pub fn learn(&self, domain: u32, mac: Mac, port: u32, now_ns: u64) -> LearnOutcome {
        if mac.is_multicast() || mac == Mac::ZERO {
            return LearnOutcome::Ignored;
        }
        let m = mac.to_u64();
        let b = self.bucket(domain, m);
        let now_u = self.units(now_ns);

        // Fast path: a live entry on the same port; at most one `fetch_max` on `seen`.
        let found = Self::read(b, READ_TRIES, |b| {
            b.slots
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.snap()))
                .find(|(_, s)| s.is(domain, m))
        });
        if let Some(Some((i, s))) = found {
            if s.is_static() {
                return LearnOutcome::Static;
            }
            if s.port() == port && !self.expired(&s, now_u) {
                let seen = &b.slots[i].seen;
                if seen.load(Ordering::Relaxed) < now_u {
                    seen.fetch_max(now_u, Ordering::Relaxed);
                }
                return LearnOutcome::Refreshed;
            }
        }
        self.learn_locked(b, domain, m, port, now_u)
    }

    fn learn_locked(
        &self,
        b: &MacBucket,
        domain: u32,
        m: u64,
        port: u32,
        now_u: u64,
    ) -> LearnOutcome {
        let _g = Self::lock(b);
        let snaps: [Snap; WAYS] = std::array::from_fn(|i| b.slots[i].snap());
        let dp = ((domain as u64) << 32) | port as u64;
        if let Some(i) = snaps.iter().position(|s| s.is(domain, m)) {
            let s = snaps[i];
            let slot = &b.slots[i];
            if s.is_static() {
                return LearnOutcome::Static;
            }
            let expired = self.expired(&s, now_u);
            if s.port() == port {
                slot.seen.fetch_max(now_u, Ordering::Relaxed);
                if expired {
                    self.c.aged_out.fetch_add(1, Ordering::Relaxed);
                    self.c.learned.fetch_add(1, Ordering::Relaxed);
                    return LearnOutcome::New;
                }
                return LearnOutcome::Refreshed;
            }
            if !self.reserve(port) {
                self.c.limit_drops.fetch_add(1, Ordering::Relaxed);
                return LearnOutcome::LimitReached;
            }
            self.release(s.port());
            slot.dp.store(dp, Ordering::Relaxed);
            slot.seen.store(now_u, Ordering::Relaxed);
            if expired {
                self.c.aged_out.fetch_add(1, Ordering::Relaxed);
                self.c.learned.fetch_add(1, Ordering::Relaxed);
                return LearnOutcome::New;
            }
            self.c.moves.fetch_add(1, Ordering::Relaxed);
            return LearnOutcome::Moved { from: s.port() };
        }

        if !self.reserve(port) {
            self.c.limit_drops.fetch_add(1, Ordering::Relaxed);
            return LearnOutcome::LimitReached;
        }
        let free = snaps.iter().position(|s| !s.valid());
        let victim = || {
            snaps
                .iter()
                .position(|s| s.valid() && self.expired(s, now_u))
        };
        let Some(i) = free.or_else(victim) else {
            self.release(port);
            self.c.table_full.fetch_add(1, Ordering::Relaxed);
            return LearnOutcome::TableFull;
        };
        if snaps[i].valid() {
            self.release(snaps[i].port());
            self.c.aged_out.fetch_add(1, Ordering::Relaxed);
        } else {
            self.c.entries.fetch_add(1, Ordering::Relaxed);
        }
        let slot = &b.slots[i];
        slot.dp.store(dp, Ordering::Relaxed);
        slot.seen.store(now_u, Ordering::Relaxed);
        slot.key.store(VALID | m, Ordering::Relaxed);
        self.c.learned.fetch_add(1, Ordering::Relaxed);
        LearnOutcome::New
    }

    /// The port of `mac` in `domain`, if known and not expired.
    pub fn lookup(&self, domain: u32, mac: Mac, now_ns: u64) -> Option<u32> {
        let m = mac.to_u64() & MAC_MASK;
        let b = self.bucket(domain, m);
        let s = Self::read(b, READ_TRIES, |b| {
            b.slots.iter().map(MacSlot::snap).find(|s| s.is(domain, m))
        })??;
        (!self.expired(&s, self.units(now_ns))).then_some(s.port())
    }

    /// Binds `mac` to `port` for good (controller-known MACs): never aged, never moved by
    /// learning. Replaces a learned entry of the same MAC. If the bucket is full, the entry idle
    /// the longest is evicted; returns false only if every slot of the bucket is static.
    pub fn set_static(&self, domain: u32, mac: Mac, port: u32) -> bool {
        let m = mac.to_u64();
        let b = self.bucket(domain, m);
        let _g = Self::lock(b);
        let snaps: [Snap; WAYS] = std::array::from_fn(|i| b.slots[i].snap());
        let i = match snaps.iter().position(|s| s.is(domain, m)) {
            Some(i) => {
                if !snaps[i].is_static() {
                    self.release(snaps[i].port());
                }
                i
            }
            None => {
                let free = snaps.iter().position(|s| !s.valid());
                let oldest = || {
                    (0..WAYS)
                        .filter(|&i| !snaps[i].is_static())
                        .min_by_key(|&i| snaps[i].seen)
                };
                let Some(i) = free.or_else(oldest) else {
                    return false;
                };
                if snaps[i].valid() {
                    self.release(snaps[i].port());
                } else {
                    self.c.entries.fetch_add(1, Ordering::Relaxed);
                }
                i
            }
        };
        let slot = &b.slots[i];
        slot.dp
            .store(((domain as u64) << 32) | port as u64, Ordering::Relaxed);
        slot.seen.store(0, Ordering::Relaxed);
        slot.key.store(VALID | STATIC | m, Ordering::Relaxed);
        true
    }

    /// Removes a static entry; a learned entry of that MAC is left alone. True if removed.
    pub fn remove_static(&self, domain: u32, mac: Mac) -> bool {
        let m = mac.to_u64();
        self.remove_in(self.bucket(domain, m), |s| s.is_static() && s.is(domain, m)) > 0
    }

    /// Removes the learned entries of bucket `b` matching `pred` (under the lock); returns how
    /// many were removed. Static entries are only removed if `pred` accepts them.
    fn remove_in(&self, b: &MacBucket, pred: impl Fn(&Snap) -> bool) -> usize {
        // Unlocked look first, so sweeps do not disturb readers of buckets with nothing to do.
        if !b.slots.iter().any(|s| {
            let s = s.snap();
            s.valid() && pred(&s)
        }) {
            return 0;
        }
        let _g = Self::lock(b);
        let mut n = 0;
        for slot in &b.slots {
            let s = slot.snap();
            if s.valid() && pred(&s) {
                slot.key.store(0, Ordering::Relaxed);
                if !s.is_static() {
                    self.release(s.port());
                }
                n += 1;
            }
        }
        self.c.entries.fetch_sub(n, Ordering::Relaxed);
        n
    }

    /// Removes expired learned entries; returns how many. (An entry refreshed by another thread
    /// at the very moment it is swept may still be removed; the next frame learns it again.)
    pub fn age(&self, now_ns: u64) -> usize {
        if self.aging_units == 0 {
            return 0;
        }
        let now_u = self.units(now_ns);
        let n: usize = self
            .buckets
            .iter()
            .map(|b| self.remove_in(b, |s| self.expired(s, now_u)))
            .sum();
        self.c.aged_out.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Removes the learned entries on `port` (static ones stay); returns how many.
    pub fn flush_port(&self, port: u32) -> usize {
        self.buckets
            .iter()
            .map(|b| self.remove_in(b, |s| !s.is_static() && s.port() == port))
            .sum()
    }

    /// Removes the learned entries of `domain` (static ones stay); returns how many.
    pub fn flush_domain(&self, domain: u32) -> usize {
        self.buckets
            .iter()
            .map(|b| self.remove_in(b, |s| !s.is_static() && s.domain() == domain))
            .sum()
    }

    /// Every live entry (expired ones are left out), in table order.
    pub fn dump(&self, now_ns: u64) -> Vec<MacEntry> {
        let now_u = self.units(now_ns);
        let mut out = Vec::new();
        for b in self.buckets.iter() {
            for s in Self::read_all(b) {
                if !s.valid() || self.expired(&s, now_u) {
                    continue;
                }
                let age_u = if s.is_static() {
                    0
                } else {
                    now_u.saturating_sub(s.seen)
                };
                out.push(MacEntry {
                    domain: s.domain(),
                    mac: Mac::from_u64(s.key & MAC_MASK),
                    port: s.port(),
                    age_ns: age_u.checked_shl(self.shift).unwrap_or(u64::MAX),
                    is_static: s.is_static(),
                });
            }
        }
        out
    }

    pub fn stats(&self) -> MacStats {
        MacStats {
            entries: self.len() as u64,
            learned: self.c.learned.load(Ordering::Relaxed),
            moves: self.c.moves.load(Ordering::Relaxed),
            limit_drops: self.c.limit_drops.load(Ordering::Relaxed),
            table_full: self.c.table_full.load(Ordering::Relaxed),
            aged_out: self.c.aged_out.load(Ordering::Relaxed),
        }
    }

    /// Occupied slots, static entries and expired-but-not-yet-removed ones included.
    pub fn len(&self) -> usize {
        self.c.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of slots (the configured capacity rounded up).
    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    /// Learned (non-static) MACs currently counted against `port`; 0 for ports `>= MAX_PORTS`.
    pub fn learned_on(&self, port: u32) -> u32 {
        self.counts
            .get(port as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn mac(n: u64) -> Mac {
        // Locally administered unicast.
        Mac::from_u64(0x0200_0000_0000 | n)
    }

    fn table(capacity: usize, limit: u32) -> MacTable {
        MacTable::new(MacConfig {
            capacity,
            aging_ns: 300 * S,
            per_port_limit: limit,
        })
    }

    #[test]
    fn is_send_sync() {
        fn f<T: Send + Sync>() {}
        f::<MacTable>();
    }

    #[test]
    fn learn_and_lookup() {
        let t = table(1024, 0);
        assert_eq!(t.lookup(1, mac(1), 0), None);
        assert_eq!(t.learn(1, mac(1), 7, 0), LearnOutcome::New);
        assert_eq!(t.lookup(1, mac(1), 0), Some(7));
        assert_eq!(t.learn(1, mac(1), 7, S), LearnOutcome::Refreshed);
        assert_eq!(t.learn(1, mac(2), 8, S), LearnOutcome::New);
        assert_eq!(t.lookup(1, mac(2), S), Some(8));
        assert_eq!(t.lookup(1, mac(3), S), None);
        assert_eq!(t.len(), 2);
        assert_eq!(t.learned_on(7), 1);
        assert_eq!(t.learned_on(8), 1);
        let st = t.stats();
        assert_eq!((st.entries, st.learned, st.moves), (2, 2, 0));
        let mut d = t.dump(3 * S);
        d.sort_by_key(|e| e.mac);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].mac, mac(1));
        assert_eq!(d[0].port, 7);
        assert!(!d[0].is_static);
        // Refreshed at 1 s, dumped at 3 s; granularity is ~1.07 s.
        assert!(d[0].age_ns >= S && d[0].age_ns <= 3 * S, "{}", d[0].age_ns);
    }

    #[test]
    fn multicast_and_zero_sources_are_ignored() {
        let t = table(64, 0);
        assert_eq!(t.learn(1, Mac::BROADCAST, 1, 0), LearnOutcome::Ignored);
        assert_eq!(
            t.learn(1, Mac([0x01, 0, 0x5e, 0, 0, 1]), 1, 0),
            LearnOutcome::Ignored
        );
        assert_eq!(t.learn(1, Mac::ZERO, 1, 0), LearnOutcome::Ignored);
        assert!(t.is_empty());
        assert_eq!(t.learned_on(1), 0);
    }

    #[test]
    fn domains_are_isolated() {
        let t = table(1024, 0);
        assert_eq!(t.learn(100, mac(1), 1, 0), LearnOutcome::New);
        assert_eq!(t.lookup(200, mac(1), 0), None);
        assert_eq!(t.learn(200, mac(1), 2, 0), LearnOutcome::New);
        assert_eq!(t.lookup(100, mac(1), 0), Some(1));
        assert_eq!(t.lookup(200, mac(1), 0), Some(2));
        // Domains differing only above bit 16 are distinct too.
        assert_eq!(t.learn(0x1_0064, mac(1), 3, 0), LearnOutcome::New);
        assert_eq!(t.lookup(0x1_0064, mac(1), 0), Some(3));
        assert_eq!(t.lookup(100, mac(1), 0), Some(1));
        assert_eq!(t.flush_domain(200), 1);
        assert_eq!(t.lookup(200, mac(1), 0), None);
        assert_eq!(t.lookup(100, mac(1), 0), Some(1));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn aging() {
        let t = table(1024, 0);
        t.learn(1, mac(1), 1, 0);
        t.learn(1, mac(2), 2, 0);
        assert_eq!(t.lookup(1, mac(1), 299 * S), Some(1));
        // Refresh mac 2 at 200 s.
        assert_eq!(t.learn(1, mac(2), 2, 200 * S), LearnOutcome::Refreshed);
        // Expires within aging + 2 time units (~2.1 s).
        assert_eq!(t.lookup(1, mac(1), 303 * S), None);
        assert_eq!(t.lookup(1, mac(2), 303 * S), Some(2));
        assert_eq!(t.dump(303 * S).len(), 1);
        // Not removed yet: still counted until age() or reuse.
        assert_eq!(t.len(), 2);
        assert_eq!(t.age(303 * S), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.learned_on(1), 0);
        assert_eq!(t.stats().aged_out, 1);
        assert_eq!(t.age(303 * S), 0);
        assert_eq!(t.age(600 * S), 1);
        assert!(t.is_empty());
        // Never early, even at fine granularity.
        let t = MacTable::new(MacConfig {
            capacity: 64,
            aging_ns: 1_000_000,
            per_port_limit: 0,
        });
        t.learn(1, mac(1), 1, 123_456);
        assert_eq!(t.lookup(1, mac(1), 123_456 + 1_000_000), Some(1));
        assert_eq!(t.lookup(1, mac(1), 123_456 + 1_100_000), None);
        // An expired entry learned again is New.
        assert_eq!(t.learn(1, mac(1), 1, 5_000_000), LearnOutcome::New);
        assert_eq!(t.learn(1, mac(1), 2, 10_000_000), LearnOutcome::New);
        assert_eq!(t.lookup(1, mac(1), 10_000_000), Some(2));
        assert_eq!((t.learned_on(1), t.learned_on(2)), (0, 1));
        assert_eq!(t.len(), 1);
        // aging_ns == 0: never expires.
        let t = MacTable::new(MacConfig {
            capacity: 64,
            aging_ns: 0,
            per_port_limit: 0,
        });
        t.learn(1, mac(1), 1, 0);
        assert_eq!(t.lookup(1, mac(1), u64::MAX), Some(1));
        assert_eq!(t.age(u64::MAX), 0);
    }

    #[test]
    fn refresh_writes_only_when_time_unit_changes() {
        let t = table(64, 0);
        t.learn(1, mac(1), 1, 0);
        let b = t.bucket(1, mac(1).to_u64());
        let seq = b.seq.load(Ordering::Relaxed);
        let i = b
            .slots
            .iter()
            .position(|s| s.snap().is(1, mac(1).to_u64()))
            .unwrap();
        let seen0 = b.slots[i].seen.load(Ordering::Relaxed);
        for k in 0..100 {
            assert_eq!(t.learn(1, mac(1), 1, k * 1000), LearnOutcome::Refreshed);
        }
        assert_eq!(b.slots[i].seen.load(Ordering::Relaxed), seen0);
        assert_eq!(t.learn(1, mac(1), 1, 10 * S), LearnOutcome::Refreshed);
        assert!(b.slots[i].seen.load(Ordering::Relaxed) > seen0);
        // A refresh never takes the lock.
        assert_eq!(b.seq.load(Ordering::Relaxed), seq);
        // An older time does not move it back.
        let s = b.slots[i].seen.load(Ordering::Relaxed);
        t.learn(1, mac(1), 1, S);
        assert_eq!(b.slots[i].seen.load(Ordering::Relaxed), s);
    }

    #[test]
    fn move_detection() {
        let t = table(1024, 0);
        t.learn(5, mac(9), 1, 0);
        assert_eq!(t.learn(5, mac(9), 2, S), LearnOutcome::Moved { from: 1 });
        assert_eq!(t.lookup(5, mac(9), S), Some(2));
        assert_eq!((t.learned_on(1), t.learned_on(2)), (0, 1));
        assert_eq!(t.learn(5, mac(9), 2, S), LearnOutcome::Refreshed);
        assert_eq!(
            t.learn(5, mac(9), 1, 2 * S),
            LearnOutcome::Moved { from: 2 }
        );
        assert_eq!(t.stats().moves, 2);
        assert_eq!(t.stats().learned, 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn per_port_limit() {
        let t = table(4096, 3);
        for i in 0..3 {
            assert_eq!(t.learn(1, mac(i), 1, 0), LearnOutcome::New);
        }
        assert_eq!(t.learn(1, mac(3), 1, 0), LearnOutcome::LimitReached);
        assert_eq!(t.lookup(1, mac(3), 0), None);
        // Known MACs are still refreshed; other ports are unaffected.
        assert_eq!(t.learn(1, mac(0), 1, 0), LearnOutcome::Refreshed);
        assert_eq!(t.learn(1, mac(3), 2, 0), LearnOutcome::New);
        // A move onto a full port is refused; the entry stays where it was.
        assert_eq!(t.learn(1, mac(3), 1, 0), LearnOutcome::LimitReached);
        assert_eq!(t.lookup(1, mac(3), 0), Some(2));
        assert_eq!(t.stats().limit_drops, 2);
        assert_eq!(t.learned_on(1), 3);
        // Freeing one makes room.
        assert_eq!(t.learn(1, mac(0), 2, 0), LearnOutcome::Moved { from: 1 });
        assert_eq!(t.learn(1, mac(3), 1, 0), LearnOutcome::Moved { from: 2 });
        assert_eq!(t.learned_on(1), 3);
        assert_eq!(t.learned_on(2), 1);
        // Static entries do not count.
        assert!(t.set_static(1, mac(50), 1));
        assert_eq!(t.learned_on(1), 3);
        // Ports beyond MAX_PORTS are not limited nor counted.
        let big = MAX_PORTS as u32 + 5;
        for i in 100..110 {
            assert_eq!(t.learn(1, mac(i), big, 0), LearnOutcome::New);
        }
        assert_eq!(t.learned_on(big), 0);
        assert_eq!(t.flush_port(big), 10);
    }

    #[test]
    fn static_entries() {
        let t = table(1024, 0);
        t.learn(1, mac(1), 3, 0);
        assert_eq!(t.learned_on(3), 1);
        assert!(t.set_static(1, mac(1), 4));
        assert_eq!(t.learned_on(3), 0);
        assert_eq!(t.lookup(1, mac(1), 0), Some(4));
        assert_eq!(t.learn(1, mac(1), 3, S), LearnOutcome::Static);
        assert_eq!(t.learn(1, mac(1), 4, S), LearnOutcome::Static);
        assert_eq!(t.lookup(1, mac(1), S), Some(4));
        // Never aged, never flushed by port or domain.
        assert_eq!(t.age(10_000 * S), 0);
        assert_eq!(t.lookup(1, mac(1), 10_000 * S), Some(4));
        assert_eq!(t.flush_port(4), 0);
        assert_eq!(t.flush_domain(1), 0);
        let d = t.dump(10_000 * S);
        assert_eq!(
            d,
            vec![MacEntry {
                domain: 1,
                mac: mac(1),
                port: 4,
                age_ns: 0,
                is_static: true
            }]
        );
        // Rebinding moves it; remove_static leaves learned entries alone.
        assert!(t.set_static(1, mac(1), 5));
        assert_eq!(t.lookup(1, mac(1), 0), Some(5));
        assert_eq!(t.len(), 1);
        t.learn(1, mac(2), 3, 0);
        assert!(!t.remove_static(1, mac(2)));
        assert!(t.remove_static(1, mac(1)));
        assert!(!t.remove_static(1, mac(1)));
        assert_eq!(t.lookup(1, mac(1), 0), None);
        assert_eq!(t.learn(1, mac(1), 3, 0), LearnOutcome::New);
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().moves, 0);
    }

    #[test]
    fn flush() {
        let t = table(4096, 0);
        for i in 0..30 {
            t.learn((i % 3) as u32, mac(i), (i % 5) as u32, 0);
        }
        assert_eq!(t.len(), 30);
        assert_eq!(t.flush_port(2), 6);
        assert_eq!(t.learned_on(2), 0);
        assert!((0..30)
            .filter(|i| i % 5 == 2)
            .all(|i| t.lookup((i % 3) as u32, mac(i), 0).is_none()));
        assert_eq!(t.flush_domain(0), 8);
        assert_eq!(t.len(), 16);
        assert_eq!(t.dump(0).len(), 16);
        let counted: u32 = (0..5).map(|p| t.learned_on(p)).sum();
        assert_eq!(counted, 16);
    }

    #[test]
    fn table_full() {
        // One bucket of WAYS slots.
        let t = table(1, 0);
        assert_eq!(t.capacity(), WAYS);
        for i in 0..WAYS as u64 {
            assert_eq!(t.learn(1, mac(i), 1, 0), LearnOutcome::New);
        }
        assert_eq!(t.learn(1, mac(100), 2, 0), LearnOutcome::TableFull);
        assert_eq!(t.lookup(1, mac(100), 0), None);
        assert_eq!(t.learned_on(2), 0);
        assert_eq!(t.stats().table_full, 1);
        // Existing entries keep working.
        assert_eq!(t.learn(1, mac(0), 1, 0), LearnOutcome::Refreshed);
        assert_eq!(t.learn(1, mac(0), 3, 0), LearnOutcome::Moved { from: 1 });
        // An expired entry is reused without age().
        for i in 1..WAYS as u64 {
            t.learn(1, mac(i), 1, 200 * S);
        }
        assert_eq!(t.learn(1, mac(100), 2, 400 * S), LearnOutcome::New);
        assert_eq!(t.lookup(1, mac(0), 400 * S), None);
        assert_eq!(t.lookup(1, mac(100), 400 * S), Some(2));
        assert_eq!(t.len(), WAYS);
        assert_eq!(t.learned_on(3), 0);
        assert_eq!(t.stats().aged_out, 1);
        // A static entry evicts the oldest learned one when the bucket is full.
        assert!(t.set_static(1, mac(200), 9));
        assert_eq!(t.lookup(1, mac(200), 400 * S), Some(9));
        assert_eq!(t.len(), WAYS);
        let live = (1..WAYS as u64)
            .filter(|&i| t.lookup(1, mac(i), 400 * S).is_some())
            .count();
        assert_eq!(live, WAYS - 2);
        // A bucket of statics refuses further statics.
        let t = table(1, 0);
        for i in 0..WAYS as u64 {
            assert!(t.set_static(1, mac(i), 1));
        }
        assert!(!t.set_static(1, mac(100), 1));
        assert_eq!(t.learn(1, mac(100), 1, 0), LearnOutcome::TableFull);
    }

    #[test]
    fn many_entries_fill_most_of_the_table() {
        let t = table(4096, 0);
        let n = (0..4096)
            .filter(|&i| t.learn(1, mac(i), 1, 0) == LearnOutcome::New)
            .count();
        assert_eq!(n, t.len());
        // Set-associative with 8 ways: a random fill reaches well over half the slots.
        assert!(n > 2800, "{n}");
        assert!((0..4096).all(|i| t.lookup(1, mac(i), 0).is_none_or(|p| p == 1)));
    }

    /// Ports a MAC may legitimately be on in the concurrent test: 2 candidates per MAC.
    fn port_of(m: u64, thread: u64) -> u32 {
        ((m * 7 + 3) % 1000 * 2 + thread) as u32
    }

    #[test]
    fn concurrent_learn_lookup_never_mixes_macs() {
        // Small table: buckets are shared, slots get reused through flush and aging.
        let t = MacTable::new(MacConfig {
            capacity: 64,
            aging_ns: 1_000_000,
            per_port_limit: 0,
        });
        const N: u64 = 48;
        const ITERS: u64 = 60_000;
        // Thread 0 learns MACs 0..N (on port_of(m, 0)); thread 1 learns MACs N/2..N+N/2 (on
        // port_of(m, 1)): half disjoint, half overlapping (moving back and forth).
        let allowed = |m: u64, p: u32| {
            (m < N && p == port_of(m, 0)) || ((N / 2..N + N / 2).contains(&m) && p == port_of(m, 1))
        };
        std::thread::scope(|s| {
            for th in 0..2u64 {
                let t = &t;
                s.spawn(move || {
                    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ th;
                    for it in 0..ITERS {
                        x = x
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        let r = x >> 33;
                        let now = it * 1000;
                        let m = th * (N / 2) + r % N;
                        let dom = (r >> 20) as u32 % 2;
                        t.learn(dom, mac(m), port_of(m, th), now);
                        let q = (r >> 8) % (2 * N);
                        if let Some(p) = t.lookup(dom, mac(q), now) {
                            assert!(allowed(q, p), "mac {q} -> port {p}");
                        }
                        match (th, it % 997) {
                            (1, 0) => {
                                t.flush_port(port_of(r % N, 1));
                            }
                            (0, 500) => {
                                t.age(now);
                            }
                            (1, 300) => {
                                t.flush_domain(dom);
                            }
                            _ => {}
                        }
                    }
                });
            }
        });
        // Counters stay consistent with the contents.
        let d = t.dump(0);
        assert!(d.iter().all(|e| allowed(e.mac.to_u64() & 0xffff, e.port)));
        assert_eq!(t.len(), d.len());
        let total: u32 = (0..MAX_PORTS as u32).map(|p| t.learned_on(p)).sum();
        assert_eq!(total as usize, d.len());
        assert_eq!(t.age(u64::MAX), d.len());
        assert!(t.is_empty());
        assert_eq!(
            (0..MAX_PORTS as u32).map(|p| t.learned_on(p)).sum::<u32>(),
            0
        );
    }
}
