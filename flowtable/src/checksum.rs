//! TCP checksum filling ("TCP checksum filling" of a port group): some guests need a valid TCP
//! checksum on receive, while senders with checksum offload leave it partial or empty.

use crate::wire::ethernet::{self, ethertype};
use crate::wire::ip::{checksum, protocol};
use crate::wire::{tcp, vlan, Ipv4Packet, Ipv6Packet, TcpPacket, VlanTag};

/// Why a checksum was not filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFilled {
    /// Not a TCP segment over IPv4/IPv6 (nothing to do).
    NotTcp,
    /// An IP fragment: the checksum covers bytes not in this frame.
    Fragment,
    /// Headers or lengths do not fit the frame.
    Malformed,
}

/// Computes and writes the TCP checksum of the segment in `frame` (Ethernet, up to two VLAN tags
/// as the parser reads them, IPv4 with options or IPv6 without extension headers).
pub fn fill_tcp_checksum(frame: &mut [u8]) -> Result<(), NotFilled> {
    let l3 = network_offset(frame)?;
    fill_tcp_checksum_at(frame, l3)
}

/// The offset of the network header: after the Ethernet header and at most two tags.
fn network_offset(frame: &[u8]) -> Result<usize, NotFilled> {
    let mut at = ethernet::HEADER_LEN;
    let mut et = ethernet::EthernetFrame::new_checked(frame)
        .map_err(|_| NotFilled::Malformed)?
        .ethertype();
    for _ in 0..vlan::MAX_TAGS {
        if !vlan::is_tpid(et) {
            break;
        }
        let tag = VlanTag::new_checked(frame.get(at..).unwrap_or(&[]))
            .map_err(|_| NotFilled::Malformed)?;
        et = tag.ethertype();
        at += vlan::HEADER_LEN;
    }
    Ok(at)
}

