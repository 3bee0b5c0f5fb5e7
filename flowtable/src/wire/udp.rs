//! UDP (RFC 768).

use super::ip::checksum;
use super::{read_u16, read_u32, write_u16, Result, WireError};

mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const PAYLOAD: usize = 8;
}

pub const HEADER_LEN: usize = field::PAYLOAD;

#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    #[inline(always)]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// A view over a datagram: the header in `buffer`, and a length field of 0 (RFC 2675
    /// jumbograms: the rest of the buffer) or from 8 to the buffer's length.
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let p = UdpPacket { buffer };
        let n = p.len() as usize;
        if n > p.buffer.as_ref().len() {
            return Err(WireError::Truncated);
        }
        if n != 0 && n < HEADER_LEN {
            return Err(WireError::Malformed);
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

    /// The length field: header and payload.
    #[inline(always)]
    pub fn len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len() as usize <= HEADER_LEN
    }

    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    /// The payload, up to the length field (the rest of the buffer for a length of 0).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let data: &'a [u8] = self.buffer.as_ref();
        let b = data;
        let end = match self.len() as usize {
            0 => b.len(),
            n => n.min(b.len()),
        };
        b.get(HEADER_LEN..end).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        write_u16(&mut self.buffer.as_mut()[field::SRC_PORT], v);
    }

    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        write_u16(&mut self.buffer.as_mut()[field::DST_PORT], v);
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], v);
    }

    /// Computes the checksum over the datagram (up to the length field) and the pseudo-header
    /// sum `pseudo`, and writes it; a computed 0 is sent as 0xffff (0 means "no checksum").
    pub fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let n = (self.len() as usize).min(self.buffer.as_ref().len());
        let c = match checksum::finish(checksum::sum(&self.buffer.as_ref()[..n], pseudo)) {
            0 => 0xffff,
            c => c,
        };
        self.set_checksum(c);
    }

    /// The payload, up to the length field (the rest of the buffer for a length of 0).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.buffer.as_ref().len();
        let end = match self.len() as usize {
            0 => len,
            n => n.min(len),
        };
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or(&mut [])
    }
}

/// A UDP header's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl UdpRepr {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `p`, checksum 0 (none; see
    /// [`UdpPacket::fill_checksum`]).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut UdpPacket<T>) {
        let b = &mut p.buffer.as_mut()[..HEADER_LEN];
        write_u16(&mut b[field::SRC_PORT], self.src_port);
        write_u16(&mut b[field::DST_PORT], self.dst_port);
        write_u16(
            &mut b[field::LENGTH],
            (HEADER_LEN + self.payload_len) as u16,
        );
        write_u16(&mut b[field::CHECKSUM], 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram() -> Vec<u8> {
        let mut b = vec![0x22; 12];
        UdpRepr {
            src_port: 5000,
            dst_port: 53,
            payload_len: 4,
        }
        .emit(&mut UdpPacket::new_unchecked(&mut b[..]));
        b
    }

    #[test]
    fn round_trip_and_checksum() {
        let mut b = datagram();
        b.extend_from_slice(&[0; 2]); // padding after the datagram
        let pseudo = checksum::pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 17, 12);
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (5000, 53, 12));
        assert_eq!(p.payload_mut(), &[0x22; 4]);
        p.fill_checksum(pseudo);
        assert_ne!(p.checksum(), 0);
        assert_eq!(
            checksum::fold(checksum::sum(&b[..12], pseudo)),
            0xffff,
            "checksum covers the datagram, not the padding"
        );
    }

    #[test]
    fn every_truncation_and_bad_length() {
        let b = datagram();
        for n in 0..b.len() {
            assert_eq!(
                UdpPacket::new_checked(&b[..n]).err(),
                Some(WireError::Truncated),
                "{n} bytes"
            );
        }
        let mut c = b.clone();
        c[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&c[..]).err(),
            Some(WireError::Malformed)
        );
        c[5] = 0; // no length: up to the end
        assert_eq!(UdpPacket::new_checked(&c[..]).unwrap().payload().len(), 4);
        c[5] = 8;
        assert!(UdpPacket::new_checked(&c[..]).unwrap().is_empty());
    }
}
