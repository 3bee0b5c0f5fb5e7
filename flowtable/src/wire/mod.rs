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

/// Where the headers of a parsed frame start, recorded by [`crate::parse::parse_with_layout`].
///
/// Offsets are from the start of the frame. `u16` holds any offset of a frame the parser reads
/// headers from (the largest is an IPv6 extension-header chain, bounded by the IPv6 payload
/// length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Layout {
    /// Offset of the network header (ARP, IPv4, IPv6, or whatever the final ethertype announces),
    /// after the Ethernet header and the VLAN tags: 14, 18 or 22 for the frames the switch
    /// forwards. 0 for a frame shorter than an Ethernet header.
    pub l3: u16,
    /// Offset of the transport header (TCP, UDP, ICMP, ICMPv6) the flow key's port / type fields
    /// were read from; `None` when the key has none (ARP, fragments, other protocols, malformed).
    pub l4: Option<u16>,
    /// VLAN id of the frame's outer 802.1Q / 802.1ad tag as the VLAN edits see it
    /// ([`vlan::outer_tag`]); `None` when untagged.
    ///
    /// This is not always the flow key's `vlan()`: the key also takes the pre-standard 0x9100 TPID
    /// for a tag (as etherparse, the reference parser, does), the VLAN edits of the dataplane do
    /// not.
    pub vlan: Option<u16>,
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
