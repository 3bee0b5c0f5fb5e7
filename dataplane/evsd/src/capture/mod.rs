//! Packet capture (`evsd ctl capture`): copies of a port's frames, as pcap, to a client of the
//! control socket.
//!
//! Three parties:
//! - the **connection thread** of the client (see [`serve`]) builds a [`Session`]: the parsed
//!   filter and a pool of [`RING_SLOTS`] preallocated frame buffers. It drains the session
//!   into pcap chunks on the socket, and when the client is done or gone it marks the session
//!   closed and waits until nobody else holds it, so that no buffer is freed anywhere else;
//! - the **control loop** ([`crate::switchd::Dataplane::capture_start`]) checks the port and hands
//!   every forwarding thread a [`Tap`] on it (a `Command`, like plan updates), and takes the
//!   taps back once the session is closed (`capture_reap`, each tick of the loop);
//! - each **forwarding thread** keeps its taps in [`Taps`]. With none, the loop's whole cost is
//!   one test of a thread-local flag per received burst and per transmit flush. With taps, for
//!   each frame of a tapped port and direction it evaluates the filter and copies the frame (up
//!   to the snap length) into a free buffer; with no free buffer, the frame is counted as
//!   dropped and not captured. No allocation, lock or system call (see [`Session::offer`]).
//!
//! The filter runs on the forwarding thread rather than on the draining side: a narrow filter
//! on a busy port then fills the ring only with frames the operator asked for, so the dropped
//! count means "matching frames lost", as tcpdump's does, and a slow client cannot lose the one
//! interesting frame among a million others. Parsing costs the capturing thread about what the
//! flowtable's own parse does (the same parser), and only while someone captures.

pub mod filter;
pub mod pcap;

use crate::control::{self, Call};
use crate::port::{Burst, Packet, TxBuffer};
use api::capture::{self as wire, CaptureEnded, CaptureSpec, CaptureStarted, DEFAULT_SNAPLEN};
use crossbeam_channel::{Receiver, Sender};
use filter::Filter;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Frame buffers of one capture: at 1500-byte frames, a few milliseconds of a busy port, which
/// covers the drain thread's polling interval many times over.
pub const RING_SLOTS: usize = 4096;
/// Bytes a buffer holds: an mbuf's whole data room (2048) and headroom (128), which bounds what
/// the first segment of a frame can hold, VLAN tag pushed or not.
pub const SLOT_BYTES: usize = 2176;
/// Captures at once over the whole switch (each thread's tap list is preallocated to this).
pub const MAX_CAPTURES: usize = 16;
/// How long the drain thread sleeps when the ring is empty: the latency of a captured frame.
const POLL: Duration = Duration::from_millis(2);
/// pcap bytes gathered before a chunk goes to the client.
const CHUNK: usize = 64 * 1024;

/// One captured frame.
#[derive(Debug)]
struct Slot {
    /// When it was seen, on the forwarding threads' TSC clock.
    ns: u64,
    orig_len: u32,
    /// Preallocated to the capture's snap length: filling it never allocates.
    data: Vec<u8>,
}

