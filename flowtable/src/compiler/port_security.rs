//! Table 1 (port_security): what a guest may claim to be. DHCP isolation drops DHCP server
//! messages from guests; IP–MAC binding (access groups only) lets a port send only from its own
//! MAC and addresses, plus the few sources a guest needs before it has an address; its ARP and
//! IPv6 neighbour discovery may only claim those addresses (ARP probes and duplicate address
//! detection, which claim nothing yet, pass).

use super::tables::{Rules, T_EGRESS_CT, T_PORT_SECURITY};
use crate::classifier::Action;
use crate::key;
use crate::matcher::MatchBuilder;
use crate::verdict::DropReason;
use model::{Mac, Port, PortGroup, PortMode};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(super) fn port(rs: &mut Rules, p: &Port, pg: &PortGroup, id: u32) {
    let inp = MatchBuilder::new().in_port(id);
    let name = &p.name;
    let mode = pg.mode();
    let go = || vec![Action::GotoTable(T_EGRESS_CT)];
    if pg.dhcp_isolation {
        let note = format!(
            "DHCP isolation on group {}: guest {name} may not answer as a DHCP server",
            pg.name
        );
        rs.add(
            T_PORT_SECURITY,
            300,
            inp.eth_type(key::ETH_TYPE_IPV4)
                .ip_proto(key::IP_PROTO_UDP)
                .tp_src(67)
                .tp_dst(68)
                .build(),
            vec![Action::Drop(DropReason::DhcpServer)],
            note.clone(),
        );
        rs.add(
            T_PORT_SECURITY,
            300,
            inp.eth_type(key::ETH_TYPE_IPV6)
                .ip_proto(key::IP_PROTO_UDP)
                .tp_src(547)
                .tp_dst(546)
                .build(),
            vec![Action::Drop(DropReason::DhcpServer)],
            note,
        );
    }
    let binding = pg.ip_mac_binding && matches!(mode, PortMode::Access { .. });
    if binding {
        let mac = p.mac;
        let bound = p
            .ips
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let from = inp.eth_src(mac);
        for ip in &p.ips {
            match ip {
                IpAddr::V4(_) => {
                    rs.add(
                        T_PORT_SECURITY,
                        200,
                        from.eth_type(key::ETH_TYPE_IPV4)
                            .ip_src_prefix(*ip, 32)
                            .build(),
                        go(),
                        format!("{ip} is bound to port {name}"),
                    );
                    rs.add(
                        T_PORT_SECURITY,
                        200,
                        from.eth_type(key::ETH_TYPE_ARP)
                            .arp_sha(mac)
                            .ip_src_prefix(*ip, 32)
                            .build(),
                        go(),
                        format!("ARP from {ip}/{mac}, bound to port {name}"),
                    );
                }
                IpAddr::V6(_) => rs.add(
                    T_PORT_SECURITY,
                    200,
                    from.eth_type(key::ETH_TYPE_IPV6)
                        .ip_src_prefix(*ip, 128)
                        .build(),
                    go(),
                    format!("{ip} is bound to port {name}"),
                ),
            }
        }
        let zero4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        rs.add(
            T_PORT_SECURITY,
            200,
            from.eth_type(key::ETH_TYPE_IPV4)
                .ip_src_prefix(zero4, 32)
                .ip_proto(key::IP_PROTO_UDP)
                .tp_src(68)
                .tp_dst(67)
                .build(),
            go(),
            "DHCP client request (source 0.0.0.0) is allowed",
        );
        // A probe claims nothing (RFC 5227: receivers do not learn from sender 0.0.0.0), so any
        // target may be probed; what it is for is checking the address a guest is about to use.
        rs.add(
            T_PORT_SECURITY,
            200,
            from.eth_type(key::ETH_TYPE_ARP)
                .arp_sha(mac)
                .ip_src_prefix(zero4, 32)
                .build(),
            go(),
            format!("ARP probe (RFC 5227, sender 0.0.0.0) from {mac}, bound to port {name}"),
        );
        rs.add(
            T_PORT_SECURITY,
            160,
            from.eth_type(key::ETH_TYPE_ARP).arp_sha(mac).build(),
            vec![Action::Drop(DropReason::SpoofedIp)],
            format!(
                "ARP sender address not bound to port {name} (a gratuitous ARP or reply \
                 claiming another address; bound: {bound})"
            ),
        );
        rs.add(
            T_PORT_SECURITY,
            155,
            from.eth_type(key::ETH_TYPE_ARP).build(),
            vec![Action::Drop(DropReason::ArpSpoofedMac)],
            format!("ARP sender MAC not bound to port {name} (bound: {mac})"),
        );
        neighbour_discovery(rs, p, from);
        rs.add(
            T_PORT_SECURITY,
            200,
            from.eth_type(key::ETH_TYPE_IPV6)
                .ip_src_prefix(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10)
                .build(),
            go(),
            "IPv6 link-local source is allowed",
        );
        rs.add(
            T_PORT_SECURITY,
            200,
            from.eth_type(key::ETH_TYPE_IPV6)
                .ip_src_prefix(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128)
                .build(),
            go(),
            "IPv6 unspecified source (duplicate address detection) is allowed",
        );
        for (et, what) in [(key::ETH_TYPE_IPV4, "IPv4"), (key::ETH_TYPE_IPV6, "IPv6")] {
            rs.add(
                T_PORT_SECURITY,
                150,
                from.eth_type(et).build(),
                vec![Action::Drop(DropReason::SpoofedIp)],
                format!("{what} source address not bound to port {name} (bound: {bound})"),
            );
        }
        rs.add(
            T_PORT_SECURITY,
            100,
            from.build(),
            go(),
            format!("source MAC {mac} is bound to port {name}"),
        );
        rs.add(
            T_PORT_SECURITY,
            50,
            inp.build(),
            vec![Action::Drop(DropReason::SpoofedMac)],
            format!("source MAC not bound to port {name} (bound: {mac})"),
        );
    } else {
        rs.add(
            T_PORT_SECURITY,
            10,
            inp.build(),
            go(),
            format!("port {name}: no IP–MAC binding"),
        );
    }
}

