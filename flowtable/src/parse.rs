//! Frame parsing: an Ethernet frame (`&[u8]`) to a [`FlowKey`], and where its headers are
//! ([`Layout`]).
//!
//! Parsing never fails: a truncated or malformed frame yields a key with [`flags::INVALID`] set and
//! every field that could be read filled in, so the pipeline can drop it with a reason and count it.
//! Headers are read through [`crate::wire`]. What the parser accepts is etherparse's reading
//! (`SlicedPacket::from_ethernet`, [`parse_reference`]): property tests keep the two equal.

use crate::key::{self, flags, FlowKey, VLAN_PRESENT};
use crate::wire::ethernet::{self, ethertype, EthernetFrame};
use crate::wire::ip::{protocol, ExtHeader, AUTH_MIN_LEN};
use crate::wire::ipv6::FragmentHeader;
use crate::wire::macsec::SecTag;
use crate::wire::{icmp, vlan, WireError};
use crate::wire::{
    ArpPacket, ArpRepr, IcmpPacket, Ipv4Packet, Ipv6Packet, Layout, TcpPacket, UdpPacket,
};
use crate::wire::{Result as WireResult, VlanTag};
use etherparse::{
    ArpHardwareId, EtherType, LinkExtSlice, LinkSlice, NetSlice, SlicedPacket, TransportSlice,
};
use model::Mac;

/// Parses `frame`, received on `in_port`, into a flow key.
#[inline]
pub fn parse(in_port: u32, frame: &[u8]) -> FlowKey {
    parse_with_layout(in_port, frame).0
}

/// Parses `frame`, received on `in_port`, into a flow key and the offsets of its headers.
///
/// The common case (Ethernet, up to two tags, unfragmented IPv4 with TCP, UDP or ICMP, all
/// lengths consistent) takes a short path; anything else the general one. A property test keeps
/// both equal to the reference on every frame.
#[inline]
pub fn parse_with_layout(in_port: u32, frame: &[u8]) -> (FlowKey, Layout) {
    let mut k = FlowKey::ZERO;
    let layout = parse_into(in_port, frame, &mut k);
    (k, layout)
}

/// [`parse_with_layout`] for the per-packet path: the key is written where the caller keeps it
/// (overwritten), only the small layout is returned. Returning both as one value made the
/// compiler copy the key twice per packet.
#[inline(always)]
pub fn parse_into(in_port: u32, frame: &[u8], key: &mut FlowKey) -> Layout {
    if let Some(layout) = parse_fast(in_port, frame, key) {
        return layout;
    }
    let (k, layout) = parse_general(in_port, frame);
    *key = k;
    layout
}

/// A tag's TCI as the key holds it: the present bit sits where DEI is, so a frame's own DEI bit
/// is not kept.
#[inline(always)]
fn key_tci(tci: u16) -> u16 {
    (tci & !VLAN_PRESENT) | VLAN_PRESENT
}

