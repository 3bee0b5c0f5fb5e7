//! The pipeline interpreter: what happens to one packet between its flow key and its emits, written
//! once and compiled twice, for forwarding ([`crate::worker::Worker`]) and for explaining
//! ([`crate::trace`]), as VPP compiles one node function with and without tracing.
//!
//! A packet's path is a sequence of segments (see [`crate::pipeline`]): the interpreter takes each
//! segment's meters and its terminal (conntrack, the MAC table, flood, output, emit, drop) and goes
//! on to the next segment until every copy is emitted or dropped. Everything forwarding and tracing
//! do differently is a method of [`Mode`]:
//!
//! | | worker | trace |
//! |---|---|---|
//! | segments | exact-match cache and its chains, megaflow cache, walk | walk, rule by rule |
//! | meters | charged | not charged (they pass) |
//! | conntrack | `process`: commits, moves TCP states | `peek`: changes nothing |
//! | MAC learning | learns (the limit may drop) | learns nothing |
//! | storm control | charged | drops only while the port is storming |
//! | narration | none | the steps of the trace |
//!
//! The narration hooks are empty by default: in the worker's copy they compile to nothing.

use crate::cache::emc::{Cursor, EmcSlot};
use crate::classifier::TableId;
use crate::conntrack::CtResult;
use crate::key::FlowKey;
use crate::meter::Verdict;
use crate::pipeline::{Pipeline, Segment, Terminal};
use crate::shared::Shared;
use crate::storm::StormClass;
use crate::verdict::{DropReason, Emit, VlanEdit};
use crate::wire::Layout;
use model::Mac;

/// Why the interpreter dropped a packet, beyond its [`DropReason`]: what a trace explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The segment's last table decided (its rule's note, or that no rule matched, says why).
    Rule,
    /// The MAC table or a static output names the input port.
    InputPort,
    /// A flood has no port to go to besides the input port.
    NoOtherPort,
    /// A segment ends in an action its stage may not take (output from an egress table, emit
    /// from an ingress one), or recirculates without end: a table bug.
    TableBug,
    /// This meter is out of tokens.
    Meter(u32),
    /// A new connection found the connection table full.
    CtFull,
    /// The input port has learned as many MACs as it may.
    MacLimit,
    /// The input port's storm control of this class is out of tokens.
    Storm(StormClass),
}

/// What forwarding and tracing do differently; see the module documentation.
pub(crate) trait Mode {
    fn shared(&self) -> &Shared;

    /// The segment that starts at `key`, and where the exact-match cache holds it.
    fn segment(&mut self, pl: &Pipeline, key: &FlowKey, egress: bool) -> (Segment, EmcSlot);

    /// The segment a packet whose path is at `cur` goes on to after `outcome` (a `ct_state`, an
    /// output port), when the path's cache chain knows it; advances `cur`. A mode without caches
    /// keeps the defaults: no chain, every segment from [`Mode::segment`].
    #[inline(always)]
    fn chain_hit(&mut self, _version: u64, _cur: &mut Cursor, _outcome: u32) -> Option<Segment> {
        None
    }

    /// After a [`Mode::chain_hit`] miss: the segment for `key`, which `outcome` led to.
    #[inline(always)]
    fn chain_miss(
        &mut self,
        pl: &Pipeline,
        _cur: &mut Cursor,
        _outcome: u32,
        key: &FlowKey,
        egress: bool,
    ) -> Segment {
        self.segment(pl, key, egress).0
    }

    /// Meter `id`'s verdict on a packet of `len` bytes.
    fn meter(&mut self, pl: &Pipeline, id: u32, len: u32, now: u64, egress: bool) -> Verdict;

    /// Conntrack's verdict on the packet in `zone`; `commit` asks for a new connection to be
    /// created.
    fn ct(&mut self, zone: u16, key: &FlowKey, cx: &Ctx, commit: bool, egress: bool) -> CtResult;

    /// `src` (a unicast source, in [`Mac::to_u64`]'s form) was seen on `port` in `domain`;
    /// false when the port may learn no more MACs.
    fn learn(&mut self, domain: u32, src: u64, port: u32, now: u64) -> bool;

    /// The port the MAC table gives `dst` (a unicast address, in [`Mac::to_u64`]'s form) in
    /// `domain`.
    #[inline(always)]
    fn mac_lookup(&mut self, domain: u32, dst: u64, now: u64) -> Option<u32> {
        self.shared().mac.lookup(domain, Mac::from_u64(dst), now)
    }

