//! "Why can't VM A reach VM B?": the path of one packet through the switch, step by step.
//!
//! A trace runs the worker's own interpreter (`interp.rs`) on a frame, from the same tables
//! and state, in a `Mode` that narrates each decision and changes nothing: no MAC is learned, no
//! connection committed, no meter charged.

use crate::cache::emc::EmcSlot;
use crate::conntrack::CtResult;
use crate::interp::{self, Cause, Ctx, Mode};
use crate::key::FlowKey;
use crate::matcher::describe;
use crate::meter::Verdict;
use crate::parse::parse_with_layout;
use crate::pipeline::{Pipeline, Segment, Visit};
use crate::shared::Shared;
use crate::storm::StormClass;
use crate::verdict::{DropReason, Emit, VlanEdit};
use model::Mac;
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

/// Tracing: walks instead of caches, narration, and no side effect.
struct Tracer<'a> {
    sh: &'a Shared,
    steps: Vec<Step>,
    /// Why the first drop happened (the drop the verdict reports when no copy goes out).
    first_why: Option<String>,
    /// The note of the last rule visited (or "no rule matched"): why a segment ending in a drop
    /// drops.
    last_note: String,
}

pub(crate) fn trace(sh: &Shared, in_port: u32, frame: &[u8], now: u64) -> Trace {
    let pl = sh.pipeline.load();
    let (key, layout) = parse_with_layout(in_port, frame);
    let mut t = Tracer {
        sh,
        steps: vec![],
        first_why: None,
        last_note: String::new(),
    };
    let mut cx = Ctx {
        pl: &pl,
        frame,
        layout,
        now,
        in_port,
        first_drop: None,
        excess: false,
    };
    let mut emits = vec![];
    if key.is_invalid() {
        cx.first_drop = Some(DropReason::Malformed);
        t.first_why = Some("the frame is truncated or malformed".into());
    } else {
        interp::run(&mut t, &mut cx, key, false, &mut emits);
    }
    let emits: Vec<TraceEmit> = emits
        .iter()
        .map(|e| TraceEmit {
            port: pl.port_name(e.port),
            vlan: e.vlan,
        })
        .collect();
    let (drop, verdict) = if !emits.is_empty() {
        let to: Vec<&str> = emits.iter().map(|e| e.port.as_str()).collect();
        (None, format!("delivered to {}", to.join(", ")))
    } else {
        let why = t.first_why.as_deref();
        (
            Some(cx.first_drop.unwrap_or(DropReason::Loop)),
            format!("dropped: {}", why.unwrap_or("no other port in this VLAN")),
        )
    };
    Trace {
        in_port: pl.port_name(in_port),
        flow: format!("{key:?}"),
        steps: t.steps,
        emits,
        drop,
        verdict,
    }
}

impl Tracer<'_> {
    fn say(&mut self, egress: bool, text: String) {
        self.steps.push(Step {
            depth: egress as usize,
            text,
        });
    }
}

