//! Building test and benchmark frames, with the [`crate::wire`] emitters.

use crate::wire::ethernet::{self, ethertype, EthernetFrame, EthernetRepr};
use crate::wire::ip::{checksum, protocol};
use crate::wire::vlan::{self, OuterTag, VlanTag};
use crate::wire::{arp, icmp, ipv4, ipv6, tcp, udp};
use crate::wire::{ArpRepr, IcmpEchoRepr, IcmpPacket, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr};
use crate::wire::{TcpPacket, TcpRepr, UdpPacket, UdpRepr};
use model::Mac;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Layer 4 of a built frame.
#[derive(Debug, Clone, Copy)]
pub enum L4 {
    Udp {
        src: u16,
        dst: u16,
    },
    /// TCP with flags (`FIN`=1, `SYN`=2, `RST`=4, `PSH`=8, `ACK`=16).
    Tcp {
        src: u16,
        dst: u16,
        flags: u8,
    },
    /// ICMP echo request (`reply` false) or reply.
    Echo {
        id: u16,
        reply: bool,
    },
}

pub const SYN: u8 = tcp::flags::SYN;
pub const ACK: u8 = tcp::flags::ACK;
pub const FIN: u8 = tcp::flags::FIN;
pub const RST: u8 = tcp::flags::RST;

/// Sequence number, window and echo sequence number of every built frame.
const TCP_SEQ: u32 = 1000;
const TCP_WINDOW: u16 = 65535;
const ECHO_SEQ: u16 = 1;
const TTL: u8 = 64;

impl L4 {
    fn header_len(&self) -> usize {
        match self {
            L4::Udp { .. } => udp::HEADER_LEN,
            L4::Tcp { .. } => tcp::HEADER_LEN,
            L4::Echo { .. } => icmp::HEADER_LEN,
        }
    }

    fn protocol(&self, v6: bool) -> u8 {
        match self {
            L4::Udp { .. } => protocol::UDP,
            L4::Tcp { .. } => protocol::TCP,
            L4::Echo { .. } if v6 => protocol::ICMPV6,
            L4::Echo { .. } => protocol::ICMP,
        }
    }

    /// Writes the header into `seg` (exactly header and payload), checksum included; `pseudo` is
    /// the IP pseudo-header sum (unused by ICMPv4).
    fn emit(&self, seg: &mut [u8], pseudo: u64, v6: bool) {
        match *self {
            L4::Udp { src, dst } => {
                let payload_len = seg.len() - udp::HEADER_LEN;
                let mut p = UdpPacket::new_unchecked(seg);
                UdpRepr {
                    src_port: src,
                    dst_port: dst,
                    payload_len,
                }
                .emit(&mut p);
                p.fill_checksum(pseudo);
            }
            L4::Tcp { src, dst, flags } => {
                let mut p = TcpPacket::new_unchecked(seg);
                TcpRepr {
                    src_port: src,
                    dst_port: dst,
                    seq: TCP_SEQ,
                    // etherparse's builder, which these frames were first made with, acks 1.
                    ack: if flags & ACK != 0 { 1 } else { 0 },
                    flags,
                    window: TCP_WINDOW,
                }
                .emit(&mut p);
                p.fill_checksum(pseudo);
            }
            L4::Echo { id, reply } => {
                let msg_type = match (v6, reply) {
                    (false, false) => icmp::v4::ECHO_REQUEST,
                    (false, true) => icmp::v4::ECHO_REPLY,
                    (true, false) => icmp::v6::ECHO_REQUEST,
                    (true, true) => icmp::v6::ECHO_REPLY,
                };
                let mut p = IcmpPacket::new_unchecked(seg);
                IcmpEchoRepr {
                    msg_type,
                    ident: id,
                    seq: ECHO_SEQ,
                }
                .emit(&mut p);
                p.fill_checksum(if v6 { pseudo } else { 0 });
            }
        }
    }
}