    /// Whether the input port's storm control lets a frame of class `c` be flooded.
    fn storm(&mut self, cx: &Ctx, c: StormClass) -> bool;

    /// What the MAC table said of `dst`: its port, or `None`: unknown, or a group address (never
    /// looked up: flooded).
    #[inline(always)]
    fn mac(&mut self, _pl: &Pipeline, _domain: u32, _dst: Mac, _port: Option<u32>) {}

    /// A copy of the packet goes towards `port`: its egress path starts.
    #[inline(always)]
    fn towards(&mut self, _pl: &Pipeline, _port: u32) {}

    /// A copy goes out.
    #[inline(always)]
    fn emitted(&mut self, _pl: &Pipeline, _e: &Emit) {}

    /// The packet (on the ingress path) or one copy of it (`egress`) is dropped.
    #[inline(always)]
    fn dropped(&mut self, _key: &FlowKey, _egress: bool, _r: DropReason, _why: Cause) {}
}

/// Everything one packet's processing needs besides the mode.
pub(crate) struct Ctx<'a> {
    pub pl: &'a Pipeline,
    pub frame: &'a [u8],
    /// Where the parser found the frame's headers (conntrack reads L3/L4 from there).
    pub layout: Layout,
    pub now: u64,
    pub in_port: u32,
    /// The first drop of the packet or of one of its copies: what the packet's result says when
    /// no copy goes out.
    pub first_drop: Option<DropReason>,
    /// A meter passed the packet above its port's average rate.
    pub excess: bool,
}

/// The key the egress tables see for a copy of `key` towards `port`.
#[inline(always)]
fn egress_key(pl: &Pipeline, key: &FlowKey, port: u32) -> FlowKey {
    let mut k = *key;
    k.set_out_port(port);
    k.set_stage(pl.egress_table);
    k.set_ct_state(0);
    k
}

/// Most segments one path (the ingress path, or one copy's egress path) takes.
const ROUNDS: u32 = 8;

/// Runs segments from `key` until the packet is emitted or dropped, pushing its copies to `out`.
/// `egress` is true once an output port is chosen (key.out_port set). Always inlined: see the
/// first round below.
#[inline(always)]
pub(crate) fn run<M: Mode>(
    m: &mut M,
    cx: &mut Ctx,
    mut key: FlowKey,
    egress: bool,
    out: &mut Vec<Emit>,
) {
    let (seg, slot) = m.segment(cx.pl, &key, egress);
    let mut cur = Cursor::at(slot);
    // The first round of `run_from` for the commonest first segment of all (no meter, on to
    // the MAC table), done here, in the caller: `run_from` is a large recursive function, and
    // entering it cost an L2 packet about 50 instructions (callgrind, one flow: 425 with, 371
    // without; `normal` is inlined here too).
    if !egress && seg.n_meters == 0 && seg.terminal == Terminal::Normal {
        if let Some(r) = seg.set_reg0 {
            key.set_reg0(r);
        }
        return normal(m, cx, &key, out, &mut cur);
    }
    if seg.n_meters == 0 {
        if let Terminal::Ct { .. } = seg.terminal {
            return ct_first(m, cx, key, egress, out, seg, &mut cur);
        }
    }
    run_from(m, cx, key, egress, out, Some(seg), &mut cur, ROUNDS)
}

/// The first rounds of `run_from` for a first segment without meters that ends in conntrack
/// (a port's security group, in either direction), done in the caller as `run` does for L2:
/// conntrack, then the segment its verdict leads to when that is the MAC table (ingress) or a
/// plain emit (egress). Entering `run_from` (once a tracked packet, in one direction or the
/// other) cost about 75 instructions (callgrind, 1k connections through groups: 915 with, 840
/// without; the plain L2 path pays 12 for this, with the code out of line as well as inlined).
#[inline(always)]
fn ct_first<M: Mode>(
    m: &mut M,
    cx: &mut Ctx,
    mut key: FlowKey,
    egress: bool,
    out: &mut Vec<Emit>,
    seg: Segment,
    cur: &mut Cursor,
) {
    let Terminal::Ct {
        zone,
        commit,
        table,
    } = seg.terminal
    else {
        return run_from(m, cx, key, egress, out, Some(seg), cur, ROUNDS);
    };
    if let Some(r) = seg.set_reg0 {
        key.set_reg0(r);
    }
    let Some(next) = ct_step(m, cx, &mut key, egress, zone, commit, table, cur) else {
        return;
    };
    if next.n_meters == 0 {
        if !egress && next.terminal == Terminal::Normal {
            if let Some(r) = next.set_reg0 {
                key.set_reg0(r);
            }
            return normal(m, cx, &key, out, cur);
        }
        if egress {
            if let Some(e) = plain_emit(&key, key.out_port(), &next) {
                m.emitted(cx.pl, &e);
                return out.push(e);
            }
        }
    }
    // The conntrack segment was the path's first round.
    run_from(m, cx, key, egress, out, Some(next), cur, ROUNDS - 1)
}

