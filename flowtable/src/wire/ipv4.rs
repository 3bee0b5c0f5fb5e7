//! IPv4 (RFC 791), options included (IHL), fragments recognised.

use super::ip::checksum;
use super::{read_u16, write_u16, Result, WireError};
use std::net::Ipv4Addr;

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
    pub const OPTIONS: usize = 20;
}

/// The header without options.
pub const HEADER_LEN: usize = field::OPTIONS;

const DONT_FRAGMENT: u16 = 0x4000;
const MORE_FRAGMENTS: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view without checks: accessors panic if `buffer` is shorter than [`HEADER_LEN`].
    #[inline(always)]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// A view over a whole datagram: version 4, a header of at least 20 bytes, a total length
    /// covering the header, and `buffer` holding the header and the total length (bytes after it,
    /// such as Ethernet padding, are allowed).
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_quoted(buffer)?;
        let (len, hl, total) = (
            p.buffer.as_ref().len(),
            p.header_len(),
            p.total_len() as usize,
        );
        if total < hl {
            return Err(WireError::Malformed);
        }
        if len < total || len < hl {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// A view over a header as an ICMP error quotes it: the fixed 20 bytes there, version 4 and
    /// IHL of at least 20 bytes, but options and payload possibly cut off (the total length is
    /// that of the original datagram).
    #[inline(always)]
    pub fn new_quoted(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let p = Ipv4Packet { buffer };
        // Almost every header is 0x45 (version 4, no options): one compare for those.
        let v = p.buffer.as_ref()[field::VER_IHL];
        if v != 0x45 && (p.version() != 4 || p.header_len() < HEADER_LEN) {
            return Err(WireError::Malformed);
        }
        Ok(p)
    }

    #[inline(always)]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Bytes of the header, options included (IHL × 4).
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) as usize * 4
    }

    #[inline(always)]
    pub fn total_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::TOTAL_LEN])
    }

    #[inline(always)]
    pub fn ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::IDENT])
    }

    #[inline(always)]
    fn flags_frag(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::FLAGS_FRAG])
    }

    #[inline(always)]
    pub fn dont_fragment(&self) -> bool {
        self.flags_frag() & DONT_FRAGMENT != 0
    }

    #[inline(always)]
    pub fn more_fragments(&self) -> bool {
        self.flags_frag() & MORE_FRAGMENTS != 0
    }

    /// Fragment offset, in 8-byte units.
    #[inline(always)]
    pub fn frag_offset(&self) -> u16 {
        self.flags_frag() & OFFSET_MASK
    }

    /// Any fragment, the first included (more fragments, or an offset).
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (MORE_FRAGMENTS | OFFSET_MASK) != 0
    }

    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline(always)]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    #[inline(always)]
    pub fn src(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    #[inline(always)]
    pub fn dst(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Whether the header checksum is right.
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        b.get(..self.header_len())
            .is_some_and(|h| checksum::fold(checksum::sum(h, 0)) == 0xffff)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The payload: from the end of the header to the total length, or as much of it as the
    /// buffer holds (all of it for a view made by [`Ipv4Packet::new_checked`]).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let data: &'a [u8] = self.buffer.as_ref();
        let b = data;
        let end = (self.total_len() as usize).min(b.len());
        b.get(self.header_len()..end).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        write_u16(&mut self.buffer.as_mut()[field::IDENT], v);
    }

    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        write_u16(&mut self.buffer.as_mut()[field::TOTAL_LEN], v);
    }

    /// Sets the fragment offset (8-byte units), keeping the flags.
    #[inline]
    pub fn set_frag_offset(&mut self, off: u16) {
        let v = (self.flags_frag() & !OFFSET_MASK) | (off & OFFSET_MASK);
        write_u16(&mut self.buffer.as_mut()[field::FLAGS_FRAG], v);
    }

    #[inline]
    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], v);
    }

    /// Recomputes the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::finish(checksum::sum(&self.buffer.as_ref()[..hl], 0));
        self.set_checksum(c);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let end = (self.total_len() as usize).min(self.buffer.as_ref().len());
        self.buffer.as_mut().get_mut(hl..end).unwrap_or(&mut [])
    }
}

/// An option-less IPv4 header's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Bytes after the header.
    pub payload_len: usize,
    pub ttl: u8,
    pub ident: u16,
    pub dont_fragment: bool,
}

