//! Tables of prioritized wildcard rules and their lookup (tuple-space search).
//!
//! A rule matches the bits of a [`FlowKey`] selected by its mask. Rules with the same mask form a
//! subtable: one hash lookup of the masked key finds every candidate of that mask at once.
//! Subtables are visited in decreasing order of their best priority, so the search stops as soon as
//! no remaining subtable can beat the rule already found. The winner is the rule of highest
//! priority; among equal priorities, the one with the lowest id (so results are deterministic and
//! equal to [`Table::lookup_linear`], the reference the property tests compare against).

use crate::key::{FlowKey, KeyMap};
use crate::verdict::DropReason;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub type TableId = u8;
pub type RuleId = u64;

/// What a rule does. A rule's actions run in order; the list ends with a terminal action
/// (`GotoTable`, `Ct`, `Output`, `Normal`, `Flood`, `Emit*`, `Drop`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Continue in another (later) table.
    GotoTable(TableId),
    /// Drop the packet, counted under `reason`.
    Drop(DropReason),
    /// Set the VLAN domain register.
    SetReg0(u32),
    /// Set the VLAN domain register to the frame's outer VLAN id.
    SetReg0FromVlan,
    /// Charge the packet to meter `id`; over the rate, the packet is dropped (`DropReason::Meter`).
    Meter(u32),
    /// Run connection tracking in `zone` (committing new connections if `commit`), then continue in
    /// `table` with `ct_state` set. A recirculation point: what follows is cached separately.
    Ct {
        zone: u16,
        commit: bool,
        table: TableId,
    },
    /// Send to port: runs the egress tables with `out_port` set.
    Output(u32),
    /// L2 learning switch within the VLAN domain `reg0`: learn the source, output to the known
    /// destination, or flood.
    Normal,
    /// Output to every port of the VLAN domain `reg0` but the input port.
    Flood,
    /// Egress end: transmit on `out_port` without an outer tag.
    EmitUntagged { fill_tcp_csum: bool },
    /// Egress end: transmit on `out_port` tagged with VLAN `reg0`.
    EmitTagged { fill_tcp_csum: bool },
}

impl Action {
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Action::SetReg0(_) | Action::SetReg0FromVlan | Action::Meter(_)
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::GotoTable(t) => write!(f, "goto_table:{t}"),
            Action::Drop(r) => write!(f, "drop({})", r.name()),
            Action::SetReg0(v) => write!(f, "set_reg0:{v}"),
            Action::SetReg0FromVlan => write!(f, "set_reg0:vlan_vid"),
            Action::Meter(m) => write!(f, "meter:{m}"),
            Action::Ct {
                zone,
                commit,
                table,
            } => {
                write!(
                    f,
                    "ct(zone={zone}{},table={table})",
                    if *commit { ",commit" } else { "" }
                )
            }
            Action::Output(p) => write!(f, "output:{p}"),
            Action::Normal => write!(f, "NORMAL"),
            Action::Flood => write!(f, "FLOOD"),
            Action::EmitUntagged { fill_tcp_csum } => {
                write!(
                    f,
                    "emit(untagged{})",
                    if *fill_tcp_csum { ",fill_tcp_csum" } else { "" }
                )
            }
            Action::EmitTagged { fill_tcp_csum } => {
                write!(
                    f,
                    "emit(tag=reg0{})",
                    if *fill_tcp_csum { ",fill_tcp_csum" } else { "" }
                )
            }
        }
    }
}

/// A masked match over a flow key. `value` is kept pre-masked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Match {
    pub value: FlowKey,
    pub mask: FlowKey,
}

impl Match {
    pub fn any() -> Match {
        Match::default()
    }
    pub fn new(value: FlowKey, mask: FlowKey) -> Match {
        Match {
            value: value.masked(&mask),
            mask,
        }
    }
    pub fn matches(&self, key: &FlowKey) -> bool {
        key.matches(&self.value, &self.mask)
    }
}

/// One prioritized rule.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Rule {
    pub id: RuleId,
    pub priority: u32,
    pub m: Match,
    pub actions: Arc<[Action]>,
    /// Why the rule exists, in an operator's words; shown by traces and table dumps.
    pub note: Arc<str>,
}

impl Rule {
    /// True when `self` wins over `other` (higher priority, then lower id).
    #[inline]
    fn beats(&self, other: &Rule) -> bool {
        self.priority > other.priority || (self.priority == other.priority && self.id < other.id)
    }
}

#[derive(Clone)]
struct Subtable {
    mask: FlowKey,
    max_priority: u32,
    /// Masked key → rules with that exact masked value, best first.
    buckets: KeyMap<Vec<Arc<Rule>>>,
    /// How many rules of each priority: keeps `max_priority` exact in O(log n) per removal.
    priorities: BTreeMap<u32, usize>,
}

