//! Building test and benchmark frames (through etherparse's `PacketBuilder`).

use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};
use model::Mac;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Layer 4 of a built frame.
#[derive(Debug, Clone, Copy)]
pub enum L4 {
    Udp {
        src: u16,
        dst: u16,
    },
    /// TCP with flags (`FIN`=1, `SYN`=2, `RST`=4, `PSH`=8, `ACK`=16).
    Tcp {
        src: u16,
        dst: u16,
        flags: u8,
    },
    /// ICMP echo request (`reply` false) or reply.
    Echo {
        id: u16,
        reply: bool,
    },
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

fn base(src: Mac, dst: Mac) -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(src.0, dst.0)
}

/// Writes the L4 header and payload after an IP builder step (the same for IPv4 and IPv6 but for
/// the ICMP echo builder methods).
macro_rules! finish {
    ($ip:expr, $l4:expr, $out:expr, $pl:expr, $req:ident, $rep:ident) => {
        match $l4 {
            L4::Udp { src, dst } => $ip.udp(src, dst).write(&mut $out, &$pl),
            L4::Tcp { src, dst, flags } => {
                tcp($ip.tcp(src, dst, 1000, 65535), flags).write(&mut $out, &$pl)
            }
            L4::Echo { id, reply: false } => $ip.$req(id, 1).write(&mut $out, &$pl),
            L4::Echo { id, reply: true } => $ip.$rep(id, 1).write(&mut $out, &$pl),
        }
    };
}

/// An Ethernet + IPv4 frame, optionally 802.1Q-tagged, with `payload` bytes of zeros.
pub fn ipv4(
    src: Mac,
    dst: Mac,
    vlan: Option<u16>,
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    l4: L4,
    payload: usize,
) -> Vec<u8> {
    let pl = vec![0u8; payload];
    let mut out = Vec::with_capacity(64 + payload);
    let eth = base(src, dst);
    let r = match vlan {
        Some(v) => {
            finish!(
                eth.single_vlan(v.try_into().unwrap())
                    .ipv4(sip.octets(), dip.octets(), 64),
                l4,
                out,
                pl,
                icmpv4_echo_request,
                icmpv4_echo_reply
            )
        }
        None => finish!(
            eth.ipv4(sip.octets(), dip.octets(), 64),
            l4,
            out,
            pl,
            icmpv4_echo_request,
            icmpv4_echo_reply
        ),
    };
    r.expect("frame builds");
    out
}

/// An Ethernet + IPv6 frame (UDP or TCP; echo becomes ICMPv6 echo).
pub fn ipv6(
    src: Mac,
    dst: Mac,
    vlan: Option<u16>,
    sip: Ipv6Addr,
    dip: Ipv6Addr,
    l4: L4,
    payload: usize,
) -> Vec<u8> {
    let pl = vec![0u8; payload];
    let mut out = Vec::with_capacity(80 + payload);
    let eth = base(src, dst);
    let r = match vlan {
        Some(v) => {
            finish!(
                eth.single_vlan(v.try_into().unwrap())
                    .ipv6(sip.octets(), dip.octets(), 64),
                l4,
                out,
                pl,
                icmpv6_echo_request,
                icmpv6_echo_reply
            )
        }
        None => finish!(
            eth.ipv6(sip.octets(), dip.octets(), 64),
            l4,
            out,
            pl,
            icmpv6_echo_request,
            icmpv6_echo_reply
        ),
    };
    r.expect("frame builds");
    out
}

fn tcp<T>(mut b: PacketBuilderStep<T>, flags: u8) -> PacketBuilderStep<T>
where
    PacketBuilderStep<T>: TcpFlags,
{
    b = b.set_flags(flags);
    b
}

use etherparse::PacketBuilderStep;

/// Sets TCP flags on a TCP builder step.
pub trait TcpFlags: Sized {
    fn set_flags(self, flags: u8) -> Self;
}

impl TcpFlags for PacketBuilderStep<etherparse::TcpHeader> {
    fn set_flags(mut self, f: u8) -> Self {
        if f & FIN != 0 {
            self = self.fin();
        }
        if f & SYN != 0 {
            self = self.syn();
        }
        if f & RST != 0 {
            self = self.rst();
        }
        if f & 0x08 != 0 {
            self = self.psh();
        }
        if f & ACK != 0 {
            self = self.ack(1);
        }
        self
    }
}

/// An ARP request (`op` 1) or reply (`op` 2) frame.
pub fn arp(
    src: Mac,
    dst: Mac,
    vlan: Option<u16>,
    op: u16,
    sha: Mac,
    spa: Ipv4Addr,
    tha: Mac,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let pkt = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation(op),
        &sha.0,
        &spa.octets(),
        &tha.0,
        &tpa.octets(),
    )
    .expect("valid ARP sizes");
    let mut out = vec![];
    let eth = base(src, dst);
    let r = match vlan {
        Some(v) => eth
            .single_vlan(v.try_into().unwrap())
            .arp(pkt)
            .write(&mut out),
        None => eth.arp(pkt).write(&mut out),
    };
    r.expect("frame builds");
    out
}