/// Conntrack's terminal: the verdict goes into the key, which moves on to `table`; the segment
/// it leads to, or `None` when the packet is dropped (a commit into a full table).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn ct_step<M: Mode>(
    m: &mut M,
    cx: &mut Ctx,
    key: &mut FlowKey,
    egress: bool,
    zone: u16,
    commit: bool,
    table: TableId,
    cur: &mut Cursor,
) -> Option<Segment> {
    let r = m.ct(zone, key, cx, commit, egress);
    if commit && r.full {
        discard(m, cx, key, egress, DropReason::CtFull, Cause::CtFull);
        return None;
    }
    key.set_ct_state(r.state);
    key.set_stage(table);
    let outcome = r.state as u32;
    Some(match m.chain_hit(cx.pl.version, cur, outcome) {
        Some(s) => s,
        None => m.chain_miss(cx.pl, cur, outcome, key, egress),
    })
}

/// Runs the segments from `key` until the packet is emitted or dropped; `first` is the first
/// one when it is already known (else it is looked up, and the path's chain starts at its
/// cache entry). `egress` is true once an output port is chosen (key.out_port set). `rounds`:
/// how many segments the path may still take ([`ROUNDS`] from its start) before it is dropped
/// as a table bug.
#[allow(clippy::too_many_arguments)]
fn run_from<M: Mode>(
    m: &mut M,
    cx: &mut Ctx,
    mut key: FlowKey,
    egress: bool,
    out: &mut Vec<Emit>,
    mut first: Option<Segment>,
    cur: &mut Cursor,
    rounds: u32,
) {
    // Each round is one segment; conntrack recirculations are bounded by the table count.
    for _ in 0..rounds {
        let seg = match first.take() {
            Some(s) => s,
            None => {
                let (s, slot) = m.segment(cx.pl, &key, egress);
                *cur = Cursor::at(slot);
                s
            }
        };
        if let Some(r) = seg.set_reg0 {
            key.set_reg0(r);
        }
        for &id in &seg.meters[..seg.n_meters as usize] {
            match m.meter(cx.pl, id, cx.frame.len() as u32, cx.now, egress) {
                Verdict::Over => {
                    return discard(m, cx, &key, egress, DropReason::Meter, Cause::Meter(id))
                }
                Verdict::Excess => cx.excess = true,
                Verdict::Within => {}
            }
        }
        match seg.terminal {
            Terminal::Drop(r) => return discard(m, cx, &key, egress, r, Cause::Rule),
            Terminal::Ct {
                zone,
                commit,
                table,
            } => {
                let Some(next) = ct_step(m, cx, &mut key, egress, zone, commit, table, cur) else {
                    return;
                };
                first = Some(next);
            }
            Terminal::Emit {
                tagged,
                fill_tcp_csum,
            } if egress => {
                let vlan = if tagged {
                    VlanEdit::Set(key.reg0() as u16)
                } else {
                    VlanEdit::Strip
                };
                let e = Emit {
                    port: key.out_port(),
                    vlan,
                    fill_tcp_csum,
                };
                m.emitted(cx.pl, &e);
                out.push(e);
                return;
            }
            Terminal::Output(p) if !egress => return unicast(m, cx, &key, p, out, cur),
            Terminal::Normal if !egress => return normal(m, cx, &key, out, cur),
            Terminal::Flood if !egress => return storm_then_flood(m, cx, &key, out),
            // Output from egress tables, or emit from ingress: a table bug, not a guest's.
            _ => return discard(m, cx, &key, egress, DropReason::Policy, Cause::TableBug),
        }
    }
    discard(m, cx, &key, egress, DropReason::Policy, Cause::TableBug)
}