impl Mode for Tracer<'_> {
    fn shared(&self) -> &Shared {
        self.sh
    }

    /// A walk of the tables (a trace explains rules; the worker's caches would hide them),
    /// told rule by rule.
    fn segment(&mut self, pl: &Pipeline, key: &FlowKey, egress: bool) -> (Segment, EmcSlot) {
        let mut visits: Vec<Visit> = vec![];
        let seg = pl.walk(key, Some(&mut visits));
        for v in &visits {
            let tname = pl.table_names.get(v.table as usize).copied().unwrap_or("");
            match &v.rule {
                Some(r) => {
                    let acts: Vec<String> = r.actions.iter().map(|a| a.to_string()).collect();
                    self.say(
                        egress,
                        format!(
                            "table {} ({tname}): priority {} [{}] -> {}",
                            v.table,
                            r.priority,
                            describe(&r.m),
                            acts.join(",")
                        ),
                    );
                    self.say(egress, format!("  # {}", r.note));
                    self.last_note = r.note.to_string();
                }
                None => {
                    self.say(
                        egress,
                        format!("table {} ({tname}): no rule matched", v.table),
                    );
                    self.last_note = format!("no rule matched in table {} ({tname})", v.table);
                }
            }
        }
        (seg, None)
    }

    /// Not charged: the packet passes as if the meter had tokens.
    fn meter(&mut self, pl: &Pipeline, id: u32, _len: u32, _now: u64, egress: bool) -> Verdict {
        self.say(
            egress,
            format!(
                "meter {id} (transmit shaping of {}): not charged by a trace",
                pl.port_name(id)
            ),
        );
        Verdict::Within
    }

    /// What conntrack would say, committing nothing.
    fn ct(&mut self, zone: u16, key: &FlowKey, cx: &Ctx, commit: bool, egress: bool) -> CtResult {
        let r = self.sh.ct.peek(zone, key, cx.frame, &cx.layout, cx.now);
        let st = ct_bits(r.state);
        self.say(
            egress,
            format!(
                "conntrack zone {zone}: {st}{}",
                match (r.picked_up, commit) {
                    (true, true) => " (would commit: picked up in mid-stream, tcp_loose)",
                    (true, false) =>
                        " (mid-stream TCP segment without a connection: new in its direction, tcp_loose)",
                    (false, true) => " (would commit)",
                    (false, false) => "",
                }
            ),
        );
        r
    }

    /// Charges nothing (the buckets are the forwarding threads'): the frame is dropped when its
    /// port's storm control of its class dropped a frame within the last second, i.e. while the
    /// port is storming, and passes otherwise.
    fn storm(&mut self, cx: &Ctx, c: StormClass) -> bool {
        let pl = cx.pl;
        let Some(cfg) = pl.storm.get(&cx.in_port) else {
            return true;
        };
        let Some(l) = cfg.limits()[c as usize].1 else {
            return true;
        };
        let kbps = l.kbps.map(|k| format!(", {k} kbit/s")).unwrap_or_default();
        let limit = format!("{} pps, burst {}{kbps}", l.pps, l.burst());
        let port = pl.port_name(cx.in_port);
        let (text, ok) = match self.sh.storm.storming(cx.in_port, c, cx.now) {
            Some(ago) => (
                format!(
                    "storm control of {port}: {} over its limit ({limit}; a frame dropped {} ms ago): \
                     would be dropped",
                    c.name(),
                    ago / 1_000_000
                ),
                false,
            ),
            None => (
                format!(
                    "storm control of {port}: {} within its limit ({limit}; not charged by a trace)",
                    c.name()
                ),
                true,
            ),
        };
        self.say(false, text);
        ok
    }

    /// Learns nothing: the lookup that follows sees the MAC table as it is.
    fn learn(&mut self, _domain: u32, _src: u64, _port: u32, _now: u64) -> bool {
        true
    }

    fn mac(&mut self, pl: &Pipeline, domain: u32, dst: Mac, port: Option<u32>) {
        let text = match port {
            Some(p) => format!(
                "MAC table: {dst} in VLAN {domain} is on port {}",
                pl.port_name(p)
            ),
            None if dst.is_multicast() => {
                format!("{dst} is broadcast/multicast: flood in VLAN {domain}")
            }
            None => format!("MAC table: {dst} unknown in VLAN {domain}: flood"),
        };
        self.say(false, text);
    }

    fn towards(&mut self, pl: &Pipeline, port: u32) {
        self.say(false, format!("-> towards port {}", pl.port_name(port)));
    }

    fn emitted(&mut self, pl: &Pipeline, e: &Emit) {
        let how = match e.vlan {
            VlanEdit::Set(v) => format!("tagged VLAN {v}"),
            _ => "untagged".into(),
        };
        self.say(
            true,
            format!("=> output to {} ({how})", pl.port_name(e.port)),
        );
    }

    fn dropped(&mut self, key: &FlowKey, egress: bool, r: DropReason, why: Cause) {
        let why = match why {
            Cause::Rule => match (r, key.vlan()) {
                (DropReason::VlanNotAllowed, Some(v)) => format!("VLAN {v}: {}", self.last_note),
                _ => self.last_note.clone(),
            },
            Cause::InputPort => "destination is the input port".into(),
            Cause::NoOtherPort => format!("no other port in VLAN {}", key.reg0()),
            Cause::TableBug => "action not allowed at this stage (table bug)".into(),
            // A trace charges no meter, commits no connection and learns no MAC, so these do
            // not happen in one; worded for completeness.
            Cause::Meter(id) => format!("meter {id} is out of tokens"),
            Cause::CtFull => "the connection table is full".into(),
            Cause::MacLimit => "the input port has learned as many MACs as it may".into(),
            Cause::Storm(c) => format!("{} over the input port's storm control limit", c.name()),
        };
        self.say(egress, format!("=> drop ({}): {why}", r.name()));
        self.first_why.get_or_insert(why);
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
