//! What IPv4 and IPv6 share: protocol numbers, the chaining fields of extension headers (IPv6's,
//! and the authentication header IPv4 can carry too), the Internet checksum, and the ports that
//! TCP and UDP both start with.

use super::{read_u16, Result, WireError};

/// IP protocol / IPv6 next-header numbers.
pub mod protocol {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    /// Authentication header (RFC 4302).
    pub const AUTH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const DEST_OPTS: u8 = 60;
}

/// An authentication header holds at least next header, length, reserved, SPI, sequence number.
pub const AUTH_MIN_LEN: usize = 12;

/// The two bytes every IPv6 extension header (and the authentication header) starts with: the
/// next header, and the header's length in units that depend on its kind.
#[derive(Debug, Clone, Copy)]
pub struct ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ExtHeader<T> {
    /// A view if `buffer` holds the two chaining bytes; whether the whole header is there (see
    /// [`ExtHeader::header_len`]) is for the caller to require or not.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < 2 {
            return Err(WireError::Truncated);
        }
        Ok(ExtHeader { buffer })
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The raw length field.
    #[inline]
    pub fn len_field(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// Bytes of the header when it is of kind `kind` (the protocol number that announced it):
    /// 4-byte units minus 2 for the authentication header, fixed for the fragment header, 8-byte
    /// units minus 1 for the others.
    #[inline]
    pub fn header_len(&self, kind: u8) -> usize {
        let n = self.len_field() as usize;
        match kind {
            protocol::AUTH => (n + 2) * 4,
            protocol::FRAGMENT => super::ipv6::FRAGMENT_HEADER_LEN,
            _ => (n + 1) * 8,
        }
    }

    /// Whether `kind` is an IPv6 extension header (or the authentication header) that chains on.
    #[inline]
    pub fn is_ext(kind: u8) -> bool {
        matches!(
            kind,
            protocol::HOP_BY_HOP
                | protocol::ROUTING
                | protocol::FRAGMENT
                | protocol::AUTH
                | protocol::DEST_OPTS
        )
    }
}

/// Source and destination port of a TCP or UDP header, from its first four bytes: enough for the
/// headers ICMP errors quote, which may be cut short.
#[inline]
pub fn ports(l4: &[u8]) -> Option<(u16, u16)> {
    let b = l4.get(..4)?;
    Some((read_u16(&b[0..2]), read_u16(&b[2..4])))
}

/// The Internet checksum (RFC 1071): sums of big-endian 16-bit words, folded and inverted.
pub mod checksum {
    /// Adds the 16-bit words of `data` to `acc` (an odd last byte is padded with zero).
    #[inline]
    pub fn sum(data: &[u8], mut acc: u64) -> u64 {
        let mut words = data.chunks_exact(2);
        for w in &mut words {
            acc += u16::from_be_bytes([w[0], w[1]]) as u64;
        }
        if let [b] = words.remainder() {
            acc += (*b as u64) << 8;
        }
        acc
    }

    /// The ones'-complement sum `acc` folded to 16 bits.
    #[inline]
    pub fn fold(mut acc: u64) -> u16 {
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    /// The checksum field's value for the sum `acc`.
    #[inline]
    pub fn finish(acc: u64) -> u16 {
        !fold(acc)
    }

    /// The IPv4 pseudo-header of a transport checksum.
    #[inline]
    pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u64 {
        sum(&dst, sum(&src, 0)) + proto as u64 + len as u64
    }

    /// The IPv6 pseudo-header of a transport checksum.
    #[inline]
    pub fn pseudo_v6(src: [u8; 16], dst: [u8; 16], proto: u8, len: usize) -> u64 {
        sum(&dst, sum(&src, 0)) + proto as u64 + len as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_header_lengths_by_kind() {
        let b = [protocol::TCP, 2, 0, 0];
        let e = ExtHeader::new_checked(&b[..]).unwrap();
        assert_eq!(e.next_header(), protocol::TCP);
        assert_eq!(e.header_len(protocol::DEST_OPTS), 24);
        assert_eq!(e.header_len(protocol::HOP_BY_HOP), 24);
        assert_eq!(e.header_len(protocol::AUTH), 16);
        assert_eq!(e.header_len(protocol::FRAGMENT), 8);
        assert!(ExtHeader::new_checked(&b[..1]).is_err());
        assert!(ExtHeader::new_checked(&b[..0]).is_err());
        assert!(ExtHeader::<&[u8]>::is_ext(protocol::AUTH));
        assert!(!ExtHeader::<&[u8]>::is_ext(protocol::TCP));
    }

    #[test]
    fn ports_need_four_bytes() {
        assert_eq!(ports(&[0, 80, 0x13, 0x88, 9]), Some((80, 5000)));
        assert_eq!(ports(&[0, 80, 0x13]), None);
    }

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum::fold(checksum::sum(&d, 0)), 0xddf2);
        assert_eq!(checksum::finish(checksum::sum(&d, 0)), !0xddf2);
        assert_eq!(checksum::sum(&[1], 0), 0x100);
    }
}
