//! The per-shard hash table: open addressing with linear probing and backward-shift deletion (no
//! tombstones, so the heavy insert/delete churn of connection tracking never degrades probe lengths).
//!
//! A slot is eight `u64` words (one cache line), stored in one flat `Vec<u64>` whose usable part starts
//! on a 64-byte boundary, so that every lookup of a present entry touches one line in the common
//! case. The vector is allocated zeroed (`vec![0; n]`, which the allocator serves with lazily mapped
//! zero pages), so a table sized for a million connections costs no page faults until it fills.
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

pub(super) struct Table {
    words: Vec<u64>,
    /// Index in `words` of slot 0 (so that slot 0 starts on a 64-byte boundary).
    base: usize,
    cap: usize,
    len: usize,
}

impl Table {
    pub(super) fn with_slots(cap: usize) -> Table {
        let cap = cap.max(8);
        let words = vec![0u64; cap * W + W];
        let misalign = words.as_ptr() as usize % 64;
        let base = ((64 - misalign) % 64) / 8;
        Table {
            words,
            base,
            cap,
            len: 0,
        }
    }

    #[inline(always)]
    pub(super) fn cap(&self) -> usize {
        self.cap
    }

    #[inline(always)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    pub(super) fn slot(&self, i: usize) -> &Slot {
        let o = self.base + i * W;
        (&self.words[o..o + W]).try_into().unwrap()
    }

    #[inline(always)]
    pub(super) fn slot_mut(&mut self, i: usize) -> &mut Slot {
        let o = self.base + i * W;
        (&mut self.words[o..o + W]).try_into().unwrap()
    }

    /// Home slot of a hash: multiply-shift range reduction, so the capacity need not be a power of two.
    #[inline(always)]
    fn home(&self, h: u32) -> usize {
        ((h as u64 * self.cap as u64) >> 32) as usize
    }

    /// `Ok(slot)` of the entry with key `k`, or `Err(slot)` of the empty slot where it would go.
    #[inline]
    pub(super) fn find(&self, k: &KeyWords, h: u32) -> Result<usize, usize> {
        let mut i = self.home(h);
        loop {
            let s = self.slot(i);
            if s[4] == k[4] && s[0] == k[0] && s[1] == k[1] && s[2] == k[2] && s[3] == k[3] {
                return Ok(i);
            }
            if s[4] == 0 {
                return Err(i);
            }
            i += 1;
            if i == self.cap {
                i = 0;
            }
        }
    }

    /// True when one more entry would take the load factor above 7/8.
    #[inline]
    pub(super) fn needs_grow(&self) -> bool {
        (self.len + 1) * 8 > self.cap * 7
    }

    /// Doubles the capacity (rare: tables are sized for their share of `max_entries` up front).
    pub(super) fn grow(&mut self) {
        let mut t = Table::with_slots(self.cap * 2);
        for i in 0..self.cap {
            let s = *self.slot(i);
            if s[4] != 0 {
                let mut j = t.home(slot_hash(&s));
                while t.slot(j)[4] != 0 {
                    j += 1;
                    if j == t.cap {
                        j = 0;
                    }
                }
                *t.slot_mut(j) = s;
                t.len += 1;
            }
        }
        *self = t;
    }

    /// Fills the empty slot `i` (from [`Table::find`]'s `Err`).
    #[inline]
    pub(super) fn put(&mut self, i: usize, s: Slot) {
        debug_assert!(self.slot(i)[4] == 0 && s[4] != 0);
        *self.slot_mut(i) = s;
        self.len += 1;
    }

    /// Empties slot `i`, shifting back the entries of its cluster that may move closer to home.
    /// Entries only ever move into slot `i` or into slots vacated by this loop, so a scan that
    /// re-examines slot `i` after a removal visits every entry.
    pub(super) fn remove(&mut self, mut i: usize) {
        debug_assert!(self.slot(i)[4] != 0);
        let cap = self.cap;
        let mut j = i;
        loop {
            j += 1;
            if j == cap {
                j = 0;
            }
            let s = *self.slot(j);
            if s[4] == 0 {
                break;
            }
            let h = self.home(slot_hash(&s));
            // `s` may move to `i` when `i` lies on its probe path, i.e. cyclically in [h, j).
            if (j + cap - h) % cap >= (j + cap - i) % cap {
                *self.slot_mut(i) = s;
                i = j;
            }
        }
        *self.slot_mut(i) = [0; W];
        self.len -= 1;
    }

    pub(super) fn clear(&mut self) {
        self.words.fill(0);
        self.len = 0;
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
            let mut t = Table::with_slots(16);
            let mut m: HashMap<u64, ()> = HashMap::new();
            for (k, ins) in ops {
                // few distinct hashes, close to the end of the table, to exercise wrap-around
                let h = u32::MAX - (k as u32 % 3) * 0x0100_0000;
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
                            if t.needs_grow() { t.grow(); let i = t.find(&key, h).unwrap_err(); t.put(i, s); }
                            else { t.put(i, s); }
                            m.insert(k, ());
                        }
                    }
                }
                prop_assert_eq!(t.len(), m.len());
                for &k in m.keys() {
                    let h = u32::MAX - (k as u32 % 3) * 0x0100_0000;
                    let key: KeyWords = slot_for(k, h)[..KW].try_into().unwrap();
                    prop_assert!(t.find(&key, h).is_ok());
                }
            }
        }
    }

    #[test]
    fn conntrack_table_slots_are_cache_line_aligned() {
        for n in [8, 100, 5000] {
            let t = Table::with_slots(n);
            assert_eq!(t.slot(0).as_ptr() as usize % 64, 0);
            assert_eq!(t.slot(t.cap() - 1).as_ptr() as usize % 64, 0);
        }
    }
}
