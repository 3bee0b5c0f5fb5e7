//! Typed views over packet bytes: the one place that knows where header fields sit.
//!
//! Each header has a view, `Header<T: AsRef<[u8]>>`, in the manner of smoltcp's `wire`:
//! `new_checked` verifies the buffer once, after which every accessor is panic-free (reads stay
//! within the verified length, so the compiler drops the bounds checks once the view is inlined).
//! Setters exist for `T: AsMut<[u8]>`. `new_unchecked` is for buffers the caller sized itself
//! (emitting); its accessors panic on a short buffer. `*Repr` types hold a header's meaning and
//! `emit` it into bytes.
//!
//! Views check what the header itself says about lengths; policy (which frames the switch takes,
//! what the reference parser tolerates) stays with their users: [`crate::parse`],
//! [`crate::checksum`], conntrack.
//!
//! The parser records where it found each header in a [`Layout`], carried per packet in
//! [`crate::verdict::PacketResult`], so no later stage walks the headers again.
//!
//! For the dataplane's transmit side: `PacketResult::layout.vlan()` is what the frame's outer
//! tag says ([`vlan::outer_tag`]: an 802.1Q / 802.1ad TPID at offset 12, 18 bytes at least), so
//! it decides whether a copy needs a VLAN edit without reading the frame; the edits themselves
//! are [`vlan::push_in_headroom`] (after an mbuf prepend of [`vlan::TAG_LEN`] bytes),
//! [`vlan::pop_to_headroom`] (then an mbuf adj of [`vlan::TAG_LEN`]) and
//! [`vlan::set_outer_vid`], all on [`vlan::OUTER_TAG`]. After such an edit the network header
//! moved by ±[`vlan::TAG_LEN`] from `layout.l3()`, which
//! [`crate::checksum::fill_tcp_checksum_at`] takes.

pub mod arp;
pub mod ethernet;
pub mod icmp;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod macsec;
pub mod tcp;
pub mod udp;
pub mod vlan;

pub use arp::{ArpPacket, ArpRepr};
pub use ethernet::{EthernetFrame, EthernetRepr};
pub use icmp::{IcmpEchoRepr, IcmpPacket};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use tcp::{TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};
pub use vlan::VlanTag;

/// Why a buffer is not a header of the kind asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer ends before the header (or before the length the header states).
    Truncated,
    /// A field has a value the header cannot have (version, a length below the minimum).
    Malformed,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated header",
            WireError::Malformed => "malformed header",
        })
    }
}

impl std::error::Error for WireError {}

pub type Result<T> = std::result::Result<T, WireError>;

/// Where the headers of a parsed frame start, recorded by [`crate::parse::parse_with_layout`], and
/// the frame's outer VLAN.
///
/// Offsets are from the start of the frame; `u16` holds any offset of a frame the parser reads
/// headers from (the largest is an IPv6 extension-header chain, bounded by the IPv6 payload
/// length). Six bytes, so that it travels in a register with every packet: the absent values are
/// encodings (a transport offset of 0, a VLAN field without its tagged bit), the accessors give
/// `Option`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Layout {
    l3: u16,
    l4: u16,
    vlan: u16,
}

impl Layout {
    /// Bit of the VLAN field saying the frame is tagged (VLAN ids are 12 bits).
    const TAGGED: u16 = 0x8000;

    /// `l4` must not be `Some(0)` (a transport header never starts a frame).
    #[inline(always)]
    pub const fn new(l3: u16, l4: Option<u16>, vlan: Option<u16>) -> Layout {
        Layout {
            l3,
            l4: match l4 {
                Some(o) => o,
                None => 0,
            },
            vlan: match vlan {
                Some(v) => Self::TAGGED | (v & vlan::VID_MASK),
                None => 0,
            },
        }
    }

    /// [`Layout::new`] from the encoded VLAN field (`Layout::vlan_bits`), which the parser
    /// keeps while it walks the tags.
    #[inline(always)]
    pub(crate) const fn from_parts(l3: u16, l4: Option<u16>, vlan_bits: u16) -> Layout {
        let mut l = Layout::new(l3, l4, None);
        l.vlan = vlan_bits;
        l
    }

    /// The encoded VLAN field for an outer tag of VLAN `vid`.
    #[inline(always)]
    pub(crate) const fn vlan_bits(vid: u16) -> u16 {
        Self::TAGGED | (vid & vlan::VID_MASK)
    }

    /// Offset of the network header (ARP, IPv4, IPv6, or whatever the final ethertype
    /// announces), after the Ethernet header and the VLAN tags: 14, 18 or 22 for the frames the
    /// switch forwards. 0 for a frame shorter than an Ethernet header.
    #[inline(always)]
    pub const fn l3(&self) -> u16 {
        self.l3
    }

    /// Offset of the transport header (TCP, UDP, ICMP, ICMPv6) the flow key's port / type fields
    /// were read from; `None` when the key has none (ARP, fragments, other protocols, malformed).
    #[inline(always)]
    pub const fn l4(&self) -> Option<u16> {
        match self.l4 {
            0 => None,
            o => Some(o),
        }
    }

    /// VLAN id of the frame's outer 802.1Q / 802.1ad tag as the VLAN edits see it
    /// ([`vlan::outer_tag`]); `None` when untagged.
    ///
    /// This is not always the flow key's `vlan()`: the key also takes the pre-standard 0x9100 TPID
    /// for a tag (as etherparse, the reference parser, does), the VLAN edits of the dataplane do
    /// not.
    #[inline(always)]
    pub const fn vlan(&self) -> Option<u16> {
        if self.vlan & Self::TAGGED != 0 {
            Some(self.vlan & vlan::VID_MASK)
        } else {
            None
        }
    }

    /// The frame from its network header on.
    #[inline]
    pub fn l3_bytes<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame.get(self.l3 as usize..).unwrap_or(&[])
    }

    /// The frame from its transport header on; empty when it has none.
    #[inline]
    pub fn l4_bytes<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        match self.l4() {
            Some(at) => frame.get(at as usize..).unwrap_or(&[]),
            None => &[],
        }
    }
}

/// Reads a big-endian `u16` from a two-byte slice (the length is known where it is called, so the
/// compiler drops the bounds checks).
#[inline(always)]
fn read_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[inline(always)]
fn read_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[inline(always)]
fn write_u16(b: &mut [u8], v: u16) {
    b[..2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
fn write_u32(b: &mut [u8], v: u32) {
    b[..4].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips_its_options() {
        let l = Layout::new(18, Some(38), Some(100));
        assert_eq!((l.l3(), l.l4(), l.vlan()), (18, Some(38), Some(100)));
        let u = Layout::new(14, None, None);
        assert_eq!((u.l3(), u.l4(), u.vlan()), (14, None, None));
        assert_eq!(Layout::new(14, None, Some(0)).vlan(), Some(0));
        assert_eq!(Layout::default(), Layout::new(0, None, None));
        let f = [1u8, 2, 3, 4];
        assert_eq!(Layout::new(1, Some(3), None).l4_bytes(&f), &[4]);
        assert_eq!(Layout::new(1, Some(9), None).l4_bytes(&f), &[] as &[u8]);
        assert_eq!(u.l4_bytes(&f), &[] as &[u8]);
        assert_eq!(Layout::new(1, None, None).l3_bytes(&f), &[2, 3, 4]);
        assert_eq!(std::mem::size_of::<Layout>(), 6);
    }
}
