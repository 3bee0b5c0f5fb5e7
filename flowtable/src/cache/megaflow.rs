//! The megaflow cache: one entry per class of flow keys that walk the tables alike.

use crate::key::FlowKey;
use crate::pipeline::Segment;

const WAYS: usize = 2;

#[derive(Clone, Copy)]
struct MegaflowEntry {
    hash: u64,
    /// Table version the segment was computed from; 0 marks an empty slot.
    version: u64,
    /// Index of the mask in [`Megaflow::masks`].
    mask: u32,
    /// The key under that mask.
    key: FlowKey,
    seg: Segment,
}

/// Most distinct masks per worker; a walk whose mask would be one more is not cached here.
const MEGAFLOW_MASKS: usize = 64;
/// Stages (table ids) that start segments and have their own mask lists.
const MEGAFLOW_STAGES: usize = 16;

/// Per-thread wildcarded cache, in the spirit of Open vSwitch's megaflows: an entry holds a
/// segment for every key that agrees with the one that was walked on the bits the walk looked at
/// ([`crate::pipeline::Pipeline::walk_wc`]). Flows that differ only in fields no table consulted (L4 ports through
/// an L2 switch, say) share one entry, so many flows cost one walk, where the exact-match cache
/// would need an entry each. Lookup probes the masks seen for the key's stage, most recently
/// added last; entries are valid only for the table version they were computed from, and a new
/// version starts with no masks.
pub(crate) struct Megaflow {
    version: u64,
    masks: Vec<FlowKey>,
    /// Stage → indices into `masks`.
    by_stage: [Vec<u8>; MEGAFLOW_STAGES],
    sets: Vec<[MegaflowEntry; WAYS]>,
    mask: usize,
}

impl Megaflow {
    pub(crate) fn new(n: usize) -> Megaflow {
        let sets = if n == 0 {
            0
        } else {
            (n / WAYS).max(8).next_power_of_two()
        };
        let empty = MegaflowEntry {
            hash: 0,
            version: 0,
            mask: 0,
            key: FlowKey::ZERO,
            seg: Segment::NO_MATCH,
        };
        Megaflow {
            version: 0,
            masks: Vec::with_capacity(MEGAFLOW_MASKS),
            by_stage: Default::default(),
            sets: vec![[empty; WAYS]; sets],
            mask: sets.wrapping_sub(1),
        }
    }

    #[inline(always)]
    fn hash(masked: &FlowKey, mask: usize) -> u64 {
        masked.hash64() ^ (mask as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[inline]
    pub(crate) fn lookup(&mut self, k: &FlowKey, version: u64) -> Option<Segment> {
        if self.version != version {
            self.version = version;
            self.masks.clear();
            self.by_stage.iter_mut().for_each(Vec::clear);
            return None;
        }
        let stage = k.stage() as usize;
        let list = self.by_stage.get_mut(stage)?;
        for (i, &mi) in list.iter().enumerate() {
            let mk = k.masked(&self.masks[mi as usize]);
            let h = Megaflow::hash(&mk, mi as usize);
            let set = &self.sets[h as usize & self.mask];
            for e in set {
                if e.hash == h && e.version == version && e.mask == mi as u32 && e.key.same_as(&mk)
                {
                    // Masks that hit often drift to the front of their stage's list.
                    if i > 0 {
                        list.swap(i, i - 1);
                    }
                    return Some(e.seg);
                }
            }
        }
        None
    }

    pub(crate) fn insert(&mut self, k: &FlowKey, wc: &FlowKey, version: u64, seg: Segment) {
        let stage = k.stage() as usize;
        if self.sets.is_empty() || stage >= MEGAFLOW_STAGES || self.version != version {
            return;
        }
        let mi = match self.masks.iter().position(|m| m == wc) {
            Some(i) => i,
            None if self.masks.len() < MEGAFLOW_MASKS => {
                self.masks.push(*wc);
                self.masks.len() - 1
            }
            None => return,
        };
        if !self.by_stage[stage].contains(&(mi as u8)) {
            self.by_stage[stage].push(mi as u8);
        }
        let mk = k.masked(wc);
        let h = Megaflow::hash(&mk, mi);
        let set = &mut self.sets[h as usize & self.mask];
        set[1] = set[0];
        set[0] = MegaflowEntry {
            hash: h,
            version,
            mask: mi as u32,
            key: mk,
            seg,
        };
    }
}
