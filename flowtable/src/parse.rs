//! Frame parsing: an Ethernet frame (`&[u8]`) to a [`FlowKey`].
//!
//! Parsing never fails: a truncated or malformed frame yields a key with [`flags::INVALID`] set and
//! every field that could be read filled in, so the pipeline can drop it with a reason and count it.
//! The header walking is etherparse's (`SlicedPacket::from_ethernet`); this module only copies fields.

use crate::key::{self, flags, FlowKey, VLAN_PRESENT};
use etherparse::{
    ArpHardwareId, EtherType, LinkExtSlice, LinkSlice, NetSlice, SlicedPacket, TransportSlice,
};
use model::Mac;

/// Parses `frame`, received on `in_port`, into a flow key.
///
/// The common case (Ethernet, up to two tags, unfragmented IPv4 with TCP, UDP or ICMP, all
/// lengths consistent) is read directly; anything else goes through etherparse
/// ([`parse_reference`]). A differential property test keeps the two equal on every frame.
#[inline]
pub fn parse(in_port: u32, frame: &[u8]) -> FlowKey {
    match parse_fast(in_port, frame) {
        Some(k) => k,
        None => parse_reference(in_port, frame),
    }
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The fast path: `None` whenever the frame is anything but plain and well-formed.
#[inline(always)]
fn parse_fast(in_port: u32, f: &[u8]) -> Option<FlowKey> {
    if f.len() < 34 {
        return None;
    }
    let mut k = FlowKey::ZERO;
    k.set_in_port(in_port);
    k.0[1] = u64::from_be_bytes([f[0], f[1], f[2], f[3], f[4], f[5], 0, 0]);
    k.0[2] = u64::from_be_bytes([f[6], f[7], f[8], f[9], f[10], f[11], 0, 0]);
    let mut off = 12;
    let mut et = be16(f, off);
    let mut fl = 0u8;
    let mut tags = 0;
    while et == key::ETH_TYPE_VLAN || et == key::ETH_TYPE_QINQ {
        if tags == 2 || f.len() < off + 4 + 2 + 20 {
            return None;
        }
        let tci = (be16(f, off + 2) & !VLAN_PRESENT) | VLAN_PRESENT;
        if tags == 0 {
            k.set_vlan_tci(tci);
        } else {
            k.set_inner_tci(tci);
            fl |= flags::QINQ;
        }
        tags += 1;
        off += 4;
        et = be16(f, off);
    }
    if et != key::ETH_TYPE_IPV4 {
        return None;
    }
    k.set_eth_type(et);
    let ip = off + 2;
    let vihl = f[ip];
    let ihl = (vihl & 0x0f) as usize * 4;
    let total = be16(f, ip + 2) as usize;
    if vihl >> 4 != 4 || ihl < 20 || total < ihl || ip + total > f.len() || ip + ihl > f.len() {
        return None;
    }
    if be16(f, ip + 6) & 0x3fff != 0 {
        return None; // fragments: the reference path sets the fragment bits
    }
    let proto = f[ip + 9];
    k.set_ip_proto(proto);
    k.0[4] = u32::from_be_bytes([f[ip + 12], f[ip + 13], f[ip + 14], f[ip + 15]]) as u64;
    k.0[6] = u32::from_be_bytes([f[ip + 16], f[ip + 17], f[ip + 18], f[ip + 19]]) as u64;
    let l4 = ip + ihl;
    let l4_len = total - ihl;
    match proto {
        key::IP_PROTO_TCP => {
            if l4_len < 20 {
                return None;
            }
            let doff = (f[l4 + 12] >> 4) as usize * 4;
            if doff < 20 || doff > l4_len {
                return None;
            }
            k.set_tp_src(be16(f, l4));
            k.set_tp_dst(be16(f, l4 + 2));
            k.set_tcp_flags(be16(f, l4 + 12) & 0x0fff);
        }
        key::IP_PROTO_UDP => {
            // Only a UDP length equal to the IP payload is the plain case.
            if l4_len < 8 || be16(f, l4 + 4) as usize != l4_len {
                return None;
            }
            k.set_tp_src(be16(f, l4));
            k.set_tp_dst(be16(f, l4 + 2));
        }
        key::IP_PROTO_ICMP => {
            // Timestamp request/reply (13/14) have a fixed 20-byte length the reference checks.
            if l4_len < 8 || matches!(f[l4], 13 | 14) {
                return None;
            }
            k.set_tp_src(f[l4] as u16);
            k.set_tp_dst(f[l4 + 1] as u16);
        }
        _ => return None,
    }
    k.set_flags(fl);
    Some(k)
}

/// Parses `frame` with etherparse: the reference the fast path is tested against, and the path
/// for everything the fast path declines (IPv6, ARP, fragments, malformed frames).
pub fn parse_reference(in_port: u32, frame: &[u8]) -> FlowKey {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{self, L4};
    use model::Mac;
    use proptest::prelude::*;

    fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
        let l4 = prop_oneof![
            (any::<u16>(), any::<u16>()).prop_map(|(src, dst)| L4::Udp { src, dst }),
            (any::<u16>(), any::<u16>(), any::<u8>()).prop_map(|(src, dst, flags)| L4::Tcp {
                src,
                dst,
                flags
            }),
            (any::<u16>(), any::<bool>()).prop_map(|(id, reply)| L4::Echo { id, reply }),
        ];
        let vlan = prop_oneof![Just(None), (1u16..4095).prop_map(Some)];
        (
            l4,
            vlan,
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            0usize..80,
            any::<bool>(),
            any::<u8>(),
        )
            .prop_map(|(l4, vlan, s, d, pl, v6, m)| {
                let (a, b) = (Mac([2, 0, 0, 0, 0, m]), Mac([m, 1, 2, 3, 4, 5]));
                if v6 {
                    let mut s6 = [0u8; 16];
                    s6[12..].copy_from_slice(&s);
                    frames::ipv6(a, b, vlan, s6.into(), [0xfe; 16].into(), l4, pl)
                } else {
                    frames::ipv4(a, b, vlan, s.into(), d.into(), l4, pl)
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The fast path and etherparse agree on valid frames, frames with header bytes
        /// overwritten, truncated frames, and frames with trailing padding.
        #[test]
        fn fast_path_equals_reference(
            f in frame_strategy(),
            edits in proptest::collection::vec((0usize..64, any::<u8>()), 0..4),
            cut in proptest::option::of(0usize..100),
            pad in 0usize..20,
        ) {
            let mut f = f;
            for (at, v) in edits {
                if at < f.len() {
                    f[at] = v;
                }
            }
            if let Some(c) = cut {
                f.truncate(c);
            }
            f.extend(std::iter::repeat_n(0, pad));
            prop_assert_eq!(parse(7, &f), parse_reference(7, &f), "frame {:02x?}", f);
        }
    }

    #[test]
    fn fast_path_takes_the_common_frames() {
        let (a, b) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
        for vlan in [None, Some(100)] {
            for l4 in [
                L4::Udp { src: 1, dst: 2 },
                L4::Tcp {
                    src: 1,
                    dst: 2,
                    flags: 2,
                },
                L4::Echo {
                    id: 1,
                    reply: false,
                },
            ] {
                let f = frames::ipv4(
                    a,
                    b,
                    vlan,
                    [10, 0, 0, 1].into(),
                    [10, 0, 0, 2].into(),
                    l4,
                    18,
                );
                assert!(parse_fast(1, &f).is_some(), "{l4:?} {vlan:?}");
            }
        }
    }
}
