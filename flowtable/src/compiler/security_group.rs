//! Tables 2–3 (egress_ct, egress_sg) and 11–12 (ingress_ct, ingress_sg): a port's security
//! group, both directions, stateful. Every IP packet is looked up in conntrack in the port's zone;
//! packets of established or related connections pass, new connections pass when a rule of the
//! group allows them (and are committed), the rest are dropped. Remote-group rules expand to the
//! addresses of the group's members, so a membership change recompiles the groups that name it.

use super::tables::{
    Rules, T_EGRESS_CT, T_EGRESS_SG, T_INGRESS_CT, T_INGRESS_SG, T_METER, T_OUTPUT,
};
use crate::classifier::{range_to_prefixes, Action, Match};
use crate::conntrack::CtEntryInfo;
use crate::key::{self, ct};
use crate::matcher::MatchBuilder;
use crate::pipeline::{Pipeline, Segment, Terminal};
use crate::verdict::DropReason;
use model::{Direction, EtherType, Model, Port, Remote, SecurityGroup, SgRule};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The `ct_state` bits a security-group check table matches as "part of an allowed connection".
pub const CT_EST_OR_REL: [u8; 2] = [ct::TRACKED | ct::ESTABLISHED, ct::TRACKED | ct::RELATED];

pub(super) fn port(rs: &mut Rules, m: &Model, p: &Port, id: u32, uplinks: &[u32]) {
    let sg = p
        .security_group
        .as_deref()
        .and_then(|s| m.security_group(s));
    let b = MatchBuilder::new();
    let inp = b.in_port(id);
    let outp = b.out_port(id);
    let name = &p.name;
    let zone = id as u16;
    match sg {
        Some(sg) => {
            implicit(rs, sg, name, inp, outp, uplinks);
            for (dir, ct_t, sg_t, next, port_m) in [
                (Direction::Egress, T_EGRESS_CT, T_EGRESS_SG, T_METER, inp),
                (
                    Direction::Ingress,
                    T_INGRESS_CT,
                    T_INGRESS_SG,
                    T_OUTPUT,
                    outp,
                ),
            ] {
                for et in [key::ETH_TYPE_IPV4, key::ETH_TYPE_IPV6] {
                    rs.add(
                        ct_t,
                        100,
                        port_m.eth_type(et).build(),
                        vec![Action::Ct {
                            zone,
                            commit: false,
                            table: sg_t,
                        }],
                        format!(
                            "security group {} of port {name}: track connection",
                            sg.name
                        ),
                    );
                }
                rs.add(
                    ct_t,
                    10,
                    port_m.build(),
                    vec![Action::GotoTable(sg_t + 1)],
                    "non-IP traffic is not filtered by security groups",
                );
                rs.add(sg_t, 300, port_m.ct_state(ct::TRACKED | ct::INVALID, ct::TRACKED | ct::INVALID).build(), vec![Action::Drop(DropReason::CtInvalid)], "connection tracking: invalid packet (bad TCP state, unrelated ICMP error, fragment)");
                rs.add(
                    sg_t,
                    200,
                    port_m
                        .ct_state(ct::TRACKED | ct::ESTABLISHED, ct::TRACKED | ct::ESTABLISHED)
                        .build(),
                    vec![Action::GotoTable(next)],
                    "packet of an established connection",
                );
                rs.add(
                    sg_t,
                    200,
                    port_m
                        .ct_state(ct::TRACKED | ct::RELATED, ct::TRACKED | ct::RELATED)
                        .build(),
                    vec![Action::GotoTable(next)],
                    "packet related to a connection (ICMP error)",
                );
                for (i, r) in sg
                    .rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.direction == dir)
                {
                    let new = port_m.ct_state(ct::TRACKED | ct::NEW, ct::TRACKED | ct::NEW);
                    for mm in sg_rule_matches(m, r, new, dir) {
                        rs.add(
                            sg_t,
                            100,
                            mm,
                            vec![Action::Ct {
                                zone,
                                commit: true,
                                table: next,
                            }],
                            format!(
                                "security group {} rule {i} ({}) allows the new connection",
                                sg.name,
                                describe_rule(r)
                            ),
                        );
                    }
                }
                let what = if dir == Direction::Egress {
                    "egress"
                } else {
                    "ingress"
                };
                let reason = if dir == Direction::Egress {
                    DropReason::SgEgressDenied
                } else {
                    DropReason::SgIngressDenied
                };
                rs.add(
                    sg_t,
                    1,
                    port_m.build(),
                    vec![Action::Drop(reason)],
                    format!("{what} rule missing in security group {}", sg.name),
                );
            }
        }
        None => {
            rs.add(
                T_EGRESS_CT,
                10,
                inp.build(),
                vec![Action::GotoTable(T_METER)],
                format!("port {name} has no security group"),
            );
            rs.add(
                T_INGRESS_CT,
                10,
                outp.build(),
                vec![Action::GotoTable(T_OUTPUT)],
                format!("port {name} has no security group"),
            );
        }
    }
}