/// The Ethernet header (and an 802.1Q tag for `vlan`) for a payload of `ethertype`, followed by
/// `rest` zero bytes. Returns the frame and the payload's offset.
fn ethernet(src: Mac, dst: Mac, vlan: Option<u16>, et: u16, rest: usize) -> (Vec<u8>, usize) {
    let tag = if vlan.is_some() { vlan::TAG_LEN } else { 0 };
    let l3 = ethernet::HEADER_LEN + tag;
    let mut f = vec![0u8; l3 + rest];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    let outer = if vlan.is_some() { ethertype::VLAN } else { et };
    EthernetRepr {
        src,
        dst,
        ethertype: outer,
    }
    .emit(&mut e);
    if let Some(v) = vlan {
        let mut t = VlanTag::new_unchecked(e.payload_mut());
        t.set_tci(v & vlan::VID_MASK);
        t.set_ethertype(et);
    }
    (f, l3)
}

/// An Ethernet + IPv4 frame, optionally 802.1Q-tagged, with `payload` bytes of zeros.
pub fn ipv4(
    src: Mac,
    dst: Mac,
    vlan: Option<u16>,
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    l4: L4,
    payload: usize,
) -> Vec<u8> {
    let seg_len = l4.header_len() + payload;
    let (mut f, l3) = ethernet(src, dst, vlan, ethertype::IPV4, ipv4::HEADER_LEN + seg_len);
    let proto = l4.protocol(false);
    Ipv4Repr {
        src: sip,
        dst: dip,
        protocol: proto,
        payload_len: seg_len,
        ttl: TTL,
        ident: 0,
        dont_fragment: true,
    }
    .emit(&mut Ipv4Packet::new_unchecked(&mut f[l3..]));
    let pseudo = checksum::pseudo_v4(sip.octets(), dip.octets(), proto, seg_len);
    l4.emit(&mut f[l3 + ipv4::HEADER_LEN..], pseudo, false);
    f
}

/// An Ethernet + IPv6 frame (UDP or TCP; echo becomes ICMPv6 echo).
pub fn ipv6(
    src: Mac,
    dst: Mac,
    vlan: Option<u16>,
    sip: Ipv6Addr,
    dip: Ipv6Addr,
    l4: L4,
    payload: usize,
) -> Vec<u8> {
    let seg_len = l4.header_len() + payload;
    let (mut f, l3) = ethernet(src, dst, vlan, ethertype::IPV6, ipv6::HEADER_LEN + seg_len);
    let proto = l4.protocol(true);
    Ipv6Repr {
        src: sip,
        dst: dip,
        next_header: proto,
        payload_len: seg_len,
        hop_limit: TTL,
    }
    .emit(&mut Ipv6Packet::new_unchecked(&mut f[l3..]));
    let pseudo = checksum::pseudo_v6(sip.octets(), dip.octets(), proto, seg_len);
    l4.emit(&mut f[l3 + ipv6::HEADER_LEN..], pseudo, true);
    f
}

/// An Ethernet + IPv6 + ICMPv6 frame of type `ty`, code 0, whose message after the 4-byte
/// header is `body`; the checksum is filled in.
pub fn icmpv6(src: Mac, dst: Mac, sip: Ipv6Addr, dip: Ipv6Addr, ty: u8, body: &[u8]) -> Vec<u8> {
    let seg_len = 4 + body.len();
    let (mut f, l3) = ethernet(src, dst, None, ethertype::IPV6, ipv6::HEADER_LEN + seg_len);
    Ipv6Repr {
        src: sip,
        dst: dip,
        next_header: protocol::ICMPV6,
        payload_len: seg_len,
        hop_limit: 255,
    }
    .emit(&mut Ipv6Packet::new_unchecked(&mut f[l3..]));
    let at = l3 + ipv6::HEADER_LEN;
    f[at] = ty;
    f[at + 4..at + 4 + body.len()].copy_from_slice(body);
    let pseudo = checksum::pseudo_v6(sip.octets(), dip.octets(), protocol::ICMPV6, seg_len);
    let sum = checksum::finish(checksum::sum(&f[at..], pseudo));
    f[at + 2..at + 4].copy_from_slice(&sum.to_be_bytes());
    f
}