/// The fast path: writes the whole key to `out` and returns the layout; `None` (and `out`
/// untouched) whenever the frame is anything but plain and well-formed.
#[inline(always)]
fn parse_fast(in_port: u32, f: &[u8], out: &mut FlowKey) -> Option<Layout> {
    // Ethernet and an option-less IPv4 header: anything shorter is not plain.
    if f.len() < ethernet::HEADER_LEN + crate::wire::ipv4::HEADER_LEN {
        return None;
    }
    let eth = EthernetFrame::new_checked(f).ok()?;
    let mut k = FlowKey::ZERO;
    k.set_in_port(in_port);
    k.set_eth_dst_u64(eth.dst_u64());
    k.set_eth_src_u64(eth.src_u64());
    let mut at = ethernet::HEADER_LEN;
    let mut et = eth.ethertype();
    let mut fl = 0u8;
    let mut tags = 0;
    let mut vlan = 0; // untagged, in Layout's encoding
    while vlan::is_tpid(et) {
        // Room for this tag, the next ethertype and an IPv4 header.
        if tags == vlan::MAX_TAGS || f.len() < at + vlan::HEADER_LEN + 20 {
            return None;
        }
        let tag = VlanTag::new_checked(&f[at..]).ok()?;
        if tags == 0 {
            k.set_vlan_tci(key_tci(tag.tci()));
            vlan = Layout::vlan_bits(tag.vid());
        } else {
            k.set_inner_tci(key_tci(tag.tci()));
            fl |= flags::QINQ;
        }
        tags += 1;
        at += vlan::HEADER_LEN;
        et = tag.ethertype();
    }
    if et != ethertype::IPV4 {
        return None;
    }
    k.set_eth_type(et);
    let ip = Ipv4Packet::new_checked(&f[at..]).ok()?;
    if ip.is_fragment() {
        return None; // the general path sets the fragment bits
    }
    let proto = ip.protocol();
    k.set_ip_proto(proto);
    k.set_ip_src(u32::from(ip.src()) as u128);
    k.set_ip_dst(u32::from(ip.dst()) as u128);
    let l4 = at + ip.header_len();
    // The checked view guarantees the header and total length fit: this slicing cannot fail.
    let seg = f.get(l4..at + ip.total_len() as usize)?;
    match proto {
        protocol::TCP => {
            let t = TcpPacket::new_checked(seg).ok()?;
            k.set_tp_ports(t.ports());
            k.set_tcp_flags(t.flags());
        }
        protocol::UDP => {
            // Only a UDP length equal to the IP payload is the plain case; with the header
            // there, that is all the checked view would verify.
            if seg.len() < crate::wire::udp::HEADER_LEN {
                return None;
            }
            let u = UdpPacket::new_unchecked(seg);
            if u.len() as usize != seg.len() {
                return None;
            }
            k.set_tp_ports(u.ports());
        }
        protocol::ICMP => {
            let m = IcmpPacket::new_checked(seg).ok()?;
            // Timestamp request/reply have a fixed length the general path checks.
            if matches!(
                m.msg_type(),
                icmp::v4::TIMESTAMP | icmp::v4::TIMESTAMP_REPLY
            ) {
                return None;
            }
            k.set_tp_src(m.msg_type() as u16);
            k.set_tp_dst(m.code() as u16);
        }
        _ => return None,
    }
    k.set_flags(fl);
    *out = k;
    Some(Layout::from_parts(at as u16, Some(l4 as u16), vlan))
}

/// Link extensions (tags, SecTAGs) the reference reads before it stops.
const MAX_LINK_EXTS: usize = 3;

/// Every frame, read as the reference reads it. Its quirks are kept on purpose: the key must not
/// change with the parser (a flow's key is what rules and caches match).
fn parse_general(in_port: u32, f: &[u8]) -> (FlowKey, Layout) {
    let mut k = FlowKey::ZERO;
    k.set_in_port(in_port);
    let vlan = vlan::outer_tag(f).map(|t| t.vid());
    let Ok(eth) = EthernetFrame::new_checked(f) else {
        k.set_flags(flags::INVALID);
        return (k, Layout::new(0, None, vlan));
    };
    // Even a frame whose later headers are refused keeps its MACs, tags and ethertype for MAC
    // learning and tracing.
    k.set_eth_dst(eth.dst());
    k.set_eth_src(eth.src());
    k.set_eth_type(eth.ethertype());
    match walk(k, f) {
        Ok((k, l3, l4)) => (k, Layout::new(l3, l4, vlan)),
        Err(_) => {
            let l3 = read_tags_lax(f, &mut k);
            k.set_flags(k.flags() | flags::INVALID);
            (k, Layout::new(l3, None, vlan))
        }
    }
}

