//! The few header reads conntrack needs beyond the flow key: the ICMP echo identifier, and the IP
//! header plus first L4 bytes an ICMP error quotes. Through [`crate::wire`] views, from the ICMP
//! header the parser found ([`crate::wire::Layout::l4_bytes`]); `None` whenever something is
//! missing or malformed.

use crate::wire::ip::{self, protocol, ExtHeader};
use crate::wire::ipv6::{FragmentHeader, FRAGMENT_HEADER_LEN};
use crate::wire::{icmp, IcmpPacket, Ipv4Packet, Ipv6Packet};

/// The identifier of the ICMP echo request or reply `msg` (the frame from the ICMP header on).
///
/// Out of line for the same reason as the black_box at its caller: inlined into the datapath's
/// per-segment loop, its reads would be hoisted into every packet's path.
#[inline(never)]
pub(super) fn echo_id(msg: &[u8]) -> Option<u16> {
    Some(IcmpPacket::new_checked(msg).ok()?.echo_ident())
}

/// The parts of a quoted IP header conntrack uses.
struct IpHdr {
    src: u128,
    dst: u128,
    proto: u8,
    /// Offset of the transport header from the start of the IP header.
    l4: usize,
}

/// A quoted IPv4 header. Non-first fragments give `None` (they carry no transport header).
fn ipv4(b: &[u8]) -> Option<IpHdr> {
    let h = Ipv4Packet::new_quoted(b).ok()?;
    if h.frag_offset() != 0 {
        return None;
    }
    Some(IpHdr {
        src: u32::from(h.src()) as u128,
        dst: u32::from(h.dst()) as u128,
        proto: h.protocol(),
        l4: h.header_len(),
    })
}

/// Most extension headers stepped over in a quoted IPv6 packet.
const MAX_QUOTED_EXTS: usize = 8;

/// A quoted IPv6 header, stepping over hop-by-hop, routing, destination-options, fragment (first
/// fragment only) and AH extension headers. Only their chaining bytes need be quoted: the quote
/// may end inside one, and the transport header is then missing, not the packet.
fn ipv6(b: &[u8]) -> Option<IpHdr> {
    let h = Ipv6Packet::new_quoted(b).ok()?;
    let mut nh = h.next_header();
    let mut l4 = crate::wire::ipv6::HEADER_LEN;
    for _ in 0..MAX_QUOTED_EXTS {
        match nh {
            protocol::HOP_BY_HOP | protocol::ROUTING | protocol::DEST_OPTS | protocol::AUTH => {
                let e = ExtHeader::new_checked(b.get(l4..)?).ok()?;
                l4 += e.header_len(nh);
                nh = e.next_header();
            }
            protocol::FRAGMENT => {
                let f = FragmentHeader::new_checked(b.get(l4..)?).ok()?;
                if f.frag_offset() != 0 {
                    return None;
                }
                nh = f.next_header();
                l4 += FRAGMENT_HEADER_LEN;
            }
            _ => break,
        }
    }
    Some(IpHdr {
        src: u128::from(h.src()),
        dst: u128::from(h.dst()),
        proto: nh,
        l4,
    })
}

/// What an ICMP error quotes of the packet that caused it.
pub(super) struct Embedded {
    pub src: u128,
    pub dst: u128,
    pub proto: u8,
    pub l4: EmbeddedL4,
}

pub(super) enum EmbeddedL4 {
    Ports(u16, u16),
    EchoRequest(u16),
    EchoReply(u16),
    /// No ports: tracked by addresses and protocol only.
    Bare,
}

/// The packet quoted by the ICMP error `msg` (the frame from the ICMP header on; the quote
/// starts after the 8-byte header). `None` when it is truncated, a non-first fragment, or itself
/// an ICMP error (never related).
pub(super) fn embedded(msg: &[u8], v6: bool) -> Option<Embedded> {
    let m = IcmpPacket::new_checked(msg).ok()?;
    let quoted = m.payload();
    let ip = if v6 { ipv6(quoted)? } else { ipv4(quoted)? };
    let l4 = quoted.get(ip.l4..).unwrap_or(&[]);
    let echo = |req: u8, rep: u8| -> Option<EmbeddedL4> {
        let (ty, id) = icmp::quoted_echo(l4)?;
        match ty {
            t if t == req => Some(EmbeddedL4::EchoRequest(id)),
            t if t == rep => Some(EmbeddedL4::EchoReply(id)),
            t if super::is_icmp_error(v6, t) => None,
            _ => Some(EmbeddedL4::Bare),
        }
    };
    let l4 = match ip.proto {
        protocol::TCP | protocol::UDP => {
            let (s, d) = ip::ports(l4)?;
            EmbeddedL4::Ports(s, d)
        }
        protocol::ICMP if !v6 => echo(icmp::v4::ECHO_REQUEST, icmp::v4::ECHO_REPLY)?,
        protocol::ICMPV6 if v6 => echo(icmp::v6::ECHO_REQUEST, icmp::v6::ECHO_REPLY)?,
        _ => EmbeddedL4::Bare,
    };
    Some(Embedded {
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        l4,
    })
}
