//! "Why can't VM A reach VM B?": the path of one packet through the switch, step by step.
//!
//! A trace replays what [`crate::datapath::Worker`] would do with a frame, from the same tables,
//! without changing state: no MAC is learned, no connection committed, no meter charged.

use crate::datapath::Shared;
use crate::key::FlowKey;
use crate::matcher::describe;
use crate::parse::parse_with_layout;
use crate::pipeline::{Pipeline, Terminal, Visit};
use crate::verdict::{DropReason, VlanEdit};
use crate::wire::Layout;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Nesting: 0 for the ingress path, 1 for the path towards one output port.
    pub depth: usize,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceEmit {
    pub port: String,
    pub vlan: VlanEdit,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub in_port: String,
    pub flow: String,
    pub steps: Vec<Step>,
    pub emits: Vec<TraceEmit>,
    /// Set when no copy goes out.
    pub drop: Option<DropReason>,
    /// One sentence: "delivered to vm2" or "dropped: ingress rule missing in security group web".
    pub verdict: String,
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "packet in port {}: {}", self.in_port, self.flow)?;
        for s in &self.steps {
            writeln!(f, "{}{}", "    ".repeat(s.depth + 1), s.text)?;
        }
        write!(f, "verdict: {}", self.verdict)
    }
}

struct Tracer<'a> {
    sh: &'a Shared,
    pl: &'a Pipeline,
    frame: &'a [u8],
    layout: Layout,
    now: u64,
    in_port: u32,
    steps: Vec<Step>,
    emits: Vec<TraceEmit>,
    drops: Vec<(DropReason, String)>,
}

pub(crate) fn trace(sh: &Shared, in_port: u32, frame: &[u8], now: u64) -> Trace {
    let pl = sh.pipeline.load();
    let (key, layout) = parse_with_layout(in_port, frame);
    let mut t = Tracer {
        sh,
        pl: &pl,
        frame,
        layout,
        now,
        in_port,
        steps: vec![],
        emits: vec![],
        drops: vec![],
    };
    if key.is_invalid() {
        t.drops.push((
            DropReason::Malformed,
            "the frame is truncated or malformed".into(),
        ));
    } else {
        t.run(key, 0);
    }
    let (drop, verdict) = if !t.emits.is_empty() {
        let to: Vec<String> = t.emits.iter().map(|e| e.port.clone()).collect();
        (None, format!("delivered to {}", to.join(", ")))
    } else if let Some((r, why)) = t.drops.first() {
        (Some(*r), format!("dropped: {why}"))
    } else {
        (
            Some(DropReason::Loop),
            "dropped: no other port in this VLAN".into(),
        )
    };
    Trace {
        in_port: pl.port_name(in_port),
        flow: format!("{key:?}"),
        steps: t.steps,
        emits: t.emits,
        drop,
        verdict,
    }
}

