//! Table 0 (classify), table 10 (egress_vlan) and table 13 (output): the VLAN domain a frame
//! belongs to as it comes in (access VLAN, trunk tag or native VLAN, uplink tag), whether an output
//! port carries that domain, and the tag a copy leaves with (access ports strip it, trunks and
//! uplinks set it, a trunk's native VLAN goes untagged). Also the switch-wide defaults around
//! them: malformed and stacked-VLAN frames and frames of unconfigured ports are dropped, and within
//! a domain the switch learns and forwards like an L2 switch.

use super::tables::{
    ranges_text, Rules, T_CLASSIFY, T_EGRESS_VLAN, T_INGRESS_CT, T_L2, T_OUTPUT, T_PORT_SECURITY,
};
use crate::classifier::{range_to_prefixes, Action};
use crate::key::flags;
use crate::matcher::MatchBuilder;
use crate::verdict::DropReason;
use model::{Model, Port, PortGroup, PortMode, VlanRange};
use std::collections::BTreeSet;

/// Table 0's switch-wide rules: what no port's rules may let in.
pub(super) fn classify_defaults(rs: &mut Rules) {
    let any = MatchBuilder::new();
    rs.add(
        T_CLASSIFY,
        1000,
        any.flags(flags::INVALID, flags::INVALID).build(),
        vec![Action::Drop(DropReason::Malformed)],
        "malformed frame (truncated or bad headers)",
    );
    rs.add(
        T_CLASSIFY,
        900,
        any.flags(flags::QINQ, flags::QINQ).build(),
        vec![Action::Drop(DropReason::StackedVlan)],
        "stacked VLAN tags (QinQ) are not supported",
    );
    rs.add(
        T_CLASSIFY,
        900,
        any.flags(flags::LINK_EXT_UNSUPPORTED, flags::LINK_EXT_UNSUPPORTED)
            .build(),
        vec![Action::Drop(DropReason::StackedVlan)],
        "more than two VLAN tags or MACsec",
    );
    rs.add(
        T_CLASSIFY,
        0,
        any.build(),
        vec![Action::Drop(DropReason::NoMatch)],
        "frame from a port that is not configured",
    );
}

/// Forwarding within a VLAN domain, and no copy to a port outside it.
pub(super) fn domain_defaults(rs: &mut Rules) {
    let any = MatchBuilder::new();
    rs.add(
        T_L2,
        0,
        any.build(),
        vec![Action::Normal],
        "L2 learning switch within the VLAN",
    );
    rs.add(
        T_EGRESS_VLAN,
        0,
        any.build(),
        vec![Action::Drop(DropReason::VlanNotAllowed)],
        "output port is not in this VLAN",
    );
}

pub(super) fn uplink(rs: &mut Rules, name: &str, id: u32, vlans: &[VlanRange]) {
    let b = MatchBuilder::new();
    let text = ranges_text(vlans);
    for r in vlans {
        for (v, mask) in range_to_prefixes(r.first as u32, r.last as u32, 12) {
            let note = format!("uplink {name} carries VLANs {text}");
            rs.add(
                T_CLASSIFY,
                100,
                b.in_port(id).vlan_masked(v as u16, mask as u16).build(),
                vec![Action::SetReg0FromVlan, Action::GotoTable(T_L2)],
                note.clone(),
            );
            rs.add(
                T_EGRESS_VLAN,
                100,
                b.out_port(id).reg0_masked(v, mask | 0xffff_f000).build(),
                vec![Action::GotoTable(T_OUTPUT)],
                note,
            );
        }
    }
    rs.add(
        T_CLASSIFY,
        80,
        b.in_port(id).build(),
        vec![Action::Drop(DropReason::VlanNotAllowed)],
        format!("VLAN not carried by uplink {name} (carries {text}; untagged frames are dropped)"),
    );
    rs.add(
        T_OUTPUT,
        100,
        b.out_port(id).build(),
        vec![Action::EmitTagged {
            fill_tcp_csum: false,
        }],
        format!("uplink {name}: send tagged"),
    );
}

