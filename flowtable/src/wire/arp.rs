//! ARP (RFC 826). The view takes any address sizes, as the header declares them; the switch only
//! makes sense of Ethernet / IPv4 ([`ArpPacket::is_ethernet_ipv4`], [`ArpRepr`]).

use super::ethernet::ethertype;
use super::{read_u16, write_u16, Result, WireError};
use model::Mac;
use std::net::Ipv4Addr;

mod field {
    use std::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    /// Sender hardware address, sender protocol address, target hardware, target protocol.
    pub const ADDRS: usize = 8;
}

pub const HTYPE_ETHERNET: u16 = 1;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;
/// An Ethernet / IPv4 ARP packet.
pub const ETHERNET_IPV4_LEN: usize = field::ADDRS + 2 * (6 + 4);

#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// A view over `buffer` if it holds the fixed part and the four addresses of the sizes the
    /// packet declares.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < field::ADDRS {
            return Err(WireError::Truncated);
        }
        let p = ArpPacket { buffer };
        if p.buffer.as_ref().len() < p.packet_len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    #[inline]
    pub fn hardware_type(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::HTYPE])
    }
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::PTYPE])
    }
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }
    #[inline]
    pub fn operation(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::OPER])
    }

    /// Bytes of the packet: the fixed part and the four addresses.
    #[inline]
    pub fn packet_len(&self) -> usize {
        field::ADDRS + 2 * (self.hardware_len() as usize + self.protocol_len() as usize)
    }

    /// Ethernet hardware addresses and IPv4 protocol addresses, the only kind the switch reads.
    #[inline]
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.hardware_type() == HTYPE_ETHERNET
            && self.protocol_type() == ethertype::IPV4
            && self.hardware_len() == 6
            && self.protocol_len() == 4
    }

    /// The addresses follow the fixed part in this order: sender hardware, sender protocol,
    /// target hardware, target protocol.
    fn addr(&self, nth: usize) -> &[u8] {
        let (h, p) = (self.hardware_len() as usize, self.protocol_len() as usize);
        let (start, len) = match nth {
            0 => (0, h),
            1 => (h, p),
            2 => (h + p, h),
            _ => (2 * h + p, p),
        };
        &self.buffer.as_ref()[field::ADDRS + start..][..len]
    }
    pub fn sender_hardware_addr(&self) -> &[u8] {
        self.addr(0)
    }
    pub fn sender_protocol_addr(&self) -> &[u8] {
        self.addr(1)
    }
    pub fn target_hardware_addr(&self) -> &[u8] {
        self.addr(2)
    }
    pub fn target_protocol_addr(&self) -> &[u8] {
        self.addr(3)
    }
}

/// An Ethernet / IPv4 ARP packet's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// `None` unless the packet is Ethernet / IPv4.
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Option<ArpRepr> {
        if !p.is_ethernet_ipv4() {
            return None;
        }
        let mac = |b: &[u8]| Mac([b[0], b[1], b[2], b[3], b[4], b[5]]);
        let ip = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
        Some(ArpRepr {
            operation: p.operation(),
            sender_mac: mac(p.sender_hardware_addr()),
            sender_ip: ip(p.sender_protocol_addr()),
            target_mac: mac(p.target_hardware_addr()),
            target_ip: ip(p.target_protocol_addr()),
        })
    }

    /// Writes the packet into the first [`ETHERNET_IPV4_LEN`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..ETHERNET_IPV4_LEN];
        write_u16(&mut b[field::HTYPE], HTYPE_ETHERNET);
        write_u16(&mut b[field::PTYPE], ethertype::IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        write_u16(&mut b[field::OPER], self.operation);
        b[8..14].copy_from_slice(&self.sender_mac.0);
        b[14..18].copy_from_slice(&self.sender_ip.octets());
        b[18..24].copy_from_slice(&self.target_mac.0);
        b[24..28].copy_from_slice(&self.target_ip.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ArpRepr {
        ArpRepr {
            operation: OP_REQUEST,
            sender_mac: Mac([2, 0, 0, 0, 0, 1]),
            sender_ip: Ipv4Addr::new(10, 0, 0, 1),
            target_mac: Mac::ZERO,
            target_ip: Ipv4Addr::new(10, 0, 0, 2),
        }
    }

    #[test]
    fn round_trip_and_truncations() {
        let mut b = [0u8; ETHERNET_IPV4_LEN];
        request().emit(&mut b);
        assert_eq!(&b[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert!(p.is_ethernet_ipv4());
        assert_eq!(p.packet_len(), 28);
        assert_eq!(ArpRepr::parse(&p), Some(request()));
        for n in 0..ETHERNET_IPV4_LEN {
            assert_eq!(
                ArpPacket::new_checked(&b[..n]).err(),
                Some(WireError::Truncated)
            );
        }
    }

    #[test]
    fn other_address_sizes_are_read_but_not_understood() {
        // Hardware addresses of 2 bytes, protocol addresses of 1: 8 + 2 * 3 bytes.
        let b = [0, 6, 8, 0, 2, 1, 0, 2, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf];
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert!(!p.is_ethernet_ipv4());
        assert_eq!(ArpRepr::parse(&p), None);
        assert_eq!(p.sender_hardware_addr(), &[0xa, 0xb]);
        assert_eq!(p.sender_protocol_addr(), &[0xc]);
        assert_eq!(p.target_hardware_addr(), &[0xd, 0xe]);
        assert_eq!(p.target_protocol_addr(), &[0xf]);
        assert!(ArpPacket::new_checked(&b[..13]).is_err());
        // Sizes of 255 need 8 + 1020 bytes.
        let big = [0, 1, 8, 0, 255, 255, 0, 1, 0, 0];
        assert_eq!(
            ArpPacket::new_checked(&big[..]).err(),
            Some(WireError::Truncated)
        );
    }
}