/// One table of rules. Cloning is shallow per rule (rules are shared), which is what makes
/// copy-and-publish updates cheap.
#[derive(Clone, Default)]
pub struct Table {
    subtables: Vec<Subtable>,
    by_id: BTreeMap<RuleId, Arc<Rule>>,
}

impl Table {
    pub fn new() -> Table {
        Table::default()
    }
    pub fn len(&self) -> usize {
        self.by_id.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
    pub fn rules(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.by_id.values()
    }
    pub fn get(&self, id: RuleId) -> Option<&Arc<Rule>> {
        self.by_id.get(&id)
    }
    /// Number of distinct masks (subtables): the worst-case number of hash probes per lookup.
    pub fn subtable_count(&self) -> usize {
        self.subtables.len()
    }

    /// Adds `rule`, replacing any rule with the same id.
    pub fn insert(&mut self, rule: Rule) {
        self.remove(rule.id);
        let rule = Arc::new(rule);
        self.by_id.insert(rule.id, rule.clone());
        let pos = match self.subtables.iter().position(|s| s.mask == rule.m.mask) {
            Some(i) => i,
            None => {
                self.subtables.push(Subtable {
                    mask: rule.m.mask,
                    max_priority: 0,
                    buckets: KeyMap::default(),
                    priorities: BTreeMap::new(),
                });
                self.subtables.len() - 1
            }
        };
        let st = &mut self.subtables[pos];
        let bucket = st.buckets.entry(rule.m.value).or_default();
        let at = bucket
            .iter()
            .position(|r| rule.beats(r))
            .unwrap_or(bucket.len());
        bucket.insert(at, rule.clone());
        *st.priorities.entry(rule.priority).or_default() += 1;
        if rule.priority > st.max_priority || st.priorities.len() == 1 {
            st.max_priority = rule.priority;
            self.sort_subtables();
        }
    }

    /// Removes the rule with `id`; returns it if it was there.
    pub fn remove(&mut self, id: RuleId) -> Option<Arc<Rule>> {
        let rule = self.by_id.remove(&id)?;
        let pos = self
            .subtables
            .iter()
            .position(|s| s.mask == rule.m.mask)
            .expect("rule's subtable");
        let st = &mut self.subtables[pos];
        let bucket = st.buckets.get_mut(&rule.m.value).expect("rule's bucket");
        bucket.retain(|r| r.id != id);
        if bucket.is_empty() {
            st.buckets.remove(&rule.m.value);
        }
        let n = st
            .priorities
            .get_mut(&rule.priority)
            .expect("counted priority");
        *n -= 1;
        if *n == 0 {
            st.priorities.remove(&rule.priority);
            if st.priorities.is_empty() {
                self.subtables.remove(pos);
            } else if st.max_priority == rule.priority {
                st.max_priority = *st.priorities.keys().next_back().expect("non-empty");
                self.sort_subtables();
            }
        }
        Some(rule)
    }

    fn sort_subtables(&mut self) {
        self.subtables
            .sort_by_key(|s| std::cmp::Reverse(s.max_priority));
    }

    /// The best rule matching `key`, by tuple-space search.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<&Arc<Rule>> {
        let mut best: Option<&Arc<Rule>> = None;
        for st in &self.subtables {
            if let Some(b) = best {
                if st.max_priority < b.priority {
                    break;
                }
            }
            if let Some(bucket) = st.buckets.get(&key.masked(&st.mask)) {
                let cand = &bucket[0];
                if best.is_none_or(|b| cand.beats(b)) {
                    best = Some(cand);
                }
            }
        }
        best
    }

    /// As [`Table::lookup`], and ORs into `wc` every bit of the key the search looked at (the
    /// masks of the subtables it probed). Any key that agrees with `key` on those bits gets the
    /// same answer: same subtables probed, same hits, same early exit. This is what makes a
    /// wildcarded cache entry (a "megaflow") valid for all of them.
    #[inline]
    pub fn lookup_wc(&self, key: &FlowKey, wc: &mut FlowKey) -> Option<&Arc<Rule>> {
        let mut best: Option<&Arc<Rule>> = None;
        for st in &self.subtables {
            if let Some(b) = best {
                if st.max_priority < b.priority {
                    break;
                }
            }
            for (w, m) in wc.0.iter_mut().zip(&st.mask.0) {
                *w |= m;
            }
            if let Some(bucket) = st.buckets.get(&key.masked(&st.mask)) {
                let cand = &bucket[0];
                if best.is_none_or(|b| cand.beats(b)) {
                    best = Some(cand);
                }
            }
        }
        best
    }

    /// The reference semantics: scan every rule.
    pub fn lookup_linear(&self, key: &FlowKey) -> Option<&Arc<Rule>> {
        let mut best: Option<&Arc<Rule>> = None;
        for r in self.by_id.values() {
            if r.m.matches(key) && best.is_none_or(|b| r.beats(b)) {
                best = Some(r);
            }
        }
        best
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_id.values()).finish()
    }
}

