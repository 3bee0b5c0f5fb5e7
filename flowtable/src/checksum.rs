//! TCP checksum filling ("TCP checksum filling" of a port group): some guests need a valid TCP
//! checksum on receive, while senders with checksum offload leave it partial or empty.

use crate::key::{ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_QINQ, ETH_TYPE_VLAN, IP_PROTO_TCP};

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

fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [b] = chunks.remainder() {
        acc += (*b as u64) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Computes and writes the TCP checksum of the segment in `frame` (Ethernet, up to two VLAN tags,
/// IPv4 with options or IPv6 without extension headers).
pub fn fill_tcp_checksum(frame: &mut [u8]) -> Result<(), NotFilled> {
    let mut off = 12;
    let mut et;
    loop {
        if frame.len() < off + 2 {
            return Err(NotFilled::Malformed);
        }
        et = u16::from_be_bytes([frame[off], frame[off + 1]]);
        if et == ETH_TYPE_VLAN || et == ETH_TYPE_QINQ {
            off += 4;
            continue;
        }
        off += 2;
        break;
    }
    let (l4_off, l4_len, mut acc) = match et {
        ETH_TYPE_IPV4 => {
            let ip = frame.get(off..off + 20).ok_or(NotFilled::Malformed)?;
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            if ip[9] != IP_PROTO_TCP {
                return Err(NotFilled::NotTcp);
            }
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return Err(NotFilled::Fragment);
            }
            if ihl < 20 || total < ihl + 20 || off + total > frame.len() {
                return Err(NotFilled::Malformed);
            }
            let len = total - ihl;
            let acc = sum16(&frame[off + 12..off + 20], 0) + IP_PROTO_TCP as u64 + len as u64;
            (off + ihl, len, acc)
        }
        ETH_TYPE_IPV6 => {
            let ip = frame.get(off..off + 40).ok_or(NotFilled::Malformed)?;
            if ip[6] != IP_PROTO_TCP {
                return Err(NotFilled::NotTcp);
            }
            let len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            if len < 20 || off + 40 + len > frame.len() {
                return Err(NotFilled::Malformed);
            }
            let acc = sum16(&frame[off + 8..off + 40], 0) + IP_PROTO_TCP as u64 + len as u64;
            (off + 40, len, acc)
        }
        _ => return Err(NotFilled::NotTcp),
    };
    let seg = &mut frame[l4_off..l4_off + l4_len];
    seg[16] = 0;
    seg[17] = 0;
    acc = sum16(seg, acc);
    let c = fold(acc);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{self, ACK, L4};
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
                    let tcp_off = f.len() - payload - 20;
                    f[tcp_off + 16] ^= 0x5a; // as a sender with offload would leave it: wrong
                    assert!(!tcp_checksum_ok(f));
                    fill_tcp_checksum(f).unwrap();
                    assert!(tcp_checksum_ok(f), "vlan {vlan:?} payload {payload}");
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
    }
}
