//! One published version of the switch's tables, and the walk of a packet through them.
//!
//! A walk goes from table to table (`goto_table`) until an action needs state the tables do not
//! hold: connection tracking, the MAC table, or the choice of output ports. That stretch is a
//! [`Segment`]: a pure function of the flow key (metadata included) and the table version, which
//! is what makes it cacheable per key in each worker's exact-match cache. The dynamic step then
//! runs, updates the key (`ct_state`, `out_port`, `stage`), and the next segment starts.

use crate::classifier::{Action, Rule, Table, TableId};
use crate::key::FlowKey;
use crate::meter::MeterConfig;
use crate::verdict::DropReason;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest chain of `goto_table` within one segment; a longer one is a compiler bug, dropped.
const MAX_GOTOS: usize = 32;

/// How a segment ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    Drop(DropReason),
    Ct {
        zone: u16,
        commit: bool,
        table: TableId,
    },
    Output(u32),
    Normal,
    Flood,
    Emit {
        tagged: bool,
        fill_tcp_csum: bool,
    },
}

/// The cacheable outcome of walking the tables from one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Final value of `reg0` if the segment set it.
    pub set_reg0: Option<u32>,
    /// Meters to charge, in order (at most two per segment; the compiler uses one).
    pub meters: [u32; 2],
    pub n_meters: u8,
    pub terminal: Terminal,
}

impl Segment {
    /// What a walk that matches no rule gives; also the filler of empty cache slots.
    pub const NO_MATCH: Segment = Segment {
        set_reg0: None,
        meters: [0; 2],
        n_meters: 0,
        terminal: Terminal::Drop(DropReason::NoMatch),
    };
}

/// One table visit, for traces.
#[derive(Debug, Clone)]
pub struct Visit {
    pub table: TableId,
    pub rule: Option<Arc<Rule>>,
}

/// A port as the pipeline knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub name: String,
    pub is_uplink: bool,
    pub security_group: Option<String>,
}

/// An immutable version of everything the forwarding threads read.
#[derive(Clone, Default)]
pub struct Pipeline {
    /// Increases with every published change; cache entries of older versions are misses.
    pub version: u64,
    pub tables: Vec<Table>,
    /// Where the walk of a packet for one output port starts.
    pub egress_table: TableId,
    /// VLAN domain → ports of that domain, for flooding.
    pub flood: BTreeMap<u32, Vec<u32>>,
    /// Port id → its transmit meter.
    pub meters: BTreeMap<u32, MeterConfig>,
    /// Port id → its storm control (ports with at least one limit only).
    pub storm: BTreeMap<u32, model::StormControl>,
    pub ports: BTreeMap<u32, PortInfo>,
    pub table_names: Vec<&'static str>,
}

impl Pipeline {
    pub fn table(&self, t: TableId) -> Option<&Table> {
        self.tables.get(t as usize)
    }

    pub fn port_name(&self, id: u32) -> String {
        self.ports
            .get(&id)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| format!("#{id}"))
    }

    /// Walks the tables from `key.stage()`; records each visit in `visits` when given.
    pub fn walk(&self, key: &FlowKey, visits: Option<&mut Vec<Visit>>) -> Segment {
        self.walk_inner(key, visits, None)
    }

    /// Walks the tables from `key.stage()` and sets in `wc` every key bit the result depends on:
    /// any key equal to `key` on those bits walks to the same segment.
    pub fn walk_wc(&self, key: &FlowKey, wc: &mut FlowKey) -> Segment {
        self.walk_inner(key, None, Some(wc))
    }

    fn walk_inner(
        &self,
        key: &FlowKey,
        mut visits: Option<&mut Vec<Visit>>,
        mut wc: Option<&mut FlowKey>,
    ) -> Segment {
        if let Some(w) = wc.as_deref_mut() {
            // Where the walk starts.
            w.set_stage(u8::MAX);
        }
        let mut k = *key;
        let mut seg = Segment::NO_MATCH;
        let mut table = k.stage();
        for _ in 0..MAX_GOTOS {
            let rule = self.table(table).and_then(|t| match wc.as_deref_mut() {
                Some(w) => t.lookup_wc(&k, w),
                None => t.lookup(&k),
            });
            if let Some(v) = visits.as_deref_mut() {
                v.push(Visit {
                    table,
                    rule: rule.cloned(),
                });
            }
            let Some(rule) = rule else {
                return seg;
            };
            let mut next = None;
            for a in rule.actions.iter() {
                match *a {
                    Action::SetReg0(v) => {
                        k.set_reg0(v);
                        seg.set_reg0 = Some(v);
                    }
                    Action::SetReg0FromVlan => {
                        if let Some(w) = wc.as_deref_mut() {
                            w.set_vlan_tci(u16::MAX);
                        }
                        let v = k.vlan().unwrap_or(0) as u32;
                        k.set_reg0(v);
                        seg.set_reg0 = Some(v);
                    }
                    Action::Meter(m) => {
                        if (seg.n_meters as usize) < seg.meters.len() {
                            seg.meters[seg.n_meters as usize] = m;
                            seg.n_meters += 1;
                        }
                    }
                    Action::GotoTable(t) => {
                        next = Some(t);
                        break;
                    }
                    Action::Drop(r) => {
                        seg.terminal = Terminal::Drop(r);
                        return seg;
                    }
                    Action::Ct {
                        zone,
                        commit,
                        table,
                    } => {
                        seg.terminal = Terminal::Ct {
                            zone,
                            commit,
                            table,
                        };
                        return seg;
                    }
                    Action::Output(p) => {
                        seg.terminal = Terminal::Output(p);
                        return seg;
                    }
                    Action::Normal => {
                        seg.terminal = Terminal::Normal;
                        return seg;
                    }
                    Action::Flood => {
                        seg.terminal = Terminal::Flood;
                        return seg;
                    }
                    Action::EmitUntagged { fill_tcp_csum } => {
                        seg.terminal = Terminal::Emit {
                            tagged: false,
                            fill_tcp_csum,
                        };
                        return seg;
                    }
                    Action::EmitTagged { fill_tcp_csum } => {
                        seg.terminal = Terminal::Emit {
                            tagged: true,
                            fill_tcp_csum,
                        };
                        return seg;
                    }
                }
            }
            match next {
                // Tables only go forward: a loop in the tables cannot hang a forwarding thread.
                Some(t) if t > table => table = t,
                _ => {
                    seg.terminal = Terminal::Drop(DropReason::Policy);
                    return seg;
                }
            }
        }
        seg.terminal = Terminal::Drop(DropReason::Policy);
        seg
    }
}