/// The walk after the MAC addresses: link extensions, network, transport header. `Err` when a
/// header is truncated or malformed, which the reference refuses as a whole. Returns the key and
/// the offsets of the network and transport headers.
fn walk(mut k: FlowKey, f: &[u8]) -> WireResult<(FlowKey, u16, Option<u16>)> {
    let mut fl = 0u8;
    let mut et = k.eth_type();
    // The ethertype the key reports: the one after the last VLAN tag (a SecTAG does not count).
    let mut key_et = et;
    let mut at = ethernet::HEADER_LEN;
    // A SecTAG's short length ends the payload before the buffer does.
    let mut end = f.len();
    let mut exts = 0;
    let payload = |at: usize, end: usize| f.get(at..end).ok_or(WireError::Truncated);
    let mut net = true;
    loop {
        match et {
            ethertype::VLAN | ethertype::QINQ | ethertype::VLAN_LEGACY_QINQ => {
                if exts == MAX_LINK_EXTS {
                    net = false;
                    break;
                }
                let tag = VlanTag::new_checked(payload(at, end)?)?;
                let tci = key_tci(tag.tci());
                match exts {
                    0 => k.set_vlan_tci(tci),
                    1 => {
                        k.set_inner_tci(tci);
                        fl |= flags::QINQ;
                    }
                    _ => fl |= flags::LINK_EXT_UNSUPPORTED,
                }
                et = tag.ethertype();
                key_et = et;
                at += vlan::HEADER_LEN;
                exts += 1;
            }
            ethertype::MACSEC => {
                if exts == MAX_LINK_EXTS {
                    net = false;
                    break;
                }
                let tag = SecTag::new_checked(payload(at, end)?)?;
                fl |= flags::LINK_EXT_UNSUPPORTED;
                exts += 1;
                let hl = tag.header_len();
                if let Some(n) = tag.payload_len() {
                    end = at + hl + n;
                }
                at += hl;
                match tag.next_ethertype() {
                    Some(t) => et = t,
                    None => {
                        net = false;
                        break;
                    }
                }
            }
            _ => break,
        }
    }
    k.set_eth_type(key_et);
    let l3 = at;
    let net_payload = payload(at, end)?;
    // (protocol announcing the transport header, its bytes, their offset); `None`: no transport
    // header to read (fragments, ARP, other network protocols).
    let transport: Option<(u8, &[u8], usize)> = match et {
        _ if !net => None,
        ethertype::ARP => {
            let a = ArpPacket::new_checked(net_payload)?;
            match ArpRepr::parse(&a) {
                Some(r) => {
                    k.set_arp_op(r.operation);
                    k.set_arp_sha(r.sender_mac);
                    k.set_ip_src(u32::from(r.sender_ip) as u128);
                    k.set_ip_dst(u32::from(r.target_ip) as u128);
                }
                None => fl |= flags::INVALID, // only Ethernet / IPv4 ARP makes sense here
            }
            None
        }
        ethertype::IPV4 => {
            let ip = Ipv4Packet::new_checked(net_payload)?;
            let mut seg = ip.payload();
            let mut l4 = at + ip.header_len();
            let mut number = ip.protocol();
            // The authentication header is read even in fragments.
            if number == protocol::AUTH {
                let (next, n) = auth_header(seg)?;
                number = next;
                seg = &seg[n..];
                l4 += n;
            }
            k.set_ip_src(u32::from(ip.src()) as u128);
            k.set_ip_dst(u32::from(ip.dst()) as u128);
            k.set_ip_proto(ip.protocol());
            if ip.is_fragment() {
                fl |= flags::FRAG;
                if ip.frag_offset() != 0 {
                    fl |= flags::FRAG_LATER;
                }
                None
            } else {
                Some((number, seg, l4))
            }
        }
        ethertype::IPV6 => {
            let ip = Ipv6Packet::new_checked(net_payload)?;
            let (number, skipped, fragmented) = ipv6_exts(ip.next_header(), ip.payload())?;
            k.set_ip_src(u128::from(ip.src()));
            k.set_ip_dst(u128::from(ip.dst()));
            k.set_ip_proto(number);
            if fragmented {
                // The reference reads no transport header in any fragment, the first included.
                fl |= flags::FRAG | flags::FRAG_LATER;
                None
            } else {
                let seg = &ip.payload()[skipped..];
                Some((number, seg, at + crate::wire::ipv6::HEADER_LEN + skipped))
            }
        }
        _ => {
            net = false;
            None
        }
    };
    if !net && matches!(key_et, ethertype::IPV4 | ethertype::IPV6 | ethertype::ARP) {
        fl |= flags::INVALID; // the ethertype announced a network header the walk never reached
    }
    let mut l4 = None;
    if let Some((number, seg, off)) = transport {
        if read_transport(&mut k, number, seg)? {
            l4 = Some(off as u16);
        }
    }
    if l4.is_none()
        && (key_et == ethertype::IPV4 || key_et == ethertype::IPV6)
        && fl & flags::FRAG_LATER == 0
        && matches!(
            k.ip_proto(),
            protocol::TCP | protocol::UDP | protocol::ICMP | protocol::ICMPV6
        )
    {
        fl |= flags::INVALID; // a transport header that should be there is not
    }
    k.set_flags(k.flags() | fl);
    Ok((k, l3 as u16, l4))
}

