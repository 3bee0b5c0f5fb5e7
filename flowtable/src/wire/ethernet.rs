//! Ethernet II: destination, source, ethertype.

use super::{read_u16, write_u16, Result, WireError};
use model::Mac;

/// Ethertypes the switch knows.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const IPV6: u16 = 0x86dd;
    /// An 802.1Q (customer) VLAN tag follows.
    pub const VLAN: u16 = 0x8100;
    /// An 802.1ad (service, "QinQ") VLAN tag follows.
    pub const QINQ: u16 = 0x88a8;
    /// The pre-standard QinQ TPID: only etherparse's reading, kept by the reference-compatible
    /// parse path, takes it for a tag.
    pub const VLAN_LEGACY_QINQ: u16 = 0x9100;
    /// An 802.1AE (MACsec) SecTAG follows.
    pub const MACSEC: u16 = 0x88e5;
}

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: usize = 14;
}

pub const HEADER_LEN: usize = field::PAYLOAD;
/// Offset of the ethertype (or of the TPID of a first VLAN tag).
pub const ETHERTYPE_OFFSET: usize = field::ETHERTYPE.start;

/// The ethertype announcing the header at `l3` (the Ethernet header's, or the last tag's: the
/// two bytes before `l3`), for a frame whose network header offset is known.
#[inline]
pub fn ethertype_before(frame: &[u8], l3: usize) -> Option<u16> {
    let b = frame.get(l3.checked_sub(2)?..l3)?;
    Some(read_u16(b))
}

/// An Ethernet II frame.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// A view without checks: accessors panic if `buffer` is shorter than [`HEADER_LEN`].
    #[inline(always)]
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// A view over `buffer` if it holds at least the 14-byte header.
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(EthernetFrame { buffer })
    }

    #[inline(always)]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline(always)]
    pub fn dst(&self) -> Mac {
        let b = &self.buffer.as_ref()[field::DST];
        Mac([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    #[inline(always)]
    pub fn src(&self) -> Mac {
        let b = &self.buffer.as_ref()[field::SRC];
        Mac([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// The destination in its integer form ([`Mac::to_u64`]), read as one 8-byte word (the
    /// header is longer than that).
    #[inline(always)]
    pub fn dst_u64(&self) -> u64 {
        Self::word(&self.buffer.as_ref()[field::DST.start..]) >> 16
    }

    /// The source in its integer form ([`Mac::to_u64`]), read as one 8-byte word.
    #[inline(always)]
    pub fn src_u64(&self) -> u64 {
        Self::word(&self.buffer.as_ref()[field::SRC.start..]) >> 16
    }

    #[inline(always)]
    fn word(b: &[u8]) -> u64 {
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// The ethertype field: the payload's type, or the TPID of a first VLAN tag.
    #[inline(always)]
    pub fn ethertype(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ETHERTYPE])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetFrame<&'a T> {
    /// Everything after the header (tags included, FCS if the buffer has one).
    #[inline(always)]
    pub fn payload(&self) -> &'a [u8] {
        let data: &'a [u8] = self.buffer.as_ref();
        &data[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst(&mut self, m: Mac) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m.0);
    }

    #[inline]
    pub fn set_src(&mut self, m: Mac) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m.0);
    }

    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        write_u16(&mut self.buffer.as_mut()[field::ETHERTYPE], t);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// An Ethernet header's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub src: Mac,
    pub dst: Mac,
    pub ethertype: u16,
}

impl EthernetRepr {
    pub fn parse<T: AsRef<[u8]>>(f: &EthernetFrame<T>) -> EthernetRepr {
        EthernetRepr {
            src: f.src(),
            dst: f.dst(),
            ethertype: f.ethertype(),
        }
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `f`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, f: &mut EthernetFrame<T>) {
        f.set_dst(self.dst);
        f.set_src(self.src);
        f.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 16] = [
        2, 0, 0, 0, 0, 2, // dst
        2, 0, 0, 0, 0, 1, // src
        0x08, 0x00, // IPv4
        0xaa, 0xbb,
    ];

    #[test]
    fn reads_a_frame() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst(), Mac([2, 0, 0, 0, 0, 2]));
        assert_eq!(f.src(), Mac([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.dst_u64(), f.dst().to_u64());
        assert_eq!(f.src_u64(), f.src().to_u64());
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
        let r = EthernetRepr::parse(&f);
        let mut out = [0u8; 16];
        r.emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
        assert_eq!(out[..14], FRAME[..14]);
    }

    #[test]
    fn header_only_is_fine_and_every_truncation_is_refused() {
        assert!(EthernetFrame::new_checked(&FRAME[..14])
            .unwrap()
            .payload()
            .is_empty());
        for n in 0..14 {
            assert_eq!(
                EthernetFrame::new_checked(&FRAME[..n]).err(),
                Some(WireError::Truncated)
            );
        }
    }

    #[test]
    fn ethertype_before_a_header() {
        assert_eq!(ethertype_before(&FRAME, 14), Some(ethertype::IPV4));
        assert_eq!(ethertype_before(&FRAME, 16), Some(0xaabb));
        assert_eq!(ethertype_before(&FRAME, 17), None);
        assert_eq!(ethertype_before(&FRAME, 1), None);
    }

    #[test]
    fn setters_write_fields() {
        let mut b = [0u8; 14];
        let mut f = EthernetFrame::new_checked(&mut b[..]).unwrap();
        f.set_dst(Mac::BROADCAST);
        f.set_src(Mac([1, 2, 3, 4, 5, 6]));
        f.set_ethertype(ethertype::ARP);
        assert_eq!(b, [255, 255, 255, 255, 255, 255, 1, 2, 3, 4, 5, 6, 8, 6]);
    }
}
