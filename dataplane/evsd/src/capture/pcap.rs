//! The classic libpcap file format (what `tcpdump -w` writes and every tool reads): a 24-byte
//! global header, then per frame a 16-byte record header and the captured bytes. Written in the
//! host's byte order, as libpcap does; readers tell the order from the magic number.

/// Ethernet frames, as they are on the port.
pub const LINKTYPE_ETHERNET: u32 = 1;
const MAGIC_USEC: u32 = 0xa1b2_c3d4;
const MAGIC_NSEC: u32 = 0xa1b2_3c4d;

/// Appends pcap headers and records to a byte buffer (the caller sends it on).
#[derive(Debug, Clone, Copy)]
pub struct PcapWriter {
    nanosecond: bool,
}

impl PcapWriter {
    pub fn new(nanosecond: bool) -> PcapWriter {
        PcapWriter { nanosecond }
    }

    /// The global header: version 2.4, UTC, `snaplen`, Ethernet.
    pub fn header(&self, out: &mut Vec<u8>, snaplen: u32) {
        let magic = if self.nanosecond {
            MAGIC_NSEC
        } else {
            MAGIC_USEC
        };
        out.extend(magic.to_ne_bytes());
        out.extend(2u16.to_ne_bytes());
        out.extend(4u16.to_ne_bytes());
        out.extend(0i32.to_ne_bytes()); // thiszone
        out.extend(0u32.to_ne_bytes()); // sigfigs
        out.extend(snaplen.to_ne_bytes());
        out.extend(LINKTYPE_ETHERNET.to_ne_bytes());
    }

    /// One frame seen at `unix_ns` (nanoseconds since the epoch), `orig_len` bytes long on the
    /// wire, of which `data` was kept.
    pub fn record(&self, out: &mut Vec<u8>, unix_ns: u64, orig_len: u32, data: &[u8]) {
        let sec = (unix_ns / 1_000_000_000) as u32;
        let frac = (unix_ns % 1_000_000_000) as u32;
        let frac = if self.nanosecond { frac } else { frac / 1000 };
        out.extend(sec.to_ne_bytes());
        out.extend(frac.to_ne_bytes());
        out.extend((data.len() as u32).to_ne_bytes());
        out.extend(orig_len.max(data.len() as u32).to_ne_bytes());
        out.extend_from_slice(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn header_and_records_are_libpcap_layout() {
        let w = PcapWriter::new(false);
        let mut out = vec![];
        w.header(&mut out, 96);
        assert_eq!(out.len(), 24);
        assert_eq!(u32_at(&out, 0), 0xa1b2c3d4);
        assert_eq!(
            &out[4..8],
            &[2u16.to_ne_bytes(), 4u16.to_ne_bytes()].concat()[..]
        );
        assert_eq!((u32_at(&out, 16), u32_at(&out, 20)), (96, 1));
        w.record(&mut out, 1_700_000_000_123_456_789, 100, &[0xab; 60]);
        let r = &out[24..];
        assert_eq!(r.len(), 16 + 60);
        assert_eq!(u32_at(r, 0), 1_700_000_000);
        assert_eq!(u32_at(r, 4), 123_456, "microseconds");
        assert_eq!((u32_at(r, 8), u32_at(r, 12)), (60, 100));
        assert_eq!(&r[16..], &[0xab; 60]);

        let w = PcapWriter::new(true);
        let mut out = vec![];
        w.header(&mut out, 96);
        assert_eq!(u32_at(&out, 0), 0xa1b23c4d);
        w.record(&mut out, 1_700_000_000_123_456_789, 10, &[1; 10]);
        assert_eq!(u32_at(&out[24..], 4), 123_456_789, "nanoseconds");
    }
}
