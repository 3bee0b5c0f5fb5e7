//! Frame parsing: an Ethernet frame (`&[u8]`) to a [`FlowKey`].
//!
//! Parsing never fails: a truncated or malformed frame yields a key with [`flags::INVALID`] set and
//! every field that could be read filled in, so the pipeline can drop it with a reason and count it.
//! The header walking is etherparse's (`SlicedPacket::from_ethernet`); this module only copies fields.

use crate::key::{self, flags, FlowKey, Mac, VLAN_PRESENT};
use etherparse::{
    ArpHardwareId, EtherType, LinkExtSlice, LinkSlice, NetSlice, SlicedPacket, TransportSlice,
};

/// Parses `frame`, received on `in_port`, into a flow key.
pub fn parse(in_port: u32, frame: &[u8]) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.set_in_port(in_port);
    if frame.len() < 14 {
        k.set_flags(flags::INVALID);
        return k;
    }
    // The Ethernet header is fixed: read it directly so that even a frame etherparse rejects
    // (say, a truncated IPv4 header) keeps its MACs, tags and ethertype for MAC learning and tracing.
    k.set_eth_dst(Mac(frame[0..6].try_into().unwrap()));
    k.set_eth_src(Mac(frame[6..12].try_into().unwrap()));
    k.set_eth_type(u16::from_be_bytes([frame[12], frame[13]]));

    let mut fl = 0u8;
    let pkt = match SlicedPacket::from_ethernet(frame) {
        Ok(p) => p,
        Err(_) => {
            read_tags_lax(frame, &mut k);
            k.set_flags(k.flags() | flags::INVALID);
            return k;
        }
    };
    let mut ether_type = match &pkt.link {
        Some(LinkSlice::Ethernet2(e)) => e.ether_type().0,
        _ => k.eth_type(),
    };
    for (i, ext) in pkt.link_exts.iter().enumerate() {
        match ext {
            LinkExtSlice::Vlan(v) => {
                let tci = u16::from_be_bytes([v.slice()[0], v.slice()[1]]);
                // The present bit sits where DEI is; a frame's own DEI bit is not kept.
                let tci = (tci & !VLAN_PRESENT) | VLAN_PRESENT;
                match i {
                    0 => k.set_vlan_tci(tci),
                    1 => {
                        k.set_inner_tci(tci);
                        fl |= flags::QINQ;
                    }
                    _ => fl |= flags::LINK_EXT_UNSUPPORTED,
                }
                ether_type = v.ether_type().0;
            }
            LinkExtSlice::Macsec(_) => fl |= flags::LINK_EXT_UNSUPPORTED,
        }
    }
    k.set_eth_type(ether_type);

    match &pkt.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            k.set_ip_src(u32::from_be_bytes(h.source()) as u128);
            k.set_ip_dst(u32::from_be_bytes(h.destination()) as u128);
            k.set_ip_proto(h.protocol().0);
            if h.is_fragmenting_payload() {
                fl |= flags::FRAG;
                if h.fragments_offset().value() != 0 {
                    fl |= flags::FRAG_LATER;
                }
            }
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            k.set_ip_src(u128::from_be_bytes(h.source()));
            k.set_ip_dst(u128::from_be_bytes(h.destination()));
            k.set_ip_proto(ip.payload().ip_number.0);
            if ip.is_payload_fragmented() {
                fl |= flags::FRAG;
                if ip.payload().fragmented && pkt.transport.is_none() {
                    fl |= flags::FRAG_LATER;
                }
            }
        }
        Some(NetSlice::Arp(arp)) => {
            if arp.hw_addr_type() == ArpHardwareId::ETHERNET
                && arp.proto_addr_type() == EtherType::IPV4
                && arp.hw_addr_size() == 6
                && arp.proto_addr_size() == 4
            {
                k.set_arp_op(arp.operation().0);
                k.set_arp_sha(Mac(arp.sender_hw_addr().try_into().unwrap()));
                k.set_ip_src(
                    u32::from_be_bytes(arp.sender_protocol_addr().try_into().unwrap()) as u128,
                );
                k.set_ip_dst(
                    u32::from_be_bytes(arp.target_protocol_addr().try_into().unwrap()) as u128,
                );
            } else {
                fl |= flags::INVALID;
            }
        }
        None => {
            // IPv4/IPv6/ARP ethertype but no network header: etherparse stopped early.
            if matches!(
                ether_type,
                key::ETH_TYPE_IPV4 | key::ETH_TYPE_IPV6 | key::ETH_TYPE_ARP
            ) {
                fl |= flags::INVALID;
            }
        }
    }

    match &pkt.transport {
        Some(TransportSlice::Tcp(t)) => {
            k.set_tp_src(t.source_port());
            k.set_tp_dst(t.destination_port());
            let s = t.slice();
            k.set_tcp_flags(u16::from_be_bytes([s[12], s[13]]) & 0x0fff);
        }
        Some(TransportSlice::Udp(u)) => {
            k.set_tp_src(u.source_port());
            k.set_tp_dst(u.destination_port());
        }
        Some(TransportSlice::Icmpv4(i)) => {
            k.set_tp_src(i.type_u8() as u16);
            k.set_tp_dst(i.code_u8() as u16);
        }
        Some(TransportSlice::Icmpv6(i)) => {
            k.set_tp_src(i.type_u8() as u16);
            k.set_tp_dst(i.code_u8() as u16);
        }
        None => {
            let p = k.ip_proto();
            if (k.is_ipv4() || k.is_ipv6())
                && fl & flags::FRAG_LATER == 0
                && matches!(
                    p,
                    key::IP_PROTO_TCP
                        | key::IP_PROTO_UDP
                        | key::IP_PROTO_ICMP
                        | key::IP_PROTO_ICMPV6
                )
            {
                fl |= flags::INVALID; // a transport header that should be there is not
            }
        }
    }
    k.set_flags(k.flags() | fl);
    k
}

/// Reads up to two VLAN tags by hand, for frames etherparse refused as a whole.
fn read_tags_lax(frame: &[u8], k: &mut FlowKey) {
    let mut off = 12;
    let mut n = 0;
    while off + 4 <= frame.len() {
        let et = u16::from_be_bytes([frame[off], frame[off + 1]]);
        if et != key::ETH_TYPE_VLAN && et != key::ETH_TYPE_QINQ {
            break;
        }
        if off + 6 > frame.len() {
            break;
        }
        let tci =
            (u16::from_be_bytes([frame[off + 2], frame[off + 3]]) & !VLAN_PRESENT) | VLAN_PRESENT;
        match n {
            0 => k.set_vlan_tci(tci),
            1 => {
                k.set_inner_tci(tci);
                k.set_flags(k.flags() | flags::QINQ);
            }
            _ => k.set_flags(k.flags() | flags::LINK_EXT_UNSUPPORTED),
        }
        n += 1;
        off += 4;
        k.set_eth_type(u16::from_be_bytes([frame[off], frame[off + 1]]));
    }
}
