//! DPDK ethdev ports behind the [`crate::port`] seam: mbufs are the packets, `evs-dpdk`'s owned
//! queue tokens are the queues.

use crate::port::{EditError, Packet, RxQueue, TxQueue};
use evs_dpdk::{Mbuf, MbufError, RxQueueToken, SharedTxQueueToken, TxQueueToken};

impl From<MbufError> for EditError {
    fn from(e: MbufError) -> EditError {
        match e {
            MbufError::NoHeadroom => EditError::NoHeadroom,
            MbufError::TooShort => EditError::TooShort,
            MbufError::Shared => EditError::Shared,
        }
    }
}

impl Packet for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }
    #[inline]
    fn data_mut(&mut self) -> Option<&mut [u8]> {
        Mbuf::data_mut(self)
    }
    #[inline]
    fn pkt_len(&self) -> u32 {
        Mbuf::pkt_len(self)
    }
    #[inline]
    fn share(&self) -> Self {
        Mbuf::share(self)
    }
    #[inline]
    fn deep_copy(&self) -> Option<Self> {
        Mbuf::deep_copy(self)
    }
    #[inline]
    fn prepend(&mut self, n: u16) -> Result<&mut [u8], EditError> {
        Ok(Mbuf::prepend(self, n)?)
    }
    #[inline]
    fn adj(&mut self, n: u16) -> Result<(), EditError> {
        Ok(Mbuf::adj(self, n)?)
    }
    #[inline]
    fn free_bulk(slots: &mut [Option<Self>]) {
        Mbuf::free_bulk(slots)
    }
}

impl RxQueue for RxQueueToken {
    type Packet = Mbuf;
    #[inline]
    fn rx_burst(&mut self, out: &mut [Option<Mbuf>]) -> usize {
        RxQueueToken::rx_burst(self, out)
    }
}

/// A transmit queue of an ethdev port as a forwarding thread holds it: its own, or one it shares
/// with other threads under the queue's lock.
#[derive(Debug)]
pub enum EthTx {
    Own(TxQueueToken),
    Shared(SharedTxQueueToken),
}

impl TxQueue for EthTx {
    type Packet = Mbuf;
    #[inline]
    fn tx_burst(&mut self, pkts: &mut [Option<Mbuf>]) -> usize {
        match self {
            EthTx::Own(q) => q.tx_burst(pkts),
            EthTx::Shared(q) => q.tx_burst(pkts),
        }
    }
}
