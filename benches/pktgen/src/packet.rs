//! Frame templates, checksums and the latency stamp, through `flowtable::wire`. Pure Rust, no
//! DPDK.
//!
//! Frame sizes follow RFC 2544: "64 bytes" includes the 4-byte FCS, which virtio does not carry,
//! so the buffer handed to the port is `size - 4` bytes (60 for 64-byte frames).

use flowtable::wire::ethernet::{self, ethertype, EthernetFrame, EthernetRepr};
use flowtable::wire::ip::{checksum, protocol};
use flowtable::wire::{ipv4, tcp, udp, vlan};
use flowtable::wire::{Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr, UdpPacket, UdpRepr, VlanTag};
use model::Mac;
use std::net::Ipv4Addr;

/// IPv4 identification of stamped (latency-sampled) packets; every other packet carries 0.
pub const STAMP_IP_ID: u16 = 0xe5e5;
/// Bytes of the stamp after the L4 header: sequence (u32 LE) + TSC (u64 LE).
pub const STAMP_LEN: usize = 12;
pub const FCS_LEN: usize = 4;

pub const TCP_FIN: u8 = tcp::flags::FIN;
pub const TCP_SYN: u8 = tcp::flags::SYN;
pub const TCP_ACK: u8 = tcp::flags::ACK;

const TTL: u8 = 64;
const TCP_WINDOW: u16 = 65535;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

/// One direction's flow: addresses of a single packet stream.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl Flow {
    pub fn reversed(&self) -> Flow {
        Flow {
            src_mac: self.dst_mac,
            dst_mac: self.src_mac,
            src_ip: self.dst_ip,
            dst_ip: self.src_ip,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

/// Offsets of a built frame.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub ip: usize,
    pub l4: usize,
    pub payload: usize,
}

pub fn layout(vlan: Option<u16>, proto: Proto) -> Layout {
    let tag = if vlan.is_some() { vlan::TAG_LEN } else { 0 };
    let ip = ethernet::HEADER_LEN + tag;
    let l4 = ip + ipv4::HEADER_LEN;
    let payload = l4
        + match proto {
            Proto::Tcp => tcp::HEADER_LEN,
            Proto::Udp => udp::HEADER_LEN,
        };
    Layout { ip, l4, payload }
}

/// Recomputes the IPv4 header checksum in place.
pub fn ipv4_csum(frame: &mut [u8], ip: usize) {
    Ipv4Packet::new_unchecked(&mut frame[ip..]).fill_checksum();
}

/// Recomputes the TCP checksum (pseudo-header included) in place; `end` is the end of the IP
/// datagram inside `frame`.
pub fn tcp_csum(frame: &mut [u8], ip: usize, l4: usize, end: usize) {
    let h = Ipv4Packet::new_unchecked(&frame[ip..]);
    let pseudo = checksum::pseudo_v4(h.src().octets(), h.dst().octets(), protocol::TCP, end - l4);
    TcpPacket::new_unchecked(&mut frame[l4..end]).fill_checksum(pseudo);
}

/// The checksum field `old` after words summing to `added` replaced zeros in what it covers
/// (RFC 1624 incremental update).
fn csum_add(old: u16, added: u64) -> u16 {
    checksum::finish((!old) as u64 + added)
}

/// Builds one frame of `len` bytes (without FCS; at least the headers) for `flow`.
/// UDP carries checksum 0 (allowed for IPv4); TCP carries a correct checksum over a zero payload.
pub fn build(flow: &Flow, vlan: Option<u16>, proto: Proto, len: usize, tcp_flags: u8) -> Vec<u8> {
    let lay = layout(vlan, proto);
    let len = len.max(lay.payload).max(60);
    let mut f = vec![0u8; len];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    EthernetRepr {
        src: Mac(flow.src_mac),
        dst: Mac(flow.dst_mac),
        ethertype: if vlan.is_some() {
            ethertype::VLAN
        } else {
            ethertype::IPV4
        },
    }
    .emit(&mut eth);
    if let Some(v) = vlan {
        let mut tag = VlanTag::new_unchecked(eth.payload_mut());
        tag.set_tci(v & vlan::VID_MASK);
        tag.set_ethertype(ethertype::IPV4);
    }
    let (ip, l4) = (lay.ip, lay.l4);
    // Handshake segments end at the TCP header (the rest is Ethernet padding).
    let dgram_end = if proto == Proto::Tcp && tcp_flags & (TCP_SYN | TCP_FIN) != 0 {
        lay.payload
    } else {
        len
    };
    Ipv4Repr {
        src: flow.src_ip,
        dst: flow.dst_ip,
        protocol: match proto {
            Proto::Tcp => protocol::TCP,
            Proto::Udp => protocol::UDP,
        },
        payload_len: dgram_end - l4,
        ttl: TTL,
        ident: 0,
        dont_fragment: false,
    }
    .emit(&mut Ipv4Packet::new_unchecked(&mut f[ip..]));
    match proto {
        Proto::Udp => UdpRepr {
            src_port: flow.sport,
            dst_port: flow.dport,
            payload_len: len - lay.payload,
        }
        .emit(&mut UdpPacket::new_unchecked(&mut f[l4..])),
        Proto::Tcp => {
            TcpRepr {
                src_port: flow.sport,
                dst_port: flow.dport,
                seq: 1,
                ack: 0,
                flags: tcp_flags,
                window: TCP_WINDOW,
            }
            .emit(&mut TcpPacket::new_unchecked(&mut f[l4..]));
            tcp_csum(&mut f, ip, l4, dgram_end);
        }
    }
    f
}

/// Whether a frame of this layout and length has room for the latency stamp.
pub fn stamp_fits(lay: &Layout, len: usize) -> bool {
    len >= lay.payload + STAMP_LEN
}

/// Writes the latency stamp into a copy of a template (whose IP id and stamp bytes are zero) and
/// fixes the checksums incrementally.
#[inline]
pub fn stamp(frame: &mut [u8], lay: &Layout, proto: Proto, seq: u32, tsc: u64) {
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[lay.ip..]);
    ip.set_ident(STAMP_IP_ID);
    let c = csum_add(ip.checksum(), STAMP_IP_ID as u64);
    ip.set_checksum(c);
    let p = lay.payload;
    frame[p..p + 4].copy_from_slice(&seq.to_le_bytes());
    frame[p + 4..p + 12].copy_from_slice(&tsc.to_le_bytes());
    if proto == Proto::Tcp {
        let added = checksum::sum(&frame[p..p + STAMP_LEN], 0);
        let mut t = TcpPacket::new_unchecked(&mut frame[lay.l4..]);
        let c = csum_add(t.checksum(), added);
        t.set_checksum(c);
    }
}