/// An authentication header at the start of `b`: (next header, its length).
fn auth_header(b: &[u8]) -> WireResult<(u8, usize)> {
    if b.len() < AUTH_MIN_LEN {
        return Err(WireError::Truncated);
    }
    let h = ExtHeader::new_checked(b)?;
    if h.len_field() == 0 {
        return Err(WireError::Malformed);
    }
    let n = h.header_len(protocol::AUTH);
    if b.len() < n {
        return Err(WireError::Truncated);
    }
    Ok((h.next_header(), n))
}

/// Steps over the IPv6 extension headers at the start of `b` (announced by `nh`), as the
/// reference does: hop-by-hop options only first, any number of the others, each whole.
/// Returns (the protocol after them, bytes skipped, whether the packet is a fragment).
fn ipv6_exts(mut nh: u8, b: &[u8]) -> WireResult<(u8, usize, bool)> {
    let mut at = 0;
    let mut fragmented = false;
    let rest = |at: usize| b.get(at..).ok_or(WireError::Truncated);
    // Options and routing headers: the length they declare (8 bytes at least) must be there.
    let whole = |b: &[u8]| -> WireResult<(u8, usize)> {
        let h = ExtHeader::new_checked(b)?;
        let n = h.header_len(protocol::DEST_OPTS);
        if b.len() < n {
            return Err(WireError::Truncated);
        }
        Ok((h.next_header(), n))
    };
    if nh == protocol::HOP_BY_HOP {
        let (next, n) = whole(rest(at)?)?;
        nh = next;
        at += n;
    }
    loop {
        match nh {
            protocol::HOP_BY_HOP => return Err(WireError::Malformed),
            protocol::DEST_OPTS | protocol::ROUTING => {
                let (next, n) = whole(rest(at)?)?;
                nh = next;
                at += n;
            }
            protocol::FRAGMENT => {
                let h = FragmentHeader::new_checked(rest(at)?)?;
                // The reference's test of "fragmenting": the high byte of offset-and-flags, or bits
                // 0x9f of the low one (it leaves out two offset bits, 0x60, and counts the
                // reserved ones, 0x06).
                let raw = h.offset_and_flags();
                fragmented |= raw & 0xff9f != 0;
                nh = h.next_header();
                at += crate::wire::ipv6::FRAGMENT_HEADER_LEN;
            }
            protocol::AUTH => {
                let (next, n) = auth_header(rest(at)?)?;
                nh = next;
                at += n;
            }
            _ => return Ok((nh, at, fragmented)),
        }
    }
}

