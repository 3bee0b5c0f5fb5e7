//! The table layout and how an owner's rules are written down: shared by every table family.

use crate::classifier::{Action, Match, Rule, TableId};
use model::VlanRange;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

pub const T_CLASSIFY: TableId = 0;
pub const T_PORT_SECURITY: TableId = 1;
pub const T_EGRESS_CT: TableId = 2;
pub const T_EGRESS_SG: TableId = 3;
pub const T_METER: TableId = 4;
pub const T_L2: TableId = 5;
pub const T_EGRESS_VLAN: TableId = 10;
pub const T_INGRESS_CT: TableId = 11;
pub const T_INGRESS_SG: TableId = 12;
pub const T_OUTPUT: TableId = 13;
pub const TABLE_COUNT: usize = 14;

pub const TABLE_NAMES: [&str; TABLE_COUNT] = [
    "classify",
    "port_security",
    "egress_ct",
    "egress_sg",
    "meter",
    "l2",
    "",
    "",
    "",
    "",
    "egress_vlan",
    "ingress_ct",
    "ingress_sg",
    "output",
];

/// Accumulates one owner's rules with deterministic ids: a hash of the owner, then a counter.
pub(super) struct Rules {
    base: u64,
    pub(super) out: Vec<(TableId, Rule)>,
}

impl Rules {
    pub(super) fn new(owner: &impl Hash) -> Rules {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        owner.hash(&mut h);
        Rules {
            base: h.finish() & !0xf_ffff,
            out: vec![],
        }
    }
    pub(super) fn add(
        &mut self,
        table: TableId,
        priority: u32,
        m: Match,
        actions: Vec<Action>,
        note: impl Into<Arc<str>>,
    ) {
        let id = self.base | self.out.len() as u64;
        self.out.push((
            table,
            Rule {
                id,
                priority,
                m,
                actions: Arc::from(actions),
                note: note.into(),
            },
        ));
    }
}

pub(super) fn ranges_text(r: &[VlanRange]) -> String {
    r.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