/// Parsed view of a received IPv4 TCP/UDP frame.
#[derive(Debug, Clone, Copy)]
pub struct Parsed {
    pub ip: usize,
    pub l4: usize,
    pub proto: u8,
    pub payload: usize,
    pub ip_id: u16,
}

/// Where the headers of a received IPv4 frame (up to two tags) are; the L4 header must be there
/// for TCP.
#[inline]
pub fn parse(d: &[u8]) -> Option<Parsed> {
    let mut et = EthernetFrame::new_checked(d).ok()?.ethertype();
    let mut ip = ethernet::HEADER_LEN;
    for _ in 0..vlan::MAX_TAGS {
        if !vlan::is_tpid(et) {
            break;
        }
        et = VlanTag::new_checked(d.get(ip..)?).ok()?.ethertype();
        ip += vlan::HEADER_LEN;
    }
    if et != ethertype::IPV4 {
        return None;
    }
    let h = Ipv4Packet::new_quoted(d.get(ip..)?).ok()?;
    let l4 = ip + h.header_len();
    let proto = h.protocol();
    let hl = match proto {
        protocol::UDP => udp::HEADER_LEN,
        protocol::TCP => TcpPacket::new_checked(d.get(l4..)?).ok()?.header_len(),
        _ => 0,
    };
    Some(Parsed {
        ip,
        l4,
        proto,
        payload: l4 + hl,
        ip_id: h.ident(),
    })
}

/// The stamp of a received frame: (sequence, TSC).
#[inline]
pub fn read_stamp(d: &[u8]) -> Option<(u32, u64)> {
    let p = parse(d)?;
    if p.ip_id != STAMP_IP_ID || d.len() < p.payload + STAMP_LEN {
        return None;
    }
    let s = p.payload;
    let seq = u32::from_le_bytes(d[s..s + 4].try_into().ok()?);
    let tsc = u64::from_le_bytes(d[s + 4..s + 12].try_into().ok()?);
    Some((seq, tsc))
}

