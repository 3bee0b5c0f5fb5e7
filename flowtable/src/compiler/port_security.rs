//! Table 1 (port_security): what a guest may claim to be. DHCP isolation drops DHCP server
//! messages from guests; IP–MAC binding (access groups only) lets a port send only from its own
//! MAC and addresses, plus the few sources a guest needs before it has an address.

use super::tables::{Rules, T_EGRESS_CT, T_PORT_SECURITY};
use crate::classifier::Action;
use crate::key;
use crate::matcher::MatchBuilder;
use crate::verdict::DropReason;
use model::{Port, PortGroup, PortMode};
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
        for (et, what) in [
            (key::ETH_TYPE_IPV4, "IPv4"),
            (key::ETH_TYPE_ARP, "ARP"),
            (key::ETH_TYPE_IPV6, "IPv6"),
        ] {
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