/// Drops the packet (`egress` false) or one copy of it.
fn discard<M: Mode>(
    m: &mut M,
    cx: &mut Ctx,
    key: &FlowKey,
    egress: bool,
    r: DropReason,
    why: Cause,
) {
    m.dropped(key, egress, r, why);
    cx.first_drop.get_or_insert(r);
}

fn egress<M: Mode>(m: &mut M, cx: &mut Ctx, key: &FlowKey, port: u32, out: &mut Vec<Emit>) {
    if port == cx.in_port {
        return discard(m, cx, key, false, DropReason::Loop, Cause::InputPort);
    }
    m.towards(cx.pl, port);
    run(m, cx, egress_key(cx.pl, key, port), true, out);
}

/// One copy to `port` (a port the MAC table named, or a static output), continuing the
/// packet's chain: when the previous packets of this path went to the same port, the first
/// egress segment comes from the chain, with no lookup at all; when that segment has no meter
/// and no conntrack, the copy is emitted at once.
#[inline]
fn unicast<M: Mode>(
    m: &mut M,
    cx: &mut Ctx,
    key: &FlowKey,
    port: u32,
    out: &mut Vec<Emit>,
    cur: &mut Cursor,
) {
    if port == cx.in_port {
        return discard(m, cx, key, false, DropReason::Loop, Cause::InputPort);
    }
    m.towards(cx.pl, port);
    if let Some(seg) = m.chain_hit(cx.pl.version, cur, port) {
        if let Some(e) = plain_emit(key, port, &seg) {
            m.emitted(cx.pl, &e);
            return out.push(e);
        }
        return run_from(
            m,
            cx,
            egress_key(cx.pl, key, port),
            true,
            out,
            Some(seg),
            cur,
            ROUNDS,
        );
    }
    let k = egress_key(cx.pl, key, port);
    let seg = m.chain_miss(cx.pl, cur, port, &k, true);
    run_from(m, cx, k, true, out, Some(seg), cur, ROUNDS)
}

/// The egress path of a copy to `port` from its first segment `seg`, which the chain gave.
#[inline]
fn egress_from<M: Mode>(
    m: &mut M,
    cx: &mut Ctx,
    key: &FlowKey,
    port: u32,
    out: &mut Vec<Emit>,
    seg: Segment,
    cur: &mut Cursor,
) {
    let k = egress_key(cx.pl, key, port);
    if seg.n_meters == 0 {
        if let Terminal::Ct { .. } = seg.terminal {
            return ct_first(m, cx, k, true, out, seg, cur);
        }
    }
    run_from(m, cx, k, true, out, Some(seg), cur, ROUNDS)
}

/// The most common egress of all: a segment with no meter and no conntrack that emits the
/// copy straight away. The copy, or `None` to leave it to the general path.
#[inline(always)]
fn plain_emit(key: &FlowKey, port: u32, seg: &Segment) -> Option<Emit> {
    let (
        0,
        Terminal::Emit {
            tagged,
            fill_tcp_csum,
        },
    ) = (seg.n_meters, seg.terminal)
    else {
        return None;
    };
    Some(Emit {
        port,
        vlan: if tagged {
            VlanEdit::Set(seg.set_reg0.unwrap_or(key.reg0()) as u16)
        } else {
            VlanEdit::Strip
        },
        fill_tcp_csum,
    })
}

/// [`Mac::is_multicast`] of an address in [`Mac::to_u64`]'s form: the I/G bit of its first octet.
#[inline(always)]
fn is_group(mac: u64) -> bool {
    mac & (1 << 40) != 0
}

/// MAC learning of the source, then the destination's port from the MAC table, else a flood.
// Always inlined, into `run` as well as `run_from`: as a call shared by the two, it cost the
// plain L2 path more than half of what skipping `run_from` gains (401 instead of 371).
#[inline(always)]
fn normal<M: Mode>(m: &mut M, cx: &mut Ctx, key: &FlowKey, out: &mut Vec<Emit>, cur: &mut Cursor) {
    let domain = key.reg0();
    // The addresses as the key holds them: building a `Mac` only to turn it back into an
    // integer for the caches cost the worker tens of instructions a packet.
    let src = key.eth_src_u64();
    if !is_group(src) && !m.learn(domain, src, cx.in_port, cx.now) {
        return discard(m, cx, key, false, DropReason::MacLimit, Cause::MacLimit);
    }
    let dst = key.eth_dst_u64();
    if !is_group(dst) {
        let found = m.mac_lookup(domain, dst, cx.now);
        m.mac(cx.pl, domain, Mac::from_u64(dst), found);
        if let Some(p) = found {
            // unicast() inline here (it is recursive, so it is not inlined): a repeat of the
            // last packet's path to the same port, whose egress segment is then followed once.
            if p != cx.in_port {
                // A copy of the cursor: the plain case never uses it again, and the compiler
                // keeps a local one in registers.
                let mut probe = *cur;
                if let Some(seg) = m.chain_hit(cx.pl.version, &mut probe, p) {
                    m.towards(cx.pl, p);
                    if let Some(e) = plain_emit(key, p, &seg) {
                        m.emitted(cx.pl, &e);
                        return out.push(e);
                    }
                    *cur = probe;
                    return egress_from(m, cx, key, p, out, seg, cur);
                }
            }
            return unicast(m, cx, key, p, out, cur);
        }
    } else {
        m.mac(cx.pl, domain, Mac::from_u64(dst), None);
    }
    storm_then_flood(m, cx, key, out)
}