/// A guest port's VLAN membership, in and out.
pub(super) fn port(rs: &mut Rules, p: &Port, pg: &PortGroup, id: u32) {
    let b = MatchBuilder::new();
    let inp = b.in_port(id);
    let outp = b.out_port(id);
    let name = &p.name;
    let csum = pg.tcp_checksum_fill;
    let mode = pg.mode();
    match &mode {
        PortMode::Access { vlan } => {
            rs.add(
                T_CLASSIFY,
                100,
                inp.untagged().build(),
                vec![
                    Action::SetReg0(*vlan as u32),
                    Action::GotoTable(T_PORT_SECURITY),
                ],
                format!(
                    "port {name}: access port of group {} in VLAN {vlan}",
                    pg.name
                ),
            );
            // As a physical switch's access port: a priority tag (VLAN 0, 802.1p) is no VLAN.
            // The frame leaves access ports untagged; trunks and uplinks get it tagged with its
            // VLAN and its priority bits kept.
            rs.add(
                T_CLASSIFY,
                100,
                inp.vlan(0).build(),
                vec![
                    Action::SetReg0(*vlan as u32),
                    Action::GotoTable(T_PORT_SECURITY),
                ],
                format!(
                    "port {name}: priority-tagged frame (VLAN 0) on access port of group {} \
                     in VLAN {vlan}, as untagged",
                    pg.name
                ),
            );
            rs.add(
                T_CLASSIFY,
                90,
                inp.tagged().build(),
                vec![Action::Drop(DropReason::TaggedOnAccess)],
                format!(
                    "tagged frame on access port {name} (group {}, VLAN {vlan})",
                    pg.name
                ),
            );
            rs.add(
                T_EGRESS_VLAN,
                100,
                outp.reg0(*vlan as u32).build(),
                vec![Action::GotoTable(T_INGRESS_CT)],
                format!("port {name} is in VLAN {vlan}"),
            );
            rs.add(
                T_OUTPUT,
                100,
                outp.build(),
                vec![Action::EmitUntagged {
                    fill_tcp_csum: csum,
                }],
                format!("access port {name}: send untagged"),
            );
        }
        PortMode::Trunk { vlans, native_vlan } => {
            let text = ranges_text(vlans);
            for r in vlans {
                for (v, mask) in range_to_prefixes(r.first as u32, r.last as u32, 12) {
                    rs.add(
                        T_CLASSIFY,
                        100,
                        inp.vlan_masked(v as u16, mask as u16).build(),
                        vec![Action::SetReg0FromVlan, Action::GotoTable(T_PORT_SECURITY)],
                        format!(
                            "port {name}: trunk of group {} allows VLANs {text}",
                            pg.name
                        ),
                    );
                    rs.add(
                        T_EGRESS_VLAN,
                        100,
                        outp.reg0_masked(v, mask | 0xffff_f000).build(),
                        vec![Action::GotoTable(T_INGRESS_CT)],
                        format!("trunk port {name} carries VLANs {text}"),
                    );
                }
            }
            match native_vlan {
                Some(n) => {
                    rs.add(
                        T_CLASSIFY,
                        100,
                        inp.untagged().build(),
                        vec![
                            Action::SetReg0(*n as u32),
                            Action::GotoTable(T_PORT_SECURITY),
                        ],
                        format!("port {name}: untagged frames go to native VLAN {n}"),
                    );
                    rs.add(
                        T_CLASSIFY,
                        100,
                        inp.vlan(0).build(),
                        vec![
                            Action::SetReg0(*n as u32),
                            Action::GotoTable(T_PORT_SECURITY),
                        ],
                        format!(
                            "port {name}: priority-tagged frames (VLAN 0) go to native VLAN {n}"
                        ),
                    );
                    rs.add(
                        T_EGRESS_VLAN,
                        100,
                        outp.reg0(*n as u32).build(),
                        vec![Action::GotoTable(T_INGRESS_CT)],
                        format!("trunk port {name} has native VLAN {n}"),
                    );
                    rs.add(
                        T_OUTPUT,
                        110,
                        outp.reg0(*n as u32).build(),
                        vec![Action::EmitUntagged {
                            fill_tcp_csum: csum,
                        }],
                        format!("trunk port {name}: native VLAN {n} goes untagged"),
                    );
                }
                None => rs.add(
                    T_CLASSIFY,
                    90,
                    inp.untagged().build(),
                    vec![Action::Drop(DropReason::VlanNotAllowed)],
                    format!("untagged frame on trunk port {name}, which has no native VLAN"),
                ),
            }
            rs.add(
                T_CLASSIFY,
                80,
                inp.build(),
                vec![Action::Drop(DropReason::VlanNotAllowed)],
                format!("VLAN not allowed on trunk port {name} (allowed: {text})"),
            );
            rs.add(
                T_OUTPUT,
                100,
                outp.build(),
                vec![Action::EmitTagged {
                    fill_tcp_csum: csum,
                }],
                format!("trunk port {name}: send tagged"),
            );
        }
    }
}

/// VLANs an uplink without an explicit list carries: every VLAN of every port group.
pub(super) fn effective_uplink_vlans(m: &Model) -> Vec<VlanRange> {
    let mut set = BTreeSet::new();
    for pg in &m.port_groups {
        set.extend(port_vlans(&pg.mode()));
    }
    let mut out: Vec<VlanRange> = vec![];
    for v in set {
        match out.last_mut() {
            Some(r) if r.last + 1 == v => r.last = v,
            _ => out.push(VlanRange { first: v, last: v }),
        }
    }
    out
}

pub(super) fn port_vlans(mode: &PortMode) -> Vec<u16> {
    match mode {
        PortMode::Access { vlan } => vec![*vlan],
        PortMode::Trunk { vlans, native_vlan } => {
            let mut v: Vec<u16> = vlans.iter().flat_map(|r| r.first..=r.last).collect();
            v.extend(native_vlan);
            v
        }
    }
}