/// A neighbour solicitation (`advert` false; the link-layer option is the source's) or
/// advertisement (solicited and override set; the option is the target's) for `target`.
pub fn neighbour(
    src: Mac,
    dst: Mac,
    sip: Ipv6Addr,
    dip: Ipv6Addr,
    advert: bool,
    target: Ipv6Addr,
    lladdr: Option<Mac>,
) -> Vec<u8> {
    let mut body = vec![0u8; 4];
    if advert {
        body[0] = 0x60;
    }
    body.extend_from_slice(&target.octets());
    if let Some(m) = lladdr {
        body.extend_from_slice(&[if advert { 2 } else { 1 }, 1]);
        body.extend_from_slice(&m.0);
    }
    let ty = if advert { 136 } else { 135 };
    icmpv6(src, dst, sip, dip, ty, &body)
}

/// An ARP request (`op` 1) or reply (`op` 2) frame.
#[allow(clippy::too_many_arguments)]
pub fn arp(
    src: Mac,
    dst: Mac,
    vlan: Option<u16>,
    op: u16,
    sha: Mac,
    spa: Ipv4Addr,
    tha: Mac,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let (mut f, l3) = ethernet(src, dst, vlan, ethertype::ARP, arp::ETHERNET_IPV4_LEN);
    ArpRepr {
        operation: op,
        sender_mac: sha,
        sender_ip: spa,
        target_mac: tha,
        target_ip: tpa,
    }
    .emit(&mut f[l3..]);
    f
}

/// Pushes an outer tag (`tpid`, `tci`) onto `frame`, in front of any it has.
pub fn push_tag(frame: &mut Vec<u8>, tpid: u16, tci: u16) {
    let tag = OuterTag { tpid, tci }.to_bytes();
    let at = vlan::OUTER_TAG.start;
    frame.splice(at..at, tag);
}

