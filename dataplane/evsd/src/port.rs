//! The port seam: what the forwarding loop needs from packets and queues, so that it runs over
//! DPDK ethdev ports ([`crate::ethdev`]) today, over another vhost-user backend later, and over
//! plain-Rust fakes in the unit tests.
//!
//! - [`Packet`]: a received frame the loop can read, share (refcount), copy and edit in place
//!   through two raw operations (grow and shrink at the front); the VLAN edits are written once
//!   here on top of them, for every packet type.
//! - [`RxQueue`] / [`TxQueue`]: burst receive into, and burst transmit from, arrays of
//!   `Option<Packet>` slots (for mbufs that is exactly DPDK's array of mbuf pointers). A queue
//!   value is the right to use that queue (for DPDK, the owned tokens of `evs-dpdk`), so the loop
//!   takes them `&mut`.
//! - [`Burst`] and [`TxBuffer`]: the fixed-size containers the loop keeps per thread; nothing
//!   here allocates, locks or makes a system call.

use flowtable::wire::{ethernet, vlan};

/// Most packets handled per burst; fixed so bursts live on the stack.
pub const MAX_BURST: usize = evs_dpdk::MAX_BURST;

/// How many packets a [`TxBuffer`] holds: two bursts, so that packets a congested port cannot
/// take right now wait for the next loop iteration (where higher priority classes go first)
/// instead of being dropped at once, while a stalled destination pins only a few buffers.
pub const TX_BUFFER_CAP: usize = 2 * MAX_BURST;

/// Why a raw edit of a packet's bytes was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("not enough headroom")]
    NoHeadroom,
    #[error("first segment too short")]
    TooShort,
    #[error("buffer shared with another copy")]
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VlanError {
    #[error("no headroom for a VLAN tag")]
    NoHeadroom,
    #[error("frame too short or not tagged")]
    NotTagged,
    #[error("buffer shared with another copy")]
    Shared,
}

impl From<EditError> for VlanError {
    fn from(e: EditError) -> VlanError {
        match e {
            EditError::NoHeadroom => VlanError::NoHeadroom,
            EditError::TooShort => VlanError::NotTagged,
            EditError::Shared => VlanError::Shared,
        }
    }
}

/// One owned packet. Dropping it releases it (or one reference of a shared buffer).
pub trait Packet: Sized {
    /// The bytes where all headers are (an mbuf's first segment).
    fn data(&self) -> &[u8];
    /// The same bytes, writable; `None` while the buffer is shared with other copies.
    fn data_mut(&mut self) -> Option<&mut [u8]>;
    /// Length of the whole packet.
    fn pkt_len(&self) -> u32;
    /// Another reference to the same bytes (read-only while shared), for copies that go out
    /// unchanged.
    fn share(&self) -> Self;
    /// A private copy, for copies that need their own edits; `None` when out of buffers.
    fn deep_copy(&self) -> Option<Self>;
    /// Grows the packet by `n` bytes at the front (unspecified content) and returns
    /// [`Packet::data`], writable.
    fn prepend(&mut self, n: u16) -> Result<&mut [u8], EditError>;
    /// Removes `n` bytes from the front; `data()` must be longer than `n`.
    fn adj(&mut self, n: u16) -> Result<(), EditError>;
    /// Releases the packets in `slots` and empties them (one bulk call where the backend has one).
    fn free_bulk(slots: &mut [Option<Self>]) {
        for s in slots {
            *s = None;
        }
    }

    /// Inserts an 802.1Q tag with `tci` after the MAC addresses.
    fn vlan_push(&mut self, tci: u16) -> Result<(), VlanError> {
        if self.data().len() < ethernet::HEADER_LEN {
            return Err(VlanError::NotTagged);
        }
        let d = self.prepend(vlan::TAG_LEN as u16)?;
        vlan::push_in_headroom(d, ethernet::ethertype::VLAN, tci).map_err(|_| VlanError::NotTagged)
    }

    /// Removes the outer tag.
    fn vlan_pop(&mut self) -> Result<(), VlanError> {
        let d = self.data_mut().ok_or(VlanError::Shared)?;
        vlan::pop_to_headroom(d).map_err(|_| VlanError::NotTagged)?;
        self.adj(vlan::TAG_LEN as u16)?;
        Ok(())
    }

    /// Gives the outer tag VLAN `vid` (keeping its priority bits), pushing one if untagged.
    fn vlan_set(&mut self, vid: u16) -> Result<(), VlanError> {
        let d = self.data_mut().ok_or(VlanError::Shared)?;
        if vlan::set_outer_vid(d, vid).is_ok() {
            Ok(())
        } else {
            self.vlan_push(vid & vlan::VID_MASK)
        }
    }
}

