//! IPv6 (RFC 8200) and its fragment header; the chaining of the other extension headers is
//! [`super::ip::ExtHeader`].

use super::{read_u16, write_u16, Result, WireError};
use std::net::Ipv6Addr;

mod field {
    use std::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
    pub const PAYLOAD: usize = 40;
}

pub const HEADER_LEN: usize = field::PAYLOAD;
pub const FRAGMENT_HEADER_LEN: usize = 8;

#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// A view without checks: accessors panic if `buffer` is shorter than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// A view over a whole packet: version 6 and `buffer` holding the header and the payload
    /// length (more is allowed). A payload length of 0 (RFC 2675 jumbograms) takes the rest of
    /// the buffer for the payload.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_quoted(buffer)?;
        if p.buffer.as_ref().len() < HEADER_LEN + p.payload_len() as usize {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// A view over a header as an ICMPv6 error quotes it: the 40 bytes there and version 6, the
    /// payload possibly cut off.
    #[inline]
    pub fn new_quoted(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let p = Ipv6Packet { buffer };
        if p.version() != 6 {
            return Err(WireError::Malformed);
        }
        Ok(p)
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::PAYLOAD_LEN])
    }

    /// The first extension header's kind, or the transport protocol.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        let b: [u8; 16] = self.buffer.as_ref()[field::SRC]
            .try_into()
            .unwrap_or([0; 16]);
        Ipv6Addr::from(b)
    }

    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        let b: [u8; 16] = self.buffer.as_ref()[field::DST]
            .try_into()
            .unwrap_or([0; 16]);
        Ipv6Addr::from(b)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6Packet<&'a T> {
    /// The payload (extension headers first): the payload length's worth (the rest of the buffer
    /// for a length of 0), or as much of it as the buffer holds.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let data: &'a [u8] = self.buffer.as_ref();
        let b = &data[field::PAYLOAD..];
        match self.payload_len() as usize {
            0 => b,
            n => &b[..n.min(b.len())],
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    #[inline]
    pub fn set_src(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_dst(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let n = self.payload_len() as usize;
        let b = &mut self.buffer.as_mut()[field::PAYLOAD..];
        let n = if n == 0 { b.len() } else { n.min(b.len()) };
        &mut b[..n]
    }
}

/// An IPv6 header's meaning (traffic class and flow label 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub payload_len: usize,
    pub hop_limit: u8,
}

impl Ipv6Repr {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `p`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Ipv6Packet<T>) {
        let b = &mut p.buffer.as_mut()[..HEADER_LEN];
        b[field::VER_TC_FLOW].copy_from_slice(&[0x60, 0, 0, 0]);
        write_u16(&mut b[field::PAYLOAD_LEN], self.payload_len as u16);
        b[field::NEXT_HEADER] = self.next_header;
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::SRC].copy_from_slice(&self.src.octets());
        b[field::DST].copy_from_slice(&self.dst.octets());
    }
}

/// The fragment header: next header, offset, more-fragments flag.
#[derive(Debug, Clone, Copy)]
pub struct FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> FragmentHeader<T> {
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < FRAGMENT_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(FragmentHeader { buffer })
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The offset (13 bits, in 8-byte units), two reserved bits and the more-fragments flag.
    #[inline]
    pub fn offset_and_flags(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[2..4])
    }

    #[inline]
    pub fn frag_offset(&self) -> u16 {
        self.offset_and_flags() >> 3
    }

    #[inline]
    pub fn more_fragments(&self) -> bool {
        self.offset_and_flags() & 1 != 0
    }

    /// Any fragment, the first included (a header with offset 0 and no more fragments is an
    /// "atomic fragment": the whole packet).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.frag_offset() != 0 || self.more_fragments()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::protocol;

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            next_header: protocol::UDP,
            payload_len: 8,
            hop_limit: 64,
        }
    }

    fn packet() -> Vec<u8> {
        let mut b = vec![0xcd; 48];
        repr().emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
        b
    }

    #[test]
    fn round_trip() {
        let b = packet();
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.version(), p.payload_len(), p.next_header()), (6, 8, 17));
        assert_eq!(
            (p.src(), p.dst(), p.hop_limit()),
            (repr().src, repr().dst, 64)
        );
        assert_eq!(p.payload(), &[0xcd; 8]);
    }

    #[test]
    fn every_truncation_and_bad_version() {
        let b = packet();
        for n in 0..b.len() {
            assert_eq!(
                Ipv6Packet::new_checked(&b[..n]).err(),
                Some(WireError::Truncated),
                "{n} bytes"
            );
        }
        let mut v4 = b.clone();
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&v4[..]).err(),
            Some(WireError::Malformed)
        );
        // A quoted header: the payload may be missing.
        assert!(Ipv6Packet::new_quoted(&b[..40])
            .unwrap()
            .payload()
            .is_empty());
        assert!(Ipv6Packet::new_quoted(&b[..39]).is_err());
    }

    #[test]
    fn zero_payload_length_takes_the_rest() {
        let mut b = packet();
        b[4..6].copy_from_slice(&[0, 0]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
        assert!(Ipv6Packet::new_checked(&b[..40])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn fragment_header() {
        let h = [protocol::UDP, 0, 0x00, 0x81, 0, 0, 0, 1];
        let f = FragmentHeader::new_checked(&h[..]).unwrap();
        assert_eq!(
            (f.next_header(), f.frag_offset(), f.more_fragments()),
            (17, 16, true)
        );
        assert!(f.is_fragment());
        let atomic = [protocol::UDP, 0, 0, 0, 0, 0, 0, 1];
        assert!(!FragmentHeader::new_checked(&atomic[..])
            .unwrap()
            .is_fragment());
        assert!(FragmentHeader::new_checked(&h[..7]).is_err());
    }
}
