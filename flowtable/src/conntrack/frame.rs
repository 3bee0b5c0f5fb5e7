//! The few header reads conntrack needs beyond the flow key: the ICMP echo identifier, and the IP
//! header plus first L4 bytes embedded in an ICMP error. Plain bounds-checked byte reads; `None`
//! whenever something is missing or malformed.

use crate::key::{
    ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_QINQ, ETH_TYPE_VLAN, IP_PROTO_ICMP, IP_PROTO_ICMPV6,
    IP_PROTO_TCP, IP_PROTO_UDP,
};

#[inline(always)]
fn be16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off + 2)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

#[inline(always)]
fn be128(b: &[u8], off: usize) -> Option<u128> {
    Some(u128::from_be_bytes(b.get(off..off + 16)?.try_into().ok()?))
}

/// Offset of the network header: after the Ethernet header and at most two VLAN tags.
pub(super) fn l3_offset(frame: &[u8]) -> Option<(usize, u16)> {
    let mut off = 12;
    let mut tags = 0;
    loop {
        let et = be16(frame, off)?;
        if et == ETH_TYPE_VLAN || et == ETH_TYPE_QINQ {
            if tags == 2 {
                return None;
            }
            tags += 1;
            off += 4;
            continue;
        }
        return Some((off + 2, et));
    }
}

/// The parts of an IP header conntrack uses.
pub(super) struct IpHdr {
    pub src: u128,
    pub dst: u128,
    pub proto: u8,
    /// Offset of the transport header.
    pub l4: usize,
}

/// An IPv4 header at `off`. Non-first fragments give `None` (they carry no transport header).
pub(super) fn ipv4(b: &[u8], off: usize) -> Option<IpHdr> {
    let h = b.get(off..off + 20)?;
    if h[0] >> 4 != 4 {
        return None;
    }
    let ihl = (h[0] & 0x0f) as usize * 4;
    if ihl < 20 || u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
        return None;
    }
    Some(IpHdr {
        src: u32::from_be_bytes([h[12], h[13], h[14], h[15]]) as u128,
        dst: u32::from_be_bytes([h[16], h[17], h[18], h[19]]) as u128,
        proto: h[9],
        l4: off + ihl,
    })
}

/// An IPv6 header at `off`, skipping hop-by-hop, routing, destination-options, fragment (first
/// fragment only) and AH extension headers.
pub(super) fn ipv6(b: &[u8], off: usize) -> Option<IpHdr> {
    let h = b.get(off..off + 40)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let mut nh = h[6];
    let mut l4 = off + 40;
    for _ in 0..8 {
        match nh {
            0 | 43 | 60 => {
                let e = b.get(l4..l4 + 2)?;
                nh = e[0];
                l4 += (e[1] as usize + 1) * 8;
            }
            44 => {
                let e = b.get(l4..l4 + 8)?;
                if u16::from_be_bytes([e[2], e[3]]) & 0xfff8 != 0 {
                    return None;
                }
                nh = e[0];
                l4 += 8;
            }
            51 => {
                let e = b.get(l4..l4 + 2)?;
                nh = e[0];
                l4 += (e[1] as usize + 2) * 4;
            }
            _ => break,
        }
    }
    Some(IpHdr {
        src: be128(b, off + 8)?,
        dst: be128(b, off + 24)?,
        proto: nh,
        l4,
    })
}

/// Offset of the ICMP (v4) or ICMPv6 header of `frame`, with at least 8 bytes of it present.
pub(super) fn icmp_offset(frame: &[u8], v6: bool) -> Option<usize> {
    let (l3, et) = l3_offset(frame)?;
    let ip = if v6 {
        if et != ETH_TYPE_IPV6 {
            return None;
        }
        ipv6(frame, l3)?
    } else {
        if et != ETH_TYPE_IPV4 {
            return None;
        }
        ipv4(frame, l3)?
    };
    let want = if v6 { IP_PROTO_ICMPV6 } else { IP_PROTO_ICMP };
    (ip.proto == want && frame.len() >= ip.l4 + 8).then_some(ip.l4)
}

/// The identifier of an ICMP echo request or reply whose header is at `icmp`.
pub(super) fn echo_id(frame: &[u8], icmp: usize) -> Option<u16> {
    be16(frame, icmp + 4)
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

/// The packet quoted by the ICMP error whose header is at `icmp` (the quote starts 8 bytes later).
/// `None` when it is truncated, a non-first fragment, or itself an ICMP error (never related).
pub(super) fn embedded(frame: &[u8], icmp: usize, v6: bool) -> Option<Embedded> {
    let off = icmp + 8;
    let ip = if v6 {
        ipv6(frame, off)?
    } else {
        ipv4(frame, off)?
    };
    let l4 = match ip.proto {
        IP_PROTO_TCP | IP_PROTO_UDP => {
            EmbeddedL4::Ports(be16(frame, ip.l4)?, be16(frame, ip.l4 + 2)?)
        }
        IP_PROTO_ICMP if !v6 => {
            let id = be16(frame, ip.l4 + 4)?;
            match frame[ip.l4] {
                8 => EmbeddedL4::EchoRequest(id),
                0 => EmbeddedL4::EchoReply(id),
                t if crate::key::is_icmp_error(false, t) => return None,
                _ => EmbeddedL4::Bare,
            }
        }
        IP_PROTO_ICMPV6 if v6 => {
            let id = be16(frame, ip.l4 + 4)?;
            match frame[ip.l4] {
                128 => EmbeddedL4::EchoRequest(id),
                129 => EmbeddedL4::EchoReply(id),
                t if crate::key::is_icmp_error(true, t) => return None,
                _ => EmbeddedL4::Bare,
            }
        }
        _ => EmbeddedL4::Bare,
    };
    Some(Embedded {
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        l4,
    })
}