/// Reads the transport header of protocol `number` from `seg` into the key; `Ok(false)` for a
/// protocol without one the key holds.
fn read_transport(k: &mut FlowKey, number: u8, seg: &[u8]) -> WireResult<bool> {
    match number {
        protocol::TCP => {
            let t = TcpPacket::new_checked(seg)?;
            k.set_tp_src(t.src_port());
            k.set_tp_dst(t.dst_port());
            k.set_tcp_flags(t.flags());
        }
        protocol::UDP => {
            let u = UdpPacket::new_checked(seg)?;
            k.set_tp_src(u.src_port());
            k.set_tp_dst(u.dst_port());
        }
        // Either ICMP after either IP version: the reference goes by the protocol number alone.
        protocol::ICMP | protocol::ICMPV6 => {
            let m = IcmpPacket::new_checked(seg)?;
            let timestamp = matches!(
                m.msg_type(),
                icmp::v4::TIMESTAMP | icmp::v4::TIMESTAMP_REPLY
            );
            if number == protocol::ICMP
                && timestamp
                && m.code() == 0
                && seg.len() != icmp::v4::TIMESTAMP_LEN
            {
                return Err(WireError::Malformed);
            }
            if number == protocol::ICMPV6 && seg.len() > u32::MAX as usize {
                return Err(WireError::Malformed);
            }
            k.set_tp_src(m.msg_type() as u16);
            k.set_tp_dst(m.code() as u16);
            // Neighbour discovery is ICMPv6 only: ICMPv4's number after an IPv6 header with a
            // type of 135 is not a solicitation (found by the parse_classify fuzzer).
            if number == protocol::ICMPV6 {
                read_nd(k, seg);
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// For an IPv6 neighbour solicitation or advertisement (`icmp`: the ICMPv6 message, whose type is
/// in the key already), what port security checks: the target address into `ip_dst`, the
/// source (NS) or target (NA) link-layer address option into `arp_sha`. A message too short for
/// its target, or with an option of length 0 or past the end, is one RFC 4861 makes receivers
/// discard: the key says `INVALID`. Of two link-layer options the first counts, as in Linux.
fn read_nd(k: &mut FlowKey, icmp: &[u8]) {
    use key::icmp6::{NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT};
    let ty = k.tp_src();
    if !k.is_ipv6() || (ty != NEIGHBOR_SOLICIT as u16 && ty != NEIGHBOR_ADVERT as u16) {
        return;
    }
    let Some(target) = icmp.get(8..24) else {
        k.set_flags(k.flags() | flags::INVALID);
        return;
    };
    k.set_ip_dst(u128::from_be_bytes(target.try_into().unwrap()));
    let wanted = if ty == NEIGHBOR_SOLICIT as u16 { 1 } else { 2 };
    let mut at = 24;
    let mut lladdr = None;
    while at + 2 <= icmp.len() {
        let (t, len) = (icmp[at], icmp[at + 1] as usize * 8);
        if len == 0 || at + len > icmp.len() {
            k.set_flags(k.flags() | flags::INVALID);
            return;
        }
        if t == wanted && lladdr.is_none() {
            lladdr = Some(Mac(icmp[at + 2..at + 8].try_into().unwrap()));
        }
        at += len;
    }
    if at != icmp.len() {
        k.set_flags(k.flags() | flags::INVALID); // a byte left over: half an option
        return;
    }
    k.set_arp_sha(lladdr.unwrap_or(Mac::ZERO));
}

/// Reads the 802.1Q / 802.1ad tags (any number: a third and later ones only flag the key) of a
/// frame the walk refused, as far as they are whole. Returns the offset after them.
fn read_tags_lax(f: &[u8], k: &mut FlowKey) -> u16 {
    let mut at = ethernet::HEADER_LEN;
    let mut n = 0;
    while vlan::is_tpid(k.eth_type()) {
        let Some(tag) = f.get(at..).and_then(|b| VlanTag::new_checked(b).ok()) else {
            break;
        };
        match n {
            0 => k.set_vlan_tci(key_tci(tag.tci())),
            1 => {
                k.set_inner_tci(key_tci(tag.tci()));
                k.set_flags(k.flags() | flags::QINQ);
            }
            _ => k.set_flags(k.flags() | flags::LINK_EXT_UNSUPPORTED),
        }
        n += 1;
        at += vlan::HEADER_LEN;
        k.set_eth_type(tag.ethertype());
    }
    at as u16
}

/// Parses `frame` with etherparse: the reference [`parse`] is tested (and fuzzed) against, the
/// switch's parser before it had its own. Its reading is the definition of the flow key.
pub fn parse_reference(in_port: u32, frame: &[u8]) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.set_in_port(in_port);
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        k.set_flags(flags::INVALID);
        return k;
    };
    // The Ethernet header is fixed: read it directly so that even a frame etherparse rejects
    // (say, a truncated IPv4 header) keeps its MACs, tags and ethertype for MAC learning and tracing.
    k.set_eth_dst(eth.dst());
    k.set_eth_src(eth.src());
    k.set_eth_type(eth.ethertype());

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
            // etherparse has no accessor for the reserved bits the key keeps: its own slice.
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
            read_nd(&mut k, i.slice());
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

    /// A small deterministic generator, so that a failing case is a seed (and the frame it
    /// printed) rather than a shrunk tree of strategies.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
        fn byte(&mut self) -> u8 {
            self.next() as u8
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.byte()).collect()
        }
        fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
            xs[self.below(xs.len() as u64) as usize]
        }
        /// Mostly `right`, sometimes anything.
        fn mostly(&mut self, right: u16) -> u16 {
            if self.chance(85) {
                right
            } else {
                self.pick(&[0, 1, right.wrapping_sub(1), right.wrapping_add(1)])
                    | if self.chance(30) {
                        self.next() as u16
                    } else {
                        0
                    }
            }
        }
    }

    const PROTOS: [u8; 7] = [
        protocol::TCP,
        protocol::UDP,
        protocol::ICMP,
        protocol::ICMPV6,
        protocol::AUTH,
        47,
        protocol::FRAGMENT,
    ];

    fn transport(r: &mut Rng, proto: u8) -> Vec<u8> {
        let body = r.below(24) as usize;
        match proto {
            protocol::TCP => {
                let doff = if r.chance(85) {
                    5 + r.below(3)
                } else {
                    r.below(16)
                } as usize;
                let mut t = r.bytes((doff * 4).max(20) + body);
                t[12] = (doff as u8) << 4 | (r.byte() & 0x0f);
                t
            }
            protocol::UDP => {
                let mut u = r.bytes(8 + body);
                let len = r.mostly(u.len() as u16);
                u[4..6].copy_from_slice(&len.to_be_bytes());
                u
            }
            protocol::ICMP | protocol::ICMPV6 => {
                let any = r.byte();
                let ty = r.pick(&[0, 3, 8, 11, 13, 14, 128, 129, 1, 2, any]);
                let body = if matches!(ty, 13 | 14) && r.chance(50) {
                    12
                } else {
                    body
                };
                let mut m = r.bytes(8 + body);
                m[0] = ty;
                m[1] = if r.chance(70) { 0 } else { r.byte() };
                m
            }
            _ => r.bytes(body),
        }
    }

    /// An authentication header (announcing `next`) in front of `payload`.
    fn auth(r: &mut Rng, next: u8, payload: Vec<u8>) -> Vec<u8> {
        let n = if r.chance(80) {
            1 + r.below(3)
        } else {
            r.below(6)
        } as u8;
        let mut h = r.bytes(((n as usize + 2) * 4).max(2));
        h[0] = next;
        h[1] = n;
        h.extend(payload);
        h
    }

    fn ipv4(r: &mut Rng) -> Vec<u8> {
        let last = r.pick(&PROTOS);
        let proto = if r.chance(10) { protocol::AUTH } else { last };
        let mut payload = transport(r, last);
        if proto == protocol::AUTH {
            payload = auth(r, last, payload);
        }
        let ihl = if r.chance(85) { 5 } else { r.below(16) } as usize;
        let mut h = r.bytes((ihl * 4).max(20));
        h[0] = if r.chance(95) { 0x40 } else { r.byte() & 0xf0 } | ihl as u8;
        let total = r.mostly((h.len() + payload.len()) as u16);
        h[2..4].copy_from_slice(&total.to_be_bytes());
        let frag: u16 = if r.chance(75) {
            r.pick(&[0, 0x4000])
        } else {
            let any = r.next() as u16;
            r.pick(&[0x2000, 0x0001, 0x2010, 0x8000, any])
        };
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h[9] = proto;
        h.extend(payload);
        h
    }

    fn ipv6(r: &mut Rng) -> Vec<u8> {
        let last = r.pick(&PROTOS);
        let n_ext = if r.chance(50) { 0 } else { 1 + r.below(4) };
        let kinds: Vec<u8> = (0..n_ext)
            .map(|_| {
                r.pick(&[
                    protocol::HOP_BY_HOP,
                    protocol::DEST_OPTS,
                    protocol::ROUTING,
                    protocol::FRAGMENT,
                    protocol::AUTH,
                ])
            })
            .collect();
        let mut payload = transport(r, last);
        let mut next = last;
        for &kind in kinds.iter().rev() {
            payload = match kind {
                protocol::AUTH => auth(r, next, payload),
                protocol::FRAGMENT => {
                    let mut h = r.bytes(8);
                    h[0] = next;
                    let of: u16 = if r.chance(50) {
                        r.pick(&[0, 1, 0x0008, 0x0020, 0x0040, 0x0002, 0x0100])
                    } else {
                        r.next() as u16
                    };
                    h[2..4].copy_from_slice(&of.to_be_bytes());
                    h.extend(payload);
                    h
                }
                _ => {
                    let n = r.below(3) as u8;
                    let mut h = r.bytes((n as usize + 1) * 8);
                    h[0] = next;
                    h[1] = n;
                    h.extend(payload);
                    h
                }
            };
            next = kind;
        }
        let mut h = r.bytes(40);
        h[0] = if r.chance(95) { 0x60 } else { r.byte() };
        let len = r.mostly(payload.len() as u16);
        h[4..6].copy_from_slice(&len.to_be_bytes());
        h[6] = next;
        h.extend(payload);
        h
    }

    fn arp(r: &mut Rng) -> Vec<u8> {
        let (hl, pl) = if r.chance(80) {
            (6, 4)
        } else {
            (r.below(9) as usize, r.below(9) as usize)
        };
        let mut a = r.bytes(8 + 2 * (hl + pl));
        a[0..2].copy_from_slice(&r.mostly(1).to_be_bytes());
        a[2..4].copy_from_slice(&r.mostly(0x0800).to_be_bytes());
        a[4] = hl as u8;
        a[5] = pl as u8;
        a
    }

    /// Any frame the switch could meet: up to four link extensions (tags of every TPID the
    /// reference knows, SecTAGs), then ARP, IPv4, IPv6 or something else, each header mostly
    /// consistent and sometimes not.
    fn random_frame(r: &mut Rng) -> Vec<u8> {
        let (et, net) = match r.below(10) {
            0 => (ethertype::ARP, arp(r)),
            1..=4 => (ethertype::IPV4, ipv4(r)),
            5..=8 => (ethertype::IPV6, ipv6(r)),
            _ => {
                let any = r.next() as u16;
                (r.pick(&[0x0842, 0x88cc, any]), r.bytes(30))
            }
        };
        let n_ext = r.pick(&[0, 0, 0, 1, 1, 2, 3, 4]);
        let mut body = et.to_be_bytes().to_vec();
        body.extend(net);
        for _ in 0..n_ext {
            // Each extension carries the ethertype of what follows it, and its own goes before.
            let (own, ext) = if r.chance(85) {
                let tpid = r.pick(&[
                    ethertype::VLAN,
                    ethertype::QINQ,
                    ethertype::VLAN_LEGACY_QINQ,
                ]);
                (tpid, r.bytes(2))
            } else {
                let any = r.byte();
                let tci = r.pick(&[0x00, 0x20, 0x0c, 0x08, 0x04, 0x80, any]);
                let sl = if r.chance(70) { 0 } else { r.below(64) as u8 };
                let mut h = vec![tci, sl];
                h.extend(r.bytes(4));
                if tci & 0x20 != 0 {
                    h.extend(r.bytes(8));
                }
                if tci & 0x0c != 0 {
                    body.drain(..2); // modified user data: no ethertype in the clear
                }
                (ethertype::MACSEC, h)
            };
            let mut b = own.to_be_bytes().to_vec();
            b.extend(ext);
            b.extend(body);
            body = b;
        }
        let mut f = r.bytes(12);
        f.extend(body);
        if r.chance(25) {
            for _ in 0..1 + r.below(3) {
                let at = r.below(f.len() as u64) as usize;
                f[at] = r.byte();
            }
        }
        if r.chance(25) {
            f.truncate(r.below(f.len() as u64 + 1) as usize);
        }
        if r.chance(25) {
            let n = r.below(20) as usize;
            f.extend(r.bytes(n));
        }
        f
    }

    /// Offsets of the network and transport headers as etherparse found them.
    fn reference_layout(f: &[u8]) -> Option<(Option<usize>, Option<usize>)> {
        let p = SlicedPacket::from_ethernet(f).ok()?;
        let off = |s: &[u8]| s.as_ptr() as usize - f.as_ptr() as usize;
        let l3 = p.net.as_ref().map(|n| match n {
            NetSlice::Ipv4(ip) => off(ip.header().slice()),
            NetSlice::Ipv6(ip) => off(ip.header().slice()),
            NetSlice::Arp(a) => off(a.slice()),
        });
        let l4 = p.transport.as_ref().map(|t| match t {
            TransportSlice::Tcp(t) => off(t.slice()),
            TransportSlice::Udp(u) => off(u.slice()),
            TransportSlice::Icmpv4(i) => off(i.slice()),
            TransportSlice::Icmpv6(i) => off(i.slice()),
        });
        Some((l3, l4))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        /// On any frame, the parser's key is the reference's, and its layout says where etherparse
        /// found the headers.
        #[test]
        fn parser_equals_reference_on_any_frame(seed in 1u64..) {
            let f = random_frame(&mut Rng(seed));
            let want = parse_reference(3, &f);
            let (k, lay) = parse_general(3, &f);
            prop_assert_eq!(k, want, "general path, frame {:02x?}", f);
            prop_assert_eq!(parse_with_layout(3, &f), (k, lay), "fast path, frame {:02x?}", f);
            prop_assert_eq!(lay.vlan(), vlan::outer_tag(&f).map(|t| t.vid()));
            match reference_layout(&f) {
                Some((l3, l4)) => {
                    if let Some(l3) = l3 {
                        prop_assert_eq!(lay.l3() as usize, l3, "l3, frame {:02x?}", f);
                    }
                    prop_assert_eq!(lay.l4().map(usize::from), l4, "l4, frame {:02x?}", f);
                }
                None => prop_assert_eq!(lay.l4(), None),
            }
        }
    }

    /// ICMPv4's protocol number after an IPv6 header, with a type of 135 (the parse_classify
    /// fuzzer's find): not neighbour discovery, so no ND fields and no `INVALID`, as in the
    /// reference.
    #[test]
    fn icmpv4_after_ipv6_is_not_neighbour_discovery() {
        let mut f = vec![
            2, 0, 0, 0xc4, 0, 1, 2, 0, 0, 0, 0, 9, 0x81, 0, 0, 0x64, 0x86, 0xdd,
        ];
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 1, 0]); // payload 8, next header 1 (ICMP)
        f.extend_from_slice(&[0xda; 16]);
        f.extend_from_slice(&[0x87; 16]);
        f.extend_from_slice(&[0x87, 0x87, 0, 0, 0, 0, 0, 0]); // type 135, code 135
        let k = parse(2, &f);
        assert_eq!(k, parse_reference(2, &f));
        assert_eq!(k.flags() & flags::INVALID, 0, "{k:?}");
        assert_eq!(k.tp_src(), 135);
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
                let mut k = FlowKey::ZERO;
                assert!(parse_fast(1, &f, &mut k).is_some(), "{l4:?} {vlan:?}");
            }
        }
    }
}
