//! TCP (RFC 9293) header: ports, sequence numbers, data offset, flags.

use super::ip::checksum;
use super::{read_u16, read_u32, write_u16, write_u32, Result, WireError};

mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DOFF_FLAGS: Range<usize> = 12..14;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
    pub const OPTIONS: usize = 20;
}

/// The header without options.
pub const HEADER_LEN: usize = field::OPTIONS;
/// Offset of the checksum in the header.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// The flag bits of the low byte.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// A view without checks: accessors panic if `buffer` is shorter than [`HEADER_LEN`].
    #[inline(always)]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// A view over a segment whose header, options included, is in `buffer`.
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let p = TcpPacket { buffer };
        if p.header_len() < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if p.buffer.as_ref().len() < p.header_len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// Both ports in one read: the source in the high half.
    #[inline(always)]
    pub fn ports(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::SRC_PORT.start..field::DST_PORT.end])
    }

    #[inline(always)]
    pub fn seq(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::SEQ])
    }

    #[inline(always)]
    pub fn ack(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::ACK])
    }

    /// Bytes of the header, options included (data offset × 4).
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        (self.buffer.as_ref()[field::DOFF_FLAGS.start] >> 4) as usize * 4
    }

    /// The 12 bits after the data offset: reserved bits, then NS, CWR, ECE, URG, ACK, PSH, RST,
    /// SYN, FIN (the flow key's `tcp_flags`).
    #[inline(always)]
    pub fn flags(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::DOFF_FLAGS]) & 0x0fff
    }

    #[inline(always)]
    pub fn window(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::WINDOW])
    }

    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Whether the checksum over the whole buffer (the segment) and the pseudo-header sum
    /// `pseudo` ([`checksum::pseudo_v4`] / [`checksum::pseudo_v6`]) is right.
    pub fn verify_checksum(&self, pseudo: u64) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref(), pseudo)) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let data: &'a [u8] = self.buffer.as_ref();
        &data[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        write_u16(&mut self.buffer.as_mut()[field::SRC_PORT], v);
    }

    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        write_u16(&mut self.buffer.as_mut()[field::DST_PORT], v);
    }

    #[inline]
    pub fn set_seq(&mut self, v: u32) {
        write_u32(&mut self.buffer.as_mut()[field::SEQ], v);
    }

    #[inline]
    pub fn set_ack(&mut self, v: u32) {
        write_u32(&mut self.buffer.as_mut()[field::ACK], v);
    }

    /// Sets the eight flag bits of the low byte (FIN to CWR).
    #[inline]
    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS] = f;
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], v);
    }

    /// Computes the checksum over the whole buffer (the segment) and the pseudo-header sum
    /// `pseudo`, and writes it.
    pub fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::sum(self.buffer.as_ref(), pseudo));
        self.set_checksum(c);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

/// An option-less TCP header's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// The low flag byte ([`flags`]).
    pub flags: u8,
    pub window: u16,
}

impl TcpRepr {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `p`, checksum 0 (see
    /// [`TcpPacket::fill_checksum`]).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut TcpPacket<T>) {
        let b = &mut p.buffer.as_mut()[..HEADER_LEN];
        write_u16(&mut b[field::SRC_PORT], self.src_port);
        write_u16(&mut b[field::DST_PORT], self.dst_port);
        write_u32(&mut b[field::SEQ], self.seq);
        write_u32(&mut b[field::ACK], self.ack);
        b[field::DOFF_FLAGS.start] = ((HEADER_LEN / 4) as u8) << 4;
        b[field::FLAGS] = self.flags;
        write_u16(&mut b[field::WINDOW], self.window);
        write_u16(&mut b[field::CHECKSUM], 0);
        write_u16(&mut b[field::URGENT], 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment() -> Vec<u8> {
        let mut b = vec![0x11; 24];
        TcpRepr {
            src_port: 1234,
            dst_port: 80,
            seq: 1000,
            ack: 1,
            flags: flags::SYN | flags::ACK,
            window: 65535,
        }
        .emit(&mut TcpPacket::new_unchecked(&mut b[..]));
        b
    }

    #[test]
    fn round_trip_and_checksum() {
        let mut b = segment();
        let pseudo = checksum::pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, b.len());
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.seq(), p.ack()),
            (1234, 80, 1000, 1)
        );
        assert_eq!((p.header_len(), p.flags(), p.window()), (20, 0x12, 65535));
        assert_eq!(p.payload_mut(), &[0x11; 4]);
        p.fill_checksum(pseudo);
        assert!(p.verify_checksum(pseudo));
        p.set_seq(7);
        assert!(!p.verify_checksum(pseudo));
    }

    #[test]
    fn every_truncation_and_bad_offsets() {
        let b = segment();
        for n in 0..20 {
            assert_eq!(
                TcpPacket::new_checked(&b[..n]).err(),
                Some(WireError::Truncated)
            );
        }
        let mut c = b.clone();
        c[12] = 0x40; // 16-byte header
        assert_eq!(
            TcpPacket::new_checked(&c[..]).err(),
            Some(WireError::Malformed)
        );
        c[12] = 0x70; // 28 bytes of header in a 24-byte buffer
        assert_eq!(
            TcpPacket::new_checked(&c[..]).err(),
            Some(WireError::Truncated)
        );
        c[12] = 0x60; // 24: options fill the buffer
        assert!(TcpPacket::new_checked(&c[..]).unwrap().payload().is_empty());
        // The flags are the 12 bits after the data offset.
        c[12] = 0x5f;
        c[13] = 0xff;
        assert_eq!(TcpPacket::new_checked(&c[..]).unwrap().flags(), 0x0fff);
    }
}
