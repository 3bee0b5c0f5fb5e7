//! VLAN tags (802.1Q, 802.1ad), and the outer-tag edits of the dataplane (push, pop, set).
//!
//! In a frame a tag is four bytes: the TPID, standing where the ethertype would be, then the TCI.
//! [`VlanTag`] views what follows the TPID (TCI, then the next ethertype), the way the parser
//! meets it walking from one ethertype to the next.

use super::ethernet::{ethertype, ETHERTYPE_OFFSET};
use super::{read_u16, write_u16, Result, WireError};
use std::ops::Range;

mod field {
    use std::ops::Range;
    pub const TCI: Range<usize> = 0..2;
    pub const ETHERTYPE: Range<usize> = 2..4;
    pub const PAYLOAD: usize = 4;
}

/// Bytes of a [`VlanTag`] view (TCI and the next ethertype), and bytes a tag adds to a frame.
pub const HEADER_LEN: usize = field::PAYLOAD;
pub const TAG_LEN: usize = 4;
pub const VID_MASK: u16 = 0x0fff;
/// Where the outer tag (TPID, TCI) of a frame sits: the bytes to remove to pop it, the place to
/// insert one to push it.
pub const OUTER_TAG: Range<usize> = ETHERTYPE_OFFSET..ETHERTYPE_OFFSET + TAG_LEN;
/// Most tags the switch reads (802.1ad outer + 802.1Q inner); frames with more are not forwarded.
pub const MAX_TAGS: usize = 2;

/// The TPIDs of 802.1Q and 802.1ad tags.
#[inline(always)]
pub fn is_tpid(t: u16) -> bool {
    t == ethertype::VLAN || t == ethertype::QINQ
}

/// The part of a VLAN tag after its TPID.
#[derive(Debug, Clone, Copy)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    #[inline(always)]
    pub const fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }

    /// A view over `buffer` (starting right after a TPID) if it holds the TCI and next ethertype.
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(VlanTag { buffer })
    }

    /// Priority (3 bits), drop eligible (1 bit), VLAN id (12 bits).
    #[inline(always)]
    pub fn tci(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::TCI])
    }

    #[inline(always)]
    pub fn vid(&self) -> u16 {
        self.tci() & VID_MASK
    }

    /// The ethertype after the tag (another TPID for a stacked tag).
    #[inline(always)]
    pub fn ethertype(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ETHERTYPE])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> VlanTag<&'a T> {
    #[inline(always)]
    pub fn payload(&self) -> &'a [u8] {
        let data: &'a [u8] = self.buffer.as_ref();
        &data[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        write_u16(&mut self.buffer.as_mut()[field::TCI], tci);
    }

    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        write_u16(&mut self.buffer.as_mut()[field::ETHERTYPE], t);
    }
}

/// A frame's outer tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterTag {
    pub tpid: u16,
    pub tci: u16,
}

impl OuterTag {
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci & VID_MASK
    }

    /// The four bytes of the tag as they sit in the frame at [`OUTER_TAG`].
    #[inline]
    pub fn to_bytes(&self) -> [u8; TAG_LEN] {
        let (t, c) = (self.tpid.to_be_bytes(), self.tci.to_be_bytes());
        [t[0], t[1], c[0], c[1]]
    }
}

/// The outer 802.1Q / 802.1ad tag of an Ethernet frame, if it has one: a tag TPID at offset 12
/// and the frame long enough for the tag and the ethertype after it (18 bytes). The bytes of the
/// tag are [`OUTER_TAG`].
///
/// This is what the VLAN edits act on (and what [`super::Layout::vlan`] reports), so the dataplane
/// can decide whether a copy needs an edit without reading the frame.
#[inline]
pub fn outer_tag(frame: &[u8]) -> Option<OuterTag> {
    let b = frame.get(..OUTER_TAG.end + 2)?;
    let tpid = read_u16(&b[OUTER_TAG.start..]);
    is_tpid(tpid).then(|| OuterTag {
        tpid,
        tci: read_u16(&b[OUTER_TAG.start + 2..]),
    })
}

/// Pushes an outer tag into a frame whose buffer just grew by [`TAG_LEN`] bytes at the front (an
/// mbuf prepend): moves the MAC addresses to the new front and writes the tag after them.
/// `frame` is the grown buffer; the original frame (from offset 4) must hold an Ethernet header.
pub fn push_in_headroom(frame: &mut [u8], tpid: u16, tci: u16) -> Result<()> {
    if frame.len() < TAG_LEN + super::ethernet::HEADER_LEN {
        return Err(WireError::Truncated);
    }
    frame.copy_within(TAG_LEN..TAG_LEN + OUTER_TAG.start, 0);
    frame[OUTER_TAG].copy_from_slice(&OuterTag { tpid, tci }.to_bytes());
    Ok(())
}