/// Storm control of the input port, then the flood. Here, after the caches: a cached path ends
/// in `normal` (or `flood`), so every flooded packet is charged whatever cache answered.
#[inline]
fn storm_then_flood<M: Mode>(m: &mut M, cx: &mut Ctx, key: &FlowKey, out: &mut Vec<Emit>) {
    let c = StormClass::of(key.eth_dst());
    if !m.storm(cx, c) {
        return discard(m, cx, key, false, c.drop_reason(), Cause::Storm(c));
    }
    flood(m, cx, key, out)
}

fn flood<M: Mode>(m: &mut M, cx: &mut Ctx, key: &FlowKey, out: &mut Vec<Emit>) {
    let pl = cx.pl;
    let Some(ports) = pl.flood.get(&key.reg0()) else {
        return discard(m, cx, key, false, DropReason::Loop, Cause::NoOtherPort);
    };
    let before = out.len();
    for &p in ports {
        if p != cx.in_port {
            egress(m, cx, key, p, out);
        }
    }
    if out.len() == before && cx.first_drop.is_none() {
        discard(m, cx, key, false, DropReason::Loop, Cause::NoOtherPort);
    }
}

#[cfg(test)]
mod tests {
    use crate::classifier::{Action, Match, Rule, Table};
    use crate::frames::{self, L4};
    use crate::pipeline::Pipeline;
    use crate::shared::{Shared, SwitchConfig};
    use crate::verdict::{BurstResult, DropReason};
    use crate::worker::Worker;
    use model::Mac;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    /// A path of `n` conntrack segments (tables 0..n, each on to the next) and then a drop
    /// (`SgIngressDenied`): the packet's drop reason, through the worker.
    fn after_ct_segments(n: u8) -> Option<DropReason> {
        let tables = (0..=n)
            .map(|i| {
                let mut t = Table::new();
                let action = if i < n {
                    Action::Ct {
                        zone: 1,
                        commit: true,
                        table: i + 1,
                    }
                } else {
                    Action::Drop(DropReason::SgIngressDenied)
                };
                t.insert(Rule {
                    id: i as u64,
                    priority: 1,
                    m: Match::any(),
                    actions: [action].into(),
                    note: "".into(),
                });
                t
            })
            .collect();
        let shared = Shared::new(SwitchConfig::default());
        shared.pipeline.store(Arc::new(Pipeline {
            version: 1,
            tables,
            ..Pipeline::default()
        }));
        let mut w = Worker::new(Arc::new(shared));
        let f = frames::ipv4(
            Mac([2, 0, 0, 0, 0, 1]),
            Mac([2, 0, 0, 0, 0, 2]),
            None,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            L4::Udp { src: 1, dst: 2 },
            0,
        );
        let mut out = BurstResult::default();
        // Twice: the second packet's path comes from the cache and its chains.
        let first = {
            w.process_burst(1, &[&f], 1_000_000_000, &mut out);
            out.packets[0].drop
        };
        w.process_burst(1, &[&f], 1_000_001_000, &mut out);
        assert_eq!(out.packets[0].drop, first, "{n} segments, cached");
        first
    }

    /// A path takes at most eight segments, whatever its first one: a ninth is a table bug,
    /// also after a first conntrack segment handled outside `run_from`.
    #[test]
    fn a_path_takes_at_most_eight_segments() {
        assert_eq!(after_ct_segments(7), Some(DropReason::SgIngressDenied));
        assert_eq!(after_ct_segments(8), Some(DropReason::Policy));
    }
}
