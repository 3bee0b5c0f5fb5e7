//! The 802.1AE (MACsec) SecTAG, read only far enough to step over it: the switch does not forward
//! MACsec, but the reference parser reads what an unencrypted SecTAG carries, and the flow key
//! must stay the same.

use super::{read_u16, Result, WireError};

mod field {
    pub const TCI_AN: usize = 0;
    pub const SHORT_LEN: usize = 1;
    /// Packet number: bytes 2..6; the optional SCI follows.
    pub const FIXED_END: usize = 6;
    pub const SCI_LEN: usize = 8;
}

const VERSION: u8 = 0x80;
const SCI_PRESENT: u8 = 0x20;
/// Encrypted (E) and changed-text (C) bits: with either set, the user data is not readable.
const MODIFIED: u8 = 0x0c;
const SHORT_LEN_MASK: u8 = 0x3f;

/// A SecTAG, with the ethertype of the user data when that is sent in the clear.
#[derive(Debug, Clone, Copy)]
pub struct SecTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SecTag<T> {
    /// A view over `buffer` (starting after the 0x88e5 ethertype) if it holds the whole SecTAG
    /// (and, for unmodified user data, its ethertype), the version is 0, and the short length,
    /// if any, fits in `buffer`.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < field::FIXED_END {
            return Err(WireError::Truncated);
        }
        let t = SecTag { buffer };
        let tci = t.tci_an();
        if tci & VERSION != 0 || (t.is_unmodified() && t.short_len() == 1) {
            return Err(WireError::Malformed);
        }
        let b = t.buffer.as_ref();
        if b.len() < t.header_len() || b.len() < t.header_len() + t.payload_len().unwrap_or(0) {
            return Err(WireError::Truncated);
        }
        Ok(t)
    }

    #[inline]
    fn tci_an(&self) -> u8 {
        self.buffer.as_ref()[field::TCI_AN]
    }

    #[inline]
    pub fn short_len(&self) -> u8 {
        self.buffer.as_ref()[field::SHORT_LEN] & SHORT_LEN_MASK
    }

    #[inline]
    pub fn sci_present(&self) -> bool {
        self.tci_an() & SCI_PRESENT != 0
    }

    /// Neither encrypted nor changed: the user data, ethertype first, is in the clear.
    #[inline]
    pub fn is_unmodified(&self) -> bool {
        self.tci_an() & MODIFIED == 0
    }

    /// The SecTAG, plus the user data's ethertype when unmodified.
    #[inline]
    pub fn header_len(&self) -> usize {
        field::FIXED_END
            + if self.sci_present() {
                field::SCI_LEN
            } else {
                0
            }
            + if self.is_unmodified() { 2 } else { 0 }
    }

    /// The ethertype of unmodified user data.
    #[inline]
    pub fn next_ethertype(&self) -> Option<u16> {
        let at = self.header_len() - 2;
        self.is_unmodified()
            .then(|| read_u16(&self.buffer.as_ref()[at..at + 2]))
    }

    /// Bytes after [`SecTag::header_len`] when the short length gives them (frames under 64
    /// bytes); its count includes the ethertype of unmodified data. `None`: up to the buffer's
    /// end.
    #[inline]
    pub fn payload_len(&self) -> Option<usize> {
        let sl = self.short_len() as usize;
        match sl {
            0 => None,
            _ if !self.is_unmodified() => Some(sl),
            _ => sl.checked_sub(2),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> SecTag<&'a T> {
    pub fn payload(&self) -> &'a [u8] {
        let data: &'a [u8] = self.buffer.as_ref();
        let b = &data[self.header_len()..];
        match self.payload_len() {
            Some(n) => &b[..n],
            None => b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmodified_with_and_without_sci() {
        let plain = [0x00, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0x00];
        let t = SecTag::new_checked(&plain[..]).unwrap();
        assert_eq!(t.header_len(), 8);
        assert_eq!(t.next_ethertype(), Some(0x0800));
        assert_eq!(t.payload(), &[0x45, 0x00]);
        let mut sci = vec![0x20, 0, 0, 0, 0, 1];
        sci.extend_from_slice(&[9; 8]);
        sci.extend_from_slice(&[0x86, 0xdd, 1, 2, 3]);
        let t = SecTag::new_checked(&sci[..]).unwrap();
        assert_eq!((t.header_len(), t.next_ethertype()), (16, Some(0x86dd)));
        assert_eq!(t.payload(), &[1, 2, 3]);
        for n in 0..16 {
            assert_eq!(
                SecTag::new_checked(&sci[..n]).err(),
                Some(WireError::Truncated)
            );
        }
    }

    #[test]
    fn modified_short_length_and_bad_fields() {
        let enc = [0x0c, 3, 0, 0, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd];
        let t = SecTag::new_checked(&enc[..]).unwrap();
        assert_eq!((t.header_len(), t.next_ethertype()), (6, None));
        assert_eq!(t.payload(), &[0xaa, 0xbb, 0xcc]);
        assert_eq!(
            SecTag::new_checked(&enc[..8]).err(),
            Some(WireError::Truncated)
        );
        // Unmodified, short length 4: the ethertype and two bytes.
        let sl = [0x00, 4, 0, 0, 0, 1, 0x08, 0x00, 1, 2, 3];
        assert_eq!(SecTag::new_checked(&sl[..]).unwrap().payload(), &[1, 2]);
        let v1 = [0x80, 0, 0, 0, 0, 1, 8, 0];
        assert_eq!(
            SecTag::new_checked(&v1[..]).err(),
            Some(WireError::Malformed)
        );
        let sl1 = [0x00, 1, 0, 0, 0, 1, 8, 0];
        assert_eq!(
            SecTag::new_checked(&sl1[..]).err(),
            Some(WireError::Malformed)
        );
    }
}