/// Splits the inclusive range `[lo, hi]` of a `bits`-wide field into (value, mask) prefixes, the
/// way ranges are expressed in a wildcard classifier (e.g. ports 1000–1999 → 7 prefixes).
pub fn range_to_prefixes(lo: u32, hi: u32, bits: u32) -> Vec<(u32, u32)> {
    let full = if bits == 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    let mut out = vec![];
    let (mut lo, hi) = (lo as u64, hi as u64);
    while lo <= hi {
        // Largest aligned block starting at lo that fits in [lo, hi].
        let mut size = if lo == 0 {
            1u64 << bits
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        let mask = full & !((size - 1) as u32);
        out.push((lo as u32, mask));
        lo += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(id: u64, prio: u32, m: Match) -> Rule {
        Rule {
            id,
            priority: prio,
            m,
            actions: Arc::from(vec![Action::Drop(DropReason::Policy)]),
            note: "t".into(),
        }
    }

    #[test]
    fn ranges_become_exact_prefix_covers() {
        assert_eq!(range_to_prefixes(0, 65535, 16), vec![(0, 0)]);
        assert_eq!(range_to_prefixes(80, 80, 16), vec![(80, 0xffff)]);
        for (lo, hi) in [
            (1000u32, 1999u32),
            (1, 4094),
            (0, 0),
            (65535, 65535),
            (3, 17),
        ] {
            let p = range_to_prefixes(lo, hi, 16);
            for v in 0..=65535u32 {
                let inside = p.iter().any(|(val, m)| v & m == *val);
                assert_eq!(inside, (lo..=hi).contains(&v), "{lo}-{hi} at {v}");
            }
        }
    }

    /// Keys and masks drawn from a few values per word, so that random rules overlap often.
    fn small_key() -> impl Strategy<Value = FlowKey> {
        proptest::array::uniform10(prop_oneof![
            Just(0u64),
            Just(1),
            Just(0xff00),
            Just(u64::MAX),
            0u64..4
        ])
        .prop_map(FlowKey)
    }
    fn small_mask() -> impl Strategy<Value = FlowKey> {
        proptest::array::uniform10(prop_oneof![4 => Just(0u64), 1 => Just(u64::MAX), 1 => Just(0xff), 1 => Just(0xffff_0000_0000_0000)])
            .prop_map(FlowKey)
    }

    proptest! {
        #[test]
        fn tuple_space_equals_linear_scan(
            rules in proptest::collection::vec((small_key(), small_mask(), 0u32..8), 0..40),
            removals in proptest::collection::vec(0usize..40, 0..10),
            probes in proptest::collection::vec(small_key(), 1..30),
        ) {
            let mut t = Table::new();
            for (i, (v, m, p)) in rules.iter().enumerate() {
                t.insert(rule(i as u64, *p, Match::new(*v, *m)));
            }
            for r in removals {
                t.remove(r as u64);
            }
            // Probe with rule values too, so that matches are common.
            let keys: Vec<FlowKey> = probes.into_iter().chain(rules.iter().map(|r| r.0)).collect();
            for k in keys {
                prop_assert_eq!(t.lookup(&k).map(|r| r.id), t.lookup_linear(&k).map(|r| r.id));
            }
        }
    }

    proptest! {
        /// A key that agrees with `k` on the bits `lookup_wc(k)` reported gets the same rule:
        /// the property that makes megaflow cache entries valid.
        #[test]
        fn wildcards_cover_every_consulted_bit(
            rules in proptest::collection::vec((small_key(), small_mask(), 0u32..8), 0..40),
            probes in proptest::collection::vec((small_key(), small_key()), 1..30),
        ) {
            let mut t = Table::new();
            for (i, (v, m, p)) in rules.iter().enumerate() {
                t.insert(rule(i as u64, *p, Match::new(*v, *m)));
            }
            let probes = probes
                .into_iter()
                .chain(rules.iter().map(|r| (r.0, FlowKey::ALL_ONES)));
            for (k, noise) in probes {
                let mut wc = FlowKey::ZERO;
                let got = t.lookup_wc(&k, &mut wc).map(|r| r.id);
                prop_assert_eq!(got, t.lookup(&k).map(|r| r.id));
                let mut k2 = k;
                for i in 0..crate::key::KEY_WORDS {
                    k2.0[i] = (k.0[i] & wc.0[i]) | (noise.0[i] & !wc.0[i]);
                }
                prop_assert_eq!(t.lookup(&k2).map(|r| r.id), got, "wc {:?}", wc);
            }
        }
    }

    #[test]
    fn replacing_a_rule_keeps_one_copy() {
        let mut t = Table::new();
        t.insert(rule(1, 5, Match::any()));
        t.insert(rule(1, 7, Match::any()));
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(&FlowKey::ZERO).unwrap().priority, 7);
        t.remove(1);
        assert!(t.lookup(&FlowKey::ZERO).is_none());
        assert_eq!(t.subtable_count(), 0);
    }
}