/// Turns a received TCP segment into the handshake answer in place: addresses and ports swapped,
/// `flags`, seq = `seq`, ack = `ack`, checksums recomputed. Returns false if not TCP.
pub fn tcp_answer(d: &mut [u8], flags: u8, seq: u32, ack: u32) -> bool {
    let Some(p) = parse(d) else { return false };
    if p.proto != protocol::TCP {
        return false;
    }
    let (ip, l4) = (p.ip, p.l4);
    let mut e = EthernetFrame::new_unchecked(&mut d[..]);
    let (src, dst) = (e.src(), e.dst());
    e.set_src(dst);
    e.set_dst(src);
    let mut h = Ipv4Packet::new_unchecked(&mut d[ip..]);
    let (src, dst) = (h.src(), h.dst());
    h.set_src(dst);
    h.set_dst(src);
    h.set_ident(0);
    h.fill_checksum();
    let end = (ip + h.total_len() as usize).min(d.len());
    let mut t = TcpPacket::new_unchecked(&mut d[l4..]);
    let (sport, dport) = (t.src_port(), t.dst_port());
    t.set_src_port(dport);
    t.set_dst_port(sport);
    t.set_seq(seq);
    t.set_ack(ack);
    t.set_flags(flags);
    tcp_csum(d, ip, l4, end.max(l4 + tcp::HEADER_LEN));
    true
}

/// (flags, seq, ack) of a TCP segment.
pub fn tcp_fields(d: &[u8]) -> Option<(u8, u32, u32)> {
    let p = parse(d)?;
    if p.proto != protocol::TCP {
        return None;
    }
    let t = TcpPacket::new_checked(&d[p.l4..]).ok()?;
    Some((t.flags() as u8, t.seq(), t.ack()))
}

/// Parses "02:00:00:00:00:01".
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("{s:?} is not a MAC address"));
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: "10.0.0.1".parse().unwrap(),
            dst_ip: "10.0.0.2".parse().unwrap(),
            sport: 1024,
            dport: 80,
        }
    }

    fn verify_ip(f: &[u8], ip: usize) -> bool {
        Ipv4Packet::new_checked(&f[ip..]).unwrap().verify_checksum()
    }

    fn verify_tcp(f: &[u8], ip: usize, l4: usize) -> bool {
        let h = Ipv4Packet::new_checked(&f[ip..]).unwrap();
        let seg = &f[l4..ip + h.total_len() as usize];
        let pseudo = checksum::pseudo_v4(h.src().octets(), h.dst().octets(), 6, seg.len());
        TcpPacket::new_checked(seg).unwrap().verify_checksum(pseudo)
    }

    #[test]
    fn udp_and_stamp() {
        let lay = layout(Some(100), Proto::Udp);
        let mut f = build(&flow(), Some(100), Proto::Udp, 60, 0);
        assert_eq!(f.len(), 60);
        assert!(verify_ip(&f, lay.ip));
        assert!(stamp_fits(&lay, 60));
        stamp(&mut f, &lay, Proto::Udp, 7, 0x1234_5678_9abc);
        assert!(verify_ip(&f, lay.ip));
        assert_eq!(read_stamp(&f), Some((7, 0x1234_5678_9abc)));
    }

    #[test]
    fn tcp_stamp_and_answer() {
        let lay = layout(None, Proto::Tcp);
        let mut f = build(&flow(), None, Proto::Tcp, 124, TCP_ACK);
        assert!(verify_tcp(&f, lay.ip, lay.l4));
        stamp(&mut f, &lay, Proto::Tcp, 0xdead_beef, u64::MAX - 5);
        assert!(verify_ip(&f, lay.ip));
        assert!(verify_tcp(&f, lay.ip, lay.l4));
        let mut s = build(&flow(), None, Proto::Tcp, 60, TCP_SYN);
        assert!(tcp_answer(&mut s, TCP_SYN | TCP_ACK, 99, 2));
        assert!(verify_ip(&s, lay.ip));
        assert!(verify_tcp(&s, lay.ip, lay.l4));
        assert_eq!(tcp_fields(&s), Some((TCP_SYN | TCP_ACK, 99, 2)));
        assert_eq!(&s[0..6], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(
            Ipv4Packet::new_checked(&s[lay.ip..]).unwrap().src(),
            Ipv4Addr::new(10, 0, 0, 2)
        );
    }

    #[test]
    fn frames_parse_in_the_switch_as_built() {
        for vlan in [None, Some(100)] {
            for proto in [Proto::Udp, Proto::Tcp] {
                let f = build(&flow(), vlan, proto, 60, TCP_SYN);
                let (k, l) = flowtable::parse::parse_with_layout(0, &f);
                let lay = layout(vlan, proto);
                assert!(!k.is_invalid(), "{vlan:?} {proto:?}");
                assert_eq!((k.tp_src(), k.tp_dst()), (1024, 80));
                assert_eq!(
                    (l.l3() as usize, l.l4().map(usize::from)),
                    (lay.ip, Some(lay.l4))
                );
                let p = parse(&f).unwrap();
                assert_eq!((p.ip, p.l4, p.payload), (lay.ip, lay.l4, lay.payload));
            }
        }
    }
}