/// The outer VLAN id of a frame, if it is tagged (what the VLAN edits act on; the parser's
/// `Layout::vlan` says the same for a received frame).
#[inline]
pub fn outer_vid(frame: &[u8]) -> Option<u16> {
    vlan::outer_tag(frame).map(|t| t.vid())
}

/// The receive side of one queue; the value is the right to poll it.
pub trait RxQueue {
    type Packet: Packet;
    /// Receives up to `out.len()` packets into the first slots of `out` (which are empty);
    /// returns how many arrived.
    fn rx_burst(&mut self, out: &mut [Option<Self::Packet>]) -> usize;
}

/// The transmit side of one queue; the value is the right to transmit on it (a shared queue's
/// value takes its lock itself).
pub trait TxQueue {
    type Packet: Packet;
    /// Transmits the leading packets of `pkts` oldest first, up to the first empty slot, as many
    /// as the queue takes now; returns that number (their slots are emptied). The packets it
    /// refused stay where they are.
    fn tx_burst(&mut self, pkts: &mut [Option<Self::Packet>]) -> usize;
}

/// Up to [`MAX_BURST`] received packets. Slots are taken out one by one ([`Burst::take`]);
/// whatever is left is released in bulk by [`Burst::clear`].
pub struct Burst<P> {
    pkts: [Option<P>; MAX_BURST],
    len: usize,
}

impl<P> Default for Burst<P> {
    fn default() -> Self {
        Burst {
            pkts: std::array::from_fn(|_| None),
            len: 0,
        }
    }
}

impl<P: Packet> Burst<P> {
    /// Receives up to `max` (≤ [`MAX_BURST`]) packets from `q`; the burst must be empty.
    #[inline]
    pub fn rx<Q: RxQueue<Packet = P>>(&mut self, q: &mut Q, max: usize) -> usize {
        debug_assert_eq!(self.len, 0);
        let n = q.rx_burst(&mut self.pkts[..max.min(MAX_BURST)]);
        self.len = n.min(MAX_BURST);
        self.len
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes of packet `i`; `None` once the packet was taken.
    #[inline]
    pub fn data(&self, i: usize) -> Option<&[u8]> {
        self.pkts[..self.len].get(i)?.as_ref().map(P::data)
    }

    #[inline]
    pub fn pkt_len(&self, i: usize) -> u32 {
        self.pkts[..self.len][i].as_ref().map_or(0, P::pkt_len)
    }

    /// Views of all packets, for the classifier. `out` is caller storage so nothing allocates.
    #[inline]
    pub fn frames<'a>(&'a self, out: &mut [&'a [u8]; MAX_BURST]) -> usize {
        for (o, p) in out.iter_mut().zip(&self.pkts[..self.len]) {
            *o = p.as_ref().map_or(&[], P::data);
        }
        self.len
    }

    /// Moves packet `i` out of the burst.
    #[inline]
    pub fn take(&mut self, i: usize) -> Option<P> {
        self.pkts[..self.len][i].take()
    }

    /// Releases what was not taken and empties the burst.
    #[inline]
    pub fn clear(&mut self) {
        P::free_bulk(&mut self.pkts[..self.len]);
        self.len = 0;
    }
}

/// Outcome of one tx flush.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOutcome {
    pub sent: u32,
    pub sent_bytes: u64,
    /// Packets the queue could not take now; they stay in the buffer for the next flush.
    pub left: u32,
}

/// Packets waiting for one destination queue: filled during a loop iteration, sent at its end;
/// what the queue refuses stays queued, and new packets are refused (tail drop) while the buffer
/// is full. Slots `0..len` are always full.
pub struct TxBuffer<P> {
    pkts: [Option<P>; TX_BUFFER_CAP],
    /// Lengths taken at push time: a sent packet belongs to the queue and may be gone already.
    lens: [u32; TX_BUFFER_CAP],
    len: usize,
}

impl<P> Default for TxBuffer<P> {
    fn default() -> Self {
        TxBuffer {
            pkts: std::array::from_fn(|_| None),
            lens: [0; TX_BUFFER_CAP],
            len: 0,
        }
    }
}