/// The IPv6 link-local address a MAC gives by modified EUI-64 (RFC 4291 appendix A), what a
/// guest configures by default (Linux `addr_gen_mode` 0).
pub fn eui64_link_local(mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// ND spoof protection (the ND counterpart of the ARP rules): a neighbour advertisement may only
/// announce one of the port's own IPv6 addresses, with the port's MAC (or none) as its link-layer
/// address, from a source the port may use; a neighbour solicitation may ask for any address, but
/// only from such a source and with the port's MAC, and a duplicate-address-detection probe
/// (source ::) only for an address of the port. The port's own addresses are its listed IPv6
/// addresses and its link-local ones: those listed, and the EUI-64 one its MAC derives. The
/// drops after the allows are layered so that each names the check that failed.
fn neighbour_discovery(rs: &mut Rules, p: &Port, from: MatchBuilder) {
    use key::icmp6::{NEIGHBOR_ADVERT as NA, NEIGHBOR_SOLICIT as NS};
    let (name, mac) = (&p.name, p.mac);
    let go = || vec![Action::GotoTable(T_EGRESS_CT)];
    let mut targets: Vec<IpAddr> = p.ips.iter().filter(|i| i.is_ipv6()).copied().collect();
    let derived = IpAddr::V6(eui64_link_local(mac));
    if !targets.contains(&derived) {
        targets.push(derived);
    }
    // Sources as the IPv6 rules above allow them: the bound addresses and any link-local one.
    let mut sources: Vec<(IpAddr, u8)> = p
        .ips
        .iter()
        .filter(|i| i.is_ipv6())
        .map(|i| (*i, 128))
        .collect();
    sources.push((IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10));
    let own = targets
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let nd = |ty: u8| {
        from.eth_type(key::ETH_TYPE_IPV6)
            .ip_proto(key::IP_PROTO_ICMPV6)
            .tp_src(ty as u16)
    };
    let lladdrs = [mac, Mac::ZERO];
    for t in &targets {
        for (src, len) in &sources {
            for ll in lladdrs {
                rs.add(
                    T_PORT_SECURITY,
                    270,
                    nd(NA)
                        .ip_src_prefix(*src, *len)
                        .ip_dst_prefix(*t, 128)
                        .arp_sha(ll)
                        .build(),
                    go(),
                    format!("neighbour advertisement for {t}, an address of port {name}"),
                );
            }
        }
        for ll in lladdrs {
            rs.add(
                T_PORT_SECURITY,
                265,
                nd(NA).ip_dst_prefix(*t, 128).arp_sha(ll).build(),
                vec![Action::Drop(DropReason::SpoofedIp)],
                format!("neighbour advertisement from a source address not bound to port {name}"),
            );
        }
        rs.add(
            T_PORT_SECURITY,
            264,
            nd(NA).ip_dst_prefix(*t, 128).build(),
            vec![Action::Drop(DropReason::NdSpoofedLladdr)],
            format!(
                "neighbour advertisement with a link-layer address other than port {name}'s {mac}"
            ),
        );
        rs.add(
            T_PORT_SECURITY,
            270,
            nd(NS)
                .ip_src_prefix(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128)
                .ip_dst_prefix(*t, 128)
                .arp_sha(Mac::ZERO)
                .build(),
            go(),
            format!("duplicate address detection for {t}, an address of port {name}"),
        );
        rs.add(
            T_PORT_SECURITY,
            266,
            nd(NS)
                .ip_src_prefix(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128)
                .ip_dst_prefix(*t, 128)
                .build(),
            vec![Action::Drop(DropReason::NdSpoofedLladdr)],
            "duplicate address detection with a link-layer address option (RFC 4861 forbids it)",
        );
    }
    rs.add(
        T_PORT_SECURITY,
        260,
        nd(NA).build(),
        vec![Action::Drop(DropReason::NdSpoofedTarget)],
        format!("neighbour advertisement for an address not bound to port {name} (own: {own})"),
    );
    for (src, len) in &sources {
        for ll in lladdrs {
            rs.add(
                T_PORT_SECURITY,
                270,
                nd(NS).ip_src_prefix(*src, *len).arp_sha(ll).build(),
                go(),
                format!("neighbour solicitation from port {name}"),
            );
        }
        rs.add(
            T_PORT_SECURITY,
            265,
            nd(NS).ip_src_prefix(*src, *len).build(),
            vec![Action::Drop(DropReason::NdSpoofedLladdr)],
            format!(
                "neighbour solicitation with a link-layer address other than port {name}'s {mac}"
            ),
        );
    }
    rs.add(
        T_PORT_SECURITY,
        265,
        nd(NS)
            .ip_src_prefix(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128)
            .build(),
        vec![Action::Drop(DropReason::NdSpoofedTarget)],
        format!("duplicate address detection for an address not bound to port {name} (own: {own})"),
    );
    rs.add(
        T_PORT_SECURITY,
        260,
        nd(NS).build(),
        vec![Action::Drop(DropReason::SpoofedIp)],
        format!("neighbour solicitation from a source address not bound to port {name}"),
    );
}
