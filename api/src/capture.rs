//! Packet capture on the control socket: the one streaming answer of the protocol.
//!
//! A client sends [`crate::Request::Capture`] (a [`CaptureSpec`]) as its only request on a
//! connection. evsd answers with one JSON [`crate::Response`] line like any other request: an
//! error (unknown port, bad filter, the port already captured) ends the exchange there; on
//! success its `result` is a [`CaptureStarted`], and what follows on the connection is binary:
//!
//! ```text
//! chunk*  = u32 length (big endian, > 0), then `length` bytes of the pcap file
//! end     = u32 0, then one JSON line: a `CaptureEnded` (the counts, why it ended)
//! ```
//!
//! The chunks concatenated are a classic libpcap file (global header first, LINKTYPE_ETHERNET),
//! so a client copies them to a file or stdout as they come. Binary after a header rather than
//! JSON-framed base64: no encoding cost, and a `tcpdump -r -` reading from a pipe sees bytes as
//! soon as evsd has them. The client ends a capture by shutting down its writing side (evsd
//! then sends `end` and closes) or by closing the connection.

use serde::{Deserialize, Serialize};
use std::io::{self, Write};

/// Bytes of each frame kept unless told otherwise (tcpdump's default; evsd keeps at most what
/// the frame's first buffer holds).
pub const DEFAULT_SNAPLEN: u32 = 262_144;

/// Which frames of the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received from the port: what the guest sent, before any policy.
    In,
    /// Transmitted to the port: what the guest receives, after the VLAN edits.
    Out,
    #[default]
    Both,
}

impl Direction {
    pub fn rx(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
    pub fn tx(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }
}

fn default_snaplen() -> u32 {
    DEFAULT_SNAPLEN
}

/// What to capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    pub port: String,
    #[serde(default)]
    pub direction: Direction,
    /// The filter expression (evsd's small language, see the README's "Packet capture"); empty:
    /// every frame.
    #[serde(default)]
    pub filter: String,
    /// Stop after this many frames written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default = "default_snaplen")]
    pub snaplen: u32,
    /// Nanosecond timestamps (pcap magic 0xa1b23c4d) instead of microseconds.
    #[serde(default)]
    pub nanosecond: bool,
}

impl CaptureSpec {
    pub fn new(port: impl Into<String>) -> CaptureSpec {
        CaptureSpec {
            port: port.into(),
            direction: Direction::Both,
            filter: String::new(),
            count: None,
            snaplen: DEFAULT_SNAPLEN,
            nanosecond: false,
        }
    }
}

/// The `result` of the answer line of a capture that started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStarted {
    pub port: String,
    /// The snap length in force (the request's, at most what one buffer holds).
    pub snaplen: u32,
    /// The filter as evsd understood it (fully parenthesised), or empty.
    pub filter: String,
}

/// The last line of a capture.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CaptureEnded {
    /// Frames written to the client.
    pub captured: u64,
    /// Frames that matched but were lost because the capture ring was full (the client or the
    /// control thread did not keep up): tcpdump's "dropped by kernel".
    pub dropped: u64,
    /// Why it ended: "client", "count", or what the switch did (the port was detached).
    pub reason: String,
}

/// Writes one chunk of the pcap stream (nothing for an empty one: a zero length is the end).
pub fn write_chunk(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let len = u32::try_from(bytes.len()).map_err(|_| io::Error::other("chunk over 4 GiB"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(bytes)
}

/// Writes the end marker and the summary line.
pub fn write_end(w: &mut impl Write, end: &CaptureEnded) -> io::Result<()> {
    w.write_all(&0u32.to_be_bytes())?;
    let mut line = serde_json::to_string(end).map_err(io::Error::other)?;
    line.push('\n');
    w.write_all(line.as_bytes())?;
    w.flush()
}

/// One item of the stream after the answer line.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Bytes of the pcap file.
    Data(Vec<u8>),
    End(CaptureEnded),
}

/// Reads the next item; `Ok(None)` when the connection ended without an end marker (evsd went
/// away).
pub fn read_chunk(r: &mut impl io::BufRead) -> io::Result<Option<Chunk>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let end = serde_json::from_str(&line).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("capture summary: {e}"))
        })?;
        return Ok(Some(Chunk::End(end)));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(Some(Chunk::Data(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_and_the_end_round_trip() {
        let mut w = vec![];
        write_chunk(&mut w, b"abc").unwrap();
        write_chunk(&mut w, b"").unwrap();
        write_chunk(&mut w, &[7; 300]).unwrap();
        let end = CaptureEnded {
            captured: 2,
            dropped: 1,
            reason: "count".into(),
        };
        write_end(&mut w, &end).unwrap();
        let mut r = io::BufReader::new(&w[..]);
        assert_eq!(
            read_chunk(&mut r).unwrap(),
            Some(Chunk::Data(b"abc".to_vec()))
        );
        assert_eq!(read_chunk(&mut r).unwrap(), Some(Chunk::Data(vec![7; 300])));
        assert_eq!(read_chunk(&mut r).unwrap(), Some(Chunk::End(end)));
        assert_eq!(read_chunk(&mut r).unwrap(), None);
        // Cut inside a chunk: an error, not a short chunk.
        let mut r = io::BufReader::new(&w[..5]);
        assert!(read_chunk(&mut r).is_err());
    }

    #[test]
    fn spec_defaults() {
        let s: CaptureSpec = serde_json::from_str(r#"{"port":"p1"}"#).unwrap();
        assert_eq!(s, CaptureSpec::new("p1"));
        assert!(s.direction.rx() && s.direction.tx());
        let s: CaptureSpec = serde_json::from_str(r#"{"port":"p1","direction":"in"}"#).unwrap();
        assert!(s.direction.rx() && !s.direction.tx());
        assert!(serde_json::from_str::<CaptureSpec>(r#"{"port":"p","x":1}"#).is_err());
    }
}