/// What the port-security layer lets through or stops whatever the group's rules say, as
/// OpenStack Neutron does, in the conntrack tables (before any rule, never committed): neighbour
/// discovery and MLD both ways, router solicitations out and advertisements in, DHCP client
/// requests out and server replies in, but only from an uplink (a guest answering as a DHCP
/// server, or advertising itself as a router without the group's leave, is dropped).
fn implicit(
    rs: &mut Rules,
    sg: &SecurityGroup,
    name: &str,
    inp: MatchBuilder,
    outp: MatchBuilder,
    uplinks: &[u32],
) {
    use key::icmp6::*;
    let icmp6 = |b: MatchBuilder, ty: u8| {
        b.eth_type(key::ETH_TYPE_IPV6)
            .ip_proto(key::IP_PROTO_ICMPV6)
            .tp_src(ty as u16)
    };
    let udp = |b: MatchBuilder, et: u16, src: u16, dst: u16| {
        b.eth_type(et)
            .ip_proto(key::IP_PROTO_UDP)
            .tp_src(src)
            .tp_dst(dst)
    };
    let to_meter = || vec![Action::GotoTable(T_METER)];
    let to_output = || vec![Action::GotoTable(T_OUTPUT)];
    let sgn = &sg.name;
    let nd_types = [
        NEIGHBOR_SOLICIT,
        NEIGHBOR_ADVERT,
        MLD_QUERY,
        MLD_REPORT,
        MLD_DONE,
        MLD2_REPORT,
    ];
    for ty in nd_types.into_iter().chain([ROUTER_SOLICIT]) {
        rs.add(
            T_EGRESS_CT,
            150,
            icmp6(inp, ty).build(),
            to_meter(),
            format!(
                "port {name}: neighbour discovery (ICMPv6 type {ty}) is allowed by port security"
            ),
        );
    }
    let ra_in = if sg.allow_router_advertisements {
        rs.add(
            T_EGRESS_CT,
            150,
            icmp6(inp, ROUTER_ADVERT).build(),
            to_meter(),
            format!("security group {sgn} allows its members' router advertisements"),
        );
        // A router hears the solicitations.
        Some(ROUTER_SOLICIT)
    } else {
        rs.add(
            T_EGRESS_CT,
            150,
            icmp6(inp, ROUTER_ADVERT).build(),
            vec![Action::Drop(DropReason::RaGuard)],
            format!(
                "RA guard: port {name} may not send router advertisements \
                 (security group {sgn} does not allow them)"
            ),
        );
        None
    };
    for ty in nd_types.into_iter().chain([ROUTER_ADVERT]).chain(ra_in) {
        rs.add(
            T_INGRESS_CT,
            150,
            icmp6(outp, ty).build(),
            to_output(),
            format!(
                "port {name}: neighbour discovery (ICMPv6 type {ty}) is allowed by port security"
            ),
        );
    }
    for (et, client, server, what) in [
        (key::ETH_TYPE_IPV4, 68, 67, "DHCP"),
        (key::ETH_TYPE_IPV6, 546, 547, "DHCPv6"),
    ] {
        rs.add(
            T_EGRESS_CT,
            150,
            udp(inp, et, client, server).build(),
            to_meter(),
            format!("port {name}: {what} client request is allowed by port security"),
        );
        rs.add(
            T_EGRESS_CT,
            150,
            udp(inp, et, server, client).build(),
            vec![Action::Drop(DropReason::DhcpServer)],
            format!(
                "port {name} has security group {sgn}: a guest may not answer as a {what} server"
            ),
        );
        for u in uplinks {
            rs.add(
                T_INGRESS_CT,
                150,
                udp(outp, et, server, client).in_port(*u).build(),
                to_output(),
                format!("port {name}: {what} server reply from the physical network is allowed by port security"),
            );
        }
        rs.add(
            T_INGRESS_CT,
            140,
            udp(outp, et, server, client).build(),
            vec![Action::Drop(DropReason::DhcpServerSpoof)],
            format!("port {name}: {what} server replies are only accepted from an uplink, not from another guest"),
        );
    }
}