/// One capture: what to keep and the buffers it goes into.
///
/// The two queues are crossbeam's bounded (array) channels, lock-free MPMC rings, used only
/// with `try_send`/`try_recv`: nobody ever blocks on them, so a send never has a sleeping
/// receiver to wake (that would be a lock and a system call on the forwarding thread). Several
/// forwarding threads feed one session (every thread transmits to every port); the connection
/// thread is the only consumer. Both have room for every slot, so a send cannot fail.
#[derive(Debug)]
pub struct Session {
    id: u64,
    pub spec: CaptureSpec,
    pub filter: Filter,
    /// Bytes kept per frame: the snap length, at most [`SLOT_BYTES`].
    caplen: usize,
    free_tx: Sender<Slot>,
    free_rx: Receiver<Slot>,
    full_tx: Sender<Slot>,
    full_rx: Receiver<Slot>,
    /// Matching frames lost for want of a free buffer.
    dropped: AtomicU64,
    /// Unix time minus TSC time, in ns (set by the control loop, which has the clock).
    epoch_offset_ns: AtomicU64,
    /// The client is done or gone: the control loop takes the taps back.
    closed: AtomicBool,
    /// Why the switch ended the capture (the port was detached), for the summary.
    ended: Mutex<Option<String>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Session {
    /// Parses the filter and allocates the buffers (on the connection thread: neither the
    /// control loop nor a forwarding thread spends time on it).
    pub fn new(spec: CaptureSpec) -> Result<Session, String> {
        let filter = Filter::parse(&spec.filter).map_err(|e| format!("capture: {e}"))?;
        // 0 means "the default", as for tcpdump -s 0.
        let snaplen = if spec.snaplen == 0 {
            DEFAULT_SNAPLEN
        } else {
            spec.snaplen
        };
        let caplen = (snaplen as usize).min(SLOT_BYTES);
        let (free_tx, free_rx) = crossbeam_channel::bounded(RING_SLOTS);
        let (full_tx, full_rx) = crossbeam_channel::bounded(RING_SLOTS);
        for _ in 0..RING_SLOTS {
            let s = Slot {
                ns: 0,
                orig_len: 0,
                data: Vec::with_capacity(caplen),
            };
            free_tx.try_send(s).map_err(|_| "capture: ring setup")?;
        }
        Ok(Session {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            spec,
            filter,
            caplen,
            free_tx,
            free_rx,
            full_tx,
            full_rx,
            dropped: AtomicU64::new(0),
            epoch_offset_ns: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            ended: Mutex::new(None),
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn snaplen(&self) -> u32 {
        self.caplen as u32
    }

    pub fn started(&self) -> CaptureStarted {
        CaptureStarted {
            port: self.spec.port.clone(),
            snaplen: self.snaplen(),
            filter: self.filter.to_string(),
        }
    }

    /// Where the TSC clock of the timestamps is in Unix time.
    pub fn set_clock(&self, tsc_now_ns: u64) {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        self.epoch_offset_ns
            .store(unix.wrapping_sub(tsc_now_ns), Ordering::Relaxed);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The switch ends the capture (the client gets `why` in its summary).
    pub fn end(&self, why: impl Into<String>) {
        let mut e = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        e.get_or_insert(why.into());
    }

    fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The frames captured so far, taken out of the ring (tests of the taps).
    #[cfg(test)]
    pub fn take_frames(&self) -> Vec<Vec<u8>> {
        let mut out = vec![];
        while let Ok(s) = self.full_rx.try_recv() {
            out.push(s.data.clone());
            let _ = self.free_tx.try_send(s);
        }
        out
    }

    /// On a forwarding thread: keeps a copy of `frame` (`pkt_len` long in all) if it matches.
    #[inline]
    fn offer(&self, port: u32, frame: &[u8], pkt_len: u32, now_ns: u64) {
        if !self.filter.is_all() && !self.filter.matches(&flowtable::parse::parse(port, frame)) {
            return;
        }
        let Ok(mut s) = self.free_rx.try_recv() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let n = frame.len().min(self.caplen);
        s.ns = now_ns;
        s.orig_len = pkt_len;
        s.data.clear();
        // Within the capacity reserved at setup: no allocation.
        s.data.extend_from_slice(&frame[..n]);
        // Cannot fail: the queue has room for every slot there is.
        let _ = self.full_tx.try_send(s);
    }
}

/// A session's tap on one port, as a forwarding thread holds it.
#[derive(Debug)]
pub struct Tap {
    pub flow_id: u32,
    pub session: Arc<Session>,
}

/// What the control loop tells a forwarding thread about captures.
#[derive(Debug)]
pub enum TapCmd {
    Add(Tap),
    /// Drop the taps of this session (the thread's reference goes; the connection thread
    /// still holds the session, so nothing is freed on the forwarding thread).
    Remove(u64),
}

/// A forwarding thread's taps. `any_rx`/`any_tx` are the flags the loop tests (thread-local
/// plain bools: not even an atomic load when nobody captures).
#[derive(Debug)]
pub struct Taps {
    taps: Vec<Tap>,
    pub any_rx: bool,
    pub any_tx: bool,
    /// The loop's clock of this iteration, for the transmit side's records.
    pub now_ns: u64,
}

impl Default for Taps {
    fn default() -> Taps {
        Taps {
            taps: Vec::with_capacity(MAX_CAPTURES),
            any_rx: false,
            any_tx: false,
            now_ns: 0,
        }
    }
}

impl Taps {
    /// Applies `c`; returns the port of a tap added on the transmit side (its queued packets
    /// have not been seen by it yet).
    pub fn apply(&mut self, c: TapCmd) -> Option<u32> {
        let mut added_tx = None;
        match c {
            TapCmd::Add(t) => {
                if t.session.spec.direction.tx() {
                    added_tx = Some(t.flow_id);
                }
                self.taps.push(t);
            }
            TapCmd::Remove(id) => self.taps.retain(|t| t.session.id != id),
        }
        self.any_rx = self.taps.iter().any(|t| t.session.spec.direction.rx());
        self.any_tx = self.taps.iter().any(|t| t.session.spec.direction.tx());
        added_tx
    }

    /// Whether `port` is tapped on its transmit side.
    #[inline]
    pub fn tx_on(&self, port: u32) -> bool {
        self.any_tx
            && self
                .taps
                .iter()
                .any(|t| t.flow_id == port && t.session.spec.direction.tx())
    }

    /// The frames of a burst received on `port`, as they arrived.
    #[cold]
    #[inline(never)]
    pub fn rx<P: Packet>(&self, port: u32, burst: &Burst<P>, now_ns: u64) {
        for t in &self.taps {
            if t.flow_id != port || !t.session.spec.direction.rx() {
                continue;
            }
            for i in 0..burst.len() {
                if let Some(d) = burst.data(i) {
                    t.session.offer(port, d, burst.pkt_len(i), now_ns);
                }
            }
        }
    }

    /// The packets `from..` of a buffer about to be handed to `port`'s queue.
    #[cold]
    #[inline(never)]
    pub fn tx<P: Packet>(&self, port: u32, buf: &TxBuffer<P>, from: usize) {
        for t in &self.taps {
            if t.flow_id != port || !t.session.spec.direction.tx() {
                continue;
            }
            for i in from..buf.len() {
                if let Some(p) = buf.get(i) {
                    t.session.offer(port, p.data(), p.pkt_len(), self.now_ns);
                }
            }
        }
    }
}

/// The captures in force, on the control loop.
#[derive(Debug, Default)]
pub struct Captures {
    live: Vec<Tap>,
}

impl Captures {
    /// Checks that `s` may start on `port` (flowtable id `flow_id`) and records it; returns the
    /// tap to hand to every forwarding thread.
    pub fn add(&mut self, port: &str, flow_id: u32, s: &Arc<Session>) -> Result<(), String> {
        if self.live.iter().any(|t| t.flow_id == flow_id) {
            return Err(format!(
                "capture {port:?}: the port is already being captured (one capture per port; \
                 end the other one first)"
            ));
        }
        if self.live.len() >= MAX_CAPTURES {
            return Err(format!(
                "capture {port:?}: {MAX_CAPTURES} captures are running already"
            ));
        }
        self.live.push(Tap {
            flow_id,
            session: s.clone(),
        });
        Ok(())
    }

    /// Sessions whose client is done: removed here; the caller tells the threads.
    pub fn take_closed(&mut self) -> Vec<u64> {
        let mut out = vec![];
        self.live.retain(|t| {
            let closed = t.session.is_closed();
            if closed {
                out.push(t.session.id);
            }
            !closed
        });
        out
    }

    /// Ends the captures on `flow_id` (the port is going away).
    pub fn end_port(&self, flow_id: u32, why: &str) {
        for t in self.live.iter().filter(|t| t.flow_id == flow_id) {
            t.session.end(why);
        }
    }
}

/// Serves a capture request on its connection (its last request): the answer line, then the
/// pcap stream until the client stops, `count` frames, or the switch ends it; then the summary.
pub fn serve(spec: CaptureSpec, calls: &crossbeam_channel::Sender<Call>, sock: &UnixStream) {
    let Ok(w) = sock.try_clone() else { return };
    let mut w = std::io::BufWriter::new(w);
    let answer = |w: &mut std::io::BufWriter<UnixStream>, r: &api::Response| {
        let mut out = serde_json::to_string(r).unwrap_or_else(|_| "{\"ok\":false}".into());
        out.push('\n');
        let _ = w.write_all(out.as_bytes()).and_then(|_| w.flush());
    };
    let session = match Session::new(spec.clone()) {
        Ok(s) => Arc::new(s),
        Err(e) => return answer(&mut w, &api::Response::err(e)),
    };
    let r = control::call_with(calls, api::Request::Capture(spec), Some(session.clone()));
    answer(&mut w, &r);
    if !r.ok {
        return;
    }
    // The client says "stop" by shutting down its side: a thread waits for that end of file.
    let stop = Arc::new(AtomicBool::new(false));
    if let Ok(mut r) = sock.try_clone() {
        let stop = stop.clone();
        let _ = std::thread::Builder::new()
            .name("evs-capture-eof".into())
            .spawn(move || {
                let mut b = [0u8; 64];
                while matches!(r.read(&mut b), Ok(n) if n > 0) {}
                stop.store(true, Ordering::Release);
            });
    }
    let end = drain(&session, &mut w, &stop);
    let _ = wire::write_end(&mut w, &end);
    let _ = sock.shutdown(std::net::Shutdown::Both);
}

/// Streams the session to `w` until it ends; then closes it, waits for the switch to let go,
/// and streams what was still on its way. Returns the summary.
fn drain(session: &Arc<Session>, w: &mut impl Write, stop: &AtomicBool) -> CaptureEnded {
    let pw = pcap::PcapWriter::new(session.spec.nanosecond);
    let mut buf = Vec::with_capacity(CHUNK + SLOT_BYTES + 16);
    pw.header(&mut buf, session.snaplen());
    let limit = session.spec.count.unwrap_or(u64::MAX);
    let mut captured = 0u64;
    let mut gone = false;
    // Moves what the ring holds into pcap chunks; false once the client cannot be written to.
    let mut pump = |captured: &mut u64, buf: &mut Vec<u8>| -> (usize, bool) {
        let offset = session.epoch_offset_ns.load(Ordering::Relaxed);
        let mut n = 0;
        while *captured < limit {
            let Ok(s) = session.full_rx.try_recv() else {
                break;
            };
            pw.record(buf, s.ns.wrapping_add(offset), s.orig_len, &s.data);
            let _ = session.free_tx.try_send(s);
            *captured += 1;
            n += 1;
            if buf.len() >= CHUNK {
                if wire::write_chunk(w, buf).is_err() {
                    return (n, false);
                }
                buf.clear();
            }
        }
        let ok = buf.is_empty() || wire::write_chunk(w, buf).and_then(|_| w.flush()).is_ok();
        buf.clear();
        (n, ok)
    };
    let reason = loop {
        let (n, ok) = pump(&mut captured, &mut buf);
        if !ok {
            gone = true;
            break "client".to_string();
        }
        if captured >= limit {
            break "count".to_string();
        }
        if stop.load(Ordering::Acquire) {
            break "client".to_string();
        }
        if let Some(why) = session.ended() {
            break why;
        }
        if n == 0 {
            std::thread::sleep(POLL);
        }
    };
    session.closed.store(true, Ordering::Release);
    // The control loop takes the taps back on its next tick; the threads let go at their next
    // iteration. Bounded: a stuck thread must not keep the client waiting for ever.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(session) > 1 && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    if !gone && captured < limit {
        pump(&mut captured, &mut buf);
    }
    CaptureEnded {
        captured,
        dropped: session.dropped(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::fake::Pool;
    use api::capture::{read_chunk, Chunk, Direction};

    fn spec(filter: &str, dir: Direction) -> CaptureSpec {
        CaptureSpec {
            filter: filter.into(),
            direction: dir,
            ..CaptureSpec::new("p")
        }
    }

    fn udp(dport: u16, len: usize) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = (len - 14) as u16;
        f.extend([0x45, 0]);
        f.extend(total.to_be_bytes());
        f.extend([0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend(1000u16.to_be_bytes());
        f.extend(dport.to_be_bytes());
        f.extend((total - 20).to_be_bytes());
        f.extend([0, 0]);
        f.resize(len, 0);
        f
    }

    #[test]
    fn taps_copy_matching_frames_up_to_the_snap_length_and_count_what_does_not_fit() {
        let s = Arc::new(
            Session::new(CaptureSpec {
                snaplen: 60,
                ..spec("udp and port 53", Direction::In)
            })
            .unwrap(),
        );
        let mut taps = Taps::default();
        assert!(!taps.any_rx && !taps.any_tx);
        taps.apply(TapCmd::Add(Tap {
            flow_id: 3,
            session: s.clone(),
        }));
        assert!(taps.any_rx && !taps.any_tx && !taps.tx_on(3));
        let pool = Pool::default();
        let mut burst = Burst::default();
        let mut q = crate::port::fake::FakeRx::default();
        q.feed(pool.packet(&udp(53, 100)));
        q.feed(pool.packet(&udp(80, 100)));
        burst.rx(&mut q, 32);
        taps.rx(3, &burst, 7);
        taps.rx(4, &burst, 7); // another port: not tapped
        burst.clear();
        let got: Vec<Slot> = s.full_rx.try_iter().collect();
        assert_eq!(got.len(), 1, "the filter kept port 53 only");
        assert_eq!(
            (got[0].ns, got[0].orig_len, got[0].data.len()),
            (7, 100, 60)
        );
        assert_eq!(&got[0].data[..], &udp(53, 100)[..60]);
        for g in got {
            s.free_tx.try_send(g).unwrap();
        }
        // A full ring: frames are counted, not kept, and nothing blocks.
        let parked: Vec<Slot> = s.free_rx.try_iter().collect();
        q.feed(pool.packet(&udp(53, 80)));
        burst.rx(&mut q, 32);
        taps.rx(3, &burst, 8);
        burst.clear();
        assert_eq!(s.dropped(), 1);
        drop(parked);
        // Removed: the thread's reference goes, the flags fall.
        taps.apply(TapCmd::Remove(s.id()));
        assert!(!taps.any_rx && !taps.any_tx);
        assert_eq!(Arc::strong_count(&s), 1);
    }

    #[test]
    fn captures_refuse_a_second_session_on_a_port_and_hand_back_closed_ones() {
        let mut c = Captures::default();
        let a = Arc::new(Session::new(spec("", Direction::Both)).unwrap());
        let b = Arc::new(Session::new(spec("", Direction::In)).unwrap());
        c.add("p", 1, &a).unwrap();
        let e = c.add("p", 1, &b).unwrap_err();
        assert!(e.contains("\"p\"") && e.contains("already"), "{e}");
        c.add("q", 2, &b).unwrap();
        assert!(c.take_closed().is_empty());
        c.end_port(2, "port q detached");
        assert_eq!(b.ended().as_deref(), Some("port q detached"));
        a.closed.store(true, Ordering::Release);
        assert_eq!(c.take_closed(), vec![a.id()]);
        assert!(c.add("p", 1, &a).is_ok(), "the port is free again");
        let e = Session::new(spec("tcp and", Direction::In)).unwrap_err();
        assert!(e.starts_with("capture: filter: at column 8"), "{e}");
    }

    /// The drain side: frames in the ring come out as a pcap file in chunks, up to `count`,
    /// then the summary.
    #[test]
    fn drain_writes_a_pcap_stream_and_stops_at_the_count() {
        let s = Arc::new(
            Session::new(CaptureSpec {
                count: Some(2),
                ..spec("", Direction::Out)
            })
            .unwrap(),
        );
        s.set_clock(0);
        for i in 0..3u16 {
            s.offer(1, &udp(i, 64), 64, 1_000 * i as u64);
        }
        let mut out = vec![];
        let end = drain(&s, &mut out, &AtomicBool::new(false));
        assert_eq!(
            (end.captured, end.dropped, end.reason.as_str()),
            (2, 0, "count")
        );
        assert!(s.is_closed());
        let mut r = std::io::BufReader::new(&out[..]);
        let mut file = vec![];
        while let Some(Chunk::Data(d)) = read_chunk(&mut r).unwrap() {
            file.extend(d);
        }
        assert_eq!(file.len(), 24 + 2 * (16 + 64));
        assert_eq!(&file[24 + 16..24 + 16 + 64], &udp(0, 64)[..]);
        assert_eq!(&file[24 + 80 + 16..], &udp(1, 64)[..]);
    }
}
