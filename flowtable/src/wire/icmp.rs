//! ICMP (RFC 792) and ICMPv6 (RFC 4443): both start with type, code, checksum and four bytes
//! whose meaning depends on the type (identifier and sequence number for echoes).

use super::ip::checksum;
use super::{read_u16, write_u16, Result, WireError};

mod field {
    use std::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQ: Range<usize> = 6..8;
    pub const PAYLOAD: usize = 8;
}

pub const HEADER_LEN: usize = field::PAYLOAD;

/// ICMPv4 message types.
pub mod v4 {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const TIMESTAMP: u8 = 13;
    pub const TIMESTAMP_REPLY: u8 = 14;
    /// A timestamp request or reply is exactly this long.
    pub const TIMESTAMP_LEN: usize = 20;
}

/// ICMPv6 message types.
pub mod v6 {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
}

/// An ICMP or ICMPv6 message.
#[derive(Debug, Clone, Copy)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    #[inline(always)]
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// A view if `buffer` holds the 8-byte header.
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(IcmpPacket { buffer })
    }

    #[inline(always)]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    #[inline(always)]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The identifier of an echo request or reply.
    #[inline(always)]
    pub fn echo_ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ECHO_IDENT])
    }

    #[inline(always)]
    pub fn echo_seq(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ECHO_SEQ])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> IcmpPacket<&'a T> {
    /// After the header: the echo data, or the packet an error quotes.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let data: &'a [u8] = self.buffer.as_ref();
        &data[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    #[inline]
    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    /// Computes the checksum over the whole buffer (the message) and `pseudo` (0 for ICMPv4,
    /// [`checksum::pseudo_v6`] for ICMPv6), and writes it.
    pub fn fill_checksum(&mut self, pseudo: u64) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], 0);
        let c = checksum::finish(checksum::sum(self.buffer.as_ref(), pseudo));
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], c);
    }
}

/// Type and identifier of a quoted echo message, from its first six bytes (an ICMP error may
/// quote fewer than the eight of the header).
#[inline]
pub fn quoted_echo(msg: &[u8]) -> Option<(u8, u16)> {
    let b = msg.get(..field::ECHO_IDENT.end)?;
    Some((b[field::TYPE], read_u16(&b[field::ECHO_IDENT])))
}

/// An echo request or reply's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpEchoRepr {
    /// [`v4::ECHO_REQUEST`], [`v6::ECHO_REPLY`]...
    pub msg_type: u8,
    pub ident: u16,
    pub seq: u16,
}

impl IcmpEchoRepr {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `p`, checksum 0 (see
    /// [`IcmpPacket::fill_checksum`]).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut IcmpPacket<T>) {
        let b = &mut p.buffer.as_mut()[..HEADER_LEN];
        b[field::TYPE] = self.msg_type;
        b[field::CODE] = 0;
        write_u16(&mut b[field::CHECKSUM], 0);
        write_u16(&mut b[field::ECHO_IDENT], self.ident);
        write_u16(&mut b[field::ECHO_SEQ], self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_round_trip_and_checksum() {
        let mut b = vec![0x33; 12];
        let mut p = IcmpPacket::new_unchecked(&mut b[..]);
        IcmpEchoRepr {
            msg_type: v4::ECHO_REQUEST,
            ident: 7,
            seq: 1,
        }
        .emit(&mut p);
        p.fill_checksum(0);
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.code(), p.echo_ident(), p.echo_seq()),
            (8, 0, 7, 1)
        );
        assert_eq!(p.payload(), &[0x33; 4]);
        assert_eq!(checksum::fold(checksum::sum(&b, 0)), 0xffff);
        assert_eq!(quoted_echo(&b[..6]), Some((8, 7)));
        assert_eq!(quoted_echo(&b[..5]), None);
    }

    #[test]
    fn every_truncation() {
        let b = [3u8, 3, 0, 0, 0, 0, 0, 0];
        assert!(IcmpPacket::new_checked(&b[..])
            .unwrap()
            .payload()
            .is_empty());
        for n in 0..8 {
            assert_eq!(
                IcmpPacket::new_checked(&b[..n]).err(),
                Some(WireError::Truncated)
            );
        }
    }
}
