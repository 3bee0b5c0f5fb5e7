//! The exact-match cache: one entry per flow key (metadata included), with the chain of
//! segments that followed it last time.

use crate::key::FlowKey;
use crate::pipeline::Segment;

#[derive(Clone, Copy)]
struct EmcEntry {
    hash: u64,
    /// Table version the segment was computed from; 0 marks an empty slot (published versions
    /// start at 1).
    version: u64,
    /// Unique per inserted entry (see [`Emc::next_uid`]).
    uid: u64,
    key: FlowKey,
    seg: Segment,
    /// What followed this segment last time, up to [`CHAIN`] steps: each step is the dynamic
    /// outcome that led on (a `ct_state` after conntrack, an output port after the MAC table)
    /// and the segment it led to. The key of that next segment is a function of this entry's key
    /// and the outcomes, so a step is exact for as long as the entry is (same key, same version)
    /// and the outcomes repeat: the dynamic steps still run for every packet, and only when they
    /// give the same outcomes is the cached segment used. Step `i + 1` belongs to step `i`:
    /// rewriting a step clears the ones after it.
    chain: [(u32, Segment); CHAIN],
}

/// Steps of [`EmcEntry::chain`]: enough for a packet's whole path with one lookup when one side
/// has a stateful security group (ingress → conntrack → L2 → egress, or ingress → L2 → egress →
/// conntrack → emit).
const CHAIN: usize = 2;
const NO_OUTCOME: u32 = u32::MAX;

/// Where a segment lives in the exact-match cache: (slot index, entry uid); `None` when it is
/// not there.
pub(crate) type EmcSlot = Option<(usize, u64)>;

/// One packet's position along the chain of the exact-match entry its path started from.
#[derive(Default, Clone, Copy)]
pub(crate) struct Cursor {
    origin: EmcSlot,
    depth: usize,
}

impl Cursor {
    /// The start of a path at the segment held in `slot`.
    #[inline(always)]
    pub(crate) fn at(slot: EmcSlot) -> Cursor {
        Cursor {
            origin: slot,
            depth: 0,
        }
    }
}

const EMC_WAYS: usize = 2;

/// Per-thread exact-match cache: 2-way set-associative, keyed by the whole flow key (metadata
/// included), entries valid only for the table version they were computed from.
pub(crate) struct Emc {
    sets: Vec<[EmcEntry; EMC_WAYS]>,
    mask: usize,
    /// Number of the next entry inserted; never reused, so (slot, uid) names one entry exactly.
    next_uid: u64,
}

impl Emc {
    pub(crate) fn new(n: usize) -> Emc {
        let sets = (n / EMC_WAYS).max(8).next_power_of_two();
        let empty = EmcEntry {
            hash: 0,
            version: 0,
            uid: 0,
            key: FlowKey::ZERO,
            seg: Segment::NO_MATCH,
            chain: [(NO_OUTCOME, Segment::NO_MATCH); CHAIN],
        };
        Emc {
            sets: vec![[empty; EMC_WAYS]; sets],
            mask: sets - 1,
            next_uid: 0,
        }
    }
    /// The segment and its slot (set × ways + way).
    #[inline]
    pub(crate) fn lookup(
        &self,
        k: &FlowKey,
        h: u64,
        version: u64,
    ) -> Option<(Segment, (usize, u64))> {
        let si = h as usize & self.mask;
        for (w, e) in self.sets[si].iter().enumerate() {
            // The hash and version reject almost every non-matching entry before the key compare.
            if e.hash == h && e.version == version && e.key.same_as(k) {
                return Some((e.seg, (si * EMC_WAYS + w, e.uid)));
            }
        }
        None
    }
    /// Inserts in way 0, moving the previous way-0 entry to way 1 (so the older of the two goes);
    /// returns the slot.
    #[inline]
    pub(crate) fn insert(
        &mut self,
        k: FlowKey,
        h: u64,
        version: u64,
        seg: Segment,
    ) -> (usize, u64) {
        let si = h as usize & self.mask;
        self.next_uid += 1;
        let uid = self.next_uid;
        let set = &mut self.sets[si];
        set[1] = set[0];
        set[0] = EmcEntry {
            hash: h,
            version,
            uid,
            key: k,
            seg,
            chain: [(NO_OUTCOME, Segment::NO_MATCH); CHAIN],
        };
        (si * EMC_WAYS, uid)
    }
    #[inline]
    fn slot(&mut self, (slot, uid): (usize, u64), version: u64) -> Option<&mut EmcEntry> {
        let e = &mut self.sets[slot / EMC_WAYS][slot % EMC_WAYS];
        (e.uid == uid && e.version == version).then_some(e)
    }

    /// The chain step of `cur` if it was taken with `outcome`; advances the cursor.
    #[inline]
    pub(crate) fn follow(
        &mut self,
        version: u64,
        cur: &mut Cursor,
        outcome: u32,
    ) -> Option<Segment> {
        let o = cur.origin?;
        if cur.depth >= CHAIN {
            return None;
        }
        let e = self.slot(o, version)?;
        let (tag, seg) = e.chain[cur.depth];
        if tag != outcome {
            return None;
        }
        cur.depth += 1;
        Some(seg)
    }

    /// After a [`Emc::follow`] miss: records `seg` (found in `slot`) as the chain step of `cur`
    /// for `outcome`, or starts a new path at `slot` when there is no chain to extend.
    #[inline]
    pub(crate) fn record(
        &mut self,
        version: u64,
        cur: &mut Cursor,
        outcome: u32,
        seg: Segment,
        slot: EmcSlot,
    ) {
        let depth = cur.depth;
        // The lookup that found `seg` may have replaced the origin entry: `slot` checks it is
        // still there.
        match cur.origin.and_then(|o| self.slot(o, version)) {
            Some(e) if depth < CHAIN => {
                e.chain[depth] = (outcome, seg);
                for step in &mut e.chain[depth + 1..] {
                    step.0 = NO_OUTCOME;
                }
                cur.depth += 1;
            }
            // No chain to extend: the path goes on from this segment's own entry.
            _ => *cur = Cursor::at(slot),
        }
    }
}