/// The reply to `frame` as far as the flow is concerned: MAC addresses, IPv4 addresses and
/// TCP/UDP ports swapped (the checksums stay right: their sums do not depend on the order).
/// Of other frames only the MAC addresses are swapped.
pub fn reversed(frame: &[u8]) -> Vec<u8> {
    let (k, layout) = crate::parse::parse_with_layout(0, frame);
    let mut r = frame.to_vec();
    if let Ok(mut e) = EthernetFrame::new_checked(&mut r[..]) {
        e.set_src(k.eth_dst());
        e.set_dst(k.eth_src());
    }
    if !k.is_ipv4() || k.is_invalid() {
        return r;
    }
    let mut ip = Ipv4Packet::new_unchecked(&mut r[layout.l3() as usize..]);
    ip.set_src(k.ipv4_dst());
    ip.set_dst(k.ipv4_src());
    let Some(l4) = layout.l4() else {
        return r;
    };
    let seg = &mut r[l4 as usize..];
    match k.ip_proto() {
        protocol::TCP => {
            let mut t = TcpPacket::new_unchecked(seg);
            t.set_src_port(k.tp_dst());
            t.set_dst_port(k.tp_src());
        }
        protocol::UDP => {
            let mut u = UdpPacket::new_unchecked(seg);
            u.set_src_port(k.tp_dst());
            u.set_dst_port(k.tp_src());
        }
        _ => {}
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    /// The frames as etherparse's `PacketBuilder` made them before: these builders must produce
    /// the same bytes.
    mod etherparse_builder {
        use super::super::{ACK, FIN, L4, RST, SYN};
        use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};
        use model::Mac;
        use std::net::{Ipv4Addr, Ipv6Addr};

        fn base(src: Mac, dst: Mac) -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
            PacketBuilder::ethernet2(src.0, dst.0)
        }

        /// Writes the L4 header and payload after an IP builder step (the same for IPv4 and IPv6 but for
        /// the ICMP echo builder methods).
        macro_rules! finish {
            ($ip:expr, $l4:expr, $out:expr, $pl:expr, $req:ident, $rep:ident) => {
                match $l4 {
                    L4::Udp { src, dst } => $ip.udp(src, dst).write(&mut $out, &$pl),
                    L4::Tcp { src, dst, flags } => {
                        tcp($ip.tcp(src, dst, 1000, 65535), flags).write(&mut $out, &$pl)
                    }
                    L4::Echo { id, reply: false } => $ip.$req(id, 1).write(&mut $out, &$pl),
                    L4::Echo { id, reply: true } => $ip.$rep(id, 1).write(&mut $out, &$pl),
                }
            };
        }

        /// An Ethernet + IPv4 frame, optionally 802.1Q-tagged, with `payload` bytes of zeros.
        pub fn ipv4(
            src: Mac,
            dst: Mac,
            vlan: Option<u16>,
            sip: Ipv4Addr,
            dip: Ipv4Addr,
            l4: L4,
            payload: usize,
        ) -> Vec<u8> {
            let pl = vec![0u8; payload];
            let mut out = Vec::with_capacity(64 + payload);
            let eth = base(src, dst);
            let r = match vlan {
                Some(v) => {
                    finish!(
                        eth.single_vlan(v.try_into().unwrap())
                            .ipv4(sip.octets(), dip.octets(), 64),
                        l4,
                        out,
                        pl,
                        icmpv4_echo_request,
                        icmpv4_echo_reply
                    )
                }
                None => finish!(
                    eth.ipv4(sip.octets(), dip.octets(), 64),
                    l4,
                    out,
                    pl,
                    icmpv4_echo_request,
                    icmpv4_echo_reply
                ),
            };
            r.expect("frame builds");
            out
        }

        /// An Ethernet + IPv6 frame (UDP or TCP; echo becomes ICMPv6 echo).
        pub fn ipv6(
            src: Mac,
            dst: Mac,
            vlan: Option<u16>,
            sip: Ipv6Addr,
            dip: Ipv6Addr,
            l4: L4,
            payload: usize,
        ) -> Vec<u8> {
            let pl = vec![0u8; payload];
            let mut out = Vec::with_capacity(80 + payload);
            let eth = base(src, dst);
            let r = match vlan {
                Some(v) => {
                    finish!(
                        eth.single_vlan(v.try_into().unwrap())
                            .ipv6(sip.octets(), dip.octets(), 64),
                        l4,
                        out,
                        pl,
                        icmpv6_echo_request,
                        icmpv6_echo_reply
                    )
                }
                None => finish!(
                    eth.ipv6(sip.octets(), dip.octets(), 64),
                    l4,
                    out,
                    pl,
                    icmpv6_echo_request,
                    icmpv6_echo_reply
                ),
            };
            r.expect("frame builds");
            out
        }

        fn tcp<T>(mut b: PacketBuilderStep<T>, flags: u8) -> PacketBuilderStep<T>
        where
            PacketBuilderStep<T>: TcpFlags,
        {
            b = b.set_flags(flags);
            b
        }

        use etherparse::PacketBuilderStep;

        /// Sets TCP flags on a TCP builder step.
        trait TcpFlags: Sized {
            fn set_flags(self, flags: u8) -> Self;
        }

        impl TcpFlags for PacketBuilderStep<etherparse::TcpHeader> {
            fn set_flags(mut self, f: u8) -> Self {
                if f & FIN != 0 {
                    self = self.fin();
                }
                if f & SYN != 0 {
                    self = self.syn();
                }
                if f & RST != 0 {
                    self = self.rst();
                }
                if f & 0x08 != 0 {
                    self = self.psh();
                }
                if f & ACK != 0 {
                    self = self.ack(1);
                }
                self
            }
        }

        /// An ARP request (`op` 1) or reply (`op` 2) frame.
        #[allow(clippy::too_many_arguments)]
        pub fn arp(
            src: Mac,
            dst: Mac,
            vlan: Option<u16>,
            op: u16,
            sha: Mac,
            spa: Ipv4Addr,
            tha: Mac,
            tpa: Ipv4Addr,
        ) -> Vec<u8> {
            let pkt = ArpPacket::new(
                ArpHardwareId::ETHERNET,
                EtherType::IPV4,
                ArpOperation(op),
                &sha.0,
                &spa.octets(),
                &tha.0,
                &tpa.octets(),
            )
            .expect("valid ARP sizes");
            let mut out = vec![];
            let eth = base(src, dst);
            let r = match vlan {
                Some(v) => eth
                    .single_vlan(v.try_into().unwrap())
                    .arp(pkt)
                    .write(&mut out),
                None => eth.arp(pkt).write(&mut out),
            };
            r.expect("frame builds");
            out
        }
    }

    #[test]
    fn frames_are_those_etherparse_built() {
        let (a, b) = (Mac([2, 0, 0, 0, 0, 1]), Mac([0x0a, 0xbc, 0, 0, 0, 2]));
        let l4s = |i: u16| {
            [
                L4::Udp { src: i, dst: 53 },
                L4::Udp {
                    src: 0xffff,
                    dst: i,
                },
                L4::Tcp {
                    src: i,
                    dst: 80,
                    flags: SYN,
                },
                L4::Tcp {
                    src: 80,
                    dst: i,
                    flags: SYN | ACK,
                },
                L4::Tcp {
                    src: 1,
                    dst: i,
                    flags: FIN | RST | 0x08 | ACK,
                },
                L4::Echo {
                    id: i,
                    reply: false,
                },
                L4::Echo { id: i, reply: true },
            ]
        };
        for i in [0u16, 1, 7, 999, 0xfffe] {
            for l4 in l4s(i) {
                for vlan in [None, Some(1), Some(100), Some(4094)] {
                    for payload in [0, 1, 18, 333] {
                        let (s4, d4) = (Ipv4Addr::new(10, 0, 0, i as u8), Ipv4Addr::BROADCAST);
                        assert_eq!(
                            ipv4(a, b, vlan, s4, d4, l4, payload),
                            etherparse_builder::ipv4(a, b, vlan, s4, d4, l4, payload),
                            "{l4:?} {vlan:?} {payload}"
                        );
                        let (s6, d6): (Ipv6Addr, Ipv6Addr) =
                            ("fd00::1".parse().unwrap(), "2001:db8::ff".parse().unwrap());
                        assert_eq!(
                            ipv6(a, b, vlan, s6, d6, l4, payload),
                            etherparse_builder::ipv6(a, b, vlan, s6, d6, l4, payload),
                            "v6 {l4:?} {vlan:?} {payload}"
                        );
                    }
                }
            }
            for vlan in [None, Some(5)] {
                for op in [1, 2] {
                    let (spa, tpa) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
                    assert_eq!(
                        arp(a, Mac::BROADCAST, vlan, op, a, spa, Mac::ZERO, tpa),
                        etherparse_builder::arp(
                            a,
                            Mac::BROADCAST,
                            vlan,
                            op,
                            a,
                            spa,
                            Mac::ZERO,
                            tpa
                        ),
                    );
                }
            }
        }
    }

    #[test]
    fn push_tag_and_reversed() {
        let (a, b) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut f = ipv4(a, b, Some(100), s, d, L4::Udp { src: 1, dst: 2 }, 0);
        push_tag(&mut f, ethertype::QINQ, 7);
        let k = parse(0, &f);
        assert_eq!((k.vlan(), k.inner_tci() & vlan::VID_MASK), (Some(7), 100));
        for l4 in [
            L4::Udp { src: 1, dst: 2 },
            L4::Tcp {
                src: 1,
                dst: 2,
                flags: ACK,
            },
        ] {
            let f = ipv4(a, b, None, s, d, l4, 3);
            let r = reversed(&f);
            let (k, rk) = (parse(0, &f), parse(0, &r));
            assert_eq!((rk.eth_src(), rk.eth_dst()), (k.eth_dst(), k.eth_src()));
            assert_eq!((rk.ipv4_src(), rk.ipv4_dst()), (k.ipv4_dst(), k.ipv4_src()));
            assert_eq!((rk.tp_src(), rk.tp_dst()), (k.tp_dst(), k.tp_src()));
            assert_eq!(reversed(&r), f);
            assert_eq!(r, ipv4(b, a, None, d, s, reversed_l4(l4), 3));
        }
    }

    fn reversed_l4(l4: L4) -> L4 {
        match l4 {
            L4::Udp { src, dst } => L4::Udp { src: dst, dst: src },
            L4::Tcp { src, dst, flags } => L4::Tcp {
                src: dst,
                dst: src,
                flags,
            },
            e => e,
        }
    }
}
