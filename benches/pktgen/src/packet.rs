//! Frame templates, checksums and the latency stamp. Pure Rust, no DPDK.
//!
//! Frame sizes follow RFC 2544: "64 bytes" includes the 4-byte FCS, which virtio does not carry,
//! so the buffer handed to the port is `size - 4` bytes (60 for 64-byte frames).

use std::net::Ipv4Addr;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// IPv4 identification of stamped (latency-sampled) packets; every other packet carries 0.
pub const STAMP_IP_ID: u16 = 0xe5e5;
/// Bytes of the stamp after the L4 header: sequence (u32 LE) + TSC (u64 LE).
pub const STAMP_LEN: usize = 12;
pub const FCS_LEN: usize = 4;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

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
    let ip = if vlan.is_some() { 18 } else { 14 };
    let l4 = ip + 20;
    let payload = l4 + if proto == Proto::Tcp { 20 } else { 8 };
    Layout { ip, l4, payload }
}

/// Ones'-complement sum of `data` (big-endian 16-bit words), not folded.
pub fn sum16(data: &[u8]) -> u32 {
    let mut s = 0u32;
    let mut it = data.chunks_exact(2);
    for w in &mut it {
        s += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    if let [b] = it.remainder() {
        s += (*b as u32) << 8;
    }
    s
}

pub fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Recomputes the IPv4 header checksum in place.
pub fn ipv4_csum(frame: &mut [u8], ip: usize) {
    frame[ip + 10] = 0;
    frame[ip + 11] = 0;
    let c = !fold(sum16(&frame[ip..ip + 20]));
    frame[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes the TCP checksum (pseudo-header included) in place; `end` is the end of the IP
/// datagram inside `frame`.
pub fn tcp_csum(frame: &mut [u8], ip: usize, l4: usize, end: usize) {
    frame[l4 + 16] = 0;
    frame[l4 + 17] = 0;
    let len = (end - l4) as u32;
    let mut s = sum16(&frame[ip + 12..ip + 20]) + IPPROTO_TCP as u32 + len;
    s += sum16(&frame[l4..end]);
    let c = !fold(s);
    frame[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
}

/// Adds `words` (whose previous content was zero) to the checksum at `frame[at..at+2]`
/// (RFC 1624 incremental update).
pub fn csum_add(frame: &mut [u8], at: usize, added: u32) {
    let old = u16::from_be_bytes([frame[at], frame[at + 1]]);
    let c = !fold((!old) as u32 + added);
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Builds one frame of `len` bytes (without FCS; at least the headers) for `flow`.
/// UDP carries checksum 0 (allowed for IPv4); TCP carries a correct checksum over a zero payload.
pub fn build(flow: &Flow, vlan: Option<u16>, proto: Proto, len: usize, tcp_flags: u8) -> Vec<u8> {
    let lay = layout(vlan, proto);
    let len = len.max(lay.payload).max(60);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&flow.dst_mac);
    f[6..12].copy_from_slice(&flow.src_mac);
    if let Some(v) = vlan {
        f[12..14].copy_from_slice(&ETH_P_8021Q.to_be_bytes());
        f[14..16].copy_from_slice(&(v & 0x0fff).to_be_bytes());
    }
    f[lay.ip - 2..lay.ip].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
    let ip = lay.ip;
    // Handshake segments end at the TCP header (the rest is Ethernet padding).
    let dgram_end = if proto == Proto::Tcp && tcp_flags & (TCP_SYN | TCP_FIN) != 0 {
        lay.payload
    } else {
        len
    };
    let ip_len = (dgram_end - ip) as u16;
    f[ip] = 0x45;
    f[ip + 2..ip + 4].copy_from_slice(&ip_len.to_be_bytes());
    f[ip + 8] = 64; // TTL
    f[ip + 9] = if proto == Proto::Tcp {
        IPPROTO_TCP
    } else {
        IPPROTO_UDP
    };
    f[ip + 12..ip + 16].copy_from_slice(&flow.src_ip.octets());
    f[ip + 16..ip + 20].copy_from_slice(&flow.dst_ip.octets());
    ipv4_csum(&mut f, ip);
    let l4 = lay.l4;
    f[l4..l4 + 2].copy_from_slice(&flow.sport.to_be_bytes());
    f[l4 + 2..l4 + 4].copy_from_slice(&flow.dport.to_be_bytes());
    match proto {
        Proto::Udp => {
            let ulen = (len - l4) as u16;
            f[l4 + 4..l4 + 6].copy_from_slice(&ulen.to_be_bytes());
        }
        Proto::Tcp => {
            f[l4 + 4..l4 + 8].copy_from_slice(&1u32.to_be_bytes()); // seq
            f[l4 + 12] = 5 << 4; // data offset: 20 bytes
            f[l4 + 13] = tcp_flags;
            f[l4 + 14..l4 + 16].copy_from_slice(&65535u16.to_be_bytes()); // window
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
    let ip = lay.ip;
    frame[ip + 4..ip + 6].copy_from_slice(&STAMP_IP_ID.to_be_bytes());
    csum_add(frame, ip + 10, STAMP_IP_ID as u32);
    let p = lay.payload;
    frame[p..p + 4].copy_from_slice(&seq.to_le_bytes());
    frame[p + 4..p + 12].copy_from_slice(&tsc.to_le_bytes());
    if proto == Proto::Tcp {
        let added = sum16(&frame[p..p + STAMP_LEN]);
        csum_add(frame, lay.l4 + 16, added);
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

#[inline]
pub fn parse(d: &[u8]) -> Option<Parsed> {
    if d.len() < 34 {
        return None;
    }
    let mut et = u16::from_be_bytes([d[12], d[13]]);
    let mut ip = 14;
    while et == ETH_P_8021Q || et == 0x88a8 {
        if d.len() < ip + 4 + 20 {
            return None;
        }
        et = u16::from_be_bytes([d[ip + 2], d[ip + 3]]);
        ip += 4;
    }
    if et != ETH_P_IPV4 || d.len() < ip + 20 || d[ip] >> 4 != 4 {
        return None;
    }
    let ihl = ((d[ip] & 0x0f) as usize) * 4;
    let l4 = ip + ihl;
    let proto = d[ip + 9];
    let hl = match proto {
        IPPROTO_UDP => 8,
        IPPROTO_TCP => {
            if d.len() < l4 + 20 {
                return None;
            }
            ((d[l4 + 12] >> 4) as usize) * 4
        }
        _ => 0,
    };
    Some(Parsed {
        ip,
        l4,
        proto,
        payload: l4 + hl,
        ip_id: u16::from_be_bytes([d[ip + 4], d[ip + 5]]),
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
    if p.proto != IPPROTO_TCP {
        return false;
    }
    let (ip, l4) = (p.ip, p.l4);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&d[0..6]);
    d.copy_within(6..12, 0);
    d[6..12].copy_from_slice(&mac);
    let mut a = [0u8; 4];
    a.copy_from_slice(&d[ip + 12..ip + 16]);
    d.copy_within(ip + 16..ip + 20, ip + 12);
    d[ip + 16..ip + 20].copy_from_slice(&a);
    let mut port = [0u8; 2];
    port.copy_from_slice(&d[l4..l4 + 2]);
    d.copy_within(l4 + 2..l4 + 4, l4);
    d[l4 + 2..l4 + 4].copy_from_slice(&port);
    d[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
    d[l4 + 8..l4 + 12].copy_from_slice(&ack.to_be_bytes());
    d[l4 + 13] = flags;
    d[ip + 4] = 0;
    d[ip + 5] = 0;
    ipv4_csum(d, ip);
    let end = ip + u16::from_be_bytes([d[ip + 2], d[ip + 3]]) as usize;
    let end = end.min(d.len());
    tcp_csum(d, ip, l4, end);
    true
}

/// (flags, seq, ack) of a TCP segment.
pub fn tcp_fields(d: &[u8]) -> Option<(u8, u32, u32)> {
    let p = parse(d)?;
    if p.proto != IPPROTO_TCP {
        return None;
    }
    let l4 = p.l4;
    Some((
        d[l4 + 13],
        u32::from_be_bytes(d[l4 + 4..l4 + 8].try_into().ok()?),
        u32::from_be_bytes(d[l4 + 8..l4 + 12].try_into().ok()?),
    ))
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
        fold(sum16(&f[ip..ip + 20])) == 0xffff
    }

    fn verify_tcp(f: &[u8], ip: usize, l4: usize) -> bool {
        let end = ip + u16::from_be_bytes([f[ip + 2], f[ip + 3]]) as usize;
        let s = sum16(&f[ip + 12..ip + 20]) + 6 + (end - l4) as u32 + sum16(&f[l4..end]);
        fold(s) == 0xffff
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
        assert_eq!(&s[lay.ip + 12..lay.ip + 16], &[10, 0, 0, 2]);
    }
}