impl Tracer<'_> {
    fn say(&mut self, depth: usize, text: String) {
        self.steps.push(Step { depth, text });
    }

    fn drop(&mut self, depth: usize, r: DropReason, why: String) {
        self.say(depth, format!("=> drop ({}): {why}", r.name()));
        self.drops.push((r, why));
    }

    fn run(&mut self, mut key: FlowKey, depth: usize) {
        for _ in 0..8 {
            let mut visits: Vec<Visit> = vec![];
            let seg = self.pl.walk(&key, Some(&mut visits));
            let mut last_note = String::new();
            for v in &visits {
                let tname = self
                    .pl
                    .table_names
                    .get(v.table as usize)
                    .copied()
                    .unwrap_or("");
                match &v.rule {
                    Some(r) => {
                        let acts: Vec<String> = r.actions.iter().map(|a| a.to_string()).collect();
                        self.say(
                            depth,
                            format!(
                                "table {} ({tname}): priority {} [{}] -> {}",
                                v.table,
                                r.priority,
                                describe(&r.m),
                                acts.join(",")
                            ),
                        );
                        self.say(depth, format!("  # {}", r.note));
                        last_note = r.note.to_string();
                    }
                    None => {
                        self.say(
                            depth,
                            format!("table {} ({tname}): no rule matched", v.table),
                        );
                        last_note = format!("no rule matched in table {} ({tname})", v.table);
                    }
                }
            }
            if let Some(r) = seg.set_reg0 {
                key.set_reg0(r);
            }
            for m in &seg.meters[..seg.n_meters as usize] {
                self.say(
                    depth,
                    format!(
                        "meter {m} (transmit shaping of {}): not charged by a trace",
                        self.pl.port_name(*m)
                    ),
                );
            }
            match seg.terminal {
                Terminal::Drop(r) => {
                    let why = match (r, key.vlan()) {
                        (DropReason::VlanNotAllowed, Some(v)) => format!("VLAN {v}: {last_note}"),
                        _ => last_note,
                    };
                    return self.drop(depth, r, why);
                }
                Terminal::Ct {
                    zone,
                    commit,
                    table,
                } => {
                    let (f, l) = (self.frame, &self.layout);
                    let r = self.sh.ct.peek(zone, &key, f, l, self.now);
                    let st = ct_bits(r.state);
                    self.say(
                        depth,
                        format!(
                            "conntrack zone {zone}: {st}{}",
                            if commit { " (would commit)" } else { "" }
                        ),
                    );
                    if commit {
                        return self.egress_or_continue(key, table, depth);
                    }
                    key.set_ct_state(r.state);
                    key.set_stage(table);
                }
                Terminal::Emit { tagged, .. } if depth > 0 => {
                    let vlan = if tagged {
                        VlanEdit::Set(key.reg0() as u16)
                    } else {
                        VlanEdit::Strip
                    };
                    let port = self.pl.port_name(key.out_port());
                    self.say(
                        depth,
                        format!(
                            "=> output to {port} ({})",
                            if tagged {
                                format!("tagged VLAN {}", key.reg0())
                            } else {
                                "untagged".into()
                            }
                        ),
                    );
                    self.emits.push(TraceEmit { port, vlan });
                    return;
                }
                Terminal::Output(p) if depth == 0 => return self.egress(key, p),
                Terminal::Normal if depth == 0 => {
                    let dst = key.eth_dst();
                    if !dst.is_multicast() {
                        if let Some(p) = self.sh.mac.lookup(key.reg0(), dst, self.now) {
                            self.say(
                                0,
                                format!(
                                    "MAC table: {dst} in VLAN {} is on port {}",
                                    key.reg0(),
                                    self.pl.port_name(p)
                                ),
                            );
                            return self.egress(key, p);
                        }
                        self.say(
                            0,
                            format!("MAC table: {dst} unknown in VLAN {}: flood", key.reg0()),
                        );
                    } else {
                        self.say(
                            0,
                            format!("{dst} is broadcast/multicast: flood in VLAN {}", key.reg0()),
                        );
                    }
                    return self.flood(key);
                }
                Terminal::Flood if depth == 0 => return self.flood(key),
                _ => {
                    return self.drop(
                        depth,
                        DropReason::Policy,
                        "action not allowed at this stage (table bug)".into(),
                    )
                }
            }
        }
    }

    /// After a committing `ct`: continue in `table` (the packet is allowed).
    fn egress_or_continue(&mut self, mut key: FlowKey, table: u8, depth: usize) {
        key.set_stage(table);
        self.run(key, depth);
    }

    fn egress(&mut self, key: FlowKey, port: u32) {
        if port == self.in_port {
            return self.drop(0, DropReason::Loop, "destination is the input port".into());
        }
        self.say(0, format!("-> towards port {}", self.pl.port_name(port)));
        let mut k = key;
        k.set_out_port(port);
        k.set_stage(self.pl.egress_table);
        k.set_ct_state(0);
        self.run(k, 1);
    }

    fn flood(&mut self, key: FlowKey) {
        let ports: Vec<u32> = self.pl.flood.get(&key.reg0()).cloned().unwrap_or_default();
        let others: Vec<u32> = ports.into_iter().filter(|p| *p != self.in_port).collect();
        if others.is_empty() {
            return self.drop(
                0,
                DropReason::Loop,
                format!("no other port in VLAN {}", key.reg0()),
            );
        }
        for p in others {
            self.egress(key, p);
        }
    }
}

/// `+trk+est+rpl` style text of `ct_state` bits.
pub fn ct_bits(s: u8) -> String {
    use crate::key::ct;
    let names = [
        (ct::TRACKED, "trk"),
        (ct::NEW, "new"),
        (ct::ESTABLISHED, "est"),
        (ct::RELATED, "rel"),
        (ct::REPLY, "rpl"),
        (ct::INVALID, "inv"),
    ];
    let out: String = names
        .iter()
        .filter(|(b, _)| s & b != 0)
        .map(|(_, n)| format!("+{n}"))
        .collect();
    if out.is_empty() {
        "-".into()
    } else {
        out
    }
}