impl<P: Packet> TxBuffer<P> {
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == TX_BUFFER_CAP
    }

    /// Queued packet `i` (for the capture of what a port is sent).
    #[inline]
    pub fn get(&self, i: usize) -> Option<&P> {
        self.pkts[..self.len].get(i)?.as_ref()
    }

    /// Queues `p`, or hands it back when the buffer is full.
    #[inline]
    pub fn push(&mut self, p: P) -> Result<(), P> {
        if self.len == TX_BUFFER_CAP {
            return Err(p);
        }
        self.lens[self.len] = p.pkt_len();
        // Slots from `len` on are empty: what is replaced is a `None`, nothing to drop.
        std::mem::forget(self.pkts[self.len].replace(p));
        self.len += 1;
        Ok(())
    }

    /// Sends what is queued on `q`, oldest first; what the queue cannot take stays, in order.
    #[inline]
    pub fn flush<Q: TxQueue<Packet = P>>(&mut self, q: &mut Q) -> TxOutcome {
        if self.len == 0 {
            return TxOutcome::default();
        }
        let sent = q.tx_burst(&mut self.pkts[..self.len]).min(self.len);
        let out = TxOutcome {
            sent: sent as u32,
            sent_bytes: self.lens[..sent].iter().map(|&l| l as u64).sum(),
            left: (self.len - sent) as u32,
        };
        if sent > 0 && sent < self.len {
            // The sent slots are empty: the waiting packets move to the front, in order (each
            // swap puts a packet into a slot emptied by the send or by an earlier swap).
            for j in 0..self.len - sent {
                self.pkts.swap(j, sent + j);
            }
            self.lens.copy_within(sent..self.len, 0);
        }
        self.len -= sent;
        out
    }

    /// Releases everything queued (the destination went away or is down); returns how many.
    pub fn discard(&mut self) -> u32 {
        let n = self.len;
        P::free_bulk(&mut self.pkts[..n]);
        self.len = 0;
        n as u32
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! Plain-Rust packets and queues for the forwarding tests: a packet is a `Vec<u8>` with
    //! headroom behind an `Arc` (shared while more than one reference exists).

    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    pub const HEADROOM: usize = 128;

    /// Counts deep copies, like a pool would count allocations.
    #[derive(Clone, Default)]
    pub struct Pool {
        pub copies: Arc<AtomicUsize>,
    }

    impl Pool {
        pub fn packet(&self, frame: &[u8]) -> FakePacket {
            let mut buf = vec![0u8; HEADROOM];
            buf.extend_from_slice(frame);
            FakePacket {
                buf: Arc::new(buf),
                off: HEADROOM,
                pool: self.clone(),
            }
        }
    }

    pub struct FakePacket {
        pub buf: Arc<Vec<u8>>,
        off: usize,
        pool: Pool,
    }

    impl FakePacket {
        pub fn shares_with(&self, other: &FakePacket) -> bool {
            Arc::ptr_eq(&self.buf, &other.buf)
        }
    }

    impl Packet for FakePacket {
        fn data(&self) -> &[u8] {
            &self.buf[self.off..]
        }
        fn data_mut(&mut self) -> Option<&mut [u8]> {
            let off = self.off;
            Arc::get_mut(&mut self.buf).map(|b| &mut b[off..])
        }
        fn pkt_len(&self) -> u32 {
            (self.buf.len() - self.off) as u32
        }
        fn share(&self) -> Self {
            FakePacket {
                buf: self.buf.clone(),
                off: self.off,
                pool: self.pool.clone(),
            }
        }
        fn deep_copy(&self) -> Option<Self> {
            self.pool.copies.fetch_add(1, Ordering::Relaxed);
            Some(FakePacket {
                buf: Arc::new(self.buf.to_vec()),
                off: self.off,
                pool: self.pool.clone(),
            })
        }
        fn prepend(&mut self, n: u16) -> Result<&mut [u8], EditError> {
            let n = n as usize;
            if Arc::get_mut(&mut self.buf).is_none() {
                return Err(EditError::Shared);
            }
            if self.off < n {
                return Err(EditError::NoHeadroom);
            }
            self.off -= n;
            Ok(self.data_mut().expect("unique"))
        }
        fn adj(&mut self, n: u16) -> Result<(), EditError> {
            if Arc::get_mut(&mut self.buf).is_none() {
                return Err(EditError::Shared);
            }
            if self.data().len() <= n as usize {
                return Err(EditError::TooShort);
            }
            self.off += n as usize;
            Ok(())
        }
    }

    /// A receive queue fed by the test.
    #[derive(Clone, Default)]
    pub struct FakeRx {
        pub waiting: Arc<Mutex<VecDeque<FakePacket>>>,
    }

    impl FakeRx {
        pub fn feed(&self, p: FakePacket) {
            self.waiting.lock().unwrap().push_back(p);
        }
    }

    impl RxQueue for FakeRx {
        type Packet = FakePacket;
        fn rx_burst(&mut self, out: &mut [Option<FakePacket>]) -> usize {
            let mut w = self.waiting.lock().unwrap();
            let mut n = 0;
            while n < out.len() {
                match w.pop_front() {
                    Some(p) => {
                        out[n] = Some(p);
                        n += 1;
                    }
                    None => break,
                }
            }
            n
        }
    }

    /// A transmit queue that takes at most `credit` packets (then refuses, like a full ring) and
    /// keeps what it took.
    #[derive(Clone)]
    pub struct FakeTx {
        pub sent: Arc<Mutex<Vec<FakePacket>>>,
        pub credit: Arc<AtomicUsize>,
        pub calls: Arc<AtomicUsize>,
    }

    impl Default for FakeTx {
        fn default() -> Self {
            FakeTx {
                sent: Default::default(),
                credit: Arc::new(AtomicUsize::new(usize::MAX)),
                calls: Default::default(),
            }
        }
    }

    impl FakeTx {
        pub fn congested() -> FakeTx {
            let t = FakeTx::default();
            t.credit.store(0, Ordering::Relaxed);
            t
        }
        pub fn allow(&self, n: usize) {
            self.credit.store(n, Ordering::Relaxed);
        }
        pub fn take_sent(&self) -> Vec<FakePacket> {
            std::mem::take(&mut *self.sent.lock().unwrap())
        }
    }

    impl TxQueue for FakeTx {
        type Packet = FakePacket;
        fn tx_burst(&mut self, pkts: &mut [Option<FakePacket>]) -> usize {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let dense = pkts.iter().position(Option::is_none).unwrap_or(pkts.len());
            let credit = self.credit.load(Ordering::Relaxed);
            let n = dense.min(credit);
            self.credit.store(credit - n, Ordering::Relaxed);
            let mut sent = self.sent.lock().unwrap();
            for s in &mut pkts[..n] {
                sent.push(s.take().unwrap());
            }
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;

    fn frame(tagged: Option<u16>) -> Vec<u8> {
        let mut f = vec![];
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]); // dst
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]); // src
        if let Some(tci) = tagged {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend((0..46).map(|i| i as u8));
        f
    }

    #[test]
    fn vlan_push_pop_set() {
        let pool = Pool::default();
        let plain = frame(None);
        let mut p = pool.packet(&plain);
        p.vlan_push(0x2064).unwrap();
        assert_eq!(p.data(), &frame(Some(0x2064))[..]);
        assert_eq!(p.pkt_len() as usize, plain.len() + 4);
        assert_eq!(outer_vid(p.data()), Some(0x064));
        p.vlan_set(7).unwrap();
        assert_eq!(
            p.data(),
            &frame(Some(0x2007))[..],
            "rewrite keeps the priority bits"
        );
        p.vlan_pop().unwrap();
        assert_eq!(p.data(), &plain[..]);
        assert_eq!(p.vlan_pop(), Err(VlanError::NotTagged));
        p.vlan_set(5).unwrap();
        assert_eq!(
            p.data(),
            &frame(Some(5))[..],
            "set on an untagged frame pushes"
        );

        // Shared buffers are read-only; deep copies are private.
        let s = p.share();
        assert_eq!(p.vlan_pop(), Err(VlanError::Shared));
        assert_eq!(p.vlan_push(1), Err(VlanError::Shared));
        let mut c = s.deep_copy().unwrap();
        c.vlan_pop().unwrap();
        assert_eq!(c.data(), &plain[..]);
        assert_eq!(s.data(), &frame(Some(5))[..]);
        drop(s);
        p.vlan_pop().unwrap();
        assert_eq!(p.data(), &plain[..]);

        let mut short = pool.packet(&plain[..13]);
        assert_eq!(short.vlan_push(1), Err(VlanError::NotTagged));
    }

    #[test]
    fn tx_buffer_keeps_what_the_queue_refuses_in_order() {
        let pool = Pool::default();
        let mut b = TxBuffer::default();
        for i in 0..TX_BUFFER_CAP {
            assert!(b.push(pool.packet(&[i as u8; 60])).is_ok());
        }
        assert!(b.is_full());
        assert!(
            b.push(pool.packet(&[0; 60])).is_err(),
            "tail drop when full"
        );
        let mut q = FakeTx::congested();
        q.allow(10);
        let out = b.flush(&mut q);
        assert_eq!((out.sent, out.sent_bytes, out.left), (10, 600, 54));
        q.allow(usize::MAX);
        let out = b.flush(&mut q);
        assert_eq!((out.sent, out.left), (54, 0));
        let order: Vec<u8> = q.take_sent().iter().map(|p| p.data()[0]).collect();
        assert_eq!(order, (0..TX_BUFFER_CAP as u8).collect::<Vec<_>>());
        assert!(b.is_empty());
    }
}