/// Would the tables `pl` still allow the original direction of connection `e`? `ips` are the
/// addresses of the port whose zone holds it.
pub(super) fn connection_allowed(pl: &Pipeline, e: &CtEntryInfo, ips: &[IpAddr]) -> bool {
    let port = e.zone as u32;
    let mut k = e.orig_key();
    k.set_ct_state(ct::TRACKED | ct::NEW);
    let allowed = |seg: Segment| matches!(seg.terminal, Terminal::Ct { commit: true, .. });
    let mut eg = k;
    eg.set_in_port(port);
    eg.set_stage(T_EGRESS_SG);
    let mut ing = k;
    ing.set_out_port(port);
    ing.set_stage(T_INGRESS_SG);
    // A zone holds both the connections its port opened (egress) and those opened towards it
    // (ingress); the port's addresses tell which. Without addresses, either check may keep it.
    let opened_by_port = ips.contains(&e.src);
    let opened_to_port = ips.contains(&e.dst);
    match (opened_by_port, opened_to_port) {
        (true, false) => allowed(pl.walk(&eg, None)),
        (false, true) => allowed(pl.walk(&ing, None)),
        _ => allowed(pl.walk(&eg, None)) || allowed(pl.walk(&ing, None)),
    }
}

/// For each group a security group's rules name as remote: its members' addresses.
pub(super) fn remote_members(m: &Model, sg: &SecurityGroup) -> BTreeMap<String, Vec<IpAddr>> {
    let mut out = BTreeMap::new();
    for r in &sg.rules {
        if let Some(Remote::Group(g)) = &r.remote {
            out.insert(g.clone(), m.group_member_ips(g).into_iter().collect());
        }
    }
    out
}
fn describe_rule(r: &SgRule) -> String {
    let mut s = format!("{:?} {:?} {:?}", r.direction, r.ethertype, r.protocol).to_lowercase();
    if let (Some(a), b) = (r.port_min, r.port_max) {
        s += &format!(" port {a}-{}", b.unwrap_or(a));
    } else if let Some(b) = r.port_max {
        s += &format!(" port 0-{b}");
    }
    if let Some(t) = r.icmp_type {
        s += &format!(" icmp type {t}");
        if let Some(c) = r.icmp_code {
            s += &format!(" code {c}");
        }
    }
    match &r.remote {
        Some(Remote::Cidr(c)) => s += &format!(" remote {c}"),
        Some(Remote::Group(g)) => s += &format!(" remote group {g}"),
        None => {}
    }
    s
}
/// The matches that together express one security-group rule (port ranges and remote groups
/// expand into several).
fn sg_rule_matches(m: &Model, r: &SgRule, base: MatchBuilder, dir: Direction) -> Vec<Match> {
    let et = if r.ethertype == EtherType::IPv4 {
        key::ETH_TYPE_IPV4
    } else {
        key::ETH_TYPE_IPV6
    };
    let mut b = base.eth_type(et);
    if let Some(p) = r.protocol.number(r.ethertype) {
        b = b.ip_proto(p);
    }
    if let Some(t) = r.icmp_type {
        b = b.tp_src(t as u16);
        if let Some(c) = r.icmp_code {
            b = b.tp_dst(c as u16);
        }
    }
    let mut with_ports = vec![];
    if r.port_min.is_some() || r.port_max.is_some() {
        let lo = r.port_min.unwrap_or(0) as u32;
        let hi = r.port_max.unwrap_or(u16::MAX) as u32;
        for (v, mask) in range_to_prefixes(lo, hi, 16) {
            with_ports.push(b.tp_dst_masked(v as u16, mask as u16));
        }
    } else {
        with_ports.push(b);
    }
    // The remote end is the destination of egress traffic and the source of ingress traffic.
    let remote_prefixes: Option<Vec<(IpAddr, u8)>> = match &r.remote {
        None => None,
        Some(Remote::Cidr(c)) => Some(vec![(c.addr, c.len)]),
        Some(Remote::Group(g)) => Some(
            m.group_member_ips(g)
                .into_iter()
                .filter(|ip| ip.is_ipv4() == (r.ethertype == EtherType::IPv4))
                .map(|ip| (ip, if ip.is_ipv4() { 32 } else { 128 }))
                .collect(),
        ),
    };
    let mut out = vec![];
    for b in with_ports {
        match &remote_prefixes {
            None => out.push(b.build()),
            Some(ps) => {
                for (a, l) in ps {
                    let mm = if dir == Direction::Egress {
                        b.ip_dst_prefix(*a, *l)
                    } else {
                        b.ip_src_prefix(*a, *l)
                    };
                    out.push(mm.build());
                }
            }
        }
    }
    out
}