/// Pops the outer tag: moves the MAC addresses over it, so that the frame without the tag starts
/// [`TAG_LEN`] bytes in (the caller then drops the first [`TAG_LEN`] bytes: an mbuf adj).
/// Returns the tag removed; `Err` (and the frame unchanged) when it has no [`outer_tag`].
pub fn pop_to_headroom(frame: &mut [u8]) -> Result<OuterTag> {
    let tag = outer_tag(frame).ok_or(WireError::Malformed)?;
    frame.copy_within(0..OUTER_TAG.start, TAG_LEN);
    Ok(tag)
}

/// Gives the outer tag VLAN `vid`, keeping its priority and drop-eligible bits; `Err` (frame
/// unchanged) when the frame has no [`outer_tag`].
pub fn set_outer_vid(frame: &mut [u8], vid: u16) -> Result<()> {
    let tag = outer_tag(frame).ok_or(WireError::Malformed)?;
    let tci = (tag.tci & !VID_MASK) | (vid & VID_MASK);
    write_u16(&mut frame[OUTER_TAG.start + 2..], tci);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dst, src, 802.1Q tag VLAN 100 priority 5, IPv4.
    fn tagged() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        f.extend_from_slice(&[0x81, 0x00, 0xa0, 0x64, 0x08, 0x00, 0x45]);
        f
    }

    #[test]
    fn reads_a_tag_and_refuses_truncations() {
        let f = tagged();
        let t = VlanTag::new_checked(&f[14..]).unwrap();
        assert_eq!((t.tci(), t.vid(), t.ethertype()), (0xa064, 100, 0x0800));
        assert_eq!(t.payload(), &[0x45]);
        assert!(VlanTag::new_checked(&f[14..18]).is_ok());
        for n in 14..18 {
            assert_eq!(
                VlanTag::new_checked(&f[14..n]).err(),
                Some(WireError::Truncated)
            );
        }
        let mut b = [0u8; 4];
        let mut t = VlanTag::new_unchecked(&mut b[..]);
        t.set_tci(0x2005);
        t.set_ethertype(ethertype::IPV6);
        assert_eq!(b, [0x20, 0x05, 0x86, 0xdd]);
    }

    #[test]
    fn outer_tag_needs_a_tag_tpid_and_eighteen_bytes() {
        let f = tagged();
        let t = outer_tag(&f).unwrap();
        assert_eq!((t.tpid, t.tci, t.vid()), (0x8100, 0xa064, 100));
        assert_eq!(t.to_bytes(), f[OUTER_TAG]);
        assert!(outer_tag(&f[..18]).is_some());
        for n in 0..18 {
            assert_eq!(outer_tag(&f[..n]), None, "{n} bytes");
        }
        let mut ad = f.clone();
        ad[12..14].copy_from_slice(&ethertype::QINQ.to_be_bytes());
        assert_eq!(outer_tag(&ad).unwrap().tpid, ethertype::QINQ);
        for tpid in [ethertype::IPV4, ethertype::VLAN_LEGACY_QINQ, 0] {
            ad[12..14].copy_from_slice(&tpid.to_be_bytes());
            assert_eq!(outer_tag(&ad), None);
        }
    }

    #[test]
    fn push_pop_and_set_round_trip() {
        let f = tagged();
        // Pop: the frame from offset 4 is the untagged frame.
        let mut p = f.clone();
        assert_eq!(pop_to_headroom(&mut p).unwrap().vid(), 100);
        let untagged = p[TAG_LEN..].to_vec();
        assert_eq!(&untagged[..12], &f[..12]);
        assert_eq!(&untagged[12..], &f[16..]);
        assert_eq!(outer_tag(&untagged), None);
        let mut u = untagged.clone();
        assert_eq!(pop_to_headroom(&mut u), Err(WireError::Malformed));
        assert_eq!(set_outer_vid(&mut u, 7), Err(WireError::Malformed));
        assert_eq!(u, untagged);
        // Push it back, into four bytes of headroom.
        let mut g = vec![0u8; TAG_LEN];
        g.extend_from_slice(&untagged);
        push_in_headroom(&mut g, ethertype::VLAN, 0xa064).unwrap();
        assert_eq!(g, f);
        assert_eq!(
            push_in_headroom(&mut [0u8; 17], ethertype::VLAN, 1),
            Err(WireError::Truncated)
        );
        // Set keeps the priority bits.
        set_outer_vid(&mut g, 0xf07).unwrap();
        assert_eq!(outer_tag(&g).unwrap().tci, 0xaf07);
    }
}