impl Ipv4Repr {
    /// Writes the header, checksum included, into the first [`HEADER_LEN`] bytes of `p`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Ipv4Packet<T>) {
        let b = &mut p.buffer.as_mut()[..HEADER_LEN];
        b[field::VER_IHL] = 0x45;
        b[1] = 0;
        write_u16(
            &mut b[field::TOTAL_LEN],
            (HEADER_LEN + self.payload_len) as u16,
        );
        write_u16(&mut b[field::IDENT], self.ident);
        let flags = if self.dont_fragment { DONT_FRAGMENT } else { 0 };
        write_u16(&mut b[field::FLAGS_FRAG], flags);
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol;
        b[field::SRC].copy_from_slice(&self.src.octets());
        b[field::DST].copy_from_slice(&self.dst.octets());
        p.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::protocol;

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: protocol::UDP,
            payload_len: 8,
            ttl: 64,
            ident: 7,
            dont_fragment: true,
        }
    }

    fn datagram() -> Vec<u8> {
        let mut b = vec![0xab; 28];
        repr().emit(&mut Ipv4Packet::new_unchecked(&mut b[..]));
        b
    }

    #[test]
    fn round_trip() {
        let b = datagram();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.version(), p.header_len(), p.total_len()), (4, 20, 28));
        assert_eq!((p.src(), p.dst()), (repr().src, repr().dst));
        assert_eq!((p.protocol(), p.ttl(), p.ident()), (protocol::UDP, 64, 7));
        assert!(p.dont_fragment() && !p.more_fragments() && !p.is_fragment());
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &[0xab; 8]);
    }

    #[test]
    fn every_truncation_and_bad_length() {
        let b = datagram();
        for n in 0..b.len() {
            assert_eq!(
                Ipv4Packet::new_checked(&b[..n]).err(),
                Some(WireError::Truncated),
                "{n} bytes"
            );
        }
        // Trailing bytes (Ethernet padding) are fine.
        let mut padded = b.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(
            Ipv4Packet::new_checked(&padded[..])
                .unwrap()
                .payload()
                .len(),
            8
        );
        let bad = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut c = b.clone();
            edit(&mut c);
            Ipv4Packet::new_checked(&c[..]).err()
        };
        assert_eq!(bad(&|c| c[0] = 0x65), Some(WireError::Malformed)); // version 6
        assert_eq!(bad(&|c| c[0] = 0x44), Some(WireError::Malformed)); // IHL 16 bytes
        assert_eq!(bad(&|c| c[3] = 19), Some(WireError::Malformed)); // total < header
        assert_eq!(bad(&|c| c[3] = 40), Some(WireError::Truncated)); // total beyond the buffer
    }

    #[test]
    fn options_and_fragments() {
        // IHL 6: 4 bytes of options, total 28 = 24 + 4 bytes of payload.
        let mut b = datagram();
        b[0] = 0x46;
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.header_len(), p.payload().len()), (24, 4));
        b[0] = 0x48; // 32-byte header, longer than the total length
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(WireError::Malformed)
        );
        let mut f = datagram();
        f[6] = 0x20; // more fragments, offset 0: a first fragment
        let p = Ipv4Packet::new_checked(&f[..]).unwrap();
        assert!(p.is_fragment() && p.more_fragments() && p.frag_offset() == 0);
        f[6] = 0;
        Ipv4Packet::new_unchecked(&mut f[..]).set_frag_offset(16);
        let p = Ipv4Packet::new_checked(&f[..]).unwrap();
        assert!(p.is_fragment() && !p.more_fragments() && p.frag_offset() == 16);
    }

    #[test]
    fn quoted_headers_may_be_cut_short() {
        let b = datagram();
        let q = Ipv4Packet::new_quoted(&b[..20]).unwrap();
        assert_eq!((q.total_len(), q.payload()), (28, &[][..]));
        let mut opts = b[..20].to_vec();
        opts[0] = 0x4f; // 60-byte header, none of its options quoted
        assert!(Ipv4Packet::new_quoted(&opts[..])
            .unwrap()
            .payload()
            .is_empty());
        for n in 0..20 {
            assert!(Ipv4Packet::new_quoted(&b[..n]).is_err());
        }
    }

    #[test]
    fn setters_and_checksum() {
        let mut b = datagram();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_src(Ipv4Addr::new(192, 0, 2, 1));
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.src(), Ipv4Addr::new(192, 0, 2, 1));
    }
}
