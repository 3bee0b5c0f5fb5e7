//! The per-shard hash table: open addressing with linear probing and backward-shift deletion (no
//! tombstones, so the heavy insert/delete churn of connection tracking never degrades probe lengths).
//!
//! A slot is eight `u64` words (one cache line), stored in one flat `Vec<u64>` whose usable part starts
//! on a 64-byte boundary, so that every lookup of a present entry touches one line in the common
//! case.
//!
//! Slot layout (words):
//! | word | contents |
//! |---|---|
//! | 0–1 | address of the "lo" endpoint (IPv4 in the low 32 bits of word 1) |
//! | 2–3 | address of the "hi" endpoint |
//! | 4 | `port_lo`:16, `port_hi`:16, `zone`:16, `proto`:8, `kflags`:8 (never zero when occupied) |
//! | 5 | `hash`:32, `state`:8, `cflags`:8, unused:16 |
//! | 6 | expiry time (ns, caller's clock) |
//! | 7 | packets in the original direction:32, packets in the reply direction:32 |
//!
//! Words 0–4 are the connection's key; word 4 is never zero for an occupied slot (its `kflags` byte
//! always has [`KF_USED`]), and is all zero for an empty one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Words per slot.
pub(super) const W: usize = 8;
/// Words of the key at the start of a slot.
pub(super) const KW: usize = 5;
pub(super) type Slot = [u64; W];
pub(super) type KeyWords = [u64; KW];

/// Bit of `kflags` present in every occupied slot.
pub(super) const KF_USED: u64 = 0x80;

#[inline(always)]
pub(super) fn slot_hash(s: &Slot) -> u32 {
    (s[5] >> 32) as u32
}

/// The slots of one shard. The words are atomics so that [`ShardTable::touch`] may read them without the
/// shard's lock (a prefetch whose value is ignored); every other method must only be called with the
/// shard's lock held, which orders all accesses (relaxed loads and stores compile to plain moves).
/// The capacity is fixed at creation.
pub(super) struct ShardTable {
    words: Box<[AtomicU64]>,
    /// Index in `words` of slot 0 (so that slot 0 starts on a 64-byte boundary).
    base: usize,
    cap: usize,
}

impl ShardTable {
    pub(super) fn with_slots(cap: usize) -> ShardTable {
        let cap = cap.max(8);
        let words: Box<[AtomicU64]> = (0..cap * W + W).map(|_| AtomicU64::new(0)).collect();
        let misalign = words.as_ptr() as usize % 64;
        let base = ((64 - misalign) % 64) / 8;
        ShardTable { words, base, cap }
    }

    #[inline(always)]
    pub(super) fn cap(&self) -> usize {
        self.cap
    }

    /// Most entries the table takes (load factor 7/8).
    #[inline(always)]
    pub(super) fn max_len(&self) -> usize {
        self.cap * 7 / 8
    }

    #[inline(always)]
    fn words(&self, i: usize) -> &[AtomicU64; W] {
        let o = self.base + i * W;
        (&self.words[o..o + W]).try_into().unwrap()
    }

    #[inline(always)]
    pub(super) fn word(&self, i: usize, w: usize) -> u64 {
        self.words(i)[w].load(Relaxed)
    }

    #[inline(always)]
    pub(super) fn set_word(&self, i: usize, w: usize, v: u64) {
        self.words(i)[w].store(v, Relaxed)
    }

    #[inline(always)]
    pub(super) fn slot(&self, i: usize) -> Slot {
        let s = self.words(i);
        std::array::from_fn(|w| s[w].load(Relaxed))
    }

    #[inline(always)]
    pub(super) fn set_slot(&self, i: usize, v: &Slot) {
        let s = self.words(i);
        for w in 0..W {
            s[w].store(v[w], Relaxed);
        }
    }

    /// Home slot of a hash: multiply-shift range reduction, so the capacity need not be a power of two.
    #[inline(always)]
    fn home(&self, h: u32) -> usize {
        ((h as u64 * self.cap as u64) >> 32) as usize
    }