/// [`fill_tcp_checksum`] for a frame whose network header is known to start at `l3` (its
/// ethertype just before): [`crate::wire::Layout::l3`] of the frame as parsed, moved by
/// [`vlan::TAG_LEN`] for a tag pushed (+) or popped (−) since. Reads nothing before `l3 - 2`.
pub fn fill_tcp_checksum_at(frame: &mut [u8], l3: usize) -> Result<(), NotFilled> {
    let et = ethernet::ethertype_before(frame, l3).ok_or(NotFilled::Malformed)?;
    let ip = frame.get(l3..).ok_or(NotFilled::Malformed)?;
    let (l4, len, pseudo) = match et {
        ethertype::IPV4 => {
            let h = Ipv4Packet::new_quoted(ip).map_err(|_| NotFilled::Malformed)?;
            if h.protocol() != protocol::TCP {
                return Err(NotFilled::NotTcp);
            }
            if h.is_fragment() {
                return Err(NotFilled::Fragment);
            }
            let h = Ipv4Packet::new_checked(ip).map_err(|_| NotFilled::Malformed)?;
            let len = h.total_len() as usize - h.header_len();
            if len < tcp::HEADER_LEN {
                return Err(NotFilled::Malformed);
            }
            let pseudo =
                checksum::pseudo_v4(h.src().octets(), h.dst().octets(), protocol::TCP, len);
            (l3 + h.header_len(), len, pseudo)
        }
        ethertype::IPV6 => {
            let h = Ipv6Packet::new_quoted(ip).map_err(|_| NotFilled::Malformed)?;
            if h.next_header() != protocol::TCP {
                return Err(NotFilled::NotTcp);
            }
            let len = h.payload_len() as usize;
            if len < tcp::HEADER_LEN {
                return Err(NotFilled::Malformed);
            }
            Ipv6Packet::new_checked(ip).map_err(|_| NotFilled::Malformed)?;
            let pseudo =
                checksum::pseudo_v6(h.src().octets(), h.dst().octets(), protocol::TCP, len);
            (l3 + crate::wire::ipv6::HEADER_LEN, len, pseudo)
        }
        _ => return Err(NotFilled::NotTcp),
    };
    // The views checked that the segment is in the frame.
    let seg = frame.get_mut(l4..l4 + len).ok_or(NotFilled::Malformed)?;
    TcpPacket::new_unchecked(seg).fill_checksum(pseudo);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{self, ACK, L4};
    use crate::parse::parse_with_layout;
    use model::Mac;

    fn tcp_checksum_ok(frame: &[u8]) -> bool {
        let s = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
        let Some(etherparse::TransportSlice::Tcp(t)) = s.transport else {
            panic!("tcp")
        };
        let want = match s.net {
            Some(etherparse::NetSlice::Ipv4(ip)) => t
                .calc_checksum_ipv4(ip.header().source(), ip.header().destination())
                .unwrap(),
            Some(etherparse::NetSlice::Ipv6(ip)) => t
                .calc_checksum_ipv6(ip.header().source(), ip.header().destination())
                .unwrap(),
            _ => panic!("ip"),
        };
        t.checksum() == want
    }

    #[test]
    fn fills_ipv4_and_ipv6_tcp_even_tagged_and_odd_lengths() {
        let (a, b) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
        for vlan in [None, Some(100)] {
            for payload in [0, 1, 7, 1000] {
                let l4 = L4::Tcp {
                    src: 1234,
                    dst: 80,
                    flags: ACK,
                };
                let mut f4 = frames::ipv4(
                    a,
                    b,
                    vlan,
                    "10.0.0.1".parse().unwrap(),
                    "10.0.0.2".parse().unwrap(),
                    l4,
                    payload,
                );
                let mut f6 = frames::ipv6(
                    a,
                    b,
                    vlan,
                    "fd00::1".parse().unwrap(),
                    "fd00::2".parse().unwrap(),
                    l4,
                    payload,
                );
                for f in [&mut f4, &mut f6] {
                    assert!(tcp_checksum_ok(f));
                    let lay = parse_with_layout(0, f).1;
                    let csum = lay.l4().unwrap() as usize + tcp::CHECKSUM_OFFSET;
                    f[csum] ^= 0x5a; // as a sender with offload would leave it: wrong
                    assert!(!tcp_checksum_ok(f));
                    fill_tcp_checksum(f).unwrap();
                    assert!(tcp_checksum_ok(f), "vlan {vlan:?} payload {payload}");
                    f[csum] ^= 0x5a;
                    fill_tcp_checksum_at(f, lay.l3() as usize).unwrap();
                    assert!(tcp_checksum_ok(f), "at l3, vlan {vlan:?} payload {payload}");
                }
            }
        }
    }

    #[test]
    fn leaves_other_frames_alone_and_rejects_short_ones() {
        let (a, b) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
        let mut udp = frames::ipv4(
            a,
            b,
            None,
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            L4::Udp { src: 1, dst: 2 },
            10,
        );
        let before = udp.clone();
        assert_eq!(fill_tcp_checksum(&mut udp), Err(NotFilled::NotTcp));
        assert_eq!(udp, before);
        let mut tcp = frames::ipv4(
            a,
            b,
            None,
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            L4::Tcp {
                src: 1,
                dst: 2,
                flags: ACK,
            },
            10,
        );
        tcp.truncate(40);
        assert_eq!(fill_tcp_checksum(&mut tcp), Err(NotFilled::Malformed));
        for n in 0..14 {
            let _ = fill_tcp_checksum(&mut vec![0x81; n]);
        }
        for l3 in 0..20 {
            let _ = fill_tcp_checksum_at(&mut [0x08; 30], l3);
        }
    }

    #[test]
    fn reads_two_tags_like_the_parser_and_no_more() {
        let (a, b) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
        let l4 = L4::Tcp {
            src: 1,
            dst: 2,
            flags: ACK,
        };
        let ip = |n| std::net::Ipv4Addr::new(10, 0, 0, n);
        let mut f = frames::ipv4(a, b, Some(100), ip(1), ip(2), l4, 5);
        frames::push_tag(&mut f, ethertype::QINQ, 7);
        let csum = parse_with_layout(0, &f).1.l4().unwrap() as usize + tcp::CHECKSUM_OFFSET;
        f[csum] ^= 0xff;
        fill_tcp_checksum(&mut f).unwrap();
        assert!(tcp_checksum_ok(&f));
        frames::push_tag(&mut f, ethertype::QINQ, 8);
        let before = f.clone();
        assert_eq!(fill_tcp_checksum(&mut f), Err(NotFilled::NotTcp));
        assert_eq!(f, before);
    }
}