    /// Reads the home slot of `h` without the lock, to start its cache miss early.
    #[inline(always)]
    pub(super) fn touch(&self, h: u32) -> u64 {
        self.word(self.home(h), 4)
    }

    /// `Ok(slot)` of the entry with key `k`, or `Err(slot)` of the empty slot where it would go.
    #[inline]
    pub(super) fn find(&self, k: &KeyWords, h: u32) -> Result<usize, usize> {
        let mut i = self.home(h);
        loop {
            let s = self.words(i);
            let w4 = s[4].load(Relaxed);
            if w4 == k[4]
                && s[0].load(Relaxed) == k[0]
                && s[1].load(Relaxed) == k[1]
                && s[2].load(Relaxed) == k[2]
                && s[3].load(Relaxed) == k[3]
            {
                return Ok(i);
            }
            if w4 == 0 {
                return Err(i);
            }
            i += 1;
            if i == self.cap {
                i = 0;
            }
        }
    }

    /// Empties slot `i`, shifting back the entries of its cluster that may move closer to home.
    /// Entries only ever move into slot `i` or into slots vacated by this loop, so a scan that
    /// re-examines slot `i` after a removal visits every entry.
    pub(super) fn remove(&self, mut i: usize) {
        debug_assert!(self.word(i, 4) != 0);
        let cap = self.cap;
        let mut j = i;
        loop {
            j += 1;
            if j == cap {
                j = 0;
            }
            if self.word(j, 4) == 0 {
                break;
            }
            let s = self.slot(j);
            let h = self.home(slot_hash(&s));
            // `s` may move to `i` when `i` lies on its probe path, i.e. cyclically in [h, j).
            if (j + cap - h) % cap >= (j + cap - i) % cap {
                self.set_slot(i, &s);
                i = j;
            }
        }
        self.set_slot(i, &[0; W]);
    }

    pub(super) fn clear(&self) {
        for w in self.words.iter() {
            w.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn slot_for(k: u64, h: u32) -> Slot {
        [k, 0, 0, 0, KF_USED | (k << 8), (h as u64) << 32, 0, 0]
    }

    proptest! {
        /// Random inserts and removals (with deliberately colliding hashes) agree with a HashMap.
        #[test]
        fn conntrack_table_matches_hashmap(ops in proptest::collection::vec((0u64..64, any::<bool>()), 1..400)) {
            let t = ShardTable::with_slots(80);
            let hash = |k: u64| u32::MAX - (k as u32 % 3) * 0x0100_0000;
            let mut m: HashMap<u64, ()> = HashMap::new();
            for (k, ins) in ops {
                // few distinct hashes, close to the end of the table, to exercise wrap-around
                let h = hash(k);
                let s = slot_for(k, h);
                let key: KeyWords = s[..KW].try_into().unwrap();
                match t.find(&key, h) {
                    Ok(i) => {
                        prop_assert!(m.contains_key(&k));
                        if !ins { t.remove(i); m.remove(&k); }
                    }
                    Err(i) => {
                        prop_assert!(!m.contains_key(&k));
                        if ins {
                            t.set_slot(i, &s);
                            m.insert(k, ());
                        }
                    }
                }
                let n = (0..t.cap()).filter(|&i| t.word(i, 4) != 0).count();
                prop_assert_eq!(n, m.len());
                for &k in m.keys() {
                    let key: KeyWords = slot_for(k, hash(k))[..KW].try_into().unwrap();
                    prop_assert!(t.find(&key, hash(k)).is_ok());
                }
            }
        }
    }

    #[test]
    fn conntrack_table_slots_are_cache_line_aligned() {
        for n in [8, 100, 5000] {
            let t = ShardTable::with_slots(n);
            assert_eq!(t.words(0).as_ptr() as usize % 64, 0);
            assert_eq!(t.words(t.cap() - 1).as_ptr() as usize % 64, 0);
        }
    }
}
